package escrow

import (
	"context"
	"testing"

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
