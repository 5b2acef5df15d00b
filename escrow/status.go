package escrow

import (
	"context"
	"errors"
	"time"
)

// StatusReport is what Status found.
type StatusReport struct {
	Device      string
	UUID        string
	LUKSVersion int
	// Ceremony is the volume's current ceremony, nil when none.
	Ceremony *Record
	// Source is where it was read: "token", "log" or "token+log".
	Source string
	// KeyslotInUse tells whether the ceremony's keyslot holds a key.
	KeyslotInUse bool
	// Cards are the ceremony's cards with their last rollcall.
	Cards []CardStatus
	// Live counts the shares not known to be lost (no failed last
	// rollcall); Margin is Live - K: how many more cards may be lost
	// before the quorum is.
	Live, Margin int
	// Unfinished is an interrupted enroll or rotate, nil when none.
	Unfinished *Unfinished
	// Problems lists what is wrong: copies that disagree, a missing
	// token or keyslot, and so on. Empty when all is well.
	Problems []string
}

// CardStatus is one card of a ceremony with its last rollcall.
type CardStatus struct {
	CardRef
	// LastRollcall is when the card last answered a rollcall for this
	// ceremony (zero if never); LastOK whether that rollcall succeeded.
	LastRollcall time.Time
	LastOK       bool
	// Reason is why the last rollcall failed.
	Reason string
}

// Unfinished is a ceremony interrupted before its end.
type Unfinished struct {
	Ceremony string
	Kind     string // "enroll" or "rotate"
	// Step describes how far it got.
	Step string
	// Command is the command that finishes or undoes it.
	Command string
}

// Status reports the volume's ceremony, k and n, each card's last
// rollcall, the live shares against the threshold, and any unfinished
// ceremony with the command that finishes it. It needs no card and no
// secret.
func Status(ctx context.Context, env *Env) (*StatusReport, error) {
	return nil, errors.New("status: not implemented yet")
}
