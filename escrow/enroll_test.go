package escrow

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"strings"
	"testing"

	"custos.dev/custos/cards"
	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
)

func TestEnrollThenRecover(t *testing.T) {
	r := newRig(t, 2, 3)
	res := r.enroll(2, 3)
	rec := res.Ceremony
	if rec.Status != StatusActive || !rec.Complete() || rec.K != 2 || rec.N != 3 {
		t.Fatalf("ceremony after enroll: %+v", rec)
	}
	if res.TokenID < 0 {
		t.Fatal("no token written on luks2")
	}
	if !r.vol.inUse(rec.Keyslot) {
		t.Fatalf("recovery keyslot %d not in use", rec.Keyslot)
	}
	// The keyslot's passphrase is an encoded recovery key.
	if _, err := shares.ParseRecoveryKey(r.vol.keyOf(rec.Keyslot)); err != nil {
		t.Fatalf("recovery keyslot holds no recovery key: %v", err)
	}
	// Every card holds its share's certificate.
	for i, c := range r.cards {
		sc := c.cert(0x82)
		if sc == nil || sc.Ceremony != rec.ID || sc.Index != i+1 || sc.Commitment != rec.Card(i+1).Commitment {
			t.Fatalf("card %d certificate: %+v", i, sc)
		}
	}
	// The log says active, and agrees with the token.
	sr, err := r.log.Ceremony(rec.ID.String())
	if err != nil || sr.Status != StatusActive || len(sr.Cards) != 3 {
		t.Fatalf("log record: %+v, %v", sr, err)
	}
	st, err := Status(context.Background(), r.env)
	if err != nil {
		t.Fatal(err)
	}
	if st.Source != "token+log" || len(st.Problems) != 0 || st.Margin != 1 || st.Live != 3 || st.Unfinished != nil {
		t.Fatalf("status: %+v", st)
	}

	rr, err := r.recover("new passphrase", 2, 0)
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	if rr.Source != "token+log" || rr.Ceremony.ID != rec.ID {
		t.Fatalf("recover result: %+v", rr)
	}
	if got := r.vol.keyOf(rr.NewKeyslot); string(got) != "new passphrase" {
		t.Fatalf("new keyslot %d holds %q", rr.NewKeyslot, got)
	}
	if len(rr.Cards) != 2 || !rr.Cards[0].OK() || !rr.Cards[1].OK() || rr.Cards[0].Index != 3 {
		t.Fatalf("outcomes: %+v", rr.Cards)
	}
	if rr.Anchor.Seq == 0 {
		t.Fatal("recovery not logged")
	}
	r.noSecrets(rec.Keyslot)
}

// noSecrets checks that neither the recovery key, nor a PIN, nor the
// operator's passphrase appears in what custos said, the token or the log
// file.
func (r *rig) noSecrets(keyslot int) {
	r.t.Helper()
	secrets := []string{operatorKey, "new passphrase", string(r.vol.keyOf(keyslot))}
	for i := range r.cards {
		secrets = append(secrets, r.pin(i))
	}
	said := strings.Join(r.p.said, "\n")
	var tokens string
	h, _ := r.vol.Inspect(context.Background())
	for _, tk := range h.Tokens {
		tokens += string(tk.JSON)
	}
	db, err := os.ReadFile(r.dbPath)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(said, s) || strings.Contains(tokens, s) || strings.Contains(string(db), s) {
			r.t.Errorf("secret %q leaked", s)
		}
	}
}

func TestEnrollLUKS1ThenRecoverFromLog(t *testing.T) {
	r := newRig(t, 1, 3)
	res := r.enroll(2, 3)
	if res.TokenID != -1 {
		t.Fatalf("token %d on luks1", res.TokenID)
	}
	rr, err := r.recover("new passphrase", 1, 2)
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	if rr.Source != "log" {
		t.Fatalf("source %q", rr.Source)
	}
}

func TestRecoverFromTokenWithoutLog(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	r.env.Log = nil
	rr, err := r.recover("new passphrase", 0, 1)
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	if rr.Source != "token" || rr.Anchor.Seq != 0 {
		t.Fatalf("result: %+v", rr)
	}
}

func TestRecoverWithFreshLogImportsCeremony(t *testing.T) {
	r := newRig(t, 2, 3)
	res := r.enroll(2, 3)
	r.log.Close()
	os.Remove(r.dbPath)
	r.openLog()
	rr, err := r.recover("new passphrase", 0, 1)
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	if rr.Source != "token" {
		t.Fatalf("source %q", rr.Source)
	}
	sr, err := r.log.Ceremony(res.Ceremony.ID.String())
	if err != nil || sr.Status != StatusActive {
		t.Fatalf("ceremony not imported into the new log: %+v %v", sr, err)
	}
}

func TestRecoverFromCardsAlone(t *testing.T) {
	r := newRig(t, 1, 3)
	res := r.enroll(2, 3)
	r.env.Log = nil
	rr, err := r.recover("new passphrase", 2, 1)
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	if rr.Source != "cards" || rr.Ceremony.ID != res.Ceremony.ID {
		t.Fatalf("result: %+v", rr)
	}
	if string(r.vol.keyOf(rr.NewKeyslot)) != "new passphrase" {
		t.Fatal("new keyslot does not hold the new key")
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
	if !errors.Is(rr.Cards[0].Err, ErrNotCustodian) {
		t.Errorf("stranger: %v", rr.Cards[0].Err)
	}
	if !rr.Cards[1].OK() {
		t.Errorf("card 0 after a wrong pin: %v", rr.Cards[1].Err)
	}
	if !errors.Is(rr.Cards[2].Err, ErrSeenTwice) {
		t.Errorf("card 0 again: %v", rr.Cards[2].Err)
	}
	if !rr.Cards[3].OK() {
		t.Errorf("card 2: %v", rr.Cards[3].Err)
	}
	if !strings.Contains(r.p.transcript(), "wrong pin for card 1000 (custodian alice): 2 tries left") {
		t.Errorf("no wrong-pin message:\n%s", r.p.transcript())
	}
}

func TestRecoverWrongPINNeverSpendsLastTry(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	r.src.insert(r.cards[0])
	r.p.answer("bad1", "bad2", "bad3")
	_, err := Recover(context.Background(), r.env, RecoverOptions{NewKey: []byte("x")})
	if ExitCode(err) != ExitQuorum {
		t.Fatalf("want quorum error, got %v", err)
	}
	if r.cards[0].retries != 1 {
		t.Fatalf("card has %d retries left, want 1 (never the last spent)", r.cards[0].retries)
	}
	if len(r.p.answers) != 1 {
		t.Fatalf("asked %d times, want 2", 3-len(r.p.answers))
	}
}

func TestRecoverTamperedTokenShare(t *testing.T) {
	for _, withLog := range []bool{true, false} {
		r := newRig(t, 2, 3)
		r.enroll(2, 3)
		if !withLog {
			r.env.Log = nil
		}
		// Flip a bit of share 2's ciphertext in the token.
		r.vol.editToken(t, func(tj *tokenJSON) {
			for i := range tj.Cards {
				if tj.Cards[i].Index == 2 {
					tj.Cards[i].Sealed = flipLastByte(t, tj.Cards[i].Sealed)
				}
			}
		})
		opened := r.cards[1].opened
		rr, err := r.recover("new passphrase", 1, 0, 2)
		if err != nil {
			t.Fatalf("withLog=%v: recover: %v\n%s", withLog, err, r.p.transcript())
		}
		var de *DisagreeError
		if !errors.As(rr.Cards[0].Err, &de) || de.Index != 2 || de.Field != "sealed share" {
			t.Fatalf("withLog=%v: card of share 2: %v", withLog, rr.Cards[0].Err)
		}
		if r.cards[1].opened != opened {
			t.Fatalf("withLog=%v: the disputed share was opened", withLog)
		}
		if !rr.Cards[1].OK() || !rr.Cards[2].OK() {
			t.Fatalf("withLog=%v: outcomes %+v", withLog, rr.Cards)
		}
		if !strings.Contains(r.p.transcript(), "differs between") {
			t.Fatalf("withLog=%v: disagreement not reported:\n%s", withLog, r.p.transcript())
		}
	}
}

func TestRecoverCeremonyDisagreementStops(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	r.vol.editToken(t, func(tj *tokenJSON) { tj.Digest = strings.Repeat("00", 32) })
	_, err := r.recover("x", 0, 1)
	var de *DisagreeError
	if !errors.As(err, &de) || de.Field != "digest" || ExitCode(err) != ExitVerification {
		t.Fatalf("want a digest disagreement with exit 4, got %v", err)
	}
	if Hint(err) == "" {
		t.Fatal("no hint")
	}
}

func TestRecoverCommitmentMismatch(t *testing.T) {
	// Cards alone: a card whose certificate carries a share sealed
	// properly to its key but with other bytes than committed.
	r := newRig(t, 1, 3)
	r.enroll(2, 3)
	r.env.Log = nil
	c := r.cards[1]
	sc := c.cert(0x82)
	forged := &shares.Share{Header: sc.Sealed.Header, Value: make([]byte, 33)}
	forged.Value[32] = 7
	pub, _ := c.slots[0x82].priv.PublicKey.ECDH()
	sealed, err := shares.Seal(forged, pub)
	if err != nil {
		t.Fatal(err)
	}
	c.slots[0x82].cert.Sealed = sealed
	rr, err := r.recover("x", 1, 0, 2)
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	if !errors.Is(rr.Cards[0].Err, shares.ErrCommitmentMismatch) || ExitCode(rr.Cards[0].Err) != ExitVerification {
		t.Fatalf("forged share: %v", rr.Cards[0].Err)
	}
}

func TestRecoverQuorumNotReached(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(3, 3)
	_, err := r.recover("x", 0, 1)
	if !errors.Is(err, ErrQuorum) || ExitCode(err) != ExitQuorum || !strings.Contains(err.Error(), "2 of 3 good shares") {
		t.Fatalf("got %v", err)
	}
}

func TestRecoverKeyslotChanged(t *testing.T) {
	r := newRig(t, 2, 3)
	res := r.enroll(2, 3)
	r.vol.slots[res.Ceremony.Keyslot] = []byte("someone changed it")
	_, err := r.recover("x", 0, 1)
	if !errors.Is(err, ErrKeyslotMismatch) || ExitCode(err) != ExitVerification {
		t.Fatalf("got %v", err)
	}
}

func TestRecoverNoCeremony(t *testing.T) {
	r := newRig(t, 2, 3)
	_, err := r.recover("x", 0)
	if ExitCode(err) != ExitQuorum || !strings.Contains(err.Error(), "no custodian card") {
		t.Fatalf("got %v", err)
	}
}

func TestEnrollReplacesFailingCard(t *testing.T) {
	r := newRig(t, 2, 5)
	r.cards[3].failWrite = errors.New("card write failed")
	r.cards[4].corruptRead = true
	// card 3 fails to write, card 4 reads back wrong, card 0 twice: each
	// is set aside and another asked for.
	r.src.insert(r.cards[3], r.cards[4], r.cards[0], r.cards[0], r.cards[1], r.cards[2])
	r.p.answer(r.pin(3), r.pin(4), r.pin(0), r.pin(1), r.pin(2))
	res, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)})
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, r.p.transcript())
	}
	got := []string{}
	for _, c := range res.Ceremony.Cards {
		got = append(got, c.Serial)
	}
	if strings.Join(got, ",") != "1000,1001,1002" {
		t.Fatalf("cards %v", got)
	}
	tr := r.p.transcript()
	for _, want := range []string{"card write failed", "does not match", "already holds share 1"} {
		if !strings.Contains(tr, want) {
			t.Errorf("transcript lacks %q:\n%s", want, tr)
		}
	}
}

func TestEnrollFailureLeavesVolumeAsItWas(t *testing.T) {
	r := newRig(t, 2, 3)
	r.insert(0, 1) // only two cards of three
	_, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)})
	if !errors.Is(err, errNoMoreCards) {
		t.Fatalf("got %v", err)
	}
	h, _ := r.vol.Inspect(context.Background())
	if len(h.Keyslots) != 1 || len(h.Tokens) != 0 {
		t.Fatalf("volume changed: %+v", h)
	}
	vr, err := r.log.Volume(strings.ToLower(h.UUID))
	if err != nil || len(vr.History) != 1 {
		t.Fatalf("log: %+v %v", vr, err)
	}
	sr, _ := r.log.Ceremony(vr.History[0])
	if sr.Status != StatusAbandoned {
		t.Fatalf("ceremony %s", sr.Status)
	}
	// A new enrollment works afterwards.
	r.enroll(2, 3)
}

func TestEnrollRefusals(t *testing.T) {
	r := newRig(t, 2, 3)
	ctx := context.Background()
	for _, o := range []EnrollOptions{{K: 1, N: 3}, {K: 4, N: 3}, {K: 2, N: 256}, {K: 2, N: 2, Custodians: []string{"a", "b", "c"}}} {
		o.AuthKey = []byte(operatorKey)
		if _, err := Enroll(ctx, r.env, o); ExitCode(err) != ExitUsage {
			t.Errorf("%+v: got %v", o, err)
		}
	}
	_, err := Enroll(ctx, r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte("wrong")})
	if !errors.Is(err, luks.ErrWrongKey) || Hint(err) == "" {
		t.Errorf("wrong key: %v", err)
	}
	r.enroll(2, 3)
	_, err = Enroll(ctx, r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)})
	if !errors.Is(err, ErrAlreadyEnrolled) || !strings.Contains(Hint(err), "custos rotate /dev/test") {
		t.Errorf("second enroll: %v (%s)", err, Hint(err))
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
	if r.p.prompts[0] != "passphrase of an existing keyslot of /dev/test" || r.p.prompts[1] != "pin for card 1000" {
		t.Fatalf("prompts: %q", r.p.prompts)
	}
}

func TestExitCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("x"), 1},
		{ErrUsage, 2},
		{&shares.QuorumError{Good: 1, Need: 2}, 3},
		{ErrQuorum, 3},
		{&DisagreeError{Field: "k"}, 4},
		{ErrKeyslotMismatch, 4},
		{shares.ErrCommitmentMismatch, 4},
		{&cards.PINError{Retries: 2}, 1},
	} {
		if got := ExitCode(withHint(c.err, "h")); got != c.want {
			t.Errorf("ExitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// flipLastByte flips a bit in the last byte of a base64 sealed share: its
// authentication tag.
func flipLastByte(t testing.TB, s string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	return base64.StdEncoding.EncodeToString(b)
}

// TestRecoverStopsWhenInputEnds: when no PIN can be read (standard input
// ran out in a script), recovery stops there instead of setting the card
// aside and waiting out the timeout for another.
func TestRecoverStopsWhenInputEnds(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	r.src.insert(r.cards[0]) // a card, but no PIN queued for it
	r.src.insert(r.cards[1])
	r.p.answer(r.pin(1))
	_, err := Recover(context.Background(), r.env, RecoverOptions{NewKey: []byte("x")})
	if !errors.Is(err, errNoMoreInput) {
		t.Fatalf("got %v, want the prompt's error", err)
	}
	if errors.Is(err, ErrQuorum) {
		t.Fatalf("reported as a quorum failure: %v", err)
	}
}
