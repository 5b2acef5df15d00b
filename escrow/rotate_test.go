package escrow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// rotateRun rotates a 2-of-3 ceremony on cards 0,1,2 to cards 1,2,3,
// authorised by cards 0 and 1, then offers card 0 for wiping.
func (r *rig) rotateRun(opts RotateOptions) (*RotateResult, error) {
	if opts.AuthKey == nil {
		r.insert(0, 1)
	}
	r.insert(1, 2, 3)
	r.insert(0)
	if opts.WipeWait == 0 {
		opts.WipeWait = time.Second
	}
	return Rotate(context.Background(), r.env, opts)
}

func TestRotate(t *testing.T) {
	r := newRig(t, 2, 4)
	old := r.enroll(2, 3).Ceremony
	oldKey := r.vol.keyOf(old.Keyslot)
	res, err := r.rotateRun(RotateOptions{})
	if err != nil {
		t.Fatalf("rotate: %v\n%s", err, r.p.transcript())
	}
	if res.New.Status != StatusActive || res.Old.Status != StatusRetired || res.New.Replaces != old.ID.String() {
		t.Fatalf("result: old %s new %s", res.Old.Status, res.New.Status)
	}
	if r.vol.inUse(old.Keyslot) {
		t.Fatal("old keyslot still in use")
	}
	if _, err := r.vol.FindKeyslot(context.Background(), oldKey); err == nil {
		t.Fatal("the old recovery key still opens the volume")
	}
	if len(res.Wiped) != 1 || res.Wiped[0].Serial != "1000" || len(res.ToWipe) != 0 {
		t.Fatalf("wiped %+v, to wipe %+v", res.Wiped, res.ToWipe)
	}
	if c := r.cards[0].cert(0x82); c != nil {
		t.Fatal("old-only card still holds its certificate")
	}
	// The kept cards carry the new share in the same slot.
	for _, i := range []int{1, 2} {
		if c := r.cards[i].cert(0x82); c == nil || c.Ceremony != res.New.ID {
			t.Fatalf("card %d: %+v", i, c)
		}
	}
	h, _ := r.vol.Inspect(context.Background())
	if len(h.Tokens) != 1 {
		t.Fatalf("%d tokens after rotate", len(h.Tokens))
	}
	st, err := Status(context.Background(), r.env)
	if err != nil || st.Ceremony.ID != res.New.ID || len(st.Problems) != 0 || st.Unfinished != nil {
		t.Fatalf("status: %+v %v", st, err)
	}
	rr, err := r.recover("after rotate", 3, 1)
	if err != nil || rr.Ceremony.ID != res.New.ID {
		t.Fatalf("recover after rotate: %v\n%s", err, r.p.transcript())
	}
	// The old cards cannot recover any more: card 0 wiped, and the
	// old ceremony retired.
	r.noSecrets(res.New.Keyslot)
}

func TestRotateWithKeyAndNewQuorum(t *testing.T) {
	r := newRig(t, 2, 5)
	r.enroll(2, 3)
	r.insert(0, 1, 2, 3, 4)
	res, err := Rotate(context.Background(), r.env, RotateOptions{K: 3, N: 5, AuthKey: []byte(operatorKey)})
	if err != nil {
		t.Fatalf("rotate: %v\n%s", err, r.p.transcript())
	}
	if res.New.K != 3 || res.New.N != 5 || len(res.ToWipe) != 0 {
		t.Fatalf("result %+v", res)
	}
	if _, err := r.recover("x", 4, 0); ExitCode(err) != ExitQuorum {
		t.Fatalf("2 cards of a 3-of-5: %v", err)
	}
	if _, err := r.recover("x", 2, 3, 4); err != nil {
		t.Fatalf("recover: %v", err)
	}
}

func TestRotateFailureKeepsOldCeremony(t *testing.T) {
	r := newRig(t, 2, 4)
	old := r.enroll(2, 3).Ceremony
	r.insert(0, 1, 1) // authorise, then one new card of three
	_, err := Rotate(context.Background(), r.env, RotateOptions{})
	if !errors.Is(err, errNoMoreCards) {
		t.Fatalf("got %v", err)
	}
	h, _ := r.vol.Inspect(context.Background())
	if len(h.Keyslots) != 2 || !h.InUse(old.Keyslot) || len(h.Tokens) != 1 {
		t.Fatalf("volume after a failed rotation: %+v", h)
	}
	st, _ := Status(context.Background(), r.env)
	if st.Unfinished != nil || st.Ceremony.ID != old.ID {
		t.Fatalf("status: %+v", st)
	}
	// Card 1 holds the abandoned rotation's share over its old one: the
	// old ceremony still recovers through the token copy.
	if _, err := r.recover("x", 1, 2); err != nil {
		t.Fatalf("recover with the old ceremony: %v\n%s", err, r.p.transcript())
	}
}

// crashAt makes the nth call of the failpoint name stop the ceremony.
func crashAt(t *testing.T, name string, nth int) {
	t.Helper()
	hits := 0
	failpoint = func(n string) error {
		if n == name {
			hits++
			if hits == nth {
				return fmt.Errorf("crash at %s #%d", n, nth)
			}
		}
		return nil
	}
	t.Cleanup(func() { failpoint = nil })
}

// opensWithOperatorKey checks the volume still opens with a key the
// operator holds.
func (r *rig) opensWithOperatorKey() {
	r.t.Helper()
	if _, err := r.vol.FindKeyslot(context.Background(), []byte(operatorKey)); err != nil {
		r.t.Fatalf("the operator's key no longer opens the volume: %v", err)
	}
}

func TestEnrollCrashAtEachStep(t *testing.T) {
	points := []struct {
		name string
		nth  int
	}{
		{fpEnrollBegun, 1}, {fpEnrollKeyslot, 1}, {fpEnrollCard, 1}, {fpEnrollCard, 3},
		{fpEnrollToken, 1}, {fpEnrollLogged, 1},
	}
	for _, version := range []int{1, 2} {
		for _, p := range points {
			t.Run(fmt.Sprintf("luks%d/%s#%d", version, p.name, p.nth), func(t *testing.T) {
				r := newRig(t, version, 3)
				crashAt(t, p.name, p.nth)
				r.insert(0, 1, 2)
				_, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)})
				if err == nil || !crashed(err) {
					t.Fatalf("no crash: %v", err)
				}
				failpoint = nil
				r.opensWithOperatorKey()
				st, err := Status(context.Background(), r.env)
				if err != nil {
					t.Fatal(err)
				}
				done := p.name == fpEnrollLogged
				if done != (st.Unfinished == nil) {
					t.Fatalf("status after crash: unfinished %+v", st.Unfinished)
				}
				if st.Unfinished != nil && st.Unfinished.Command != "custos enroll /dev/test" {
					t.Fatalf("command %q", st.Unfinished.Command)
				}
				finishes := p.name == fpEnrollToken || (p.name == fpEnrollCard && p.nth == 3)
				if st.Unfinished != nil && strings.Contains(st.Unfinished.Step, "finishes") != finishes {
					t.Fatalf("step %q", st.Unfinished.Step)
				}
				if !done {
					src := r.src.taken
					r.src.queue = nil
					r.p.answers = nil
					r.insert(0, 1, 2)
					res, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)})
					if err != nil {
						t.Fatalf("rerun: %v\n%s", err, r.p.transcript())
					}
					want := "undone"
					if finishes {
						want = "finished"
						if r.src.taken != src {
							t.Fatal("finishing asked for cards")
						}
					}
					if res.Resumed != want {
						t.Fatalf("resumed %q, want %q", res.Resumed, want)
					}
				}
				r.opensWithOperatorKey()
				h, _ := r.vol.Inspect(context.Background())
				if len(h.Keyslots) != 2 {
					t.Fatalf("keyslots after rerun: %+v", h.Keyslots)
				}
				st, _ = Status(context.Background(), r.env)
				if st.Unfinished != nil || len(st.Problems) != 0 {
					t.Fatalf("status after rerun: %+v", st)
				}
				r.src.queue, r.p.answers = nil, nil
				if _, err := r.recover("recovered", 0, 2); err != nil {
					t.Fatalf("recover after rerun: %v\n%s", err, r.p.transcript())
				}
			})
		}
	}
}

func TestRotateCrashAtEachStep(t *testing.T) {
	points := []struct {
		name string
		nth  int
	}{
		{fpRotateBegun, 1}, {fpRotateKeyslot, 1}, {fpRotateCard, 1}, {fpRotateCard, 3},
		{fpRotateToken, 1}, {fpRotateOldKilled, 1}, {fpRotateOldTokenRm, 1}, {fpRotateLogged, 1}, {fpRotateWiped, 1},
	}
	for _, version := range []int{1, 2} {
		for _, p := range points {
			t.Run(fmt.Sprintf("luks%d/%s#%d", version, p.name, p.nth), func(t *testing.T) {
				r := newRig(t, version, 4)
				old := r.enroll(2, 3).Ceremony
				oldKey := r.vol.keyOf(old.Keyslot)
				crashAt(t, p.name, p.nth)
				_, err := r.rotateRun(RotateOptions{})
				if err == nil || !crashed(err) {
					t.Fatalf("no crash: %v", err)
				}
				failpoint = nil
				r.opensWithOperatorKey()
				st, err := Status(context.Background(), r.env)
				if err != nil {
					t.Fatal(err)
				}
				// The old or the new recovery key opens the volume, and
				// the cards of that ceremony can recover it.
				r.src.queue, r.p.answers = nil, nil
				if r.vol.inUse(old.Keyslot) {
					if _, err := r.vol.FindKeyslot(context.Background(), oldKey); err != nil {
						t.Fatal("old recovery key lost")
					}
				} else if st.Ceremony == nil || !r.vol.inUse(st.Ceremony.Keyslot) && (st.Unfinished == nil) {
					t.Fatalf("neither key opens: %+v", st)
				}
				done := p.name == fpRotateLogged || p.name == fpRotateWiped
				if done != (st.Unfinished == nil) {
					t.Fatalf("status after crash: %+v", st.Unfinished)
				}
				if !done {
					if st.Unfinished.Kind != "rotate" || st.Unfinished.Command != "custos rotate /dev/test" {
						t.Fatalf("unfinished %+v", st.Unfinished)
					}
					finishes := strings.Contains(st.Unfinished.Step, "finishes")
					if finishes {
						// Finish with the new cards: no passphrase.
						if r.vol.inUse(old.Keyslot) {
							r.insert(3, 1)
						}
					} else {
						r.insert(0, 1, 1, 2, 3)
					}
					res, err := Rotate(context.Background(), r.env, RotateOptions{})
					if err != nil {
						t.Fatalf("rerun: %v\n%s", err, r.p.transcript())
					}
					if want := map[bool]string{true: "finished", false: "undone"}[finishes]; res.Resumed != want {
						t.Fatalf("resumed %q, want %q", res.Resumed, want)
					}
				}
				r.opensWithOperatorKey()
				if r.vol.inUse(old.Keyslot) {
					t.Fatal("old keyslot survives the finished rotation")
				}
				st, _ = Status(context.Background(), r.env)
				if st.Unfinished != nil || len(st.Problems) != 0 || st.Ceremony.ID == old.ID {
					t.Fatalf("status after rerun: %+v", st)
				}
				r.src.queue, r.p.answers = nil, nil
				rr, err := r.recover("recovered", 3, 2)
				if err != nil || rr.Ceremony.ID != st.Ceremony.ID {
					t.Fatalf("recover after rerun: %v\n%s", err, r.p.transcript())
				}
			})
		}
	}
}

func TestRollcall(t *testing.T) {
	r := newRig(t, 2, 4)
	r.enroll(2, 3)
	// Card 2's key was replaced (as if reset); card 3 is a stranger.
	r.cards[2].WipeShare(0x82, []byte(r.pin(2)))
	r.src.insert(r.cards[0], r.cards[3], r.cards[1], r.cards[2])
	r.p.answer(r.pin(0), r.pin(1))
	r.src.block = true
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res, err := Rollcall(ctx, r.env, RollcallOptions{})
	if err != nil {
		t.Fatalf("rollcall: %v\n%s", err, r.p.transcript())
	}
	// Card 2 (no longer holding the key) is not recognised as a custodian
	// card: it is reported missing.
	if len(res.Missing) != 1 || res.Missing[0].Index != 3 {
		t.Fatalf("missing %+v; outcomes %+v", res.Missing, res.Cards)
	}
	if !errors.Is(res.Cards[1].Err, ErrNotCustodian) {
		t.Fatalf("stranger: %v", res.Cards[1].Err)
	}
	st, err := Status(context.Background(), r.env)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Cards {
		if (c.Index <= 2) != (!c.LastRollcall.IsZero() && c.LastOK) {
			t.Fatalf("card %d last rollcall %v ok %v", c.Index, c.LastRollcall, c.LastOK)
		}
	}
}

// A card whose PIN is blocked fails its rollcall: the failure is logged,
// and Status counts the share as lost.
func TestRollcallBlockedCard(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	r.cards[1].retries = 0
	r.src.insert(r.cards[0], r.cards[1], r.cards[2])
	r.p.answer(r.pin(0), r.pin(1), r.pin(2))
	res, err := Rollcall(context.Background(), r.env, RollcallOptions{})
	if err != nil {
		t.Fatalf("rollcall: %v", err)
	}
	st, _ := Status(context.Background(), r.env)
	if st.Live != 2 || st.Margin != 0 {
		t.Fatalf("live %d margin %d; cards %+v", st.Live, st.Margin, res.Cards)
	}
	if st.Cards[1].LastOK || !strings.Contains(st.Cards[1].Reason, "blocked") {
		t.Fatalf("card 2 status %+v", st.Cards[1])
	}
}

func TestInitCard(t *testing.T) {
	r := newRig(t, 2, 1)
	c := r.cards[0]
	r.p.answer("123123", "123123", "87654321", "87654321")
	res, err := InitCard(context.Background(), r.env, c, InitCardOptions{Custodian: "alice", Slot: 0x83})
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	if res.Slot != 0x83 || res.Serial != "1000" || res.Anchor.Seq == 0 {
		t.Fatalf("result %+v", res)
	}
	cr, err := r.log.Card("1000")
	if err != nil || cr.Custodian != "alice" || len(cr.Keys) != 1 || cr.Keys[0].Fingerprint != res.Fingerprint.String() {
		t.Fatalf("log card %+v %v", cr, err)
	}
	r.p.answer("123123", "123124")
	if _, err := InitCard(context.Background(), r.env, c, InitCardOptions{}); !errors.Is(err, ErrMismatch) {
		t.Fatalf("mismatched pins: %v", err)
	}
	// Enrollment names the custodian from the registry.
	r2 := newRig(t, 2, 2)
	r2.p.answer("111111", "111111", "22222222", "22222222", "333333", "333333", "44444444", "44444444")
	for i, name := range []string{"alice", "bob"} {
		if _, err := InitCard(context.Background(), r2.env, r2.cards[i], InitCardOptions{Custodian: name}); err != nil {
			t.Fatal(err)
		}
	}
	r2.src.insert(r2.cards[0], r2.cards[1])
	r2.p.answer("111111", "333333")
	res2, err := Enroll(context.Background(), r2.env, EnrollOptions{K: 2, N: 2, AuthKey: []byte(operatorKey)})
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, r2.p.transcript())
	}
	if res2.Ceremony.Cards[1].Custodian != "bob" {
		t.Fatalf("custodian %q", res2.Ceremony.Cards[1].Custodian)
	}
}
