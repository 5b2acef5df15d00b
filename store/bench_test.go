package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"custos.dev/custos/internal/realtest"
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
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
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

// BenchmarkAppendEtcd is BenchmarkAppend on the etcd cluster of the tests
// (CUSTOS_ETCD): each event its own conditional transaction.
func BenchmarkAppendEtcd(b *testing.B) {
	l, err := Open(etcdTestDSN(b), nil)
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
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkAppendEtcdBatched appends 25 events to a transaction (what a
// transaction of etcd's default 128 keys holds of these events).
func BenchmarkAppendEtcdBatched(b *testing.B) {
	l, err := Open(etcdTestDSN(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	for done := 0; done < b.N; {
		_, err := l.Update(func(tx *Tx) error {
			for j := 0; j < 25 && done < b.N; j++ {
				if _, err := tx.Append(benchEvent(done)); err != nil {
					return err
				}
				done++
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkVerifyEtcd100k verifies a log of 100,000 steps on etcd, copied
// there once from the steps log (kept under the prefix
// custos-bench/steps-100000 of the cluster).
func BenchmarkVerifyEtcd100k(b *testing.B) {
	eps := realtest.Etcd(b)
	dsn := EtcdScheme + strings.Join(eps, ",") + "/custos-bench/steps-100000"
	l, err := Open(dsn, &Options{NoCreate: true})
	if errors.Is(err, ErrNotFound) {
		src, serr := Open(stepsLog(b, 100_000), nil)
		if serr != nil {
			b.Fatal(serr)
		}
		start := time.Now()
		if _, serr := Copy(src, dsn, nil); serr != nil {
			b.Fatal(serr)
		}
		src.Close()
		b.Logf("copied 100,000 events to etcd in %v", time.Since(start).Round(time.Second))
		l, err = Open(dsn, &Options{NoCreate: true})
	}
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	for b.Loop() {
		rep, err := l.Verify()
		if err != nil || rep.Events != 100_000 {
			b.Fatalf("verify: %+v, %v", rep, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/100_000, "ns/event")
}

// BenchmarkCopyEtcd copies the steps log of 20,000 events from its file
// to a fresh prefix of the test cluster (CUSTOS_ETCD), and, as its peer
// in the same run, to a new file: the events per second of each and their
// ratio.
func BenchmarkCopyEtcd(b *testing.B) {
	realtest.Etcd(b)
	const n = 20_000
	src, err := Open(stepsLog(b, n), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	var toEtcd, toFile time.Duration
	for b.Loop() {
		dsn := etcdTestDSN(b)
		start := time.Now()
		if rep, err := Copy(src, dsn, nil); err != nil || rep.Events != n {
			b.Fatalf("copy to etcd: %+v, %v", rep, err)
		}
		toEtcd += time.Since(start)
		start = time.Now()
		if rep, err := Copy(src, filepath.Join(b.TempDir(), "copy.db"), nil); err != nil || rep.Events != n {
			b.Fatalf("copy to a file: %+v, %v", rep, err)
		}
		toFile += time.Since(start)
	}
	b.ReportMetric(float64(n*b.N)/toEtcd.Seconds(), "etcd-events/s")
	b.ReportMetric(float64(n*b.N)/toFile.Seconds(), "file-events/s")
	b.ReportMetric(toEtcd.Seconds()/toFile.Seconds(), "etcd/file")
}
