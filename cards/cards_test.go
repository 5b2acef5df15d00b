package cards

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/shares"
)

// TestCustodyRoundTrip is a 2-of-2 ceremony on two cards in two readers:
// init each, write its share, read it back, open it, combine.
func TestCustodyRoundTrip(t *testing.T) {
	lock(t)
	vcA, _, a, cuA := custodyCard(t, 4000001, vcard.Port0)
	_, _, b, cuB := custodyCard(t, 4000002, vcard.Port1)

	if cuA.Serial != 4000001 || cuA.Version != vcard.DefaultVersion || cuA.Slot != 0x82 ||
		cuA.PINPolicy != "always" || cuA.TouchPolicy != "never" || cuA.Attestation == nil || cuA.Intermediate == nil {
		t.Errorf("Custody = %+v", cuA)
	}
	if fp, _ := shares.FingerprintOf(cuA.PublicKey); fp != cuA.Fingerprint {
		t.Errorf("Custody.Fingerprint is not the public key's")
	}
	if cuA.Fingerprint == cuB.Fingerprint {
		t.Fatal("two cards have the same key")
	}

	cer, secret, scs := ceremony(t, cuA.PublicKey, cuB.PublicKey)
	for i, c := range []*Card{a, b} {
		sh, err := c.WriteShare(0x82, testPIN, scs[i].Sealed, scs[i].Payload)
		if err != nil {
			t.Fatalf("card %d: WriteShare: %v", i, err)
		}
		if sh.Header != scs[i].Sealed.Header || cer.Check(sh) != nil {
			t.Errorf("card %d: WriteShare opened %+v, not the share sealed", i, sh.Header)
		}
	}

	var opened []*shares.Share
	for i, c := range []*Card{a, b} {
		before := vcA.Counts()
		sc, err := c.ReadShare(0x82)
		if err != nil {
			t.Fatalf("card %d: ReadShare: %v", i, err)
		}
		if !carries(sc, scs[i]) {
			t.Errorf("card %d: ReadShare = %+v, want the payload written", i, sc)
		}
		cp := copyOf(t, sc)
		e := cp.Record.Cards[0]
		if cp.Record.ID != [16]byte(cer.ID) || e.Index != scs[i].Sealed.Index || cp.Record.K != 2 || cp.Record.N != 2 ||
			cp.Record.Digest != [32]byte(cer.Digest) || e.Commitment != [32]byte(scs[i].Commitment) || cp.Anchor != scs[i].Anchor {
			t.Errorf("card %d: the payload read back decodes to %+v", i, cp)
		}
		sealed, err := shares.ParseSealedShare(e.Sealed)
		if err != nil {
			t.Fatal(err)
		}
		sh, err := c.OpenShare(0x82, testPIN, sealed)
		if err != nil {
			t.Fatalf("card %d: OpenShare: %v", i, err)
		}
		if i == 0 {
			after := vcA.Counts()
			t.Logf("APDUs: custos ReadShare+OpenShare = %d (VERIFY %d, GENERAL AUTHENTICATE %d)",
				after.APDUs-before.APDUs, after.Instructions[0x20]-before.Instructions[0x20], after.Instructions[0x87]-before.Instructions[0x87])
		}
		if err := cer.Check(sh); err != nil {
			t.Errorf("card %d: opened share fails its commitment: %v", i, err)
		}
		opened = append(opened, sh)
	}
	got, rejected, err := cer.Combine(opened)
	if err != nil || len(rejected) != 0 || !bytes.Equal(got, secret) {
		t.Fatalf("Combine = %x, %v, %v; want the secret", got, rejected, err)
	}

	slots, err := a.Custody()
	if err != nil {
		t.Fatal(err)
	}
	if len(slots) != 1 || slots[0].Slot != 0x82 || slots[0].Fingerprint != cuA.Fingerprint ||
		!carries(slots[0].Cert, scs[0]) {
		t.Errorf("Custody() = %+v", slots)
	}
}

// TestInitLeavesNoFactoryDefault checks, through GET METADATA, that Init
// changed PIN, PUK and management key, and that the management key is
// readable with the PIN alone (a second Card, after VerifyPIN, writes).
func TestInitLeavesNoFactoryDefault(t *testing.T) {
	lock(t)
	_, in, c, cu := custodyCard(t, 4000011, vcard.Port0)
	c.Close()
	pin, puk, mgmt := credentialsOf(t, in.Reader())
	if pin.isDefault || puk.isDefault || mgmt.isDefault {
		t.Errorf("after Init: PIN default %v, PUK default %v, management key default %v", pin.isDefault, puk.isDefault, mgmt.isDefault)
	}
	if mgmt.alg != 0x0a { // AES-192 on 5.7
		t.Errorf("management key algorithm %#x, want AES-192 (0x0a)", mgmt.alg)
	}
	if pin.remaining != 3 || puk.remaining != 3 {
		t.Errorf("retries PIN %d PUK %d, want 3 and 3", pin.remaining, puk.remaining)
	}

	// The management key is stored as Yubico's tools store a PIN-protected
	// one: the admin data says so (80 { 81 01 02 }, what ykman and
	// libykpiv write), and piv-go, reading the protected data with the
	// PIN, authenticates with the key it finds there.
	c1 := openCard(t, in.Reader())
	admin, err := c1.getData(objAdminData)
	if err != nil || !bytes.Equal(admin, []byte{0x80, 0x03, 0x81, 0x01, 0x02}) {
		t.Errorf("admin data after Init = % X, %v; want 80 03 81 01 02", admin, err)
	}
	c1.Close()
	yk, err := piv.Open(in.Reader())
	if err != nil {
		t.Fatal(err)
	}
	m, err := yk.Metadata(string(testPIN))
	if err != nil || m.ManagementKey == nil {
		t.Fatalf("piv-go Metadata = %+v, %v; want the stored management key", m, err)
	}
	if err := yk.SetMetadata(*m.ManagementKey, m); err != nil {
		t.Errorf("piv-go cannot authenticate with the stored management key: %v", err)
	}
	yk.Close()

	// A second Card, given only the PIN, writes: the management key is
	// read from the card with it.
	c2 := openCard(t, in.Reader())
	_, _, scs := ceremony(t, cu.PublicKey, cu.PublicKey)
	if _, err := c2.WriteShare(0x82, testPIN, scs[0].Sealed, scs[0].Payload); err != nil {
		t.Fatalf("WriteShare with the PIN alone: %v", err)
	}

	// A second Init on the same card uses the stored management key and
	// the custodian's current PIN and PUK, in the next free slot.
	if _, err := c2.Init(InitOptions{PIN: testPIN, PUK: testPUK, Roots: virtualCA(t).Pool()}); !errors.Is(err, ErrPINRequired) {
		t.Fatalf("re-Init without the current PIN = %v, want ErrPINRequired", err)
	}
	cu2, err := c2.Init(InitOptions{PIN: []byte("11223344"), PUK: []byte("99887766"), CurrentPIN: testPIN, CurrentPUK: testPUK, Roots: virtualCA(t).Pool()})
	if err != nil {
		t.Fatalf("re-Init: %v", err)
	}
	if cu2.Slot != 0x83 {
		t.Errorf("re-Init slot %02x, want 83", cu2.Slot)
	}
	if err := c2.VerifyPIN([]byte("11223344")); err != nil {
		t.Errorf("new PIN after re-Init: %v", err)
	}
}

func TestInitRefusesBadCredentials(t *testing.T) {
	for _, tc := range []struct {
		pin, puk string
		want     error
	}{
		{"123456", "13579135", ErrFactoryDefault},
		{"246810", "12345678", ErrFactoryDefault},
		{"12345", "13579135", nil},
		{"246810", "246810", nil},
		{"246810", "123456789", nil},
	} {
		err := checkNewCredentials([]byte(tc.pin), []byte(tc.puk))
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("checkNewCredentials(%q, %q) = %v, want an error (%v)", tc.pin, tc.puk, err, tc.want)
		}
	}
	if err := checkNewCredentials([]byte("246810"), []byte("13579135")); err != nil {
		t.Errorf("good credentials refused: %v", err)
	}
}

// TestWrongAndBlockedPIN: the retries are shown, nothing is retried, and a
// blocked PIN says how to unblock it.
func TestWrongAndBlockedPIN(t *testing.T) {
	lock(t)
	vc, _, c, cu := custodyCard(t, 4000021, vcard.Port0)
	_, _, scs := ceremony(t, cu.PublicKey, cu.PublicKey)
	if _, err := c.WriteShare(0x82, testPIN, scs[0].Sealed, scs[0].Payload); err != nil {
		t.Fatal(err)
	}
	for want := 2; want >= 1; want-- {
		before := vc.Counts().Instructions[0x20]
		_, err := c.OpenShare(0x82, []byte("000000"), scs[0].Sealed)
		var pe *PINError
		if !errors.As(err, &pe) || pe.Retries != want || !errors.Is(err, ErrWrongPIN) {
			t.Fatalf("OpenShare(wrong PIN) = %v, want *PINError with %d retries", err, want)
		}
		if !strings.Contains(err.Error(), map[int]string{2: "2 tries left", 1: "1 try left"}[want]) {
			t.Errorf("message %q does not show the retries", err)
		}
		if n := vc.Counts().Instructions[0x20] - before; n != 1 {
			t.Errorf("wrong PIN sent %d VERIFY commands, want exactly 1 (never retried)", n)
		}
	}
	_, err := c.OpenShare(0x82, []byte("000000"), scs[0].Sealed)
	if !errors.Is(err, ErrPINBlocked) {
		t.Fatalf("third wrong PIN = %v, want ErrPINBlocked", err)
	}
	if !strings.Contains(err.Error(), "PUK") {
		t.Errorf("blocked message %q does not say how to unblock", err)
	}
	if _, err := c.OpenShare(0x82, testPIN, scs[0].Sealed); !errors.Is(err, ErrPINBlocked) {
		t.Fatalf("right PIN on a blocked card = %v, want ErrPINBlocked", err)
	}
	if err := c.VerifyPIN(testPIN); !errors.Is(err, ErrPINBlocked) {
		t.Fatalf("VerifyPIN on a blocked card = %v, want ErrPINBlocked", err)
	}
}

// TestShareForAnotherCard: a share sealed to another card's key, or to this
// slot's key before it was wiped (another, older ceremony), is refused before
// any PIN is sent.
func TestShareForAnotherCard(t *testing.T) {
	lock(t)
	vcA, _, a, cuA := custodyCard(t, 4000031, vcard.Port0)
	_, _, b, cuB := custodyCard(t, 4000032, vcard.Port1)
	cer1, _, scs := ceremony(t, cuA.PublicKey, cuB.PublicKey)
	if _, err := a.WriteShare(0x82, testPIN, scs[0].Sealed, scs[0].Payload); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteShare(0x82, testPIN, scs[1].Sealed, scs[1].Payload); err != nil {
		t.Fatal(err)
	}
	before := vcA.Counts().Instructions[0x20]
	if _, err := a.WriteShare(0x82, testPIN, scs[1].Sealed, scs[1].Payload); !errors.Is(err, ErrWrongCard) {
		t.Errorf("WriteShare of card B's share on card A = %v, want ErrWrongCard", err)
	}
	if n := vcA.Counts().Instructions[0x20] - before; n != 0 {
		t.Errorf("the PIN was sent (%d VERIFY) to write a share of another card", n)
	}

	before = vcA.Counts().Instructions[0x20]
	if _, err := a.OpenShare(0x82, testPIN, scs[1].Sealed); !errors.Is(err, ErrWrongCard) {
		t.Fatalf("OpenShare(share of card B) on card A = %v, want ErrWrongCard", err)
	}
	if n := vcA.Counts().Instructions[0x20] - before; n != 0 {
		t.Errorf("the PIN was sent (%d VERIFY) for a share of another card", n)
	}

	// A new ceremony: card A's slot is wiped and re-keyed. The old share
	// (ceremony 1) can never be opened again; ReadShare says there is none.
	if err := a.WipeShare(0x82, testPIN); err != nil {
		t.Fatalf("WipeShare: %v", err)
	}
	if _, err := a.ReadShare(0x82); !errors.Is(err, ErrNoCustodySlot) {
		t.Errorf("ReadShare after wipe = %v, want ErrNoCustodySlot", err)
	}
	before = vcA.Counts().Instructions[0x20]
	if err := a.CheckRecipient(0x82, scs[0].Sealed); !errors.Is(err, ErrWrongCard) {
		t.Errorf("CheckRecipient(old ceremony's share) after wipe = %v, want ErrWrongCard", err)
	}
	if _, err := a.OpenShare(0x82, testPIN, scs[0].Sealed); !errors.Is(err, ErrWrongCard) {
		t.Errorf("OpenShare(old ceremony's share) after wipe = %v, want ErrWrongCard", err)
	}
	if n := vcA.Counts().Instructions[0x20] - before; n != 0 {
		t.Errorf("the PIN was sent (%d VERIFY) for a share of a wiped key", n)
	}
	slots, err := a.Custody()
	if err != nil || len(slots) != 1 || slots[0].Cert != nil || slots[0].Fingerprint == cuA.Fingerprint {
		t.Errorf("Custody() after wipe = %+v, %v; want one slot with a new key and no share", slots, err)
	}
	// A share of ceremony 2 sealed to the new key opens; card B still has
	// ceremony 1's, which its ReadShare names.
	cer2, _, scs2 := ceremony(t, slots[0].PublicKey, cuB.PublicKey)
	if _, err := a.WriteShare(0x82, testPIN, scs2[0].Sealed, scs2[0].Payload); err != nil {
		t.Fatal(err)
	}
	if _, err := a.OpenShare(0x82, testPIN, scs2[0].Sealed); err != nil {
		t.Errorf("OpenShare of the new ceremony's share: %v", err)
	}
	if sc, err := b.ReadShare(0x82); err != nil || !carries(sc, scs[1]) || copyOf(t, sc).Record.ID != [16]byte(cer1.ID) || cer1.ID == cer2.ID {
		t.Errorf("card B ReadShare = %+v, %v; want ceremony 1", sc, err)
	}
}

// TestCardRemoved: a card pulled out gives ErrCardRemoved, and the step can
// simply be repeated once it is back.
func TestCardRemoved(t *testing.T) {
	lock(t)
	vc, in, c, cu := custodyCard(t, 4000041, vcard.Port0)
	_, _, scs := ceremony(t, cu.PublicKey, cu.PublicKey)
	if _, err := c.WriteShare(0x82, testPIN, scs[0].Sealed, scs[0].Payload); err != nil {
		t.Fatal(err)
	}
	if err := in.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadShare(0x82); !errors.Is(err, ErrCardRemoved) {
		t.Fatalf("ReadShare after removal = %v, want ErrCardRemoved", err)
	}
	if _, err := c.OpenShare(0x82, testPIN, scs[0].Sealed); !errors.Is(err, ErrCardRemoved) {
		t.Fatalf("OpenShare after removal = %v, want ErrCardRemoved", err)
	}
	c.Close()
	if _, err := Open(in.Reader()); err == nil {
		t.Fatal("Open of an empty reader succeeded")
	} else if !errors.Is(err, ErrCardRemoved) {
		t.Errorf("Open of an empty reader = %v, want ErrCardRemoved", err)
	}

	in2 := insert(t, vc, vcard.Port0)
	c2 := openCard(t, in2.Reader())
	sc, err := c2.ReadShare(0x82)
	if err != nil {
		t.Fatalf("ReadShare after reinsertion: %v", err)
	}
	if !carries(sc, scs[0]) {
		t.Errorf("ReadShare after reinsertion = %+v", sc)
	}
	if _, err := c2.OpenShare(0x82, testPIN, scs[0].Sealed); err != nil {
		t.Fatalf("OpenShare after reinsertion: %v", err)
	}
}

// TestCardRemovedMidRead pulls the card while the certificate (several
// response chunks) is being read.
func TestCardRemovedMidRead(t *testing.T) {
	lock(t)
	vc, in, c, cu := custodyCard(t, 4000042, vcard.Port0)
	_, _, scs := ceremony(t, cu.PublicKey, cu.PublicKey)
	if _, err := c.WriteShare(0x82, testPIN, scs[0].Sealed, scs[0].Payload); err != nil {
		t.Fatal(err)
	}
	// The trace writer sees each APDU as the card answers it: pull the
	// card as soon as the first chunk of the certificate has gone out.
	pulled := make(chan struct{})
	vc.SetTrace(&pullOnGetResponse{in: in, done: pulled})
	_, err := c.ReadShare(0x82)
	vc.SetTrace(nil)
	select {
	case <-pulled:
	case <-time.After(5 * time.Second):
		t.Fatal("the card was never pulled")
	}
	if !errors.Is(err, ErrCardRemoved) {
		t.Fatalf("ReadShare with the card pulled mid-read = %v, want ErrCardRemoved", err)
	}
}

// pullOnGetResponse removes the card when the trace shows the first
// GET DATA answered with more bytes to come.
type pullOnGetResponse struct {
	in   *vcard.Inserted
	done chan struct{}
	once bool
}

func (p *pullOnGetResponse) Write(b []byte) (int, error) {
	if !p.once && bytes.Contains(b, []byte(" 61")) {
		p.once = true
		go func() { p.in.Remove(); close(p.done) }()
		time.Sleep(200 * time.Millisecond) // hold the answer until the card is out
	}
	return len(b), nil
}

// TestCardBusy: a card held by another program (piv-go connects
// exclusively) gives ErrCardBusy, and Open works once it is let go.
func TestCardBusy(t *testing.T) {
	lock(t)
	vc := newVCard(t, 4000051, "")
	in := insert(t, vc, vcard.Port0)
	yk, err := piv.Open(in.Reader())
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(in.Reader())
	if !errors.Is(err, ErrCardBusy) {
		yk.Close()
		t.Fatalf("Open of a card held by piv-go = %v, want ErrCardBusy", err)
	}
	if !strings.Contains(err.Error(), "another program") {
		t.Errorf("busy message %q does not say what to do", err)
	}
	rs, err := Readers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Name == in.Reader() && (!r.Present || r.Serial != 0) {
			t.Errorf("Readers() for a busy card = %+v, want present with serial 0", r)
		}
	}
	yk.Close()
	c := openCard(t, in.Reader())
	if c.Serial() != 4000051 {
		t.Errorf("Serial() = %d", c.Serial())
	}
}

// TestAttestationUnknownCA: a card whose attestation chains to a CA that is
// not trusted is refused, and its PIN, PUK and management key are left as
// they were.
func TestAttestationUnknownCA(t *testing.T) {
	lock(t)
	vc := newVCard(t, 4000061, "")
	in := insert(t, vc, vcard.Port0)
	c := openCard(t, in.Reader())
	other, err := vcard.OpenCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, roots := range []*x509.CertPool{nil, other.Pool()} {
		_, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, Roots: roots})
		if !errors.Is(err, ErrAttestation) {
			t.Fatalf("Init with roots %v = %v, want ErrAttestation", roots != nil, err)
		}
	}
	c.Close()
	pin, puk, mgmt := credentialsOf(t, in.Reader())
	if !pin.isDefault || !puk.isDefault || !mgmt.isDefault {
		t.Errorf("after a refused Init: PIN %+v PUK %+v mgmt %+v, want all still factory", pin, puk, mgmt)
	}
}

// TestWeakFirmware: YubiKey FIPS 4.4.4 is refused before anything changes.
func TestWeakFirmware(t *testing.T) {
	lock(t)
	vc := newVCard(t, 4000071, "4.4.4")
	in := insert(t, vc, vcard.Port0)
	c := openCard(t, in.Reader())
	if c.Version() != "4.4.4" {
		t.Fatalf("Version() = %q", c.Version())
	}
	before := vc.Counts()
	_, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, Roots: virtualCA(t).Pool()})
	if !errors.Is(err, ErrWeakFirmware) || !strings.Contains(err.Error(), "YSA-2019-02") {
		t.Fatalf("Init on 4.4.4 = %v, want ErrWeakFirmware naming the advisory", err)
	}
	if n := vc.Counts().APDUs - before.APDUs; n != 0 {
		t.Errorf("Init on weak firmware sent %d APDUs, want none", n)
	}
}

func TestReadersAndEvents(t *testing.T) {
	lock(t)
	vcA := newVCard(t, 4000081, "")
	vcB := newVCard(t, 4000082, "")
	inA := insert(t, vcA, vcard.Port0)
	ctx := context.Background()

	rs, err := Readers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]ReaderInfo{}
	for _, r := range rs {
		found[r.Name] = r
	}
	if r := found[vcard.ReaderName(vcard.Port0)]; !r.Present || r.Serial != 4000081 || !bytes.Equal(r.ATR, vcard.ATR) {
		t.Errorf("reader 0 = %+v, want the card 4000081", r)
	}
	if r, ok := found[vcard.ReaderName(vcard.Port1)]; !ok || r.Present || r.Serial != 0 {
		t.Errorf("reader 1 = %+v (listed %v), want listed and empty", r, ok)
	}

	if r, err := WaitInserted(ctx, nil); err != nil || r != inA.Reader() {
		t.Errorf("WaitInserted with a card present = %q, %v", r, err)
	}

	skip := map[string]bool{inA.Reader(): true}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if r, err := WaitInserted(short, skip); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitInserted with nothing new = %q, %v; want the deadline", r, err)
	}
	cancel()

	type result struct {
		reader string
		err    error
	}
	got := make(chan result, 1)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	go func() {
		r, err := WaitInserted(wctx, skip)
		got <- result{r, err}
	}()
	time.Sleep(200 * time.Millisecond)
	inB := insert(t, vcB, vcard.Port1)
	if r := <-got; r.err != nil || r.reader != inB.Reader() {
		t.Errorf("WaitInserted = %q, %v; want %q", r.reader, r.err, inB.Reader())
	}

	short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	if err := WaitRemoved(short, inB.Reader()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitRemoved with the card in = %v; want the deadline", err)
	}
	cancel()
	removed := make(chan error, 1)
	go func() { removed <- WaitRemoved(wctx, inB.Reader()) }()
	time.Sleep(200 * time.Millisecond)
	if err := inB.Remove(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-removed:
		if err != nil {
			t.Errorf("WaitRemoved = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitRemoved did not return after the card was removed")
	}
	if err := WaitRemoved(ctx, "no such reader"); err != nil {
		t.Errorf("WaitRemoved(unknown reader) = %v, want nil (its card is gone)", err)
	}
}

// TestWaitNewCard: a card seen is ignored while it stays in its reader, a
// card in another reader is not, and the same card pulled out and put back
// in the same reader is a new stay, however fast the swap.
func TestWaitNewCard(t *testing.T) {
	lock(t)
	vcA := newVCard(t, 4000091, "")
	vcB := newVCard(t, 4000092, "")
	inA := insert(t, vcA, vcard.Port0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := WaitNewCard(ctx, nil, nil)
	if err != nil || first.Reader != inA.Reader() {
		t.Fatalf("WaitNewCard = %+v, %v; want %q", first, err, inA.Reader())
	}
	seen := map[Insertion]bool{first: true}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	if in, err := WaitNewCard(short, nil, seen); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitNewCard with the card seen still in = %+v, %v; want the deadline", in, err)
	}
	cancelShort()

	inB := insert(t, vcB, vcard.Port1)
	if in, err := WaitNewCard(ctx, nil, seen); err != nil || in.Reader != inB.Reader() {
		t.Errorf("WaitNewCard with a card in the other reader = %+v, %v; want %q", in, err, inB.Reader())
	}

	// Out and back in before anyone looked: the reader's count moved on.
	if err := inA.Remove(); err != nil {
		t.Fatal(err)
	}
	insert(t, vcA, vcard.Port0)
	skip := map[string]bool{inB.Reader(): true}
	again, err := WaitNewCard(ctx, skip, seen)
	if err != nil || again.Reader != inA.Reader() || again == first {
		t.Errorf("WaitNewCard after the card came back = %+v, %v; want a new stay in %q (first %+v)", again, err, inA.Reader(), first)
	}
}

// TestReadVersion1Certificate: a card written by custos before the version
// 2 record (the DER extension of testdata/sharecert) still reads: ReadShare
// and Custody give its content as SlotCert.V1, whose sealed share opens;
// writing the version 2 payload over it replaces it.
func TestReadVersion1Certificate(t *testing.T) {
	lock(t)
	_, _, c, cu := custodyCard(t, 4000081, vcard.Port0)
	cer, _, scs := ceremony(t, cu.PublicKey, cu.PublicKey)
	v1 := v1ShareCert(cer, scs[0])
	writeV1(t, c, cu.Slot, testPIN, v1)

	sc, err := c.ReadShare(cu.Slot)
	if err != nil {
		t.Fatalf("ReadShare of a version 1 certificate: %v", err)
	}
	if sc.Payload != nil || sc.V1 == nil || sc.Key != cu.Fingerprint || sc.V1.Ceremony != cer.ID || sc.V1.Index != 1 ||
		sc.V1.Keyslot != 1 || sc.V1.Digest != cer.Digest || sc.V1.Commitment != scs[0].Commitment || sc.V1.Anchor != [32]byte(scs[0].Anchor.Hash) {
		t.Errorf("ReadShare = %+v (V1 %+v), want the version 1 content", sc, sc.V1)
	}
	sh, err := c.OpenShare(cu.Slot, testPIN, sc.V1.Sealed)
	if err != nil || cer.Check(sh) != nil {
		t.Fatalf("OpenShare of the version 1 share: %v", err)
	}
	slots, err := c.Custody()
	if err != nil || len(slots) != 1 || slots[0].Cert == nil || slots[0].Cert.V1 == nil || slots[0].Cert.V1.Ceremony != cer.ID {
		t.Errorf("Custody() = %+v, %v; want the version 1 certificate", slots, err)
	}

	if _, err := c.WriteShare(cu.Slot, testPIN, scs[0].Sealed, scs[0].Payload); err != nil {
		t.Fatal(err)
	}
	if sc, err := c.ReadShare(cu.Slot); err != nil || !carries(sc, scs[0]) {
		t.Errorf("ReadShare after the version 2 write = %+v, %v", sc, err)
	}
}

// TestSlotKeyReplaced: a slot whose key another tool replaced (a new
// generated key, or an imported one) no longer is the share's recipient:
// CheckRecipient, OpenShare and WriteShare refuse it with ErrWrongCard and
// never send the PIN.
func TestSlotKeyReplaced(t *testing.T) {
	lock(t)
	vc, in, c, cu := custodyCard(t, 4000043, vcard.Port0)
	_, _, scs := ceremony(t, cu.PublicKey, cu.PublicKey)
	if _, err := c.WriteShare(cu.Slot, testPIN, scs[0].Sealed, scs[0].Payload); err != nil {
		t.Fatal(err)
	}
	c.Close()
	for _, imported := range []bool{false, true} {
		if _, err := vc.PutKey(cu.Slot, vcard.PINPolicyAlways, vcard.TouchPolicyNever, imported); err != nil {
			t.Fatal(err)
		}
		c := openCard(t, in.Reader())
		before := vc.Counts().Instructions[insVerify]
		if err := c.CheckRecipient(cu.Slot, scs[0].Sealed); !errors.Is(err, ErrWrongCard) {
			t.Errorf("imported %v: CheckRecipient = %v, want ErrWrongCard", imported, err)
		}
		if _, err := c.OpenShare(cu.Slot, testPIN, scs[0].Sealed); !errors.Is(err, ErrWrongCard) {
			t.Errorf("imported %v: OpenShare = %v, want ErrWrongCard", imported, err)
		}
		if _, err := c.WriteShare(cu.Slot, testPIN, scs[0].Sealed, scs[0].Payload); !errors.Is(err, ErrWrongCard) {
			t.Errorf("imported %v: WriteShare = %v, want ErrWrongCard", imported, err)
		}
		if n := vc.Counts().Instructions[insVerify] - before; n != 0 {
			t.Errorf("imported %v: the PIN was sent %d times to a slot whose key was replaced", imported, n)
		}
		c.Close()
	}
}
