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

	// The commands in the order help lists them; each is defined, with
	// its flags, examples, prompts, views and action, in its own file.
	app.Commands = []*cli.Command{
		e.cardCommand(ds),
		e.enrollCommand(ds),
		e.recoverCommand(ds),
		e.rotateCommand(ds),
		e.rollcallCommand(ds),
		e.statusCommand(ds),
		e.logCommand(ds),
	}
	app.Commands = append(app.Commands, e.genCommands(ds)...)
	app.Commands = append(app.Commands, e.setCommand(ds))

	app.CustomAppHelpTemplate = appTemplate + sectionsTemplate
	helpDocs.Store(app, doc{examples: []string{
		"custos card init --custodian alice",
		"custos enroll -k 3 -n 5 --custodian alice ... /dev/sda2",
		"custos recover /dev/sda2",
		"custos log verify",
	}})

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
