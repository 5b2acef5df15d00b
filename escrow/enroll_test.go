package escrow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

func TestEnrollThenRecover(t *testing.T) {
	r := newRig(t, 2, 3)
	res := r.enroll(2, 3)
	rec := res.Ceremony
	if !rec.Complete() || rec.K != 2 || rec.N != 3 || rec.Salt == "" || rec.Version != 2 {
		t.Fatalf("ceremony after enroll: %+v", rec)
	}
	if res.TokenID < 0 {
		t.Fatal("no token written on luks2")
	}
	if !r.vol.inUse(rec.Keyslot) {
		t.Fatalf("recovery keyslot %d not in use", rec.Keyslot)
	}
	if _, err := shares.ParseRecoveryKey(r.vol.keyOf(rec.Keyslot)); err != nil {
		t.Fatalf("recovery keyslot holds no recovery key: %v", err)
	}
	// Every card holds its share's certificate: the record with its own
	// entry, anchored in the log.
	for i, c := range r.cards {
		cp := c.copyOf(t, 0x82)
		if cp == nil || cp.Record.ID != rec.ID || len(cp.Record.Cards) != 1 || cp.Record.Cards[0].Index != i+1 ||
			len(store.Compare(cp.Record, rec)) != 0 {
			t.Fatalf("card %d certificate: %+v", i, cp)
		}
		if err := r.log.CheckAnchor(cp.Anchor, cp.Record); err != nil {
			t.Errorf("card %d anchor %s: %v", i, cp.Anchor, err)
		}
		if c.verifies != 1 {
			t.Errorf("card %d: %d pin verifications at enroll, want 1", i, c.verifies)
		}
	}
	// The log says active; the token holds the same record, anchored.
	st, err := r.log.Ceremony(rec.IDString())
	if err != nil || st.Status != StatusActive || len(st.Record.Cards) != 3 {
		t.Fatalf("log record: %+v, %v", st, err)
	}
	_, tok := r.vol.custosToken(t)
	if tok.Record.ID != rec.ID || !tok.Record.Complete() {
		t.Fatalf("token: %+v", tok.Record)
	}
	if err := r.log.CheckAnchor(tok.Anchor, tok.Record); err != nil {
		t.Fatalf("token anchor %s: %v", tok.Anchor, err)
	}
	rep, err := Status(context.Background(), r.env)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Confirmed || len(rep.Problems) != 0 || rep.Margin != 1 || rep.Live != 3 || rep.Unfinished != nil {
		t.Fatalf("status: %+v", rep)
	}

	for _, c := range r.cards {
		c.reads, c.verifies = 0, 0
	}
	r.vol.tests = 0
	rr, err := r.recover("new passphrase", 2, 0)
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	if rr.Ceremony.ID != rec.ID || rr.Keyslot != rec.Keyslot {
		t.Fatalf("recover result: %+v", rr)
	}
	if got := r.vol.keyOf(rr.NewKeyslot); string(got) != "new passphrase" {
		t.Fatalf("new keyslot holds %q", got)
	}
	// Token and log agree: no certificate is read, and the recovered key
	// is tried on a keyslot once (the new keyslot's authorisation).
	for i, c := range r.cards {
		if c.reads != 0 {
			t.Errorf("card %d: %d certificate reads at recover, want 0", i, c.reads)
		}
	}
	if r.vol.tests != 1 {
		t.Errorf("recovered key tried %d times, want 1", r.vol.tests)
	}
}

func TestEnrollLUKS1ThenRecoverFromLog(t *testing.T) {
	r := newRig(t, 1, 3)
	res := r.enroll(2, 3)
	if res.TokenID != -1 || r.custosTokens() != 0 {
		t.Fatalf("token %d on luks1", res.TokenID)
	}
	if !strings.Contains(r.p.transcript(), "luks1 volume: no token") {
		t.Fatalf("luks1 not said:\n%s", r.p.transcript())
	}
	for _, c := range r.cards {
		c.reads = 0
	}
	r.vol.tests = 0
	rr, err := r.recover("new passphrase", 1, 2)
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	// One copy, the log, names the ceremony: each card's certificate is
	// the second copy, read before the card's pin is asked for.
	if !strings.HasPrefix(rr.Source, "log+card ") || rr.Ceremony.ID != res.Ceremony.ID {
		t.Fatalf("source %q", rr.Source)
	}
	if r.cards[1].reads != 1 || r.cards[2].reads != 0 {
		t.Errorf("certificate reads %d, %d: want the first card's only (it confirms the log)", r.cards[1].reads, r.cards[2].reads)
	}
	if r.vol.tests != 1 {
		t.Errorf("recovered key tested %d times, want 1", r.vol.tests)
	}
	if string(r.vol.keyOf(rr.NewKeyslot)) != "new passphrase" || rr.Anchor.Seq == 0 {
		t.Fatalf("result %+v", rr)
	}
	r.noSecrets("new passphrase")
}

func TestEnrollRefusals(t *testing.T) {
	r := newRig(t, 2, 3)
	ctx := context.Background()
	for _, o := range []EnrollOptions{{K: 1, N: 3}, {K: 4, N: 3}, {K: 2, N: 256}, {K: 2, N: 2, Custodians: []string{"a", "b", "c"}},
		{K: 2, N: 2, Custodians: []string{"a\x1b[2Jb"}}, {K: 2, N: 2, Custodians: []string{"evil\u202egnp.exe"}}} {
		o.AuthKey = []byte(operatorKey)
		if _, err := Enroll(ctx, r.env, o); !errors.Is(err, ErrUsage) {
			t.Errorf("%+v: got %v", o, err)
		} else {
			clean(t, "refusal", err.Error())
		}
	}
	_, err := Enroll(ctx, r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte("wrong")})
	if !errors.Is(err, luks.ErrWrongKey) || !errors.Is(err, ErrAuthorise) {
		t.Errorf("wrong key: %v", err)
	}
	if r.vol.adds != 0 || len(r.header().Keyslots) != 1 {
		t.Fatalf("a refusal changed the volume: %d adds", r.vol.adds)
	}
	r.enroll(2, 3)
	_, err = Enroll(ctx, r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)})
	if !errors.Is(err, ErrAlreadyEnrolled) {
		t.Errorf("second enroll: %v", err)
	}
	noLog := *r.env
	noLog.Log = nil
	if _, err := Enroll(ctx, &noLog, EnrollOptions{K: 2, N: 3}); !errors.Is(err, ErrNoLog) {
		t.Errorf("no log: %v", err)
	}
}

func TestEnrollPromptsForAuthKey(t *testing.T) {
	r := newRig(t, 2, 2)
	r.p.answer(operatorKey)
	r.insert(0, 1)
	if _, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 2}); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	want := []string{"passphrase of an existing keyslot of /dev/test", "pin for card 1000", "pin for card 1001"}
	if !slices.Equal(r.p.prompts, want) {
		t.Fatalf("prompts: %q", r.p.prompts)
	}
}

func TestEnrollReplacesFailingCard(t *testing.T) {
	r := newRig(t, 2, 6)
	r.cards[3].failWrite = errors.New("card write failed")
	r.cards[4].corruptRead = true
	r.cards[5].attest = attestUnknownCA
	// Card 3 fails to write, card 4 opens another share than the one
	// sealed, card 5 cannot prove its key, card 0 comes twice: each is
	// set aside and another asked for.
	r.src.insert(r.cards[3], r.cards[4], r.cards[5], r.cards[0], r.cards[0], r.cards[1], r.cards[2])
	r.p.answer(r.pin(3), r.pin(4), r.pin(0), r.pin(1), r.pin(2))
	res, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)})
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, r.p.transcript())
	}
	var got []string
	for _, c := range res.Ceremony.Cards {
		got = append(got, c.Serial)
	}
	if strings.Join(got, ",") != "1000,1001,1002" {
		t.Fatalf("cards %v", got)
	}
	tr := r.p.transcript()
	for _, want := range []string{"card write failed", "does not match", "card attestation", "already holds share 1"} {
		if !strings.Contains(tr, want) {
			t.Errorf("transcript lacks %q:\n%s", want, tr)
		}
	}
	// The card that failed its attestation was never asked for its pin.
	if r.cards[5].verifies != 0 || slices.Contains(r.p.prompts, "pin for card 1005") {
		t.Errorf("unattested card asked for its pin")
	}
	st := r.status()
	if !st.Confirmed || len(st.Problems) != 0 {
		t.Fatalf("status %+v", st)
	}
}

func TestEnrollAttestation(t *testing.T) {
	for _, c := range []struct {
		mode  attestMode
		allow bool
		ok    bool
	}{
		{attestNone, false, false}, {attestNone, true, true},
		{attestUnknownCA, true, false}, {attestNoPIN, true, false},
	} {
		t.Run(fmt.Sprintf("mode%d/allow=%v", c.mode, c.allow), func(t *testing.T) {
			r := newRig(t, 2, 2)
			r.cards[1].attest = c.mode
			r.insert(0, 1)
			res, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 2, AuthKey: []byte(operatorKey), AllowUnattested: c.allow})
			if c.ok {
				if err != nil || !res.Ceremony.AllowUnattested || res.Ceremony.Cards[1].Attestation != ([32]byte{}) ||
					res.Ceremony.Cards[0].Attestation == ([32]byte{}) {
					t.Fatalf("enroll: %v %+v", err, res)
				}
				st := r.status()
				if len(st.Notes) == 0 || !strings.Contains(strings.Join(st.Notes, "\n"), "without attestation") ||
					!strings.Contains(strings.Join(st.Notes, "\n"), "card 1001, share 2, is unattested") {
					t.Fatalf("status notes %q", st.Notes)
				}
				if !st.Cards[1].Attestation.Unattested || st.Cards[0].Attestation.Summary == "" || !res.Attestations[1].Unattested || res.Attestations[0].Summary == "" {
					t.Errorf("attestations: status %+v, enroll %+v", st.Cards, res.Attestations)
				}
				// The log alone: one chain, one attested card, one
				// allowed without.
				if rep, err := VerifyAttestations(r.env); err != nil || rep.Cards != 1 || rep.Unattested != 1 || len(rep.Chains) != 1 {
					t.Errorf("VerifyAttestations = %+v, %v", rep, err)
				}
				return
			}
			// The card is set aside; with no other card the enrollment
			// stops, a verification failure (exit 4), and leaves the
			// volume as it was.
			if !errors.Is(err, errNoMoreCards) || !errors.Is(err, ErrUnattested) || !failedCheck(err) ||
				!strings.Contains(r.p.transcript(), "card attestation") {
				t.Fatalf("enroll: %v\n%s", err, r.p.transcript())
			}
			if h := r.header(); len(h.Keyslots) != 1 || len(h.Tokens) != 0 {
				t.Fatalf("volume changed: %+v", h)
			}
		})
	}
}

func TestEnrollFailureLeavesVolumeAsItWas(t *testing.T) {
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("luks%d", version), func(t *testing.T) {
			r := newRig(t, version, 3)
			r.insert(0, 1) // only two cards of three
			_, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)})
			if !errors.Is(err, errNoMoreCards) {
				t.Fatalf("got %v", err)
			}
			h := r.header()
			if len(h.Keyslots) != 1 || len(h.Tokens) != 0 {
				t.Fatalf("volume changed: %+v", h)
			}
			// The recovery key this process held proved the keyslot it
			// killed.
			if !strings.Contains(r.p.transcript(), "the recovery key of ceremony") {
				t.Fatalf("kill not proven by the key:\n%s", r.p.transcript())
			}
			cs, err := r.log.VolumeCeremonies(h.UUID)
			if err != nil || len(cs) != 1 || cs[0].Status != StatusAbandoned {
				t.Fatalf("log: %+v %v", cs, err)
			}
			// A new enrollment works afterwards.
			r.reset()
			r.enroll(2, 3)
		})
	}
}

func TestEnrollFailedAddKeyslot(t *testing.T) {
	r := newRig(t, 2, 2)
	r.vol.failAdd = errors.New("device busy")
	r.insert(0, 1)
	_, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 2, AuthKey: []byte(operatorKey)})
	if err == nil || !strings.Contains(err.Error(), "device busy") {
		t.Fatalf("got %v", err)
	}
	if r.src.taken != 0 {
		t.Fatal("cards asked for after the keyslot could not be added")
	}
	cs, _ := r.log.VolumeCeremonies(r.vol.uuid)
	if len(cs) != 1 || cs[0].Status != StatusAbandoned {
		t.Fatalf("log %+v", cs)
	}
	r.vol.failAdd = nil
	r.reset()
	r.enroll(2, 2)
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
	if err != nil || cr.Custodian != "alice" || !slices.ContainsFunc(cr.Keys, func(k store.CardKey) bool { return k.Fingerprint == res.Fingerprint.String() }) {
		t.Fatalf("log card %+v %v", cr, err)
	}
	r.p.answer("123123", "123124")
	if _, err := InitCard(context.Background(), r.env, c, InitCardOptions{Custodian: "alice"}); !errors.Is(err, ErrMismatch) {
		t.Fatalf("mismatched pins: %v", err)
	}
	// With a log, the card's holder must be named (the log registers the
	// card under that name), before anything is asked or done.
	prompts := len(r.p.prompts)
	for _, name := range []string{"", "bob\x1b[2J"} {
		if _, err := InitCard(context.Background(), r.env, c, InitCardOptions{Custodian: name}); !errors.Is(err, ErrUsage) {
			t.Fatalf("custodian %q: %v", name, err)
		}
	}
	if len(r.p.prompts) != prompts {
		t.Fatalf("card init asked %v before refusing the custodian's name", r.p.prompts[prompts:])
	}
	// Enrollment names the custodians from the registry.
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
	if res2.Ceremony.Cards[0].Custodian != "alice" || res2.Ceremony.Cards[1].Custodian != "bob" {
		t.Fatalf("custodians %q %q", res2.Ceremony.Cards[0].Custodian, res2.Ceremony.Cards[1].Custodian)
	}
	if !slices.Contains(r2.p.prompts, "pin for card 1001 (custodian bob)") {
		t.Fatalf("prompts %q", r2.p.prompts)
	}
}
