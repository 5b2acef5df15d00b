package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

// The man page, the completion scripts and the README's tables are
// generated from the command definitions (each command's file: its flags,
// examples and prompts), so they never disagree with --help.

// genCommands are completion and the hidden gen-man and gen-readme.
func (e *env) genCommands(ds docs) []*cli.Command {
	return []*cli.Command{
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
}

// genMan prints custos(1) in roff. The sections urfave/cli does not make
// itself (EXIT CODES, EXAMPLES, PROMPTS) are written as markdown into the
// description, which its man renderer turns into sections.
func (e *env) genMan(c *cli.Context, ds docs) error {
	if _, err := args(c, 0, 0, ""); err != nil {
		return err
	}
	app := c.App
	var b strings.Builder
	b.WriteString("custos puts a LUKS volume's recovery key in the hands of a quorum: ")
	b.WriteString("k-of-n Shamir shares, each sealed to a P-256 key on a custodian's PIV smartcard. ")
	b.WriteString("Data goes to standard output, messages to standard error. ")
	b.WriteString("Secrets (PINs, passphrases) are read from the terminal without echo or, when standard input is not a terminal, ")
	b.WriteString("one line of standard input per prompt in the order listed under PROMPTS; never from arguments or the environment.\n\n")
	b.WriteString("# EXIT CODES\n\n")
	for _, l := range strings.Split(exitCodeText, "\n") {
		l = strings.TrimSpace(l)
		code, text, _ := strings.Cut(l, "  ")
		fmt.Fprintf(&b, "**%s**\n: %s\n\n", code, strings.TrimSpace(text))
	}
	b.WriteString("# EXAMPLES\n\n")
	walk(app.Commands, func(name string, cmd *cli.Command) {
		d, ok := ds[cmd]
		if !ok || cmd.Hidden || len(cmd.Subcommands) > 0 {
			return
		}
		fmt.Fprintf(&b, "**%s**\n\n", name)
		for _, ex := range d.examples {
			fmt.Fprintf(&b, "    %s\n", ex)
		}
		b.WriteString("\n")
	})
	b.WriteString("# PROMPTS\n\n")
	walk(app.Commands, func(name string, cmd *cli.Command) {
		d, ok := ds[cmd]
		if !ok || len(d.prompts) == 0 {
			return
		}
		fmt.Fprintf(&b, "**%s**\n\n", name)
		for i, p := range d.prompts {
			fmt.Fprintf(&b, "%d. %s\n", i+1, p)
		}
		b.WriteString("\n")
	})
	// Render a copy of the tree without the help command: urfave/cli's
	// help command is a shared value that can end up listing itself.
	page := *app
	page.Description = b.String()
	page.Commands = visible(app.Commands)
	man, err := page.ToManWithSection(1)
	if err != nil {
		return fmt.Errorf("man page: %w", err)
	}
	_, err = fmt.Fprint(e.stdout, man)
	return err
}

// visible copies the command tree without hidden commands and help.
func visible(cmds []*cli.Command) []*cli.Command {
	var out []*cli.Command
	for _, c := range cmds {
		if c.Hidden || c.Name == "help" {
			continue
		}
		cp := *c
		cp.Subcommands = visible(c.Subcommands)
		out = append(out, &cp)
	}
	return out
}

// walk calls fn for each command with its full name ("custos card init").
func walk(cmds []*cli.Command, fn func(name string, c *cli.Command)) {
	var visit func(prefix string, cmds []*cli.Command)
	visit = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Name == "help" {
				continue
			}
			fn(prefix+" "+c.Name, c)
			visit(prefix+" "+c.Name, c.Subcommands)
		}
	}
	visit("custos", cmds)
}

// level is one place in the command tree: the subcommands and flags that
// may follow it.
type level struct {
	path  string // "" for the top, " card" for custos card, ...
	words []word
}

type word struct{ name, usage string }

func levels(app *cli.App) []level {
	var out []level
	var visit func(path string, cmds []*cli.Command, flags []cli.Flag)
	visit = func(path string, cmds []*cli.Command, flags []cli.Flag) {
		l := level{path: path}
		for _, c := range cmds {
			if c.Hidden || c.Name == "help" {
				continue
			}
			l.words = append(l.words, word{c.Name, c.Usage})
		}
		for _, f := range flags {
			df, ok := f.(cli.DocGenerationFlag)
			if !ok {
				continue
			}
			if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
				continue
			}
			for _, n := range f.Names() {
				dash := "--"
				if len(n) == 1 {
					dash = "-"
				}
				if n == "help" || n == "h" {
					continue
				}
				l.words = append(l.words, word{dash + n, df.GetUsage()})
			}
		}
		out = append(out, l)
		for _, c := range cmds {
			if c.Hidden || c.Name == "help" {
				continue
			}
			visit(path+" "+c.Name, c.Subcommands, c.Flags)
		}
	}
	visit("", app.Commands, app.Flags)
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}

// shq quotes s for a POSIX shell.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func bashCompletion(app *cli.App) string {
	ls := levels(app)
	var b strings.Builder
	b.WriteString("# bash completion for custos; generated by 'custos completion bash'\n\n")
	b.WriteString("_custos_words() {\n  case \"$1\" in\n")
	for _, l := range ls {
		var names []string
		for _, w := range l.words {
			names = append(names, w.name)
		}
		fmt.Fprintf(&b, "    %s) echo %s ;;\n", shq(l.path), shq(strings.Join(names, " ")))
	}
	b.WriteString("  esac\n}\n\n")
	b.WriteString("_custos_is_command() {\n  case \"$1\" in\n")
	for _, l := range ls {
		if l.path != "" {
			fmt.Fprintf(&b, "    %s) return 0 ;;\n", shq(l.path))
		}
	}
	b.WriteString("  esac\n  return 1\n}\n\n")
	b.WriteString(`_custos() {
  local cur=${COMP_WORDS[COMP_CWORD]} cpath="" i
  for ((i = 1; i < COMP_CWORD; i++)); do
    if _custos_is_command "$cpath ${COMP_WORDS[i]}"; then
      cpath="$cpath ${COMP_WORDS[i]}"
    fi
  done
  COMPREPLY=($(compgen -W "$(_custos_words "$cpath")" -- "$cur"))
  if [ ${#COMPREPLY[@]} -eq 0 ]; then
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}

complete -F _custos custos
`)
	return b.String()
}

func zshCompletion(app *cli.App) string {
	ls := levels(app)
	var b strings.Builder
	b.WriteString("#compdef custos\n# zsh completion for custos; generated by 'custos completion zsh'\n\n")
	b.WriteString("_custos() {\n  local cpath=\"\" i\n  local -a opts\n")
	b.WriteString("  for ((i = 2; i < CURRENT; i++)); do\n    case \"$cpath ${words[i]}\" in\n")
	for _, l := range ls {
		if l.path != "" {
			fmt.Fprintf(&b, "      %s) cpath=\"$cpath ${words[i]}\" ;;\n", shq(l.path))
		}
	}
	b.WriteString("    esac\n  done\n  case \"$cpath\" in\n")
	for _, l := range ls {
		fmt.Fprintf(&b, "    %s) opts=(", shq(l.path))
		for i, w := range l.words {
			if i > 0 {
				b.WriteString(" ")
			}
			b.WriteString(shq(w.name + ":" + strings.ReplaceAll(w.usage, ":", `\:`)))
		}
		b.WriteString(") ;;\n")
	}
	b.WriteString("  esac\n  _describe -t commands 'custos' opts || _files\n}\n\n_custos \"$@\"\n")
	return b.String()
}

func (e *env) completion(c *cli.Context) error {
	a, err := args(c, 1, 1, "SHELL (bash or zsh)")
	if err != nil {
		return err
	}
	switch a[0] {
	case "bash":
		_, err = fmt.Fprint(e.stdout, bashCompletion(c.App))
	case "zsh":
		_, err = fmt.Fprint(e.stdout, zshCompletion(c.App))
	default:
		return usageErrorf(c, "no completion for shell %q: bash or zsh", a[0])
	}
	return err
}

// genReadme prints the README's generated blocks — the "Prompt order"
// and "Exit codes" tables — from the same definitions as --help and the
// man page, each between its markers; a test checks that README.md holds
// exactly these blocks.
func (e *env) genReadme(c *cli.Context, ds docs) error {
	if _, err := args(c, 0, 0, ""); err != nil {
		return err
	}
	for _, blk := range readmeBlocks(c.App, ds) {
		if _, err := io.WriteString(e.stdout, blk.text()+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// readmeBlock is a part of README.md generated by custos gen-readme.
type readmeBlock struct{ name, body string }

func (b readmeBlock) begin() string { return "<!-- generated by custos gen-readme: " + b.name + " -->" }

const readmeEnd = "<!-- end of generated block -->"

func (b readmeBlock) text() string { return b.begin() + "\n" + b.body + readmeEnd }

func readmeBlocks(app *cli.App, ds docs) []readmeBlock {
	var p strings.Builder
	p.WriteString("| command | prompts, in order |\n|---|---|\n")
	var none []string
	walk(app.Commands, func(name string, cmd *cli.Command) {
		d, ok := ds[cmd]
		if !ok || cmd.Hidden || len(cmd.Subcommands) > 0 {
			return
		}
		if len(d.prompts) == 0 {
			none = append(none, "`"+name+"`")
			return
		}
		fmt.Fprintf(&p, "| `%s` | %s |\n", name, strings.Join(d.prompts, "; then "))
	})
	if len(none) > 0 {
		fmt.Fprintf(&p, "| %s | none |\n", strings.Join(none, ", "))
	}
	var x strings.Builder
	x.WriteString("| code | meaning |\n|---|---|\n")
	for _, ec := range exitCodes {
		fmt.Fprintf(&x, "| %d | %s |\n", ec.code, strings.ReplaceAll(ec.meaning, "--timeout", "`--timeout`"))
	}
	return []readmeBlock{{"prompts", p.String()}, {"exit codes", x.String()}}
}
