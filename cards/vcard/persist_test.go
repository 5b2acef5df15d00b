package vcard

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/internal/realtest"
)

// buildVCard builds cmd/custos-vcard into a temporary directory.
func buildVCard(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "custos-vcard")
	cmd := exec.Command(realtest.Binary(t, "go"), "build", "-o", bin, "custos.dev/custos/cmd/custos-vcard")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startInsert runs "custos-vcard insert" and waits for it to report the
// card inserted.
func startInsert(t *testing.T, bin, state string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "insert", "--state", state, "--port", "35963")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
		io.Copy(io.Discard, stdout)
	}()
	select {
	case s := <-line:
		if !strings.Contains(s, "inserted in "+ReaderName(Port0)) {
			t.Fatalf("custos-vcard insert said %q", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("custos-vcard insert did not report the card")
	}
	return cmd
}

// kill9 kills the emulator process and waits until pcscd lost the card.
func kill9(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Kill() // SIGKILL
	cmd.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := waitReader(ctx, ReaderName(Port0), false); err != nil {
		t.Fatal(err)
	}
}

func TestCommandStateSurvivesKill9(t *testing.T) {
	realtest.LockReaders(t)
	bin := buildVCard(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "card.json")
	out, err := exec.Command(bin, "new", "--state", state, "--serial", "3000001", "--ca", sharedCA(t).dir).CombinedOutput()
	if err != nil {
		t.Fatalf("custos-vcard new: %v\n%s", err, out)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v %v", fi.Mode(), err)
	}
	if out, err := exec.Command(bin, "new", "--state", state, "--serial", "3000002").CombinedOutput(); err == nil || !strings.Contains(string(out), "already exists") {
		t.Fatalf("custos-vcard new over an existing card: %v\n%s", err, out)
	}

	cmd := startInsert(t, bin, state)
	yk := openYK(t, ReaderName(Port0))
	if s, err := yk.Serial(); err != nil || s != 3000001 {
		t.Fatalf("serial %d, %v", s, err)
	}
	if err := yk.SetPIN(piv.DefaultPIN, "31415926"); err != nil {
		t.Fatal(err)
	}
	pub, err := yk.GenerateKey(piv.DefaultManagementKey, slot82, piv.Key{Algorithm: piv.AlgorithmEC256, PINPolicy: piv.PINPolicyAlways, TouchPolicy: piv.TouchPolicyNever})
	if err != nil {
		t.Fatal(err)
	}
	cert := bigCert(t, 2048)
	if err := yk.SetCertificate(piv.DefaultManagementKey, slot82, cert); err != nil {
		t.Fatal(err)
	}
	yk.VerifyPIN("00000000") // one wrong PIN: the counter is state too
	yk.Close()
	kill9(t, cmd)

	c, err := LoadCard(state)
	if err != nil {
		t.Fatalf("state after kill -9: %v", err)
	}
	if got := generatedPublic(t, c, 0x82); !got.Equal(pub.(*ecdsa.PublicKey)) {
		t.Fatal("slot 82 key changed across kill -9")
	}

	startInsert(t, bin, state)
	yk = openYK(t, ReaderName(Port0))
	var ae piv.AuthErr
	if err := yk.VerifyPIN("00000001"); !errors.As(err, &ae) || ae.Retries != 1 {
		t.Fatalf("retry counter after kill -9: %v, want 1 left", err)
	}
	if err := yk.VerifyPIN("31415926"); err != nil {
		t.Fatalf("PIN set before kill -9: %v", err)
	}
	got, err := yk.Certificate(slot82)
	if err != nil || !bytes.Equal(got.Raw, cert.Raw) {
		t.Fatalf("certificate after kill -9: %v", err)
	}
}

// TestCommandKill9MidWrite kills the emulator at random moments while a
// client makes it rewrite its state; the file must always load.
func TestCommandKill9MidWrite(t *testing.T) {
	realtest.LockReaders(t)
	bin := buildVCard(t)
	state := filepath.Join(t.TempDir(), "card.json")
	if out, err := exec.Command(bin, "new", "--state", state, "--serial", "3000003", "--ca", sharedCA(t).dir).CombinedOutput(); err != nil {
		t.Fatalf("custos-vcard new: %v\n%s", err, out)
	}
	for round := 0; round < 3; round++ {
		cmd := startInsert(t, bin, state)
		yk := openYK(t, ReaderName(Port0))
		var wg sync.WaitGroup
		var writes int
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				// A wrong PIN and a right one: two state writes. The
				// loop ends when the card is gone.
				var ae piv.AuthErr
				if err := yk.VerifyPIN("99999999"); !errors.As(err, &ae) {
					return
				}
				if err := yk.VerifyPIN(piv.DefaultPIN); err != nil {
					return
				}
				writes += 2
			}
		}()
		time.Sleep(time.Duration(200+rand.IntN(400)) * time.Millisecond)
		kill9(t, cmd)
		wg.Wait()
		if writes == 0 {
			t.Fatalf("round %d: no state write before the kill", round)
		}
		yk.Close()
		c, err := LoadCard(state)
		if err != nil {
			t.Fatalf("round %d: state after kill -9 mid-write: %v", round, err)
		}
		if s := c.Serial(); s != 3000003 {
			t.Fatalf("round %d: serial %d", round, s)
		}
		if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(state), ".card.json.tmp*")); len(matches) != 0 {
			t.Fatalf("round %d: LoadCard left temporary files %q", round, matches)
		}
	}
}

func TestSwapAndTwoReaders(t *testing.T) {
	realtest.LockReaders(t)
	a := newTestCard(t, 4000001, "")
	b := newTestCard(t, 4000002, "")
	serialIn := func(reader string) uint32 {
		t.Helper()
		yk := openYK(t, reader)
		defer yk.Close()
		s, err := yk.Serial()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ina, err := a.Insert(context.Background(), Port0)
	if err != nil {
		t.Fatal(err)
	}
	inb, err := b.Insert(context.Background(), Port1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Insert(context.Background(), Port1); !errors.Is(err, ErrInserted) {
		t.Fatalf("second Insert of an inserted card = %v, want ErrInserted", err)
	}
	if s := serialIn(ReaderName(Port0)); s != 4000001 {
		t.Fatalf("reader 0 holds %d", s)
	}
	if s := serialIn(ReaderName(Port1)); s != 4000002 {
		t.Fatalf("reader 1 holds %d", s)
	}
	// Swap: b into reader 0, a into reader 1.
	if err := ina.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := inb.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := inb.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	insert(t, b, Port0)
	insert(t, a, Port1)
	if s := serialIn(ReaderName(Port0)); s != 4000002 {
		t.Fatalf("after swap reader 0 holds %d", s)
	}
	if s := serialIn(ReaderName(Port1)); s != 4000001 {
		t.Fatalf("after swap reader 1 holds %d", s)
	}
}

func TestLoadCardRejectsDamage(t *testing.T) {
	c := newTestCard(t, 5000001, "")
	good, err := os.ReadFile(c.StatePath())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCard(c.StatePath()); err != nil {
		t.Fatalf("LoadCard of a good file: %v", err)
	}
	for name, b := range map[string][]byte{
		"truncated": good[:len(good)/2],
		"empty":     nil,
		"retries":   bytes.Replace(good, []byte(`"remaining": 3`), []byte(`"remaining": 9`), 1),
		"mgmt key":  bytes.Replace(good, []byte(`"mgmt_alg": 10`), []byte(`"mgmt_alg": 12`), 1),
		"unknown":   bytes.Replace(good, []byte(`"format": 1`), []byte(`"format": 1, "extra": 2`), 1),
	} {
		p := filepath.Join(t.TempDir(), "card.json")
		os.WriteFile(p, b, 0o600)
		if _, err := LoadCard(p); !errors.Is(err, ErrCorruptState) {
			t.Errorf("%s: LoadCard = %v, want ErrCorruptState", name, err)
		}
	}
}

func TestFailedWriteUndoesCommand(t *testing.T) {
	c := newTestCard(t, 5000002, "")
	// A state directory that vanished: the write fails, even for root.
	dir := filepath.Dir(c.StatePath())
	if err := os.Rename(dir, dir+".gone"); err != nil {
		t.Fatal(err)
	}
	defer os.Rename(dir+".gone", dir)
	resp := c.transmit(hexAPDU(t, "0020008008 3939393939393939"))
	if sw := swOf(resp); sw != swMemoryFailure {
		t.Fatalf("wrong PIN with an unwritable state = %04x, want 6581", sw)
	}
	if sw := swOf(c.transmit(hexAPDU(t, "0020008000"))); sw != 0x63c3 {
		t.Fatalf("retry counter after a failed write = %04x, want 63C3 (undone)", sw)
	}
}
