package main

// The timer slack is set by a C constructor, which the C library runs
// before main, and so before Go's runtime starts its first thread (the
// monitor, sysmon, which inherits it): Go code, even an init function,
// runs too late for that thread. Why custos wants it: see tune.

/*
#include <sys/prctl.h>

// CUSTOS_TIMER_SLACK_NS is the timer slack custos runs with, 1 ms.
#define CUSTOS_TIMER_SLACK_NS 1000000UL

static long custosTimerSlackWas = -1;
static long custosTimerSlackErr;

__attribute__((constructor)) static void custosSetTimerSlack(void) {
	custosTimerSlackWas = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
	if (custosTimerSlackWas >= 0 && (unsigned long)custosTimerSlackWas >= CUSTOS_TIMER_SLACK_NS)
		return; // already as slack or slacker (systemd's TimerSlackNSec=, say): leave it
	if (prctl(PR_SET_TIMERSLACK, CUSTOS_TIMER_SLACK_NS, 0, 0, 0) != 0)
		custosTimerSlackErr = 1;
}

static long custosTimerSlack(long *was, long *failed) {
	*was = custosTimerSlackWas;
	*failed = custosTimerSlackErr;
	return (long)CUSTOS_TIMER_SLACK_NS;
}
*/
import "C"

import (
	"fmt"
	"time"
)

// timerSlackNote says, for --debug, what the constructor did.
func timerSlackNote() string {
	var was, failed C.long
	want := time.Duration(C.custosTimerSlack(&was, &failed))
	switch {
	case failed != 0:
		return fmt.Sprintf("timer slack not set to %v: prctl PR_SET_TIMERSLACK failed", want)
	case was < 0:
		return fmt.Sprintf("timer slack %v (the kernel did not say what it was)", want)
	case time.Duration(was) >= want:
		return fmt.Sprintf("timer slack left at %v", time.Duration(was))
	default:
		return fmt.Sprintf("timer slack %v, was %v", want, time.Duration(was))
	}
}
