package escrow

import (
	"context"
	"errors"

	"custos.dev/custos/store"
)

// EnrollOptions are the operator's choices for Enroll.
type EnrollOptions struct {
	// K and N: any K of the N cards recover the key (2 ≤ K ≤ N ≤ 255).
	K, N int
	// Custodians names the holder of each card, in the order the cards
	// are inserted; missing names come from the log's card registry, else
	// the card's serial.
	Custodians []string
	// AuthKey is an existing passphrase or key file of the volume; nil
	// asks for it through the Prompter. Enroll does not wipe it.
	AuthKey []byte
}

// EnrollResult is what Enroll did.
type EnrollResult struct {
	Ceremony *Record
	// TokenID is the LUKS2 token written, -1 when none (LUKS1, or the
	// header has no room).
	TokenID int
	// Anchor is the log head after the ceremony.
	Anchor store.Head
	// Resumed says what Enroll did with an unfinished enrollment it found
	// first: "" (none), "finished" or "undone" (then it enrolled anew).
	Resumed string
}

// Enroll puts a new recovery key for the volume in the hands of N
// custodians: it authorises with an existing key, makes the recovery key,
// adds its keyslot, splits it, and for each card in turn seals the share to
// the card's key, writes the certificate, reads it back and opens it with
// the custodian's PIN; only then it writes the LUKS2 token and marks the
// ceremony active in the log. A failure before the end kills the new
// keyslot again; a crash leaves what Status explains and a rerun finishes
// or undoes.
func Enroll(ctx context.Context, env *Env, opts EnrollOptions) (*EnrollResult, error) {
	return nil, errors.New("enroll: not implemented yet")
}
