package vcard

import (
	"bytes"
	"context"
	"crypto/des"
	"crypto/x509"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/ebfe/scard"

	"custos.dev/custos/internal/realtest"
)

func hexAPDU(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func swOf(resp []byte) uint16 {
	return uint16(resp[len(resp)-2])<<8 | uint16(resp[len(resp)-1])
}

// authMgmt3DES authenticates the default 3DES management key with raw
// APDUs, as yubico-piv-tool does.
func authMgmt3DES(t *testing.T, c *Card) {
	t.Helper()
	resp := c.transmit(hexAPDU(t, "0087039b04 7c028000"))
	if swOf(resp) != swOK || len(resp) != 14 {
		t.Fatalf("witness: %x", resp)
	}
	block, _ := des.NewTripleDESCipher(defaultMgmtKey)
	witness := make([]byte, 8)
	block.Decrypt(witness, resp[4:12])
	cmd := append(hexAPDU(t, "0087039b16 7c14 8008"), witness...)
	cmd = append(cmd, 0x81, 0x08, 1, 2, 3, 4, 5, 6, 7, 8)
	if sw := swOf(c.transmit(cmd)); sw != swOK {
		t.Fatalf("management key authentication: %04x", sw)
	}
}

func TestParseAPDU(t *testing.T) {
	for _, tc := range []struct {
		in       string
		ok       bool
		data     int
		ne       int
		extended bool
	}{
		{"00a40400", true, 0, 256, false},
		{"00fd000000", true, 0, 256, false},
		{"00fd000003", true, 0, 3, false},
		{"00a4040005a000000308", true, 5, 256, false},
		{"00a4040005a00000030800", true, 5, 256, false},
		{"00a4040005a00000030810", true, 5, 16, false},
		{"00cb3fff000005 5c035fc105", true, 5, 65536, true},
		{"00cb3fff000005 5c035fc105 0100", true, 5, 256, true},
		{"00cb3fff000000", true, 0, 65536, true},
		{"00a404", false, 0, 0, false},
		{"00a4040005a0000003", false, 0, 0, false},
		{"00a4040005a000000308000000", false, 0, 0, false},
		{"00cb3fff0000", false, 0, 0, false},
		{"00cb3fff000005 5c03", false, 0, 0, false},
		{"00cb3fff00000005", false, 0, 0, false},
	} {
		c, err := parseAPDU(hexAPDU(t, tc.in))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.in, err, tc.ok)
			continue
		}
		if err != nil {
			if err.(*apduError).sw != swWrongLength {
				t.Errorf("%s: sw %04x, want 6700", tc.in, err.(*apduError).sw)
			}
			continue
		}
		if len(c.data) != tc.data || c.ne != tc.ne || c.extended != tc.extended {
			t.Errorf("%s: data %d ne %d ext %v; want %d %d %v", tc.in, len(c.data), c.ne, c.extended, tc.data, tc.ne, tc.extended)
		}
	}
}

// TestMalformedAPDUs sends bad commands straight to the applet: each gets
// the status word a YubiKey gives, and the card keeps working.
func TestMalformedAPDUs(t *testing.T) {
	c := newTestCard(t, 6000001, "5.4.3")
	bigChunk := "10db3fffff" + strings.Repeat("00", 255)
	for _, tc := range []struct {
		name  string
		apdus []string // all but the last must answer 9000
		sw    uint16
	}{
		{"truncated header", []string{"00a4"}, swWrongLength},
		{"lc longer than data", []string{"00a4040008a000000308"}, swWrongLength},
		{"lc shorter than data", []string{"00a4040002a000000308"}, swWrongLength},
		{"extended lc mismatch", []string{"00a40400000008a000000308"}, swWrongLength},
		{"unknown class", []string{"80fd000000"}, swClassNotSupported},
		{"secure messaging class", []string{"0cfd000000"}, swClassNotSupported},
		{"unknown instruction", []string{"0099000000"}, swInsNotSupported},
		{"get data bad p1p2", []string{"00cb000005 5c035fc105"}, swIncorrectP1P2},
		{"get data absent object", []string{"00cb3fff05 5c035fc105"}, swFileNotFound},
		{"get data bad tag list", []string{"00cb3fff03 5c0a01"}, swIncorrectData},
		{"generate without management key", []string{"0047009a05 ac03800111"}, swSecurityStatus},
		{"put data without management key", []string{"00db3fff07 5c035fc105 5300"}, swSecurityStatus},
		{"metadata of a bad slot", []string{"00f7000700"}, swIncorrectP1P2},
		{"metadata of an empty slot", []string{"00f7009a00"}, swFileNotFound},
		{"verify short pin", []string{"0020008004 31323334"}, swIncorrectData},
		{"verify bad reference", []string{"0020008108 3132333435363738"}, swIncorrectP1P2},
		{"get response with nothing pending", []string{"00c0000000"}, swConditionsNotMet},
		{"select other application", []string{"00a4040008 a000000527471117"}, swFileNotFound},
		{"attest an empty slot", []string{"00f99a0000"}, swIncorrectData},
		{"reset while pin not blocked", []string{"00fb000000"}, swConditionsNotMet},
		{"broken chaining", []string{"10db3fff03 5c035f", "00fd000000"}, swLastChainExpected},
		{"oversized chain", []string{bigChunk, bigChunk, bigChunk, bigChunk, bigChunk, bigChunk, bigChunk, bigChunk, bigChunk, bigChunk, bigChunk, bigChunk, bigChunk}, swWrongLength},
		{"management auth wrong witness", []string{"0087039b04 7c028000", "0087039b16 7c14 8008 0000000000000000 8108 0102030405060708"}, swSecurityStatus},
		{"management auth wrong algorithm", []string{"0087089b04 7c028000"}, swIncorrectP1P2},
		{"general authenticate not a template", []string{"0087119a04 01020304"}, swIncorrectData},
	} {
		var resp []byte
		for i, a := range tc.apdus {
			resp = c.transmit(hexAPDU(t, a))
			if i < len(tc.apdus)-1 && swOf(resp) != swOK && !(tc.name == "oversized chain" && swOf(resp) == swWrongLength) {
				t.Fatalf("%s: step %d answered %04x", tc.name, i, swOf(resp))
			}
			if tc.name == "oversized chain" && swOf(resp) == swWrongLength {
				break
			}
		}
		if got := swOf(resp); got != tc.sw || len(resp) != 2 {
			t.Errorf("%s: answered %x, want %04x", tc.name, resp, tc.sw)
		}
		// The card still answers.
		if resp := c.transmit(hexAPDU(t, "00fd000000")); swOf(resp) != swOK || !bytes.Equal(resp[:3], []byte{5, 4, 3}) {
			t.Fatalf("%s: card broken afterwards: %x", tc.name, resp)
		}
	}

	// Authenticated now: bad slots and algorithms.
	authMgmt3DES(t, c)
	for _, tc := range []struct {
		name, apdu string
		sw         uint16
	}{
		{"generate in a bad slot", "0047007005 ac03800111", swIncorrectP1P2},
		{"generate rsa", "0047009a05 ac03800107", swIncorrectData},
		{"generate bad pin policy", "0047009a08 ac06800111aa0107", swIncorrectData},
		{"put data bad tag", "00db3fff07 5c03123456 5300", swIncorrectData},
		{"set management key bad length", "00ffffff05 039b02 0102", swIncorrectData},
		{"set management key aes on 5.4", "00ffffff13 089b10 " + strings.Repeat("01", 16), swOK},
	} {
		if got := swOf(c.transmit(hexAPDU(t, tc.apdu))); got != tc.sw {
			t.Errorf("%s: %04x, want %04x", tc.name, got, tc.sw)
		}
	}
	// An object one byte over the YubiKey's limit, in one extended APDU.
	body := appendTLV(hexAPDU(t, "5c035fc105"), 0x53, make([]byte, maxObjectSize+1))
	cmd := append([]byte{0x00, 0xdb, 0x3f, 0xff, 0x00, byte(len(body) >> 8), byte(len(body))}, body...)
	if got := swOf(c.transmit(cmd)); got != swNotEnoughMemory {
		t.Errorf("put data too big: %04x, want 6a84", got)
	}
}

// TestChainingAndGetResponse writes an object in chained pieces and reads
// it back in 61xx pieces.
func TestChainingAndGetResponse(t *testing.T) {
	c := newTestCard(t, 6000002, "5.4.3")
	authMgmt3DES(t, c)
	obj := bytes.Repeat([]byte{0xab}, 1000)
	data := append(hexAPDU(t, "5c035fc10d 538203e8"), obj...)
	for len(data) > 200 {
		cmd := append([]byte{0x10, 0xdb, 0x3f, 0xff, 200}, data[:200]...)
		if sw := swOf(c.transmit(cmd)); sw != swOK {
			t.Fatalf("chained piece: %04x", sw)
		}
		data = data[200:]
	}
	if sw := swOf(c.transmit(append([]byte{0x00, 0xdb, 0x3f, 0xff, byte(len(data))}, data...))); sw != swOK {
		t.Fatalf("last piece: %04x", sw)
	}
	resp := c.transmit(hexAPDU(t, "00cb3fff05 5c035fc10d 00"))
	var got []byte
	for swOf(resp)&0xff00 == swBytesAvailable {
		got = append(got, resp[:len(resp)-2]...)
		resp = c.transmit(hexAPDU(t, "00c0000000"))
	}
	if swOf(resp) != swOK {
		t.Fatalf("get response: %04x", swOf(resp))
	}
	got = append(got, resp[:len(resp)-2]...)
	if want := append(hexAPDU(t, "538203e8"), obj...); !bytes.Equal(got, want) {
		t.Fatalf("object read back: %d bytes, want %d", len(got), len(want))
	}
}

// TestMalformedThroughPCSCD sends bad commands through the real pcscd: the
// card answers each with a status word and stays usable.
func TestMalformedThroughPCSCD(t *testing.T) {
	realtest.LockReaders(t)
	c := newTestCard(t, 6000003, "")
	in := insert(t, c, Port0)
	ctx, err := scard.EstablishContext()
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Release()
	card, err := ctx.Connect(in.Reader(), scard.ShareExclusive, scard.ProtocolT1)
	if err != nil {
		t.Fatal(err)
	}
	defer card.Disconnect(scard.LeaveCard)
	for _, tc := range []struct {
		apdu string
		sw   uint16
	}{
		{"00a4040005a000000308", swOK},
		{"80fd000000", swClassNotSupported},
		{"0099000000", swInsNotSupported},
		{"00a4040008a000000308", swWrongLength},
		{"00cb000005 5c035fc105", swIncorrectP1P2},
		{"10db3fff03 5c035f", swOK},
		{"00fd000000", swLastChainExpected},
		{"00fd000000", swOK},
	} {
		resp, err := card.Transmit(hexAPDU(t, tc.apdu))
		if err != nil {
			t.Fatalf("%s: %v", tc.apdu, err)
		}
		if got := swOf(resp); got != tc.sw {
			t.Errorf("%s: %04x, want %04x", tc.apdu, got, tc.sw)
		}
	}
	_ = context.Background
}

// TestKeysOtherToolsMake: a key PutKey imports is refused ATTEST with 6A80
// (a YubiKey attests only keys generated on it); one it generates is
// attested with its policies, PIN policy "never" included; a card made
// without attestation answers ATTEST 6D00 and has no 5FFF01, also after
// the state file is loaded again, until attestation is switched back on.
func TestKeysOtherToolsMake(t *testing.T) {
	c := newTestCard(t, 6000011, "")
	c.transmit(hexAPDU(t, "00a4040005a000000308"))
	imported, err := c.PutKey(0x83, PINPolicyAlways, TouchPolicyNever, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := swOf(c.transmit(hexAPDU(t, "00f9830000"))); got != swIncorrectData {
		t.Errorf("ATTEST of an imported key: %04x, want 6a80", got)
	}
	if _, err := c.PutKey(0x82, PINPolicyNever, TouchPolicyNever, false); err != nil {
		t.Fatal(err)
	}
	resp := c.transmit(hexAPDU(t, "00f9820000"))
	for swOf(resp)&0xff00 == swBytesAvailable {
		resp = append(resp[:len(resp)-2], c.transmit(hexAPDU(t, "00c0000000"))...)
	}
	if swOf(resp) != swOK {
		t.Fatalf("ATTEST of a generated key: %04x", swOf(resp))
	}
	cert, err := x509.ParseCertificate(resp[:len(resp)-2])
	if err != nil {
		t.Fatal(err)
	}
	policy := false
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidPolicy) {
			policy = bytes.Equal(e.Value, []byte{pinPolicyNever, touchPolicyNever})
		}
	}
	if !policy {
		t.Error("the attestation does not say PIN policy never")
	}
	if _, err := c.PutKey(0x9b, PINPolicyAlways, TouchPolicyNever, false); err == nil {
		t.Error("PutKey into the management key's slot succeeded")
	}

	if err := c.SetNoAttestation(true); err != nil {
		t.Fatal(err)
	}
	c2, err := LoadCard(c.StatePath())
	if err != nil {
		t.Fatal(err)
	}
	for _, card := range []*Card{c, c2} {
		card.transmit(hexAPDU(t, "00a4040005a000000308"))
		if got := swOf(card.transmit(hexAPDU(t, "00f9820000"))); got != swInsNotSupported {
			t.Errorf("ATTEST on a card without attestation: %04x, want 6d00", got)
		}
		if got := swOf(card.transmit(hexAPDU(t, "00cb3fff05 5c035fff01"))); got != swFileNotFound {
			t.Errorf("GET DATA 5FFF01 on a card without attestation: %04x, want 6a82", got)
		}
	}
	if err := c2.SetNoAttestation(false); err != nil {
		t.Fatal(err)
	}
	if got := swOf(c2.transmit(hexAPDU(t, "00f9820000"))); got != swOK && got&0xff00 != swBytesAvailable {
		t.Errorf("ATTEST with attestation back on: %04x", got)
	}
	if k := c2.app.st.Keys[0x83]; k == nil || k.Origin != originImported || !k.priv.PublicKey.Equal(imported) {
		t.Error("the imported key was not kept in the state file")
	}
}
