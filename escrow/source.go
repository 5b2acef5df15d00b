package escrow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"custos.dev/custos/cards"
)

// ReaderSource is the CardSource over pcscd: it hands over each card
// inserted into any reader (or only the readers named), one at a time. A
// card handed over is not offered again until it has left its reader.
type ReaderSource struct {
	// Readers, if not empty, are the only readers watched.
	Readers []string
	// OnSkip, if set, hears of a card that could not be opened (not a PIV
	// card, held by another program); the card is ignored until removed.
	OnSkip func(reader string, err error)

	mu     sync.Mutex
	handed map[string]bool // readers whose card was handed over and not yet removed
	bg     context.Context
	stop   context.CancelFunc
}

// NewReaderSource returns a ReaderSource watching the readers named, or
// every reader when none is. Close it when the ceremony is over.
func NewReaderSource(readers ...string) *ReaderSource {
	bg, stop := context.WithCancel(context.Background())
	return &ReaderSource{Readers: readers, handed: map[string]bool{}, bg: bg, stop: stop}
}

// Close stops watching for the removal of the cards handed over.
func (s *ReaderSource) Close() error {
	s.stop()
	return nil
}

// poll bounds one wait, so that readers freed meanwhile are seen.
const poll = 300 * time.Millisecond

// Next implements CardSource.
func (s *ReaderSource) Next(ctx context.Context) (Card, error) {
	for {
		skip, err := s.skip(ctx)
		if err != nil {
			return nil, err
		}
		wctx, cancel := context.WithTimeout(ctx, poll)
		reader, err := cards.WaitInserted(wctx, skip)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			return nil, fmt.Errorf("wait for a card: %w", err)
		}
		s.mark(reader)
		c, err := cards.Open(reader)
		if err != nil {
			if s.OnSkip != nil {
				s.OnSkip(reader, err)
			}
			s.release(reader)
			continue
		}
		return &handedCard{Card: c, src: s, reader: reader}, nil
	}
}

// skip lists the readers not to wait on: those whose card was handed over
// and has not left, and those not named in Readers.
func (s *ReaderSource) skip(ctx context.Context) (map[string]bool, error) {
	s.mu.Lock()
	skip := map[string]bool{}
	for r, h := range s.handed {
		skip[r] = h
	}
	s.mu.Unlock()
	if len(s.Readers) > 0 {
		all, err := cards.Readers(ctx)
		if err != nil {
			return nil, err
		}
		for _, r := range all {
			if !slices.Contains(s.Readers, r.Name) {
				skip[r.Name] = true
			}
		}
	}
	return skip, nil
}

func (s *ReaderSource) mark(reader string) {
	s.mu.Lock()
	if s.handed == nil {
		s.handed = map[string]bool{}
	}
	s.handed[reader] = true
	s.mu.Unlock()
}

// release forgets a reader's card once it has left the reader.
func (s *ReaderSource) release(reader string) {
	bg := s.bg
	if bg == nil {
		bg = context.Background()
	}
	go func() {
		if err := cards.WaitRemoved(bg, reader); err != nil && bg.Err() != nil {
			return
		}
		s.mu.Lock()
		delete(s.handed, reader)
		s.mu.Unlock()
	}()
}

// handedCard is a card a ReaderSource handed over.
type handedCard struct {
	*cards.Card
	src    *ReaderSource
	reader string
	once   sync.Once
}

// Close closes the card and watches for it to leave its reader.
func (c *handedCard) Close() error {
	err := c.Card.Close()
	c.once.Do(func() { c.src.release(c.reader) })
	return err
}
