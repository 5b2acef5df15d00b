package escrow

import (
	"context"
	"errors"
	"sync"
)

// ReaderSource is the CardSource over pcscd: it hands over each card
// inserted into any reader (or the readers named), one at a time.
type ReaderSource struct {
	// Readers, if not empty, are the only readers watched.
	Readers []string

	mu     sync.Mutex
	handed map[string]bool // readers whose card was handed over and not yet removed
}

// NewReaderSource returns a ReaderSource watching the readers named, or
// every reader when none is.
func NewReaderSource(readers ...string) *ReaderSource {
	return &ReaderSource{Readers: readers, handed: map[string]bool{}}
}

// Next implements CardSource.
func (s *ReaderSource) Next(ctx context.Context) (Card, error) {
	return nil, errors.New("next card: not implemented yet")
}
