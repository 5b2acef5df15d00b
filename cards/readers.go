package cards

import "context"

// ReaderInfo is one PC/SC reader and what is in it.
type ReaderInfo struct {
	// Name is the reader's PC/SC name.
	Name string
	// ATR is the card's answer to reset, nil when no card is present.
	ATR []byte
	// Present is whether a card is in the reader.
	Present bool
	// Serial is the card's serial number, 0 when it is not a PIV card (or
	// the card is busy).
	Serial uint32
}

// Readers lists the readers pcscd knows, with what is in them.
func Readers(ctx context.Context) ([]ReaderInfo, error) { return nil, ErrNotImplemented }

// WaitInserted returns the name of a reader that holds a card, waiting until
// a card is inserted when none is present. Readers named in skip are ignored.
// It returns ctx.Err() when ctx ends first.
func WaitInserted(ctx context.Context, skip map[string]bool) (reader string, err error) {
	return "", ErrNotImplemented
}

// WaitRemoved returns once reader holds no card (or is gone). It returns
// ctx.Err() when ctx ends first.
func WaitRemoved(ctx context.Context, reader string) error { return ErrNotImplemented }
