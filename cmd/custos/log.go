package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
	"custos.dev/custos/store"
)

// custos log: check, show, copy and print the ceremony log (log verify,
// log show, log copy in logcopy.go, log transcript). It asks for nothing.

func (e *env) logCommand(ds docs) *cli.Command {
	logCmd := &cli.Command{
		Name:  "log",
		Usage: "check, show and print the ceremony log",
		Subcommands: []*cli.Command{
			ds.add(&cli.Command{
				Name:  "verify",
				Usage: "recompute the log's hash chain, check it against anchors, and verify again every card attestation it holds (against Yubico's roots and --attestation-roots)",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "anchor", Usage: "a head `HASH` recorded elsewhere (\"SEQ:HEX\", from a transcript, token or card); repeat for several"},
				},
				Action: e.logVerify,
			}, doc{examples: []string{
				"custos log verify",
				"custos log verify --anchor 12:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
				"custos --attestation-roots vcard-ca.pem log verify",
			}}),
			ds.add(&cli.Command{
				Name:      "show",
				Usage:     "show the log's events, or one ceremony's",
				ArgsUsage: "[CEREMONY]",
				Action:    e.logShow,
			}, doc{examples: []string{
				"custos log show",
				"custos --json log show 3f1c2a",
			}}),
			e.logCopyCommand(ds),
			ds.add(&cli.Command{
				Name:      "transcript",
				Usage:     "print a ceremony's transcript, fit to print and sign",
				ArgsUsage: "CEREMONY",
				Action:    e.logTranscript,
			}, doc{examples: []string{
				"custos log transcript 3f1c2a | lpr",
			}}),
		},
	}
	logCmd.Action = parentAction
	return ds.add(logCmd, doc{examples: []string{"custos log verify", "custos log show"}})
}

func classifyStore(err error) (int, string, bool) {
	{
		switch {
		case errors.Is(err, store.ErrBrokenChain), errors.Is(err, store.ErrIndex):
			return exitVerify, "keep this file as evidence; compare it with a backup and with the anchors in the LUKS2 token, the cards and the printed transcripts", true
		case errors.Is(err, store.ErrAnchor):
			return exitVerify, "the log was rewritten or rolled back after that anchor was recorded; keep this file as evidence", true
		case errors.Is(err, store.ErrInUse):
			return exitError, "another custos is using the log; wait for it to finish, then repeat the command", true
		case errors.Is(err, store.ErrNewerSchema):
			return exitError, "use the custos release that wrote this log", true
		case errors.Is(err, store.ErrNotLog):
			return exitError, "check --db: it must name a custos ceremony log", true
		}
		return 0, "", false
	}
}

// verifyResult is what log verify reports.
type verifyResult struct {
	OK      bool   `json:"ok"`
	Path    string `json:"path"`
	Events  uint64 `json:"events"`
	Head    string `json:"head"`
	Anchors int    `json:"anchors"`
	Problem string `json:"problem,omitempty"`
	// Attestations is what the log's attestation chains verified to
	// (absent when the chain itself is broken).
	Attestations *attestationsView `json:"attestations,omitempty"`
}

type attestationsView struct {
	Chains     []chainView `json:"chains"`
	Cards      int         `json:"cards"`
	Unattested int         `json:"unattested"`
	Problems   []string    `json:"problems"`
}

type chainView struct {
	Event       uint64 `json:"event"`
	Ceremony    string `json:"ceremony,omitempty"`
	Set         string `json:"set,omitempty"` // a set event's: "NAME version N"
	Serial      string `json:"serial"`
	Slot        string `json:"slot"`
	Fingerprint string `json:"fingerprint"`
	Attestation string `json:"attestation,omitempty"`
	Problem     string `json:"problem,omitempty"`
}

func (r verifyResult) writeText(w io.Writer) error {
	if r.Attestations == nil {
		if !r.OK {
			_, err := fmt.Fprintf(w, "log %s: BROKEN: %s\n", r.Path, r.Problem)
			return err
		}
		_, err := fmt.Fprintf(w, "log %s: ok\nevents  %d\nhead    %s\nanchors %d found\n", r.Path, r.Events, r.Head, r.Anchors)
		return err
	}
	status := "ok"
	if !r.OK {
		status = "chain ok, attestations FAILED"
	}
	fmt.Fprintf(w, "log %s: %s\nevents  %d\nhead    %s\nanchors %d found\n", r.Path, status, r.Events, r.Head, r.Anchors)
	a := r.Attestations
	fmt.Fprintf(w, "attestations %d chains, %d ceremony cards attested, %d unattested (allowed by their ceremony)\n", len(a.Chains), a.Cards, a.Unattested)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range a.Chains {
		what := c.Attestation
		if c.Problem != "" {
			what = "FAILED: " + c.Problem
		}
		event := fmt.Sprint(c.Event)
		if c.Set != "" {
			event += " (set " + c.Set + ")"
		}
		fmt.Fprintf(tw, "  event %s\tcard %s\tslot %s\t%s\n", event, c.Serial, c.Slot, what)
	}
	tw.Flush()
	for _, p := range a.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	return nil
}

func (e *env) logVerify(c *cli.Context) error {
	tuneForLogPass()
	if _, err := args(c, 0, 0, ""); err != nil {
		return err
	}
	var anchors []store.Head
	for _, s := range c.StringSlice("anchor") {
		h, err := store.ParseHead(s)
		if err != nil {
			return usageErrorf(c, "--anchor %q: %v", s, err)
		}
		anchors = append(anchors, h)
	}
	roots, err := attestationRoots(globalsOf(c).roots)
	if err != nil {
		return err
	}
	l, err := e.openLog(c, logRequired)
	if err != nil {
		return err
	}
	defer l.Close()
	// Every attestation the log records is verified again, beside the
	// chain's verification (two read transactions of the same log: the
	// pass over the attestation events used the core the chain's
	// verification left idle), and reported only if the chain holds.
	// A log whose chain does not hold was never read by the attestation
	// pass before: whatever it makes of one, even a panic, is dropped.
	type attested struct {
		rep      *escrow.AttestationsReport
		err      error
		panicked any
	}
	attestations := make(chan attested, 1)
	go func() {
		var at attested
		defer func() {
			at.panicked = recover()
			attestations <- at
		}()
		at.rep, at.err = escrow.VerifyAttestations(&escrow.Env{Log: l, Roots: roots})
	}()
	rep, verr := l.Verify(anchors...)
	at := <-attestations
	if verr == nil && at.panicked != nil {
		panic(at.panicked)
	}
	r := verifyResult{OK: verr == nil, Path: l.Path(), Events: rep.Events, Anchors: rep.Anchors}
	if rep.Head != (store.Head{}) {
		r.Head = rep.Head.String()
	}
	if verr == nil {
		// The chain holds: its attestations' verdict stands.
		ar, aerr := at.rep, at.err
		if ar != nil {
			av := &attestationsView{Chains: []chainView{}, Cards: ar.Cards, Unattested: ar.Unattested, Problems: append([]string{}, ar.Problems...)}
			for _, ch := range ar.Chains {
				av.Chains = append(av.Chains, chainView{Event: ch.Seq, Ceremony: ch.Ceremony, Set: ch.Set, Serial: ch.Serial, Slot: ch.Slot,
					Fingerprint: ch.Fingerprint, Attestation: ch.Summary, Problem: ch.Problem})
			}
			r.Attestations = av
		}
		if aerr != nil {
			r.OK = false
			r.Problem = message(aerr)
			if ar == nil {
				return aerr
			}
			if err := e.render(globalsOf(c).json, r); err != nil {
				return err
			}
			return aerr
		}
	}
	if verr != nil {
		r.Problem = message(verr)
		if globalsOf(c).json {
			if err := e.render(true, r); err != nil {
				return err
			}
		}
		return verr
	}
	return e.render(globalsOf(c).json, r)
}

// eventView is one event as log show prints it.
type eventView struct {
	Seq      uint64          `json:"seq"`
	Time     time.Time       `json:"time"`
	Actor    string          `json:"actor"`
	Type     string          `json:"type"`
	Ceremony string          `json:"ceremony,omitempty"`
	Body     json.RawMessage `json:"body,omitempty"`
	Prev     string          `json:"prev"`
	Hash     string          `json:"hash"`
}

type eventList struct {
	Events []eventView `json:"events"`
}

func (l eventList) writeText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tTYPE\tACTOR\tCEREMONY\tHASH")
	for _, ev := range l.Events {
		cer := ev.Ceremony
		if cer == "" {
			cer = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", ev.Seq, ev.Time.UTC().Format(time.RFC3339), ev.Type, ev.Actor, cer, ev.Hash)
	}
	return tw.Flush()
}

func (e *env) logShow(c *cli.Context) error {
	a, err := args(c, 0, 1, "CEREMONY")
	if err != nil {
		return err
	}
	ceremony := ""
	if len(a) == 1 {
		ceremony = a[0]
	}
	l, err := e.openLog(c, logRequired)
	if err != nil {
		return err
	}
	defer l.Close()
	if ceremony != "" {
		if _, err := l.Ceremony(ceremony); err != nil {
			return ceremonyNotFound(ceremony, err)
		}
	}
	list := eventList{Events: []eventView{}}
	err = l.Events(ceremony, func(ev store.Event) error {
		list.Events = append(list.Events, eventView{
			Seq: ev.Seq, Time: ev.Time, Actor: ev.Actor, Type: ev.Type, Ceremony: ev.Ceremony,
			Body: append(json.RawMessage(nil), ev.Body...), Prev: ev.Prev.String(), Hash: ev.Hash.String(),
		})
		return nil
	})
	if err != nil {
		return err
	}
	return e.render(globalsOf(c).json, list)
}

func ceremonyNotFound(id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return &cliError{code: exitError, err: fmt.Errorf("no ceremony %s in the log", id),
			hint: "'custos log show' lists every event with its ceremony"}
	}
	return err
}

func (e *env) logTranscript(c *cli.Context) error {
	a, err := args(c, 1, 1, "CEREMONY")
	if err != nil {
		return err
	}
	if globalsOf(c).json {
		return usageErrorf(c, "a transcript is text only; 'custos --json log show %s' gives the same events as data", a[0])
	}
	l, err := e.openLog(c, logRequired)
	if err != nil {
		return err
	}
	defer l.Close()
	if _, err := l.Ceremony(a[0]); err != nil {
		return ceremonyNotFound(a[0], err)
	}
	return l.Transcript(e.stdout, a[0])
}
