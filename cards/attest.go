package cards

import (
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/shares"
)

// Attestation is a slot key's attestation, verified: the card's statement,
// signed by its attestation key under its maker's root, that the key was
// generated on the card with these policies.
type Attestation struct {
	// Slot is the attested slot.
	Slot uint8
	// Cert is the slot key's attestation certificate; Intermediate the
	// card's attestation-signing certificate (PIV object 5FFF01 on a
	// YubiKey), which signs it.
	Cert, Intermediate *x509.Certificate
	// PublicKey and Fingerprint are the attested key.
	PublicKey   *ecdsa.PublicKey
	Fingerprint shares.Fingerprint
	// Serial and Firmware are the card's, as attested.
	Serial   uint32
	Firmware string
	// PINPolicy and TouchPolicy are the key's policies, as attested.
	PINPolicy   piv.PINPolicy
	TouchPolicy piv.TouchPolicy
	// Issuer names who vouches for the card: the subject of the root
	// the chain ends at (the intermediate's issuer).
	Issuer string
}

// Summary describes the attestation for a person: issuer, firmware and
// policies.
func (a *Attestation) Summary() string {
	return fmt.Sprintf("%s; firmware %s; pin policy %s, touch policy %s", a.Issuer, a.Firmware,
		pinPolicyName(a.PINPolicy), touchPolicyName(a.TouchPolicy))
}

// Attest reads the attestation of the key in slot (Yubico's ATTEST, INS
// F9, and the attestation certificate, object 5FFF01) and verifies it
// against Yubico's roots, then roots: the chain, the slot, the card's
// serial. A card that cannot attest (not a YubiKey, or a key imported
// rather than generated on the card) gives ErrNoAttestation; one whose
// attestation does not verify gives ErrAttestation.
func (c *Card) Attest(slot uint8, roots *x509.CertPool) (*Attestation, error) {
	s, err := retiredSlot(slot)
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	cert, err := c.yk.Attest(s)
	if err != nil {
		if m := mapError(c.reader, err); errors.Is(m, ErrCardRemoved) || errors.Is(m, ErrNoService) || errors.Is(m, ErrCardBusy) {
			return nil, fmt.Errorf("attest slot %02x: %w", slot, m)
		}
		return nil, fmt.Errorf("attest slot %02x: %w: %v", slot, ErrNoAttestation, err)
	}
	inter, err := c.yk.AttestationCertificate()
	if err != nil {
		if m := mapError(c.reader, err); errors.Is(m, ErrCardRemoved) || errors.Is(m, ErrNoService) || errors.Is(m, ErrCardBusy) {
			return nil, fmt.Errorf("attest slot %02x: %w", slot, m)
		}
		return nil, fmt.Errorf("attest slot %02x: %w: no attestation certificate: %v", slot, ErrNoAttestation, err)
	}
	a, err := verifyAttestation(cert, inter, roots)
	if err != nil {
		return nil, fmt.Errorf("attest slot %02x: %w", slot, err)
	}
	if a.Slot != slot {
		return nil, fmt.Errorf("attest slot %02x: %w: the attestation is for slot %02x", slot, ErrAttestation, a.Slot)
	}
	if c.serial != 0 && a.Serial != c.serial {
		return nil, fmt.Errorf("attest slot %02x: %w: the attestation names card %d, not %d", slot, ErrAttestation, a.Serial, c.serial)
	}
	return a, nil
}

// VerifyAttestation verifies an attestation kept as bytes — the slot's
// attestation certificate followed by the attestation-signing certificate,
// both DER, as the log records it — against Yubico's roots, then roots.
func VerifyAttestation(chain []byte, roots *x509.CertPool) (*Attestation, error) {
	cert, inter, err := SplitAttestation(chain)
	if err != nil {
		return nil, err
	}
	return verifyAttestation(cert, inter, roots)
}

// SplitAttestation parses the two DER certificates of a recorded
// attestation.
func SplitAttestation(chain []byte) (cert, intermediate *x509.Certificate, err error) {
	certs, err := x509.ParseCertificates(chain)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrAttestation, err)
	}
	if len(certs) != 2 {
		return nil, nil, fmt.Errorf("%w: %d certificates, want the slot's and the card's", ErrAttestation, len(certs))
	}
	return certs[0], certs[1], nil
}

func verifyAttestation(cert, inter *x509.Certificate, roots *x509.CertPool) (*Attestation, error) {
	pa, err := piv.Verify(inter, cert) // nil roots: piv-go's Yubico bundle
	if err != nil && roots != nil {
		pa, err = (&piv.Verifier{Roots: roots}).Verify(inter, cert)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAttestation, err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: the attested key is a %T, not a P-256 key", ErrAttestation, cert.PublicKey)
	}
	fp, err := shares.FingerprintOf(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAttestation, err)
	}
	return &Attestation{
		Slot: uint8(pa.Slot.Key), Cert: cert, Intermediate: inter, PublicKey: pub, Fingerprint: fp,
		Serial:   pa.Serial,
		Firmware: fmt.Sprintf("%d.%d.%d", pa.Version.Major, pa.Version.Minor, pa.Version.Patch),
		PINPolicy: pa.PINPolicy, TouchPolicy: pa.TouchPolicy,
		Issuer: inter.Issuer.String(),
	}, nil
}
