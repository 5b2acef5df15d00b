package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/internal/realtest"
)

// countingReader counts the bytes taken from it, to prove that a prompt
// never reads past its line.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestPromptsReadOneLineEachInOrder(t *testing.T) {
	src := &countingReader{r: strings.NewReader("first\nsecond\r\n\nthird")}
	var talk bytes.Buffer
	p := &prompter{in: newInput(src), out: &talk}
	defer p.release()

	got, err := p.Secret("pin for card 1")
	if err != nil || string(got) != "first" {
		t.Fatalf("first prompt: %q, %v", got, err)
	}
	if src.n != len("first\n") {
		t.Errorf("first prompt consumed %d bytes, want %d: it read past its line", src.n, len("first\n"))
	}
	got, err = p.Secret("pin for card 2")
	if err != nil || string(got) != "second" {
		t.Fatalf("second prompt (CRLF): %q, %v", got, err)
	}
	if src.n != len("first\nsecond\r\n") {
		t.Errorf("after two prompts %d bytes consumed", src.n)
	}
	if _, err := p.Secret("pin for card 3"); err == nil || !strings.Contains(err.Error(), "empty input") {
		t.Errorf("empty line: %v, want an error", err)
	}
	got, err = p.Secret("new passphrase")
	if err != nil || string(got) != "third" {
		t.Fatalf("last line without newline: %q, %v", got, err)
	}
	_, err = p.Secret("new passphrase again")
	if !errors.Is(err, errNoInput) {
		t.Fatalf("after the end: %v, want errNoInput", err)
	}
	code, hint := classify(err)
	if code != exitError || !strings.Contains(hint, "one line per prompt") {
		t.Errorf("end of input: code %d hint %q", code, hint)
	}
	// Prompts go to the talk stream, in order, and nothing typed does.
	wantTalk := "pin for card 1: \npin for card 2: \npin for card 3: \nnew passphrase: \nnew passphrase again: \n"
	if talk.String() != wantTalk {
		t.Errorf("prompts written:\n%q\nwant\n%q", talk.String(), wantTalk)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "key")
	os.WriteFile(f, []byte("s3cret\n"), 0o600)
	k, err := readKeyFile(newInput(strings.NewReader("")), f)
	if err != nil || string(k.Bytes()) != "s3cret\n" {
		t.Errorf("key file: %q, %v; want every byte, newline included, as cryptsetup reads it", k.Bytes(), err)
	}
	if k.Cap() > os.Getpagesize() {
		t.Errorf("a 7-byte key file took %d bytes: it was moved while read", k.Cap())
	}
	k.Free()

	in := newInput(strings.NewReader("from\nstdin\n"))
	k, err = readKeyFile(in, "-")
	if err != nil || string(k.Bytes()) != "from\nstdin\n" {
		t.Errorf("key file on stdin: %q, %v", k.Bytes(), err)
	}
	k.Free()
	// The key file took standard input: a prompt after it says why it
	// has nothing.
	_, err = (&prompter{in: in, out: io.Discard}).Secret("pin")
	if code, hint := classify(err); code != exitUsage || !strings.Contains(hint, "--key-file FILE") {
		t.Errorf("prompt after --key-file -: %v (code %d, hint %q)", err, code, hint)
	}

	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600)
	if _, err := readKeyFile(newInput(strings.NewReader("")), filepath.Join(dir, "empty")); err == nil {
		t.Error("empty key file accepted")
	}
	if _, err := readKeyFile(newInput(strings.NewReader("")), "-"); err == nil {
		t.Error("empty stdin accepted as a key file")
	}
	if _, err := readKeyFile(newInput(strings.NewReader("")), filepath.Join(dir, "missing")); err == nil {
		t.Error("missing key file accepted")
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, bytes.Repeat([]byte{'k'}, maxKeyFile+1), 0o600)
	if _, err := readKeyFile(newInput(strings.NewReader("")), big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized key file: %v", err)
	}
}

func TestLineTooLong(t *testing.T) {
	in := newInput(strings.NewReader(strings.Repeat("x", maxLine+1) + "\n"))
	if _, err := in.readLine(); err == nil {
		t.Error("a line longer than maxLine was accepted")
	}
}

// TestSecretsLiveInLockedPagesUntilRelease: what Secret returns is a
// view of a secmem buffer the prompter holds, not a heap copy, and release
// frees every one of them.
func TestSecretsLiveInLockedPagesUntilRelease(t *testing.T) {
	p := &prompter{in: newInput(strings.NewReader("123456\npassphrase\n")), out: io.Discard}
	a, err := p.Secret("pin")
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Secret("passphrase")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.held) != 2 {
		t.Fatalf("prompter holds %d buffers after two secrets, want 2", len(p.held))
	}
	for i, s := range [][]byte{a, b} {
		h := p.held[i]
		if unsafe.SliceData(s) != unsafe.SliceData(h.Bytes()) || len(s) != h.Len() {
			t.Errorf("secret %d is not the held buffer's bytes: a copy", i)
		}
		if h.LockErr() != nil {
			realtest.Missing(t, "secrets not locked: %v", h.LockErr())
		}
	}
	held := p.held
	p.release()
	if len(p.held) != 0 {
		t.Error("release kept buffers")
	}
	for i, h := range held {
		if h.Bytes() != nil || h.Cap() != 0 {
			t.Errorf("buffer %d not freed by release", i)
		}
	}
}

// TestAfterReleasesSecrets: the app frees every prompted secret when the
// command ends, even when it fails.
func TestAfterReleasesSecrets(t *testing.T) {
	var stderr bytes.Buffer
	stdin := strings.NewReader("passphrase\n")
	e := newEnv(stdin, io.Discard, &stderr)
	app := e.app(stdin)
	var held int
	for _, c := range app.Commands {
		if c.Name == "status" {
			c.Action = func(*cli.Context) error {
				if _, err := e.prompt.Secret("passphrase"); err != nil {
					return err
				}
				held = len(e.prompt.held)
				return errors.New("boom")
			}
		}
	}
	if code := run(app, []string{"custos", "status", "x"}); code != exitError {
		t.Fatalf("exit %d, want %d; stderr %s", code, exitError, stderr.String())
	}
	if held != 1 {
		t.Fatalf("the prompter held %d secrets during the command, want 1", held)
	}
	if len(e.prompt.held) != 0 {
		t.Error("a secret outlived the command")
	}
}
