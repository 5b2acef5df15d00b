package store

import (
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
	name := filepath.Join(t.TempDir(), "custos.db")
	if onEtcd() {
		name = etcdTestDSN(t)
	}
	l, err := open(name, nil, testClock())
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { checkConsistent(t, l) })
	return l
}

// checkConsistent verifies and closes l (reopening it if it was closed).
func checkConsistent(t testing.TB, l *Log) {
	t.Helper()
	if l.be == nil {
		var err error
		if l, err = Open(l.path, nil); err != nil {
			t.Errorf("cleanup: reopen %s: %v", l.path, err)
			return
		}
	}
	streamVerdicts.Lock()
	before := streamVerdicts.ok
	streamVerdicts.Unlock()
	if _, err := l.Verify(); err != nil {
		t.Errorf("cleanup: log is not consistent: %v", err)
	} else {
		streamVerdicts.Lock()
		after := streamVerdicts.ok
		streamVerdicts.Unlock()
		if after == before {
			t.Errorf("cleanup: the streaming verifier could not tell that this sound log is sound")
		}
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

func key32(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// testID derives a ceremony ID from a name, so that tests can say "c1".
func testID(name string) [16]byte {
	h := sha256.Sum256([]byte("ceremony " + name))
	return [16]byte(h[:16])
}

// idOf is the text of testID(name).
func idOf(name string) string {
	id := testID(name)
	return hex.EncodeToString(id[:])
}

// testVolume derives a volume UUID from a name.
func testVolume(name string) [16]byte {
	h := sha256.Sum256([]byte("volume " + name))
	return [16]byte(h[:16])
}

// volOf is the text of testVolume(name).
func volOf(name string) string { return volumeText(testVolume(name)) }

// testSealed builds a sealed share laid out as docs/FORMAT.md section 6
// says (header naming the ceremony, recipient, ephemeral key, C and a
// ciphertext of a 32-byte secret's share), with deterministic bytes.
func testSealed(id, vol [16]byte, index, k, n int, recipient [32]byte) []byte {
	b := append([]byte("CSS\x01"), id[:]...)
	b = append(b, vol[:]...)
	b = append(b, byte(index), byte(k), byte(n))
	b = append(b, recipient[:]...)
	scalar := sha256.Sum256(append([]byte("ephemeral"), b...))
	e, err := ecdh.P256().NewPrivateKey(scalar[:])
	if err != nil {
		panic(err) // a scalar of zero or beyond the order: never for these inputs
	}
	b = append(b, e.PublicKey().Bytes()...) // 0x04 || X || Y, a point on the curve
	const c = 33 + 16
	b = append(b, 0, c)
	ct := sha256.Sum256(append([]byte("ciphertext"), b...))
	ct2 := sha256.Sum256(ct[:])
	return append(b, append(ct[:], ct2[:c-32]...)...)
}

var custodianNames = []string{"Ada Lovelace", "Blaise Pascal", "Carl Gauss", "Dorothy Vaughan", "Emmy Noether"}

// sampleCeremony is a ceremony as enroll begins it: its frame with keyslot
// 1 and a digest, no salt, no cards.
func sampleCeremony(name, volume string, k, n int) *Record {
	return &Record{Version: RecordVersion, ID: testID(name), Volume: testVolume(volume), K: k, N: n,
		Keyslot: 1, Digest: key32("digest " + name)}
}

// testCard is card i of rec.
func testCard(rec *Record, i int) RecordCard {
	tag := fmt.Sprintf("%x/%d", rec.ID, i)
	key := key32("key " + tag)
	return RecordCard{
		Index: i, Serial: strconv.Itoa(10000000 + i), Slot: uint8(MinSlot + (i-1)%20),
		Custodian: custodianNames[(i-1)%len(custodianNames)], Key: key,
		Attestation: key32("attestation " + tag), Commitment: key32("commitment " + tag),
		Sealed: testSealed(rec.ID, rec.Volume, i, rec.K, rec.N, key),
	}
}

// withSalt returns a copy of rec with its keyslot's salt recorded.
func withSalt(rec *Record) *Record {
	r := rec.Clone()
	h := key32(fmt.Sprintf("salt %x", rec.ID))
	r.Salt = hex.EncodeToString(h[:])
	return r
}

// withCards returns a copy of rec holding cards 1..m.
func withCards(rec *Record, m int) *Record {
	r := rec.Clone()
	r.Cards = nil
	for i := 1; i <= m; i++ {
		r.Cards = append(r.Cards, testCard(rec, i))
	}
	return r
}

// complete is rec with its salt and all n cards.
func complete(rec *Record) *Record { return withCards(withSalt(rec), rec.N) }

// fillCeremony writes a whole enrollment in one transaction: the open
// record, its salt, each card (a step and the record with the card), and
// the active record: 2n+3 events.
func fillCeremony(t testing.TB, l *Log, rec *Record) Head {
	t.Helper()
	head, err := l.Update(func(tx *Tx) error { return fillCeremonyTx(tx, rec) })
	if err != nil {
		t.Fatalf("fill ceremony %x: %v", rec.ID, err)
	}
	return head
}

func fillCeremonyTx(tx *Tx, rec *Record) error {
	if _, err := tx.PutCeremony("operator", StatusOpen, rec); err != nil {
		return err
	}
	r := withSalt(rec)
	if _, err := tx.PutCeremony("operator", StatusOpen, r); err != nil {
		return err
	}
	for i := 1; i <= rec.N; i++ {
		c := testCard(rec, i)
		if _, err := tx.Append(Event{Actor: c.Custodian, Type: "enroll.share-sealed", Ceremony: rec.IDString(),
			Body: []byte(fmt.Sprintf(`{"index":%d,"serial":%q}`, c.Index, c.Serial))}); err != nil {
			return err
		}
		r = withCards(r, i)
		if _, err := tx.PutCeremony("operator", StatusOpen, r); err != nil {
			return err
		}
	}
	_, err := tx.PutCeremony("operator", StatusActive, r)
	return err
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

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// forgeEvent appends ev to the closed log file at path behind custos's
// back, as an attacker holding the file would: well chained (its number,
// time, previous hash, stored hash and the head record), and with the
// indexes rewritten to say what the event says (the ceremony's entry and
// the ceremony-events index), none of the log's rules applied. It returns
// the event as stored.
func forgeEvent(t testing.TB, path string, ev Event) Event {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: DefaultTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var stored Event
	err = db.Update(func(btx *bolt.Tx) error {
		head, _ := decodeHead(btx.Bucket(bucketMeta).Get(keyHead))
		ev.Seq, ev.Prev = head.Seq+1, head.Hash
		ev.Time = time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
		rec, err := encodeRecord(ev)
		if err != nil {
			return err
		}
		if stored, err = decodeRecord(rec); err != nil {
			return err
		}
		if err := btx.Bucket(bucketEvents).Put(seqKey(stored.Seq), storedValue(stored.Hash, rec)); err != nil {
			return err
		}
		if err := btx.Bucket(bucketMeta).Put(keyHead, encodeHead(stored.Head())); err != nil {
			return err
		}
		if ev.Ceremony != "" {
			if err := btx.Bucket(bucketCeremonyEvents).Put(ceremonyEventKey(ev.Ceremony, stored.Seq), []byte{}); err != nil {
				return err
			}
		}
		if ev.Type == TypeCeremony {
			var e ceremonyEntry
			if raw := btx.Bucket(bucketCeremonies).Get([]byte(ev.Ceremony)); raw != nil {
				if err := json.Unmarshal(raw, &e); err != nil {
					return err
				}
			} else {
				e.First = stored.Seq
			}
			status, rec, err := parseCeremonyBody(ev.Body)
			if err != nil {
				return err
			}
			e.Status, e.Last, e.Body, e.Volume = status, stored.Seq, ev.Body, rec.VolumeString()
			return btx.Bucket(bucketCeremonies).Put([]byte(ev.Ceremony), mustJSON(e))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("forge: %v", err)
	}
	return stored
}
