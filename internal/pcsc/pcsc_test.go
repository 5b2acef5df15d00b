package pcsc

import (
	"testing"
	"time"
)

// TestLockHandsOver: the lock goes to the goroutine waiting for it, not
// back to the one that let it go and asks again at once (as a watcher
// looping on GetStatusChange does).
func TestLockHandsOver(t *testing.T) {
	lock()
	waiting := make(chan struct{})
	got := make(chan struct{})
	go func() {
		close(waiting)
		lock()
		close(got)
		time.Sleep(10 * time.Millisecond)
		unlock()
	}()
	<-waiting
	time.Sleep(50 * time.Millisecond) // let it block in lock
	unlock()
	select {
	case sem <- struct{}{}: // what lock would do, without blocking
		unlock()
		t.Fatal("the goroutine that let the lock go took it back before the one waiting")
	default:
	}
	<-got
	lock() // and it comes back once the other is done
	unlock()
}
