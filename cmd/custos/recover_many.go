package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
)

// passCardView is one card of a pass over many volumes.
type passCardView struct {
	Serial    string `json:"serial"`
	Reader    string `json:"reader"`
	Custodian string `json:"custodian,omitempty"`
	Opened    int    `json:"opened"`
	Volumes   int    `json:"volumes"`
	Problem   string `json:"problem,omitempty"`
}

func viewPass(cs []escrow.PassCard) []passCardView {
	out := []passCardView{}
	for _, c := range cs {
		out = append(out, passCardView{Serial: c.Serial, Reader: c.Reader, Custodian: escrow.SafeText(c.Custodian), Opened: c.Opened,
			Volumes: c.Volumes, Problem: errorText(c.Err)})
	}
	return out
}

func writePass(w io.Writer, cs []passCardView) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  CARD\tCUSTODIAN\tSHARES OPENED")
	for _, c := range cs {
		who := c.Custodian
		if who == "" {
			who = "-"
		}
		res := fmt.Sprintf("%d of %d volumes", c.Opened, c.Volumes)
		if c.Problem != "" {
			res += ": " + c.Problem
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", c.Serial, who, res)
	}
	tw.Flush()
}

type recoverManyVolumeView struct {
	Device     string        `json:"device"`
	OK         bool          `json:"ok"`
	Ceremony   *ceremonyView `json:"ceremony,omitempty"`
	Source     string        `json:"source,omitempty"`
	Keyslot    int           `json:"keyslot"`
	NewKeyslot int           `json:"new_keyslot"`
	Cards      []outcomeView `json:"cards"`
	Problems   []string      `json:"problems"`
	Anchor     string        `json:"anchor,omitempty"`
	Error      string        `json:"error,omitempty"`
}

type recoverManyView struct {
	Volumes []recoverManyVolumeView `json:"volumes"`
	Cards   []passCardView          `json:"cards"`
	Failed  []string                `json:"failed"`
}

func (v recoverManyView) writeText(w io.Writer) error {
	fmt.Fprintln(w, "one pass of the cards:")
	writePass(w, v.Cards)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  DEVICE\tCEREMONY\tNEW KEYSLOT\tRESULT")
	for _, vol := range v.Volumes {
		id, ks, res := "-", "-", "opens with the new key"
		if vol.Ceremony != nil {
			id = vol.Ceremony.ID
		}
		if vol.NewKeyslot >= 0 {
			ks = fmt.Sprint(vol.NewKeyslot)
		}
		if vol.Error != "" {
			res = "FAILED: " + vol.Error
			if vol.OK {
				res = "opens with the new key, but: " + vol.Error
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", escapeDevice(vol.Device), id, ks, res)
	}
	tw.Flush()
	for _, vol := range v.Volumes {
		for _, p := range vol.Problems {
			fmt.Fprintf(w, "problem: %s: %s\n", escapeDevice(vol.Device), p)
		}
	}
	opened := 0
	for _, vol := range v.Volumes {
		if vol.OK {
			opened++
		}
	}
	fmt.Fprintf(w, "%d of %d volumes open with the new key\n", opened, len(v.Volumes))
	return nil
}

// recoverMany is recover DEVICE DEVICE...: one pass of the cards.
func (e *env) recoverMany(c *cli.Context) error {
	devices, err := fleetArgs(c)
	if err != nil {
		return err
	}
	pbkdf, err := pbkdfOf(c)
	if err != nil {
		return err
	}
	key, err := e.keyFlag(c, "new-key-file")
	if err != nil {
		return err
	}
	defer key.Free()
	env, done, err := e.ceremonyEnv(c, "", logIfThere)
	if err != nil {
		return err
	}
	defer done()
	env.PBKDF = pbkdf
	res, err := escrow.RecoverMany(c.Context, env, escrow.RecoverManyOptions{Volumes: openVolumes(devices), NewKey: key.Bytes()})
	if res == nil {
		return err
	}
	v := recoverManyView{Volumes: []recoverManyVolumeView{}, Cards: viewPass(res.Cards), Failed: []string{}}
	for _, rv := range res.Volumes {
		vv := recoverManyVolumeView{Device: rv.Device, OK: rv.OK(), Keyslot: -1, NewKeyslot: -1, Cards: []outcomeView{}, Problems: []string{}, Error: errorText(rv.Err)}
		if r := rv.Result; r != nil {
			vv.Ceremony, vv.Source, vv.Keyslot, vv.NewKeyslot = viewRecord(r.Ceremony), r.Source, r.Keyslot, r.NewKeyslot
			vv.Cards, vv.Problems, vv.Anchor = viewOutcomes(r.Cards), append(vv.Problems, r.Problems...), anchorString(r.Anchor)
		}
		if rv.Err != nil {
			v.Failed = append(v.Failed, rv.Device)
		}
		v.Volumes = append(v.Volumes, vv)
	}
	recovered := 0
	for _, vv := range v.Volumes {
		if vv.OK {
			recovered++
		}
	}
	if recovered > 0 {
		e.say("%d volumes open with the new key; their recovery keys were combined on this machine: rotate them (custos rotate --set NAME --replace OLD=NEW DEVICE..., or custos rotate DEVICE)", recovered)
	}
	if rerr := e.render(globalsOf(c).json, v); rerr != nil {
		return rerr
	}
	return err
}
