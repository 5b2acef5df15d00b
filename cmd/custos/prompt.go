package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"custos.dev/custos/internal/secmem"
)

// input is the process's one reader of standard input, shared by every
// prompt and by "--key-file -". When standard input is not a terminal, each
// prompt takes exactly one line, in the order the prompts appear, so that a
// ceremony can be scripted. It reads one byte at a time, straight into a
// secmem buffer: it never consumes anything past the line a prompt asked
// for, and no copy of a secret is left behind in a read-ahead buffer or on
// the Go heap.
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

// readLine returns the next line without its line ending ("\n" or "\r\n"),
// in a secmem buffer the caller frees. A last line without a newline
// counts; nothing at all at the end of input is errNoInput. From a
// terminal, echo is off while the line is typed.
func (in *input) readLine() (*secmem.Buf, error) {
	if in.done {
		return nil, errNoInput
	}
	line, err := secmem.New(0)
	if err != nil {
		return nil, err
	}
	if in.tty {
		err = in.readNoEcho(line)
	} else {
		err = line.ReadLine(in.r, maxLine)
	}
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		// A terminal can be read again after ^D; a pipe or file cannot.
		in.done = !in.tty
		if line.Len() == 0 {
			line.Free()
			return nil, errNoInput
		}
	case errors.Is(err, secmem.ErrTooLong):
		line.Free()
		return nil, fmt.Errorf("input line longer than %d bytes", maxLine)
	default:
		line.Free()
		return nil, fmt.Errorf("read standard input: %w", err)
	}
	return line, nil
}

// readNoEcho reads a line from the terminal with echo off, as
// golang.org/x/term's ReadPassword does (canonical mode, signals on, CR
// read as NL, a backspace that reaches us erases), but into line's pages
// rather than the heap. The terminal's state is restored before it
// returns.
func (in *input) readNoEcho(line *secmem.Buf) error {
	old, err := unix.IoctlGetTermios(in.fd, unix.TCGETS)
	if err != nil {
		return err
	}
	st := *old
	st.Lflag &^= unix.ECHO
	st.Lflag |= unix.ICANON | unix.ISIG
	st.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(in.fd, unix.TCSETS, &st); err != nil {
		return err
	}
	defer unix.IoctlSetTermios(in.fd, unix.TCSETS, old)
	err = line.ReadLine(in.r, maxLine)
	// Backspaces the line discipline let through erase in place.
	b, n := line.Bytes(), 0
	for _, c := range b {
		if c == '\b' {
			n = max(n-1, 0)
			continue
		}
		b[n] = c
		n++
	}
	line.Truncate(n)
	return err
}

// readAll reads the rest of standard input (for "--key-file -"), at most
// limit bytes, into a secmem buffer the caller frees.
func (in *input) readAll(limit int) (*secmem.Buf, error) {
	buf, err := secmem.New(0)
	if err != nil {
		return nil, err
	}
	err = buf.ReadAll(in.r, limit)
	in.done = true
	if errors.Is(err, secmem.ErrTooLong) {
		buf.Free()
		return nil, fmt.Errorf("key file larger than %d bytes", limit)
	}
	if err != nil {
		buf.Free()
		return nil, fmt.Errorf("read standard input: %w", err)
	}
	return buf, nil
}

// prompter asks for secrets: from the terminal without echo, or one line of
// standard input per prompt. Prompts go to standard error; nothing typed is
// ever echoed or written anywhere.
//
// Each secret is read into a secmem buffer of its own. package escrow wipes
// what Secret returns but cannot free it, so the prompter keeps every
// buffer it handed out and release wipes and frees them all when the
// command ends.
type prompter struct {
	in     *input
	out    io.Writer
	debugf func(format string, args ...any) // --debug notes; may be nil

	mu   sync.Mutex
	held []*secmem.Buf
}

// Secret asks once. The caller wipes the result; release frees it.
func (p *prompter) Secret(prompt string) ([]byte, error) {
	fmt.Fprintf(p.out, "%s: ", prompt)
	s, err := p.in.readLine()
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
	if s.Len() == 0 {
		s.Free()
		return nil, fmt.Errorf("%s: empty input", prompt)
	}
	p.hold(prompt, s)
	return s.Bytes(), nil
}

// hold keeps s until release, and says under --debug when its pages could
// not be locked.
func (p *prompter) hold(what string, s *secmem.Buf) {
	if err := s.LockErr(); err != nil && p.debugf != nil {
		p.debugf("%s: not locked: %v", what, err)
	}
	p.mu.Lock()
	p.held = append(p.held, s)
	p.mu.Unlock()
}

// release wipes and frees every secret the prompter handed out. Slices
// returned by Secret are invalid afterwards.
func (p *prompter) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.held {
		s.Free()
	}
	p.held = nil
}
