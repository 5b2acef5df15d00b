package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// Exit codes: the contract scripts rely on. exitCodes is their one
// definition: every command's help ends with it, the man page lists it and
// the README's table is generated from it (custos gen-readme).
const (
	exitOK     = 0 // done
	exitError  = 1 // error: anything not listed below
	exitUsage  = 2 // usage: unknown command or flag, wrong arguments
	exitQuorum = 3 // quorum not reached: fewer than k good shares
	exitVerify = 4 // verification failed: log chain, anchor, commitments, copies, attestation or keyslot
)

var exitCodes = []struct {
	code    int
	meaning string
}{
	{exitOK, "done"},
	{exitError, "error: anything not listed below (no card, a wrong key file, cryptsetup failed, the log in use, ...)"},
	{exitUsage, "usage: unknown command or flag, missing or extra arguments, a value out of range"},
	{exitQuorum, "quorum not reached: fewer than k good shares were collected before the cards ran out or --timeout passed"},
	{exitVerify, "verification failed: the log's chain or an anchor, a share against its commitment, copies of a ceremony that disagree, a card's attestation, the recovered key against its keyslot"},
}

// exitCodeText is exitCodes as help text, one code a line.
var exitCodeText = func() string {
	var lines []string
	for _, c := range exitCodes {
		lines = append(lines, fmt.Sprintf("   %d  %s", c.code, c.meaning))
	}
	return strings.Join(lines, "\n")
}()

// cliError is an error that carries its exit code and, when there is a next
// step, a hint. Everything an action returns is turned into one by classify.
type cliError struct {
	code int
	err  error
	hint string
}

func (e *cliError) Error() string { return e.err.Error() }
func (e *cliError) Unwrap() error { return e.err }

// usageErrorf is a usage error (exit 2) with a hint to the command's help.
func usageErrorf(c *cli.Context, format string, args ...any) error {
	return &cliError{code: exitUsage, err: fmt.Errorf(format, args...), hint: helpHint(c)}
}

func helpHint(c *cli.Context) string {
	name := "custos"
	if c != nil && c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	return fmt.Sprintf("run '%s --help'", name)
}

// withHint attaches a hint (and keeps the code of err if it has one).
func withHint(err error, code int, hint string) error {
	if err == nil {
		return nil
	}
	return &cliError{code: code, err: err, hint: hint}
}

// classifier maps errors of one package below to an exit code and a hint,
// in the context of the command that returned them.
type classifier func(err error, in invocation) (code int, hint string, ok bool)

// classifiers, in order: escrow first (its errors wrap the others', and
// its hints say more), then cards, then store, then etcd. A function, not a
// variable, since classifyEscrow classifies a fleet's volumes through them.
func classifiers() []classifier {
	return []classifier{
		classifyEscrow,
		func(err error, _ invocation) (int, string, bool) { return classifyCards(err) },
		func(err error, _ invocation) (int, string, bool) { return classifyStore(err) },
		func(err error, _ invocation) (int, string, bool) { return classifyEtcd(err) },
	}
}

// invocation is what the operator typed that a hint may repeat: the
// command, the one device it named, the custodian set, whether a key file
// was given. An action's error carries it (invoked); a fleet's volumes
// each get their own device.
type invocation struct {
	command string // "rotate", "set create", ...
	device  string // the device, for a command naming one
	set     string // --set NAME, or the NAME of a set command
	keyFile bool   // --key-file was given
}

// dev is the device as a hint names it.
func (in invocation) dev() string {
	if in.device == "" {
		return "DEVICE"
	}
	return in.device
}

// invoked is an action's error with the invocation that returned it.
type invoked struct {
	in  invocation
	err error
}

func (e *invoked) Error() string { return e.err.Error() }
func (e *invoked) Unwrap() error { return e.err }

// withInvocation wraps each action below cmds so that its error carries
// the invocation, for classify's hints.
func withInvocation(prefix string, cmds []*cli.Command) {
	for _, cmd := range cmds {
		name := strings.TrimSpace(prefix + " " + cmd.Name)
		withInvocation(name, cmd.Subcommands)
		act := cmd.Action
		if act == nil {
			continue
		}
		cmd.Action = func(c *cli.Context) error {
			err := act(c)
			if err == nil {
				return nil
			}
			in := invocation{command: name, keyFile: c.IsSet("key-file"), set: c.String("set")}
			if strings.HasPrefix(name, "set ") {
				in.set = c.Args().First()
			} else if c.NArg() == 1 {
				in.device = c.Args().First()
			}
			return &invoked{in: in, err: err}
		}
	}
}

// classify returns the exit code and hint for err.
func classify(err error) (int, string) {
	var ce *cliError
	if errors.As(err, &ce) {
		if ce.hint != "" || ce.code != exitError {
			return ce.code, ce.hint
		}
	}
	// Errors urfave/cli makes itself (unknown help topic, and the like)
	// are usage errors; custos never returns cli.Exit.
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return exitUsage, "run 'custos --help'"
	}
	var iv *invoked
	var in invocation
	if errors.As(err, &iv) {
		in = iv.in
	}
	return classifyIn(err, in)
}

// classifyIn is classify in the context of an invocation.
func classifyIn(err error, in invocation) (int, string) {
	// The first package that knows the error gives the code; the first
	// hint found, from it or the packages after it, goes with it.
	code, hint, known := exitError, "", false
	for _, f := range classifiers() {
		c, h, ok := f(err, in)
		if !ok {
			continue
		}
		if !known {
			code, known = c, true
		}
		if hint == "" {
			hint = h
		}
	}
	return code, hint
}

// classifyEscrow maps the ceremonies' errors to exit codes and hints: a
// fleet's, the worst of its volumes' codes and the first volume's hint.
func classifyEscrow(err error, in invocation) (int, string, bool) {
	var fe *escrow.FleetError
	if errors.As(err, &fe) {
		code, hint := exitOK, ""
		for _, f := range fe.Failed {
			vin := in
			vin.device = f.Device
			c, h := classifyIn(f.Err, vin)
			code = max(code, c)
			if hint == "" {
				hint = h
			}
		}
		if code == exitOK {
			code = exitError
		}
		return code, hint, true
	}
	code, hint := escrowCode(err), escrowHint(err, in)
	if code != exitError || hint != "" {
		return code, hint, true
	}
	return 0, "", false
}

// escrowCode is the exit code of a ceremony's error: 2 for usage errors,
// 3 when the quorum was not reached, 4 when a verification failed (log
// chain or anchor, commitments, copies, attestation, keyslot), 1 for
// anything else.
func escrowCode(err error) int {
	var qe *shares.QuorumError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, escrow.ErrUsage):
		return exitUsage
	case errors.Is(err, escrow.ErrQuorum), errors.As(err, &qe):
		return exitQuorum
	case errors.Is(err, escrow.ErrVerification),
		errors.Is(err, shares.ErrCommitmentMismatch),
		errors.Is(err, shares.ErrDigestMismatch),
		errors.Is(err, shares.ErrInconsistentShare),
		errors.Is(err, store.ErrBrokenChain),
		errors.Is(err, store.ErrAnchor),
		errors.Is(err, store.ErrIndex):
		return exitVerify
	}
	return exitError
}

// ceremonyCommand is the command line that runs (again) a ceremony of op,
// "enroll" or "rotate", on device: a fleet enrollment with its set, a
// plain one with the -k and -n it needs (a rerun that finishes an
// interrupted enrollment keeps the ceremony's own).
func ceremonyCommand(op, set, device string) string {
	switch {
	case op == "enroll" && set != "":
		return fmt.Sprintf("custos enroll --set %s %s", set, device)
	case op == "enroll":
		return "custos enroll -k K -n N " + device
	}
	return fmt.Sprintf("custos %s %s", op, device)
}

// escrowHint is what the operator should do next after a ceremony's
// error, or "". The rules go from the errors that wrap others (a failed
// undo, a step done) to the sentinels they may wrap, so the outermost
// condition speaks.
func escrowHint(err error, in invocation) string {
	dev := in.dev()
	rerun := func(op string) string { return ceremonyCommand(op, in.set, dev) }
	var (
		undo   *escrow.UndoError
		step   *escrow.StepError
		kept   *escrow.KeptKeyslotError
		unf    *escrow.UnfinishedError
		failed *escrow.FailedCardsError
		anch   *escrow.AnchorsError
		rkey   *escrow.RecoveryKeyGivenError
		miss   *escrow.MissingCardsError
		slots  *escrow.SlotsError
		satt   *escrow.SetAttestationError
		fp     *escrow.FingerprintError
		rule   *store.SetRuleError
	)
	switch {
	case errors.As(err, &undo):
		if undo.Op == "enroll" {
			return fmt.Sprintf("run custos status %s, then rerun %s to undo it", dev, rerun("enroll"))
		}
		return fmt.Sprintf("run custos status %s, then rerun %s", dev, rerun(undo.Op))
	case errors.As(err, &step):
		switch step.Done {
		case escrow.StepSharesWritten, escrow.StepSharesVerified:
			return fmt.Sprintf("rerun %s to finish", rerun(step.Op))
		case escrow.StepKeyslotAdded:
			if errors.As(step.Err, &anch) {
				return "the volume opens with the new key; the log is not the one the named copies were written against: run custos log verify and custos status " + dev
			}
			return "the volume opens with the new key; repair the log with custos log verify"
		}
	case errors.As(err, &kept):
		return fmt.Sprintf("if keyslot %d holds a key you added yourself, nothing is wrong; otherwise the old shares may still open the volume: kill it with cryptsetup luksKillSlot %s %d",
			kept.Keyslot, dev, kept.Keyslot)
	case errors.As(err, &unf):
		if unf.Kind == "rotation" {
			return fmt.Sprintf("run custos rotate %s to finish it", dev)
		}
		return fmt.Sprintf("run %s to finish or undo it", rerun("enroll"))
	case errors.As(err, &failed):
		if failed.Set != "" {
			return fmt.Sprintf("replace each across the fleet: custos rotate --set %s --replace OLD=NEW DEVICE...", failed.Set)
		}
		return "rotate the key to a healthy card set: custos rotate " + dev
	case errors.As(err, &anch):
		return "the log is not the one the named copies were written against: run custos log verify and custos status " + dev
	case errors.Is(err, escrow.ErrNoCeremonyLeft):
		return "the keyslot the copies name holds another key: run custos status " + dev
	case errors.Is(err, escrow.ErrQuorum):
		return fmt.Sprintf("insert more custodians' cards, or run custos status %s to see who holds them", dev)
	case errors.Is(err, escrow.ErrAuthorise):
		return "give a passphrase or key file that opens " + dev
	case errors.Is(err, escrow.ErrAlreadyEnrolled):
		return fmt.Sprintf("run custos rotate %s to replace it", dev)
	case errors.Is(err, escrow.ErrNeedsToken):
		return "enroll it with its cards present: custos enroll -k K -n N " + dev
	case errors.Is(err, escrow.ErrNoCeremony) && (in.command == "rotate" || in.command == "rollcall"):
		if in.set != "" {
			return "enroll it first: " + rerun("enroll")
		}
		return fmt.Sprintf("run %s first", rerun("enroll"))
	case errors.Is(err, escrow.ErrUnconfirmed) && in.command == "rotate" && in.keyFile:
		return fmt.Sprintf("authorise with k cards of the ceremony instead of a key file (custos rotate %s): their recovered key proves its keyslot", dev)
	case errors.As(err, &rkey):
		return "give a passphrase or key file of another keyslot, or authorise with k cards"
	case errors.Is(err, escrow.ErrNoCustodian):
		return "name the card's holder with --custodian NAME"
	case errors.Is(err, escrow.ErrSetExists):
		name := in.set
		if name == "" {
			name = "NAME"
		}
		return fmt.Sprintf("change its cards with custos rotate --set %s --replace OLD=NEW, or choose another name", name)
	case errors.As(err, &miss):
		return "insert every card named with --card; nothing was logged"
	case errors.Is(err, escrow.ErrNoCustodyKey):
		return "run custos card init on it first"
	case errors.Is(err, escrow.ErrSlotsFull):
		return "run custos card init --slot on it to make another custody key"
	case errors.As(err, &slots):
		return fmt.Sprintf("name the one to use: --card %s:SLOT", slots.Serial)
	case errors.As(err, &satt):
		return "a set whose attestation does not verify is not taken in; if the card's maker's root is missing, give it with --attestation-roots"
	case errors.Is(err, escrow.ErrSetFile):
		return "give the file custos set export wrote, unchanged"
	case errors.As(err, &fp):
		return "the file was changed, or it is another set: compare with the fingerprint the set's transcript printed"
	case errors.As(err, &rule) && in.command == "set import":
		return "import the set's earlier versions first, in order"
	case errors.Is(err, escrow.ErrNoSet):
		return "create it with custos set create, or import its file with custos set import"
	}
	return ""
}

// report prints err as "custos: error: ..." and its hint, and returns the
// exit code.
func report(w io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	code, hint := classify(err)
	fmt.Fprintf(w, "custos: error: %s\n", message(err))
	if hint != "" {
		fmt.Fprintf(w, "custos: hint: %s\n", hint)
	}
	return code
}

// message makes an error text fit the house style: lowercase first letter,
// no trailing period, one line.
func message(err error) string {
	s := strings.TrimSpace(err.Error())
	s = strings.ReplaceAll(s, "\n", "; ")
	s = strings.TrimRight(s, ".")
	if len(s) > 1 && s[0] >= 'A' && s[0] <= 'Z' && !(s[1] >= 'A' && s[1] <= 'Z') {
		s = strings.ToLower(s[:1]) + s[1:]
	}
	return s
}
