package cards

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeyHistory: the encoding of SP 800-73-4 Part 1 Table 19, the vector
// OpenSC's tests write by hand (one retired key with its certificate on the
// card), and the refusals.
func TestKeyHistory(t *testing.T) {
	one := unhex(t, "C1 01 01 C2 01 00 FE 00")
	if got := (keyHistory{onCard: 1}).marshal(); !bytes.Equal(got, one) {
		t.Errorf("marshal = % X, want % X", got, one)
	}
	h, err := parseKeyHistory(one)
	if err != nil || h.onCard != 1 || h.offCard != 0 || h.url != nil {
		t.Errorf("parse = %+v, %v", h, err)
	}
	withURL := keyHistory{onCard: 2, offCard: 3, url: []byte("http://example.com/certs")}
	if h, err := parseKeyHistory(withURL.marshal()); err != nil || !h.equal(withURL) {
		t.Errorf("round trip with URL = %+v, %v", h, err)
	}
	for name, b := range map[string]string{
		"no C2":            "C1 01 01 FE 00",
		"no C1":            "C2 01 01 FE 00",
		"count 21":         "C1 01 15 C2 01 00 FE 00",
		"sum 21":           "C1 01 0B C2 01 0A FE 00",
		"two bytes":        "C1 02 00 01 C2 01 00 FE 00",
		"unknown tag":      "C1 01 01 C2 01 00 C3 00 FE 00",
		"twice":            "C1 01 01 C1 01 01 C2 01 00",
		"error code":       "C1 01 01 C2 01 00 FE 01 00",
		"truncated":        "C1 01 01 C2 01",
		"empty URL":        "C1 01 01 C2 01 01 F3 00 FE 00",
		"length past end":  "C1 05 01",
		"indefinite":       "C1 80 01 00 00",
		"four-byte length": "C1 84 00 00 00 01 01",
	} {
		if h, err := parseKeyHistory(unhex(t, b)); err == nil {
			t.Errorf("%s: parse(%s) = %+v, want an error", name, b, h)
		}
	}

	for _, tc := range []struct {
		h       keyHistory
		slot    uint8
		want    int
		changed bool
	}{
		{keyHistory{}, 0x82, 1, true},
		{keyHistory{}, 0x90, 15, true},
		{keyHistory{onCard: 3}, 0x83, 3, false},
		{keyHistory{onCard: 3, offCard: 2}, 0x86, 5, true},
		{keyHistory{onCard: 3, offCard: 10}, 0x90, 3, false}, // 15 + 10 > 20
		{keyHistory{}, 0x95, 20, true},
	} {
		got, changed := tc.h.covering(tc.slot)
		if got.onCard != tc.want || changed != tc.changed || got.offCard != tc.h.offCard {
			t.Errorf("%+v.covering(%02x) = %+v, %v; want onCard %d, %v", tc.h, tc.slot, got, changed, tc.want, tc.changed)
		}
	}
}

// TestAdminData: the admin data custos writes is byte for byte what ykman's
// PivmanData (mgm_key_protected) and libykpiv's ykpiv_util_set_protected_mgm
// write on a card without admin data: 80 { 81 01 02 }. Existing items are
// kept, the salt of a PIN-derived key removed, and the protected data holds
// the key as both tools read it: 88 { 89 key }.
func TestAdminData(t *testing.T) {
	if got, want := protectedAdmin(nil).marshal(), unhex(t, "80 03 81 01 02"); !bytes.Equal(got, want) {
		t.Errorf("admin data on a fresh card = % X, want % X", got, want)
	}
	salt := strings.Repeat("AB", 16)
	old, err := parsePivman(unhex(t, "80 1B 81 01 01 82 10"+salt+"83 04 5F 00 00 01"), 0x80)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := protectedAdmin(old).marshal(), unhex(t, "80 09 81 01 03 83 04 5F 00 00 01"); !bytes.Equal(got, want) {
		t.Errorf("admin data over a PUK-blocked, salted one = % X, want % X", got, want)
	}
	key := bytes.Repeat([]byte{0x42}, 24)
	p := &pivmanObject{outer: 0x88}
	p.set(protectedMgmKey, key)
	want := append(unhex(t, "88 1A 89 18"), key...)
	if got := p.marshal(); !bytes.Equal(got, want) {
		t.Errorf("protected data = % X, want % X", got, want)
	}
	back, err := parsePivman(want, 0x88)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := back.get(protectedMgmKey); !ok || !bytes.Equal(k, key) {
		t.Errorf("stored key read back = %x, %v", k, ok)
	}
	back.wipe()
	if k, _ := back.get(protectedMgmKey); !bytes.Equal(k, make([]byte, 24)) {
		t.Error("wipe left the key")
	}
	for name, b := range map[string]string{
		"wrong outer": "88 03 81 01 02",
		"twice":       "80 06 81 01 02 81 01 02",
		"two-byte":    "80 04 5F 01 01 00",
		"trailing":    "80 03 81 01 02 00",
		"truncated":   "80 05 81 01 02",
	} {
		if _, err := parsePivman(unhex(t, b), 0x80); err == nil {
			t.Errorf("%s: parsePivman(%s) succeeded", name, b)
		}
	}
}

// TestParseMetadata decodes GET METADATA answers in the layout of Yubico's
// documentation, and refuses items of the wrong size.
func TestParseMetadata(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	point, _ := priv.PublicKey.Bytes()
	slot := appendTLV(unhex(t, "01 01 11 02 02 03 01 03 01 01"), 0x04, tlvBytes(0x86, point))
	m, err := parseMetadata(slot)
	if err != nil || m.alg != 0x11 || m.pinPolicy != 3 || m.touchPolicy != 1 || m.origin != 1 {
		t.Fatalf("parseMetadata(slot) = %+v, %v", m, err)
	}
	if pub, err := p256Point(m.point); err != nil || !pub.Equal(&priv.PublicKey) {
		t.Errorf("public key = %v, %v", pub, err)
	}
	m, err = parseMetadata(unhex(t, "01 01 FF 05 01 01 06 02 03 02"))
	if err != nil || !m.isDefault || !m.hasDefault || m.total != 3 || m.remaining != 2 || !m.hasRetries {
		t.Errorf("parseMetadata(PIN) = %+v, %v", m, err)
	}
	for _, b := range []string{"01 02 11 11", "02 01 03", "05 00", "06 01 03", "04 02 86 05", "01"} {
		if m, err := parseMetadata(unhex(t, b)); err == nil {
			t.Errorf("parseMetadata(%s) = %+v, want an error", b, m)
		}
	}
	if _, err := p256Point(append([]byte{4}, make([]byte, 64)...)); err == nil {
		t.Error("the point (0, 0) was accepted")
	}
}

func TestParseCertObject(t *testing.T) {
	der := []byte{0x30, 0x03, 0x02, 0x01, 0x01}
	if got, err := parseCertObject(certObject(der)); err != nil || !bytes.Equal(got, der) {
		t.Errorf("round trip = %x, %v", got, err)
	}
	if got, err := parseCertObject(tlvBytes(0x70, der)); err != nil || !bytes.Equal(got, der) {
		t.Errorf("without CertInfo = %x, %v", got, err)
	}
	for name, b := range map[string][]byte{
		"compressed": append(tlvBytes(0x70, der), 0x71, 0x01, 0x01),
		"no cert":    unhex(t, "71 01 00 FE 00"),
		"unknown":    append(tlvBytes(0x70, der), 0x72, 0x00),
		"empty":      nil,
	} {
		if _, err := parseCertObject(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if got := retiredCertObject(0x82); got != 0x5fc10d {
		t.Errorf("object of slot 82 = %06x", got)
	}
	if got := retiredCertObject(0x95); got != 0x5fc120 {
		t.Errorf("object of slot 95 = %06x", got)
	}
}

// script is a card for the transport: it answers each command with the
// next answer, and records the commands.
type script struct {
	answers [][]byte
	repeat  []byte // answered once answers run out, when not nil
	sent    [][]byte
}

func (s *script) xfer(cmd []byte, _ time.Time) ([]byte, error) {
	s.sent = append(s.sent, append([]byte(nil), cmd...))
	if len(s.answers) > 0 {
		a := s.answers[0]
		s.answers = s.answers[1:]
		return append([]byte(nil), a...), nil
	}
	if s.repeat != nil {
		return append([]byte(nil), s.repeat...), nil
	}
	return nil, errors.New("script: no more answers")
}

func scripted(s *script) *transport {
	return &transport{reader: "Scripted Reader 00", timeout: time.Second, xfer: s.xfer}
}

// TestTransportChaining: long command data goes in 255-byte pieces with
// CLA 10, and 61XX answers are collected with GET RESPONSE asking for XX.
func TestTransportChaining(t *testing.T) {
	s := &script{answers: [][]byte{{0x90, 0x00}, {0x90, 0x00}, append(bytes.Repeat([]byte{1}, 256), 0x61, 0x10), append(bytes.Repeat([]byte{2}, 16), 0x90, 0x00)}}
	data := bytes.Repeat([]byte{0xee}, 600)
	got, err := scripted(s).send(apdu{ins: insPutData, p1: 0x3f, p2: 0xff, data: data, le: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 272 || got[0] != 1 || got[271] != 2 {
		t.Errorf("collected %d bytes", len(got))
	}
	want := [][]byte{
		append([]byte{0x10, 0xdb, 0x3f, 0xff, 0xff}, data[:255]...),
		append([]byte{0x10, 0xdb, 0x3f, 0xff, 0xff}, data[255:510]...),
		append(append([]byte{0x00, 0xdb, 0x3f, 0xff, 90}, data[510:]...), 0x00),
		{0x00, 0xc0, 0x00, 0x00, 0x10},
	}
	if len(s.sent) != len(want) {
		t.Fatalf("sent %d commands, want %d", len(s.sent), len(want))
	}
	for i := range want {
		if !bytes.Equal(s.sent[i], want[i]) {
			t.Errorf("command %d = % X, want % X", i, s.sent[i], want[i])
		}
	}
}

// TestTransportBounds: a card answering 61XX for ever, an answer longer
// than a short command allows, one past maxResponse, one without a status
// word: each a *ResponseError naming the reader, after a bounded number of
// commands.
func TestTransportBounds(t *testing.T) {
	forever := &script{repeat: append(bytes.Repeat([]byte{0x5a}, 255), 0x61, 0xff)}
	_, err := scripted(forever).send(apdu{ins: insGetData, le: true})
	var re *ResponseError
	if !errors.As(err, &re) || !errors.Is(err, ErrBadResponse) || re.Reader != "Scripted Reader 00" {
		t.Fatalf("61FF for ever = %v, want a *ResponseError", err)
	}
	if n := len(forever.sent); n > maxGetResponse+1 {
		t.Errorf("sent %d commands to a card answering 61FF for ever, more than %d", n, maxGetResponse+1)
	}
	emptyForever := &script{repeat: []byte{0x61, 0x00}}
	if _, err := scripted(emptyForever).send(apdu{ins: insGetData, le: true}); !errors.Is(err, ErrBadResponse) || len(emptyForever.sent) != maxGetResponse+1 {
		t.Errorf("6100 without data for ever = %v after %d commands", err, len(emptyForever.sent))
	}
	for name, a := range map[string][]byte{
		"64 KiB":      make([]byte, 0xffff),
		"257 bytes":   append(make([]byte, 257), 0x90, 0x00),
		"one byte":    {0x90},
		"nothing":     {},
		"chain piece": {0x01, 0x90, 0x00},
	} {
		s := &script{answers: [][]byte{a}}
		c := apdu{ins: insGetData, le: true}
		if name == "chain piece" {
			c.data = make([]byte, 300)
		}
		if _, err := scripted(s).send(c); !errors.Is(mapError("", err), ErrBadResponse) {
			t.Errorf("%s: %v, want ErrBadResponse", name, err)
		}
	}
	// Within maxResponse, in many small pieces: fine.
	var answers [][]byte
	for i := 0; i < 8; i++ {
		answers = append(answers, append(make([]byte, 100), 0x61, 0x64))
	}
	answers = append(answers, []byte{0x90, 0x00})
	if got, err := scripted(&script{answers: answers}).send(apdu{ins: insGetData, le: true}); err != nil || len(got) != 800 {
		t.Errorf("800 bytes in 100-byte pieces = %d bytes, %v", len(got), err)
	}
	// A status word is a swError for mapError.
	if _, err := scripted(&script{answers: [][]byte{{0x6a, 0x82}}}).send(apdu{ins: insGetData}); !errors.Is(mapError("", err), errNotFound) {
		t.Errorf("6A82 = %v", err)
	}
}

// TestTransportSecretsWiped: a command marked secret is zeroed once sent.
func TestTransportSecretsWiped(t *testing.T) {
	var seen []byte
	tr := &transport{reader: "r", timeout: time.Second, xfer: func(cmd []byte, _ time.Time) ([]byte, error) {
		seen = cmd // the transport's own buffer
		return []byte{0x90, 0x00}, nil
	}}
	pin := pad8(nil, []byte("246810"))
	if _, err := tr.send(apdu{ins: insVerify, p2: keyPIN, data: pin, secret: true}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(seen, make([]byte, len(seen))) {
		t.Errorf("the VERIFY command was left in memory: % X", seen)
	}
}

// TestLinkDeadline: a call into pcscd that does not return is given up at
// the deadline with a *TimeoutError, the link is not used again, and the
// call's goroutine releases it once the call returns.
func TestLinkDeadline(t *testing.T) {
	l := &link{reader: "Stuck Reader 00"}
	unblock := make(chan struct{})
	start := time.Now()
	err := l.within(start.Add(200*time.Millisecond), func() error { <-unblock; return nil })
	var te *TimeoutError
	if !errors.As(err, &te) || te.Reader != "Stuck Reader 00" || !errors.Is(err, ErrCardTimeout) {
		t.Fatalf("within = %v, want a *TimeoutError", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Errorf("gave up after %v, want at the 200ms deadline", d)
	}
	if err := l.within(time.Now().Add(time.Hour), func() error { t.Error("a call ran on an abandoned link"); return nil }); !errors.As(err, &te) {
		t.Errorf("a second call on the abandoned link = %v", err)
	}
	if err := l.close(true); err != nil {
		t.Errorf("close of an abandoned link = %v", err)
	}
	released := make(chan struct{})
	go func() {
		for {
			if l.released.Load() {
				close(released)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	close(unblock)
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("the link was not released once the stuck call returned")
	}
}
