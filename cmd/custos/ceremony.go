package main

import "github.com/urfave/cli/v2"

// The prompts each ceremony asks, in order (help, man page and README).
var (
	cardInitPrompts = []string{
		"new PIN, then again",
		"new PUK, then again",
	}
	enrollPrompts = []string{
		"passphrase of an existing keyslot (unless --key-file)",
		"for each card i of n, once it is inserted: the PIN of card i",
	}
	recoverPrompts = []string{
		"for each card offered, once it is inserted: its PIN (until k shares are good)",
		"new passphrase, then again (unless --new-key-file)",
	}
	rotatePrompts = []string{
		"without --key-file: for each old card offered, its PIN (until k shares are good); with --key-file: nothing",
		"for each new card i of n, once it is inserted: the PIN of card i",
	}
	rollcallPrompts = []string{
		"for each card, once it is inserted: its PIN",
	}
)

func (e *env) cardInit(c *cli.Context) error { return notYet("card init") }
func (e *env) enroll(c *cli.Context) error   { return notYet("enroll") }
func (e *env) recover(c *cli.Context) error  { return notYet("recover") }
func (e *env) rotate(c *cli.Context) error   { return notYet("rotate") }
func (e *env) rollcall(c *cli.Context) error { return notYet("rollcall") }
func (e *env) status(c *cli.Context) error   { return notYet("status") }
