package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
	"custos.dev/custos/store"
)

// setCommand is the custos set group: create, export, import, list, show.
// setCreatePrompts are the prompts set create asks, in order: their one
// definition, from which --help, the man page and the README are made.
var setCreatePrompts = []string{
	"for each card, in the order inserted: its PIN, to open a challenge sealed to its key (a card not named with --card is set aside before its PIN is asked)",
}

func (e *env) setCommand(ds docs) *cli.Command {
	version := &cli.IntFlag{Name: "version", Usage: "the set's `V`ersion (default: the newest)"}
	cmd := &cli.Command{
		Name:  "set",
		Usage: "create, export, import and show custodian sets: a team's cards, to which volumes are enrolled with no card present",
		Subcommands: []*cli.Command{
			ds.add(&cli.Command{
				Name:      "create",
				Usage:     "register a custodian set: each card attested and proven by opening a challenge with its PIN",
				ArgsUsage: "NAME",
				Description: "each custodian inserts their initialised card and types the PIN once; the set (name, version 1, " +
					"the cards' serials, slots, attested public keys and custodians, the default k) is logged and printed " +
					"with its fingerprint, the one to compare when the set file is imported elsewhere",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "card", Usage: "a card of the set by `SERIAL` (SERIAL:SLOT when it holds several custody keys); repeat for each, in order"},
					&cli.IntFlag{Name: "k", Usage: "the set's default threshold `K` (default: a majority of the cards)"},
					&cli.StringSliceFlag{Name: "custodian", Usage: "custodian `NAME`s, one per --card, in the same order (default: the name card init registered)"},
					&cli.BoolFlag{Name: "allow-unattested", Usage: "accept cards that cannot prove, by an attestation, that their key was made on a genuine card (recorded in the set)"},
				},
				Action: e.setCreate,
			}, doc{
				examples: []string{
					"custos set create --card 5000 --card 5001 --card 5002 --card 5003 --card 5004 -k 3 dc1",
					`printf '%s\n' "$pin1" "$pin2" "$pin3" | custos set create --card 7001 --card 7002:83 --card 7003 -k 2 lab`,
				},
				prompts: setCreatePrompts,
			}),
			ds.add(&cli.Command{
				Name:      "export",
				Usage:     "write a set's file (canonical JSON and a line feed) to standard output; its fingerprint goes to standard error",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{version},
				Action:    e.setExport,
			}, doc{examples: []string{
				"custos set export dc1 >dc1.set",
				"custos set export --version 1 dc1 >dc1-v1.set",
			}}),
			ds.add(&cli.Command{
				Name:      "import",
				Usage:     "take in a set file made elsewhere: refused unless its fingerprint is the one given and every attestation verifies",
				ArgsUsage: "FILE",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "fingerprint", Usage: "the set's `F`ingerprint, from its transcript (64 hex digits; spaces and dashes ignored)"},
				},
				Action: e.setImport,
			}, doc{examples: []string{
				"custos --attestation-roots yubico-extra.pem set import --fingerprint '3f1c 2a90 ...' dc1.set",
			}}),
			ds.add(&cli.Command{
				Name:   "list",
				Usage:  "list the custodian sets of the log",
				Action: e.setList,
			}, doc{examples: []string{"custos set list", "custos --json set list"}}),
			ds.add(&cli.Command{
				Name:      "show",
				Usage:     "show a custodian set: its cards, keys and fingerprint",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{version},
				Action:    e.setShow,
			}, doc{examples: []string{"custos set show dc1", "custos --json set show --version 1 dc1"}}),
		},
	}
	cmd.Action = parentAction
	return ds.add(cmd, doc{examples: []string{"custos set create --card 5000 --card 5001 --card 5002 -k 2 dc1", "custos set list"}})
}

// setCardView is one card of a set.
type setCardView struct {
	Serial      string `json:"serial"`
	Slot        string `json:"slot"`
	Custodian   string `json:"custodian,omitempty"`
	Fingerprint string `json:"fingerprint"`
	Attested    bool   `json:"attested"`
}

// setView is a set as the commands show it.
type setView struct {
	Name            string        `json:"name"`
	Version         int           `json:"version"`
	Fingerprint     string        `json:"fingerprint"`
	Previous        string        `json:"previous,omitempty"`
	K               int           `json:"k"`
	AllowUnattested bool          `json:"allow_unattested,omitempty"`
	Cards           []setCardView `json:"cards"`
	Anchor          string        `json:"anchor,omitempty"`
	Imported        *bool         `json:"imported,omitempty"`
}

func viewSet(s *escrow.Set, fp [32]byte) setView {
	v := setView{Name: s.Name, Version: s.Version, Fingerprint: hex.EncodeToString(fp[:]), K: s.K, AllowUnattested: s.AllowUnattested, Cards: []setCardView{}}
	if s.Version > 1 {
		v.Previous = hex.EncodeToString(s.Previous[:])
	}
	for _, c := range s.Cards {
		v.Cards = append(v.Cards, setCardView{Serial: c.Serial, Slot: fmt.Sprintf("%x", c.Slot), Custodian: escrow.SafeText(c.Custodian),
			Fingerprint: hex.EncodeToString(c.Key[:]), Attested: c.Attestation != nil})
	}
	return v
}

func (v setView) writeText(w io.Writer) error {
	fp, _ := escrow.ParseFingerprint(v.Fingerprint)
	fmt.Fprintf(w, "custodian set %s, version %d\n  fingerprint  %s\n  quorum       %d of %d by default\n", v.Name, v.Version, escrow.FingerprintGroups(fp), v.K, len(v.Cards))
	if v.Previous != "" {
		prev, _ := escrow.ParseFingerprint(v.Previous)
		fmt.Fprintf(w, "  replaces     version %d, fingerprint %s\n", v.Version-1, escrow.FingerprintGroups(prev))
	}
	if v.AllowUnattested {
		fmt.Fprintln(w, "  weakness     cards without attestation are allowed")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  CARD\tSLOT\tCUSTODIAN\tATTESTED\tKEY FINGERPRINT")
	for _, c := range v.Cards {
		who := c.Custodian
		if who == "" {
			who = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Serial, c.Slot, who, map[bool]string{true: "yes", false: "NO"}[c.Attested], c.Fingerprint)
	}
	tw.Flush()
	if v.Imported != nil && !*v.Imported {
		fmt.Fprintln(w, "the log held this set already")
	}
	if v.Anchor != "" {
		fmt.Fprintf(w, "log head %s  (write it down with the fingerprint)\n", v.Anchor)
	}
	return nil
}

// parseCardSpec reads --card SERIAL or SERIAL:SLOT.
func parseCardSpec(c *cli.Context, s string) (escrow.SetCardSpec, error) {
	serial, slot, hasSlot := strings.Cut(s, ":")
	spec := escrow.SetCardSpec{Serial: serial}
	if hasSlot {
		v, err := parseSlot(c, slot)
		if err != nil {
			return spec, err
		}
		spec.Slot = v
	}
	if n, err := strconv.ParseUint(serial, 10, 32); err != nil || n == 0 || strconv.FormatUint(n, 10) != serial {
		return spec, usageErrorf(c, "--card %q: a card's serial number (decimal), optionally :SLOT", s)
	}
	return spec, nil
}

func (e *env) setCreate(c *cli.Context) error {
	a, err := args(c, 1, 1, "NAME")
	if err != nil {
		return err
	}
	if err := store.CheckSetName(a[0]); err != nil {
		return usageErrorf(c, "set name %q: 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit", escrow.SafeText(a[0]))
	}
	var specs []escrow.SetCardSpec
	for _, s := range c.StringSlice("card") {
		spec, err := parseCardSpec(c, s)
		if err != nil {
			return err
		}
		specs = append(specs, spec)
	}
	if len(specs) < 2 {
		return usageErrorf(c, "a set needs at least two cards: --card SERIAL for each")
	}
	k := c.Int("k")
	if !c.IsSet("k") {
		k = max(len(specs)/2+1, 2)
	}
	if k < 2 || k > len(specs) {
		return usageErrorf(c, "-k %d for %d cards: need 2 <= k <= %d", k, len(specs), len(specs))
	}
	names := c.StringSlice("custodian")
	if len(names) > len(specs) {
		return usageErrorf(c, "%d custodians named for %d cards", len(names), len(specs))
	}
	env, done, err := e.ceremonyEnv(c, "", logWrite)
	if err != nil {
		return err
	}
	defer done()
	res, err := escrow.CreateSet(c.Context, env, escrow.SetCreateOptions{Name: a[0], Cards: specs, K: k, Custodians: names,
		AllowUnattested: c.Bool("allow-unattested")})
	if err != nil {
		if res != nil && len(res.Cards) > 0 {
			writeOutcomes(e.stderr, viewOutcomes(res.Cards))
		}
		return err
	}
	v := viewSet(res.Set, res.Fingerprint)
	v.Anchor = anchorString(res.Anchor)
	return e.render(globalsOf(c).json, v)
}

// setExportView is set export's result: as text, the set file itself;
// with --json, the set file's exact text in file (as a JSON string: an
// indented copy of the object would not be the canonical file).
type setExportView struct {
	Name        string `json:"name"`
	Version     int    `json:"version"`
	Fingerprint string `json:"fingerprint"`
	File        string `json:"file"`
}

func (v setExportView) writeText(w io.Writer) error {
	_, err := io.WriteString(w, v.File)
	return err
}

func (e *env) setExport(c *cli.Context) error {
	a, err := args(c, 1, 1, "NAME")
	if err != nil {
		return err
	}
	env, done, err := e.ceremonyEnv(c, "", logRequired)
	if err != nil {
		return err
	}
	defer done()
	st, file, err := escrow.ExportSet(env, a[0], c.Int("version"))
	if err != nil {
		return err
	}
	e.say("custodian set %s version %d: fingerprint %s", st.Set.Name, st.Set.Version, escrow.FingerprintGroups(st.Fingerprint))
	return e.render(globalsOf(c).json, setExportView{Name: st.Set.Name, Version: st.Set.Version,
		Fingerprint: hex.EncodeToString(st.Fingerprint[:]), File: string(file)})
}

// maxSetFile bounds a set file read by set import.
const maxSetFile = 4 << 20

func (e *env) setImport(c *cli.Context) error {
	a, err := args(c, 1, 1, "FILE")
	if err != nil {
		return err
	}
	if !c.IsSet("fingerprint") {
		return usageErrorf(c, "set import needs --fingerprint F, the fingerprint the set's transcript printed")
	}
	if _, err := escrow.ParseFingerprint(c.String("fingerprint")); err != nil {
		return usageErrorf(c, "--fingerprint: 64 hex digits (spaces and dashes are ignored)")
	}
	f, err := os.Open(a[0])
	if err != nil {
		return fmt.Errorf("set file: %w", err)
	}
	defer f.Close()
	file, err := io.ReadAll(io.LimitReader(f, maxSetFile+1))
	if err != nil {
		return fmt.Errorf("set file %s: %w", a[0], err)
	}
	if len(file) > maxSetFile {
		return fmt.Errorf("set file %s: larger than %d bytes", a[0], maxSetFile)
	}
	env, done, err := e.ceremonyEnv(c, "", logWrite)
	if err != nil {
		return err
	}
	defer done()
	res, err := escrow.ImportSet(c.Context, env, file, c.String("fingerprint"))
	if err != nil {
		return fmt.Errorf("%s: %w", a[0], err)
	}
	v := viewSet(res.Set, res.Fingerprint)
	v.Anchor, v.Imported = anchorString(res.Anchor), &res.Imported
	return e.render(globalsOf(c).json, v)
}

type setListView struct {
	Sets []setView `json:"sets"`
}

func (v setListView) writeText(w io.Writer) error {
	if len(v.Sets) == 0 {
		_, err := fmt.Fprintln(w, "no custodian set in the log")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SET\tVERSION\tQUORUM\tFINGERPRINT")
	for _, s := range v.Sets {
		fp, _ := escrow.ParseFingerprint(s.Fingerprint)
		fmt.Fprintf(tw, "%s\t%d\t%d of %d\t%s\n", s.Name, s.Version, s.K, len(s.Cards), escrow.FingerprintGroups(fp))
	}
	return tw.Flush()
}

func (e *env) setList(c *cli.Context) error {
	if _, err := args(c, 0, 0, ""); err != nil {
		return err
	}
	env, done, err := e.ceremonyEnv(c, "", logRequired)
	if err != nil {
		return err
	}
	defer done()
	sets, err := env.Log.Sets()
	if err != nil {
		return err
	}
	v := setListView{Sets: []setView{}}
	for _, st := range sets {
		v.Sets = append(v.Sets, viewSet(st.Set, st.Fingerprint))
	}
	return e.render(globalsOf(c).json, v)
}

func (e *env) setShow(c *cli.Context) error {
	a, err := args(c, 1, 1, "NAME")
	if err != nil {
		return err
	}
	env, done, err := e.ceremonyEnv(c, "", logRequired)
	if err != nil {
		return err
	}
	defer done()
	st, _, err := escrow.ExportSet(env, a[0], c.Int("version"))
	if err != nil {
		return err
	}
	return e.render(globalsOf(c).json, viewSet(st.Set, st.Fingerprint))
}
