package escrow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"custos.dev/custos/cards"
)

func TestRotate(t *testing.T) {
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("luks%d", version), func(t *testing.T) {
			r := newRig(t, version, 4)
			old := r.enroll(2, 3).Ceremony
			oldKey := r.vol.keyOf(old.Keyslot)
			res, err := r.rotateRun(RotateOptions{})
			if err != nil {
				t.Fatalf("rotate: %v\n%s", err, r.p.transcript())
			}
			if res.New.Replaces != old.ID || !res.OldKilled || res.Old.ID != old.ID {
				t.Fatalf("result: %+v", res)
			}
			if r.logState(old.ID).Status != StatusRetired || r.logState(res.New.ID).Status != StatusActive {
				t.Fatal("log does not say old retired, new active")
			}
			// The old keyslot was killed on the proof of the old recovery
			// key, which the cards gave.
			if r.vol.inUse(old.Keyslot) || !strings.Contains(r.p.transcript(), "the recovery key of ceremony "+idText(old.ID)+" opens keyslot") {
				t.Fatalf("old keyslot %d:\n%s", old.Keyslot, r.p.transcript())
			}
			r.opensNothing("the old recovery key", oldKey)
			if len(res.Wiped) != 1 || res.Wiped[0].Serial != "1000" || len(res.ToWipe) != 0 {
				t.Fatalf("wiped %+v, to wipe %+v", res.Wiped, res.ToWipe)
			}
			if cp := r.cards[0].copyOf(t, 0x82); cp != nil {
				t.Fatal("old-only card still holds its certificate")
			}
			// The kept cards carry the new share in the same slot.
			for _, i := range []int{1, 2} {
				if cp := r.cards[i].copyOf(t, 0x82); cp == nil || cp.Record.ID != res.New.ID {
					t.Fatalf("card %d: %+v", i, cp)
				}
			}
			if n := r.custosTokens(); n != version-1 {
				t.Fatalf("%d tokens after rotate", n)
			}
			// On LUKS1 the log is the only copy besides the cards: status
			// says the ceremony is not confirmed, as a note (a LUKS1 header
			// cannot hold a token), and that is all it says.
			st := r.status()
			notes := 0
			if version == 1 {
				notes = 1
			}
			if st.Ceremony.ID != res.New.ID || len(st.Problems) != 0 || len(st.Notes) != notes || st.Unfinished != nil || st.Confirmed != (version == 2) {
				t.Fatalf("status: %+v", st)
			}
			// One pin per old card until k shares are good, one per new
			// card, one per old card presented for wiping.
			want := []string{"pin for card 1000 (custodian alice)", "pin for card 1001 (custodian bob)",
				"pin for card 1001 (custodian bob)", "pin for card 1002 (custodian carol)", "pin for card 1003",
				"pin for card 1000 (custodian alice)"}
			if got := r.p.prompts[3:]; !slices.Equal(got, want) {
				t.Fatalf("prompts %q", got)
			}
			rr, err := r.recover("after rotate", 3, 1)
			if err != nil || rr.Ceremony.ID != res.New.ID {
				t.Fatalf("recover after rotate: %v\n%s", err, r.p.transcript())
			}
			r.noSecrets("after rotate", string(oldKey))
		})
	}
}

func TestRotateWithKeyAndNewQuorum(t *testing.T) {
	r := newRig(t, 2, 5)
	old := r.enroll(2, 3).Ceremony
	oldKey := r.vol.keyOf(old.Keyslot)
	r.insert(0, 1, 2, 3, 4)
	res, err := Rotate(context.Background(), r.env, RotateOptions{K: 3, N: 5, AuthKey: []byte(operatorKey)})
	if err != nil {
		t.Fatalf("rotate: %v\n%s", err, r.p.transcript())
	}
	if res.New.K != 3 || res.New.N != 5 || len(res.ToWipe) != 0 || !res.OldKilled {
		t.Fatalf("result %+v", res)
	}
	// No old recovery key here: the token and the log agreeing on the
	// keyslot and its salt proved it.
	if !strings.Contains(r.p.transcript(), "the token and the log agree that keyslot") {
		t.Fatalf("kill not proven by the two copies:\n%s", r.p.transcript())
	}
	r.opensNothing("the old recovery key", oldKey)
	r.opensWithOperatorKey()
	r.reset()
	if _, err := r.recover("x", 4, 0); !quorumFailed(err) {
		t.Fatalf("2 cards of a 3-of-5: %v", err)
	}
	r.reset()
	if _, err := r.recover("x", 2, 3, 4); err != nil {
		t.Fatalf("recover: %v", err)
	}
}

// On LUKS1 there is no token: the log alone names the ceremony, so an
// operator's key cannot authorise a rotation (the old custos did); k cards
// must, and their recovered key proves the keyslot.
func TestRotateWithKeyOnLUKS1IsRefused(t *testing.T) {
	r := newRig(t, 1, 4)
	old := r.enroll(2, 3).Ceremony
	r.insert(1, 2, 3)
	_, err := Rotate(context.Background(), r.env, RotateOptions{AuthKey: []byte(operatorKey)})
	// The command line's hint (rotate --key-file, not confirmed):
	// authorise with k cards instead.
	if !errors.Is(err, ErrUnconfirmed) || !failedCheck(err) {
		t.Fatalf("got %v", err)
	}
	if r.vol.adds != 1 || !r.vol.inUse(old.Keyslot) || r.src.taken != 3 {
		t.Fatal("the refused rotation changed something")
	}
	cs, _ := r.log.VolumeCeremonies(r.vol.uuid)
	if len(cs) != 1 {
		t.Fatalf("log: %d ceremonies", len(cs))
	}
}

func TestRotateRefusals(t *testing.T) {
	r := newRig(t, 2, 4)
	ctx := context.Background()
	if _, err := Rotate(ctx, r.env, RotateOptions{AuthKey: []byte(operatorKey)}); !errors.Is(err, ErrNoCeremony) {
		t.Fatalf("nothing to rotate: %v", err)
	}
	old := r.enroll(2, 3).Ceremony
	for _, o := range []RotateOptions{{K: 1, N: 3}, {K: 4, N: 3}, {K: 2, N: 2, Custodians: []string{"a", "b", "c"}}} {
		o.AuthKey = []byte(operatorKey)
		if _, err := Rotate(ctx, r.env, o); !errors.Is(err, ErrUsage) {
			t.Errorf("%+v: %v", o, err)
		}
	}
	// The key given opens the recovery keyslot itself.
	_, err := Rotate(ctx, r.env, RotateOptions{AuthKey: r.vol.keyOf(old.Keyslot)})
	if !errors.Is(err, ErrUsage) {
		t.Fatalf("recovery key as the operator's key: %v", err)
	}
	if _, err := Rotate(ctx, r.env, RotateOptions{AuthKey: []byte("wrong")}); !errors.Is(err, ErrAuthorise) {
		t.Fatalf("wrong key: %v", err)
	}
	if r.vol.adds != 1 || r.killCount() != 0 {
		t.Fatal("a refusal changed the volume")
	}
}

func TestRotateFailureKeepsOldCeremony(t *testing.T) {
	r := newRig(t, 2, 4)
	old := r.enroll(2, 3).Ceremony
	r.insert(0, 1, 1) // authorise, then one new card of three
	res, err := Rotate(context.Background(), r.env, RotateOptions{})
	if !errors.Is(err, errNoMoreCards) {
		t.Fatalf("got %v", err)
	}
	h := r.header()
	if len(h.Keyslots) != 2 || !h.InUse(old.Keyslot) || r.custosTokens() != 1 {
		t.Fatalf("volume after a failed rotation: %+v", h)
	}
	if r.logState(res.New.ID).Status != StatusAbandoned || r.logState(old.ID).Status != StatusActive {
		t.Fatal("log after a failed rotation")
	}
	st := r.status()
	if st.Unfinished != nil || st.Ceremony.ID != old.ID || !st.Confirmed {
		t.Fatalf("status: %+v", st)
	}
	// Card 1 holds the abandoned rotation's share over its old one, with
	// the same key: the old ceremony still recovers through the copies
	// that agree.
	r.reset()
	if _, err := r.recover("x", 1, 2); err != nil {
		t.Fatalf("recover with the old ceremony: %v\n%s", err, r.p.transcript())
	}
}

// A rotation whose old cards left the set lists the ones to wipe when
// they are not presented; a card presented whose certificate no longer
// names the retired ceremony is left alone, and its pin is not asked for.
func TestRotateWipe(t *testing.T) {
	r := newRig(t, 2, 5)
	old := r.enroll(2, 3).Ceremony
	// Card 1's certificate is gone (its custodian cleared it).
	r.cards[1].mu.Lock()
	r.cards[1].slots[0x82].cert = nil
	key1 := r.cards[1].slots[0x82].priv
	r.cards[1].mu.Unlock()
	// Authorise with 0, 1; new set 2, 3, 4; then offer card 3 (not an
	// old card) and card 1 for wiping.
	r.insert(0, 1, 2, 3, 4)
	r.src.insert(r.cards[3], r.cards[1])
	res, err := Rotate(context.Background(), r.env, RotateOptions{WipeWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("rotate: %v\n%s", err, r.p.transcript())
	}
	if len(res.Wiped) != 0 || len(res.ToWipe) != 2 || res.ToWipe[0].Serial != "1000" || res.ToWipe[1].Serial != "1001" {
		t.Fatalf("wiped %+v to wipe %+v\n%s", res.Wiped, res.ToWipe, r.p.transcript())
	}
	tr := r.p.transcript()
	if !strings.Contains(tr, "card 1003 holds no retired share to wipe") || !strings.Contains(tr, "2 old cards still hold a retired share") {
		t.Fatalf("transcript:\n%s", tr)
	}
	if r.cards[1].slots[0x82].priv != key1 {
		t.Fatal("card 1 was wiped without its certificate naming the retired ceremony")
	}
	if n := strings.Count(strings.Join(r.p.prompts, "\n"), "pin for card 1001"); n != 2 {
		t.Fatalf("card 1 asked for its pin %d times, want twice (enroll, authorise)\n%s", n, r.p.transcript())
	}
	if r.vol.inUse(old.Keyslot) {
		t.Fatal("old keyslot survives")
	}
}

func TestRollcall(t *testing.T) {
	r := newRig(t, 2, 4)
	r.enroll(2, 3)
	// Card 2's key was replaced (as if reset); card 3 is a stranger.
	r.cards[2].WipeShare(0x82, []byte(r.pin(2)))
	r.src.insert(r.cards[0], r.cards[3], r.cards[1], r.cards[2])
	r.p.answer(r.pin(0), r.pin(1), r.pin(2))
	res, err := Rollcall(context.Background(), r.env, RollcallOptions{})
	if err != nil {
		t.Fatalf("rollcall: %v\n%s", err, r.p.transcript())
	}
	if len(res.Missing) != 0 || len(res.Cards) != 4 || len(res.Upgraded) != 0 || len(res.Problems) != 0 {
		t.Fatalf("result %+v", res)
	}
	if !errors.Is(res.Cards[1].Err, ErrNotCustodian) {
		t.Fatalf("stranger: %v", res.Cards[1].Err)
	}
	// Card 2 no longer holds the key its share is sealed to: it fails
	// (the card refuses before the pin is sent).
	if !errors.Is(res.Cards[3].Err, cards.ErrWrongCard) || res.Cards[3].Index != 3 {
		t.Fatalf("reset card: %+v", res.Cards[3])
	}
	// Every card's certificate was read, to check its anchor.
	if r.cards[0].reads == 0 || r.cards[1].reads == 0 {
		t.Fatal("rollcall did not read the certificates")
	}
	st := r.status()
	for _, c := range st.Cards {
		if c.LastRollcall.IsZero() || c.LastOK != (c.Index <= 2) {
			t.Fatalf("card %d last rollcall %v ok %v", c.Index, c.LastRollcall, c.LastOK)
		}
	}
	if st.Live != 2 || st.Margin != 0 {
		t.Fatalf("live %d margin %d", st.Live, st.Margin)
	}
}

// Cards not presented before the rollcall ends are listed as missing.
func TestRollcallMissing(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	r.insert(1)
	r.src.block = true
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	res, err := Rollcall(ctx, r.env, RollcallOptions{})
	if err != nil || len(res.Missing) != 2 || res.Missing[0].Index != 1 || res.Missing[1].Index != 3 {
		t.Fatalf("rollcall: %v %+v", err, res)
	}
}

// A card whose PIN is blocked fails its rollcall: the failure is logged,
// and Status counts the share as lost.
func TestRollcallBlockedCard(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	r.cards[1].retries = 0
	r.insert(0, 1, 2)
	res, err := Rollcall(context.Background(), r.env, RollcallOptions{})
	if err != nil {
		t.Fatalf("rollcall: %v", err)
	}
	st := r.status()
	if st.Live != 2 || st.Margin != 0 {
		t.Fatalf("live %d margin %d; cards %+v", st.Live, st.Margin, res.Cards)
	}
	if st.Cards[1].LastOK || !strings.Contains(st.Cards[1].Reason, "blocked") {
		t.Fatalf("card 2 status %+v", st.Cards[1])
	}
}

// A card enrolled without a custodian's name is registered in the log as
// "unnamed" (the registry wants a name); a later ceremony does not take
// that placeholder for the custodian's name.
func TestUnnamedCustodianStaysUnnamed(t *testing.T) {
	r := newRig(t, 2, 2)
	r.insert(0, 1)
	if _, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 2, AuthKey: []byte(operatorKey)}); err != nil {
		t.Fatal(err)
	}
	r.insert(0, 1)
	res, err := Rotate(context.Background(), r.env, RotateOptions{AuthKey: []byte(operatorKey)})
	if err != nil {
		t.Fatalf("rotate: %v\n%s", err, r.p.transcript())
	}
	for _, c := range res.New.Cards {
		if c.Custodian != "" {
			t.Fatalf("card %s's custodian %q", c.Serial, c.Custodian)
		}
	}
	if strings.Contains(r.p.transcript(), "unnamed") {
		t.Fatalf("transcript:\n%s", r.p.transcript())
	}
}
