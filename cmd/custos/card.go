package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/cards"
	"custos.dev/custos/escrow"
	"custos.dev/custos/store"
)

// custos card: list, inspect and initialise custody cards (card list,
// card status, card init).

// cardInitPrompts are the prompts card init asks, in order: their one
// definition, from which --help, the man page and the README are made.
var cardInitPrompts = []string{
	"with --ask-current: the card's current PIN, then its current PUK",
	"new PIN, then the new PIN again",
	"new PUK, then the new PUK again",
}

// readerFlag is --reader.
func readerFlag() cli.Flag {
	return &cli.StringFlag{Name: "reader", Usage: "use the reader whose name contains `R` (default: the only card present)"}
}

func (e *env) cardCommand(ds docs) *cli.Command {
	card := &cli.Command{
		Name:  "card",
		Usage: "list, inspect and initialise custody cards",
		Subcommands: []*cli.Command{
			ds.add(&cli.Command{
				Name:   "list",
				Usage:  "list the card readers and the cards in them",
				Action: e.cardList,
			}, doc{examples: []string{
				"custos card list",
				"custos --json card list",
			}}),
			ds.add(&cli.Command{
				Name:   "status",
				Usage:  "show a card: serial, PIN and PUK tries left, custody keys",
				Flags:  []cli.Flag{readerFlag()},
				Action: e.cardStatus,
			}, doc{examples: []string{
				"custos card status",
				"custos card status --reader 'Virtual PCD 00 01'",
			}}),
			ds.add(&cli.Command{
				Name:  "init",
				Usage: "initialise a custody card: new PIN, PUK and management key, and a key generated on the card",
				Description: "refuses a card still using the factory PIN, PUK or management key once initialised; " +
					"the new management key is random and stored PIN-protected on the card; " +
					"the key's attestation is checked against Yubico's PIV CA and any --attestation-roots",
				Flags: []cli.Flag{
					readerFlag(),
					&cli.StringFlag{Name: "slot", Value: "82", Usage: "retired key-management `SLOT` (82-95) for the custody key"},
					&cli.StringFlag{Name: "pin-policy", Value: "always", Usage: "when the card asks for the PIN: always or once"},
					&cli.StringFlag{Name: "touch-policy", Value: "never", Usage: "when the card asks for a touch: never, always or cached"},
					&cli.StringFlag{Name: "custodian", Usage: "the custodian `NAME` recorded with the card"},
					&cli.StringFlag{Name: "attestation-roots", Usage: "PEM `FILE` of extra attestation roots", TakesFile: true},
					&cli.BoolFlag{Name: "ask-current", Usage: "the card's PIN and PUK are no longer the factory ones: ask for them first"},
				},
				Action: e.cardInit,
			}, doc{
				examples: []string{
					"custos card init --custodian alice",
					"custos card init --reader 'Virtual PCD 00 00' --slot 83 --touch-policy cached",
					`printf '%s\n' "$pin" "$pin" "$puk" "$puk" | custos card init --custodian bob`,
				},
				prompts: cardInitPrompts,
			}),
		},
	}
	card.Action = parentAction
	return ds.add(card, doc{examples: []string{"custos card list", "custos card init --custodian alice"}})
}

func classifyCards(err error) (int, string, bool) {
	{
		var pe *cards.PINError
		switch {
		case errors.As(err, &pe):
			return exitError, fmt.Sprintf("%d tries left before the card blocks; repeat the step with the right one", pe.Retries), true
		case errors.Is(err, cards.ErrAttestation):
			return exitVerify, "", true
		}
		// The cards package's sentinels say what to do in their own words.
		return 0, "", false
	}
}

type readerView struct {
	Name    string `json:"name"`
	Present bool   `json:"present"`
	Serial  uint32 `json:"serial,omitempty"`
	ATR     string `json:"atr,omitempty"`
}

type readerList struct {
	Readers []readerView `json:"readers"`
}

func (l readerList) writeText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "READER\tCARD\tSERIAL")
	for _, r := range l.Readers {
		card, serial := "empty", "-"
		if r.Present {
			card = "present"
			if r.Serial != 0 {
				serial = fmt.Sprint(r.Serial)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, card, serial)
	}
	return tw.Flush()
}

func (e *env) cardList(c *cli.Context) error {
	if _, err := args(c, 0, 0, ""); err != nil {
		return err
	}
	rs, err := cards.Readers(c.Context)
	if err != nil {
		return withHint(err, exitError, "is pcscd running? (systemctl start pcscd)")
	}
	l := readerList{Readers: []readerView{}}
	for _, r := range rs {
		v := readerView{Name: r.Name, Present: r.Present, Serial: r.Serial}
		if len(r.ATR) > 0 {
			v.ATR = hex.EncodeToString(r.ATR)
		}
		l.Readers = append(l.Readers, v)
	}
	return e.render(globalsOf(c).json, l)
}

// pickReader returns the reader named by --reader (a substring of its
// name), or the only reader holding a card.
func pickReader(ctx context.Context, want string) (string, error) {
	rs, err := cards.Readers(ctx)
	if err != nil {
		return "", withHint(err, exitError, "is pcscd running? (systemctl start pcscd)")
	}
	var with []string
	for _, r := range rs {
		if want != "" && strings.Contains(r.Name, want) {
			if !r.Present {
				return "", &cliError{code: exitError, err: fmt.Errorf("no card in reader %q", r.Name), hint: "insert the card and repeat the command"}
			}
			return r.Name, nil
		}
		if want == "" && r.Present {
			with = append(with, r.Name)
		}
	}
	switch {
	case want != "":
		return "", &cliError{code: exitError, err: fmt.Errorf("no reader matches %q", want), hint: "'custos card list' names the readers"}
	case len(with) == 0:
		return "", &cliError{code: exitError, err: errors.New("no card in any reader"), hint: "insert the card and repeat the command"}
	case len(with) > 1:
		return "", &cliError{code: exitError, err: fmt.Errorf("cards in %d readers: %s", len(with), strings.Join(with, ", ")),
			hint: "choose one with --reader R"}
	}
	return with[0], nil
}

type slotView struct {
	Slot          string `json:"slot"`
	Fingerprint   string `json:"fingerprint"`
	Ceremony      string `json:"ceremony,omitempty"`
	Volume        string `json:"volume,omitempty"`
	Index         int    `json:"index,omitempty"`
	K             int    `json:"k,omitempty"`
	N             int    `json:"n,omitempty"`
	Version       int    `json:"version,omitempty"`
	Anchor        string `json:"anchor,omitempty"`
	AnchorChecked bool   `json:"anchor_checked,omitempty"`
	AnchorProblem string `json:"anchor_problem,omitempty"`
	Problem       string `json:"problem,omitempty"`
}

type cardView struct {
	Reader   string `json:"reader"`
	Serial   uint32 `json:"serial"`
	Firmware string `json:"firmware"`
	// PINTries and PUKTries are the tries left; null when the card does
	// not tell (the PUK's, before firmware 5.3).
	PINTries *int       `json:"pin_tries"`
	PUKTries *int       `json:"puk_tries"`
	Slots    []slotView `json:"slots"`
}

// triesText is a count of tries left, or "unknown".
func triesText(n *int) string {
	if n == nil {
		return "unknown"
	}
	return fmt.Sprint(*n)
}

func (v cardView) writeText(w io.Writer) error {
	fmt.Fprintf(w, "reader    %s\nserial    %d\nfirmware  %s\npin tries %s\npuk tries %s\n",
		v.Reader, v.Serial, v.Firmware, triesText(v.PINTries), triesText(v.PUKTries))
	if len(v.Slots) == 0 {
		_, err := fmt.Fprintln(w, "custody   none (run 'custos card init')")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tKEY FINGERPRINT\tCEREMONY\tSHARE\tANCHOR")
	for _, s := range v.Slots {
		cer, share, anchor := "-", "none", "-"
		if s.Ceremony != "" {
			cer = s.Ceremony
			share = fmt.Sprintf("%d of %d (k=%d)", s.Index, s.N, s.K)
		}
		switch {
		case s.Problem != "":
			share = "unreadable: " + s.Problem
		case s.Version == 1:
			anchor = "none (version 1 certificate: run custos rollcall to upgrade it)"
		case s.Anchor != "" && s.AnchorProblem != "":
			anchor = s.Anchor + " FAILS: " + s.AnchorProblem
		case s.Anchor != "" && s.AnchorChecked:
			anchor = s.Anchor + " (in the log)"
		case s.Anchor != "":
			anchor = s.Anchor + " (not checked: no log holds its ceremony)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Slot, s.Fingerprint, cer, share, anchor)
	}
	return tw.Flush()
}

func (e *env) cardStatus(c *cli.Context) error {
	if _, err := args(c, 0, 0, ""); err != nil {
		return err
	}
	reader, err := pickReader(c.Context, c.String("reader"))
	if err != nil {
		return err
	}
	card, err := cards.Open(reader)
	if err != nil {
		return err
	}
	defer card.Close()
	// The tries first: GET METADATA, or an empty VERIFY that tells them
	// only while the PIN is not verified on this connection.
	pin, puk, err := card.Tries()
	if err != nil {
		return err
	}
	l, err := e.openLog(c, logIfThere)
	if err != nil {
		return err
	}
	env := &escrow.Env{}
	if l != nil {
		defer l.Close()
		env.Log = l
	}
	slots, err := escrow.DescribeCard(env, card)
	if err != nil {
		return err
	}
	v := cardView{Reader: reader, Serial: card.Serial(), Firmware: card.Version(), Slots: []slotView{}}
	var bad []string
	if pin >= 0 {
		v.PINTries = &pin
	}
	if puk >= 0 {
		v.PUKTries = &puk
	}
	for _, s := range slots {
		sv := slotView{Slot: fmt.Sprintf("%x", s.Slot), Fingerprint: s.Fingerprint, Ceremony: s.Ceremony, Volume: s.Volume,
			Index: s.Index, K: s.K, N: s.N, Version: s.Version, Problem: s.Problem, AnchorProblem: s.AnchorProblem, AnchorChecked: s.AnchorChecked}
		if s.Anchor != (store.Head{}) {
			sv.Anchor = s.Anchor.String()
		}
		if s.AnchorProblem != "" {
			bad = append(bad, fmt.Sprintf("slot %x: anchor %s: %s", s.Slot, sv.Anchor, s.AnchorProblem))
		}
		v.Slots = append(v.Slots, sv)
	}
	if err := e.render(globalsOf(c).json, v); err != nil {
		return err
	}
	if len(bad) > 0 {
		return &cliError{code: exitVerify, err: fmt.Errorf("card %d: %s", card.Serial(), strings.Join(bad, "; ")),
			hint: "the log is not the one this card's certificate was written against: run custos log verify"}
	}
	return nil
}

type initView struct {
	Serial      string `json:"serial"`
	Slot        string `json:"slot"`
	Fingerprint string `json:"fingerprint"`
	Custodian   string `json:"custodian,omitempty"`
	Anchor      string `json:"anchor,omitempty"`
}

func (v initView) writeText(w io.Writer) error {
	fmt.Fprintf(w, "card        %s\nslot        %s\nfingerprint %s\n", v.Serial, v.Slot, v.Fingerprint)
	if v.Custodian != "" {
		fmt.Fprintf(w, "custodian   %s\n", v.Custodian)
	}
	if v.Anchor != "" {
		fmt.Fprintf(w, "log head    %s\n", v.Anchor)
	}
	return nil
}

func (e *env) cardInit(c *cli.Context) error {
	if _, err := args(c, 0, 0, ""); err != nil {
		return err
	}
	g := globalsOf(c)
	slot, err := parseSlot(c, c.String("slot"))
	if err != nil {
		return err
	}
	if err := oneOf(c, "pin-policy", c.String("pin-policy"), "always", "once"); err != nil {
		return err
	}
	if err := oneOf(c, "touch-policy", c.String("touch-policy"), "never", "always", "cached"); err != nil {
		return err
	}
	roots, err := attestationRoots(g.roots)
	if err != nil {
		return err
	}
	env, done, err := e.ceremonyEnv(c, "", logWrite)
	if err != nil {
		return err
	}
	defer done()
	reader, err := pickReader(c.Context, c.String("reader"))
	if err != nil {
		return err
	}
	card, err := cards.Open(reader)
	if err != nil {
		return err
	}
	defer card.Close()
	res, err := escrow.InitCard(c.Context, env, card, escrow.InitCardOptions{
		Custodian:   c.String("custodian"),
		Slot:        slot,
		PINPolicy:   c.String("pin-policy"),
		TouchPolicy: c.String("touch-policy"),
		Roots:       roots,
		AskCurrent:  c.Bool("ask-current"),
	})
	if err != nil {
		return err
	}
	v := initView{Serial: res.Serial, Slot: fmt.Sprintf("%x", res.Slot), Fingerprint: res.Fingerprint.String(), Custodian: res.Custodian}
	if res.Anchor != (store.Head{}) {
		v.Anchor = res.Anchor.String()
	}
	return e.render(g.json, v)
}
