package escrow

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/internal/realtest"
	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// The real stack: cryptsetup on an image file, bbolt in a temporary
// directory, virtual cards in the two vpcd readers through pcscd, and the
// ReaderSource the command line uses. Only the operator is scripted: which
// card goes into which reader when, and what is typed at each prompt.

var (
	realCAOnce sync.Once
	realCA     *vcard.CA
	realCAErr  error
	realCADir  string
)

// TestMain makes the virtual cards' CA (realCA) before the tests run; the
// tests take it from virtualCA.
func TestMain(m *testing.M) {
	openCA()
	code := m.Run()
	if realCADir != "" {
		os.RemoveAll(realCADir)
	}
	os.Exit(code)
}

func openCA() {
	realCAOnce.Do(func() {
		if realCADir, realCAErr = os.MkdirTemp("", "escrow-ca"); realCAErr == nil {
			realCA, realCAErr = vcard.OpenCA(filepath.Join(realCADir, "ca"))
		}
	})
}

func virtualCA(t testing.TB) *vcard.CA {
	t.Helper()
	openCA()
	if realCAErr != nil {
		t.Fatalf("virtual CA: %v", realCAErr)
	}
	return realCA
}

// cheapPBKDF keeps the tests fast; production keeps cryptsetup's defaults.
var cheapPBKDF = &luks.PBKDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}

// formatImage makes a LUKS image whose keyslot 0 opens with key.
func formatImage(t testing.TB, version int, key []byte) *luks.Volume {
	t.Helper()
	bin := realtest.Binary(t, "cryptsetup")
	path := filepath.Join(t.TempDir(), "vol.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 20<<20); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "luksFormat", "--type=luks"+strconv.Itoa(version), "--batch-mode",
		"--pbkdf=pbkdf2", "--pbkdf-force-iterations=1000", "--key-file=-", path)
	cmd.Stdin = bytes.NewReader(key)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("luksFormat: %v: %s", err, out)
	}
	return &luks.Volume{Path: path, Cryptsetup: bin}
}

// copyFile copies a file (an image, a log) into dir.
func copyFile(t testing.TB, src, dir string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(dir, fmt.Sprintf("copy-%d-%s", time.Now().UnixNano(), filepath.Base(src)))
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// scriptedReaders plays the operator at the readers: for each card the
// ceremony waits for, it takes the last card out in the background and
// puts the next card of its queue into the other reader, once pcscd saw
// that reader's card of the swap before leave. No swap waits for pcscd to
// see a card leave before the next goes in. The ceremony sees the cards
// only through the real ReaderSource.
type scriptedReaders struct {
	t       testing.TB
	src     *ReaderSource
	mu      sync.Mutex
	queue   []*vcard.Card
	in      *vcard.Inserted
	leaving chan error // the removal of the card before in
	taken   int
}

func newScriptedReaders(t testing.TB) *scriptedReaders {
	s := &scriptedReaders{t: t, src: NewReaderSource()}
	t.Cleanup(func() {
		s.takeOut()
		s.src.Close()
	})
	return s
}

func (s *scriptedReaders) insert(cs ...*vcard.Card) {
	s.mu.Lock()
	s.queue = append(s.queue, cs...)
	s.mu.Unlock()
}

func (s *scriptedReaders) reset() {
	s.mu.Lock()
	s.queue = nil
	s.mu.Unlock()
}

// takeOut takes every card out and waits until pcscd has seen them leave.
func (s *scriptedReaders) takeOut() {
	if s.in != nil {
		if err := s.in.Remove(); err != nil {
			s.t.Errorf("remove card: %v", err)
		}
		s.in = nil
	}
	s.waitLeaving()
}

func (s *scriptedReaders) waitLeaving() {
	if s.leaving != nil {
		if err := <-s.leaving; err != nil {
			s.t.Errorf("remove card: %v", err)
		}
		s.leaving = nil
	}
}

func (s *scriptedReaders) Next(ctx context.Context) (Card, error) {
	s.mu.Lock()
	if len(s.queue) == 0 {
		s.takeOut()
		s.mu.Unlock()
		return nil, errNoMoreCards
	}
	c := s.queue[0]
	s.queue = s.queue[1:]
	port := vcard.Port0
	var out chan error
	if old := s.in; old != nil {
		s.in = nil
		if old.Card() == c { // the same card again: out before in
			if err := old.Remove(); err != nil {
				s.t.Errorf("remove card: %v", err)
			}
			port = old.Port()
		} else {
			out = make(chan error, 1)
			go func() { out <- old.Remove() }()
			if old.Port() == vcard.Port0 {
				port = vcard.Port1
			}
		}
	}
	s.waitLeaving() // the card out of this reader at the swap before
	s.leaving = out
	in, err := c.Insert(ctx, port)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.in = in
	s.taken++
	s.mu.Unlock()
	return s.src.Next(ctx)
}

// realRig is the real stack for one test.
type realRig struct {
	t       testing.TB
	vol     *luks.Volume
	cards   []*vcard.Card
	pins    []string
	readers *scriptedReaders
	p       *fakePrompter
	dbPath  string
	log     *store.Log
	env     *Env
}

func newRealRig(t testing.TB, version, ncards int) *realRig {
	t.Helper()
	realtest.LockReaders(t)
	ca := virtualCA(t)
	r := &realRig{t: t, vol: formatImage(t, version, []byte(operatorKey)), p: &fakePrompter{}}
	r.readers = newScriptedReaders(t)
	r.dbPath = filepath.Join(t.TempDir(), "custos.db")
	r.openLog()
	r.env = &Env{Volume: r.vol, Device: r.vol.Path, Cards: r.readers, Log: r.log, Prompt: r.p, Actor: "tester", PBKDF: cheapPBKDF, Roots: ca.Pool()}
	for i := range ncards {
		r.addCard(uint32(5000+i), fmt.Sprintf("%06d", 246800+i))
	}
	t.Cleanup(func() {
		if bad := unclean(r.p.transcript()); bad != "" {
			t.Errorf("the transcript carries %s", bad)
		}
	})
	return r
}

func (r *realRig) openLog() {
	l, err := store.Open(r.dbPath, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { l.Close() })
	r.log = l
	if r.env != nil {
		r.env.Log = l
	}
}

// addCard makes a virtual card and runs card init on it through the
// readers, as a custodian would.
func (r *realRig) addCard(serial uint32, pin string) {
	r.t.Helper()
	r.addCardVersion(serial, pin, "")
}

// addCardVersion is addCard for a card of the given firmware ("" for
// vcard's default).
func (r *realRig) addCardVersion(serial uint32, pin, version string) {
	r.t.Helper()
	vc, err := vcard.NewCard(vcard.Config{Serial: serial, Version: version, CA: virtualCA(r.t), StatePath: filepath.Join(r.t.TempDir(), "card.json")})
	if err != nil {
		r.t.Fatal(err)
	}
	r.cards = append(r.cards, vc)
	r.pins = append(r.pins, pin)
	r.readers.insert(vc)
	card, err := r.readers.Next(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	defer card.Close()
	r.p.answer(pin, pin, "13579135", "13579135")
	if _, err := InitCard(context.Background(), r.env, card, InitCardOptions{Custodian: fmt.Sprintf("custodian-%d", serial), Roots: virtualCA(r.t).Pool()}); err != nil {
		r.t.Fatalf("card init: %v", err)
	}
}

func (r *realRig) insert(idx ...int) {
	for _, i := range idx {
		r.readers.insert(r.cards[i])
		r.p.answer(r.pins[i])
	}
}

func (r *realRig) reset() {
	r.readers.reset()
	r.p.mu.Lock()
	r.p.answers = nil
	r.p.mu.Unlock()
}

func (r *realRig) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	r.t.Cleanup(cancel)
	return ctx
}

func (r *realRig) enroll(k, n int) *EnrollResult {
	r.t.Helper()
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	r.insert(idx...)
	res, err := Enroll(r.ctx(), r.env, EnrollOptions{K: k, N: n, AuthKey: []byte(operatorKey)})
	if err != nil {
		r.t.Fatalf("enroll: %v\n%s", err, r.p.transcript())
	}
	return res
}

func (r *realRig) recover(newKey string, idx ...int) (*RecoverResult, error) {
	r.insert(idx...)
	return Recover(r.ctx(), r.env, RecoverOptions{NewKey: []byte(newKey)})
}

func (r *realRig) header() *luks.Header {
	r.t.Helper()
	h, err := r.vol.Inspect(r.ctx())
	if err != nil {
		r.t.Fatal(err)
	}
	return h
}

// opens checks key opens a keyslot of the volume and returns it.
func (r *realRig) opens(key string) int {
	r.t.Helper()
	slot, err := r.vol.FindKeyslot(r.ctx(), []byte(key))
	if err != nil {
		r.t.Fatalf("%q does not open the volume: %v", key, err)
	}
	return slot
}

// addKey adds key with luksAddKey, authorised by the operator's key.
func (r *realRig) addKey(key string) int {
	r.t.Helper()
	ks, _, err := r.vol.AddKeyslot(r.ctx(), r.header(), []byte(operatorKey), []byte(key), luks.AddOptions{PBKDF: cheapPBKDF})
	if err != nil {
		r.t.Fatal(err)
	}
	return ks.ID
}

// custosToken returns the custos token of the header.
func (r *realRig) custosToken() (luks.Token, *store.Token) {
	r.t.Helper()
	for _, tk := range r.header().Tokens {
		if tk.Type == luks.TokenType {
			tok, err := store.ParseToken(tk.JSON)
			if err != nil {
				r.t.Fatalf("token %d: %v", tk.ID, err)
			}
			return tk, tok
		}
	}
	r.t.Fatal("no custos token")
	return luks.Token{}, nil
}

func TestRealEnrollRecoverLUKS2(t *testing.T) {
	r := newRealRig(t, 2, 4) // cards 0-2 custodians, card 3 a stranger
	res := r.enroll(2, 3)
	if res.TokenID < 0 {
		t.Fatal("no token")
	}
	h := r.header()
	if len(h.Keyslots) != 2 || h.Keyslot(res.Ceremony.Keyslot) == nil || h.Keyslot(res.Ceremony.Keyslot).Salt != res.Ceremony.Salt {
		t.Fatalf("header: %+v", h.Keyslots)
	}
	if st, err := Status(r.ctx(), r.env); err != nil || !st.Confirmed || len(st.Problems) != 0 || st.Margin != 1 {
		t.Fatalf("status: %v %v", err, st)
	}

	t.Run("recover", func(t *testing.T) {
		rr, err := r.recover("first new passphrase", 2, 0)
		if err != nil {
			t.Fatalf("recover: %v\n%s", err, r.p.transcript())
		}
		if r.opens("first new passphrase") != rr.NewKeyslot || rr.Source != "token 0+log" {
			t.Fatalf("result %+v", rr)
		}
	})

	t.Run("wrong pin, stranger, card twice", func(t *testing.T) {
		// The virtual card allows 3 PIN tries: a wrong PIN leaves 2, and
		// custos asks again; card 1 comes back after its share was
		// counted.
		r.readers.insert(r.cards[3], r.cards[1], r.cards[1], r.cards[2])
		r.p.answer("999999", r.pins[1], r.pins[2])
		rr, err := Recover(r.ctx(), r.env, RecoverOptions{NewKey: []byte("second new passphrase")})
		if err != nil {
			t.Fatalf("recover: %v\n%s", err, r.p.transcript())
		}
		if len(rr.Cards) != 4 || !errors.Is(rr.Cards[0].Err, ErrNotCustodian) || !rr.Cards[1].OK() ||
			!errors.Is(rr.Cards[2].Err, ErrSeenTwice) || !rr.Cards[3].OK() {
			t.Fatalf("outcomes %+v\n%s", rr.Cards, r.p.transcript())
		}
		r.opens("second new passphrase")
	})

	t.Run("tampered token share", func(t *testing.T) {
		tk, tok := r.custosToken()
		tok.Record.Cards[0].Sealed[len(tok.Record.Cards[0].Sealed)-1] ^= 1
		raw, err := store.EncodeToken(tok.Record, tok.Anchor)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.vol.ReplaceToken(r.ctx(), r.header(), tk.ID, raw, tok.Record.Keyslot); err != nil {
			t.Fatal(err)
		}
		r.reset()
		rr, err := r.recover("third new passphrase", 0, 1)
		// The card's certificate sides with the log; the token, which no
		// longer agrees with the log at its anchor, is named (exit 4).
		if !failedCheck(err) || !strings.Contains(err.Error(), "token 0") || !rr.Cards[0].OK() || !rr.Cards[1].OK() {
			t.Fatalf("recover: %v %+v\n%s", err, rr, r.p.transcript())
		}
		r.opens("third new passphrase")
	})

	t.Run("log deleted", func(t *testing.T) {
		r.log.Close()
		if err := os.Remove(r.dbPath); err != nil {
			t.Fatal(err)
		}
		r.openLog()
		r.reset()
		rr, err := r.recover("fourth new passphrase", 1, 2)
		if err != nil || rr.Source != "token 0+card 5001's certificate" {
			t.Fatalf("recover: %v %+v\n%s", err, rr, r.p.transcript())
		}
		r.opens("fourth new passphrase")
	})
}

func TestRealLUKS1FromLogAndCardsAlone(t *testing.T) {
	r := newRealRig(t, 1, 3)
	r.enroll(2, 3)
	rr, err := r.recover("from the log", 0, 1)
	if err != nil || rr.Source != "log+card 5000's certificate" {
		t.Fatalf("recover from the log: %v %+v\n%s", err, rr, r.p.transcript())
	}
	r.opens("from the log")
	r.env.Log = nil
	rr, err = r.recover("from the cards", 2, 1)
	if err != nil || rr.Source != "cards" {
		t.Fatalf("recover from the cards: %v %+v\n%s", err, rr, r.p.transcript())
	}
	r.opens("from the cards")
}

func TestRealRotateRollcallStatus(t *testing.T) {
	r := newRealRig(t, 2, 4)
	old := r.enroll(2, 3).Ceremony
	r.insert(0, 1, 2)
	rc, err := Rollcall(r.ctx(), r.env, RollcallOptions{})
	if err != nil || len(rc.Missing) != 0 {
		t.Fatalf("rollcall: %v %+v", err, rc)
	}
	// Rotate to cards 1, 2, 3 authorised by cards 0 and 2; wipe card 0.
	r.insert(0, 2, 1, 2, 3, 0)
	res, err := Rotate(r.ctx(), r.env, RotateOptions{WipeWait: 10 * time.Second})
	if err != nil {
		t.Fatalf("rotate: %v\n%s", err, r.p.transcript())
	}
	if len(res.Wiped) != 1 || res.Wiped[0].Serial != "5000" || !res.OldKilled {
		t.Fatalf("wiped %+v to wipe %+v", res.Wiped, res.ToWipe)
	}
	h := r.header()
	if h.InUse(old.Keyslot) || len(h.Tokens) != 1 {
		t.Fatalf("header after rotate: %+v", h)
	}
	st, err := Status(r.ctx(), r.env)
	if err != nil || st.Ceremony.ID != res.New.ID || len(st.Problems) != 0 || st.Margin != 1 {
		t.Fatalf("status %v %v", st, err)
	}
	// Card 0 was wiped: it is no custodian any more.
	rr, err := r.recover("after rotate", 0, 3, 1)
	if err != nil || !errors.Is(rr.Cards[0].Err, ErrNotCustodian) {
		t.Fatalf("recover after rotate: %v %+v\n%s", err, rr, r.p.transcript())
	}
	r.opens("after rotate")
}

// A crash after the second card: the open token and the log agree on the
// keyslot and its salt, so the rerun kills it and enrolls anew.
func TestRealEnrollCrashThenRerun(t *testing.T) {
	r := newRealRig(t, 2, 3)
	crashAt(t, fpEnrollCard, 2)
	r.insert(0, 1, 2)
	if _, err := Enroll(r.ctx(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)}); !crashed(err) {
		t.Fatalf("no crash: %v", err)
	}
	failpoint = nil
	r.opens(operatorKey)
	r.reset()
	res := r.enroll(2, 3)
	if res.Resumed != "undone" || !strings.Contains(r.p.transcript(), "the token and the log agree that keyslot") {
		t.Fatalf("resumed %q\n%s", res.Resumed, r.p.transcript())
	}
	if h := r.header(); len(h.Keyslots) != 2 {
		t.Fatalf("keyslots %+v", h.Keyslots)
	}
	if _, err := r.recover("after crash", 1, 2); err != nil {
		t.Fatalf("recover: %v", err)
	}
	r.opens(operatorKey)
}

// cardKeys reads the cards' public keys from the log's registry (their
// attestation certificates): what any reader of the log can get.
func (r *realRig) cardKeys(rec *Record) map[string]*x509.Certificate {
	r.t.Helper()
	out := map[string]*x509.Certificate{}
	for _, c := range rec.Cards {
		cr, err := r.log.Card(c.Serial)
		if err != nil {
			r.t.Fatal(err)
		}
		for _, k := range cr.Keys {
			if k.Fingerprint != fingerprintText(c.Key) || len(k.Attestation) == 0 {
				continue
			}
			certs, err := x509.ParseCertificates(k.Attestation)
			if err != nil {
				r.t.Fatal(err)
			}
			out[c.Serial] = certs[0]
		}
	}
	return out
}

// TestRealAttacks runs the attacks of issue 10 through cryptsetup, bbolt
// and the virtual cards, each on a copy of one enrolled image and its log.
func TestRealAttacks(t *testing.T) {
	r := newRealRig(t, 2, 4)
	var early string // the log after the second card: for a rollback
	failpoint = func(name string) error {
		if name == fpEnrollCard && early == "" {
			if st, err := r.log.VolumeCeremonies(r.header().UUID); err == nil && len(st) == 1 && len(st[0].Record.Cards) == 2 {
				early = copyFile(t, r.dbPath, t.TempDir())
			}
		}
		return nil
	}
	rec := r.enroll(2, 3).Ceremony
	failpoint = nil
	if early == "" {
		t.Fatal("no snapshot of the log")
	}
	colleague := r.addKey(colleagueKey)
	tpm := r.addKey(tpmKey)
	// A token as systemd-cryptenroll writes it (cryptsetup's systemd-tpm2
	// plugin checks its members).
	tpmToken := fmt.Sprintf(`{"type":"systemd-tpm2","keyslots":["%d"],"tpm2-blob":"AAAA","tpm2-pcrs":[7],"tpm2-pcr-bank":"sha256","tpm2-primary-alg":"ecc","tpm2-policy-hash":"00"}`, tpm)
	cmd := exec.Command(r.vol.Cryptsetup, "token", "import", "--json-file=-", "--key-slot", strconv.Itoa(tpm), r.vol.Path)
	cmd.Stdin = strings.NewReader(tpmToken)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("token import: %v: %s", err, out)
	}
	keys := r.cardKeys(rec)
	r.log.Close()
	image, db := r.vol.Path, r.dbPath
	dir := t.TempDir()
	fresh := func(t *testing.T, log string) {
		r.vol = &luks.Volume{Path: copyFile(t, image, dir), Cryptsetup: r.vol.Cryptsetup}
		r.env.Volume, r.env.Device = r.vol, r.vol.Path
		r.dbPath = copyFile(t, log, dir)
		r.openLog()
		r.reset()
		r.p.said, r.p.prompts = nil, nil
	}
	safe := func(t *testing.T) {
		t.Helper()
		if r.opens(operatorKey) != 0 || r.opens(colleagueKey) != colleague || r.opens(tpmKey) != tpm {
			t.Fatal("a key moved")
		}
	}

	t.Run("log moves the ceremony", func(t *testing.T) {
		for _, target := range []int{colleague, tpm} {
			fresh(t, db)
			forged := rec.Clone()
			forged.Keyslot, forged.Salt = target, r.header().Keyslot(target).Salt
			r.log.Close()
			forgeFile(t, r.dbPath, StatusActive, forged, forgeRecord(t, StatusActive, forged))
			r.openLog()
			before := r.header()
			taken := r.readers.taken
			r.insert(1, 2, 3)
			_, err := Rotate(r.ctx(), r.env, RotateOptions{AuthKey: []byte(operatorKey)})
			if !errors.Is(err, ErrUnconfirmed) || !failedCheck(err) {
				t.Fatalf("rotate --key-file: %v\n%s", err, r.p.transcript())
			}
			if after := r.header(); len(after.Keyslots) != len(before.Keyslots) || r.readers.taken != taken {
				t.Fatalf("the refused rotation changed something: %+v", after.Keyslots)
			}
			safe(t)
			r.log.Close()
		}
	})

	t.Run("forged token replaces the ceremony", func(t *testing.T) {
		fresh(t, db)
		fake := &Record{Version: 2, ID: [16]byte(shares.NewCeremonyID()), Volume: rec.Volume, K: 2, N: 3,
			Keyslot: rec.Keyslot, Salt: rec.Salt, Replaces: rec.ID}
		cer, shs, err := shares.Split(shares.CeremonyID(fake.ID), shares.VolumeID(fake.Volume), bytes.Repeat([]byte{7}, shares.RecoveryKeySize), 2, 3)
		if err != nil {
			t.Fatal(err)
		}
		fake.Digest = [32]byte(cer.Digest)
		for i, c := range rec.Cards {
			pub, err := keys[c.Serial].PublicKey.(*ecdsa.PublicKey).ECDH()
			if err != nil {
				t.Fatal(err)
			}
			sealed, err := shares.Seal(shs[i], pub)
			if err != nil {
				t.Fatal(err)
			}
			c.Commitment = [32]byte(cer.Commitments[i])
			c.Sealed, _ = sealed.MarshalBinary()
			fake.Cards = append(fake.Cards, c)
		}
		_, tok := r.custosToken()
		raw, err := store.EncodeToken(fake, tok.Anchor)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := r.vol.ImportToken(r.ctx(), r.header(), raw, rec.Keyslot); err != nil {
			t.Fatal(err)
		}
		rr, err := r.recover("new passphrase", 0, 1)
		if err != nil || rr.Ceremony.ID != rec.ID || len(r.p.prompts) != 2 {
			t.Fatalf("recover: %v %+v\n%s", err, rr, r.p.transcript())
		}
		r.opens("new passphrase")
		safe(t)
		r.log.Close()
	})

	t.Run("log rolled back", func(t *testing.T) {
		fresh(t, early)
		st, err := Status(r.ctx(), r.env)
		if !failedCheck(err) || !errors.Is(err, store.ErrAnchor) || !strings.Contains(err.Error(), "token 0") {
			t.Fatalf("status: %v %v", err, st)
		}
		r.insert(0, 1, 2)
		if _, err := Rollcall(r.ctx(), r.env, RollcallOptions{}); !failedCheck(err) || !strings.Contains(err.Error(), "token 0") {
			t.Fatalf("rollcall: %v", err)
		}
		r.reset()
		rr, err := r.recover("new passphrase", 0, 1)
		if !failedCheck(err) || !strings.Contains(err.Error(), "token 0") || rr.NewKeyslot < 0 {
			t.Fatalf("recover: %v", err)
		}
		r.opens("new passphrase")
		safe(t)
		r.log.Close()
	})

	// Last: it writes new shares to the cards.
	t.Run("card-authorised rotation over a forged log", func(t *testing.T) {
		fresh(t, db)
		forged := rec.Clone()
		forged.Keyslot, forged.Salt = colleague, r.header().Keyslot(colleague).Salt
		r.log.Close()
		forgeFile(t, r.dbPath, StatusActive, forged, forgeRecord(t, StatusActive, forged))
		r.openLog()
		// Authorised by cards, the rotation kills the keyslot their
		// recovered key opens, and only that one.
		r.insert(0, 1, 1, 2, 3)
		res, err := Rotate(r.ctx(), r.env, RotateOptions{})
		if err != nil || !res.OldKilled || r.header().InUse(rec.Keyslot) {
			t.Fatalf("card-authorised rotate: %v\n%s", err, r.p.transcript())
		}
		safe(t)
		r.log.Close()
	})
}

// Attack 3 on a virtual card: a custodian rewrites their own certificate
// (their PIN unlocks the management key) with a changed share and a
// matching commitment. Cards alone, custos asks for one more card and sets
// the bad share aside.
func TestRealBadCustodian(t *testing.T) {
	r := newRealRig(t, 1, 3)
	rec := r.enroll(2, 3).Ceremony
	r.env.Log = nil

	// The custodian of card 1, at a reader, with their PIN.
	r.readers.insert(r.cards[1])
	card, err := r.readers.Next(r.ctx())
	if err != nil {
		t.Fatal(err)
	}
	e := rec.Card(2)
	sc, err := card.ReadShare(e.Slot)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := store.ParseCardCopy(sc.Payload)
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := shares.ParseSealedShare(cp.Record.Cards[0].Sealed)
	sh, err := card.OpenShare(e.Slot, []byte(r.pins[1]), sealed)
	if err != nil {
		t.Fatal(err)
	}
	sh.Value[0] ^= 0x5a
	slots, err := card.Custody()
	if err != nil {
		t.Fatal(err)
	}
	var pub *ecdsa.PublicKey
	for _, s := range slots {
		if s.Slot == e.Slot {
			pub = s.PublicKey
		}
	}
	epub, _ := pub.ECDH()
	resealed, err := shares.Seal(sh, epub)
	if err != nil {
		t.Fatal(err)
	}
	ce := &cp.Record.Cards[0]
	ce.Sealed, _ = resealed.MarshalBinary()
	ce.Commitment = [32]byte(shares.Commit(sh.Ceremony, sh.Index, sh.Value))
	payload, err := store.EncodeCardCopy(cp.Record, cp.Anchor)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := card.WriteShare(e.Slot, []byte(r.pins[1]), resealed, payload); err != nil {
		t.Fatalf("the custodian's own write: %v", err)
	}
	card.Close()

	rr, err := r.recover("new passphrase", 1, 0, 2)
	if err != nil || rr.Source != "cards" || !errors.Is(rr.Cards[0].Err, shares.ErrInconsistentShare) {
		t.Fatalf("recover: %v %+v\n%s", err, rr, r.p.transcript())
	}
	r.opens("new passphrase")
}
