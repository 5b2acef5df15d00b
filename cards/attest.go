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
	// Issuer names who vouches for the card: the common name of the root
	// the chain ends at (the intermediate's issuer), or its whole
	// distinguished name when it has none. It comes from a certificate:
	// filter it before it reaches a terminal.
	Issuer string
}

// Summary describes the attestation for a person: issuer, firmware and
// policies.
func (a *Attestation) Summary() string { return a.Issuer + "; " + a.Policies() }

// Policies describes what the card attests of the key, issuer aside:
// firmware, PIN and touch policy ("firmware 5.7.1; pin policy always,
// touch policy never"). Every part of it is custos's own text.
func (a *Attestation) Policies() string {
	return fmt.Sprintf("firmware %s; pin policy %s, touch policy %s", a.Firmware, pinPolicyName(a.PINPolicy), touchPolicyName(a.TouchPolicy))
}

// Attest reads the attestation of the key in slot (Yubico's ATTEST, INS
// F9, then GET DATA 5FFF01 for the card's attestation certificate) and
// verifies it against roots, then Yubico's: the chain, the slot, the
// card's serial. A card that cannot attest (not a YubiKey: the instruction
// is unknown; or a key imported rather than generated on the card, which a
// YubiKey refuses to attest) gives ErrNoAttestation; one whose attestation
// does not verify gives ErrAttestation.
func (c *Card) Attest(slot uint8, roots *x509.CertPool) (*Attestation, error) {
	c.tr.begin()
	a, err := c.attestSlot(slot, roots)
	if err != nil {
		return nil, fmt.Errorf("attest slot %02x: %w", slot, err)
	}
	return a, nil
}

func (c *Card) attestSlot(slot uint8, roots *x509.CertPool) (*Attestation, error) {
	if err := checkRetired(slot); err != nil {
		return nil, err
	}
	cert, err := c.attest(slot)
	if err != nil {
		if cannotAttest(err) {
			return nil, fmt.Errorf("%w: %v", ErrNoAttestation, err)
		}
		return nil, mapError(c.reader, err)
	}
	inter, err := c.attestationCertificate()
	if err != nil {
		if cannotAttest(err) {
			return nil, fmt.Errorf("%w: no attestation certificate: %v", ErrNoAttestation, err)
		}
		return nil, err
	}
	a, err := verifyAttestation(cert, inter, roots)
	if err != nil {
		return nil, err
	}
	if a.Slot != slot {
		return nil, fmt.Errorf("%w: the attestation is for slot %02x", ErrAttestation, a.Slot)
	}
	if c.serial != 0 && a.Serial != c.serial {
		return nil, fmt.Errorf("%w: the attestation names card %d, not %d", ErrAttestation, a.Serial, c.serial)
	}
	return a, nil
}

// cannotAttest tells the answers of a card that has no attestation for a
// key: the instruction or object unknown (6D00, 6E00, 6A82), or the key
// not attestable (6A80, 6A86, 6A88: none, or imported).
func cannotAttest(err error) bool {
	var st statusError
	if errors.As(err, &st) {
		switch st.Status() {
		case 0x6a80, 0x6a82, 0x6a86, 0x6a88, 0x6d00, 0x6e00:
			return true
		}
	}
	return errors.Is(err, errNotFound) || errors.Is(err, errNotSupported)
}

// attestationCertificate reads the card's attestation-signing certificate
// (GET DATA 5FFF01, Yubico's object for slot F9).
func (c *Card) attestationCertificate() (*x509.Certificate, error) {
	v, err := c.getData(objAttestation)
	if err != nil {
		return nil, fmt.Errorf("read attestation certificate: %w", err)
	}
	der, err := parseCertObject(v)
	if err != nil {
		return nil, fmt.Errorf("read attestation certificate: %w", c.malformed("GET DATA 5FFF01", err))
	}
	inter, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: the card's attestation certificate does not decode: %v", ErrAttestation, err)
	}
	return inter, nil
}

// VerifyAttestation verifies an attestation kept as bytes — the slot's
// attestation certificate followed by the attestation-signing certificate,
// both DER, as the log records it — against roots, then Yubico's.
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
	// The caller's roots first, then Yubico's: either is enough, and what
	// the attestation says is read from cert whichever root it chains to.
	// piv-go parses its bundle of Yubico's roots anew at every call (a
	// verification took twice as long when Yubico's came first:
	// BenchmarkVerifyAttestation), so a card the caller's roots attest is
	// verified without it. When both fail, the error is the caller's
	// roots', as it was.
	var pa *piv.Attestation
	var err error
	if roots != nil {
		pa, err = (&piv.Verifier{Roots: roots}).Verify(inter, cert)
		if err != nil {
			if ya, yerr := piv.Verify(inter, cert); yerr == nil {
				pa, err = ya, nil
			}
		}
	} else {
		pa, err = piv.Verify(inter, cert) // piv-go's Yubico bundle
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAttestation, err)
	}
	// piv-go only checks that cert chains to a root with inter as a
	// possible intermediate: the card's own certificate in cert's place
	// (the two swapped) passes, and would attest the card's attestation
	// key. The slot's certificate must be signed by inter itself.
	if err := inter.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return nil, fmt.Errorf("%w: the slot's attestation is not signed by the card's attestation key: %v", ErrAttestation, err)
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
		Serial:    pa.Serial,
		Firmware:  fmt.Sprintf("%d.%d.%d", pa.Version.Major, pa.Version.Minor, pa.Version.Patch),
		PINPolicy: pa.PINPolicy, TouchPolicy: pa.TouchPolicy,
		Issuer: issuerName(inter),
	}, nil
}

// issuerName is the common name of the certificate's issuer, or its whole
// name when it has none.
func issuerName(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return c.Issuer.CommonName
	}
	return c.Issuer.String()
}
