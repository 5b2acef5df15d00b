package escrow

import (
	"context"
	"errors"
	"strings"
	"testing"

	"custos.dev/custos/cards"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

func TestRecoverFromTokenWithoutLog(t *testing.T) {
	r := newRig(t, 2, 3)
	res := r.enroll(2, 3)
	r.env.Log = nil
	rr, err := r.recover("new passphrase", 0, 1)
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	// The token alone names the ceremony; the first card's certificate
	// is the second copy.
	if rr.Source != "token 0+card 1000's certificate" || rr.Anchor.Seq != 0 || rr.Ceremony.ID != res.Ceremony.ID {
		t.Fatalf("result: %+v", rr)
	}
	r.opensWith("new passphrase", rr.NewKeyslot)
}

// With a new, empty log the token is the only copy besides the cards. The
// old custos copied the token's ceremony into the new log; the rule
// forbids it now (one copy would then look like two), so the recovery is
// logged without the ceremony being recorded.
func TestRecoverWithFreshLog(t *testing.T) {
	r := newRig(t, 2, 3)
	res := r.enroll(2, 3)
	r.freshLog()
	rr, err := r.recover("new passphrase", 0, 1)
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	if !strings.HasPrefix(rr.Source, "token 0+card ") || rr.Anchor.Seq == 0 {
		t.Fatalf("result %+v", rr)
	}
	if _, err := r.log.Ceremony(idText(res.Ceremony.ID)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the token's ceremony was copied into the new log: %v", err)
	}
	var logged bool
	r.log.Events("", func(ev store.Event) error {
		logged = logged || ev.Type == "recover" && strings.Contains(string(ev.Body), idText(res.Ceremony.ID))
		return nil
	})
	if !logged {
		t.Fatal("recovery not logged")
	}
}

func TestRecoverFromCardsAlone(t *testing.T) {
	for _, version := range []int{1, 2} {
		r := newRig(t, version, 3)
		res := r.enroll(2, 3)
		r.env.Log = nil
		r.removeTokens()
		rr, err := r.recover("new passphrase", 2, 1)
		if err != nil {
			t.Fatalf("luks%d: recover: %v\n%s", version, err, r.p.transcript())
		}
		if rr.Source != "cards" || rr.Ceremony.ID != res.Ceremony.ID {
			t.Fatalf("luks%d: result: %+v", version, rr)
		}
		r.opensWith("new passphrase", rr.NewKeyslot)
	}
}

func TestRecoverCardOutcomes(t *testing.T) {
	r := newRig(t, 2, 4)
	r.enroll(2, 3)
	r.src.insert(r.cards[3], r.cards[0], r.cards[0], r.cards[2])
	r.p.answer("bad-pin", r.pin(0), r.pin(2))
	rr, err := Recover(context.Background(), r.env, RecoverOptions{NewKey: []byte("new passphrase")})
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	if len(rr.Cards) != 4 {
		t.Fatalf("outcomes: %+v", rr.Cards)
	}
	if !errors.Is(rr.Cards[0].Err, ErrNotCustodian) || rr.Cards[0].Index != 0 {
		t.Errorf("stranger: %+v", rr.Cards[0])
	}
	if !rr.Cards[1].OK() || rr.Cards[1].Index != 1 || rr.Cards[1].Custodian != "alice" {
		t.Errorf("card 0 after a wrong pin: %+v", rr.Cards[1])
	}
	if !errors.Is(rr.Cards[2].Err, ErrSeenTwice) {
		t.Errorf("card 0 again: %v", rr.Cards[2].Err)
	}
	if !rr.Cards[3].OK() {
		t.Errorf("card 2: %v", rr.Cards[3].Err)
	}
	tr := r.p.transcript()
	for _, want := range []string{"wrong pin for card 1000 (custodian alice): 2 tries left", "card 1003: set aside: not a custodian card",
		"card 1002 (custodian carol): share 3 matches its commitment"} {
		if !strings.Contains(tr, want) {
			t.Errorf("transcript lacks %q:\n%s", want, tr)
		}
	}
	if r.cards[0].retries != 3 {
		t.Errorf("card 0 has %d tries left after a good pin", r.cards[0].retries)
	}
}

func TestRecoverWrongPINNeverSpendsLastTry(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	r.src.insert(r.cards[0])
	r.p.answer("bad1", "bad2", "bad3")
	rr, err := Recover(context.Background(), r.env, RecoverOptions{NewKey: []byte("x")})
	if !quorumFailed(err) {
		t.Fatalf("want quorum error, got %v", err)
	}
	var pe *cards.PINError
	if len(rr.Cards) != 1 || !errors.As(rr.Cards[0].Err, &pe) || pe.Retries != 1 {
		t.Fatalf("outcomes %+v", rr.Cards)
	}
	if r.cards[0].retries != 1 {
		t.Fatalf("card has %d retries left, want 1 (never the last spent)", r.cards[0].retries)
	}
	if len(r.p.answers) != 1 {
		t.Fatalf("asked %d times, want 2", 3-len(r.p.answers))
	}
}

// A bit flipped in the token's copy of share 2: the token and the log
// disagree about that card's entry, and the card's own certificate sides
// with the log, whose entry is opened. (The old custos set the card aside
// unopened.)
func TestRecoverTamperedTokenShare(t *testing.T) {
	r := newRig(t, 2, 3)
	res := r.enroll(2, 3)
	r.editToken(res.Ceremony.ID, func(tok *store.Token) { tok.Record.Cards[1].Sealed[len(tok.Record.Cards[1].Sealed)-1] ^= 1 })
	rr, err := r.recover("new passphrase", 1, 0)
	if err == nil || !failedCheck(err) || !errors.Is(err, store.ErrAnchor) {
		// The token no longer agrees with the log's record at its
		// anchor: the volume opens, and the token is named.
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	if !rr.Cards[0].OK() || !rr.Cards[1].OK() || rr.NewKeyslot < 0 {
		t.Fatalf("outcomes %+v", rr.Cards)
	}
	r.opensWith("new passphrase", rr.NewKeyslot)
	tr := r.p.transcript()
	if !strings.Contains(tr, "card 2's entry: log and card 1001's certificate agree, token 0 differs; following the two") {
		t.Fatalf("disagreement not reported:\n%s", tr)
	}
	if r.cards[1].reads != 1 || r.cards[0].reads != 0 {
		t.Fatalf("certificate reads %d %d: want the disputed card's only", r.cards[1].reads, r.cards[0].reads)
	}
}

// Without a log the token is the only copy of the ceremony; a card whose
// certificate differs from the token about its own entry is set aside
// when the token's entry does not open, and the others recover.
func TestRecoverTamperedTokenShareNoLog(t *testing.T) {
	r := newRig(t, 2, 3)
	res := r.enroll(2, 3)
	r.env.Log = nil
	r.editToken(res.Ceremony.ID, func(tok *store.Token) { tok.Record.Cards[1].Sealed[len(tok.Record.Cards[1].Sealed)-1] ^= 1 })
	rr, err := r.recover("new passphrase", 1, 0, 2)
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	if rr.Cards[0].OK() || !rr.Cards[1].OK() || !rr.Cards[2].OK() {
		t.Fatalf("outcomes %+v", rr.Cards)
	}
	if !errors.Is(rr.Cards[0].Err, shares.ErrUnsealFailed) || rr.Cards[0].Index != 2 {
		t.Fatalf("card of share 2: %v", rr.Cards[0].Err)
	}
	r.opensWith("new passphrase", rr.NewKeyslot)
}

// The token's digest was changed: the token and the log disagree about
// the ceremony as a whole, each becomes a candidate and the cards'
// certificates choose the log's. The recovered key settles it, and the
// token, which no longer agrees with the log at its anchor, is named
// (exit 4 after the new keyslot is added). The old custos stopped.
func TestRecoverCeremonyDisagreement(t *testing.T) {
	r := newRig(t, 2, 3)
	res := r.enroll(2, 3)
	r.editToken(res.Ceremony.ID, func(tok *store.Token) { tok.Record.Digest[0] ^= 1 })
	rr, err := r.recover("new passphrase", 0, 1)
	if !failedCheck(err) || !strings.Contains(err.Error(), "token 0") {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	if rr.NewKeyslot < 0 || !strings.HasPrefix(rr.Source, "log+card ") {
		t.Fatalf("result %+v", rr)
	}
	r.opensWith("new passphrase", rr.NewKeyslot)
	if !strings.Contains(strings.Join(rr.Problems, "\n"), "digest differs between token 0 and the log") {
		t.Fatalf("problems %q", rr.Problems)
	}
	st, err := Status(context.Background(), r.env)
	if !failedCheck(err) || st.Confirmed {
		t.Fatalf("status: %v %+v", err, st)
	}
}

// A custodian rewrote their certificate with a share sealed to their own
// key but other bytes than committed: cards alone, the share is set aside
// by its commitment and the others recover.
func TestRecoverCommitmentMismatch(t *testing.T) {
	r := newRig(t, 1, 3)
	res := r.enroll(2, 3)
	r.env.Log = nil
	c := r.cards[1]
	cp := c.copyOf(t, 0x82)
	e := cp.Record.Cards[0]
	forged := &shares.Share{Header: shares.Header{Ceremony: idOf(res.Ceremony), Volume: volumeOf(res.Ceremony), Index: e.Index, K: 2, N: 3},
		Value: make([]byte, shares.RecoveryKeySize+1)}
	forged.Value[shares.RecoveryKeySize] = 7
	pub, _ := c.slots[0x82].priv.PublicKey.ECDH()
	sealed, err := shares.Seal(forged, pub)
	if err != nil {
		t.Fatal(err)
	}
	cp.Record.Cards[0].Sealed, _ = sealed.MarshalBinary()
	payload, err := store.EncodeCardCopy(cp.Record, cp.Anchor)
	if err != nil {
		t.Fatal(err)
	}
	c.setPayload(0x82, payload)
	rr, err := r.recover("x", 1, 0, 2)
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	if !errors.Is(rr.Cards[0].Err, shares.ErrCommitmentMismatch) || !failedCheck(rr.Cards[0].Err) {
		t.Fatalf("forged share: %v", rr.Cards[0].Err)
	}
	if rr.Source != "cards" || !rr.Cards[1].OK() || !rr.Cards[2].OK() {
		t.Fatalf("result %+v", rr)
	}
}

func TestRecoverQuorumNotReached(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(3, 3)
	_, err := r.recover("x", 0, 1)
	if !errors.Is(err, ErrQuorum) || !quorumFailed(err) || !strings.Contains(err.Error(), "2 of 3 good shares") {
		t.Fatalf("got %v", err)
	}
	if len(r.header().Keyslots) != 2 {
		t.Fatal("a keyslot was added without the quorum")
	}
}

// The ceremony's keyslot now holds another key (its salt unchanged, as if
// the header were rewritten): the recovered key opens nothing, the
// candidate is given up and the failure is a verification (exit 4).
func TestRecoverKeyslotChanged(t *testing.T) {
	r := newRig(t, 2, 3)
	res := r.enroll(2, 3)
	r.vol.slots[res.Ceremony.Keyslot] = []byte("someone changed it")
	_, err := r.recover("x", 0, 1)
	if !errors.Is(err, ErrKeyslotMismatch) || !failedCheck(err) {
		t.Fatalf("got %v\n%s", err, r.p.transcript())
	}
	if len(r.header().Keyslots) != 2 {
		t.Fatal("a keyslot was added")
	}
}

// The ceremony's keyslot number was reused: the recovered key opens
// another keyslot (the copies named the wrong one); custos follows the key
// and names the copies as suspect.
func TestRecoverKeyOpensAnotherKeyslot(t *testing.T) {
	r := newRig(t, 2, 3)
	res := r.enroll(2, 3)
	slot := res.Ceremony.Keyslot
	r.vol.mu.Lock()
	r.vol.slots[5], r.vol.salts[5] = r.vol.slots[slot], r.vol.salts[slot]
	r.vol.slots[slot] = []byte("someone else's key")
	r.vol.mu.Unlock()
	rr, err := r.recover("x", 0, 1)
	if err != nil || rr.Keyslot != 5 {
		t.Fatalf("recover: %v %+v\n%s", err, rr, r.p.transcript())
	}
	if !strings.Contains(strings.Join(rr.Problems, "\n"), "but its recovered key opens keyslot 5") {
		t.Fatalf("problems %q", rr.Problems)
	}
	r.opensWith("someone else's key", slot)
}

func TestRecoverNoCeremony(t *testing.T) {
	r := newRig(t, 2, 3)
	rr, err := r.recover("x", 0)
	if !quorumFailed(err) || !strings.Contains(err.Error(), "no custodian card") {
		t.Fatalf("got %v", err)
	}
	if len(rr.Cards) != 1 || !errors.Is(rr.Cards[0].Err, ErrNotCustodian) {
		t.Fatalf("outcomes %+v", rr.Cards)
	}
}

// When no PIN can be read (standard input ran out in a script), recovery
// stops there instead of setting the card aside and waiting for another.
func TestRecoverStopsWhenInputEnds(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	before := r.src.taken
	r.src.insert(r.cards[0], r.cards[1]) // cards, but no pin queued
	_, err := Recover(context.Background(), r.env, RecoverOptions{NewKey: []byte("x")})
	if !errors.Is(err, errNoMoreInput) || errors.Is(err, ErrQuorum) {
		t.Fatalf("got %v, want the prompt's error", err)
	}
	if r.src.taken != before+1 {
		t.Fatalf("%d cards taken, want 1: the second after the input ended", r.src.taken-before)
	}
}

func TestRecoverAsksNewPassphraseTwice(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	r.insert(0, 1)
	r.p.answer("pass one", "pass two")
	_, err := Recover(context.Background(), r.env, RecoverOptions{})
	if !errors.Is(err, ErrMismatch) || len(r.header().Keyslots) != 2 {
		t.Fatalf("mismatched passphrases: %v", err)
	}
	r.reset()
	r.insert(0, 1)
	r.p.answer("pass one", "pass one")
	rr, err := Recover(context.Background(), r.env, RecoverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.opensWith("pass one", rr.NewKeyslot)
	n := len(r.p.prompts)
	if r.p.prompts[n-2] != "new passphrase for /dev/test" || r.p.prompts[n-1] != "repeat new passphrase for /dev/test" {
		t.Fatalf("prompts %q", r.p.prompts)
	}
	r.noSecrets("pass one", "pass two")
}

// A token that does not decode is reported, and recovery goes on from the
// log.
func TestRecoverUnreadableToken(t *testing.T) {
	r := newRig(t, 2, 3)
	res := r.enroll(2, 3)
	id, _ := r.vol.custosToken(t)
	r.vol.mu.Lock()
	tk := r.vol.tokens[id]
	tk.JSON = []byte(strings.Replace(string(tk.JSON), `"k":2`, `"k":2,"k":2`, 1))
	r.vol.tokens[id] = tk
	r.vol.mu.Unlock()
	rr, err := r.recover("x", 0, 1)
	if err != nil || !strings.HasPrefix(rr.Source, "log+card ") || rr.Ceremony.ID != res.Ceremony.ID {
		t.Fatalf("recover: %v %+v", err, rr)
	}
	if !strings.Contains(r.p.transcript(), "warning: token 0 is unreadable") {
		t.Fatalf("not reported:\n%s", r.p.transcript())
	}
	st, _ := Status(context.Background(), r.env)
	if len(st.Problems) == 0 || st.Confirmed {
		t.Fatalf("status %+v", st)
	}
}
