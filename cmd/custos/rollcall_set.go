package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
)

type rollcallSetView struct {
	Set     setRefView    `json:"set"`
	Cards   []outcomeView `json:"cards"`
	Missing []setCardView `json:"missing"`
	Anchor  string        `json:"anchor,omitempty"`
}

func (v rollcallSetView) writeText(w io.Writer) error {
	fmt.Fprintf(w, "rollcall of custodian set %s version %d\n", v.Set.Name, v.Set.Version)
	writeOutcomes(w, v.Cards)
	for _, m := range v.Missing {
		fmt.Fprintf(w, "  absent    card %s (custodian %s)\n", m.Serial, m.Custodian)
	}
	if v.Anchor != "" {
		fmt.Fprintf(w, "log head %s\n", v.Anchor)
	}
	return nil
}

// rollcallSet is rollcall --set NAME: each card of the set proves it still
// answers to its key; no volume is touched.
func (e *env) rollcallSet(c *cli.Context) error {
	if _, err := args(c, 0, 0, "no DEVICE with --set"); err != nil {
		return err
	}
	env, done, err := e.ceremonyEnv(c, "", logWrite)
	if err != nil {
		return err
	}
	defer done()
	res, err := escrow.RollcallSet(c.Context, env, escrow.SetRollcallOptions{Set: c.String("set"), Cards: c.Int("cards")})
	if res == nil || res.Set == nil || len(res.Cards) == 0 {
		return err
	}
	ref, rerr := res.Set.Ref()
	if rerr != nil {
		return rerr
	}
	v := rollcallSetView{Set: *viewSetRef(ref), Cards: viewOutcomes(res.Cards), Missing: []setCardView{}, Anchor: anchorString(res.Anchor)}
	for _, m := range res.Missing {
		v.Missing = append(v.Missing, setCardView{Serial: m.Serial, Slot: fmt.Sprintf("%x", m.Slot), Custodian: escrow.SafeText(m.Custodian)})
	}
	if rerr := e.render(globalsOf(c).json, v); rerr != nil {
		return rerr
	}
	return err
}
