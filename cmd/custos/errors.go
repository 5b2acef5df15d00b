package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
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

// classifier maps errors of one package below to an exit code and a hint.
type classifier func(err error) (code int, hint string, ok bool)

// classifiers, in order: escrow first (its errors carry hints and wrap the
// others), then cards, then store.
var classifiers = []classifier{classifyEscrow, classifyCards, classifyStore, classifyEtcd}

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
	// The first package that knows the error gives the code; the first
	// hint found, from it or the packages after it, goes with it.
	code, hint, known := exitError, "", false
	for _, f := range classifiers {
		c, h, ok := f(err)
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
