package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// env is what every action shares: the process's streams and its one reader
// of standard input.
type env struct {
	stdin  *input
	stdout io.Writer
	stderr io.Writer
	prompt *prompter
	debug  bool // --debug
}

// debugf writes a diagnostic line under --debug; never a secret.
func (e *env) debugf(format string, args ...any) {
	if e.debug {
		e.say("custos: debug: "+format, args...)
	}
}

// startupNotes are what lockdown did and could not do, shown with --debug.
var startupNotes []string

// defaultDB is where the ceremony log lives unless --db says otherwise
// (store.DefaultPath).
const defaultDB = "/var/lib/custos/custos.db"

// defaultTimeout is how long a command waits for a card to be inserted.
const defaultTimeout = 2 * time.Minute

// globals are the flags every command sees.
type globals struct {
	db      string
	json    bool
	timeout time.Duration
	roots   string
	debug   bool
}

func globalsOf(c *cli.Context) globals {
	g := globals{
		db:      c.String("db"),
		json:    c.Bool("json"),
		timeout: c.Duration("timeout"),
		debug:   c.Bool("debug"),
	}
	// card init has its own --attestation-roots; the global one counts
	// when the command's is not given. c.String stops at the nearest
	// command defining the flag, so ask each level in turn.
	for _, x := range c.Lineage() {
		if x.Command == nil {
			continue
		}
		if g.roots = x.String("attestation-roots"); g.roots != "" {
			break
		}
	}
	return g
}

// doc is the help a command carries besides its flags: the examples, the
// prompts it asks in order (scripts feed them one line each), and whether it
// writes data that --json can render. The same values make the --help text,
// the man page and the README's prompt-order table.
type doc struct {
	examples []string // "custos ...  # what it does"
	prompts  []string // in the order asked
}

const leafTemplate = `NAME:
   {{template "helpNameTemplate" .}}

USAGE:
   {{template "usageTemplate" .}}{{if .Description}}

DESCRIPTION:
   {{template "descriptionTemplate" .}}{{end}}{{if .VisibleFlags}}

OPTIONS:{{template "visibleFlagTemplate" .}}{{end}}
`

const parentTemplate = `NAME:
   {{template "helpNameTemplate" .}}

USAGE:
   {{.HelpName}} command [command options]{{if .Description}}

DESCRIPTION:
   {{template "descriptionTemplate" .}}{{end}}

COMMANDS:{{template "visibleCommandTemplate" .}}{{if .VisibleFlags}}

OPTIONS:{{template "visibleFlagTemplate" .}}{{end}}
`

const appTemplate = `NAME:
   {{template "helpNameTemplate" .}}

USAGE:
   {{.HelpName}} [global options] command [command options] [arguments...]{{if .Description}}

DESCRIPTION:
   {{template "descriptionTemplate" .}}{{end}}

COMMANDS:{{template "visibleCommandTemplate" .}}

GLOBAL OPTIONS:{{template "visibleFlagTemplate" .}}
`

// sections renders a doc as the EXAMPLES, PROMPTS and EXIT CODES sections.
// Text goes into a text/template literally, so braces are escaped.
func (d doc) sections() string {
	var b strings.Builder
	b.WriteString("\nEXAMPLES:\n")
	for _, e := range d.examples {
		b.WriteString("   " + e + "\n")
	}
	if len(d.prompts) > 0 {
		b.WriteString("\nPROMPTS (in this order; without a terminal, one line of standard input each):\n")
		for i, p := range d.prompts {
			fmt.Fprintf(&b, "   %d. %s\n", i+1, p)
		}
	}
	b.WriteString("\nEXIT CODES:\n" + exitCodeText + "\n")
	s := b.String()
	if !strings.Contains(s, "{{") && !strings.Contains(s, "}}") {
		return s // nothing to escape, the common case
	}
	return templateBraces.Replace(s)
}

// templateBraces escapes text/template's delimiters in literal text. It is
// built once: newApp runs at every start, with a doc for every command.
var templateBraces = strings.NewReplacer("{{", `{{"{{"}}`, "}}", `{{"}}"}}`)

// docs keeps each command's doc for the man page and the prompt table.
type docs map[*cli.Command]doc

// add attaches d to cmd's help and remembers it.
func (ds docs) add(cmd *cli.Command, d doc) *cli.Command {
	if len(cmd.Subcommands) > 0 {
		cmd.CustomHelpTemplate = parentTemplate + d.sections()
	} else {
		cmd.CustomHelpTemplate = leafTemplate + d.sections()
	}
	ds[cmd] = d
	return cmd
}
