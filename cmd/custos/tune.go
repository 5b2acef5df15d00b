package main

import (
	"os"
	"runtime"
	"runtime/debug"
)

// tune sets Go's runtime for what custos is: a short-lived command that
// spends its time waiting (for a card, a PIN, cryptsetup) and allocates a
// few megabytes. Each setting gives way to its environment variable, and
// the timer slack to a larger one the process started with.
//
//   - One P (GOMAXPROCS=1). While a goroutine blocks in a C call
//     (SCardGetStatusChange for the next card, an APDU) or a system call
//     (waiting for cryptsetup), the runtime's monitor thread polls, every
//     20 µs at first, until it takes the P back: with two or more Ps it
//     waits 10 ms before doing so, as another P is idle, and the monitor
//     sleeps only once every P is idle. With one P it takes it back at
//     once and sleeps. custos has no work for a second processor: the
//     PBKDF runs in cryptsetup. (recover k = 3: about 4 ms of processor
//     time less, scripts/bench.)
//   - A timer slack of 1 ms instead of the kernel's 50 µs (prctl
//     PR_SET_TIMERSLACK, set in timerslack.go before the runtime starts;
//     a process started with more keeps its own). With one P the monitor
//     thread still wakes every 20 µs while the goroutine is in a C call,
//     to take the P back: each APDU and each of pcscd's round trips is
//     one, so during a card's exchange it woke about every 70 µs, and
//     each wake-up cost processor time of its own and of the thread it
//     handed the P to. With the slack the kernel lets those sleeps run
//     on up to 1 ms. (recover k = 3: custos's own processor time 14.6 →
//     12.1 ms, median of 20 turns run in alternation; nanosleeps 120–170
//     → 27–42, context switches about 310 → 195.) Every timer of
//     custos's own is 25 ms or more; any may now fire up to 1 ms late.
//     Waiting for a card or a child does not depend on a timer.
//     cryptsetup inherits the slack, and on the paths custos runs it
//     sleeps on no timer.
//   - A collection once the heap has grown to five times what survived
//     the last one (GOGC=400) instead of twice: a command's heap is a few
//     megabytes, and the one collection a recover used to run cost about
//     2 ms. A long fleet pass still collects, with a heap bounded by five
//     times its live data.
func tune() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
}

// tuneForLogPass gives a pass over a whole log (log verify, log copy)
// back what tune took from it, each unless its environment variable says
// otherwise: every processor, as Verify digests the events on all of them
// (1,000,000 events: about half the time), and GOGC's default, as
// Verify's resident set is bounded by its live data and the heap a
// collection lets grow past it.
func tuneForLogPass() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.SetDefaultGOMAXPROCS()
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(100)
	}
}
