package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
)

// custos rollcall: each custodian proves their card still opens its share
// of the volume; with --set, each card of a custodian set proves it still
// answers to its key (rollcallSet, rollcall_set.go).

// rollcallPrompts are the prompts rollcall asks, in order: their one
// definition, from which --help, the man page and the README are made.
var rollcallPrompts = []string{
	"for each card, in the order inserted: its PIN",
	"with --set: for each card of the set, in the order inserted: its PIN, to open a challenge sealed to its key",
}

func (e *env) rollcallCommand(ds docs) *cli.Command {
	return ds.add(&cli.Command{
		Name:      "rollcall",
		Usage:     "have each custodian prove their card still opens its share",
		ArgsUsage: "DEVICE | --set NAME",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "cards", Usage: "stop after `C` cards have answered (default: all n)"},
			setFlag("have each card of custodian set `NAME` prove it still answers to its key, touching no volume"),
		},
		Action: e.rollcall,
	}, doc{
		examples: []string{"custos rollcall /dev/sda2", "custos rollcall --set dc1"},
		prompts:  rollcallPrompts,
	})
}

type rollcallView struct {
	Ceremony *ceremonyView `json:"ceremony"`
	Cards    []outcomeView `json:"cards"`
	Missing  []cardRefView `json:"missing"`
	Upgraded []string      `json:"upgraded"`
	Problems []string      `json:"problems"`
	Anchor   string        `json:"anchor,omitempty"`
}

func (v rollcallView) writeText(w io.Writer) error {
	fmt.Fprintf(w, "rollcall of ceremony %s (%d of %d)\n", v.Ceremony.ID, v.Ceremony.K, v.Ceremony.N)
	writeOutcomes(w, v.Cards)
	for _, m := range v.Missing {
		fmt.Fprintf(w, "  absent    card %s, share %d (custodian %s)\n", m.Serial, m.Index, m.Custodian)
	}
	for _, u := range v.Upgraded {
		fmt.Fprintf(w, "  upgraded  %s to the version 2 format\n", u)
	}
	for _, p := range v.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	if v.Anchor != "" {
		fmt.Fprintf(w, "log head %s\n", v.Anchor)
	}
	return nil
}

func (e *env) rollcall(c *cli.Context) error {
	if c.IsSet("set") {
		return e.rollcallSet(c)
	}
	a, err := args(c, 1, 1, "DEVICE")
	if err != nil {
		return err
	}
	env, done, err := e.ceremonyEnv(c, a[0], logWrite)
	if err != nil {
		return err
	}
	defer done()
	res, err := escrow.Rollcall(c.Context, env, escrow.RollcallOptions{Cards: c.Int("cards")})
	if res == nil || len(res.Cards) == 0 {
		return err
	}
	v := rollcallView{Ceremony: viewRecord(res.Ceremony), Cards: viewOutcomes(res.Cards), Missing: []cardRefView{},
		Upgraded: append([]string{}, res.Upgraded...), Problems: append([]string{}, res.Problems...), Anchor: anchorString(res.Anchor)}
	for _, r := range res.Missing {
		v.Missing = append(v.Missing, viewRef(r))
	}
	if rerr := e.render(globalsOf(c).json, v); rerr != nil {
		return rerr
	}
	return err
}
