package cards

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"custos.dev/custos/internal/pcsc"
	"github.com/ebfe/scard"
)

// ReaderInfo is one PC/SC reader and what is in it.
type ReaderInfo struct {
	// Name is the reader's PC/SC name.
	Name string
	// ATR is the card's answer to reset, nil when no card is present.
	ATR []byte
	// Present is whether a card is in the reader.
	Present bool
	// Serial is the card's serial number, 0 when it is not a PIV card (or
	// the card is held by another program).
	Serial uint32
}

// pnpReader is pcsc-lite's pseudo reader whose state changes when a reader
// is added or removed.
const pnpReader = `\\?PnP?\Notification`

// retryService is how long the wait functions pause before asking a pcscd
// that is not answering (restarting) again.
const retryService = 250 * time.Millisecond

// Readers lists the readers pcscd knows, with what is in them. A present
// card is asked for its serial number over a shared connection; a card held
// exclusively by another program shows Serial 0.
func Readers(ctx context.Context) ([]ReaderInfo, error) {
	sc, err := pcsc.EstablishContext()
	if err != nil {
		return nil, fmt.Errorf("list readers: %w", mapError("", err))
	}
	defer sc.Release()
	names, err := sc.ListReaders()
	if errors.Is(err, scard.ErrNoReadersAvailable) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list readers: %w", mapError("", err))
	}
	states := make([]scard.ReaderState, len(names))
	for i, n := range names {
		states[i] = scard.ReaderState{Reader: n, CurrentState: scard.StateUnaware}
	}
	if err := sc.GetStatusChange(states, 0); err != nil && !errors.Is(err, scard.ErrTimeout) {
		return nil, fmt.Errorf("list readers: %w", mapError("", err))
	}
	out := make([]ReaderInfo, len(names))
	for i, st := range states {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ri := ReaderInfo{Name: st.Reader}
		if st.EventState&scard.StatePresent != 0 && st.EventState&scard.StateMute == 0 {
			ri.Present = true
			ri.ATR = append([]byte(nil), st.Atr...)
			if st.EventState&scard.StateExclusive == 0 {
				ri.Serial = peekSerial(st.Reader)
			}
		}
		out[i] = ri
	}
	return out, nil
}

// peekTimeout bounds how long Readers waits for one card's serial: a card
// that does not answer in time is listed with serial 0.
const peekTimeout = 2 * time.Second

// peekSerial reads the serial of the card in reader over a shared
// connection, in a transaction: SELECT and GET SERIAL (firmware 5 and
// later; older cards, whose serial is in the OTP application, show 0:
// selecting that application would disturb another program's PIV session).
// It returns 0 when the card does not tell.
func peekSerial(reader string) uint32 {
	c, err := dial(reader, scard.ShareShared, peekTimeout)
	if err != nil {
		return 0
	}
	defer c.Close()
	b, err := c.send(apdu{ins: insGetSerial, le: true})
	if err != nil || len(b) != 4 {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// WaitInserted returns the name of a reader, not named in skip, that holds a
// card: at once when one already does, else when a card is inserted. Readers
// plugged in while it waits are watched too; when pcscd stops or restarts it
// waits for it to come back. It returns ctx.Err() when ctx ends first.
func WaitInserted(ctx context.Context, skip map[string]bool) (reader string, err error) {
	in, err := WaitNewCard(ctx, skip, nil)
	return in.Reader, err
}

// Insertion is one stay of a card in a reader. pcscd counts the card
// insertions and removals of each reader (the upper 16 bits of
// SCARD_READERSTATE's dwEventState); the reader's name and its count while
// the card is in tell this stay from any other, however quickly one card
// was swapped for another.
type Insertion struct {
	Reader string
	Events uint16
}

// WaitNewCard is WaitInserted for a card that is not one of seen: it
// returns a card's stay in a reader not named in skip, at once when a
// reader already holds a card not seen, else when one is inserted. A card
// seen goes on being ignored while it stays in its reader, and counts as
// new once it was removed and inserted again.
//
// # Caveats
//
// When pcscd restarts, or a reader is unplugged and plugged in again, its
// count starts over: a card seen before may then count as new, as it would
// had it been removed.
func WaitNewCard(ctx context.Context, skip map[string]bool, seen map[Insertion]bool) (Insertion, error) {
	return waitNewCard(ctx, func(r string) bool { return !skip[r] }, seen)
}

// WaitNewCardIn is WaitNewCard watching only the readers named in only
// (every reader when only is empty), those plugged in while it waits
// included.
func WaitNewCardIn(ctx context.Context, only []string, seen map[Insertion]bool) (Insertion, error) {
	if len(only) == 0 {
		return WaitNewCard(ctx, nil, seen)
	}
	return waitNewCard(ctx, func(r string) bool { return slices.Contains(only, r) }, seen)
}

func waitNewCard(ctx context.Context, watched func(reader string) bool, seen map[Insertion]bool) (Insertion, error) {
	var in Insertion
	err := watch(ctx, func(states []scard.ReaderState) bool {
		for _, st := range states {
			if st.Reader == pnpReader || !watched(st.Reader) {
				continue
			}
			if st.EventState&scard.StatePresent != 0 && st.EventState&scard.StateMute == 0 {
				i := Insertion{Reader: st.Reader, Events: uint16(uint32(st.EventState) >> 16)}
				if !seen[i] {
					in = i
					return true
				}
			}
		}
		return false
	})
	return in, err
}

// WaitRemoved returns once reader holds no card, or is gone. It returns
// ctx.Err() when ctx ends first.
func WaitRemoved(ctx context.Context, reader string) error {
	return watch(ctx, func(states []scard.ReaderState) bool {
		for _, st := range states {
			if st.Reader == reader {
				return st.EventState&scard.StatePresent == 0
			}
		}
		return true // the reader is gone, and its card with it
	})
}

// watch calls done with the state of every reader (and pcsc-lite's PnP
// pseudo reader) until it returns true, blocking in SCardGetStatusChange
// between changes. The context's end cancels the wait through SCardCancel.
func watch(ctx context.Context, done func([]scard.ReaderState) bool) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := watchOnce(ctx, done)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, ErrNoService) {
			return err
		}
		// pcscd is gone or restarting: ask again shortly.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retryService):
		}
	}
}

// errReadersChanged ends one watch when readers come or go.
var errReadersChanged = errors.New("readers changed")

func watchOnce(ctx context.Context, done func([]scard.ReaderState) bool) (err error) {
	sc, names, err := listContext()
	if err != nil {
		return mapError("", err)
	}
	stop := context.AfterFunc(ctx, func() { sc.Cancel() })
	defer func() {
		// A wait that found what it waited for leaves its context to the
		// connection or wait that follows (spare), unless a cancel may
		// have reached it.
		if stop() && err == nil {
			putSpare(sc)
			return
		}
		sc.Release()
	}()
	for {
		states := []scard.ReaderState{{Reader: pnpReader, CurrentState: scard.StateUnaware}}
		for _, n := range names {
			states = append(states, scard.ReaderState{Reader: n, CurrentState: scard.StateUnaware})
		}
		err = waitChanges(ctx, sc, states, done)
		if !errors.Is(err, errReadersChanged) {
			return err
		}
		names, err = sc.ListReaders()
		if err != nil && !errors.Is(err, scard.ErrNoReadersAvailable) {
			return mapError("", err)
		}
	}
}

// watchTimeout bounds one blocking SCardGetStatusChange of a wait. pcscd
// going away ends the call at once (ErrNoService); the bound only caps
// what a notification lost some other way could cost.
const watchTimeout = time.Minute

// waitChanges loops on SCardGetStatusChange over states until done says so
// or the set of readers changes. The first call reads the states; each
// later one blocks until a state changes: a wait costs nothing while
// nothing happens.
func waitChanges(ctx context.Context, sc *pcsc.Context, states []scard.ReaderState, done func([]scard.ReaderState) bool) error {
	first := true
	for {
		timeout := watchTimeout
		if first {
			timeout = 0
		}
		err := sc.GetStatusChange(states, timeout)
		switch {
		case err == nil, errors.Is(err, scard.ErrTimeout):
		case errors.Is(err, scard.ErrCancelled):
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errReadersChanged
		case errors.Is(err, scard.ErrUnknownReader), errors.Is(err, scard.ErrReaderUnavailable):
			return errReadersChanged
		default:
			return mapError("", err)
		}
		if done(states) {
			return nil
		}
		changed := false
		for i := range states {
			if states[i].EventState&scard.StateChanged != 0 {
				if states[i].Reader == pnpReader && !first {
					changed = true
				}
				if states[i].EventState&(scard.StateUnknown|scard.StateUnavailable) != 0 && states[i].Reader != pnpReader {
					changed = true
				}
			}
			states[i].CurrentState = states[i].EventState &^ scard.StateChanged
		}
		if changed {
			return errReadersChanged
		}
		first = false
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
