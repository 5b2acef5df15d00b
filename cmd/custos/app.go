package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
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
	return b.String()
}

// helpDocs holds the doc of every command and app built, for the help
// templates' custosSections: the sections are rendered when help is
// shown, rather than into every command's template at every start
// (newApp runs at each command, with a doc for every command: ~95 KB
// built for nothing, most of the app's construction).
var helpDocs sync.Map // *cli.Command or *cli.App -> doc

// sectionsTemplate ends each help template: the sections of the command
// or app being shown.
const sectionsTemplate = "{{custosSections .}}"

func init() {
	cli.HelpPrinter = func(w io.Writer, templ string, data any) {
		cli.HelpPrinterCustom(w, templ, data, map[string]any{"custosSections": helpSections})
	}
}

// helpSections is the sections of the command or app that help shows
// (data of urfave/cli's help templates), or nothing for one without a doc.
func helpSections(data any) string {
	if d, ok := helpDocs.Load(data); ok {
		return d.(doc).sections()
	}
	return ""
}

// docs keeps each command's doc for the man page and the prompt table.
type docs map[*cli.Command]doc

// add attaches d to cmd's help and remembers it.
func (ds docs) add(cmd *cli.Command, d doc) *cli.Command {
	if len(cmd.Subcommands) > 0 {
		cmd.CustomHelpTemplate = parentTemplate + sectionsTemplate
	} else {
		cmd.CustomHelpTemplate = leafTemplate + sectionsTemplate
	}
	helpDocs.Store(cmd, d)
	ds[cmd] = d
	return cmd
}
