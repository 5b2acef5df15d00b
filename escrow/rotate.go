package escrow

import (
	"context"
	"errors"
	"time"

	"custos.dev/custos/store"
)

// RotateOptions are the operator's choices for Rotate.
type RotateOptions struct {
	// K and N of the new ceremony; 0 keeps the old ones.
	K, N int
	// Custodians names the holder of each new card, in insertion order.
	Custodians []string
	// AuthKey, if not nil, authorises with an existing passphrase or key
	// file instead of K cards of the old ceremony. Rotate does not wipe
	// it.
	AuthKey []byte
	// WipeWait is how long to wait for each old card that leaves the
	// custodian set to be inserted for wiping; 0 does not wait and lists
	// them in RotateResult.ToWipe.
	WipeWait time.Duration
}

// RotateResult is what Rotate did.
type RotateResult struct {
	Old, New *Record
	// Wiped are the old cards whose retired share was destroyed; ToWipe
	// the ones still to wipe (absent, or their wipe failed).
	Wiped, ToWipe []CardRef
	// Anchor is the log head after the rotation.
	Anchor store.Head
	// Resumed says what Rotate did with an unfinished rotation it found:
	// "" (none), "finished" or "undone" (then it rotated anew).
	Resumed string
}

// Rotate replaces the volume's recovery key: it obtains authority (K cards
// of the old ceremony, or AuthKey), makes a new key and keyslot, seals new
// shares to the new card set and verifies each on its card; only then it
// writes the new token, kills the old keyslot, removes the old token, logs
// old → new and wipes the old shares on the cards presented. Interrupted at
// any step, a rerun finishes or undoes it; the volume always opens with the
// old or the new recovery key.
func Rotate(ctx context.Context, env *Env, opts RotateOptions) (*RotateResult, error) {
	return nil, errors.New("rotate: not implemented yet")
}
