package escrow

import (
	"context"
	"errors"

	"custos.dev/custos/store"
)

// RollcallOptions tune Rollcall.
type RollcallOptions struct {
	// Cards is how many cards to check before stopping; 0 means all N.
	Cards int
}

// RollcallResult is what Rollcall found.
type RollcallResult struct {
	Ceremony *Record
	// Cards are the outcomes of the cards inserted, in order.
	Cards []CardOutcome
	// Missing are the ceremony's cards not presented.
	Missing []CardRef
	// Anchor is the log head after the results were logged.
	Anchor store.Head
}

// Rollcall has each custodian in turn prove that their card still opens
// its share and that the share matches its commitment. Nothing is
// combined. Each card's result is logged. Rollcall stops when every card
// (or opts.Cards of them) answered or ctx ends; cards not presented are
// listed in Missing.
func Rollcall(ctx context.Context, env *Env, opts RollcallOptions) (*RollcallResult, error) {
	return nil, errors.New("rollcall: not implemented yet")
}
