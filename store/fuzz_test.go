package store

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"os"
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
