package vcard

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"strings"
	"testing"
)

// generateRaw generates a P-256 key in slot with a PIN policy, with raw
// APDUs after authenticating the 3DES management key.
func generateRaw(t *testing.T, c *Card, slot, pinPolicy byte) {
	t.Helper()
	authMgmt3DES(t, c)
	cmd := append(hexAPDU(t, "004700"), slot)
	cmd = append(cmd, 0x0b, 0xac, 0x09, 0x80, 0x01, 0x11, 0xaa, 0x01, pinPolicy, 0xab, 0x01, 0x01)
	if resp := c.transmit(cmd); swOf(resp) != swOK {
		t.Fatalf("generate: %x", resp)
	}
}

func ecdhAPDU(t *testing.T, slot byte) []byte {
	t.Helper()
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cmd := append([]byte{0x00, 0x87, 0x11, slot, 0x47, 0x7c, 0x45, 0x82, 0x00, 0x85, 0x41}, peer.PublicKey().Bytes()...)
	return append(cmd, 0x00)
}

// TestPINPolicyAlways: a key with PIN policy "always" answers only the
// command right after a successful VERIFY; any command between them (GET
// DATA, an empty VERIFY, management-key authentication) makes it answer
// 6982, as on a YubiKey. The PIN stays verified for the rest of the
// session: the protected data reads, and a "once" key works.
func TestPINPolicyAlways(t *testing.T) {
	c := newTestCard(t, 3000001, "5.4.3")
	generateRaw(t, c, 0x82, pinPolicyAlways)
	generateRaw(t, c, 0x83, pinPolicyOnce)
	verify := hexAPDU(t, "0020008008 313233343536ffff")
	getPrinted := hexAPDU(t, "00cb3fff05 5c035fc109 00")

	if sw := swOf(c.transmit(verify)); sw != swOK {
		t.Fatalf("verify: %04x", sw)
	}
	if sw := swOf(c.transmit(ecdhAPDU(t, 0x82))); sw != swOK {
		t.Fatalf("always key right after VERIFY: %04x, want 9000", sw)
	}
	if sw := swOf(c.transmit(ecdhAPDU(t, 0x82))); sw != swSecurityStatus {
		t.Errorf("always key a second time: %04x, want 6982", sw)
	}
	if sw := swOf(c.transmit(getPrinted)); sw != swFileNotFound {
		t.Errorf("protected data after the always key: %04x, want 6A82 (PIN still verified, no object)", sw)
	}
	if sw := swOf(c.transmit(ecdhAPDU(t, 0x83))); sw != swOK {
		t.Errorf("once key after the always key: %04x, want 9000", sw)
	}
	for name, between := range map[string][][]byte{
		"GET DATA":     {getPrinted},
		"empty VERIFY": {hexAPDU(t, "00200080")},
		"GET METADATA": {hexAPDU(t, "00f7008200")},
	} {
		c.transmit(verify)
		for _, b := range between {
			c.transmit(b)
		}
		if sw := swOf(c.transmit(ecdhAPDU(t, 0x82))); sw != swSecurityStatus {
			t.Errorf("always key after VERIFY, %s: %04x, want 6982", name, sw)
		}
	}
	c.transmit(verify)
	authMgmt3DES(t, c)
	if sw := swOf(c.transmit(ecdhAPDU(t, 0x82))); sw != swSecurityStatus {
		t.Errorf("always key after VERIFY and management-key authentication: %04x, want 6982", sw)
	}
	// A wrong VERIFY never makes it usable.
	c.transmit(hexAPDU(t, "0020008008 393939393939ffff"))
	if sw := swOf(c.transmit(ecdhAPDU(t, 0x82))); sw != swSecurityStatus {
		t.Errorf("always key after a wrong VERIFY: %04x, want 6982", sw)
	}
}

// TestSerialByFirmware: GET SERIAL exists from firmware 5; a YubiKey 4
// answers 6D00 and tells its serial in the OTP application (SELECT, then
// 01 10), which works on every version; selecting PIV again returns to it.
func TestSerialByFirmware(t *testing.T) {
	for _, tc := range []struct {
		version string
		f8      bool
	}{{"4.3.7", false}, {"5.2.7", true}, {"5.7.1", true}} {
		c := newTestCard(t, 3000002, tc.version)
		resp := c.transmit(hexAPDU(t, "00f8000000"))
		if got := swOf(resp) == swOK; got != tc.f8 {
			t.Errorf("%s: GET SERIAL = %x", tc.version, resp)
		}
		if tc.f8 && binary.BigEndian.Uint32(resp) != 3000002 {
			t.Errorf("%s: GET SERIAL = %x", tc.version, resp)
		}
		if resp := c.transmit(hexAPDU(t, "00a4040008 a000000527200101")); swOf(resp) != swOK || !bytes.HasPrefix(resp, c.app.st.version[:]) {
			t.Errorf("%s: SELECT OTP = %x", tc.version, resp)
		}
		if resp := c.transmit(hexAPDU(t, "00fd000000")); swOf(resp) != swInsNotSupported {
			t.Errorf("%s: a PIV command with OTP selected = %x, want 6D00", tc.version, resp)
		}
		resp = c.transmit(hexAPDU(t, "0001100000"))
		if swOf(resp) != swOK || binary.BigEndian.Uint32(resp) != 3000002 {
			t.Errorf("%s: OTP serial = %x", tc.version, resp)
		}
		if resp := c.transmit(hexAPDU(t, "00a4040005 a000000308 00")); swOf(resp) != swOK {
			t.Errorf("%s: SELECT PIV = %x", tc.version, resp)
		}
		if resp := c.transmit(hexAPDU(t, "00fd000000")); swOf(resp) != swOK {
			t.Errorf("%s: GET VERSION after reselecting PIV = %x", tc.version, resp)
		}
	}
}

// TestPivGoSerialYubiKey4: piv-go reads a 4.3.7 card's serial from the OTP
// application, through pcscd, and yubico-piv-tool shows it.
func TestPivGoSerialYubiKey4(t *testing.T) {
	_, in, yk := insertedYK(t, 3000003, "4.3.7")
	if s, err := yk.Serial(); err != nil || s != 3000003 {
		t.Errorf("piv-go Serial() on 4.3.7 = %d, %v", s, err)
	}
	if _, err := yk.KeyInfo(slot82); err == nil {
		t.Error("GET METADATA answered on 4.3.7")
	}
	yk.Close()
	if out := mustYKPIV(t, in, "-a", "status"); !strings.Contains(out, "Serial Number:\t3000003") || !strings.Contains(out, "Version:\t4.3.7") {
		t.Errorf("yubico-piv-tool -a status on 4.3.7:\n%s", out)
	}
}

// TestHostileModes: each misbehaviour answers every command, whatever it
// is, and Honest ends it.
func TestHostileModes(t *testing.T) {
	c := newTestCard(t, 3000004, "")
	get := hexAPDU(t, "00fd000000")
	c.SetHostile(ChainForever)
	for _, cmd := range [][]byte{get, hexAPDU(t, "00c00000ff")} {
		if resp := c.transmit(cmd); len(resp) != 257 || swOf(resp) != 0x61ff {
			t.Errorf("ChainForever answered %d bytes, %04x", len(resp), swOf(resp))
		}
	}
	c.SetHostile(Garbage)
	if resp := c.transmit(get); len(resp) != 0xffff {
		t.Errorf("Garbage answered %d bytes", len(resp))
	}
	c.SetHostile(Silent)
	n := c.Counts().APDUs
	if resp := c.transmit(get); resp != nil {
		t.Errorf("Silent answered %x", resp)
	}
	if c.Counts().APDUs != n+1 {
		t.Error("a command to a Silent card was not counted")
	}
	c.SetHostile(Honest)
	if resp := c.transmit(get); swOf(resp) != swOK {
		t.Errorf("Honest again: %x", resp)
	}
	for _, h := range []Hostile{Honest, ChainForever, Garbage, Silent} {
		if h.String() == "" || strings.HasPrefix(h.String(), "hostile(") {
			t.Errorf("%d has no name", h)
		}
	}
}
