package custodians

import (
	"context"
	"path/filepath"
	"testing"

	"custos.dev/custos/cards"
	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/internal/realtest"
)

// TestDeck swaps through the real readers: each card goes into the reader
// the last one is not in, the same card twice in a row leaves and comes
// back, and a spent deck leaves both readers empty.
func TestDeck(t *testing.T) {
	realtest.LockReaders(t)
	ca, err := vcard.OpenCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	newCard := func(serial uint32) *vcard.Card {
		c, err := vcard.NewCard(vcard.Config{Serial: serial, CA: ca})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := newCard(7001), newCard(7002)
	d := &Deck{Cards: []*vcard.Card{a, b, b, a}}
	t.Cleanup(func() { d.Remove() })
	ctx := context.Background()
	for i, want := range []struct {
		card *vcard.Card
		port int
	}{{a, vcard.Port0}, {b, vcard.Port1}, {b, vcard.Port1}, {a, vcard.Port0}} {
		in, err := d.Insert(ctx)
		if err != nil {
			t.Fatalf("swap %d: %v", i, err)
		}
		if in == nil {
			t.Fatalf("swap %d: no card inserted, want card %d", i, want.card.Serial())
		}
		if in.Card() != want.card || in.Port() != want.port {
			t.Fatalf("swap %d: card %d in port %d, want card %d in %d", i, in.Card().Serial(), in.Port(), want.card.Serial(), want.port)
		}
		present := readersWithCards(t)
		if !present[in.Reader()] {
			t.Fatalf("swap %d: pcscd lists no card in %s", i, in.Reader())
		}
	}
	if d.Left() != 0 {
		t.Errorf("Left = %d after four swaps, want 0", d.Left())
	}
	if in, err := d.Insert(ctx); in != nil || err != nil {
		t.Fatalf("Insert from a spent deck = %v, %v; want nil, nil", in, err)
	}
	if present := readersWithCards(t); present[vcard.ReaderName(vcard.Port0)] || present[vcard.ReaderName(vcard.Port1)] {
		t.Fatalf("cards still in after the deck was spent: %v", present)
	}
}

func readersWithCards(t *testing.T) map[string]bool {
	t.Helper()
	rs, err := cards.Readers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	for _, r := range rs {
		if r.Present {
			present[r.Name] = true
		}
	}
	return present
}
