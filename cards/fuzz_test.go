package cards

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// FuzzParseResponses feeds a card's answer to every parser of card answers:
// none may panic, and those with an encoder round-trip (parse, marshal,
// parse again gives the same, and marshalling that gives the same bytes).
func FuzzParseResponses(f *testing.F) {
	for _, seed := range [][]byte{
		{0xc1, 0x01, 0x01, 0xc2, 0x01, 0x00, 0xfe, 0x00},
		{0x80, 0x03, 0x81, 0x01, 0x02},
		{0x88, 0x1a, 0x89, 0x18, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8},
		{0x01, 0x01, 0xff, 0x05, 0x01, 0x01, 0x06, 0x02, 0x03, 0x03},
		{0x7c, 0x0a, 0x80, 0x08, 1, 2, 3, 4, 5, 6, 7, 8},
		{0x70, 0x03, 0x30, 0x01, 0x00, 0x71, 0x01, 0x00, 0xfe, 0x00},
		{0x53, 0x82, 0x00, 0x02, 0xfe, 0x00},
		append([]byte{0x7f, 0x49, 0x43, 0x86, 0x41, 0x04}, make([]byte, 64)...),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := parseKeyHistory(b); err == nil {
			enc := h.marshal()
			h2, err := parseKeyHistory(enc)
			if err != nil || !h2.equal(h) {
				t.Fatalf("key history %+v does not round-trip: %+v, %v", h, h2, err)
			}
			if !bytes.Equal(h2.marshal(), enc) {
				t.Fatal("key history encoding is not stable")
			}
			if h.onCard+h.offCard > maxRetired {
				t.Fatalf("accepted %d keys in %d slots", h.onCard+h.offCard, maxRetired)
			}
		}
		for _, outer := range []byte{0x80, 0x88} {
			o, err := parsePivman(b, outer)
			if err != nil {
				continue
			}
			enc := o.marshal()
			o2, err := parsePivman(enc, outer)
			if err != nil || !bytes.Equal(o2.marshal(), enc) {
				t.Fatalf("object %02x does not round-trip: %v", outer, err)
			}
			if outer == 0x80 {
				p := protectedAdmin(o2).marshal()
				o3, err := parsePivman(p, 0x80)
				if err != nil {
					t.Fatalf("admin data made protected does not parse: %v", err)
				}
				if f, ok := o3.get(adminFlags); !ok || len(f) != 1 || f[0]&flagMgmProtected == 0 {
					t.Fatal("admin data made protected lacks the flag")
				}
				if _, ok := o3.get(adminSalt); ok {
					t.Fatal("admin data made protected keeps a salt")
				}
			}
		}
		if m, err := parseMetadata(b); err == nil && m.point != nil {
			p256Point(m.point)
		}
		parseCertObject(b)
		parseGenerated(b)
		for _, tag := range []uint32{0x80, 0x82} {
			parseDynAuth(b, tag)
		}
		if ts, err := parseTLVs(b); err == nil {
			var enc []byte
			for _, tv := range ts {
				enc = appendTLV(enc, tv.tag, tv.value)
			}
			ts2, err := parseTLVs(enc)
			if err != nil || len(ts2) != len(ts) {
				t.Fatalf("tlvs do not round-trip: %v", err)
			}
			for i := range ts {
				if ts[i].tag != ts2[i].tag || !bytes.Equal(ts[i].value, ts2[i].value) {
					t.Fatalf("tlv %d changed in the round trip", i)
				}
			}
		}
	})
}

// FuzzCollect plays a card whose answers come from the fuzzer (each a
// two-byte length and that many bytes) against the transport's response
// collection: it must end with data within maxResponse or an error, after
// at most maxGetResponse+1 commands, whatever the card says.
func FuzzCollect(f *testing.F) {
	enc := func(answers ...[]byte) []byte {
		var b []byte
		for _, a := range answers {
			b = binary.BigEndian.AppendUint16(b, uint16(len(a)))
			b = append(b, a...)
		}
		return b
	}
	f.Add(enc([]byte{0x90, 0x00}))
	f.Add(enc(append(make([]byte, 256), 0x61, 0x10), append(make([]byte, 16), 0x90, 0x00)))
	f.Add(enc(append(make([]byte, 255), 0x61, 0xff)))
	f.Add(enc([]byte{0x61, 0x00}))
	f.Add(enc(make([]byte, 300)))
	f.Add(enc([]byte{0x6a, 0x82}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var answers [][]byte
		for len(b) >= 2 {
			n := int(binary.BigEndian.Uint16(b))
			b = b[2:]
			if n > len(b) {
				n = len(b)
			}
			answers = append(answers, b[:n])
			b = b[n:]
		}
		s := &script{answers: answers}
		if len(answers) > 0 {
			s.repeat = answers[len(answers)-1]
		}
		tr := &transport{reader: "Fuzz Reader", timeout: time.Second, xfer: s.xfer}
		got, err := tr.send(apdu{ins: insGetData, p1: 0x3f, p2: 0xff, le: true})
		if len(s.sent) > maxGetResponse+1 {
			t.Fatalf("sent %d commands", len(s.sent))
		}
		if err == nil && len(got) > maxResponse {
			t.Fatalf("collected %d bytes", len(got))
		}
		var st statusError
		var short *shortAnswer
		if err != nil && !errors.Is(err, ErrBadResponse) && !errors.As(err, &st) && !errors.As(err, &short) && len(answers) > 0 {
			t.Fatalf("unexpected error %v", err)
		}
	})
}
