package store

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

// FuzzDecodeEvent feeds the record decoder (the reader of stored values and
// of export lines) arbitrary bytes: it must never panic, and whatever it
// accepts must be canonical: re-encoding gives the same bytes and hash.
func FuzzDecodeEvent(f *testing.F) {
	for _, name := range []string{"testdata/events.jsonl", "testdata/fuzz-seeds.jsonl"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, maxRecordLen)
		for sc.Scan() {
			f.Add(append([]byte{}, sc.Bytes()...))
		}
	}
	f.Fuzz(func(t *testing.T, rec []byte) {
		ev, err := decodeRecord(rec)
		if err != nil {
			return
		}
		again, err := encodeRecord(ev)
		if err != nil {
			t.Fatalf("accepted %q but cannot re-encode: %v", rec, err)
		}
		if !bytes.Equal(again, rec) {
			t.Fatalf("accepted a non-canonical record:\n%q\nre-encodes as\n%q", rec, again)
		}
		if ev.Hash != sha256.Sum256(rec) {
			t.Fatal("hash is not the SHA-256 of the record")
		}
		if _, err := decodeStored(ev.Seq, storedValue(ev.Hash, rec)); err != nil {
			t.Fatalf("stored form of an accepted record refused: %v", err)
		}
	})
}

func TestDecodeRejectsNonCanonical(t *testing.T) {
	data, err := os.ReadFile("testdata/fuzz-seeds.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		n++
		if _, err := decodeRecord(line); err == nil {
			t.Errorf("accepted %s", line)
		}
	}
	if n < 10 {
		t.Fatalf("only %d bad seeds", n)
	}
}

// vectorInputs returns the inputs of testdata/format/records.json for one
// copy, and the version 1 fixtures for tokens, as fuzz seeds.
func vectorInputs(f *testing.F, copy string) [][]byte {
	data, err := os.ReadFile(recordVectorsPath)
	if err != nil {
		f.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(data, &vf); err != nil {
		f.Fatal(err)
	}
	var out [][]byte
	for _, c := range vf.Cases {
		if c.Copy != copy {
			continue
		}
		if c.Input != nil {
			out = append(out, []byte(*c.Input))
		} else if b, err := hex.DecodeString(*c.InputHex); err == nil {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		f.Fatalf("no %s vectors", copy)
	}
	return out
}

// FuzzParseRecord: the record reader never panics, and whatever it accepts
// is the canonical form: Encode of what it read gives the input back.
func FuzzParseRecord(f *testing.F) {
	for _, in := range vectorInputs(f, CopyRecord) {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		rec, err := ParseRecord(in)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Copy != CopyRecord || !strings.HasPrefix(fe.Path, "record") {
				t.Fatalf("error %v is not a record FormatError", err)
			}
			return
		}
		out, err := rec.Encode()
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", in, err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("accepted a non-canonical record:\n%q\nencodes as\n%q", in, out)
		}
	})
}

// FuzzParseToken: whenever the token reader accepts a version 2 token,
// encoding what it read gives the input with the whitespace outside
// strings removed. A version 1 token reads the same every time, and what
// it reads encodes as a version 2 record that reads back the same.
func FuzzParseToken(f *testing.F) {
	for _, in := range vectorInputs(f, CopyToken) {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		tok, err := ParseToken(in)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Copy != CopyToken {
				t.Fatalf("error %v is not a token FormatError", err)
			}
			return
		}
		if tok.Record.Version == 1 {
			again, err := ParseToken(in)
			if err != nil || !reflect.DeepEqual(again, tok) {
				t.Fatalf("a version 1 token reads differently the second time: %v", err)
			}
			if b, err := tok.Record.Encode(); err == nil {
				back, err := ParseRecord(b)
				want := tok.Record.Clone()
				want.Version = RecordVersion
				if err != nil || !reflect.DeepEqual(back, want) {
					t.Fatalf("a version 1 record encodes as one that reads differently: %v", err)
				}
			}
			return
		}
		out, err := encodeToken(tok.Record, tok.Anchor, tok.Keyslots)
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", in, err)
		}
		if want := stripWhitespace(in); !bytes.Equal(out, want) {
			t.Fatalf("accepted a non-canonical token:\n%q\nencodes as\n%q", want, out)
		}
	})
}

// FuzzParseCardCopy: whatever the certificate extension's reader accepts
// encodes back to the input.
func FuzzParseCardCopy(f *testing.F) {
	for _, in := range vectorInputs(f, CopyCertificate) {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		cc, err := ParseCardCopy(in)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Copy != CopyCertificate {
				t.Fatalf("error %v is not a certificate FormatError", err)
			}
			return
		}
		out, err := EncodeCardCopy(cc.Record, cc.Anchor)
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", in, err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("accepted a non-canonical certificate extension:\n%q\nencodes as\n%q", in, out)
		}
	})
}

// FuzzParseCeremonyEvent: whatever the ceremony body reader accepts in
// version 2 encodes back to the input; a version 1 body reads the same
// every time.
func FuzzParseCeremonyEvent(f *testing.F) {
	for _, in := range vectorInputs(f, CopyEvent) {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		status, rec, err := parseCeremonyBody(in)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Copy != CopyEvent {
				t.Fatalf("error %v is not an event FormatError", err)
			}
			return
		}
		if rec.Version == 1 {
			s2, r2, err := parseCeremonyBody(in)
			if err != nil || s2 != status || !reflect.DeepEqual(r2, rec) {
				t.Fatalf("a version 1 body reads differently the second time: %v", err)
			}
			return
		}
		out, err := encodeCeremonyBody(status, rec)
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", in, err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("accepted a non-canonical event body:\n%q\nencodes as\n%q", in, out)
		}
	})
}
