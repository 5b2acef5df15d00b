package store

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A fleet log for the benchmarks: what custos writes for a fleet of
// volumes enrolled to custodian sets of three cards (2 of 3), each set
// serving 100 volumes, over its life:
//
//   - each set's three cards registered by card init (3 card events);
//   - each volume enrolled as escrow does it (9 events): the open record,
//     the record with the keyslot's salt, then per card its registration
//     with the attestation chain (about 1.4 KB of DER) and the record with
//     that card, then the active record;
//   - four rollcall passes over the whole fleet (per volume 3 rollcall
//     events and a rollcall.done step);
//   - one volume in four rotated (11 events: a new ceremony replacing the
//     old, the old retired and the new active in one transaction, a
//     rotate.wiped step), one in ten recovered (a recover step).
//
// Per volume about 28 events: 29% ceremony, 11% card, 43% rollcall, 17%
// steps; 1,000,000 events are about 35,600 volumes and 356 sets. The
// enrollments come first, then the rollcall passes over the whole fleet,
// so that most rollcalls find their ceremony long out of any cache.
const fleetGen = 1 // bump when the generator changes: the cache is keyed by it

// fleetLog returns the path of a fleet log of exactly n events, built once
// and kept under /tmp/custos-bench.
func fleetLog(tb testing.TB, n int) string {
	tb.Helper()
	dir := "/tmp/custos-bench"
	path := filepath.Join(dir, fmt.Sprintf("fleet-%d-g%d.db", n, fleetGen))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	tmp := path + ".building"
	os.Remove(tmp)
	start := time.Now()
	if err := buildFleet(tmp, n); err != nil {
		tb.Fatalf("build fleet log: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
	fi, _ := os.Stat(path)
	tb.Logf("built %s: %d events, %d MiB, in %v", path, n, fi.Size()>>20, time.Since(start).Round(time.Second))
	return path
}

type fleetBuilder struct {
	l    *Log
	n    int
	sets int
	tx   *Tx
	done bool
}

var errFleetFull = fmt.Errorf("fleet log full")

func buildFleet(path string, n int) error {
	l, err := open(path, nil, testClock())
	if err != nil {
		return err
	}
	defer l.Close()
	fb := &fleetBuilder{l: l, n: n}
	const perSet = 100
	var vols []*Record
	// Enrollments, a set at a time.
	for v := 0; !fb.done; v++ {
		if v%perSet == 0 {
			fb.batch(func() error { return fb.newSet(v / perSet) })
		}
		rec := fleetRecord(v, v/perSet, 0)
		fb.batch(func() error { return fb.enroll(rec) })
		vols = append(vols, rec)
		if len(vols)*28 >= n {
			break
		}
	}
	// Rollcall passes, rotations and recoveries until the log is full.
	for pass := 0; !fb.done; pass++ {
		for i, rec := range vols {
			if fb.done {
				break
			}
			cur := rec
			fb.batch(func() error { return fb.rollcall(cur) })
			if pass == 1 && i%4 == 0 {
				nr := fleetRecord(i, i/perSet, 1)
				nr.Replaces = rec.ID
				nr.Keyslot = 2
				fb.batch(func() error { return fb.rotate(cur, nr) })
				vols[i] = nr
			}
			if pass == 2 && i%10 == 0 {
				fb.batch(func() error {
					return fb.step(cur.IDString(), "recover", fmt.Sprintf(`{"keyslot":%d,"cards":["%s","%s"]}`, 3, cur.Cards[0].Serial, cur.Cards[1].Serial))
				})
			}
		}
	}
	// Commit what is pending.
	if fb.tx != nil {
		return fmt.Errorf("fleet builder left a transaction open")
	}
	h, err := l.Head()
	if err != nil {
		return err
	}
	if h.Seq != uint64(n) {
		return fmt.Errorf("fleet log has %d events, want %d", h.Seq, n)
	}
	return nil
}

// batch runs fn in a transaction shared with the batches before it,
// committed every few thousand events; past n events it pads with steps
// to exactly n and stops.
func (fb *fleetBuilder) batch(fn func() error) {
	if fb.done {
		return
	}
	_, err := fb.l.Update(func(tx *Tx) error {
		fb.tx = tx
		defer func() { fb.tx = nil }()
		if err := fn(); err != nil {
			return err
		}
		return nil
	})
	if err == errFleetFull {
		// The batch would pass n: fill up with steps instead.
		_, err = fb.l.Update(func(tx *Tx) error {
			for tx.Head().Seq < uint64(fb.n) {
				if _, err := tx.Append(Event{Actor: "operator", Type: "fleet.pad", Body: []byte(`{}`)}); err != nil {
					return err
				}
			}
			return nil
		})
		fb.done = true
	}
	if err != nil {
		panic(err)
	}
}

// room refuses to let a batch pass n events.
func (fb *fleetBuilder) room(events int) error {
	if fb.tx.Head().Seq+uint64(events) > uint64(fb.n) {
		return errFleetFull
	}
	return nil
}

func fleetCard(set, i int) RecordCard {
	key := key32(fmt.Sprintf("fleet key %d/%d", set, i))
	return RecordCard{Index: i, Serial: strconv.Itoa(20000000 + set*10 + i), Slot: 0x82,
		Custodian: custodianNames[(set+i)%len(custodianNames)], Key: key,
		Attestation: key32(fmt.Sprintf("fleet attestation %d/%d", set, i))}
}

// fleetAttestation stands for a YubiKey's slot attestation and its
// intermediate: about 1.4 KB of DER.
func fleetAttestation(set, i int) []byte {
	var b bytes.Buffer
	for b.Len() < 1400 {
		h := key32(fmt.Sprintf("der %d/%d/%d", set, i, b.Len()))
		b.Write(h[:])
	}
	return b.Bytes()[:1400]
}

func fleetRecord(v, set, gen int) *Record {
	rec := &Record{Version: RecordVersion, ID: testID(fmt.Sprintf("fleet %d/%d", v, gen)), Volume: testVolume(fmt.Sprintf("fleet %d", v)),
		K: 2, N: 3, Keyslot: 1, Digest: key32(fmt.Sprintf("fleet digest %d/%d", v, gen))}
	for i := 1; i <= 3; i++ {
		c := fleetCard(set, i)
		c.Commitment = key32(fmt.Sprintf("fleet commitment %d/%d/%d", v, gen, i))
		c.Sealed = testSealed(rec.ID, rec.Volume, i, rec.K, rec.N, c.Key)
		rec.Cards = append(rec.Cards, c)
	}
	return rec
}

func (fb *fleetBuilder) newSet(set int) error {
	if err := fb.room(3); err != nil {
		return err
	}
	for i := 1; i <= 3; i++ {
		c := fleetCard(set, i)
		if _, err := fb.tx.RegisterCard("operator", "", CardRegistration{Serial: c.Serial, Custodian: c.Custodian, Slot: "82",
			Fingerprint: hex.EncodeToString(c.Key[:]), Attestation: fleetAttestation(set, i)}); err != nil {
			return err
		}
	}
	return nil
}

func (fb *fleetBuilder) enrollTx(rec *Record, status string) error {
	frame := rec.Clone()
	frame.Cards = nil
	if _, err := fb.tx.PutCeremony("operator", StatusOpen, frame); err != nil {
		return err
	}
	r := withSalt(frame)
	if _, err := fb.tx.PutCeremony("operator", StatusOpen, r); err != nil {
		return err
	}
	set := 0
	fmt.Sscanf(rec.Cards[0].Serial, "2%07d", &set)
	for i := 1; i <= rec.N; i++ {
		c := rec.Cards[i-1]
		if _, err := fb.tx.RegisterCard("operator", rec.IDString(), CardRegistration{Serial: c.Serial, Custodian: c.Custodian, Slot: "82",
			Fingerprint: hex.EncodeToString(c.Key[:]), Attestation: fleetAttestation(set/10, i)}); err != nil {
			return err
		}
		r = r.Clone()
		r.Cards = append(r.Cards, c)
		if _, err := fb.tx.PutCeremony("operator", StatusOpen, r); err != nil {
			return err
		}
	}
	if status != "" {
		_, err := fb.tx.PutCeremony("operator", status, r)
		return err
	}
	return nil
}

func (fb *fleetBuilder) enroll(rec *Record) error {
	if err := fb.room(9); err != nil {
		return err
	}
	return fb.enrollTx(rec, StatusActive)
}

func (fb *fleetBuilder) rollcall(rec *Record) error {
	if err := fb.room(4); err != nil {
		return err
	}
	for _, c := range rec.Cards {
		if _, err := fb.tx.RecordRollcall(c.Custodian, Rollcall{Ceremony: rec.IDString(), Serial: c.Serial, Fingerprint: hex.EncodeToString(c.Key[:]), OK: true}); err != nil {
			return err
		}
	}
	return fb.stepTx(rec.IDString(), "rollcall.done", `{"ok":3,"failed":0}`)
}

func (fb *fleetBuilder) rotate(old, nr *Record) error {
	if err := fb.room(11); err != nil {
		return err
	}
	if err := fb.enrollTx(nr, ""); err != nil {
		return err
	}
	if _, err := fb.tx.PutCeremony("operator", StatusRetired, withSalt(old)); err != nil {
		return err
	}
	full := withSalt(nr)
	if _, err := fb.tx.PutCeremony("operator", StatusActive, full); err != nil {
		return err
	}
	return fb.stepTx(old.IDString(), "rotate.wiped", `{"cards":3}`)
}

func (fb *fleetBuilder) step(ceremony, typ, body string) error {
	if err := fb.room(1); err != nil {
		return err
	}
	return fb.stepTx(ceremony, typ, body)
}

func (fb *fleetBuilder) stepTx(ceremony, typ, body string) error {
	_, err := fb.tx.Append(Event{Actor: "operator", Type: typ, Ceremony: ceremony, Body: []byte(body)})
	return err
}

// verifyChildResult is what a verifying child process reports.
type verifyChildResult struct {
	Seconds float64
	HWMKiB  int64 // VmHWM: the peak resident set, file pages included
	HeapMiB float64
	Events  uint64
	Err     string
	Status  string // the resident set at the end, by kind
}

// runVerifyChild verifies path in a child process (mode "stream": Verify;
// "reference": the replay of before) and returns its time and peak
// memory.
func runVerifyChild(tb testing.TB, path, mode string) verifyChildResult {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=verify-"+mode, childPathEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("verify child: %v", err)
	}
	var res verifyChildResult
	if err := json.Unmarshal(out, &res); err != nil {
		tb.Fatalf("verify child said %q: %v", out, err)
	}
	if res.Err != "" {
		tb.Fatalf("verify child: %s", res.Err)
	}
	return res
}

// childVerify is the child's side of runVerifyChild.
func childVerify(mode, path string) int {
	var res verifyChildResult
	l, err := Open(path, nil)
	if err != nil {
		res.Err = err.Error()
	} else {
		res.Status = fmt.Sprintf("after open: %d KiB; ", vmHWM())
		start := time.Now()
		var rep Report
		if mode == "reference" {
			err = l.view(func(r kvRead) (err error) {
				rep, err = verifyReference(r, l.be, nil)
				return err
			})
		} else {
			rep, err = l.Verify()
		}
		res.Seconds = time.Since(start).Seconds()
		res.Events = rep.Events
		if err != nil {
			res.Err = err.Error()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		res.HeapMiB = float64(ms.HeapSys) / (1 << 20)
		l.Close()
	}
	res.HWMKiB = vmHWM()
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Rss") {
				res.Status += strings.Join(strings.Fields(line), " ") + "; "
			}
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// vmHWM reads this process's peak resident set in KiB.
func vmHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return -1
}

// BenchmarkVerify1M verifies a fleet log of 1,000,000 events (built once
// into /tmp/custos-bench) in a child process per run, the streaming Verify
// against the replay of before, and reports the wall time and the peak
// resident set (VmHWM, the mapped file's pages included) of each.
func BenchmarkVerify1M(b *testing.B) { benchVerifyFleet(b, 1_000_000) }

// BenchmarkVerify100k is the same on a fleet log of 100,000 events.
func BenchmarkVerify100k(b *testing.B) { benchVerifyFleet(b, 100_000) }

func benchVerifyFleet(b *testing.B, n int) {
	path := fleetLog(b, n)
	for _, mode := range []string{"stream", "reference"} {
		b.Run(mode, func(b *testing.B) {
			var secs float64
			var hwm int64
			runs := 0
			for b.Loop() {
				res := runVerifyChild(b, path, mode)
				if res.Events != uint64(n) {
					b.Fatalf("verified %d events, want %d", res.Events, n)
				}
				secs += res.Seconds
				hwm = max(hwm, res.HWMKiB)
				runs++
			}
			b.ReportMetric(secs/float64(runs), "verify-s")
			b.ReportMetric(float64(hwm)/1024, "peak-MiB")
			b.ReportMetric(secs/float64(runs)*1e9/float64(n), "ns/event")
		})
	}
}

// stepsLog is a log of n events of the kind BenchmarkAppend writes (steps
// of ten ceremonies, about 150 bytes each): the log the figure of issue
// 12 (8.4 s for 1,000,000 events) was measured on. Built once under
// /tmp/custos-bench, under a name that says it was written with the
// events' pages filled (appendFillPercent): a log built before that, its
// pages half empty, is not reused.
func stepsLog(tb testing.TB, n int) string {
	tb.Helper()
	path := filepath.Join("/tmp/custos-bench", fmt.Sprintf("steps-%d-filled.db", n))
	if err := buildStepsLog(path, n); err != nil {
		tb.Fatal(err)
	}
	return path
}

// buildStepsLog builds the steps log of n events at path unless a file is
// there already (under a temporary name, renamed into place when done).
func buildStepsLog(path string, n int) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".building"
	os.Remove(tmp)
	l, err := Open(tmp, nil)
	if err != nil {
		return err
	}
	if err := fillBatched(l, n-1); err != nil { // and log.created
		l.Close()
		return err
	}
	if err := l.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// BenchmarkVerify1MSteps is BenchmarkVerify1M on the steps log.
func BenchmarkVerify1MSteps(b *testing.B) {
	path := stepsLog(b, 1_000_000)
	for _, mode := range []string{"stream", "reference"} {
		b.Run(mode, func(b *testing.B) {
			var secs float64
			var hwm int64
			runs := 0
			for b.Loop() {
				res := runVerifyChild(b, path, mode)
				if res.Events != 1_000_000 {
					b.Fatalf("verified %d events", res.Events)
				}
				secs += res.Seconds
				hwm = max(hwm, res.HWMKiB)
				runs++
			}
			b.ReportMetric(secs/float64(runs), "verify-s")
			b.ReportMetric(float64(hwm)/1024, "peak-MiB")
		})
	}
}
