package cards

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"

	"custos.dev/custos/cards/vcard"
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
	c = openCard(t, in.Reader())
	sh, back, err := c.EnrollShare(cu.Slot, testPIN, scs[0])
	if err != nil {
		t.Fatalf("EnrollShare: %v", err)
	}
	if sh.Header != scs[0].Sealed.Header || back.Ceremony != scs[0].Ceremony || back.Commitment != scs[0].Commitment || back.Anchor != scs[0].Anchor {
		t.Errorf("EnrollShare opened %+v, read back %+v", sh.Header, back)
	}
	c.Close()
	enrollSeq := log.take()
	t.Logf("enroll, one card (Open, EnrollShare): %d APDUs\n\t%s", len(enrollSeq), strings.Join(enrollSeq, "\n\t"))
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

	c = openCard(t, in.Reader())
	if _, err := c.ReadShare(cu.Slot); err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenShare(cu.Slot, testPIN, scs[0].Sealed); err != nil {
		t.Fatal(err)
	}
	c.Close()
	cardOnly := log.take()
	t.Logf("open one share from the card alone (Open, ReadShare, OpenShare): %d APDUs\n\t%s", len(cardOnly), strings.Join(cardOnly, "\n\t"))
}
