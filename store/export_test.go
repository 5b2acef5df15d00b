package store

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenLog builds the same log every time: a fixed clock and fixed data.
func goldenLog(t *testing.T) *Log {
	l, err := open(filepath.Join(t.TempDir(), "custos.db"), nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkConsistent(t, l) })
	rec := sampleCeremony("enroll-2026-03-14-a", "golden", 2, 3)
	_, err = l.Update(func(tx *Tx) error {
		for _, c := range complete(rec).Cards {
			if _, err := tx.RegisterCard("operator <ops@example.org>", rec.IDString(), CardRegistration{
				Serial: c.Serial, Custodian: c.Custodian, Slot: fmt.Sprintf("%02x", c.Slot), Fingerprint: hex.EncodeToString(c.Key[:]),
				Attestation: []byte("attestation of " + c.Serial)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fillCeremony(t, l, rec)
	c1, c2 := testCard(rec, 1), testCard(rec, 2)
	if _, err := l.RecordRollcall("Ada Lovelace", Rollcall{Ceremony: rec.IDString(), Serial: c1.Serial, Fingerprint: hex.EncodeToString(c1.Key[:]), OK: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.RecordRollcall("Blaise Pascal", Rollcall{Ceremony: rec.IDString(), Serial: c2.Serial, Fingerprint: hex.EncodeToString(c2.Key[:]), OK: false, Reason: "pin blocked"}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(Event{Actor: "auditor", Type: "audit.note", Body: []byte(`{"note":"unrelated to the ceremony"}`)}); err != nil {
		t.Fatal(err)
	}
	return l
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it):\n%s", name, got)
	}
}

func TestExportJSONLGolden(t *testing.T) {
	l := goldenLog(t)
	var all, one bytes.Buffer
	if err := l.ExportJSONL(&all, ""); err != nil {
		t.Fatal(err)
	}
	if err := l.ExportJSONL(&one, idOf("enroll-2026-03-14-a")); err != nil {
		t.Fatal(err)
	}
	golden(t, "events.jsonl", all.Bytes())
	golden(t, "ceremony.jsonl", one.Bytes())
	if strings.Contains(one.String(), "audit.note") || strings.Contains(one.String(), "log.created") {
		t.Error("the ceremony export holds events of no ceremony")
	}
	// Every line of the ceremony export is a line of the whole export.
	for _, line := range strings.Split(strings.TrimSpace(one.String()), "\n") {
		if !strings.Contains(all.String(), line+"\n") {
			t.Errorf("ceremony line not in the log: %s", line)
		}
	}
}

// An auditor with nothing but SHA-256 and a JSON parser recomputes the
// chain from the export, as doc.go describes.
func TestAuditorRecomputesChain(t *testing.T) {
	data, err := os.ReadFile("testdata/events.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	prev := strings.Repeat("0", 64)
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxRecordLen)
	for sc.Scan() {
		n++
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("line %d: %v", n, err)
		}
		if rec["prev"] != prev {
			t.Fatalf("line %d: prev %v, want %s", n, rec["prev"], prev)
		}
		if rec["seq"] != float64(n) {
			t.Fatalf("line %d: seq %v", n, rec["seq"])
		}
		sum := sha256.Sum256(sc.Bytes())
		prev = hex.EncodeToString(sum[:])
	}
	// The live log built the same way ends at the same head.
	l := goldenLog(t)
	h, _ := l.Head()
	if h.Hash.String() != prev || h.Seq != uint64(n) {
		t.Errorf("recomputed head %d:%s, log head %v", n, prev, h)
	}
}

func TestTranscriptGolden(t *testing.T) {
	boltOnly(t)
	l := goldenLog(t)
	var b bytes.Buffer
	if err := l.Transcript(&b, idOf("enroll-2026-03-14-a")); err != nil {
		t.Fatal(err)
	}
	got := strings.ReplaceAll(b.String(), l.path, DefaultPath)
	golden(t, "transcript.txt", []byte(got))

	st, _ := l.Ceremony(idOf("enroll-2026-03-14-a"))
	rec := st.Record
	var lastSeq Head
	l.Events(rec.IDString(), func(ev Event) error { lastSeq = ev.Head(); return nil })
	for _, want := range []string{rec.VolumeString(), "2 of 3", lastSeq.String()[:10], "Witnesses", groups(rec.Salt)[:35]} {
		if !strings.Contains(got, want) {
			t.Errorf("transcript lacks %q", want)
		}
	}
	for _, c := range rec.Cards {
		for _, want := range []string{c.Serial, groups(hex.EncodeToString(c.Key[:]))[:35], c.Custodian + " (card " + c.Serial,
			groups(hex.EncodeToString(c.Attestation[:]))[:35]} {
			if !strings.Contains(got, want) {
				t.Errorf("transcript lacks %q", want)
			}
		}
	}
	// The anchor printed in groups parses back to the head after the
	// ceremony's last step, and the log verifies against it.
	i := strings.Index(got, "    "+lastSeq.String()[:3])
	line := got[i:]
	line = strings.TrimSpace(line[:strings.IndexByte(line, '\n')])
	anchor, err := ParseHead(line)
	if err != nil || anchor != lastSeq {
		t.Fatalf("printed anchor %q = %v, %v; want %v", line, anchor, err, lastSeq)
	}
	if !strings.Contains(got, "\n    "+groups(lastSeq.Hash.String())+"\n") {
		t.Error("the anchor is not printed in groups for reading aloud")
	}
	if _, err := l.Verify(anchor); err != nil {
		t.Error(err)
	}
	for _, line := range strings.Split(got, "\n") {
		if len(line) > transcriptWidth {
			t.Errorf("line wider than %d: %q", transcriptWidth, line)
		}
	}
	if err := l.Transcript(&b, "nope"); err == nil {
		t.Error("transcript of an unknown ceremony")
	}
}
