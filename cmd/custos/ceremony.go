package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
	"custos.dev/custos/internal/secmem"
	"custos.dev/custos/luks"
	"custos.dev/custos/store"
)

// What the ceremony commands (enroll.go, recover.go, rotate.go,
// rollcall.go, status.go, card.go, set.go) share: the real parts of an
// escrow.Env, the log as each uses it, the flags several of them take.

// keyFileFlag is --key-file: an existing key of the volume.
func keyFileFlag() cli.Flag {
	return &cli.StringFlag{Name: "key-file", Usage: "read an existing key of the volume from `F` (whole file; - is standard input), instead of asking for its passphrase", TakesFile: true}
}

// custodiansFlag is --custodian, repeated: the new cards' custodians.
func custodiansFlag() cli.Flag {
	return &cli.StringSliceFlag{Name: "custodian", Usage: "custodian `NAME`s, one per card, in the order the cards are inserted (repeat the flag)"}
}

// allowUnattestedFlag is --allow-unattested.
func allowUnattestedFlag() cli.Flag {
	return &cli.BoolFlag{Name: "allow-unattested", Usage: "accept cards that cannot prove, by an attestation, that their key was made on a genuine card (recorded in the ceremony and shown as a weakness)"}
}

// setFlag is a fleet form's --set NAME.
func setFlag(usage string) cli.Flag {
	return &cli.StringFlag{Name: "set", Usage: usage}
}

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
