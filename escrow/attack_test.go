package escrow

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// The attacks of issue 10 ("Trust at the point of use") and others like
// them, each against the fakes and a real bbolt log. Every copy may be
// forged by someone holding fewer than k cards: the log by whoever can
// write its file, the token by whoever holds the disk, a certificate by its
// own custodian. None of them alone may make custos kill a keyslot, keep a
// revoked one alive, or recover from the wrong ceremony.

const (
	colleagueKey = "a colleague's passphrase"
	tpmKey       = "the key systemd-cryptenroll sealed to the tpm"
)

// victim is a volume with a 2-of-3 ceremony (cards 0-2, card 3 spare for
// rotations), a colleague's passphrase added after it, and a TPM2 keyslot
// of systemd-cryptenroll (bound to its token of type systemd-tpm2) that
// lets the server boot unattended.
type victim struct {
	*rig
	rec                  *Record
	recoveryKey          []byte
	colleague, tpm       int
	colleagueSalt, tpmSa string
}

func newVictim(t *testing.T, version int) *victim {
	r := newRig(t, version, 4)
	v := &victim{rig: r, rec: r.enroll(2, 3).Ceremony}
	v.recoveryKey = r.vol.keyOf(v.rec.Keyslot)
	v.colleague = r.addKey(colleagueKey)
	v.tpm = r.addKey(tpmKey)
	if version == 2 {
		r.vol.setToken(7, "systemd-tpm2", []int{v.tpm}, []byte(fmt.Sprintf(`{"type":"systemd-tpm2","keyslots":["%d"],"tpm2-blob":"AAAA"}`, v.tpm)))
	}
	h := r.header()
	v.colleagueSalt, v.tpmSa = h.Keyslot(v.colleague).Salt, h.Keyslot(v.tpm).Salt
	r.p.said, r.p.prompts = nil, nil
	return v
}

// safe checks what every attack must leave: the operator's key, the
// colleague's and the TPM's keyslots open, and none of them was killed.
func (v *victim) safe() {
	v.t.Helper()
	v.opensWithOperatorKey()
	v.opensWith(colleagueKey, v.colleague)
	v.opensWith(tpmKey, v.tpm)
	v.vol.mu.Lock()
	defer v.vol.mu.Unlock()
	for _, k := range v.vol.killed {
		if k == 0 || k == v.colleague || k == v.tpm {
			v.t.Fatalf("keyslot %d killed\n%s", k, v.p.transcript())
		}
	}
}

// rotateWithKey runs rotate --key-file with new cards 1, 2, 3 queued.
func (v *victim) rotateWithKey() (*RotateResult, error) {
	v.insert(1, 2, 3)
	return Rotate(context.Background(), v.env, RotateOptions{AuthKey: []byte(operatorKey)})
}

// moved is the victim's ceremony moved onto keyslot slot, whose (public)
// salt it copies.
func (v *victim) moved(slot int, salt string) *Record {
	m := v.rec.Clone()
	m.Keyslot, m.Salt = slot, salt
	return m
}

// Attack 1. The log decides which keyslot rotate kills: one well-chained
// event moves the active ceremony onto another keyslot — a colleague's
// passphrase, the TPM2 keyslot, the operator's own — copying that
// keyslot's salt. The store refuses such an event through its API, so the
// attacker writes it into the file; log verify names it. The old custos
// then killed the keyslot the log named with rotate --key-file, left the
// real recovery keyslot alive and called it retired. Now the token and the
// log disagree, rotate --key-file refuses before changing anything (exit
// 4), and a card-authorised rotate kills the keyslot the recovered key
// opens, and only that one.
func TestAttackLogMovesTheCeremony(t *testing.T) {
	for _, target := range []string{"colleague", "tpm2", "operator"} {
		t.Run(target, func(t *testing.T) {
			v := newVictim(t, 2)
			var forged *Record
			switch target {
			case "colleague":
				forged = v.moved(v.colleague, v.colleagueSalt)
			case "tpm2":
				forged = v.moved(v.tpm, v.tpmSa)
			default:
				forged = v.moved(0, v.header().Keyslot(0).Salt)
			}
			// The store's API refuses the event.
			_, err := v.log.Update(func(tx *store.Tx) error {
				_, err := tx.PutCeremony("mallory", StatusActive, forged)
				return err
			})
			var re *store.RuleError
			if !errors.As(err, &re) || re.Rule != store.RuleFrame {
				t.Fatalf("the store took the forged event: %v", err)
			}
			head := v.forgeCeremony(StatusActive, forged)
			if st := v.logState(v.rec.ID); st.Record.Keyslot != forged.Keyslot || st.Last != head.Seq {
				t.Fatalf("the forgery does not show: %+v", st)
			}
			if _, err := v.log.Verify(); !errors.As(err, &re) {
				t.Fatalf("log verify: %v", err)
			}

			adds, kills, taken := v.vol.adds, v.killCount(), v.src.taken
			_, err = v.rotateWithKey()
			if !errors.Is(err, ErrUnconfirmed) || !failedCheck(err) || !strings.Contains(err.Error(), "keyslot differs between token 0 and the log") {
				t.Fatalf("rotate --key-file: %v\n%s", err, v.p.transcript())
			}
			if v.vol.adds != adds || v.src.taken != taken {
				t.Fatal("the refused rotation changed something")
			}
			v.killedNothing(kills)
			st, err := Status(context.Background(), v.env)
			if !failedCheck(err) || st.Confirmed || !strings.Contains(err.Error(), "log") {
				t.Fatalf("status: %v %v", err, st)
			}
			v.safe()

			// Authorised by cards, the rotation follows the ceremony the
			// cards' certificates name (the token's, which the recovered
			// key proves) and kills the real recovery keyslot.
			v.reset()
			v.insert(0, 1, 1, 2, 3)
			res, err := Rotate(context.Background(), v.env, RotateOptions{})
			if err != nil || !res.OldKilled || res.Old.Keyslot != v.rec.Keyslot ||
				!strings.Contains(v.p.transcript(), fmt.Sprintf("the recovery key of ceremony %s opens keyslot %d", idText(v.rec.ID), v.rec.Keyslot)) {
				t.Fatalf("card-authorised rotate: %v %+v\n%s", err, res, v.p.transcript())
			}
			// The log takes the retirement on its own (forged) record, and
			// the rotation says the log is suspect.
			if v.logState(v.rec.ID).Status != StatusRetired || v.logState(res.New.ID).Status != StatusActive ||
				!res.LogSuspect || !strings.Contains(strings.Join(res.Problems, "\n"), "the log is suspect") {
				t.Fatalf("log after the rotation; problems %q", res.Problems)
			}
			v.safe()
			v.opensNothing("the revoked recovery key", v.recoveryKey)
		})
	}
}

// Attack 1, second form: a forged open rotation naming a keyslot (the
// store takes it: an open record may name any keyslot and salt). The old
// custos "undid" it, killing that keyslot. Now the log alone names it: the
// undo leaves it in place and names it; the rotation then goes on and
// kills only the real recovery keyslot.
func TestAttackForgedOpenRotation(t *testing.T) {
	for _, auth := range []string{"cards", "key file"} {
		for _, target := range []string{"colleague", "tpm2", "operator"} {
			t.Run(auth+"/"+target, func(t *testing.T) {
				v := newVictim(t, 2)
				slot, salt := v.colleague, v.colleagueSalt
				switch target {
				case "tpm2":
					slot, salt = v.tpm, v.tpmSa
				case "operator":
					slot, salt = 0, v.header().Keyslot(0).Salt
				}
				f := &Record{Version: 2, ID: [16]byte(shares.NewCeremonyID()), Volume: v.rec.Volume, K: 2, N: 3, Keyslot: slot, Salt: salt,
					Digest: v.rec.Digest, Replaces: v.rec.ID}
				if _, err := v.log.Update(func(tx *store.Tx) error {
					_, err := tx.PutCeremony("mallory", StatusOpen, f)
					return err
				}); err != nil {
					t.Fatalf("the store refused an open rotation: %v", err)
				}
				opts := RotateOptions{WipeWait: time.Millisecond}
				if auth == "cards" {
					v.insert(0, 1)
				} else {
					opts.AuthKey = []byte(operatorKey)
				}
				v.insert(1, 2, 3)
				res, err := Rotate(context.Background(), v.env, opts)
				if err != nil || res.Resumed != "undone" || !res.OldKilled {
					t.Fatalf("rotate: %v %+v\n%s", err, res, v.p.transcript())
				}
				if !strings.Contains(v.p.transcript(), fmt.Sprintf("keyslot %d of interrupted rotation %s left in place", slot, idText(f.ID))) {
					t.Fatalf("the named keyslot not reported:\n%s", v.p.transcript())
				}
				if v.logState(f.ID).Status != StatusAbandoned {
					t.Fatal("the forged rotation is not abandoned")
				}
				v.safe()
				v.opensNothing("the revoked recovery key", v.recoveryKey)
			})
		}
	}
}

// Attack 2. A forged token for a fake ceremony that "replaces" the real
// one, reusing the real serials, slots and keys, with junk shares sealed to
// the cards' public keys. The old custos tried the fake first: every
// custodian typed a PIN, every share "matched its commitment", and it
// ended with a hint that the keyslot changed. Now the real ceremony, which
// two copies confirm, comes first, and each card speaks for the ceremony
// its own certificate names: the fake gets no card, no PIN, no ECDH.
func TestAttackForgedTokenReplacesTheCeremony(t *testing.T) {
	for _, variant := range []string{"beside the real token", "real token removed", "real token removed, no log", "no log"} {
		t.Run(variant, func(t *testing.T) {
			v := newVictim(t, 2)
			fake := &Record{Version: 2, ID: [16]byte(shares.NewCeremonyID()), Volume: v.rec.Volume, K: 2, N: 3,
				Keyslot: v.rec.Keyslot, Salt: v.rec.Salt, Replaces: v.rec.ID}
			v.junkShares(fake, v.rec)
			_, tok := v.vol.custosToken(t)
			if strings.Contains(variant, "removed") {
				v.removeTokens()
			}
			v.plantToken(fake, tok.Anchor)
			if strings.Contains(variant, "no log") {
				v.env.Log = nil
			}
			for _, c := range v.cards {
				c.opened, c.verifies = 0, 0
			}
			rr, err := v.recover("new passphrase", 0, 1)
			if err != nil {
				t.Fatalf("recover: %v\n%s", err, v.p.transcript())
			}
			if rr.Ceremony.ID != v.rec.ID || rr.Keyslot != v.rec.Keyslot {
				t.Fatalf("recovered %s from %s", idText(rr.Ceremony.ID), rr.Source)
			}
			for i, c := range v.cards[:2] {
				if c.opened != 1 || c.verifies != 1 {
					t.Errorf("card %d: %d ecdh, %d pin verifications: the fake was tried", i, c.opened, c.verifies)
				}
			}
			if len(v.p.prompts) != 2 {
				t.Errorf("prompts %q", v.p.prompts)
			}
			v.opensWith("new passphrase", rr.NewKeyslot)
			v.safe()
		})
	}
}

// Attack 3. Cards-only recovery and one bad custodian: they rewrite their
// own certificate (their PIN unlocks the management key) with a junk
// share and a matching commitment. The old custos ended "digest mismatch",
// named no card and never asked for card k+1. Now the k shares that do not
// combine make custos ask for one more card, and the combination that
// reproduces the digest names the share that does not fit.
func TestAttackBadCustodianCardsOnly(t *testing.T) {
	for _, frame := range []bool{false, true} {
		t.Run(fmt.Sprintf("forged frame %v", frame), func(t *testing.T) {
			v := newVictim(t, 1)
			v.env.Log = nil
			bad := v.cards[1]
			cp := bad.copyOf(t, 0x82)
			// The custodian opens their real share with their PIN and
			// changes it: same index and x coordinate, other bytes.
			sealed, _ := shares.ParseSealedShare(cp.Record.Cards[0].Sealed)
			bad.mu.Lock()
			sh, err := bad.open(bad.slots[0x82], sealed)
			bad.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			sh.Value[0] ^= 0x5a
			pub, _ := bad.slots[0x82].priv.PublicKey.ECDH()
			resealed, err := shares.Seal(sh, pub)
			if err != nil {
				t.Fatal(err)
			}
			e := &cp.Record.Cards[0]
			e.Sealed, _ = resealed.MarshalBinary()
			e.Commitment = [32]byte(shares.Commit(sh.Ceremony, sh.Index, sh.Value))
			if frame {
				// The bad custodian also rewrites the ceremony's digest to
				// the one their share would give.
				cp.Record.Digest[0] ^= 1
			}
			payload, err := store.EncodeCardCopy(cp.Record, cp.Anchor)
			if err != nil {
				t.Fatal(err)
			}
			bad.setPayload(0x82, payload)

			rr, err := v.recover("new passphrase", 1, 0, 2)
			if err != nil {
				t.Fatalf("recover: %v\n%s", err, v.p.transcript())
			}
			if rr.Ceremony.ID != v.rec.ID || rr.Source != "cards" || !rr.Cards[1].OK() || !rr.Cards[2].OK() {
				t.Fatalf("result %+v", rr)
			}
			tr := v.p.transcript()
			if frame {
				// The bad certificate disagrees with the others about the
				// ceremony: it becomes a candidate of its own, which one
				// card cannot complete.
				if !strings.Contains(tr, "card 1000's certificate disagrees with the other cards about the ceremony; trying both") {
					t.Fatalf("disagreement not said:\n%s", tr)
				}
			} else {
				if !errors.Is(rr.Cards[0].Err, shares.ErrInconsistentShare) || !strings.Contains(tr, "insert one more card to find it") ||
					!strings.Contains(tr, "card 1001 (custodian bob): share 2 set aside") {
					t.Fatalf("bad share not named: %v\n%s", rr.Cards[0].Err, tr)
				}
			}
			v.opensWith("new passphrase", rr.NewKeyslot)
			v.safe()
		})
	}
}

// rollback enrolls 2 of 3 with a snapshot of the log taken after the
// second card, then puts the snapshot back: the log rolled back to before
// the token and the third card's certificate were anchored.
func rollback(t *testing.T, version int) *victim {
	r := newRig(t, version, 4)
	var snap []byte
	failpoint = func(name string) error {
		if name == fpEnrollCard && snap == nil && r.openRecord() != nil && len(r.openRecord().Cards) == 2 {
			var err error
			if snap, err = os.ReadFile(r.dbPath); err != nil {
				return err
			}
		}
		return nil
	}
	t.Cleanup(func() { failpoint = nil })
	v := &victim{rig: r, rec: r.enroll(2, 3).Ceremony}
	failpoint = nil
	v.recoveryKey = r.vol.keyOf(v.rec.Keyslot)
	r.replaceLog(snap)
	r.p.said, r.p.prompts = nil, nil
	return v
}

// rewrite replaces the log by a new one holding the same ceremony record
// (the attacker copies it from the token or the cards) after pad other
// events: a log rewritten wholesale, whose chain is sound.
func rewrite(t *testing.T, version, pad int) *victim {
	r := newRig(t, version, 4)
	v := &victim{rig: r, rec: r.enroll(2, 3).Ceremony}
	v.recoveryKey = r.vol.keyOf(v.rec.Keyslot)
	r.freshLog()
	for i := range pad {
		if _, err := r.log.Append(store.Event{Actor: "mallory", Type: "audit.note", Body: []byte(fmt.Sprintf(`{"n":%d}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.log.Update(func(tx *store.Tx) error {
		_, err := tx.PutCeremony("mallory", StatusActive, v.rec)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r.p.said, r.p.prompts = nil, nil
	return v
}

// Attack 4. Anchors were written, never read. Now status, recover and
// rollcall check every anchor they read — the token's, each inserted
// card's — against the log; a missing or forked anchor is exit 4 naming
// the copy. A log whose anchors fail is not written back into the cards.
func TestAttackLogRolledBackOrRewritten(t *testing.T) {
	for _, c := range []struct {
		name    string
		make    func(t *testing.T) *victim
		problem string
	}{
		{"rolled back", func(t *testing.T) *victim { return rollback(t, 2) }, "rolled back or truncated"},
		{"rewritten, shorter", func(t *testing.T) *victim { return rewrite(t, 2, 0) }, "rolled back or truncated"},
		{"rewritten, forked", func(t *testing.T) *victim { return rewrite(t, 2, 30) }, "the log was rewritten"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := c.make(t)
			st, err := Status(context.Background(), v.env)
			if !failedCheck(err) || !errors.Is(err, store.ErrAnchor) || !strings.Contains(err.Error(), "token 0") ||
				!strings.Contains(err.Error(), c.problem) {
				t.Fatalf("status: %v\n%v", err, st)
			}
			if st.Confirmed || st.Copies[0].Copy != "token 0" || !strings.HasPrefix(st.Copies[0].Problem, "anchor") {
				t.Fatalf("status %v copies %+v", st, st.Copies)
			}

			before := make([][]byte, 3)
			for i := range before {
				before[i] = v.cards[i].slots[0x82].cert.Payload
			}
			v.insert(0, 1, 2)
			rc, err := Rollcall(context.Background(), v.env, RollcallOptions{})
			if !failedCheck(err) || !strings.Contains(err.Error(), "token 0") {
				t.Fatalf("rollcall: %v %+v\n%s", err, rc, v.p.transcript())
			}
			if c.name != "rolled back" && !strings.Contains(err.Error(), "card 1000's certificate") {
				t.Fatalf("rollcall does not name the cards' anchors: %v", err)
			}
			for i := range before {
				if !slices.Equal(before[i], v.cards[i].slots[0x82].cert.Payload) {
					t.Fatalf("card %d's certificate was rewritten against a log whose anchors fail", i)
				}
			}

			v.reset()
			rr, err := v.recover("new passphrase", 0, 1)
			if !failedCheck(err) || !errors.Is(err, store.ErrAnchor) || !strings.Contains(err.Error(), "token 0") {
				t.Fatalf("recover: %v\n%s", err, v.p.transcript())
			}
			// The volume opens with the new key all the same.
			v.opensWith("new passphrase", rr.NewKeyslot)
		})
	}
}

// On LUKS1 the cards' certificates are the copies with anchors: recovery
// reads them (the log alone names the ceremony) and names each one whose
// anchor fails.
func TestAttackLogRewrittenLUKS1(t *testing.T) {
	v := rewrite(t, 1, 30)
	rr, err := v.recover("new passphrase", 0, 1)
	// The first card's certificate is read (and its anchor checked); it
	// confirms the log's record, so the second card is matched without
	// reading its own.
	if !failedCheck(err) || !errors.Is(err, store.ErrAnchor) || !strings.Contains(err.Error(), "card 1000's certificate") {
		t.Fatalf("recover: %v\n%s", err, v.p.transcript())
	}
	v.opensWith("new passphrase", rr.NewKeyslot)
	v.reset()
	v.insert(0, 1, 2)
	if _, err := Rollcall(context.Background(), v.env, RollcallOptions{}); !failedCheck(err) || !strings.Contains(err.Error(), "card 1002's certificate") {
		t.Fatalf("rollcall: %v", err)
	}
}

// A new, empty log knows nothing of the volume: no anchor can be checked
// against it (it may be another machine's log as well as a rewritten
// one), so status says the ceremony is not confirmed and no more. Whether
// that should be exit 4 is a design question.
func TestAnchorsAgainstAnEmptyLog(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	r.freshLog()
	st, err := Status(context.Background(), r.env)
	if err != nil || st.Confirmed || !strings.Contains(strings.Join(st.Problems, "\n"), "only token 0 holds it: the log does not") {
		t.Fatalf("status: %v %v", err, st)
	}
}

// v1Token writes rec as a version 1 token (docs/FORMAT.md, appendix), the
// custodian of card 1 replaced by name1 (raw JSON string content), without
// an anchor.
func v1Token(rec *Record, name1 string) []byte {
	var cs []string
	for _, c := range rec.Cards {
		name := c.Custodian
		if c.Index == 1 {
			name = name1
		}
		cs = append(cs, fmt.Sprintf(`{"index":%d,"serial":"%s","slot":"%02x","fingerprint":"%x","custodian":"%s","commitment":"%x","sealed":"%s"}`,
			c.Index, c.Serial, c.Slot, c.Key, name, c.Commitment, base64.StdEncoding.EncodeToString(c.Sealed)))
	}
	return []byte(fmt.Sprintf(`{"type":"custos","keyslots":["%d"],"custos_version":1,"ceremony":"%x","volume":"%s","k":%d,"n":%d,"keyslot":%d,"digest":"%x","status":"active","cards":[%s]}`,
		rec.Keyslot, rec.ID, rec.VolumeString(), rec.K, rec.N, rec.Keyslot, rec.Digest, strings.Join(cs, ",")))
}

// Attack 5. Names from a token reached the terminal raw: escape sequences
// in a custodian's name could spoof prompts. A version 2 token with such a
// name does not decode (section 7 admits no control or format character),
// and a version 1 token, whose reader lets a format character through an
// escape, has its names filtered (section 13) wherever they are shown.
// Whatever custos says, asks or returns stays clean.
func TestAttackNamesFromATokenReachTheTerminal(t *testing.T) {
	for _, c := range []struct {
		name      string
		v1        bool
		custodian string
		readable  bool
	}{
		{"v2 escape sequence", false, "al\x1b[2J\x1b[Hpin for card 1001 (custodian bob)", false},
		{"v2 bidi override", false, "al\u202ecod.exe", false},
		{"v2 zero width", false, "al\u200bice", false},
		{"v2 newline", false, "al\nice", false},
		{"v1 escaped escape", true, `al\u001b[2Jice`, false},
		{"v1 escaped bidi override", true, `al\u202ecod.exe`, true},
		{"v1 escaped zero width", true, `al\u200bice`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, 2, 3)
			rec := r.enroll(2, 3).Ceremony
			id, _ := r.vol.custosToken(t)
			raw := v1Token(rec, c.custodian)
			if !c.v1 {
				r.vol.mu.Lock()
				raw = []byte(strings.Replace(string(r.vol.tokens[id].JSON), `"custodian":"alice"`, `"custodian":"`+c.custodian+`"`, 1))
				r.vol.mu.Unlock()
			}
			r.vol.setToken(id, "custos", []int{rec.Keyslot}, raw)
			r.p.said, r.p.prompts = nil, nil

			st, serr := Status(context.Background(), r.env)
			r.env.Log = nil // the token is then the copy recovery follows
			r.insert(0, 1)
			rr, err := Recover(context.Background(), r.env, RecoverOptions{NewKey: []byte("new passphrase")})
			if err != nil {
				t.Fatalf("recover: %v\n%s", err, r.p.transcript())
			}
			if c.readable == strings.HasPrefix(st.Copies[0].Problem, "unreadable") {
				t.Fatalf("token readable %v: %+v", c.readable, st.Copies[0])
			}
			// Readable, the token is the copy followed (its names
			// filtered); unreadable, the cards alone recover.
			if c.readable && (rr.Ceremony.Version != 1 || !strings.Contains(r.p.transcript(), "pin for card 1000 (custodian al?")) ||
				!c.readable && rr.Source != "cards" {
				t.Fatalf("recovered from %q (version %d)\n%s", rr.Source, rr.Ceremony.Version, r.p.transcript())
			}
			clean(t, "the transcript", r.p.transcript())
			for _, s := range append(st.Problems, st.Notes...) {
				clean(t, "a status problem", s)
			}
			for _, cp := range st.Copies {
				clean(t, "a status copy", cp.Problem)
			}
			for _, e := range []error{serr, err} {
				if e != nil {
					// The command line's hints carry no text of a copy: the
					// error's typed data is in its text, checked here.
					clean(t, "an error", e.Error())
				}
			}
			if rr != nil {
				for _, p := range rr.Problems {
					clean(t, "a recovery problem", p)
				}
				for _, o := range rr.Cards {
					clean(t, "a card outcome", SafeText(o.Custodian))
				}
			}
		})
	}
}

// A custodian name registered in the log (by card init, or by whoever can
// write the log) with a format character does not become a ceremony's
// name, and never reaches a prompt.
func TestAttackNameFromTheLogRegistry(t *testing.T) {
	r := newRig(t, 2, 2)
	for i, c := range r.cards[:2] {
		fp, _ := shares.FingerprintOf(&c.slots[0x82].priv.PublicKey)
		if _, err := r.log.Update(func(tx *store.Tx) error {
			_, err := tx.RegisterCard("mallory", "", store.CardRegistration{Serial: fmt.Sprint(c.serial), Custodian: fmt.Sprintf("bob\u202e%d", i),
				Slot: "82", Fingerprint: fp.String()})
			return err
		}); err != nil {
			t.Fatalf("register: %v", err)
		}
	}
	r.insert(0, 1)
	res, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 2, AuthKey: []byte(operatorKey)})
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, r.p.transcript())
	}
	for _, c := range res.Ceremony.Cards {
		if c.Custodian != "" {
			t.Fatalf("custodian %q taken from the registry", c.Custodian)
		}
	}
	clean(t, "the transcript", r.p.transcript())
}

// The token and the log agree on the ceremony's keyslot and salt, but the
// keyslot now has another salt: its key was killed and another added
// under its number (by hand, or by an attacker who can write the header
// and has a key). Both copies recorded the salt, so the ceremony's key is
// proven gone from that keyslot: a rotation with a key file goes on and
// leaves that keyslot alone, whoever's key it holds.
func TestAttackKeyslotSaltChanged(t *testing.T) {
	v := newVictim(t, 2)
	v.vol.mu.Lock()
	v.vol.slots[v.rec.Keyslot], v.vol.salts[v.rec.Keyslot] = []byte(ownKey), newSalt()
	v.vol.mu.Unlock()
	res, err := v.rotateWithKey()
	if err != nil || res.OldKilled || !strings.Contains(v.p.transcript(), "is gone from it") {
		t.Fatalf("rotate: %v\n%s", err, v.p.transcript())
	}
	if len(v.vol.killed) != 0 {
		t.Fatalf("rotate killed %v", v.vol.killed)
	}
	v.opensWith(ownKey, v.rec.Keyslot)
	v.safe()
	if st := v.status(); st.Ceremony.ID != res.New.ID {
		t.Fatalf("status %v", st)
	}
}

// A forged open enrollment in the log naming a colleague's keyslot (the
// store takes it): on a volume without a ceremony, enroll undoes it and
// leaves the keyslot, named; with a ceremony, neither enroll nor rotate
// kills it.
func TestAttackForgedOpenEnrollment(t *testing.T) {
	r := newRig(t, 2, 3)
	colleague := r.addKey(colleagueKey)
	vid, _ := shares.ParseVolumeID(r.vol.uuid)
	e := &Record{Version: 2, ID: [16]byte(shares.NewCeremonyID()), Volume: [16]byte(vid), K: 2, N: 3, Keyslot: colleague,
		Salt: r.header().Keyslot(colleague).Salt, Digest: [32]byte{1}}
	if _, err := r.log.Update(func(tx *store.Tx) error {
		_, err := tx.PutCeremony("mallory", StatusOpen, e)
		return err
	}); err != nil {
		t.Fatalf("the store refused an open enrollment: %v", err)
	}
	st := r.status()
	if st.Unfinished == nil || !strings.Contains(st.Unfinished.Step, "a rerun undoes it") {
		t.Fatalf("status %v", st)
	}
	res := r.enroll(2, 3)
	if res.Resumed != "undone" || !strings.Contains(r.p.transcript(), fmt.Sprintf("keyslot %d of interrupted enrollment %s left in place", colleague, idText(e.ID))) {
		t.Fatalf("enroll: %+v\n%s", res, r.p.transcript())
	}
	r.opensWith(colleagueKey, colleague)
	r.opensWithOperatorKey()
}

// A token bound to another keyslot than the one its record names (a
// colleague's) is no copy of anything: it is reported unreadable, so the
// log alone names the ceremony, rotate --key-file refuses, and recovery
// goes on from the log and the cards.
func TestAttackTokenBoundElsewhere(t *testing.T) {
	v := newVictim(t, 2)
	id, _ := v.vol.custosToken(t)
	v.vol.mu.Lock()
	tk := v.vol.tokens[id]
	tk.Keyslots = []int{v.colleague}
	tk.JSON = []byte(strings.Replace(string(tk.JSON), fmt.Sprintf(`"keyslots":["%d"]`, v.rec.Keyslot), fmt.Sprintf(`"keyslots":["%d"]`, v.colleague), 1))
	v.vol.tokens[id] = tk
	v.vol.mu.Unlock()
	kills := v.killCount()
	if _, err := v.rotateWithKey(); !errors.Is(err, ErrUnconfirmed) {
		t.Fatalf("rotate --key-file: %v", err)
	}
	v.killedNothing(kills)
	st, _ := Status(context.Background(), v.env)
	if st.Confirmed || !strings.HasPrefix(st.Copies[0].Problem, "unreadable") {
		t.Fatalf("status %v copies %+v", st, st.Copies)
	}
	v.reset()
	rr, err := v.recover("new passphrase", 0, 1)
	if err != nil || rr.Ceremony.ID != v.rec.ID || !strings.HasPrefix(rr.Source, "log+card ") {
		t.Fatalf("recover: %v %+v", err, rr)
	}
	v.safe()
}

// A custodian's card that holds a share of another volume in one slot and
// of this one in another: cards alone, the other volume's certificate is
// passed over and the card speaks for this volume. A card holding only
// another volume's share is no custodian of this one.
func TestCardCertificateOfAnotherVolume(t *testing.T) {
	other := newRig(t, 1, 3)
	other.enroll(2, 3)
	r := newRig(t, 1, 3)
	r.cards = other.cards // the same cards, slot 82 holding the other volume's shares
	for _, c := range r.cards {
		c.newKey(t, 0x83)
	}
	rec := r.enroll(2, 3).Ceremony
	for i, c := range r.cards {
		if cp := c.copyOf(t, 0x83); cp == nil || cp.Record.ID != rec.ID || c.copyOf(t, 0x82).Record.Volume == rec.Volume {
			t.Fatalf("card %d: shares not in the slots expected", i)
		}
	}
	r.env.Log = nil
	stranger := newFakeCard(t, 4242, "pin4242")
	stranger.slots[0x82].cert = other.cards[0].slots[0x82].cert // a copy of another volume's certificate
	r.src.insert(stranger)
	rr, err := r.recover("new passphrase", 2, 1)
	if err != nil || rr.Source != "cards" || rr.Ceremony.ID != rec.ID {
		t.Fatalf("recover: %v %+v\n%s", err, rr, r.p.transcript())
	}
	if !errors.Is(rr.Cards[0].Err, ErrNotCustodian) {
		t.Fatalf("stranger with another volume's certificate: %v", rr.Cards[0].Err)
	}
}

// The same forged open enrollment beside an active ceremony: rotate
// refuses while it stands ("run custos enroll") and enroll used to refuse
// because a ceremony is active ("run custos rotate"), so one event the
// store takes blocked every rotation. Now enroll undoes it — never
// finishing it beside the active ceremony, leaving the keyslot it names —
// and says to rotate, which then goes on.
func TestAttackForgedOpenEnrollmentBesideACeremony(t *testing.T) {
	v := newVictim(t, 2)
	e := &Record{Version: 2, ID: [16]byte(shares.NewCeremonyID()), Volume: v.rec.Volume, K: 2, N: 3, Keyslot: v.colleague,
		Salt: v.colleagueSalt, Digest: [32]byte{1}}
	if _, err := v.log.Update(func(tx *store.Tx) error {
		_, err := tx.PutCeremony("mallory", StatusOpen, e)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// An unfinished enrollment: the command line sends the operator to
	// custos enroll.
	if _, err := v.rotateWithKey(); !errors.Is(err, ErrUnfinished) || !isUnfinished(err, "enrollment") {
		t.Fatalf("rotate: %v", err)
	}
	v.reset()
	res, err := Enroll(context.Background(), v.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)})
	if !errors.Is(err, ErrAlreadyEnrolled) || res == nil || res.Resumed != "undone" || v.logState(e.ID).Status != StatusAbandoned {
		t.Fatalf("enroll: %v %+v", err, res)
	}
	v.reset()
	rot, err := v.rotateWithKey()
	if err != nil || !rot.OldKilled {
		t.Fatalf("rotate after: %v\n%s", err, v.p.transcript())
	}
	v.safe()
	v.opensNothing("the revoked recovery key", v.recoveryKey)
}
