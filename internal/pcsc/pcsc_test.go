package pcsc_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/internal/pcsc"
	"custos.dev/custos/internal/realtest"
	"github.com/ebfe/scard"
)

// states reads every reader's state once (a zero timeout), as the waits
// do before they block.
func states(t *testing.T, c *pcsc.Context) []scard.ReaderState {
	t.Helper()
	names, err := c.ListReaders()
	if err != nil {
		t.Fatalf("ListReaders: %v", err)
	}
	st := make([]scard.ReaderState, len(names))
	for i, n := range names {
		st[i] = scard.ReaderState{Reader: n, CurrentState: scard.StateUnaware}
	}
	if err := c.GetStatusChange(st, 0); err != nil {
		t.Fatalf("GetStatusChange, zero timeout: %v", err)
	}
	for i := range st {
		st[i].CurrentState = st[i].EventState &^ scard.StateChanged
	}
	return st
}

func establish(t *testing.T) *pcsc.Context {
	t.Helper()
	c, err := pcsc.EstablishContext()
	if err != nil {
		t.Fatalf("EstablishContext: %v", err)
	}
	t.Cleanup(func() { c.Release() })
	return c
}

// TestWaitsBlockTogether: several goroutines block in GetStatusChange at
// once, each on its own context and without a timeout, on the same reader
// names (what the serialising lock this package replaces forbade); a card
// inserted ends every wait with the card present, and a wait with nothing
// to report times out or is cancelled. Run with -race.
func TestWaitsBlockTogether(t *testing.T) {
	realtest.LockReaders(t)
	ca, err := vcard.OpenCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	reader := vcard.ReaderName(vcard.Port0)
	const waiters = 4
	type result struct {
		st  []scard.ReaderState
		err error
	}
	done := make(chan result, waiters)
	for range waiters {
		c := establish(t)
		st := states(t, c)
		if !slices.ContainsFunc(st, func(s scard.ReaderState) bool { return s.Reader == reader }) {
			t.Fatalf("pcscd lists no reader %q", reader)
		}
		go func() {
			err := c.GetStatusChange(st, pcsc.Infinite)
			done <- result{st, err}
		}()
	}
	// A timeout with nothing changing, meanwhile, on yet another context.
	quiet := establish(t)
	qs := states(t, quiet)
	start := time.Now()
	if err := quiet.GetStatusChange(qs, 100*time.Millisecond); !errors.Is(err, scard.ErrTimeout) {
		t.Fatalf("GetStatusChange with nothing changing = %v, want scard.ErrTimeout", err)
	}
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Errorf("GetStatusChange timed out after %v, want 100ms", d)
	}
	select {
	case r := <-done:
		t.Fatalf("a wait returned with nothing changed: %v", r.err)
	default:
	}

	card, err := vcard.NewCard(vcard.Config{Serial: 7001, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	in, err := card.Insert(context.Background(), vcard.Port0)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Remove()
	for range waiters {
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatalf("wait ended with %v, want the card's arrival", r.err)
			}
			i := slices.IndexFunc(r.st, func(s scard.ReaderState) bool { return s.Reader == reader })
			if r.st[i].EventState&scard.StatePresent == 0 || len(r.st[i].Atr) == 0 {
				t.Errorf("after the insertion %s is %#x with ATR %x, want a card present", reader, r.st[i].EventState, r.st[i].Atr)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a wait did not end when the card was inserted")
		}
	}

	// Cancel ends a wait that has nothing to report.
	c := establish(t)
	st := states(t, c)
	go func() {
		time.Sleep(50 * time.Millisecond)
		c.Cancel()
	}()
	if err := c.GetStatusChange(st, pcsc.Infinite); !errors.Is(err, scard.ErrCancelled) {
		t.Fatalf("cancelled GetStatusChange = %v, want scard.ErrCancelled", err)
	}
}

// TestUnknownReader: a reader pcscd does not know is pcsc-lite's
// SCARD_E_UNKNOWN_READER, which the waits act on.
func TestUnknownReader(t *testing.T) {
	realtest.PCSCD(t)
	c := establish(t)
	st := []scard.ReaderState{{Reader: "no such reader", CurrentState: scard.StateUnaware}}
	if err := c.GetStatusChange(st, 0); !errors.Is(err, scard.ErrUnknownReader) {
		t.Fatalf("GetStatusChange on an unknown reader = %v, want scard.ErrUnknownReader", err)
	}
}

// TestListReadersLongList: a list longer than the room ListReaders offers
// at first (pcsc-lite's SCARD_E_INSUFFICIENT_BUFFER, with the size it
// needs) is asked for again at its size: the same names as with room to
// spare, however little room there was.
func TestListReadersLongList(t *testing.T) {
	realtest.PCSCD(t)
	c := establish(t)
	want, err := c.ListReaders()
	if errors.Is(err, scard.ErrNoReadersAvailable) {
		realtest.Missing(t, "no pc/sc reader (vpcd) configured in pcscd")
	}
	if err != nil {
		t.Fatalf("ListReaders: %v", err)
	}
	for _, room := range []int{1, 2, len(want[0]), len(want[0]) + 1} {
		restore := pcsc.SetListBuffer(room)
		got, err := c.ListReaders()
		restore()
		if err != nil {
			t.Fatalf("ListReaders with %d bytes of room: %v", room, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("ListReaders with %d bytes of room = %q, want %q", room, got, want)
		}
	}
}
