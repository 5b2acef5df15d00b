package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
)

// custos status: the volume's ceremony, its live shares against the
// threshold and unfinished work; with --set, a custodian set and every
// volume enrolled to it (statusSet, status_set.go). It asks for nothing.

func (e *env) statusCommand(ds docs) *cli.Command {
	return ds.add(&cli.Command{
		Name:      "status",
		Usage:     "show the volume's ceremony, live shares against the threshold, and unfinished work",
		ArgsUsage: "DEVICE | --set NAME",
		Flags: []cli.Flag{
			setFlag("show custodian set `NAME`, its cards' last rollcalls and every volume enrolled to it with its margin (from the log)"),
		},
		Action: e.status,
	}, doc{examples: []string{
		"custos status /dev/sda2",
		"custos --json status disk.img",
		"custos status --set dc1",
	}})
}

type cardStatusView struct {
	cardRefView
	LastRollcall *time.Time `json:"last_rollcall,omitempty"`
	LastOK       bool       `json:"last_ok"`
	Reason       string     `json:"reason,omitempty"`
}

type unfinishedView struct {
	Ceremony string `json:"ceremony"`
	Kind     string `json:"kind"`
	Step     string `json:"step"`
	Command  string `json:"command"`
}

type copyView struct {
	Copy     string `json:"copy"`
	Ceremony string `json:"ceremony,omitempty"`
	Version  int    `json:"version,omitempty"`
	Status   string `json:"status,omitempty"`
	Anchor   string `json:"anchor,omitempty"`
	Problem  string `json:"problem,omitempty"`
}

type statusView struct {
	Device       string           `json:"device"`
	UUID         string           `json:"uuid"`
	LUKSVersion  int              `json:"luks_version"`
	Ceremony     *ceremonyView    `json:"ceremony"`
	Source       string           `json:"source,omitempty"`
	Confirmed    bool             `json:"confirmed"`
	Copies       []copyView       `json:"copies"`
	Notes        []string         `json:"notes"`
	KeyslotInUse bool             `json:"keyslot_in_use"`
	Cards        []cardStatusView `json:"cards"`
	Live         int              `json:"live"`
	Margin       int              `json:"margin"`
	Unfinished   *unfinishedView  `json:"unfinished,omitempty"`
	Problems     []string         `json:"problems"`
}

func (v statusView) writeText(w io.Writer) error {
	fmt.Fprintf(w, "volume %s (LUKS%d, uuid %s)\n", v.Device, v.LUKSVersion, v.UUID)
	if v.Ceremony == nil {
		fmt.Fprintln(w, "no custos ceremony")
	} else {
		confirmed := "confirmed by two copies"
		if !v.Confirmed {
			confirmed = "NOT confirmed by two copies"
		}
		fmt.Fprintf(w, "ceremony %s (from %s, %s)\n  quorum   %d of %d\n  keyslot  %d", v.Ceremony.ID, v.Source, confirmed, v.Ceremony.K, v.Ceremony.N, v.Ceremony.Keyslot)
		if !v.KeyslotInUse {
			fmt.Fprint(w, " (EMPTY)")
		}
		fmt.Fprintf(w, "\n  live     %d shares, margin %d (cards that may still be lost)\n", v.Live, v.Margin)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  SHARE\tCARD\tCUSTODIAN\tLAST ROLLCALL")
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
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", c.Index, c.Serial, c.Custodian, last)
		}
		tw.Flush()
		cs := make([]cardRefView, 0, len(v.Cards))
		for _, c := range v.Cards {
			cs = append(cs, c.cardRefView)
		}
		writeAttestations(w, cs)
	}
	if len(v.Copies) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  COPY\tCEREMONY\tFORMAT\tSTATUS\tANCHOR")
		for _, c := range v.Copies {
			status, anchor := c.Status, c.Anchor
			if status == "" {
				status = "-"
			}
			if anchor == "" {
				anchor = "-"
			}
			if c.Problem != "" {
				status += " (" + c.Problem + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\tv%d\t%s\t%s\n", c.Copy, c.Ceremony, c.Version, status, anchor)
		}
		tw.Flush()
	}
	if v.Unfinished != nil {
		fmt.Fprintf(w, "unfinished %s %s: %s\n  finish or undo it with: %s\n", v.Unfinished.Kind, v.Unfinished.Ceremony, v.Unfinished.Step, v.Unfinished.Command)
	}
	for _, p := range v.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	for _, n := range v.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return nil
}

func (e *env) status(c *cli.Context) error {
	if c.IsSet("set") {
		return e.statusSet(c)
	}
	a, err := args(c, 1, 1, "DEVICE")
	if err != nil {
		return err
	}
	env, done, err := e.ceremonyEnv(c, a[0], logIfThere)
	if err != nil {
		return err
	}
	defer done()
	rep, err := escrow.Status(c.Context, env)
	if rep == nil {
		return err
	}
	v := statusView{Device: rep.Device, UUID: rep.UUID, LUKSVersion: rep.LUKSVersion, Ceremony: viewRecord(rep.Ceremony),
		Source: rep.Source, Confirmed: rep.Confirmed, Copies: []copyView{}, Notes: append([]string{}, rep.Notes...),
		KeyslotInUse: rep.KeyslotInUse, Cards: []cardStatusView{}, Live: rep.Live, Margin: rep.Margin,
		Problems: append([]string{}, rep.Problems...)}
	if v.Ceremony != nil {
		v.Ceremony.Status = rep.Status
	}
	v.Notes = append(v.Notes, statusAdvice(rep)...)
	for _, c := range rep.Copies {
		v.Copies = append(v.Copies, copyView{Copy: c.Copy, Ceremony: c.Ceremony, Version: c.Version, Status: c.Status,
			Anchor: anchorString(c.Anchor), Problem: escrow.SafeText(c.Problem)})
	}
	for _, cs := range rep.Cards {
		sv := cardStatusView{cardRefView: viewRef(cs.RecordCard), LastOK: cs.LastOK, Reason: escrow.SafeText(cs.Reason)}
		sv.Attestation = attestationText(cs.Attestation)
		if !cs.LastRollcall.IsZero() {
			t := cs.LastRollcall
			sv.LastRollcall = &t
		}
		v.Cards = append(v.Cards, sv)
	}
	if u := rep.Unfinished; u != nil {
		v.Unfinished = &unfinishedView{Ceremony: u.Ceremony, Kind: u.Kind, Step: u.Step, Command: finishCommand(u, rep.Device)}
	}
	if rerr := e.render(globalsOf(c).json, v); rerr != nil {
		return rerr
	}
	return err
}

// finishCommand is the command that finishes or undoes an unfinished
// ceremony on device: the same command again (a fleet enrollment with its
// set).
func finishCommand(u *escrow.Unfinished, device string) string {
	// The set's name comes from a copy: filtered like every such text.
	return ceremonyCommand(u.Kind, escrow.SafeText(u.Set), device)
}

// statusAdvice is what a status report calls for, as notes: the command
// that upgrades copies in the version 1 format, and the fleet rotation a
// volume was left out of.
func statusAdvice(rep *escrow.StatusReport) []string {
	var notes []string
	for _, name := range rep.Outdated {
		notes = append(notes, fmt.Sprintf("%s is in the version 1 format: run custos rollcall %s to upgrade it", name, rep.Device))
	}
	if rec := rep.Ceremony; rep.SetMovedTo > 0 && rec != nil && rec.Set != nil {
		// The set's name comes from a copy: filtered like every such text.
		set := escrow.SafeText(rec.Set.Name)
		notes = append(notes, fmt.Sprintf("set %s is at version %d: rerun the fleet rotation that made it with this volume (custos rotate --set %s --replace OLD=NEW %s)",
			set, rep.SetMovedTo, set, rep.Device))
	}
	return notes
}
