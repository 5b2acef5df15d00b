package escrow

import (
	"context"
	"fmt"
	"maps"
	"sync"

	"custos.dev/custos/cards"
)

// ReaderSource is the CardSource over pcscd: it hands over each card
// inserted into any reader (or only the readers named), one at a time. A
// card handed over is not offered again until it has left its reader and
// come back; a card already in another reader is offered at once.
//
// It tells one stay of a card in a reader from the next by pcscd's count
// of the reader's insertions and removals (cards.Insertion), so a card
// swapped for another in the same reader faster than anyone watched is
// still seen as new.
type ReaderSource struct {
	// Readers, if not empty, are the only readers watched.
	Readers []string
	// OnSkip, if set, hears of a card that could not be opened (not a PIV
	// card, held by another program); the card is ignored until removed.
	OnSkip func(reader string, err error)

	mu     sync.Mutex
	handed map[cards.Insertion]bool // cards handed over (or skipped), by their stay in a reader
}

// NewReaderSource returns a ReaderSource watching the readers named, or
// every reader when none is. Close it when the ceremony is over.
func NewReaderSource(readers ...string) *ReaderSource {
	return &ReaderSource{Readers: readers, handed: map[cards.Insertion]bool{}}
}

// Close releases the source; there is nothing left to watch.
func (s *ReaderSource) Close() error {
	return nil
}

// Next implements CardSource. It waits in one blocking call to pcscd
// (cards.WaitNewCardIn): nothing runs while no card comes.
func (s *ReaderSource) Next(ctx context.Context) (Card, error) {
	for {
		in, err := cards.WaitNewCardIn(ctx, s.Readers, s.seen())
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("wait for a card: %w", err)
		}
		s.mark(in)
		c, err := cards.Open(in.Reader)
		if err != nil {
			if s.OnSkip != nil {
				s.OnSkip(in.Reader, err)
			}
			continue
		}
		return c, nil
	}
}

func (s *ReaderSource) seen() map[cards.Insertion]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.handed)
}

func (s *ReaderSource) mark(in cards.Insertion) {
	s.mu.Lock()
	if s.handed == nil {
		s.handed = map[cards.Insertion]bool{}
	}
	s.handed[in] = true
	s.mu.Unlock()
}
