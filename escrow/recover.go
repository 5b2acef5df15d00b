package escrow

import (
	"context"
	"errors"

	"custos.dev/custos/store"
)

// RecoverOptions are the operator's choices for Recover.
type RecoverOptions struct {
	// NewKey is the passphrase or key file for the new keyslot; nil asks
	// for a passphrase twice through the Prompter. Recover does not wipe
	// it.
	NewKey []byte
}

// RecoverResult is what Recover did.
type RecoverResult struct {
	Ceremony *Record
	// Source is where the ceremony was learnt: "token", "log" or "cards".
	Source string
	// NewKeyslot is the keyslot added with the new key.
	NewKeyslot int
	// Cards are the outcomes of the cards inserted, in order.
	Cards []CardOutcome
	// Anchor is the log head after the recovery was logged (zero without
	// a log).
	Anchor store.Head
}

// Recover collects K good shares from the custodians' cards, one card at a
// time (or from several readers), combines them into the recovery key,
// tests it against its keyslot and adds a new keyslot with the operator's
// new key. Each card gets its own outcome; fewer than K good shares before
// ctx ends is ErrQuorum.
func Recover(ctx context.Context, env *Env, opts RecoverOptions) (*RecoverResult, error) {
	return nil, errors.New("recover: not implemented yet")
}
