//go:build custos_failpoints

// This file is compiled only with -tags custos_failpoints, never into a
// normal build of custos: it exists for the crash tests of cmd/custos,
// which build a custos binary with the tag and kill it at each step of a
// ceremony.

package escrow

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// The environment variables that arm the kill failpoint.
const (
	// envFailpoint names the step (one of failpoints) at which the
	// process kills itself.
	envFailpoint = "CUSTOS_FAILPOINT"
	// envFailpointHit, when set, is N: the kill happens the N-th time the
	// step is reached (default 1), e.g. after the second card's share.
	envFailpointHit = "CUSTOS_FAILPOINT_HIT"
)

// init arms a real crash when CUSTOS_FAILPOINT names a step: at that step
// the process sends itself SIGKILL, as kill -9 would, so no deferred
// function runs, nothing is rolled back or wiped and no file is closed
// cleanly. An unknown step or a bad count exits with status 2 at once, so
// that a misspelt name never passes a crash test by not firing.
func init() {
	name, ok := os.LookupEnv(envFailpoint)
	if !ok || name == "" {
		return
	}
	if !slices.Contains(failpoints, name) {
		fmt.Fprintf(os.Stderr, "custos: %s=%q: not a failpoint (one of %v)\n", envFailpoint, name, failpoints)
		os.Exit(2)
	}
	hit := int64(1)
	if s, ok := os.LookupEnv(envFailpointHit); ok {
		n, err := strconv.ParseInt(s, 10, 32)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "custos: %s=%q: want a count of 1 or more\n", envFailpointHit, s)
			os.Exit(2)
		}
		hit = n
	}
	var seen atomic.Int64
	failpoint = func(step string) error {
		if step != name || seen.Add(1) != hit {
			return nil
		}
		fmt.Fprintf(os.Stderr, "failpoint %s (hit %d): kill -9\n", step, hit)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		for { // SIGKILL cannot be caught: the process ends here
			time.Sleep(time.Second)
		}
	}
}
