package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
)

// enrollSetVolumeView is one volume of enroll --set.
type enrollSetVolumeView struct {
	Device   string        `json:"device"`
	OK       bool          `json:"ok"`
	Already  bool          `json:"already,omitempty"`
	Resumed  string        `json:"resumed,omitempty"`
	Ceremony *ceremonyView `json:"ceremony,omitempty"`
	TokenID  int           `json:"token_id"`
	Anchor   string        `json:"anchor,omitempty"`
	Error    string        `json:"error,omitempty"`
}

type enrollSetView struct {
	Set     setRefView            `json:"set"`
	K       int                   `json:"k"`
	N       int                   `json:"n"`
	Volumes []enrollSetVolumeView `json:"volumes"`
	Failed  []string              `json:"failed"`
}

func (v enrollSetView) writeText(w io.Writer) error {
	fmt.Fprintf(w, "enrolled to custodian set %s version %d: %d of %d\n", v.Set.Name, v.Set.Version, v.K, v.N)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  DEVICE\tCEREMONY\tKEYSLOT\tRESULT")
	for _, vol := range v.Volumes {
		id, ks, res := "-", "-", "enrolled"
		if vol.Ceremony != nil {
			id, ks = vol.Ceremony.ID, fmt.Sprint(vol.Ceremony.Keyslot)
		}
		switch {
		case !vol.OK:
			res = "FAILED: " + vol.Error
		case vol.Already:
			res = "enrolled already"
		case vol.Resumed != "":
			res = "enrolled (an unfinished enrollment was " + vol.Resumed + " first)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", escapeDevice(vol.Device), id, ks, res)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d of %d volumes enrolled", len(v.Volumes)-len(v.Failed), len(v.Volumes))
	if len(v.Failed) > 0 {
		fmt.Fprintf(w, "; not enrolled: ")
		for i, d := range v.Failed {
			if i > 0 {
				fmt.Fprint(w, ", ")
			}
			fmt.Fprint(w, escapeDevice(d))
		}
	}
	fmt.Fprintln(w)
	return nil
}

// escapeDevice shows a device name from the command line as typed, made
// safe for a terminal.
func escapeDevice(d string) string { return escrow.SafeText(d) }

// enrollSet is enroll --set NAME DEVICE...: every device enrolled to the
// set, no card present.
func (e *env) enrollSet(c *cli.Context) error {
	devices, err := fleetArgs(c)
	if err != nil {
		return err
	}
	if err := refuseWith(c, "--set (the set names the cards)", "n", "custodian", "allow-unattested"); err != nil {
		return err
	}
	k := 0
	if c.IsSet("k") {
		if k = c.Int("k"); k < 2 || k > 255 {
			return usageErrorf(c, "-k %d: need 2 <= k <= the set's cards", k)
		}
	}
	env, done, err := e.ceremonyEnv(c, "", logWrite)
	if err != nil {
		return err
	}
	defer done()
	env.Cards = nil // no card is asked for, no reader watched
	vols := openVolumes(devices)
	keys, err := e.keysFor(c, vols)
	defer keys.Free()
	if err != nil {
		return err
	}
	bar := newProgress(e.stderr, len(vols))
	env.Prompt = barPrompter{escrowPrompter{e.prompt}, bar}
	res, err := escrow.EnrollSet(c.Context, env, escrow.EnrollSetOptions{Set: c.String("set"), K: k, Volumes: vols,
		Progress: func(done, total int, device string) { bar.set(done, device) }})
	bar.finish()
	if res == nil {
		return err
	}
	ref, rerr := res.Set.Ref()
	if rerr != nil {
		return rerr
	}
	v := enrollSetView{Set: *viewSetRef(ref), K: res.K, N: len(res.Set.Cards), Volumes: []enrollSetVolumeView{}, Failed: []string{}}
	for _, vr := range res.Volumes {
		vv := enrollSetVolumeView{Device: vr.Device, OK: vr.OK(), Already: vr.Already, Resumed: vr.Resumed, Ceremony: viewRecord(vr.Ceremony),
			TokenID: vr.TokenID, Anchor: anchorString(vr.Anchor), Error: errorText(vr.Err)}
		if !vv.OK {
			v.Failed = append(v.Failed, vr.Device)
		}
		v.Volumes = append(v.Volumes, vv)
	}
	if rerr := e.render(globalsOf(c).json, v); rerr != nil {
		return rerr
	}
	return err
}
