// Package pcsc holds what every user of github.com/ebfe/scard in this
// process must share.
//
// # Caveats
//
// ebfe/scard's GetStatusChange pins each reader name's C string in a
// package-level map without a lock. Two goroutines calling it at once (a
// ceremony waiting for a card to leave one reader while it waits for one in
// another, or a test's virtual card watching its reader) write that map
// concurrently: a data race, a possible "concurrent map writes" crash, and a
// C string that may be collected while pcscd's client library still reads
// it. Every call in custos goes through GetStatusChange here, which
// serialises them and caps each wait, so no caller holds the others up for
// long.
package pcsc

import (
	"time"

	"github.com/ebfe/scard"
)

// MaxWait is the longest one call blocks while holding the lock. Callers
// loop on scard.ErrTimeout as they would for their own timeout.
const MaxWait = 250 * time.Millisecond

// sem is the lock. A channel, not a sync.Mutex: a channel hands itself to
// the goroutine that has waited longest, whereas a mutex mostly goes back
// to the goroutine that just let go of it, and a watcher looping on
// GetStatusChange would keep another waiting a whole MaxWait after the
// change both wait for.
var sem = make(chan struct{}, 1)

func lock()   { sem <- struct{}{} }
func unlock() { <-sem }

// GetStatusChange is scard's (*Context).GetStatusChange, serialised
// process-wide, first come first served, with the timeout capped at
// MaxWait (a negative timeout, scard's "infinite", is capped too).
func GetStatusChange(c *scard.Context, states []scard.ReaderState, timeout time.Duration) error {
	if timeout < 0 || timeout > MaxWait {
		timeout = MaxWait
	}
	lock()
	defer unlock()
	return c.GetStatusChange(states, timeout)
}
