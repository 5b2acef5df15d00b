package main

import (
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// newApp builds the whole command line over the given streams, so that it
// runs in-process in tests exactly as main runs it.
func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	return newEnv(stdin, stdout, stderr).app(stdin)
}

func newEnv(stdin io.Reader, stdout, stderr io.Writer) *env {
	in := newInput(stdin)
	e := &env{stdin: in, stdout: stdout, stderr: stderr}
	e.prompt = &prompter{in: in, out: stderr, debugf: e.debugf}
	return e
}

// app is the command line over e's streams.
func (e *env) app(stdin io.Reader) *cli.App {
	stdout, stderr := e.stdout, e.stderr
	ds := docs{}

	deviceArg := "DEVICE"
	app := &cli.App{
		Name:                 "custos",
		HelpName:             "custos",
		Usage:                "keep a LUKS volume's recovery key with a quorum of smartcard custodians",
		Reader:               stdin,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		HideVersion:          true,
		Suggest:              false,
		ExitErrHandler:       func(*cli.Context, error) {}, // main decides the exit code
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "db", Value: defaultDB, Usage: "the ceremony log: a file `PATH`, or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]", TakesFile: true},
			&cli.BoolFlag{Name: "json", Usage: "write data as JSON (talk still goes to standard error)"},
			&cli.DurationFlag{Name: "timeout", Value: defaultTimeout, Usage: "how long to wait for a card to be inserted"},
			&cli.StringFlag{Name: "attestation-roots", Usage: "PEM `FILE` of extra attestation roots to trust besides Yubico's PIV CA", TakesFile: true},
			&cli.BoolFlag{Name: "debug", Usage: "print diagnostics (never secrets) to standard error", Hidden: true},
		}, dbFlags()...),
		Before: func(c *cli.Context) error {
			e.debug = globalsOf(c).debug
			for _, n := range startupNotes {
				e.debugf("%s", n)
			}
			return nil
		},
		// Runs after the command, whatever it returned: no secret outlives it.
		After: func(*cli.Context) error {
			e.prompt.release()
			e.debugf("%s", cpuTimes())
			return nil
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageErrorf(c, "unknown command %q", c.Args().First())
			}
			return usageErrorf(c, "no command given")
		},
	}

	reader := &cli.StringFlag{Name: "reader", Usage: "use the reader whose name contains `R` (default: the only card present)"}
	keyFile := &cli.StringFlag{Name: "key-file", Usage: "read an existing key of the volume from `F` (whole file; - is standard input), instead of asking for its passphrase", TakesFile: true}
	custodians := &cli.StringSliceFlag{Name: "custodian", Usage: "custodian `NAME`s, one per card, in the order the cards are inserted (repeat the flag)"}
	allowUnattested := &cli.BoolFlag{Name: "allow-unattested", Usage: "accept cards that cannot prove, by an attestation, that their key was made on a genuine card (recorded in the ceremony and shown as a weakness)"}

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
				Flags:  []cli.Flag{reader},
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
					reader,
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
	ds.add(card, doc{examples: []string{"custos card list", "custos card init --custodian alice"}})

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
	ds.add(logCmd, doc{examples: []string{"custos log verify", "custos log show"}})

	app.Commands = []*cli.Command{
		card,
		ds.add(&cli.Command{
			Name:      "enroll",
			Usage:     "split a new recovery key k-of-n over n custody cards and add its keyslot",
			ArgsUsage: deviceArg,
			Flags: []cli.Flag{
				&cli.IntFlag{Name: "k", Usage: "`K` cards needed to recover"},
				&cli.IntFlag{Name: "n", Usage: "`N` cards, one share each"},
				keyFile, custodians, allowUnattested,
			},
			Action: e.enroll,
		}, doc{
			examples: []string{
				"custos enroll -k 3 -n 5 --custodian alice --custodian bob --custodian carol --custodian dave --custodian erin /dev/sda2",
				"custos enroll -k 2 -n 3 --key-file /root/volume.key disk.img",
			},
			prompts: enrollPrompts,
		}),
		ds.add(&cli.Command{
			Name:      "recover",
			Usage:     "collect k custody cards and add a new keyslot to the volume",
			ArgsUsage: deviceArg,
			Flags: append([]cli.Flag{
				&cli.StringFlag{Name: "new-key-file", Usage: "add the new keyslot with the key in `F` (whole file; - is standard input) instead of asking for a passphrase", TakesFile: true},
			}, pbkdfFlags()...),
			Action: e.recover,
		}, doc{
			examples: []string{
				"custos recover /dev/sda2",
				"custos recover --new-key-file /root/new.key disk.img",
				`printf '%s\n' "$pin1" "$pin2" "$pin3" | custos recover --new-key-file new.key disk.img`,
			},
			prompts: recoverPrompts,
		}),
		ds.add(&cli.Command{
			Name:      "rotate",
			Usage:     "replace the recovery key and its shares, possibly with a new card set",
			ArgsUsage: deviceArg,
			Flags: []cli.Flag{
				&cli.IntFlag{Name: "k", Usage: "`K` of the new ceremony (default: as before)"},
				&cli.IntFlag{Name: "n", Usage: "`N` of the new ceremony (default: as before)"},
				keyFile, custodians, allowUnattested,
				&cli.DurationFlag{Name: "wipe-wait", Usage: "how long to wait for each old card leaving the set to be inserted for wiping (default: do not wait; they are listed)"},
			},
			Action: e.rotate,
		}, doc{
			examples: []string{
				"custos rotate /dev/sda2",
				"custos rotate -k 2 -n 3 --custodian alice --custodian bob --custodian frank disk.img",
			},
			prompts: rotatePrompts,
		}),
		ds.add(&cli.Command{
			Name:      "rollcall",
			Usage:     "have each custodian prove their card still opens its share",
			ArgsUsage: deviceArg,
			Flags: []cli.Flag{
				&cli.IntFlag{Name: "cards", Usage: "stop after `C` cards have answered (default: all n)"},
			},
			Action: e.rollcall,
		}, doc{
			examples: []string{"custos rollcall /dev/sda2"},
			prompts:  rollcallPrompts,
		}),
		ds.add(&cli.Command{
			Name:      "status",
			Usage:     "show the volume's ceremony, live shares against the threshold, and unfinished work",
			ArgsUsage: deviceArg,
			Action:    e.status,
		}, doc{examples: []string{
			"custos status /dev/sda2",
			"custos --json status disk.img",
		}}),
		logCmd,
		ds.add(&cli.Command{
			Name:      "completion",
			Usage:     "print a shell completion script",
			ArgsUsage: "bash|zsh",
			Action:    e.completion,
		}, doc{examples: []string{
			"custos completion bash >/etc/bash_completion.d/custos",
			"custos completion zsh >\"${fpath[1]}/_custos\"",
		}}),
		{
			Name:   "gen-man",
			Usage:  "print the man page",
			Hidden: true,
			Action: func(c *cli.Context) error { return e.genMan(c, ds) },
		},
		{
			Name:   "gen-readme",
			Usage:  "print the README's generated tables (prompts, exit codes)",
			Hidden: true,
			Action: func(c *cli.Context) error { return e.genReadme(c, ds) },
		},
	}

	app.CustomAppHelpTemplate = appTemplate + doc{examples: []string{
		"custos card init --custodian alice",
		"custos enroll -k 3 -n 5 --custodian alice ... /dev/sda2",
		"custos recover /dev/sda2",
		"custos log verify",
	}}.sections()

	app.Commands = e.fleetCommands(app.Commands, ds)
	setUsageErrors(app.Commands)
	withInvocation("", app.Commands)
	app.OnUsageError = onUsageError
	return app
}

// parentAction runs for "custos card" and "custos log" without a known
// subcommand.
func parentAction(c *cli.Context) error {
	if c.Args().Present() {
		return usageErrorf(c, "unknown command %q", c.Args().First())
	}
	return usageErrorf(c, "%s needs a command", c.Command.HelpName)
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	return &cliError{code: exitUsage, err: err, hint: helpHint(c)}
}

func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = onUsageError
		setUsageErrors(c.Subcommands)
	}
}

// args checks the number of positional arguments: between min and max.
// urfave/cli stops reading flags at the first argument, so a flag after it
// gets its own message.
func args(c *cli.Context, min, max int, names string) ([]string, error) {
	a := c.Args().Slice()
	for _, s := range a {
		if strings.HasPrefix(s, "-") && s != "-" {
			return nil, usageErrorf(c, "flag %s after the arguments: flags go before %s", s, names)
		}
	}
	switch {
	case len(a) < min:
		return nil, usageErrorf(c, "missing %s", names)
	case len(a) > max:
		return nil, usageErrorf(c, "too many arguments: %s", strings.Join(a[max:], " "))
	}
	return a, nil
}

// run runs app and returns the exit code, reporting any error on stderr.
func run(app *cli.App, argv []string) int {
	err := app.Run(argv)
	if err == nil {
		return exitOK
	}
	return report(app.ErrWriter, err)
}
