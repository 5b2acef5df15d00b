package cards

import (
	"testing"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// TestInitPolicies: PIN policy once and touch policy cached are attested as
// chosen, the enrollment's opening of the share asks for a touch, and the
// share opens again within the touch cache (the virtual card confirms
// touches).
func TestInitPolicies(t *testing.T) {
	lock(t)
	vc := newVCard(t, 4000111, "")
	in := insert(t, vc, vcard.Port0)
	c := openCard(t, in.Reader())
	cu, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, Slot: 0x90, PINPolicy: piv.PINPolicyOnce, TouchPolicy: piv.TouchPolicyCached, Roots: virtualCA(t).Pool()})
	if err != nil {
		t.Fatal(err)
	}
	if cu.Slot != 0x90 || cu.PINPolicy != "once" || cu.TouchPolicy != "cached" {
		t.Fatalf("Custody = slot %02x, PIN %q, touch %q", cu.Slot, cu.PINPolicy, cu.TouchPolicy)
	}
	_, _, scs := ceremony(t, cu.PublicKey, cu.PublicKey)
	touches := vc.Counts().Touches
	if _, err := c.WriteShare(0x90, testPIN, scs[0].Sealed, scs[0].Payload); err != nil {
		t.Fatal(err)
	}
	if vc.Counts().Touches == touches {
		t.Error("opening a share at enrollment with touch policy cached asked for no touch")
	}
	if _, err := c.OpenShare(0x90, testPIN, scs[0].Sealed); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, Slot: 0x90, CurrentPIN: testPIN, CurrentPUK: testPUK, Roots: virtualCA(t).Pool()}); err == nil {
		t.Error("Init over a slot that holds a key succeeded")
	}
	if _, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, PINPolicy: piv.PINPolicyNever, CurrentPIN: testPIN, CurrentPUK: testPUK}); err == nil {
		t.Error("Init with PIN policy never succeeded")
	}
}

// BenchmarkOpenShare opens one share on a virtual card through pcscd, from
// Open to Close, and reports the APDUs it takes: with the sealed share held
// by the caller (a LUKS2 token), and read from the card.
func BenchmarkOpenShare(b *testing.B) {
	lock(b)
	vc, in, c, cu := custodyCard(b, 4000121, vcard.Port0)
	_, _, scs := ceremony(b, cu.PublicKey, cu.PublicKey)
	if _, err := c.WriteShare(cu.Slot, testPIN, scs[0].Sealed, scs[0].Payload); err != nil {
		b.Fatal(err)
	}
	c.Close()
	for _, fromCard := range []bool{false, true} {
		name := "token"
		if fromCard {
			name = "card"
		}
		b.Run(name, func(b *testing.B) {
			n0 := vc.Counts().APDUs
			for b.Loop() {
				c, err := Open(in.Reader())
				if err != nil {
					b.Fatal(err)
				}
				sealed := scs[0].Sealed
				if fromCard {
					sc, err := c.ReadShare(cu.Slot)
					if err != nil {
						b.Fatal(err)
					}
					cp, err := store.ParseCardCopy(sc.Payload)
					if err != nil {
						b.Fatal(err)
					}
					if sealed, err = shares.ParseSealedShare(cp.Record.Cards[0].Sealed); err != nil {
						b.Fatal(err)
					}
				}
				sh, err := c.OpenShare(cu.Slot, testPIN, sealed)
				if err != nil {
					b.Fatal(err)
				}
				sh.Wipe()
				c.Close()
			}
			b.ReportMetric(float64(vc.Counts().APDUs-n0)/float64(b.N), "APDUs/op")
		})
	}
}

func BenchmarkParseShareCert(b *testing.B) {
	v, err := marshalShareCert(vectorShareCert(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseShareCert(v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyAttestation verifies a recorded attestation of a virtual
// card (the chain custos logs), against the virtual CA as the caller's
// roots, as status and enroll do for every card.
func BenchmarkVerifyAttestation(b *testing.B) {
	lock(b)
	_, _, c, cu := custodyCard(b, 4000601, vcard.Port0)
	roots := virtualCA(b).Pool()
	a, err := c.Attest(cu.Slot, roots)
	if err != nil {
		b.Fatalf("Attest: %v", err)
	}
	chain := append(append([]byte(nil), a.Cert.Raw...), a.Intermediate.Raw...)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := VerifyAttestation(chain, roots); err != nil {
			b.Fatal(err)
		}
	}
}
