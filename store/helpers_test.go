package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// testClock returns a clock that starts at a fixed instant and moves one
// second (and a few nanoseconds, to exercise RFC 3339 fractions) per call.
func testClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Second + 589*time.Nanosecond)
		return t
	}
}

// openTest opens a fresh log in a temporary directory with a fixed clock,
// and checks in cleanup that it is consistent: Verify (chain, indexes and
// bbolt's check) passes.
func openTest(t testing.TB) *Log {
	t.Helper()
	l, err := open(filepath.Join(t.TempDir(), "custos.db"), nil, testClock())
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { checkConsistent(t, l) })
	return l
}

// checkConsistent verifies and closes l (reopening it if it was closed).
func checkConsistent(t testing.TB, l *Log) {
	t.Helper()
	if l.db == nil {
		var err error
		if l, err = Open(l.path, nil); err != nil {
			t.Errorf("cleanup: reopen %s: %v", l.path, err)
			return
		}
	}
	if _, err := l.Verify(); err != nil {
		t.Errorf("cleanup: log is not consistent: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// checkStructure runs only bbolt's check, for tests that break the chain on
// purpose.
func checkStructure(t testing.TB, l *Log) {
	t.Helper()
	if err := l.db.View(boltCheck); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

func fp(s string) string {
	h := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%x", h[:])
}

// sampleCeremony is an open ceremony on a volume with n cards (no shares yet).
func sampleCeremony(id, volume string, k, n int) CeremonyRecord {
	rec := CeremonyRecord{ID: id, VolumeUUID: volume, K: k, N: n, Keyslot: -1, Status: StatusOpen}
	names := []string{"Ada Lovelace", "Blaise Pascal", "Carl Gauss", "Dorothy Vaughan", "Emmy Noether"}
	for i := 1; i <= n; i++ {
		rec.Cards = append(rec.Cards, CeremonyCard{
			Index:       i,
			Serial:      fmt.Sprintf("%d", 10000000+i),
			Fingerprint: fp(fmt.Sprintf("%s key %d", id, i)),
			Slot:        fmt.Sprintf("%x", 0x81+i),
			Custodian:   names[(i-1)%len(names)],
		})
	}
	return rec
}

// activate fills in shares and commitments and marks the ceremony active.
func activate(rec CeremonyRecord, keyslot int) CeremonyRecord {
	rec.Status = StatusActive
	rec.Keyslot = keyslot
	cards := make([]CeremonyCard, len(rec.Cards))
	copy(cards, rec.Cards)
	for i := range cards {
		c := sha256.Sum256([]byte(fmt.Sprintf("commit %s %d", rec.ID, cards[i].Index)))
		s := sha256.Sum256([]byte(fmt.Sprintf("sealed %s %d", rec.ID, cards[i].Index)))
		cards[i].Commitment = c[:]
		cards[i].SealedShare = append(s[:], s[:]...)
	}
	rec.Cards = cards
	rec.Digest = []byte("digest of " + rec.ID)
	return rec
}

// fillCeremony writes a whole enrolment: begin, a step per card, active.
func fillCeremony(t testing.TB, l *Log, rec CeremonyRecord) Head {
	t.Helper()
	head, err := l.Update(func(tx *Tx) error {
		if _, err := tx.PutCeremony("operator", rec); err != nil {
			return err
		}
		for _, c := range rec.Cards {
			if _, err := tx.Append(Event{Actor: c.Custodian, Type: "enroll.share-sealed", Ceremony: rec.ID,
				Body: []byte(fmt.Sprintf(`{"index":%d,"serial":%q}`, c.Index, c.Serial))}); err != nil {
				return err
			}
		}
		_, err := tx.PutCeremony("operator", activate(rec, 1))
		return err
	})
	if err != nil {
		t.Fatalf("fill ceremony %s: %v", rec.ID, err)
	}
	return head
}

// appendN appends n generic events, one transaction each.
func appendN(t testing.TB, l *Log, n int) Head {
	t.Helper()
	var h Head
	var err error
	for i := 0; i < n; i++ {
		h, err = l.Append(Event{Actor: "tester", Type: "test.step", Body: []byte(fmt.Sprintf(`{"i":%d}`, i))})
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	return h
}

// rawUpdate changes the file behind the log's back, as an attacker with
// the file would.
func rawUpdate(t testing.TB, l *Log, fn func(events *bolt.Bucket) error) {
	t.Helper()
	if err := l.db.Update(func(btx *bolt.Tx) error { return fn(btx.Bucket(bucketEvents)) }); err != nil {
		t.Fatalf("tamper: %v", err)
	}
}

func chainErrorSeq(t testing.TB, err error, want error) uint64 {
	t.Helper()
	var ce *ChainError
	if !errors.As(err, &ce) {
		t.Fatalf("want a *ChainError, got %v", err)
	}
	if !errors.Is(err, want) {
		t.Fatalf("want errors.Is %v, got %v", want, err)
	}
	return ce.Seq
}

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }

// checkFileStructureAtCleanup runs bbolt's check on a file that a test
// leaves unverifiable on purpose (refused, newer, foreign).
func checkFileStructureAtCleanup(t testing.TB, path string) {
	t.Cleanup(func() {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: DefaultTimeout})
		if err != nil {
			t.Errorf("cleanup: open %s: %v", path, err)
			return
		}
		defer db.Close()
		if err := db.View(boltCheck); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}
