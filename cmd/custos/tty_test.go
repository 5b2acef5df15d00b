package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair: the control side (what a terminal
// emulator holds) and the terminal side (what the program reads).
func openPTY(t *testing.T) (ctrl, tty *os.File) {
	t.Helper()
	ctrl, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	var unlock int32
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, ctrl.Fd(), unix.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); errno != 0 {
		t.Fatalf("unlock pty: %v", errno)
	}
	n, err := unix.IoctlGetInt(int(ctrl.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	t.Cleanup(func() { tty.Close(); ctrl.Close() })
	return ctrl, tty
}

// TestTerminalNoEcho types a PIN on a real pseudo-terminal once the prompt
// has turned echo off, and checks that the terminal shows nothing of it.
func TestTerminalNoEcho(t *testing.T) {
	ctrl, tty := openPTY(t)
	in := newInput(tty)
	if !in.tty {
		t.Fatal("a pty is not seen as a terminal")
	}
	var talk bytes.Buffer
	p := &prompter{in: in, out: &talk}
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := p.Secret("pin for card 1001 (custodian alice)")
		done <- result{b, err}
	}()
	// Wait until the prompt has switched echo off, as a person would wait
	// for the prompt before typing.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if st.Lflag&unix.ECHO == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("echo never switched off")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := ctrl.WriteString("a1a1a1\n"); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || string(r.b) != "a1a1a1" {
		t.Fatalf("read %q, %v", r.b, r.err)
	}
	// Echo is back on after the prompt.
	st, _ := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if st.Lflag&unix.ECHO == 0 {
		t.Error("echo left off after the prompt")
	}
	// Whatever the terminal shows now: nothing of the PIN.
	buf := make([]byte, 4096)
	n := 0
	fds := []unix.PollFd{{Fd: int32(ctrl.Fd()), Events: unix.POLLIN}}
	if k, _ := unix.Poll(fds, 300); k > 0 {
		n, _ = ctrl.Read(buf)
	}
	if strings.Contains(string(buf[:n]), "a1a1a1") {
		t.Errorf("the terminal echoed the PIN: %q", buf[:n])
	}
	if strings.Contains(talk.String(), "a1a1a1") {
		t.Errorf("the prompt stream holds the PIN: %q", talk.String())
	}

	// A backspace that the line discipline passes on (its erase character
	// is DEL) erases, as in golang.org/x/term's ReadPassword.
	go func() {
		b, err := p.Secret("pin again")
		done <- result{b, err}
	}()
	if _, err := ctrl.WriteString("b2b2bX\b2\n"); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.err != nil || string(r.b) != "b2b2b2" {
		t.Errorf("typed b2b2bX, backspace, 2: read %q, %v", r.b, r.err)
	}
	p.release()
}
