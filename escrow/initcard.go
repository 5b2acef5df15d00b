package escrow

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/cards"
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
	if err := env.need("card init", false, false, false, true); err != nil {
		return nil, err
	}
	if card == nil {
		return nil, fmt.Errorf("card init: %w: no card", ErrUsage)
	}
	// The log registers a card under its custodian's name: ask for it
	// before the card is touched, not after it is initialised.
	if env.Log != nil && opts.Custodian == "" {
		return nil, fmt.Errorf("card init: %w", ErrNoCustodian)
	}
	if opts.Custodian != "" {
		if err := store.CheckText(opts.Custodian); err != nil {
			return nil, fmt.Errorf("card init: %w: custodian %q: %v", ErrUsage, safeText(opts.Custodian), err)
		}
	}
	io := cards.InitOptions{Slot: opts.Slot, Roots: opts.Roots}
	switch strings.ToLower(opts.PINPolicy) {
	case "", "always":
		io.PINPolicy = piv.PINPolicyAlways
	case "once":
		io.PINPolicy = piv.PINPolicyOnce
	default:
		return nil, fmt.Errorf("card init: %w: pin policy %q: want always or once", ErrUsage, opts.PINPolicy)
	}
	switch strings.ToLower(opts.TouchPolicy) {
	case "", "never":
		io.TouchPolicy = piv.TouchPolicyNever
	case "always":
		io.TouchPolicy = piv.TouchPolicyAlways
	case "cached":
		io.TouchPolicy = piv.TouchPolicyCached
	default:
		return nil, fmt.Errorf("card init: %w: touch policy %q: want never, always or cached", ErrUsage, opts.TouchPolicy)
	}
	if opts.Slot != 0 && (opts.Slot < 0x82 || opts.Slot > 0x95) {
		return nil, fmt.Errorf("card init: %w: slot %02x: want 82 to 95", ErrUsage, opts.Slot)
	}
	serial := serialOf(card)
	var wipe [][]byte
	defer func() {
		for _, b := range wipe {
			shares.Wipe(b)
		}
	}()
	ask := func(prompt string, twice bool) ([]byte, error) {
		var b []byte
		var err error
		if twice {
			b, err = askTwice(env.Prompt, prompt)
		} else {
			b, err = env.Prompt.Secret(prompt)
		}
		if err != nil {
			return nil, fmt.Errorf("card init: %w", err)
		}
		wipe = append(wipe, b)
		return b, nil
	}
	var err error
	if opts.AskCurrent {
		if io.CurrentPIN, err = ask("current pin of card "+serial, false); err != nil {
			return nil, err
		}
		if io.CurrentPUK, err = ask("current puk of card "+serial, false); err != nil {
			return nil, err
		}
	}
	if io.PIN, err = ask("new pin for card "+serial, true); err != nil {
		return nil, err
	}
	if io.PUK, err = ask("new puk for card "+serial, true); err != nil {
		return nil, err
	}
	env.say("initialising card %s: this takes a few seconds", serial)
	cu, err := card.Init(io)
	if err != nil {
		return nil, fmt.Errorf("card init: card %s: %w", serial, err)
	}
	res := &InitCardResult{Serial: serial, Slot: cu.Slot, Fingerprint: cu.Fingerprint, Custodian: opts.Custodian}
	env.say("card %s: key in slot %02x, fingerprint %s", serial, cu.Slot, cu.Fingerprint)
	if env.Log != nil {
		reg := store.CardRegistration{Serial: serial, Custodian: opts.Custodian, Slot: slotText(cu.Slot), Fingerprint: cu.Fingerprint.String()}
		if cu.Attestation != nil {
			reg.Attestation = append(reg.Attestation, cu.Attestation.Raw...)
		}
		if cu.Intermediate != nil {
			reg.Attestation = append(reg.Attestation, cu.Intermediate.Raw...)
		}
		h, err := env.Log.Update(func(tx *store.Tx) error {
			_, err := tx.RegisterCard(env.actor(), "", reg)
			return err
		})
		if err != nil {
			return res, fmt.Errorf("card init: card %s is initialised, but %w", serial, err)
		}
		res.Anchor = h
	}
	return res, nil
}
