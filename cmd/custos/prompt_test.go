package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	if err != nil || string(k) != "s3cret\n" {
		t.Errorf("key file: %q, %v; want every byte, newline included, as cryptsetup reads it", k, err)
	}

	in := newInput(strings.NewReader("from\nstdin\n"))
	k, err = readKeyFile(in, "-")
	if err != nil || string(k) != "from\nstdin\n" {
		t.Errorf("key file on stdin: %q, %v", k, err)
	}
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

func TestAppendWipingClearsOldArrays(t *testing.T) {
	buf := make([]byte, 0, 2)
	buf = appendWiping(buf, 'a')
	buf = appendWiping(buf, 'b')
	old := buf
	buf = appendWiping(buf, 'c') // grows: old array must be wiped
	if string(buf) != "abc" {
		t.Fatalf("got %q", buf)
	}
	if old[0] != 0 || old[1] != 0 {
		t.Errorf("old backing array still holds %q", old)
	}
}
