package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
)

type rotateSetVolumeView struct {
	Device    string        `json:"device"`
	OK        bool          `json:"ok"`
	Already   bool          `json:"already,omitempty"`
	Resumed   string        `json:"resumed,omitempty"`
	Old       *ceremonyView `json:"old,omitempty"`
	New       *ceremonyView `json:"new,omitempty"`
	OldKilled bool          `json:"old_killed"`
	ToWipe    []cardRefView `json:"to_wipe"`
	Problems  []string      `json:"problems"`
	Error     string        `json:"error,omitempty"`
}

type rotateSetView struct {
	Set        setView               `json:"set"`
	SetResumed bool                  `json:"set_resumed,omitempty"`
	NewCard    *outcomeView          `json:"new_card,omitempty"`
	Cards      []passCardView        `json:"cards"`
	Volumes    []rotateSetVolumeView `json:"volumes"`
	Failed     []string              `json:"failed"`
}

func (v rotateSetView) writeText(w io.Writer) error {
	if v.SetResumed {
		fmt.Fprintln(w, "an earlier run logged the set's new version: this run went on with its volumes")
	}
	v.Set.writeText(w)
	if len(v.Cards) > 0 {
		fmt.Fprintln(w, "one pass of the cards:")
		writePass(w, v.Cards)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  DEVICE\tOLD\tNEW\tRESULT")
	for _, vol := range v.Volumes {
		old, nw := "-", "-"
		if vol.Old != nil {
			old = vol.Old.ID
		}
		if vol.New != nil {
			nw = vol.New.ID
		}
		res := "rotated, old keyslot killed"
		switch {
		case !vol.OK:
			res = "FAILED: " + vol.Error
		case vol.Already:
			res = "on this version already"
		case !vol.OldKilled:
			res = "rotated, old keyslot NOT killed (see the problems)"
		}
		if vol.Resumed != "" && vol.OK {
			res += " (an unfinished rotation was " + vol.Resumed + " first)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", escapeDevice(vol.Device), old, nw, res)
	}
	tw.Flush()
	wipe := map[string]cardRefView{}
	for _, vol := range v.Volumes {
		for _, p := range vol.Problems {
			fmt.Fprintf(w, "problem: %s: %s\n", escapeDevice(vol.Device), p)
		}
		for _, c := range vol.ToWipe {
			wipe[c.Serial] = c
		}
	}
	for _, c := range wipe {
		fmt.Fprintf(w, "  to wipe   card %s (custodian %s): its retired shares open nothing now; wipe it (or destroy it) when it is at hand\n", c.Serial, c.Custodian)
	}
	fmt.Fprintf(w, "%d of %d volumes on set %s version %d\n", len(v.Volumes)-len(v.Failed), len(v.Volumes), v.Set.Name, v.Set.Version)
	return nil
}

// rotateSet is rotate --set NAME --replace OLD=NEW DEVICE...
func (e *env) rotateSet(c *cli.Context) error {
	devices, err := fleetArgs(c)
	if err != nil {
		return err
	}
	if err := refuseWith(c, "--set (one pass of k cards of the set authorises it)", "k", "n", "key-file", "wipe-wait", "allow-unattested"); err != nil {
		return err
	}
	repl := c.String("replace")
	oldS, newS, ok := strings.Cut(repl, "=")
	if !c.IsSet("replace") || !ok || oldS == "" || newS == "" {
		return usageErrorf(c, "rotate --set needs --replace OLD=NEW: the serial of the card that leaves and of the one that takes its place")
	}
	spec, err := parseCardSpec(c, newS)
	if err != nil {
		return err
	}
	if _, err := parseCardSpec(c, oldS); err != nil || strings.Contains(oldS, ":") {
		return usageErrorf(c, "--replace %q: OLD is a card's serial number", repl)
	}
	names := c.StringSlice("custodian")
	if len(names) > 1 {
		return usageErrorf(c, "with --set, --custodian names the new card's custodian: give it once")
	}
	env, done, err := e.ceremonyEnv(c, "", logWrite)
	if err != nil {
		return err
	}
	defer done()
	opts := escrow.RotateSetOptions{Set: c.String("set"), Old: oldS, New: spec.Serial, NewSlot: spec.Slot, Volumes: openVolumes(devices)}
	if len(names) == 1 {
		opts.NewCustodian = names[0]
	}
	res, err := escrow.RotateSet(c.Context, env, opts)
	if res == nil || res.Set == nil {
		return err
	}
	v := rotateSetView{Set: viewSet(res.Set, res.Fingerprint), SetResumed: res.SetResumed, Cards: viewPass(res.Cards),
		Volumes: []rotateSetVolumeView{}, Failed: []string{}}
	if res.NewCard != nil {
		o := viewOutcomes([]escrow.CardOutcome{*res.NewCard})[0]
		v.NewCard = &o
	}
	for _, rv := range res.Volumes {
		vv := rotateSetVolumeView{Device: rv.Device, OK: rv.Err == nil, Already: rv.Already, ToWipe: []cardRefView{}, Problems: []string{}, Error: errorText(rv.Err)}
		if r := rv.Result; r != nil {
			vv.Resumed, vv.Old, vv.New, vv.OldKilled = r.Resumed, viewRecord(r.Old), viewRecord(r.New), r.OldKilled
			vv.Problems = append(vv.Problems, r.Problems...)
			for _, c := range r.ToWipe {
				vv.ToWipe = append(vv.ToWipe, viewRef(c))
			}
		}
		if rv.Err != nil {
			v.Failed = append(v.Failed, rv.Device)
		}
		v.Volumes = append(v.Volumes, vv)
	}
	if rerr := e.render(globalsOf(c).json, v); rerr != nil {
		return rerr
	}
	return err
}
