package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"custos.dev/custos/internal/realtest"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/store"
)

// runCLI runs the whole command line in-process, as main does.
func runCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	app := newApp(strings.NewReader(stdin), &out, &errb)
	code = run(app, append([]string{"custos"}, args...))
	return out.String(), errb.String(), code
}

// checkStyle checks the house style of every "custos:" line: lowercase
// after the prefix, no trailing period.
func checkStyle(t *testing.T, stderr string) {
	t.Helper()
	for _, l := range strings.Split(strings.TrimRight(stderr, "\n"), "\n") {
		for _, p := range []string{"custos: error: ", "custos: hint: "} {
			if rest, ok := strings.CutPrefix(l, p); ok {
				if rest == "" || strings.ToLower(rest[:1]) != rest[:1] {
					t.Errorf("message not lowercase: %q", l)
				}
				if strings.HasSuffix(rest, ".") {
					t.Errorf("message ends with a period: %q", l)
				}
			}
		}
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string // in the error line
	}{
		{nil, "no command given"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"--bogus"}, "flag provided but not defined"},
		{[]string{"enroll"}, "missing DEVICE"},
		{[]string{"enroll", "img"}, "enroll needs -k K and -n N"},
		{[]string{"enroll", "-k", "1", "-n", "3", "img"}, "need 2 <= k <= n <= 255"},
		{[]string{"enroll", "-k", "4", "-n", "3", "img"}, "need 2 <= k <= n <= 255"},
		{[]string{"enroll", "-k", "x", "-n", "3", "img"}, "invalid value"},
		{[]string{"enroll", "-k", "2", "-n", "2", "--custodian", "a", "--custodian", "b", "--custodian", "c", "img"}, "3 custodians named for 2 cards"},
		{[]string{"enroll", "img", "-k", "3"}, "flag -k after the arguments"},
		{[]string{"recover", "a", "b", "a"}, "device a named twice"},
		{[]string{"enroll", "--set", "dc1", "-n", "3", "a", "b"}, "-n does not go with --set"},
		{[]string{"enroll", "--set", "dc1", "-k", "1", "a"}, "-k 1"},
		{[]string{"rotate", "--set", "dc1", "a"}, "rotate --set needs --replace OLD=NEW"},
		{[]string{"rotate", "--set", "dc1", "--replace", "5000=x", "a"}, `--card "x"`},
		{[]string{"rotate", "--set", "dc1", "--replace", "5000=5001", "--key-file", "k", "a"}, "--key-file does not go with --set"},
		{[]string{"rollcall", "--set", "dc1", "a"}, "too many arguments"},
		{[]string{"status", "--set", "dc1", "a"}, "too many arguments"},
		{[]string{"set"}, "custos set needs a command"},
		{[]string{"set", "create", "--card", "5000", "dc1"}, "at least two cards"},
		{[]string{"set", "create", "--card", "5000", "--card", "5001", "DC1"}, `set name "DC1"`},
		{[]string{"set", "create", "--card", "5000", "--card", "5001", "-k", "3", "dc1"}, "-k 3 for 2 cards"},
		{[]string{"set", "create", "--card", "5000", "--card", "5001:9a", "dc1"}, "82 to 95"},
		{[]string{"set", "import", "f"}, "needs --fingerprint"},
		{[]string{"set", "import", "--fingerprint", "12", "f"}, "64 hex digits"},
		{[]string{"set", "export"}, "missing NAME"},
		{[]string{"recover", "--pbkdf", "md5", "img"}, `--pbkdf "md5"`},
		{[]string{"rotate", "-k", "2", "img"}, "give -k and -n together"},
		{[]string{"status"}, "missing DEVICE"},
		{[]string{"rollcall", "a", "b"}, "too many arguments"},
		{[]string{"card"}, "custos card needs a command"},
		{[]string{"card", "x"}, `unknown command "x"`},
		{[]string{"card", "init", "--slot", "9a"}, "a retired key-management slot, 82 to 95"},
		{[]string{"card", "init", "--pin-policy", "sometimes"}, "one of always, once"},
		{[]string{"card", "init", "--touch-policy", "maybe"}, "one of never, always, cached"},
		{[]string{"card", "list", "extra"}, "too many arguments"},
		{[]string{"log"}, "custos log needs a command"},
		{[]string{"log", "transcript"}, "missing CEREMONY"},
		{[]string{"log", "verify", "--anchor", "zz"}, `--anchor "zz"`},
		{[]string{"--json", "log", "transcript", "x"}, "a transcript is text only"},
		{[]string{"--timeout", "soon", "status", "x"}, "invalid value"},
		{[]string{"completion"}, "missing SHELL"},
		{[]string{"completion", "fish"}, `no completion for shell "fish"`},
		{[]string{"help", "nope"}, "no help topic for 'nope'"},
		{[]string{"--db", filepath.Join(dir, "x.db"), "log", "show", "a", "b"}, "too many arguments"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, code := runCLI(t, "", tc.args...)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, exitUsage, stderr)
			}
			if stdout != "" {
				t.Errorf("usage error wrote to stdout:\n%s", stdout)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "custos: error: ") || !strings.HasPrefix(lines[1], "custos: hint: ") {
				t.Fatalf("stderr is not one error and one hint:\n%s", stderr)
			}
			if !strings.Contains(lines[0], tc.want) {
				t.Errorf("error %q does not say %q", lines[0], tc.want)
			}
			if !strings.Contains(lines[1], "--help") {
				t.Errorf("hint %q does not point at --help", lines[1])
			}
			checkStyle(t, stderr)
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "x.db")); err == nil {
		t.Errorf("a usage error created the log file")
	}
}

// commandPaths lists every visible command as its argv after "custos".
func commandPaths(cmds []*cli.Command, prefix []string) [][]string {
	var out [][]string
	for _, c := range cmds {
		if c.Hidden || c.Name == "help" {
			continue
		}
		p := append(append([]string{}, prefix...), c.Name)
		out = append(out, p)
		out = append(out, commandPaths(c.Subcommands, p)...)
	}
	return out
}

func TestHelpHasExamplesAndExitCodes(t *testing.T) {
	app := newApp(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
	paths := append([][]string{{}}, commandPaths(app.Commands, nil)...)
	if len(paths) < 15 {
		t.Fatalf("only %d commands found", len(paths))
	}
	for _, p := range paths {
		name := strings.Join(append([]string{"custos"}, p...), " ")
		t.Run(name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, "", append(p, "--help")...)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			for _, want := range []string{"USAGE:", "EXAMPLES:\n   custos ", "EXIT CODES:\n   0  done\n   1  error: anything not listed below", "2  usage", "3  quorum not reached", "4  verification failed"} {
				if !strings.Contains(stdout, want) {
					t.Errorf("help lacks %q:\n%s", want, stdout)
				}
			}
			// Every example names this command.
			ex := stdout[strings.Index(stdout, "EXAMPLES:"):]
			ex = ex[:strings.Index(ex, "\n\n")]
			if len(p) > 0 && !strings.Contains(ex, strings.Join(p, " ")) {
				t.Errorf("no example of %s:\n%s", name, ex)
			}
		})
	}
	// "custos help CMD" shows the same text as "custos CMD --help".
	a, _, _ := runCLI(t, "", "help", "enroll")
	b, _, _ := runCLI(t, "", "enroll", "--help")
	if a != b {
		t.Errorf("custos help enroll differs from custos enroll --help:\n%s\n---\n%s", a, b)
	}
	for _, cmd := range [][]string{{"card", "init"}, {"enroll"}, {"recover"}, {"rotate"}, {"rollcall"}} {
		out, _, _ := runCLI(t, "", append(cmd, "--help")...)
		if !strings.Contains(out, "PROMPTS (in this order") {
			t.Errorf("custos %s --help lists no prompts", strings.Join(cmd, " "))
		}
	}
}

// makeLog writes a small ceremony log: three events of a made-up kind.
func makeLog(t *testing.T) (path string, head store.Head) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "custos.db")
	l, err := store.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i, who := range []string{"alice", "bob", "carol"} {
		head, err = l.Append(store.Event{Actor: who, Type: "test.note", Body: json.RawMessage(`{"n":` + string(rune('1'+i)) + `}`)})
		if err != nil {
			t.Fatal(err)
		}
	}
	return path, head
}

func TestLogVerifyTextAndJSON(t *testing.T) {
	db, head := makeLog(t)
	stdout, stderr, code := runCLI(t, "", "--db", db, "--json", "log", "verify", "--anchor", head.String())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var r verifyResult
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, stdout)
	}
	// The log itself adds a creation event before the three notes.
	if !r.OK || r.Head != head.String() || r.Events != head.Seq || r.Anchors != 1 || r.Path != db {
		t.Errorf("verify result %+v, want ok, head %s", r, head)
	}
	text, _, code := runCLI(t, "", "--db", db, "log", "verify")
	if code != 0 {
		t.Fatalf("text verify exit %d", code)
	}
	var want bytes.Buffer
	r.Anchors = 0
	r.writeText(&want)
	if text != want.String() {
		t.Errorf("text output differs from the JSON's struct rendered as text:\n%s\nwant:\n%s", text, want.String())
	}

	// An anchor that is not in the log: verification failed, exit 4.
	bad := head
	bad.Hash[0] ^= 1
	_, stderr, code = runCLI(t, "", "--db", db, "log", "verify", "--anchor", bad.String())
	if code != exitVerify || !strings.Contains(stderr, "custos: hint: ") {
		t.Errorf("wrong anchor: exit %d, want 4 with a hint; stderr:\n%s", code, stderr)
	}
	checkStyle(t, stderr)
}

func TestLogVerifyTampered(t *testing.T) {
	db, _ := makeLog(t)
	raw, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(raw, []byte(`"bob"`))
	if i < 0 {
		t.Fatal("actor not found in the file")
	}
	raw[i+1] = 'r' // "rob"
	if err := os.WriteFile(db, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runCLI(t, "", "--db", db, "--json", "log", "verify")
	if code != exitVerify {
		t.Fatalf("tampered log: exit %d, want 4; stderr:\n%s", code, stderr)
	}
	var r verifyResult
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || r.OK || r.Problem == "" {
		t.Errorf("--json on failure: %+v (%v) from %q", r, err, stdout)
	}
	if !strings.Contains(stderr, "custos: error: ") || !strings.Contains(stderr, "custos: hint: ") {
		t.Errorf("stderr lacks error and hint:\n%s", stderr)
	}
}

func TestLogShowJSON(t *testing.T) {
	db, head := makeLog(t)
	stdout, stderr, code := runCLI(t, "", "--db", db, "--json", "log", "show")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var l eventList
	if err := json.Unmarshal([]byte(stdout), &l); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, stdout)
	}
	if uint64(len(l.Events)) != head.Seq || l.Events[len(l.Events)-1].Hash != head.Hash.String() {
		t.Fatalf("got %d events ending %v, want %d ending %s", len(l.Events), l.Events[len(l.Events)-1].Hash, head.Seq, head.Hash)
	}
	for i := 1; i < len(l.Events); i++ {
		if l.Events[i].Prev != l.Events[i-1].Hash {
			t.Errorf("event %d prev %s, want %s", l.Events[i].Seq, l.Events[i].Prev, l.Events[i-1].Hash)
		}
	}
	last := l.Events[len(l.Events)-1]
	var body bytes.Buffer
	json.Compact(&body, last.Body)
	if last.Actor != "carol" || last.Type != "test.note" || body.String() != `{"n":3}` {
		t.Errorf("last event %+v", last)
	}
	text, _, _ := runCLI(t, "", "--db", db, "log", "show")
	if got := strings.Count(text, "\n"); got != len(l.Events)+1 {
		t.Errorf("text has %d lines for %d events:\n%s", got, len(l.Events), text)
	}
	if !strings.Contains(text, head.Hash.String()) {
		t.Errorf("text lacks the head hash:\n%s", text)
	}

	_, stderr, code = runCLI(t, "", "--db", db, "log", "show", "0123456789abcdef0123456789abcdef")
	if code != exitError || !strings.Contains(stderr, "no ceremony 0123456789abcdef0123456789abcdef in the log") {
		t.Errorf("unknown ceremony: exit %d, stderr %s", code, stderr)
	}
}

func TestLogMissingIsNotCreated(t *testing.T) {
	db := filepath.Join(t.TempDir(), "none", "custos.db")
	for _, args := range [][]string{{"log", "verify"}, {"log", "show"}, {"log", "transcript", "x"}} {
		_, stderr, code := runCLI(t, "", append([]string{"--db", db}, args...)...)
		if code != exitError || !strings.Contains(stderr, "no ceremony log at "+db) || !strings.Contains(stderr, "custos: hint: give the log's path with --db PATH") {
			t.Errorf("%v: exit %d, stderr:\n%s", args, code, stderr)
		}
	}
	if _, err := os.Stat(filepath.Dir(db)); err == nil {
		t.Errorf("reading a missing log created %s", filepath.Dir(db))
	}
}

// complete runs the generated bash completion for the words typed so far
// (the last one being completed) and returns the candidates.
func complete(t *testing.T, script string, words ...string) []string {
	t.Helper()
	var q []string
	for _, w := range words {
		q = append(q, shq(w))
	}
	prog := script + "\nCOMP_WORDS=(" + strings.Join(q, " ") + ")\nCOMP_CWORD=" + string(rune('0'+len(words)-1)) +
		"\n_custos\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
	out, err := exec.Command("bash", "-c", prog).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

func TestCompletion(t *testing.T) {
	bash, stderr, code := runCLI(t, "", "completion", "bash")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	bashPath := realtest.Binary(t, "bash")
	if out, err := exec.Command(bashPath, "-n", "-c", bash).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"custos", "ca"}, "card"},
		{[]string{"custos", "card", ""}, "init list status"},
		{[]string{"custos", "card", "init", "--p"}, "--pin-policy"},
		{[]string{"custos", "--json", "log", "v"}, "verify"},
		{[]string{"custos", "enroll", "--cu"}, "--custodian"},
		{[]string{"custos", "recover", "--new"}, "--new-key-file"},
		{[]string{"custos", "--ti"}, "--timeout"},
	} {
		got := complete(t, bash, tc.words...)
		gotS := strings.Join(got, " ")
		for _, w := range strings.Fields(tc.want) {
			if !strings.Contains(" "+gotS+" ", " "+w+" ") {
				t.Errorf("%v: candidates %q lack %q", tc.words, gotS, w)
			}
		}
	}
	if got := complete(t, bash, "custos", "gen"); strings.Contains(strings.Join(got, " "), "gen-man") {
		t.Errorf("hidden command offered: %v", got)
	}

	zsh, _, code := runCLI(t, "", "completion", "zsh")
	if code != 0 || !strings.HasPrefix(zsh, "#compdef custos\n") || !strings.Contains(zsh, `'--pin-policy:`) {
		t.Errorf("zsh completion: exit %d\n%s", code, zsh)
	}
	if z, err := exec.LookPath("zsh"); err == nil {
		if out, err := exec.Command(z, "-n", "-c", zsh).CombinedOutput(); err != nil {
			t.Errorf("zsh -n: %v\n%s", err, out)
		}
	}
}

func TestMessageStyle(t *testing.T) {
	for in, want := range map[string]string{
		"No help topic for 'x'.": "no help topic for 'x'",
		"PIN blocked":            "PIN blocked",
		"line one\nline two.":    "line one; line two",
		"already fine":           "already fine",
	} {
		if got := message(errString(in)); got != want {
			t.Errorf("message(%q) = %q, want %q", in, got, want)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }
