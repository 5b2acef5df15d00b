package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"custos.dev/custos/internal/realtest"
)

func TestManPage(t *testing.T) {
	stdout, stderr, code := runCLI(t, "", "gen-man")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{".TH CUSTOS 1", ".SH NAME", ".SH SYNOPSIS", ".SH GLOBAL OPTIONS", ".SH COMMANDS",
		".SH EXIT CODES", ".SH EXAMPLES", ".SH PROMPTS",
		`.SS "custos card init"`, `.SS "custos recover DEVICE..."`, `\fB\-\-key\-file\fR \fIF\fR`,
		"quorum not reached", "custos card init \\-\\-custodian alice", "custos log transcript",
		"custos card status \\-\\-reader", "printf '%s\\en'"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	for _, code := range exitCodes {
		if !strings.Contains(stdout, ".TP\n.B "+string(rune('0'+code.code))+"\n") {
			t.Errorf("man page lacks exit code %d", code.code)
		}
	}
	if strings.Contains(stdout, "gen\\-man") || strings.Contains(stdout, "gen-man") || strings.Contains(stdout, "gen\\-readme") {
		t.Errorf("man page lists a hidden command")
	}
	// roff: a hyphen in running text is \-, a backslash \e, and no line
	// of text starts with a control character.
	for i, line := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'") || strings.HasPrefix(line, `\"`) {
			continue // requests and macros
		}
		if m := regexp.MustCompile(`(^|[^\\])-`).FindStringIndex(line); m != nil {
			t.Errorf("line %d: unescaped hyphen: %q", i+1, line)
		}
	}
	man, err := exec.LookPath("man")
	if err != nil {
		return
	}
	f := filepath.Join(t.TempDir(), "custos.1")
	if err := os.WriteFile(f, []byte(stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(man, "-l", f)
	cmd.Env = append(os.Environ(), "MANPAGER=cat", "PAGER=cat", "MANWIDTH=100")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("man -l: %v (not fatal: man may be a stub)\n%s", err, out)
		return
	}
	for _, want := range []string{"EXIT CODES", "--key-file F", "custos card status --reader"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("man renders no %q:\n%s", want, out)
		}
	}
}

// TestBuildLeavesOutMarkdown checks that custos as the scripts build it
// (with scripts/go.sh's tags) links no markdown renderer: blackfriday's
// package initialisation alone cost every command ~1.5 ms at start.
func TestBuildLeavesOutMarkdown(t *testing.T) {
	sh, err := os.ReadFile("../../scripts/go.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^export GOFLAGS="(-tags=[^"$ ]+)`).FindSubmatch(sh)
	if m == nil {
		t.Fatal("scripts/go.sh sets no -tags in GOFLAGS")
	}
	gobin := realtest.GoCommand(t)
	cmd := exec.Command(gobin, "list", "-deps", string(m[1]), ".")
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("github.com/urfave/cli/v2\n")) {
		t.Fatalf("go list lists no urfave/cli: the check would pass on anything:\n%s", out)
	}
	for _, pkg := range []string{"github.com/russross/blackfriday/v2", "github.com/cpuguy83/go-md2man/v2/md2man"} {
		if bytes.Contains(out, []byte(pkg+"\n")) {
			t.Errorf("custos built with %s links %s", m[1], pkg)
		}
	}
}
