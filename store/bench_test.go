package store

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func benchEvent(i int) Event {
	return Event{Actor: "operator", Type: "bench.step", Ceremony: fmt.Sprintf("c%d", i%10),
		Body: []byte(fmt.Sprintf(`{"i":%d,"serial":"1000%04d","note":"a step of a ceremony"}`, i, i%10000))}
}

// BenchmarkAppend appends b.N events, each in its own durable transaction
// (the tail check, the indexes and bbolt's fsync included): run with
// -benchtime=100000x for the 100,000-event figure.
func BenchmarkAppend(b *testing.B) {
	l, err := Open(filepath.Join(b.TempDir(), "custos.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.ReportAllocs()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		if _, err := l.Append(benchEvent(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N), "events")
	b.ReportMetric(time.Since(start).Seconds(), "total-s")
}

// BenchmarkAppendBatched appends b.N events 1,000 to a transaction, as a
// ceremony's steps in one Update would be.
func BenchmarkAppendBatched(b *testing.B) {
	l, err := Open(filepath.Join(b.TempDir(), "custos.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.ReportAllocs()
	start := time.Now()
	b.ResetTimer()
	if err := fillBatched(l, b.N); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N), "events")
	b.ReportMetric(time.Since(start).Seconds(), "total-s")
}

func fillBatched(l *Log, n int) error {
	for done := 0; done < n; {
		_, err := l.Update(func(tx *Tx) error {
			for j := 0; j < 1000 && done < n; j++ {
				if _, err := tx.Append(benchEvent(done)); err != nil {
					return err
				}
				done++
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkParseRecord reads a complete 3-card record with the strict
// reader; BenchmarkParseRecordEncodingJSON is its peer, encoding/json
// reading the same bytes into a struct of the same members (without any
// of the checks), for the ratio.
func BenchmarkParseRecord(b *testing.B) {
	in, err := vecBase().Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRecord(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseRecordEncodingJSON(b *testing.B) {
	in, err := vecBase().Encode()
	if err != nil {
		b.Fatal(err)
	}
	type card struct {
		Index       int    `json:"index"`
		Serial      string `json:"serial"`
		Slot        string `json:"slot"`
		Custodian   string `json:"custodian"`
		Key         string `json:"key"`
		Attestation string `json:"attestation"`
		Commitment  string `json:"commitment"`
		Sealed      string `json:"sealed"`
	}
	var rec struct {
		V       int    `json:"v"`
		ID      string `json:"id"`
		Volume  string `json:"volume"`
		K       int    `json:"k"`
		N       int    `json:"n"`
		Keyslot int    `json:"keyslot"`
		Salt    string `json:"salt"`
		Digest  string `json:"digest"`
		Cards   []card `json:"cards"`
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if err := json.Unmarshal(in, &rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeRecord writes the same record (every rule checked first).
func BenchmarkEncodeRecord(b *testing.B) {
	rec := vecBase()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rec.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}
