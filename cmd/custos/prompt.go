package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// input is the process's one reader of standard input, shared by every
// prompt and by "--key-file -". When standard input is not a terminal, each
// prompt takes exactly one line, in the order the prompts appear, so that a
// ceremony can be scripted. It reads one byte at a time: it never consumes
// anything past the line a prompt asked for, and no copy of a secret is left
// behind in a read-ahead buffer it cannot wipe.
type input struct {
	r    io.Reader
	fd   int  // the terminal's descriptor when tty is true
	tty  bool // standard input is a terminal: read secrets without echo
	done bool // end of input seen
	// keyFileTookAll: "--key-file -" read standard input to its end.
	keyFileTookAll bool
}

func newInput(r io.Reader) *input {
	in := &input{r: r, fd: -1}
	if f, ok := r.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		in.fd, in.tty = int(f.Fd()), true
	}
	return in
}

// errNoInput means standard input ended before a prompt got its line.
var errNoInput = errors.New("standard input ended")

// maxLine bounds one line of input: far above any PIN or passphrase.
const maxLine = 64 << 10

// readLine returns the next line without its line ending ("\n" or "\r\n").
// The caller owns the slice and wipes it. A last line without a newline
// counts; nothing at all at the end of input is errNoInput.
func (in *input) readLine() ([]byte, error) {
	if in.done {
		return nil, errNoInput
	}
	var line []byte
	var b [1]byte
	for {
		n, err := in.r.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			if len(line) == maxLine {
				wipe(line)
				return nil, fmt.Errorf("input line longer than %d bytes", maxLine)
			}
			line = appendWiping(line, b[0])
			continue
		}
		if err == io.EOF {
			in.done = true
			if len(line) == 0 {
				return nil, errNoInput
			}
			break
		}
		if err != nil {
			wipe(line)
			return nil, fmt.Errorf("read standard input: %w", err)
		}
	}
	b[0] = 0
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line[len(line)-1] = 0
		line = line[:len(line)-1]
	}
	return line, nil
}

// readAll reads the rest of standard input (for "--key-file -"), at most
// limit bytes.
func (in *input) readAll(limit int) ([]byte, error) {
	var buf []byte
	chunk := make([]byte, 4096)
	defer wipe(chunk)
	for !in.done {
		n, err := in.r.Read(chunk)
		for i := 0; i < n; i++ {
			if len(buf) == limit {
				wipe(buf)
				return nil, fmt.Errorf("key file larger than %d bytes", limit)
			}
			buf = appendWiping(buf, chunk[i])
		}
		if err == io.EOF {
			in.done = true
		} else if err != nil {
			wipe(buf)
			return nil, fmt.Errorf("read standard input: %w", err)
		}
	}
	return buf, nil
}

// appendWiping appends c to buf and, when the slice has to grow, wipes the
// old backing array so no stray copy of a secret stays on the heap.
func appendWiping(buf []byte, c byte) []byte {
	if len(buf) < cap(buf) {
		return append(buf, c)
	}
	grown := make([]byte, len(buf), 2*cap(buf)+16)
	copy(grown, buf)
	wipe(buf)
	return append(grown, c)
}

// prompter asks for secrets: from the terminal without echo, or one line of
// standard input per prompt. Prompts go to standard error; nothing typed is
// ever echoed or written anywhere.
type prompter struct {
	in  *input
	out io.Writer
}

// Secret asks once. The caller wipes the result.
func (p *prompter) Secret(prompt string) ([]byte, error) {
	fmt.Fprintf(p.out, "%s: ", prompt)
	var s []byte
	var err error
	if p.in.tty {
		s, err = term.ReadPassword(p.in.fd)
	} else {
		s, err = p.in.readLine()
	}
	fmt.Fprintln(p.out)
	if errors.Is(err, errNoInput) && p.in.keyFileTookAll {
		return nil, &cliError{code: exitUsage, err: fmt.Errorf("%s: %w: the key file took all of it", prompt, err),
			hint: "give the key file by path (--key-file FILE) when prompts read standard input"}
	}
	if errors.Is(err, errNoInput) {
		return nil, &cliError{code: exitError, err: fmt.Errorf("%s: %w", prompt, err),
			hint: "when standard input is not a terminal, give one line per prompt, in the order the README lists"}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prompt, err)
	}
	if len(s) == 0 {
		return nil, fmt.Errorf("%s: empty input", prompt)
	}
	return s, nil
}
