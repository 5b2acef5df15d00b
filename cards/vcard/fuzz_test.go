package vcard

import (
	"bufio"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/state-v1.json")

// fixtureState is testdata/state-v1.json: a card with a P-256 key in slot
// 82, a P-384 key in 9A, a certificate object and a changed PIN.
const fixturePath = "testdata/state-v1.json"

func TestStateFixture(t *testing.T) {
	if *update {
		c, err := NewCard(Config{Serial: 7000001, Version: "5.7.1", CA: sharedCA(t)})
		if err != nil {
			t.Fatal(err)
		}
		authMgmtAES(t, c)
		for _, a := range []string{
			"0047008208 ac06800111aa0103",
			"0047009a05 ac03800114",
			"00db3fff0b 5c035fc10d 5304 70020102",
			"0024008010 313233343536ffff 3837363534333231",
		} {
			if sw := swOf(c.transmit(hexAPDU(t, a))); sw != swOK {
				t.Fatalf("%s: %04x", a, sw)
			}
		}
		b, err := c.app.st.marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fixturePath, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := LoadCard(copyFixture(t))
	if err != nil {
		t.Fatalf("fixture does not load: %v", err)
	}
	if c.Serial() != 7000001 {
		t.Fatalf("fixture serial %d", c.Serial())
	}
	if sw := swOf(c.transmit(hexAPDU(t, "0020008008 3837363534333231"))); sw != swOK {
		t.Fatalf("fixture PIN: %04x", sw)
	}
	// Slot 82 has PIN policy always: one use per VERIFY.
	sign := hexAPDU(t, "0087118207 7c05 8200 8101aa")
	if sw := swOf(c.transmit(sign)); sw != swOK {
		t.Fatalf("first use after VERIFY: %04x", sw)
	}
	if sw := swOf(c.transmit(sign)); sw != swSecurityStatus {
		t.Fatalf("second use without VERIFY: %04x, want 6982", sw)
	}
}

// authMgmtAES authenticates the default AES-192 management key.
func authMgmtAES(t testing.TB, c *Card) {
	t.Helper()
	resp := c.transmit(hexAPDU(t, "00870a9b04 7c028000"))
	if swOf(resp) != swOK || len(resp) != 22 {
		t.Fatalf("witness: %x", resp)
	}
	c.mu.Lock()
	block := c.app.mgmtCipher()
	c.mu.Unlock()
	witness := make([]byte, 16)
	block.Decrypt(witness, resp[4:20])
	cmd := append(hexAPDU(t, "00870a9b26 7c24 8010"), witness...)
	cmd = append(cmd, 0x81, 0x10)
	cmd = append(cmd, make([]byte, 16)...)
	if sw := swOf(c.transmit(cmd)); sw != swOK {
		t.Fatalf("management key authentication: %04x", sw)
	}
}

func copyFixture(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(fixturePath)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "card.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// seedAPDUs reads testdata/apdus.txt: one hex APDU per line.
func seedAPDUs(f *testing.F) [][]byte {
	file, err := os.Open("testdata/apdus.txt")
	if err != nil {
		f.Fatal(err)
	}
	defer file.Close()
	var out [][]byte
	s := bufio.NewScanner(file)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, hexAPDU(f, line))
	}
	return out
}

func FuzzParseAPDU(f *testing.F) {
	for _, a := range seedAPDUs(f) {
		f.Add(a)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseAPDU(b)
		if err != nil {
			if err.(*apduError).sw != swWrongLength {
				t.Fatalf("parse error with sw %04x", err.(*apduError).sw)
			}
			return
		}
		if len(c.data) > len(b) || c.ne < 1 || c.ne > 65536 {
			t.Fatalf("parsed %d data bytes from %d, ne %d", len(c.data), len(b), c.ne)
		}
	})
}

func FuzzLoadState(f *testing.F) {
	good, err := os.ReadFile(fixturePath)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"format":1,"version":"5.7.1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := unmarshalState(b)
		if err != nil {
			return
		}
		// Whatever loads must work as a card.
		a := &applet{st: st, now: time.Now}
		for _, cmd := range []string{"00a4040005a000000308", "0020008000", "00f7009b00", "00f7008200", "00cb3fff055c035fc10d", "00f9820000"} {
			resp := a.process(hexAPDU(t, cmd))
			if len(resp) < 2 {
				t.Fatalf("%s: short response", cmd)
			}
		}
		if _, err := st.marshal(); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzApplet feeds a fresh card a sequence of APDUs (each a 2-byte length
// and its bytes): every one gets a response of at least a status word.
func FuzzApplet(f *testing.F) {
	good, err := os.ReadFile(fixturePath)
	if err != nil {
		f.Fatal(err)
	}
	var all []byte
	for _, a := range seedAPDUs(f) {
		one := binary.BigEndian.AppendUint16(nil, uint16(len(a)))
		f.Add(append(one, a...))
		all = append(all, append(one, a...)...)
	}
	f.Add(all)
	f.Fuzz(func(t *testing.T, in []byte) {
		st, err := unmarshalState(good)
		if err != nil {
			t.Fatal(err)
		}
		a := &applet{st: st, now: time.Now}
		for len(in) >= 2 {
			n := int(binary.BigEndian.Uint16(in))
			in = in[2:]
			if n > len(in) {
				n = len(in)
			}
			resp := a.process(in[:n])
			in = in[n:]
			if len(resp) < 2 || len(resp) > 65538 {
				t.Fatalf("response of %d bytes", len(resp))
			}
		}
		if a.dirty {
			if _, err := st.marshal(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func BenchmarkECDH(b *testing.B) {
	c, err := LoadCard(copyFixture(b))
	if err != nil {
		b.Fatal(err)
	}
	c.path = "" // memory only: measure the applet, not the disk
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	cmd := append(hexAPDU(b, "0087118247 7c45 8200 8541"), peer.PublicKey().Bytes()...)
	verify := hexAPDU(b, "0020008008 3837363534333231")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.transmit(verify) // slot 82 has PIN policy always
		if resp := c.transmit(cmd); swOf(resp) != swOK {
			b.Fatalf("ecdh: %x", resp)
		}
	}
}

func BenchmarkStateWrite(b *testing.B) {
	c, err := LoadCard(copyFixture(b))
	if err != nil {
		b.Fatal(err)
	}
	wrong := hexAPDU(b, "0020008008 3939393939393939")
	right := hexAPDU(b, "0020008008 3837363534333231")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.transmit(wrong) // a failed VERIFY is written before it answers
		c.transmit(right)
	}
}
