package store

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// The streaming verifier keeps the states of a bounded number of
// ceremonies and reads a state back from the log when it has let go of it
// (the ceremonies index, or the ceremony's events). With a cache of four
// ceremonies, a fleet log whose rollcalls and rotations find their
// ceremonies long gone, and a ceremony of six cards (more than a state
// holds inline) whose sixth card's rollcall comes after a hundred other
// ceremonies, still verifies on the streaming path, with the reference's
// report (crossCheckStream). An index that lies about a ceremony the
// cache let go of makes the streaming path hand over, and Verify names
// the index.
func TestVerifyStreamReadsStatesBack(t *testing.T) {
	boltOnly(t)
	defer func(g, r int) { cacheGeneration, recentRecords = g, r }(cacheGeneration, recentRecords)
	cacheGeneration, recentRecords = 4, 2

	dir := t.TempDir()
	sound := filepath.Join(dir, "sound.db")
	l, err := open(sound, nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	wide := sampleCeremony("wide", "vol-wide", 3, 6)
	fillCeremony(t, l, wide)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// The fleet goes on in the same file: buildFleet appends to it until
	// the log holds 3,000 events.
	if err := buildFleet(sound, 3000); err != nil {
		t.Fatal(err)
	}
	l, err = open(sound, nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	sixth := testCard(wide, 6)
	if _, err := l.RecordRollcall(sixth.Custodian, Rollcall{Ceremony: wide.IDString(), Serial: sixth.Serial,
		Fingerprint: hex.EncodeToString(sixth.Key[:]), OK: true}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if !streamVerdict(t, sound) {
		t.Fatal("the streaming verification does not pass a sound log with a small cache")
	}
	verifyFile(t, sound, nil)

	// The first fleet ceremony: long out of the cache when its rollcalls
	// come.
	first := fleetRecord(0, 0, 0).IDString()
	for _, tc := range []struct {
		name   string
		tamper func(btx *bolt.Tx) error
	}{
		{"a ceremony's entry names another k", func(btx *bolt.Tx) error {
			b := btx.Bucket(bucketCeremonies)
			v := bytes.Replace(b.Get([]byte(first)), []byte(`"k":2`), []byte(`"k":1`), 1)
			return b.Put([]byte(first), v)
		}},
		{"a ceremony's entry is another's", func(btx *bolt.Tx) error {
			b := btx.Bucket(bucketCeremonies)
			return b.Put([]byte(first), bytes.Clone(b.Get([]byte(wide.IDString()))))
		}},
		{"the wide ceremony's entry drops its sixth card", func(btx *bolt.Tx) error {
			b := btx.Bucket(bucketCeremonies)
			v := b.Get([]byte(wide.IDString()))
			if !bytes.Contains(v, []byte(sixth.Serial)) {
				t.Fatalf("the entry of the wide ceremony does not name card %s", sixth.Serial)
			}
			return b.Put([]byte(wide.IDString()), bytes.ReplaceAll(v, []byte(sixth.Serial), []byte("99999999")))
		}},
		{"a ceremony event unlisted", func(btx *bolt.Tx) error {
			c := btx.Bucket(bucketCeremonyEvents).Cursor()
			k, _ := c.Seek(append([]byte(first), 0))
			if !bytes.HasPrefix(k, append([]byte(first), 0)) {
				t.Fatal("no ceremony event of the first fleet ceremony")
			}
			return c.Delete()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "custos.db")
			b, err := os.ReadFile(sound)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(tc.tamper); err != nil {
				t.Fatal(err)
			}
			db.Close()
			if streamVerdict(t, path) {
				t.Fatal("the streaming verification passed the tampered log")
			}
			verifyFile(t, path, ErrIndex)
		})
	}
}

// verifyFile runs Verify on the file and checks its error is want (nil:
// none).
func verifyFile(t *testing.T, path string, want error) {
	t.Helper()
	l, err := Open(path, &Options{NoCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rep, err := l.Verify()
	if want == nil && (err != nil || rep.Events == 0) || want != nil && !errors.Is(err, want) {
		t.Fatalf("verify: %+v, %v, want %v", rep, err, want)
	}
}
