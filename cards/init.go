package cards

import (
	"crypto/ecdsa"
	"crypto/x509"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/shares"
)

// InitOptions are the custodian's choices for Init.
type InitOptions struct {
	// PIN and PUK are the custodian's new PIN and PUK, 6 to 8 characters,
	// distinct from each other and from the factory values.
	PIN, PUK []byte
	// Slot is the retired slot to use, 0x82 to 0x95; 0 picks the first
	// free one.
	Slot uint8
	// PINPolicy is the slot key's PIN policy; 0 means piv.PINPolicyAlways.
	PINPolicy piv.PINPolicy
	// TouchPolicy is the slot key's touch policy; 0 means
	// piv.TouchPolicyNever.
	TouchPolicy piv.TouchPolicy
	// Roots are extra attestation roots (the virtual card's CA for a
	// rehearsal), trusted besides Yubico's PIV root CA.
	Roots *x509.CertPool
	// CurrentPIN and CurrentPUK are the card's current PIN and PUK; nil
	// means the factory defaults.
	CurrentPIN, CurrentPUK []byte
}

// Custody is what Init did: the card's identity, the slot and its key, and
// the attestation proving the key was generated on the card.
type Custody struct {
	Serial      uint32
	Version     string
	Slot        uint8
	PublicKey   *ecdsa.PublicKey
	Fingerprint shares.Fingerprint
	// Attestation is the slot key's attestation certificate, signed by
	// Intermediate, the card's attestation certificate.
	Attestation, Intermediate *x509.Certificate
	// PINPolicy and TouchPolicy are the slot key's policies as attested:
	// "never", "once", "always" or "cached".
	PINPolicy, TouchPolicy string
}

// Init makes the card a custody card: it sets the custodian's PIN and PUK,
// sets a random management key stored PIN-protected on the card, generates
// a P-256 key in a free retired slot and verifies its attestation.
func (c *Card) Init(opts InitOptions) (*Custody, error) { return nil, ErrNotImplemented }
