package cards

import (
	"bytes"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/cards/vcard"
)

// TestAttest attests slots of virtual cards through pcscd: a key custos
// generated verifies with the virtual CA as an extra root, and what it
// says (key, serial, firmware, policies, issuer) is the card's; a key of
// PIN policy never is attested as such (escrow refuses it, not cards); an
// imported key and a card without Yubico's ATTEST cannot attest
// (ErrNoAttestation); a card whose attestation chains to another CA, or to
// no trusted root at all, fails (ErrAttestation). The recorded chain
// verifies again from its bytes alone.
func TestAttest(t *testing.T) {
	lock(t)
	vc, _, c, cu := custodyCard(t, 4000501, vcard.Port0)
	roots := virtualCA(t).Pool()

	before := vc.Counts()
	a, err := c.Attest(cu.Slot, roots)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	after := vc.Counts()
	t.Logf("Attest: %d APDUs (ATTEST %d, GET DATA %d)", after.APDUs-before.APDUs,
		after.Instructions[insAttest]-before.Instructions[insAttest], after.Instructions[insGetData]-before.Instructions[insGetData])
	if a.Slot != cu.Slot || a.Fingerprint != cu.Fingerprint || !a.PublicKey.Equal(cu.PublicKey) || a.Serial != 4000501 ||
		a.Firmware != vcard.DefaultVersion || a.PINPolicy != piv.PINPolicyAlways || a.TouchPolicy != piv.TouchPolicyNever {
		t.Errorf("Attest = %+v", a)
	}
	if !strings.Contains(a.Issuer, "custos virtual PIV attestation CA") {
		t.Errorf("issuer %q does not name the virtual CA", a.Issuer)
	}
	sum := a.Summary()
	for _, want := range []string{"custos virtual PIV attestation CA", "firmware 5.7.1", "pin policy always", "touch policy never"} {
		if !strings.Contains(sum, want) {
			t.Errorf("Summary() = %q, lacks %q", sum, want)
		}
	}
	if _, err := c.Attest(cu.Slot, nil); !errors.Is(err, ErrAttestation) {
		t.Errorf("Attest trusting Yubico's roots alone = %v, want ErrAttestation", err)
	}

	// From the log's bytes: the slot's certificate, then the card's.
	chain := append(append([]byte(nil), a.Cert.Raw...), a.Intermediate.Raw...)
	again, err := VerifyAttestation(chain, roots)
	if err != nil || again.Fingerprint != a.Fingerprint || again.Serial != a.Serial || again.Summary() != sum {
		t.Errorf("VerifyAttestation(recorded) = %+v, %v", again, err)
	}
	// A card the caller's roots attest is verified without Yubico's
	// bundle, which piv-go parses anew at every call
	// (BenchmarkVerifyAttestation: 1,236 allocations with it, 207
	// without).
	if n := testing.AllocsPerRun(5, func() { VerifyAttestation(chain, roots) }); n > 600 {
		t.Errorf("VerifyAttestation(recorded) made %.0f allocations: Yubico's roots were parsed before the caller's", n)
	}
	tampered := bytes.Clone(chain)
	tampered[len(a.Cert.Raw)-10] ^= 1 // the slot certificate's signature
	for name, b := range map[string][]byte{
		"yubico roots only":  nil,
		"tampered":           tampered,
		"one certificate":    a.Cert.Raw,
		"three certificates": append(bytes.Clone(chain), a.Cert.Raw...),
		"swapped":            append(bytes.Clone(a.Intermediate.Raw), a.Cert.Raw...),
		"truncated":          chain[:len(chain)-1],
		"not a certificate":  []byte("attestation"),
	} {
		r := roots
		if name == "yubico roots only" {
			b, r = chain, nil
		}
		if got, err := VerifyAttestation(b, r); !errors.Is(err, ErrAttestation) {
			t.Errorf("VerifyAttestation(%s) = %+v, %v; want ErrAttestation", name, got, err)
		}
	}

	// Keys other tools put on the card.
	if _, err := vc.PutKey(0x90, vcard.PINPolicyNever, vcard.TouchPolicyNever, false); err != nil {
		t.Fatal(err)
	}
	if a, err := c.Attest(0x90, roots); err != nil || a.PINPolicy != piv.PINPolicyNever {
		t.Errorf("Attest(PIN policy never) = %+v, %v; want the policy attested", a, err)
	}
	if _, err := vc.PutKey(0x91, vcard.PINPolicyAlways, vcard.TouchPolicyNever, true); err != nil {
		t.Fatal(err)
	}
	if a, err := c.Attest(0x91, roots); !errors.Is(err, ErrNoAttestation) || errors.Is(err, ErrAttestation) {
		t.Errorf("Attest(imported key) = %+v, %v; want ErrNoAttestation", a, err)
	}
	if a, err := c.Attest(0x92, roots); !errors.Is(err, ErrNoAttestation) {
		t.Errorf("Attest(empty slot) = %+v, %v; want ErrNoAttestation", a, err)
	}

	// Another maker's PIV card: no ATTEST at all. Nor does card init
	// take it.
	if err := vc.SetNoAttestation(true); err != nil {
		t.Fatal(err)
	}
	before = vc.Counts()
	if a, err := c.Attest(cu.Slot, roots); !errors.Is(err, ErrNoAttestation) || errors.Is(err, ErrAttestation) {
		t.Errorf("Attest on a card without ATTEST = %+v, %v; want ErrNoAttestation", a, err)
	}
	if n := vc.Counts().APDUs - before.APDUs; n != 1 {
		t.Errorf("a card without ATTEST was sent %d APDUs, want ATTEST alone", n)
	}
	if _, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, CurrentPIN: testPIN, CurrentPUK: testPUK, Roots: roots}); !errors.Is(err, ErrAttestation) {
		t.Errorf("Init on a card without ATTEST = %v, want ErrAttestation", err)
	}
}

// TestAttestUnknownCA: a card whose attestation chains to a CA nobody
// trusts is refused, with or without the extra roots of another CA.
func TestAttestUnknownCA(t *testing.T) {
	lock(t)
	other, err := vcard.OpenCA(filepath.Join(t.TempDir(), "other-ca"))
	if err != nil {
		t.Fatal(err)
	}
	vc, err := vcard.NewCard(vcard.Config{Serial: 4000511, CA: other, StatePath: filepath.Join(t.TempDir(), "card.json")})
	if err != nil {
		t.Fatal(err)
	}
	in := insert(t, vc, vcard.Port0)
	c := openCard(t, in.Reader())
	// card init trusting the other CA makes the key; the custodian's
	// verifier does not trust it.
	cu, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, Roots: other.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	for _, roots := range []*x509.CertPool{virtualCA(t).Pool(), nil} {
		if a, err := c.Attest(cu.Slot, roots); !errors.Is(err, ErrAttestation) || errors.Is(err, ErrNoAttestation) {
			t.Errorf("Attest of a card of an unknown CA = %+v, %v; want ErrAttestation", a, err)
		}
	}
	if _, err := c.Attest(cu.Slot, other.Pool()); err != nil {
		t.Errorf("Attest trusting the card's CA: %v", err)
	}
}
