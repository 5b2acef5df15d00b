package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
)

type setCardStatusView struct {
	setCardView
	LastRollcall *time.Time `json:"last_rollcall,omitempty"`
	LastOK       bool       `json:"last_ok"`
	Reason       string     `json:"reason,omitempty"`
}

type setVolumeView struct {
	UUID       string `json:"uuid"`
	Ceremony   string `json:"ceremony"`
	Status     string `json:"status"`
	SetVersion int    `json:"set_version"`
	K          int    `json:"k"`
	N          int    `json:"n"`
	Live       int    `json:"live"`
	Margin     int    `json:"margin"`
}

type statusSetView struct {
	Set      setView             `json:"set"`
	Cards    []setCardStatusView `json:"cards"`
	Volumes  []setVolumeView     `json:"volumes"`
	Problems []string            `json:"problems"`
	Notes    []string            `json:"notes"`
}

func (v statusSetView) writeText(w io.Writer) error {
	v.Set.writeText(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  CARD\tCUSTODIAN\tLAST SET ROLLCALL")
	for _, c := range v.Cards {
		last := "never"
		if c.LastRollcall != nil {
			last = c.LastRollcall.UTC().Format(time.RFC3339)
			if c.LastOK {
				last += " ok"
			} else {
				last += " FAILED: " + c.Reason
			}
		}
		who := c.Custodian
		if who == "" {
			who = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", c.Serial, who, last)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d volumes enrolled (from the log; custos status DEVICE checks a volume's own copies)\n", len(v.Volumes))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  VOLUME\tCEREMONY\tSTATUS\tSET VERSION\tQUORUM\tLIVE\tMARGIN")
	for _, vol := range v.Volumes {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d of %d\t%d\t%d\n", vol.UUID, vol.Ceremony, vol.Status, vol.SetVersion, vol.K, vol.N, vol.Live, vol.Margin)
	}
	tw.Flush()
	for _, p := range v.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	for _, n := range v.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return nil
}

// statusSet is status --set NAME.
func (e *env) statusSet(c *cli.Context) error {
	if _, err := args(c, 0, 0, "no DEVICE with --set"); err != nil {
		return err
	}
	env, done, err := e.ceremonyEnv(c, "", logRequired)
	if err != nil {
		return err
	}
	defer done()
	rep, err := escrow.SetStatus(c.Context, env, c.String("set"))
	if err != nil {
		return err
	}
	v := statusSetView{Set: viewSet(rep.Set, rep.Fingerprint), Cards: []setCardStatusView{}, Volumes: []setVolumeView{},
		Problems: append([]string{}, rep.Problems...), Notes: append([]string{}, rep.Notes...)}
	for i, cs := range rep.Cards {
		sv := setCardStatusView{setCardView: v.Set.Cards[i], LastOK: cs.LastOK, Reason: escrow.SafeText(cs.Reason)}
		if !cs.LastRollcall.IsZero() {
			t := cs.LastRollcall
			sv.LastRollcall = &t
		}
		v.Cards = append(v.Cards, sv)
	}
	unfinished := false
	for _, vs := range rep.Volumes {
		v.Volumes = append(v.Volumes, setVolumeView{UUID: vs.UUID, Ceremony: vs.Ceremony, Status: vs.Status, SetVersion: vs.SetVersion,
			K: vs.K, N: vs.N, Live: vs.Live, Margin: vs.Margin})
		unfinished = unfinished || vs.Status == escrow.StatusOpen
	}
	if unfinished {
		e.say("custos: hint: custos status on a volume whose ceremony is unfinished names the command that finishes it")
	}
	return e.render(globalsOf(c).json, v)
}
