package escrow

import (
	"context"
	"crypto/x509"
	"errors"

	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// InitCardOptions are the custodian's choices for InitCard.
type InitCardOptions struct {
	// Custodian names the card's holder, for the log.
	Custodian string
	// Slot is the retired slot for the key, 0x82..0x95; 0 picks the first
	// free one.
	Slot uint8
	// PINPolicy is "always" (default) or "once"; TouchPolicy is "never"
	// (default), "always" or "cached".
	PINPolicy, TouchPolicy string
	// Roots are extra attestation roots (the virtual card's CA for a
	// rehearsal), trusted besides Yubico's.
	Roots *x509.CertPool
	// AskCurrent asks for the card's current PIN and PUK first, for a
	// card whose factory values were already changed.
	AskCurrent bool
}

// InitCardResult is what InitCard did.
type InitCardResult struct {
	Serial      string
	Slot        uint8
	Fingerprint shares.Fingerprint
	Custodian   string
	// Anchor is the log head after the card was registered (zero without
	// a log).
	Anchor store.Head
}

// InitCard makes card a custody card: it asks for the new PIN and PUK twice
// each, initialises the card (cards.Card.Init: random management key, key
// generated on the card, attestation verified) and registers the card key
// in the log when env.Log is set.
func InitCard(ctx context.Context, env *Env, card Card, opts InitCardOptions) (*InitCardResult, error) {
	return nil, errors.New("init card: not implemented yet")
}
