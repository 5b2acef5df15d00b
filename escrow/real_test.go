package escrow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/internal/realtest"
	"custos.dev/custos/luks"
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
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "escrow-ca")
	if err == nil {
		realCAOnce.Do(func() { realCA, realCAErr = vcard.OpenCA(filepath.Join(dir, "ca")) })
	} else {
		realCAErr = err
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
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

// copyImage copies an image file (same UUID) into dir.
func copyImage(t testing.TB, v *luks.Volume, dir string) *luks.Volume {
	t.Helper()
	src, err := os.Open(v.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(dir, fmt.Sprintf("copy-%d.img", time.Now().UnixNano()))
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return &luks.Volume{Path: path, Cryptsetup: v.Cryptsetup}
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
	if realCAErr != nil {
		t.Fatalf("virtual CA: %v", realCAErr)
	}
	r := &realRig{t: t, vol: formatImage(t, version, []byte(operatorKey)), p: &fakePrompter{}}
	r.readers = newScriptedReaders(t)
	r.dbPath = filepath.Join(t.TempDir(), "custos.db")
	r.openLog()
	r.env = &Env{Volume: r.vol, Device: r.vol.Path, Cards: r.readers, Log: r.log, Prompt: r.p, Actor: "tester", PBKDF: cheapPBKDF}
	for i := range ncards {
		r.addCard(uint32(5000+i), fmt.Sprintf("%06d", 246800+i))
	}
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
	vc, err := vcard.NewCard(vcard.Config{Serial: serial, CA: realCA, StatePath: filepath.Join(r.t.TempDir(), "card.json")})
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
	if _, err := InitCard(context.Background(), r.env, card, InitCardOptions{Custodian: fmt.Sprintf("custodian-%d", serial), Roots: realCA.Pool()}); err != nil {
		r.t.Fatalf("card init: %v", err)
	}
}

func (r *realRig) insert(idx ...int) {
	for _, i := range idx {
		r.readers.insert(r.cards[i])
		r.p.answer(r.pins[i])
	}
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

// opens checks key opens a keyslot of the volume.
func (r *realRig) opens(key string) int {
	r.t.Helper()
	slot, err := r.vol.FindKeyslot(r.ctx(), []byte(key))
	if err != nil {
		r.t.Fatalf("%q does not open the volume: %v", key, err)
	}
	return slot
}

func TestRealEnrollRecoverLUKS2(t *testing.T) {
	r := newRealRig(t, 2, 4) // cards 0-2 custodians, card 3 a stranger
	res := r.enroll(2, 3)
	if res.TokenID < 0 {
		t.Fatal("no token")
	}
	h, err := r.vol.Inspect(r.ctx())
	if err != nil || len(h.Keyslots) != 2 || h.Keyslots[1].PBKDF != "pbkdf2" {
		t.Fatalf("header: %+v %v", h, err)
	}

	t.Run("recover", func(t *testing.T) {
		rr, err := r.recover("first new passphrase", 2, 0)
		if err != nil {
			t.Fatalf("recover: %v\n%s", err, r.p.transcript())
		}
		if r.opens("first new passphrase") != rr.NewKeyslot || rr.Source != "token+log" {
			t.Fatalf("result %+v", rr)
		}
	})

	t.Run("wrong pin, wrong card, duplicate card", func(t *testing.T) {
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

	t.Run("db deleted", func(t *testing.T) {
		r.log.Close()
		if err := os.Remove(r.dbPath); err != nil {
			t.Fatal(err)
		}
		r.openLog()
		rr, err := r.recover("third new passphrase", 1, 2)
		if err != nil || rr.Source != "token" {
			t.Fatalf("recover: %v %+v\n%s", err, rr, r.p.transcript())
		}
		r.opens("third new passphrase")
	})

	t.Run("tampered token share", func(t *testing.T) {
		h, err := r.vol.Inspect(r.ctx())
		if err != nil {
			t.Fatal(err)
		}
		var tok luks.Token
		for _, tk := range h.Tokens {
			if tk.Type == luks.TokenType {
				tok = tk
			}
		}
		var tj tokenJSON
		if err := json.Unmarshal(tok.JSON, &tj); err != nil {
			t.Fatal(err)
		}
		for i := range tj.Cards {
			if tj.Cards[i].Index == 1 {
				tj.Cards[i].Sealed = flipLastByte(t, tj.Cards[i].Sealed)
			}
		}
		body, _ := json.Marshal(tj)
		if err := r.vol.ReplaceToken(r.ctx(), tok.ID, body, tok.Keyslots[0]); err != nil {
			t.Fatal(err)
		}
		h, err = r.vol.Inspect(r.ctx())
		if err != nil || h.Token(tok.ID) == nil || !bytes.Contains(h.Token(tok.ID).JSON, []byte(tj.Cards[0].Sealed)) {
			t.Fatalf("token not replaced: %v", err)
		}
		rr, err := r.recover("fourth new passphrase", 0, 1, 2)
		if err != nil {
			t.Fatalf("recover: %v\n%s", err, r.p.transcript())
		}
		r.p.answers = nil // card 0's pin was never asked for
		var de *DisagreeError
		if !errors.As(rr.Cards[0].Err, &de) || de.Index != 1 || !rr.Cards[1].OK() || !rr.Cards[2].OK() {
			t.Fatalf("outcomes %+v", rr.Cards)
		}
		r.opens("fourth new passphrase")
	})
}

func TestRealLUKS1FromLogAndCardsAlone(t *testing.T) {
	r := newRealRig(t, 1, 3)
	r.enroll(2, 3)
	rr, err := r.recover("from the log", 0, 1)
	if err != nil || rr.Source != "log" {
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
	if len(res.Wiped) != 1 || res.Wiped[0].Serial != "5000" {
		t.Fatalf("wiped %+v to wipe %+v", res.Wiped, res.ToWipe)
	}
	h, _ := r.vol.Inspect(r.ctx())
	if h.InUse(old.Keyslot) || len(h.Tokens) != 1 {
		t.Fatalf("header after rotate: %+v", h)
	}
	st, err := Status(r.ctx(), r.env)
	if err != nil || st.Ceremony.ID != res.New.ID || len(st.Problems) != 0 || st.Margin != 1 {
		t.Fatalf("status %+v %v", st, err)
	}
	// Card 0 was wiped: it is no custodian any more.
	rr, err := r.recover("after rotate", 0, 3, 1)
	if err != nil || !errors.Is(rr.Cards[0].Err, ErrNotCustodian) {
		t.Fatalf("recover after rotate: %v %+v\n%s", err, rr, r.p.transcript())
	}
	r.opens("after rotate")
}

func TestRealEnrollCrashThenRerun(t *testing.T) {
	r := newRealRig(t, 2, 3)
	crashAt(t, fpEnrollCard, 2)
	r.insert(0, 1, 2)
	if _, err := Enroll(r.ctx(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)}); !crashed(err) {
		t.Fatalf("no crash: %v", err)
	}
	failpoint = nil
	r.opens(operatorKey)
	r.readers.queue, r.p.answers = nil, nil
	res := r.enroll(2, 3)
	if res.Resumed != "undone" {
		t.Fatalf("resumed %q", res.Resumed)
	}
	h, _ := r.vol.Inspect(r.ctx())
	if len(h.Keyslots) != 2 {
		t.Fatalf("keyslots %+v", h.Keyslots)
	}
	if _, err := r.recover("after crash", 1, 2); err != nil {
		t.Fatalf("recover: %v", err)
	}
	r.opens(operatorKey)
}
