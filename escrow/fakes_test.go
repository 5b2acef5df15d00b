package escrow

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/cards"
	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// fakeVolume is an in-memory LUKS header: keyslots hold their keys in the
// clear so that tests can check what opens what.
type fakeVolume struct {
	mu      sync.Mutex
	version int
	uuid    string
	slots   map[int][]byte
	// salts are the keyslots' salts, fresh and random for every key
	// added, as cryptsetup makes them.
	salts  map[int]string
	tokens map[int]luks.Token
	// failAdd, if set, makes AddKeyslot fail.
	failAdd error
	// adds and tests count AddKeyslot and TestKey calls; killed lists the
	// keyslots killed, in order.
	adds, tests int
	killed      []int
}

func newFakeVolume(t *testing.T, version int, passphrase string) *fakeVolume {
	t.Helper()
	var u [16]byte
	rand.Read(u[:])
	vid := shares.VolumeID(u)
	return &fakeVolume{version: version, uuid: vid.String(), slots: map[int][]byte{0: []byte(passphrase)},
		salts: map[int]string{0: newSalt()}, tokens: map[int]luks.Token{}}
}

func newSalt() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (v *fakeVolume) max() int {
	if v.version == 1 {
		return luks.LUKS1Keyslots
	}
	return luks.LUKS2Keyslots
}

func (v *fakeVolume) Inspect(ctx context.Context) (*luks.Header, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	h := &luks.Header{Version: v.version, UUID: v.uuid}
	for i := range v.max() {
		if _, ok := v.slots[i]; ok {
			h.Keyslots = append(h.Keyslots, luks.Keyslot{ID: i, PBKDF: "pbkdf2", Salt: v.salts[i]})
		}
	}
	for i := range luks.LUKS2Tokens {
		if t, ok := v.tokens[i]; ok {
			t.JSON = append(json.RawMessage(nil), t.JSON...)
			h.Tokens = append(h.Tokens, t)
		}
	}
	return h, nil
}

func (v *fakeVolume) opens(key []byte) int {
	for i := range v.max() {
		if k, ok := v.slots[i]; ok && bytes.Equal(k, key) {
			return i
		}
	}
	return -1
}

func (v *fakeVolume) AddKeyslot(ctx context.Context, h *luks.Header, auth, newKey []byte, opts luks.AddOptions) (luks.Keyslot, *luks.Header, error) {
	slot, err := v.addKeyslot(auth, newKey, opts)
	if err != nil {
		return luks.Keyslot{ID: -1}, nil, err
	}
	after, _ := v.Inspect(ctx)
	return *after.Keyslot(slot), after, nil
}

func (v *fakeVolume) addKeyslot(auth, newKey []byte, opts luks.AddOptions) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.adds++
	if v.failAdd != nil {
		return -1, v.failAdd
	}
	if opts.AuthSlot != nil {
		// cryptsetup tries the key on that keyslot alone: one PBKDF run,
		// the same as TestKey.
		v.tests++
		if k, ok := v.slots[*opts.AuthSlot]; !ok || !bytes.Equal(k, auth) {
			return -1, fmt.Errorf("add keyslot: %w", luks.ErrWrongKey)
		}
	}
	if v.opens(auth) < 0 {
		return -1, fmt.Errorf("add keyslot: %w", luks.ErrWrongKey)
	}
	slot := -1
	if opts.Slot != nil {
		slot = *opts.Slot
		if _, used := v.slots[slot]; used {
			return -1, luks.ErrKeyslotInUse
		}
	} else {
		for i := range v.max() {
			if _, used := v.slots[i]; !used {
				slot = i
				break
			}
		}
		if slot < 0 {
			return -1, luks.ErrNoFreeKeyslot
		}
	}
	v.slots[slot] = bytes.Clone(newKey)
	v.salts[slot] = newSalt()
	return slot, nil
}

func (v *fakeVolume) TestKey(ctx context.Context, key []byte, slot int) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.tests++
	if k, ok := v.slots[slot]; !ok || !bytes.Equal(k, key) {
		return fmt.Errorf("test key on keyslot %d: %w", slot, luks.ErrWrongKey)
	}
	return nil
}

func (v *fakeVolume) FindKeyslot(ctx context.Context, key []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s := v.opens(key); s >= 0 {
		return s, nil
	}
	return -1, fmt.Errorf("find keyslot: %w", luks.ErrWrongKey)
}

func (v *fakeVolume) KillKeyslot(ctx context.Context, h *luks.Header, slot, keep int, auth []byte) (*luks.Header, error) {
	if err := v.killKeyslot(slot, keep, auth); err != nil {
		return nil, err
	}
	return v.Inspect(ctx)
}

func (v *fakeVolume) killKeyslot(slot, keep int, auth []byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.slots[slot]; !ok {
		return luks.ErrKeyslotInactive
	}
	if len(v.slots) < 2 {
		return luks.ErrLastKeyslot
	}
	if keep == slot {
		return fmt.Errorf("kill keyslot %d: %w", slot, luks.ErrAuthorisingKeyslot)
	}
	if k, ok := v.slots[keep]; !ok || !bytes.Equal(k, auth) {
		return fmt.Errorf("kill keyslot %d: keep %d: %w", slot, keep, luks.ErrWrongKey)
	}
	for _, t := range v.tokens {
		if t.Type != luks.TokenType && slices.Contains(t.Keyslots, slot) {
			return fmt.Errorf("kill keyslot %d: %w", slot, luks.ErrBoundToForeignToken)
		}
	}
	delete(v.slots, slot)
	delete(v.salts, slot)
	v.killed = append(v.killed, slot)
	// cryptsetup drops the keyslot from the tokens bound to it.
	for id, t := range v.tokens {
		if slices.Contains(t.Keyslots, slot) {
			t.Keyslots = slices.DeleteFunc(t.Keyslots, func(k int) bool { return k == slot })
			t.JSON = bytes.Replace(t.JSON, []byte(`"keyslots":["`+strconv.Itoa(slot)+`"]`), []byte(`"keyslots":[]`), 1)
			v.tokens[id] = t
		}
	}
	return nil
}

// putToken stores a token's bytes as they are, as cryptsetup does with
// what custos writes; it checks what luks checks.
func (v *fakeVolume) putToken(id int, tok []byte, keyslot int) error {
	var head struct {
		Type     string   `json:"type"`
		Keyslots []string `json:"keyslots"`
	}
	if err := json.Unmarshal(tok, &head); err != nil {
		return err
	}
	if head.Type != luks.TokenType || !slices.Equal(head.Keyslots, []string{strconv.Itoa(keyslot)}) {
		return fmt.Errorf("token of type %q bound to %v, want custos bound to %d", head.Type, head.Keyslots, keyslot)
	}
	v.tokens[id] = luks.Token{ID: id, Type: head.Type, Keyslots: []int{keyslot}, JSON: bytes.Clone(tok)}
	return nil
}

func (v *fakeVolume) ImportToken(ctx context.Context, h *luks.Header, tok []byte, keyslot int) (int, *luks.Header, error) {
	id, err := v.importToken(tok, keyslot)
	if err != nil {
		return -1, nil, err
	}
	after, _ := v.Inspect(ctx)
	return id, after, nil
}

func (v *fakeVolume) importToken(tok []byte, keyslot int) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.version != 2 {
		return -1, luks.ErrNoTokens
	}
	if _, ok := v.slots[keyslot]; !ok {
		return -1, luks.ErrKeyslotInactive
	}
	for i := range luks.LUKS2Tokens {
		if _, used := v.tokens[i]; !used {
			return i, v.putToken(i, tok, keyslot)
		}
	}
	return -1, errors.New("no token id free")
}

func (v *fakeVolume) ReplaceToken(ctx context.Context, h *luks.Header, id int, tok []byte, keyslot int) (*luks.Header, error) {
	v.mu.Lock()
	if _, ok := v.tokens[id]; !ok {
		v.mu.Unlock()
		return nil, luks.ErrTokenNotFound
	}
	err := v.putToken(id, tok, keyslot)
	v.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return v.Inspect(ctx)
}

func (v *fakeVolume) RemoveToken(ctx context.Context, h *luks.Header, id int) (*luks.Header, error) {
	v.mu.Lock()
	if _, ok := v.tokens[id]; !ok {
		v.mu.Unlock()
		return nil, luks.ErrTokenNotFound
	}
	delete(v.tokens, id)
	v.mu.Unlock()
	return v.Inspect(ctx)
}

// keyOf returns the key of a keyslot (test helper).
func (v *fakeVolume) keyOf(slot int) []byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	return bytes.Clone(v.slots[slot])
}

func (v *fakeVolume) inUse(slot int) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.slots[slot]
	return ok
}

// setToken puts raw bytes into the header as token id, bound to keyslot
// (an attacker who holds the disk can write anything there).
func (v *fakeVolume) setToken(id int, typ string, keyslots []int, raw []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.tokens[id] = luks.Token{ID: id, Type: typ, Keyslots: keyslots, JSON: bytes.Clone(raw)}
}

// custosToken returns the first custos token's ID and decoded form.
func (v *fakeVolume) custosToken(t *testing.T) (int, *store.Token) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	for i := range luks.LUKS2Tokens {
		tk, ok := v.tokens[i]
		if !ok || tk.Type != luks.TokenType {
			continue
		}
		tok, err := store.ParseToken(tk.JSON)
		if err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
		return i, tok
	}
	t.Fatal("no custos token")
	return -1, nil
}

// fakeCard is an in-memory custody card.
type fakeCard struct {
	mu      sync.Mutex
	serial  uint32
	pin     []byte
	retries int
	slots   map[uint8]*fakeSlot
	reader  string
	attest  attestMode
	// failWrite makes WriteShare fail; corruptRead makes it return
	// another share than the one sealed (a card that reads back wrong).
	failWrite   error
	corruptRead bool
	opened      int // ECDHs that reached the key
	verifies    int // PIN verifications
	reads       int // certificate reads
}

// attestMode is how a fake card answers an attestation.
type attestMode int

const (
	attestGenuine   attestMode = iota // a verified attestation, PIN policy always
	attestNone                        // the card cannot attest (ErrNoAttestation)
	attestUnknownCA                   // the chain does not verify (ErrAttestation)
	attestNoPIN                       // verified, but PIN policy never
)

type fakeSlot struct {
	priv *ecdsa.PrivateKey
	cert *cards.SlotCert
}

func newFakeCard(t *testing.T, serial uint32, pin string) *fakeCard {
	t.Helper()
	c := &fakeCard{serial: serial, pin: []byte(pin), retries: 3, slots: map[uint8]*fakeSlot{}, reader: "fake reader"}
	c.newKey(t, 0x82)
	return c
}

func (c *fakeCard) newKey(t testing.TB, slot uint8) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c.slots[slot] = &fakeSlot{priv: k}
}

func copyCert(sc *cards.SlotCert) *cards.SlotCert {
	if sc == nil {
		return nil
	}
	cp := *sc
	cp.Payload = bytes.Clone(sc.Payload)
	if sc.V1 != nil {
		v1 := *sc.V1
		if sc.V1.Sealed != nil {
			b, _ := sc.V1.Sealed.MarshalBinary()
			v1.Sealed, _ = shares.ParseSealedShare(b)
		}
		cp.V1 = &v1
	}
	return &cp
}

func (c *fakeCard) Serial() uint32 { return c.serial }
func (c *fakeCard) Reader() string { return c.reader }
func (c *fakeCard) Close() error   { return nil }

func (c *fakeCard) Custody() ([]cards.SlotInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []cards.SlotInfo
	for s := uint8(0x82); s <= 0x95; s++ {
		fs, ok := c.slots[s]
		if !ok {
			continue
		}
		fp, _ := shares.FingerprintOf(&fs.priv.PublicKey)
		out = append(out, cards.SlotInfo{Slot: s, PublicKey: &fs.priv.PublicKey, Fingerprint: fp, Cert: copyCert(fs.cert)})
	}
	return out, nil
}

func (c *fakeCard) Init(opts cards.InitOptions) (*cards.Custody, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pin = bytes.Clone(opts.PIN)
	slot := opts.Slot
	if slot == 0 {
		for s := uint8(0x82); s <= 0x95; s++ {
			if _, used := c.slots[s]; !used {
				slot = s
				break
			}
		}
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	c.slots[slot] = &fakeSlot{priv: k}
	fp, _ := shares.FingerprintOf(&k.PublicKey)
	return &cards.Custody{Serial: c.serial, Slot: slot, PublicKey: &k.PublicKey, Fingerprint: fp, PINPolicy: "always", TouchPolicy: "never"}, nil
}

func (c *fakeCard) checkPIN(pin []byte) error {
	c.verifies++
	if c.retries == 0 {
		return cards.ErrPINBlocked
	}
	if !bytes.Equal(pin, c.pin) {
		c.retries--
		return &cards.PINError{Retries: c.retries}
	}
	c.retries = 3
	return nil
}

func (c *fakeCard) slotOf(slot uint8, recipient shares.Fingerprint) (*fakeSlot, error) {
	fs, ok := c.slots[slot]
	if !ok {
		return nil, cards.ErrNoCustodySlot
	}
	fp, _ := shares.FingerprintOf(&fs.priv.PublicKey)
	if recipient != fp {
		return nil, cards.ErrWrongCard
	}
	return fs, nil
}

func (c *fakeCard) open(fs *fakeSlot, sealed *shares.SealedShare) (*shares.Share, error) {
	c.opened++
	pub, _ := fs.priv.PublicKey.ECDH()
	priv, _ := fs.priv.ECDH()
	return shares.Open(sealed, pub, func(eph *ecdh.PublicKey) ([]byte, error) { return priv.ECDH(eph) })
}

func (c *fakeCard) WriteShare(slot uint8, pin []byte, sealed *shares.SealedShare, payload []byte) (*shares.Share, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failWrite != nil {
		return nil, c.failWrite
	}
	fs, err := c.slotOf(slot, sealed.Recipient)
	if err != nil {
		return nil, err
	}
	if err := c.checkPIN(pin); err != nil {
		return nil, err
	}
	sh, err := c.open(fs, sealed)
	if err != nil {
		return nil, err
	}
	if c.corruptRead {
		sh.Value[0] ^= 1
	}
	fs.cert = &cards.SlotCert{Payload: bytes.Clone(payload), Key: sealed.Recipient}
	return sh, nil
}

func (c *fakeCard) ReadShare(slot uint8) (*cards.SlotCert, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	fs, ok := c.slots[slot]
	if !ok || fs.cert == nil {
		return nil, cards.ErrNoCustodySlot
	}
	return copyCert(fs.cert), nil
}

func (c *fakeCard) CheckRecipient(slot uint8, sealed *shares.SealedShare) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.slotOf(slot, sealed.Recipient)
	return err
}

func (c *fakeCard) OpenShare(slot uint8, pin []byte, sealed *shares.SealedShare) (*shares.Share, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fs, err := c.slotOf(slot, sealed.Recipient)
	if err != nil {
		return nil, err
	}
	if err := c.checkPIN(pin); err != nil {
		return nil, err
	}
	return c.open(fs, sealed)
}

// The fakes' attestation maker: a root (fakeRoots trusts it) and, per
// attestation, a card's attestation-signing certificate and the slot's
// certificate with Yubico's extensions, so that the fakes' chains verify
// (and fail) through cards.VerifyAttestation as real ones do.
var (
	fakeRootOnce sync.Once
	fakeRootCert *x509.Certificate
	fakeRootKey  *ecdsa.PrivateKey
	fakeRoots    *x509.CertPool
)

func fakeRoot() (*x509.Certificate, *ecdsa.PrivateKey) {
	fakeRootOnce.Do(func() {
		fakeRootCert, fakeRootKey = newFakeRoot("fake attestation root")
		fakeRoots = x509.NewCertPool()
		fakeRoots.AddCert(fakeRootCert)
	})
	return fakeRootCert, fakeRootKey
}

// newFakeRoot makes a card maker's attestation root.
func newFakeRoot(name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		panic(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return cert, k
}

// fakeAttestationChain is the slot's attestation certificate followed by
// the card's attestation-signing certificate, DER, as a card gives them,
// under the fakes' root.
func fakeAttestationChain(serial uint32, slot uint8, pub *ecdsa.PublicKey, pinPolicy piv.PINPolicy) []byte {
	root, rootKey := fakeRoot()
	return attestationChainUnder(root, rootKey, serial, slot, pub, pinPolicy)
}

// attestationChainUnder is an attestation chain under a maker's root.
func attestationChainUnder(root *x509.Certificate, rootKey *ecdsa.PrivateKey, serial uint32, slot uint8, pub *ecdsa.PublicKey, pinPolicy piv.PINPolicy) []byte {
	ik, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	itmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(serial)), Subject: pkix.Name{CommonName: fmt.Sprintf("fake card %d", serial)},
		NotBefore: root.NotBefore, NotAfter: root.NotAfter, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ider, err := x509.CreateCertificate(rand.Reader, itmpl, root, &ik.PublicKey, rootKey)
	if err != nil {
		panic(err)
	}
	inter, _ := x509.ParseCertificate(ider)
	sn, _ := asn1.Marshal(int64(serial))
	yk := func(n int) asn1.ObjectIdentifier { return asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 41482, 3, n} }
	stmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: fmt.Sprintf("YubiKey PIV Attestation %02x", slot)},
		NotBefore: root.NotBefore, NotAfter: root.NotAfter,
		ExtraExtensions: []pkix.Extension{{Id: yk(3), Value: []byte{5, 7, 1}}, {Id: yk(7), Value: sn},
			{Id: yk(8), Value: []byte{byte(pinPolicy), byte(piv.TouchPolicyNever)}}}}
	sder, err := x509.CreateCertificate(rand.Reader, stmpl, inter, pub, ik)
	if err != nil {
		panic(err)
	}
	return append(sder, ider...)
}

func (c *fakeCard) Attest(slot uint8, roots *x509.CertPool) (*cards.Attestation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fs, ok := c.slots[slot]
	if !ok {
		return nil, cards.ErrNoCustodySlot
	}
	policy := piv.PINPolicyAlways
	switch c.attest {
	case attestNone:
		return nil, fmt.Errorf("attest slot %02x: %w", slot, cards.ErrNoAttestation)
	case attestUnknownCA:
		// Trusted by nobody: the card's own root.
		roots = x509.NewCertPool()
	case attestNoPIN:
		policy = piv.PINPolicyNever
	}
	fakeRoot()
	if roots == nil {
		roots = x509.NewCertPool() // Yubico's roots alone trust no fake
	}
	a, err := cards.VerifyAttestation(fakeAttestationChain(c.serial, slot, &fs.priv.PublicKey, policy), roots)
	if err != nil {
		return nil, fmt.Errorf("attest slot %02x: %w", slot, err)
	}
	return a, nil
}

func (c *fakeCard) WipeShare(slot uint8, pin []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.slots[slot]; !ok {
		return cards.ErrNoCustodySlot
	}
	if err := c.checkPIN(pin); err != nil {
		return err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	c.slots[slot] = &fakeSlot{priv: k}
	return nil
}

// copyOf returns the decoded certificate in slot (test helper), nil when
// there is none.
func (c *fakeCard) copyOf(t *testing.T, slot uint8) *store.CardCopy {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	fs, ok := c.slots[slot]
	if !ok || fs.cert == nil || fs.cert.Payload == nil {
		return nil
	}
	cp, err := store.ParseCardCopy(fs.cert.Payload)
	if err != nil {
		t.Fatalf("card %d slot %02x: %v", c.serial, slot, err)
	}
	return cp
}

// setPayload replaces the certificate's payload in slot (a custodian can
// write their own certificate).
func (c *fakeCard) setPayload(slot uint8, payload []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fs := c.slots[slot]
	fp, _ := shares.FingerprintOf(&fs.priv.PublicKey)
	fs.cert = &cards.SlotCert{Payload: bytes.Clone(payload), Key: fp}
}

// fakeSource hands over the queued cards in order; once they are used up it
// fails at once rather than wait.
type fakeSource struct {
	mu    sync.Mutex
	queue []*fakeCard
	taken int
	// block makes Next wait for ctx to end once the queue is empty, as a
	// reader with no card does.
	block bool
}

var errNoMoreCards = errors.New("no more cards in the test's queue")

func (s *fakeSource) insert(cs ...*fakeCard) {
	s.mu.Lock()
	s.queue = append(s.queue, cs...)
	s.mu.Unlock()
}

func (s *fakeSource) Next(ctx context.Context) (Card, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(s.queue) == 0 {
		if s.block {
			s.mu.Unlock()
			<-ctx.Done()
			s.mu.Lock()
			return nil, ctx.Err()
		}
		return nil, errNoMoreCards
	}
	c := s.queue[0]
	s.queue = s.queue[1:]
	s.taken++
	return c, nil
}

// fakePrompter answers prompts from a queue and records everything.
type fakePrompter struct {
	mu      sync.Mutex
	answers []string
	prompts []string
	said    []string
}

var errNoMoreInput = errors.New("no more input in the test's queue")

func (p *fakePrompter) answer(a ...string) {
	p.mu.Lock()
	p.answers = append(p.answers, a...)
	p.mu.Unlock()
}

func (p *fakePrompter) Secret(prompt string) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.prompts = append(p.prompts, prompt)
	if len(p.answers) == 0 {
		return nil, errNoMoreInput
	}
	a := p.answers[0]
	p.answers = p.answers[1:]
	return []byte(a), nil
}

func (p *fakePrompter) Say(msg string) {
	p.mu.Lock()
	p.said = append(p.said, msg)
	p.mu.Unlock()
}

func (p *fakePrompter) transcript() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b bytes.Buffer
	for _, s := range p.said {
		b.WriteString(s + "\n")
	}
	for _, s := range p.prompts {
		b.WriteString("? " + s + "\n")
	}
	return b.String()
}

// rig is a fake volume, fake cards, a real log in a temporary directory
// and a fake prompter.
type rig struct {
	t      *testing.T
	vol    *fakeVolume
	cards  []*fakeCard
	src    *fakeSource
	p      *fakePrompter
	log    *store.Log
	dbPath string // the log's file; its etcd prefix on the etcd run (dsn)
	dsn    string // what store.Open takes: dbPath, or an etcd prefix
	env    *Env
}

const operatorKey = "operator passphrase"

func newRig(t *testing.T, version, ncards int) *rig {
	t.Helper()
	r := &rig{t: t, vol: newFakeVolume(t, version, operatorKey), src: &fakeSource{}, p: &fakePrompter{}}
	for i := range ncards {
		r.cards = append(r.cards, newFakeCard(t, uint32(1000+i), fmt.Sprintf("pin%03d", i)))
	}
	r.dbPath = filepath.Join(t.TempDir(), "custos.db")
	r.dsn = r.dbPath
	if onEtcd() {
		r.dsn = etcdTestDSN(t)
	}
	r.openLog()
	fakeRoot()
	r.env = &Env{Volume: r.vol, Device: "/dev/test", Cards: r.src, Log: r.log, Prompt: r.p, Actor: "tester", Roots: fakeRoots}
	// Whatever a test forged, nothing custos says or asks may carry a
	// character that moves a terminal's cursor or reorders what it shows.
	t.Cleanup(func() {
		if bad := unclean(r.p.transcript()); bad != "" {
			t.Errorf("the transcript carries %s", bad)
		}
	})
	return r
}

func (r *rig) openLog() {
	var opts *store.Options
	if onEtcd() {
		// A shared test machine under load can take more than the
		// default 3 s for one request to a three-member cluster.
		opts = &store.Options{Timeout: 30 * time.Second}
	}
	l, err := store.Open(r.dsn, opts)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { l.Close() })
	r.log = l
	if r.env != nil {
		r.env.Log = l
	}
}

func (r *rig) pin(i int) string { return fmt.Sprintf("pin%03d", i) }

// insert queues cards by position and the PIN answers for each.
func (r *rig) insert(idx ...int) {
	for _, i := range idx {
		r.src.insert(r.cards[i])
		r.p.answer(r.pin(i))
	}
}

// enroll runs a k-of-n enrollment with cards 0..n-1.
func (r *rig) enroll(k, n int) *EnrollResult {
	r.t.Helper()
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	r.insert(idx...)
	res, err := Enroll(context.Background(), r.env, EnrollOptions{K: k, N: n, AuthKey: []byte(operatorKey),
		Custodians: []string{"alice", "bob", "carol", "dave", "erin"}[:min(n, 5)]})
	if err != nil {
		r.t.Fatalf("enroll: %v\n%s", err, r.p.transcript())
	}
	return res
}

// recover runs Recover with the given cards and a new passphrase.
func (r *rig) recover(newKey string, idx ...int) (*RecoverResult, error) {
	r.insert(idx...)
	return Recover(context.Background(), r.env, RecoverOptions{NewKey: []byte(newKey)})
}
