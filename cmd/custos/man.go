package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// The man page is written here in roff, from the same definitions as
// --help, rather than by urfave/cli's ToMan: that one renders markdown
// through github.com/cpuguy83/go-md2man and russross/blackfriday, whose
// package initialisation (regular expressions compiled, 200 KB allocated)
// every custos command paid at start, about 1.5 ms of processor time —
// a tenth of what a recovery costs custos itself. Builds leave urfave/cli's
// renderer out with the build tag urfave_cli_no_docs (scripts/buildflags);
// this page is the same with or without it.

// manPage renders custos(1): NAME, SYNOPSIS, DESCRIPTION, GLOBAL OPTIONS,
// COMMANDS (each leaf with its arguments and options), EXIT CODES,
// EXAMPLES and PROMPTS. Hidden commands and help are left out.
func manPage(app *cli.App, ds docs) string {
	var b strings.Builder
	b.WriteString(".\\\" generated from custos's command definitions; do not edit\n")
	fmt.Fprintf(&b, ".TH CUSTOS 1 \"\" \"%s\" \"User Commands\"\n", roffQuoted(strings.TrimSpace("custos "+app.Version)))
	b.WriteString(".nh\n.ad l\n")

	b.WriteString(".SH NAME\n")
	fmt.Fprintf(&b, "custos \\- %s\n", roffText(app.Usage))

	b.WriteString(".SH SYNOPSIS\n")
	b.WriteString(".B custos\n[\\fIglobal options\\fR] \\fIcommand\\fR [\\fIcommand options\\fR] [\\fIarguments\\fR...]\n")

	b.WriteString(".SH DESCRIPTION\n")
	b.WriteString(roffText("custos puts a LUKS volume's recovery key in the hands of a quorum: " +
		"k-of-n Shamir shares, each sealed to a P-256 key on a custodian's PIV smartcard. " +
		"Data goes to standard output, messages to standard error. " +
		"Secrets (PINs, passphrases) are read from the terminal without echo or, when standard input is not a terminal, " +
		"one line of standard input per prompt in the order listed under PROMPTS; never from arguments or the environment."))
	b.WriteString("\n")

	b.WriteString(".SH GLOBAL OPTIONS\n")
	manFlags(&b, app.Flags)

	b.WriteString(".SH COMMANDS\n")
	walk(app.Commands, func(name string, cmd *cli.Command) {
		if hiddenPath(app.Commands, name) {
			return
		}
		fmt.Fprintf(&b, ".SS \"%s\"\n", roffQuoted(strings.TrimSpace(name+" "+cmd.ArgsUsage)))
		b.WriteString(roffText(cmd.Usage) + "\n")
		if len(cmd.Subcommands) == 0 {
			manFlags(&b, cmd.Flags)
		}
	})

	b.WriteString(".SH EXIT CODES\n")
	for _, ec := range exitCodes {
		fmt.Fprintf(&b, ".TP\n.B %d\n%s\n", ec.code, roffText(ec.meaning))
	}

	b.WriteString(".SH EXAMPLES\n")
	walk(app.Commands, func(name string, cmd *cli.Command) {
		d, ok := ds[cmd]
		if !ok || len(d.examples) == 0 || len(cmd.Subcommands) > 0 || hiddenPath(app.Commands, name) {
			return
		}
		fmt.Fprintf(&b, ".PP\n.B \"%s\"\n.PP\n.EX\n", roffQuoted(name))
		for _, ex := range d.examples {
			b.WriteString(roffText(ex) + "\n")
		}
		b.WriteString(".EE\n")
	})

	b.WriteString(".SH PROMPTS\n")
	b.WriteString("Asked in this order; without a terminal, one line of standard input each.\n")
	walk(app.Commands, func(name string, cmd *cli.Command) {
		d, ok := ds[cmd]
		if !ok || len(d.prompts) == 0 || hiddenPath(app.Commands, name) {
			return
		}
		fmt.Fprintf(&b, ".PP\n.B \"%s\"\n", roffQuoted(name))
		for i, p := range d.prompts {
			fmt.Fprintf(&b, ".IP %d. 4\n%s\n", i+1, roffText(p))
		}
	})
	return b.String()
}

// manFlags writes flags as a tagged list: each name with its value's
// placeholder, then its usage and default.
func manFlags(b *strings.Builder, flags []cli.Flag) {
	for _, f := range flags {
		if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
			continue
		}
		df, ok := f.(cli.DocGenerationFlag)
		if !ok {
			continue
		}
		placeholder, usage := placeholderOf(df.GetUsage())
		var names []string
		for _, n := range f.Names() {
			if n == "help" || n == "h" {
				continue
			}
			dash := "\\-\\-"
			if len(n) == 1 {
				dash = "\\-"
			}
			name := "\\fB" + dash + roffEscape(n) + "\\fR"
			if df.TakesValue() {
				if placeholder == "" {
					placeholder = "value"
				}
				name += " \\fI" + roffEscape(placeholder) + "\\fR"
			}
			names = append(names, name)
		}
		if len(names) == 0 {
			continue
		}
		b.WriteString(".TP\n" + strings.Join(names, ", ") + "\n")
		text := usage
		if def := flagDefault(df); def != "" {
			text += " (default: " + def + ")"
		}
		b.WriteString(roffText(text) + "\n")
	}
}

// placeholderOf splits a flag's usage as --help does: the first word in
// backquotes names the flag's value, and loses its quotes in the text.
func placeholderOf(usage string) (name, text string) {
	before, rest, ok := strings.Cut(usage, "`")
	if !ok {
		return "", usage
	}
	name, after, ok := strings.Cut(rest, "`")
	if !ok {
		return "", usage
	}
	return name, before + name + after
}

// flagDefault is a flag's default as --help shows it, or "" when it has
// none worth saying (an empty string, zero, false).
func flagDefault(f cli.DocGenerationFlag) string {
	if !f.TakesValue() {
		return ""
	}
	switch v := f.GetDefaultText(); v {
	case "", "0", "0s", "false", `""`, "[]":
		return ""
	default:
		return v
	}
}

// hiddenPath reports whether any command on the path name ("custos log
// verify") is hidden.
func hiddenPath(cmds []*cli.Command, name string) bool {
	words := strings.Fields(name)[1:]
	for _, w := range words {
		var next *cli.Command
		for _, c := range cmds {
			if c.Name == w {
				next = c
				break
			}
		}
		if next == nil || next.Hidden {
			return true
		}
		cmds = next.Subcommands
	}
	return false
}

// roffEscape escapes s for roff running text: backslashes and hyphens
// (which roff may otherwise render as typographic dashes, breaking
// copy-and-paste of options).
func roffEscape(s string) string {
	return strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
}

// roffText is s as a line of running text: escaped, and with a line that
// starts with a control character (. or ') kept as text.
func roffText(s string) string {
	s = roffEscape(strings.ReplaceAll(s, "\n", " "))
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// roffQuoted is s inside a quoted macro argument.
func roffQuoted(s string) string {
	return strings.ReplaceAll(roffEscape(s), `"`, `\(dq`)
}
