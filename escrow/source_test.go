package escrow

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/internal/realtest"
)

// TestReaderSource runs the real ReaderSource over pcscd and both vpcd
// readers: a card handed over is not offered again while it stays in; a
// card inserted into the other reader meanwhile is; a card pulled out and
// put back while it was still open is offered again once closed, however
// quickly it came back.
func TestReaderSource(t *testing.T) {
	realtest.LockReaders(t)
	if realCAErr != nil {
		t.Fatalf("virtual CA: %v", realCAErr)
	}
	newCard := func(serial uint32) *vcard.Card {
		vc, err := vcard.NewCard(vcard.Config{Serial: serial, CA: realCA, StatePath: filepath.Join(t.TempDir(), "card.json")})
		if err != nil {
			t.Fatal(err)
		}
		return vc
	}
	insert := func(vc *vcard.Card, port int) *vcard.Inserted {
		in, err := vc.Insert(context.Background(), port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Remove() })
		return in
	}
	src := NewReaderSource()
	defer src.Close()
	next := func(timeout time.Duration) (Card, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return src.Next(ctx)
	}
	want := func(serial uint32) Card {
		t.Helper()
		c, err := next(10 * time.Second)
		if err != nil {
			t.Fatalf("Next, want card %d: %v", serial, err)
		}
		if c.Serial() != serial {
			c.Close()
			t.Fatalf("Next = card %d in %s, want card %d", c.Serial(), c.Reader(), serial)
		}
		return c
	}
	x, y := newCard(6001), newCard(6002)

	insert(x, vcard.Port0)
	cx := want(6001)
	cx.Close()
	if c, err := next(time.Second); !errors.Is(err, context.DeadlineExceeded) {
		if c != nil {
			t.Errorf("card %d offered again while it stayed in", c.Serial())
			c.Close()
		}
		t.Fatalf("Next with card 6001 still in = %v, want the deadline", err)
	}

	inY := insert(y, vcard.Port1)
	cy := want(6002)

	// Pulled out and put back while open: card 6002 is a new stay in its
	// reader, and is offered again once closed (the source once watched
	// for the removal only from Close on, and then waited forever).
	if err := inY.Remove(); err != nil {
		t.Fatal(err)
	}
	insert(y, vcard.Port1)
	cy.Close()
	want(6002).Close()

	// Card 6001 never left: still not offered.
	if c, err := next(time.Second); !errors.Is(err, context.DeadlineExceeded) {
		if c != nil {
			t.Errorf("card %d offered again while it stayed in", c.Serial())
			c.Close()
		}
		t.Fatalf("Next with cards 6001 and 6002 handed over = %v, want the deadline", err)
	}
}
