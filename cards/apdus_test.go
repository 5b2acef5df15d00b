package cards

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/shares"
)

// insNames names the instructions custos sends, for APDU sequences.
var insNames = map[string]string{
	"a4": "SELECT", "fd": "GET VERSION", "f8": "GET SERIAL", "f7": "GET METADATA",
	"20": "VERIFY", "24": "CHANGE REFERENCE DATA", "87": "GENERAL AUTHENTICATE",
	"cb": "GET DATA", "c0": "GET RESPONSE", "db": "PUT DATA", "47": "GENERATE",
	"f9": "ATTEST", "ff": "SET MANAGEMENT KEY", "01": "OTP SERIAL",
}

// apduLog records the commands a virtual card receives, from its trace
// (header and status word, never the data).
type apduLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *apduLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// "vcard 1: 00 a4 04 00 lc=6 -> 19 bytes 9000"
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		name := insNames[f[3]]
		if name == "" {
			name = "INS " + f[3]
		}
		if f[2] == "10" {
			name += " (chained)"
		}
		l.lines = append(l.lines, fmt.Sprintf("%s %s%s -> %s", name, f[4], f[5], f[len(f)-1]))
	}
	return len(b), nil
}

// take returns the commands logged since the last take.
func (l *apduLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

func instructions(seq []string) []string {
	var out []string
	for _, s := range seq {
		out = append(out, s[:strings.LastIndex(s[:strings.Index(s, " -> ")], " ")])
	}
	return out
}

func count(seq []string, name string) int {
	n := 0
	for _, s := range instructions(seq) {
		if s == name {
			n++
		}
	}
	return n
}

// TestAPDUFloor is issue 12's card floor, counted on the card: opening a
// share when the caller holds the sealed share and the recipient (a LUKS2
// token) takes SELECT, GET SERIAL, GET METADATA, VERIFY and GENERAL
// AUTHENTICATE, no more; an enrollment step sends one VERIFY; and the
// sequences of init, enrollment and opening are logged for the record.
func TestAPDUFloor(t *testing.T) {
	lock(t)
	vc := newVCard(t, 4000201, "")
	log := &apduLog{}
	vc.SetTrace(log)
	in := insert(t, vc, vcard.Port0)

	c, err := Open(in.Reader())
	if err != nil {
		t.Fatal(err)
	}
	cu, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, Roots: virtualCA(t).Pool()})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	initSeq := log.take()
	t.Logf("init: %d APDUs\n\t%s", len(initSeq), strings.Join(initSeq, "\n\t"))

	_, _, scs := ceremony(t, cu.PublicKey, cu.PublicKey)

	// A forged share sealed "to" this card (its recipient is the card's
	// key, its ciphertext is not), or the wrong PIN: WriteShare writes
	// nothing, and spends the one VERIFY only on the PIN.
	sealed := *scs[0].Sealed
	sealed.Ciphertext = append([]byte(nil), sealed.Ciphertext...)
	sealed.Ciphertext[0] ^= 1
	c = openCard(t, in.Reader())
	if _, err := c.WriteShare(cu.Slot, testPIN, &sealed, scs[0].Payload); err == nil {
		t.Fatal("WriteShare of a share the card's key does not open succeeded")
	}
	if _, err := c.WriteShare(cu.Slot, []byte("000000"), scs[0].Sealed, scs[0].Payload); !errors.Is(err, ErrWrongPIN) {
		t.Fatalf("WriteShare with a wrong PIN = %v", err)
	}
	c.Close()
	refused := log.take()
	if n := count(refused, "PUT DATA") + count(refused, "PUT DATA (chained)"); n != 0 {
		t.Errorf("a refused enrollment wrote %d times:\n\t%s", n, strings.Join(refused, "\n\t"))
	}
	c = openCard(t, in.Reader())
	if sc, err := c.ReadShare(cu.Slot); !errors.Is(err, ErrNoCustodySlot) {
		t.Errorf("after refused enrollments the slot carries %+v, %v; want no share", sc, err)
	}
	c.Close()
	log.take()

	c = openCard(t, in.Reader())
	sh, err := c.WriteShare(cu.Slot, testPIN, scs[0].Sealed, scs[0].Payload)
	if err != nil {
		t.Fatalf("WriteShare: %v", err)
	}
	if sh.Header != scs[0].Sealed.Header {
		t.Errorf("WriteShare opened %+v", sh.Header)
	}
	c.Close()
	enrollSeq := log.take()
	t.Logf("enroll, one card (Open, WriteShare): %d APDUs\n\t%s", len(enrollSeq), strings.Join(enrollSeq, "\n\t"))
	if n := count(enrollSeq, "VERIFY"); n != 1 {
		t.Errorf("enrollment sent %d VERIFY, want 1", n)
	}

	c = openCard(t, in.Reader())
	sh2, err := c.OpenShare(cu.Slot, testPIN, scs[0].Sealed)
	if err != nil {
		t.Fatalf("OpenShare: %v", err)
	}
	if !bytes.Equal(sh2.Value, sh.Value) {
		t.Error("the share opened again differs")
	}
	c.Close()
	openSeq := log.take()
	t.Logf("open one share with the token (Open, OpenShare): %d APDUs\n\t%s", len(openSeq), strings.Join(openSeq, "\n\t"))
	want := []string{"SELECT", "GET SERIAL", "GET METADATA", "VERIFY", "GENERAL AUTHENTICATE"}
	if got := instructions(openSeq); strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("opening a share sent %q, want %q", got, want)
	}

	// Checking the recipient before asking for the PIN costs nothing:
	// OpenShare does not ask for the slot key again.
	c = openCard(t, in.Reader())
	if err := c.CheckRecipient(cu.Slot, scs[0].Sealed); err != nil {
		t.Fatalf("CheckRecipient: %v", err)
	}
	if _, err := c.OpenShare(cu.Slot, testPIN, scs[0].Sealed); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := instructions(log.take()); strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("CheckRecipient and OpenShare sent %q, want %q", got, want)
	}
	// Nor does OpenShares, a pass over many volumes, after CheckRecipient
	// read the key and its policy (always: VERIFY before each share).
	c = openCard(t, in.Reader())
	if err := c.CheckRecipient(cu.Slot, scs[1].Sealed); err != nil {
		t.Fatalf("CheckRecipient: %v", err)
	}
	if opened, errs, err := c.OpenShares(cu.Slot, testPIN, []*shares.SealedShare{scs[0].Sealed, scs[1].Sealed}); err != nil || opened[0] == nil || opened[1] == nil {
		t.Fatalf("OpenShares: %v %v", errs, err)
	}
	c.Close()
	wantPass := append(slices.Clone(want), "VERIFY", "GENERAL AUTHENTICATE")
	if got := instructions(log.take()); strings.Join(got, ", ") != strings.Join(wantPass, ", ") {
		t.Errorf("CheckRecipient and OpenShares of two shares sent %q, want %q", got, wantPass)
	}

	c = openCard(t, in.Reader())
	if sc, err := c.ReadShare(cu.Slot); err != nil || !carries(sc, scs[0]) {
		t.Fatalf("ReadShare = %+v, %v; want the payload written", sc, err)
	}
	if _, err := c.OpenShare(cu.Slot, testPIN, scs[0].Sealed); err != nil {
		t.Fatal(err)
	}
	c.Close()
	cardOnly := log.take()
	t.Logf("open one share from the card alone (Open, ReadShare, OpenShare): %d APDUs\n\t%s", len(cardOnly), strings.Join(cardOnly, "\n\t"))

	// The peer: yubico-piv-tool verifying the PIN and doing one ECDH with
	// the same key (test-decipher), on the same card in the same run.
	c = openCard(t, in.Reader())
	cert, err := c.readCertificate(cu.Slot)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	certFile := filepath.Join(t.TempDir(), "slot.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	log.take()
	pivTool(t, in.Reader(), "-a", "verify-pin", "-P", string(testPIN), "-a", "test-decipher", "-s", "82", "-i", certFile)
	peer := log.take()
	t.Logf("yubico-piv-tool verify-pin + test-decipher (one ECDH): %d APDUs\n\t%s", len(peer), strings.Join(peer, "\n\t"))
	if len(openSeq) >= len(peer) {
		t.Errorf("custos opens a share with %d APDUs, yubico-piv-tool does one ECDH with %d", len(openSeq), len(peer))
	}
}
