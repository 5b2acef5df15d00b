package cards

import (
	"context"
	"testing"
	"time"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/internal/pcsc"
)

// TestSpareContext: a wait that found its card leaves its PC/SC context to
// the link that follows, and a link closed without error leaves its
// context to the next wait, so a ceremony establishes one context instead
// of two a card; a spare context that is gone (released here; after a
// pcscd restart, likewise unknown to pcscd) is dropped for a new one, and
// the wait and the connection work as they would without it.
func TestSpareContext(t *testing.T) {
	lock(t)
	for c := takeSpare(); c != nil; c = takeSpare() {
		c.Release() // another test's
	}
	vc := newVCard(t, 5001, "")
	in := insert(t, vc, vcard.Port0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := WaitNewCardIn(ctx, []string{in.Reader()}, nil); err != nil {
		t.Fatalf("WaitNewCardIn: %v", err)
	}
	waited := peekSpare()
	if waited == nil {
		t.Fatal("the wait that found the card left no spare context")
	}
	c := openCard(t, in.Reader())
	if c.link.ctx != waited {
		t.Fatal("Open did not take the wait's context")
	}
	if peekSpare() != nil {
		t.Fatal("the spare context is still spare after Open took it")
	}
	if err := c.selectPIV(); err != nil {
		t.Fatalf("SELECT on the wait's context: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if peekSpare() != waited {
		t.Fatal("the closed link did not leave its context spare")
	}

	// A context that is gone, as spare: dropped, and a new one used.
	gone, err := pcsc.EstablishContext()
	if err != nil {
		t.Fatalf("EstablishContext: %v", err)
	}
	gone.Release()
	putSpare(gone) // releases waited
	c = openCard(t, in.Reader())
	if c.link.ctx == gone {
		t.Fatal("Open kept a context that is gone")
	}
	if err := c.selectPIV(); err != nil {
		t.Fatalf("SELECT after a spare context that is gone: %v", err)
	}
	c.Close()
	gone, _ = pcsc.EstablishContext()
	gone.Release()
	putSpare(gone)
	if _, err := WaitNewCardIn(ctx, []string{in.Reader()}, nil); err != nil {
		t.Fatalf("WaitNewCardIn after a spare context that is gone: %v", err)
	}
	if peekSpare() == nil || peekSpare() == gone {
		t.Fatal("the wait did not leave its own context spare")
	}
}

// peekSpare is the spare context, left in place.
func peekSpare() *pcsc.Context {
	spare.mu.Lock()
	defer spare.mu.Unlock()
	return spare.ctx
}
