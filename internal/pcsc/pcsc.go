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
	"sync"
	"time"

	"github.com/ebfe/scard"
)

// MaxWait is the longest one call blocks while holding the lock. Callers
// loop on scard.ErrTimeout as they would for their own timeout.
const MaxWait = 250 * time.Millisecond

var mu sync.Mutex

// GetStatusChange is scard's (*Context).GetStatusChange, serialised
// process-wide, with the timeout capped at MaxWait (a negative timeout,
// scard's "infinite", is capped too).
func GetStatusChange(c *scard.Context, states []scard.ReaderState, timeout time.Duration) error {
	if timeout < 0 || timeout > MaxWait {
		timeout = MaxWait
	}
	mu.Lock()
	defer mu.Unlock()
	return c.GetStatusChange(states, timeout)
}
