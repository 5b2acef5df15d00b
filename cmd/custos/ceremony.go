package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/cards"
	"custos.dev/custos/escrow"
	"custos.dev/custos/internal/secmem"
	"custos.dev/custos/luks"
	"custos.dev/custos/store"
)

// The prompts each ceremony asks, in order, as package escrow asks them
// (help, man page and README). Without a terminal, each takes one line of
// standard input.
var (
	cardInitPrompts = []string{
		"with --ask-current: the card's current PIN, then its current PUK",
		"new PIN, then the new PIN again",
		"new PUK, then the new PUK again",
	}
	enrollPrompts = []string{
		"without --key-file: the passphrase of an existing keyslot",
		"for each card, in the order inserted: its PIN (a wrong PIN is asked again, at most three tries, never the card's last)",
	}
	recoverPrompts = []string{
		"for each card, in the order inserted: its PIN (a card that is not a custodian's is set aside before its PIN is asked)",
		"without --new-key-file: the new passphrase, then the new passphrase again",
	}
	rotatePrompts = []string{
		"without --key-file: for each old card, in the order inserted: its PIN, until k shares are good",
		"for each new card, in the order inserted: its PIN",
		"with --wipe-wait: for each old card leaving the set, when inserted: its PIN, to wipe its share",
	}
	rollcallPrompts = []string{
		"for each card, in the order inserted: its PIN",
	}
)

// escrowPrompter is the prompter as package escrow sees it; talk goes to
// stderr.
type escrowPrompter struct{ *prompter }

func (p escrowPrompter) Say(msg string) { fmt.Fprintln(p.out, msg) }

// cardSource bounds the wait for each card by --timeout, leaving the
// ceremony's own steps (cryptsetup) unbounded.
type cardSource struct {
	src     escrow.CardSource
	timeout time.Duration
}

func (s cardSource) Next(ctx context.Context) (escrow.Card, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	c, err := s.src.Next(ctx)
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("no card inserted within %s: %w", s.timeout, err)
	}
	return c, err
}

// logUse is how a command uses the ceremony log.
type logUse int

const (
	logWrite    logUse = iota // needs the log, and creates it if missing
	logIfThere                // uses the log if it exists, and never creates one
	logRequired               // reads the log, which must exist: a missing one is an error
)

// ceremonyEnv gathers the real parts a ceremony needs. close releases them.
func (e *env) ceremonyEnv(c *cli.Context, device string, use logUse) (*escrow.Env, func(), error) {
	g := globalsOf(c)
	roots, err := attestationRoots(g.roots)
	if err != nil {
		return nil, nil, err
	}
	env := &escrow.Env{
		Device: device,
		Prompt: escrowPrompter{e.prompt},
		Cards:  cardSource{src: escrow.NewReaderSource(), timeout: g.timeout},
		Actor:  actor(),
		Roots:  roots,
	}
	var closers []func()
	done := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	if device != "" {
		vol, err := luks.Open(device)
		if err != nil {
			return nil, nil, withHint(err, escrowCode(err), "give a LUKS volume: a block device or an image file")
		}
		env.Volume = vol
	}
	l, err := e.openLog(c, use)
	if err != nil {
		return nil, nil, err
	}
	if l != nil {
		env.Log = l
		closers = append(closers, func() { l.Close() })
	}
	return env, done, nil
}

// openLog opens the ceremony log as use says; nil without error when the
// log is optional and absent (the command then says it works without it).
// A command that only reads never creates a log.
func (e *env) openLog(c *cli.Context, use logUse) (*store.Log, error) {
	db, opts, err := logTarget(c) // db.go: --db, the etcd flags, the config file
	if err != nil {
		return nil, err
	}
	opts.NoCreate = use != logWrite
	l, err := store.Open(db, opts)
	if use != logWrite && errors.Is(err, store.ErrNotFound) {
		if use == logRequired {
			return nil, &cliError{code: exitError, err: fmt.Errorf("no ceremony log at %s", db),
				hint: "give the log's path with --db PATH (or its cluster, etcd://HOST:PORT,.../PREFIX), or copy it from where the ceremonies were held"}
		}
		fmt.Fprintf(e.stderr, "custos: no ceremony log at %s: working from the volume and the cards alone, writing no log\n", db)
		return nil, nil
	}
	return l, err
}

// actor names who runs the ceremony, for the log.
func actor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return ""
}

// attestationRoots reads the PEM file named by --attestation-roots.
func attestationRoots(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("attestation roots: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, &cliError{code: exitUsage, err: fmt.Errorf("attestation roots: no PEM certificate in %s", path),
			hint: "give a file of PEM CERTIFICATE blocks"}
	}
	return pool, nil
}

// keyFlag reads --key-file or --new-key-file when given, into a secmem
// buffer the caller frees; nil otherwise.
func (e *env) keyFlag(c *cli.Context, name string) (*secmem.Buf, error) {
	if !c.IsSet(name) {
		return nil, nil
	}
	p := c.String(name)
	if p == "" {
		return nil, usageErrorf(c, "--%s needs a path (or - for standard input)", name)
	}
	k, err := readKeyFile(e.stdin, p)
	if err == nil && k.LockErr() != nil {
		e.debugf("--%s: not locked: %v", name, k.LockErr())
	}
	return k, err
}

func parseSlot(c *cli.Context, s string) (uint8, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 8)
	if err != nil || v < 0x82 || v > 0x95 {
		return 0, usageErrorf(c, "--slot %q: a retired key-management slot, 82 to 95", s)
	}
	return uint8(v), nil
}

func oneOf(c *cli.Context, flag, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return usageErrorf(c, "--%s %q: one of %s", flag, v, strings.Join(allowed, ", "))
}

// --- card init

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

// --- views of a ceremony

type cardRefView struct {
	Index       int    `json:"index"`
	Serial      string `json:"serial"`
	Slot        string `json:"slot"`
	Custodian   string `json:"custodian"`
	Fingerprint string `json:"fingerprint"`
	// Attestation is what the log's chain says of the card's key (when
	// the command read it): issuer, firmware, policies; "unattested"; or
	// why it does not verify.
	Attestation string `json:"attestation,omitempty"`
}

type ceremonyView struct {
	ID              string        `json:"id"`
	Status          string        `json:"status,omitempty"`
	Version         int           `json:"version"`
	Volume          string        `json:"volume"`
	K               int           `json:"k"`
	N               int           `json:"n"`
	Keyslot         int           `json:"keyslot"`
	Replaces        string        `json:"replaces,omitempty"`
	Set             *setRefView   `json:"set,omitempty"`
	AllowUnattested bool          `json:"allow_unattested,omitempty"`
	Cards           []cardRefView `json:"cards"`
}

func viewRecord(r *escrow.Record) *ceremonyView {
	if r == nil {
		return nil
	}
	v := &ceremonyView{ID: r.IDString(), Version: r.Version, Volume: r.VolumeString(), K: r.K, N: r.N, Keyslot: r.Keyslot,
		Replaces: r.ReplacesString(), Set: viewSetRef(r.Set), AllowUnattested: r.AllowUnattested, Cards: []cardRefView{}}
	for _, cr := range r.Cards {
		v.Cards = append(v.Cards, viewRef(cr))
	}
	return v
}

// viewRef shows a card of a record. Its custodian's name comes from a
// copy someone may have forged: it is filtered before it reaches a
// terminal (docs/FORMAT.md section 13).
func viewRef(cr escrow.RecordCard) cardRefView {
	return cardRefView{Index: cr.Index, Serial: escrow.SafeText(cr.Serial), Slot: fmt.Sprintf("%x", cr.Slot),
		Custodian: escrow.SafeText(cr.Custodian), Fingerprint: hex.EncodeToString(cr.Key[:])}
}

func (v *ceremonyView) writeText(w io.Writer, title string) {
	if v == nil {
		return
	}
	fmt.Fprintf(w, "%s %s\n  volume   %s\n  quorum   %d of %d\n  keyslot  %d\n", title, v.ID, v.Volume, v.K, v.N, v.Keyslot)
	if v.Set != nil {
		fmt.Fprintf(w, "  set      %s version %d\n", v.Set.Name, v.Set.Version)
	}
	if v.AllowUnattested {
		fmt.Fprintf(w, "  weakness cards without attestation are allowed\n")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SHARE\tCARD\tSLOT\tCUSTODIAN\tKEY FINGERPRINT")
	for _, c := range v.Cards {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\n", c.Index, c.Serial, c.Slot, c.Custodian, c.Fingerprint)
	}
	tw.Flush()
	writeAttestations(w, v.Cards)
}

// writeAttestations lists the cards' attestations, when known.
func writeAttestations(w io.Writer, cs []cardRefView) {
	for _, c := range cs {
		if c.Attestation != "" {
			fmt.Fprintf(w, "  attestation of card %s: %s\n", c.Serial, c.Attestation)
		}
	}
}

// withAttestations gives each card its attestation as the log's chain
// tells it.
func (v *ceremonyView) withAttestations(as []escrow.CardAttestation) *ceremonyView {
	if v == nil {
		return nil
	}
	for _, a := range as {
		for i := range v.Cards {
			if v.Cards[i].Index == a.Index {
				v.Cards[i].Attestation = attestationText(a)
			}
		}
	}
	return v
}

// attestationText shows a card's attestation (escrow filters what of it
// comes from a certificate).
func attestationText(a escrow.CardAttestation) string {
	switch {
	case a.Unattested:
		return "unattested (weakness: nothing proves its key was made on a genuine card)"
	case a.Problem != "":
		return "NOT VERIFIED: " + a.Problem
	}
	return a.Summary
}

type outcomeView struct {
	Serial    string `json:"serial"`
	Reader    string `json:"reader"`
	Custodian string `json:"custodian,omitempty"`
	Index     int    `json:"index,omitempty"`
	OK        bool   `json:"ok"`
	Problem   string `json:"problem,omitempty"`
}

func viewOutcomes(os []escrow.CardOutcome) []outcomeView {
	out := []outcomeView{}
	for _, o := range os {
		v := outcomeView{Serial: o.Serial, Reader: o.Reader, Custodian: escrow.SafeText(o.Custodian), Index: o.Index, OK: o.OK()}
		if o.Err != nil {
			v.Problem = message(o.Err)
		}
		out = append(out, v)
	}
	return out
}

func writeOutcomes(w io.Writer, os []outcomeView) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  CARD\tSHARE\tCUSTODIAN\tRESULT")
	for _, o := range os {
		res := "ok"
		if !o.OK {
			res = o.Problem
		}
		idx, who := "-", o.Custodian
		if o.Index > 0 {
			idx = strconv.Itoa(o.Index)
		}
		if who == "" {
			who = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", o.Serial, idx, who, res)
	}
	tw.Flush()
}

func anchorString(h store.Head) string {
	if h == (store.Head{}) {
		return ""
	}
	return h.String()
}

// --- enroll

type enrollView struct {
	Ceremony *ceremonyView `json:"ceremony"`
	TokenID  int           `json:"token_id"`
	Anchor   string        `json:"anchor,omitempty"`
	Resumed  string        `json:"resumed,omitempty"`
}

func (v enrollView) writeText(w io.Writer) error {
	if v.Resumed != "" {
		fmt.Fprintf(w, "an unfinished enrollment was %s first\n", v.Resumed)
	}
	v.Ceremony.writeText(w, "enrolled ceremony")
	if v.TokenID >= 0 {
		fmt.Fprintf(w, "  token    %d\n", v.TokenID)
	} else {
		fmt.Fprintf(w, "  token    none (the ceremony lives in the log and on the cards)\n")
	}
	if v.Anchor != "" {
		fmt.Fprintf(w, "  log head %s  (write it down: the anchor for 'custos log verify --anchor')\n", v.Anchor)
	}
	return nil
}

func (e *env) enroll(c *cli.Context) error {
	if c.IsSet("set") {
		return e.enrollSet(c)
	}
	a, err := args(c, 1, 1, "DEVICE")
	if err != nil {
		return err
	}
	k, n := c.Int("k"), c.Int("n")
	if !c.IsSet("k") || !c.IsSet("n") {
		return usageErrorf(c, "enroll needs -k K and -n N")
	}
	if k < 2 || n < k || n > 255 {
		return usageErrorf(c, "-k %d -n %d: need 2 <= k <= n <= 255", k, n)
	}
	names := c.StringSlice("custodian")
	if len(names) > n {
		return usageErrorf(c, "%d custodians named for %d cards", len(names), n)
	}
	key, err := e.keyFlag(c, "key-file")
	if err != nil {
		return err
	}
	defer key.Free()
	env, done, err := e.ceremonyEnv(c, a[0], logWrite)
	if err != nil {
		return err
	}
	defer done()
	res, err := escrow.Enroll(c.Context, env, escrow.EnrollOptions{K: k, N: n, Custodians: names, AuthKey: key.Bytes(),
		AllowUnattested: c.Bool("allow-unattested")})
	if err != nil {
		return err
	}
	return e.render(globalsOf(c).json, enrollView{Ceremony: viewRecord(res.Ceremony).withAttestations(res.Attestations), TokenID: res.TokenID,
		Anchor: anchorString(res.Anchor), Resumed: res.Resumed})
}

// --- recover

type recoverView struct {
	Ceremony   *ceremonyView `json:"ceremony"`
	Source     string        `json:"source"`
	Keyslot    int           `json:"keyslot"`
	NewKeyslot int           `json:"new_keyslot"`
	Cards      []outcomeView `json:"cards"`
	Problems   []string      `json:"problems"`
	Anchor     string        `json:"anchor,omitempty"`
}

func (v recoverView) writeText(w io.Writer) error {
	v.Ceremony.writeText(w, "recovered with ceremony")
	fmt.Fprintf(w, "  learnt from  %s\n", v.Source)
	writeOutcomes(w, v.Cards)
	for _, p := range v.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	fmt.Fprintf(w, "new keyslot %d opens the volume with the new key\n", v.NewKeyslot)
	if v.Anchor != "" {
		fmt.Fprintf(w, "log head %s\n", v.Anchor)
	}
	return nil
}

func pbkdfFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "pbkdf", Usage: "PBKDF of the new keyslot, as cryptsetup's --pbkdf: pbkdf2, argon2i or argon2id (default: cryptsetup's)"},
		&cli.IntFlag{Name: "pbkdf-force-iterations", Usage: "fix the PBKDF's iterations and skip the benchmark, as cryptsetup's --pbkdf-force-iterations (for tests and rehearsals)"},
		&cli.IntFlag{Name: "pbkdf-memory", Usage: "argon2 memory cost in KiB, as cryptsetup's --pbkdf-memory"},
	}
}

func pbkdfOf(c *cli.Context) (*luks.PBKDF, error) {
	if !c.IsSet("pbkdf") && !c.IsSet("pbkdf-force-iterations") && !c.IsSet("pbkdf-memory") {
		return nil, nil
	}
	p := &luks.PBKDF{Type: c.String("pbkdf"), Iterations: c.Int("pbkdf-force-iterations"), MemoryKiB: c.Int("pbkdf-memory")}
	if p.Type != "" {
		if err := oneOf(c, "pbkdf", p.Type, "pbkdf2", "argon2i", "argon2id"); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (e *env) recover(c *cli.Context) error {
	if c.NArg() > 1 {
		return e.recoverMany(c)
	}
	a, err := args(c, 1, 1, "DEVICE")
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
	env, done, err := e.ceremonyEnv(c, a[0], logIfThere)
	if err != nil {
		return err
	}
	defer done()
	env.PBKDF = pbkdf
	res, err := escrow.Recover(c.Context, env, escrow.RecoverOptions{NewKey: key.Bytes()})
	if res != nil && res.NewKeyslot >= 0 {
		// The volume opens with the new key: say so, even when a copy
		// failed its check afterwards (the error follows).
		if rerr := e.render(globalsOf(c).json, recoverView{Ceremony: viewRecord(res.Ceremony), Source: res.Source,
			Keyslot: res.Keyslot, NewKeyslot: res.NewKeyslot, Cards: viewOutcomes(res.Cards),
			Problems: append([]string{}, res.Problems...), Anchor: anchorString(res.Anchor)}); rerr != nil {
			return rerr
		}
		return err
	}
	if res != nil && err != nil {
		// Say what each card did before the error.
		writeOutcomes(e.stderr, viewOutcomes(res.Cards))
	}
	return err
}

// --- rotate

type rotateView struct {
	Old       *ceremonyView `json:"old"`
	New       *ceremonyView `json:"new"`
	OldKilled bool          `json:"old_killed"`
	Problems  []string      `json:"problems"`
	Wiped     []cardRefView `json:"wiped"`
	ToWipe    []cardRefView `json:"to_wipe"`
	Anchor    string        `json:"anchor,omitempty"`
	Resumed   string        `json:"resumed,omitempty"`
}

func (v rotateView) writeText(w io.Writer) error {
	if v.Resumed != "" {
		fmt.Fprintf(w, "an unfinished rotation was %s first\n", v.Resumed)
	}
	v.New.writeText(w, "new ceremony")
	if v.Old != nil {
		if v.OldKilled {
			fmt.Fprintf(w, "replaces ceremony %s (its keyslot %d is killed)\n", v.Old.ID, v.Old.Keyslot)
		} else {
			fmt.Fprintf(w, "replaces ceremony %s (its keyslot %d is NOT killed: see the problem below)\n", v.Old.ID, v.Old.Keyslot)
		}
	}
	for _, p := range v.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	for _, c := range v.Wiped {
		fmt.Fprintf(w, "  wiped     card %s (custodian %s)\n", c.Serial, c.Custodian)
	}
	for _, c := range v.ToWipe {
		fmt.Fprintf(w, "  to wipe   card %s (custodian %s): its retired share opens nothing now, but wipe it when it is at hand\n", c.Serial, c.Custodian)
	}
	if v.Anchor != "" {
		fmt.Fprintf(w, "log head %s\n", v.Anchor)
	}
	return nil
}

func (e *env) rotate(c *cli.Context) error {
	if c.IsSet("set") {
		return e.rotateSet(c)
	}
	a, err := args(c, 1, 1, "DEVICE")
	if err != nil {
		return err
	}
	k, n := c.Int("k"), c.Int("n")
	if c.IsSet("k") != c.IsSet("n") {
		return usageErrorf(c, "give -k and -n together, or neither to keep them")
	}
	if c.IsSet("k") && (k < 2 || n < k || n > 255) {
		return usageErrorf(c, "-k %d -n %d: need 2 <= k <= n <= 255", k, n)
	}
	key, err := e.keyFlag(c, "key-file")
	if err != nil {
		return err
	}
	defer key.Free()
	env, done, err := e.ceremonyEnv(c, a[0], logWrite)
	if err != nil {
		return err
	}
	defer done()
	res, err := escrow.Rotate(c.Context, env, escrow.RotateOptions{K: k, N: n, Custodians: c.StringSlice("custodian"),
		AuthKey: key.Bytes(), WipeWait: c.Duration("wipe-wait"), AllowUnattested: c.Bool("allow-unattested")})
	if res == nil || res.Anchor == (store.Head{}) {
		return err
	}
	v := rotateView{Old: viewRecord(res.Old), New: viewRecord(res.New).withAttestations(res.Attestations), OldKilled: res.OldKilled, Wiped: []cardRefView{}, ToWipe: []cardRefView{},
		Problems: append([]string{}, res.Problems...), Anchor: anchorString(res.Anchor), Resumed: res.Resumed}
	for _, r := range res.Wiped {
		v.Wiped = append(v.Wiped, viewRef(r))
	}
	for _, r := range res.ToWipe {
		v.ToWipe = append(v.ToWipe, viewRef(r))
	}
	if rerr := e.render(globalsOf(c).json, v); rerr != nil {
		return rerr
	}
	return err
}

// --- rollcall

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

// --- status

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
		v.Unfinished = &unfinishedView{Ceremony: u.Ceremony, Kind: u.Kind, Step: u.Step, Command: u.Command}
	}
	if rerr := e.render(globalsOf(c).json, v); rerr != nil {
		return rerr
	}
	return err
}
