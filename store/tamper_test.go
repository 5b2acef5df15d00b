package store

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

var errRollback = errors.New("roll back")

// tamperLog builds a log of fourteen events: log.created, a ceremony of
// three cards (events 2-10: the open record, its salt, a step and a record
// per card, event 10 the active record), and four steps (11-14).
func tamperLog(t *testing.T) (*Log, Head) {
	l := openTest(t)
	fillCeremony(t, l, sampleCeremony("c1", "vol-1", 2, 3))
	head := appendN(t, l, 4)
	if head.Seq != 14 {
		t.Fatalf("head %v, want 14 events", head)
	}
	return l, head
}

// inRolledBack runs fn in a write transaction that is then thrown away: the
// tampering and the verification see the altered bytes, the file does not.
func inRolledBack(t *testing.T, l *Log, fn func(btx *bolt.Tx)) {
	t.Helper()
	err := l.db.Update(func(btx *bolt.Tx) error {
		fn(btx)
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
}

// TestTamperFlipEveryByte flips each stored byte of three events (a
// record, the active record, a step) and checks that Verify names the
// event. Each byte is flipped once, the flips taking turns: all its bits,
// the low bit, the bit that changes a letter's case (a hex digit's, a
// key's), so that every field of three bytes or more meets all three.
// Three flips of every byte, 10,740 verifications, made this test over
// two minutes of the store's run under -race.
func TestTamperFlipEveryByte(t *testing.T) {
	boltOnly(t)
	l, _ := tamperLog(t)
	for _, target := range []uint64{5, 10, 14} {
		var orig []byte
		l.db.View(func(btx *bolt.Tx) error {
			orig = append([]byte{}, btx.Bucket(bucketEvents).Get(seqKey(target))...)
			return nil
		})
		flips := 0
		for i := range orig {
			mask := []byte{0xff, 0x01, 0x20}[i%3]
			inRolledBack(t, l, func(btx *bolt.Tx) {
				v := append([]byte{}, orig...)
				v[i] ^= mask
				if err := btx.Bucket(bucketEvents).Put(seqKey(target), v); err != nil {
					t.Fatal(err)
				}
				_, err := verifyTx(btx, nil)
				if got := chainErrorSeq(t, err, ErrBrokenChain); got != target {
					t.Fatalf("event %d byte %d ^%#x: Verify names event %d: %v", target, i, mask, got, err)
				}
				if target == 14 {
					if _, err := checkTail(boltKV{btx}); err == nil {
						t.Fatalf("byte %d ^%#x of the last event: tail check passed", i, mask)
					} else if got := chainErrorSeq(t, err, ErrBrokenChain); got != 14 {
						t.Fatalf("byte %d ^%#x: tail check names event %d", i, mask, got)
					}
				}
				flips++
			})
		}
		t.Logf("event %d: %d flips of %d stored bytes, each named", target, flips, len(orig))
	}

	// End to end on the file: commit a flip, reopen, verify, refuse writes.
	path := l.path
	rawUpdate(t, l, func(ev *bolt.Bucket) error {
		v := append([]byte{}, ev.Get(seqKey(14))...)
		v[len(v)/2] ^= 0x01
		return ev.Put(seqKey(14), v)
	})
	l.Close()
	l2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkConsistent(t, l2) }) // after the bytes are put back below
	_, err = l2.Verify()
	if got := chainErrorSeq(t, err, ErrBrokenChain); got != 14 {
		t.Errorf("Verify names event %d: %v", got, err)
	}
	if !strings.Contains(err.Error(), "event 14") {
		t.Errorf("message %q does not name event 14", err)
	}
	_, err = l2.Append(Event{Actor: "a", Type: "x"})
	if got := chainErrorSeq(t, err, ErrBrokenChain); got != 14 || !strings.Contains(err.Error(), "refusing to write") {
		t.Errorf("Append after tampering: %v", err)
	}
	if err := l2.ExportJSONL(io.Discard, ""); chainErrorSeq(t, err, ErrBrokenChain) != 14 {
		t.Errorf("export of a tampered log: %v", err)
	}
	// Put it back so the cleanup check passes.
	rawUpdate(t, l2, func(ev *bolt.Bucket) error {
		v := append([]byte{}, ev.Get(seqKey(14))...)
		v[len(v)/2] ^= 0x01
		return ev.Put(seqKey(14), v)
	})
}

func TestTamperDeleteSwapTruncate(t *testing.T) {
	boltOnly(t)
	cases := []struct {
		name   string
		tamper func(ev *bolt.Bucket, meta *bolt.Bucket) error
		want   uint64
	}{
		{"delete event 5", func(ev, _ *bolt.Bucket) error { return ev.Delete(seqKey(5)) }, 5},
		{"delete the first event", func(ev, _ *bolt.Bucket) error { return ev.Delete(seqKey(1)) }, 1},
		{"swap events 3 and 7", func(ev, _ *bolt.Bucket) error {
			a, b := append([]byte{}, ev.Get(seqKey(3))...), append([]byte{}, ev.Get(seqKey(7))...)
			if err := ev.Put(seqKey(3), b); err != nil {
				return err
			}
			return ev.Put(seqKey(7), a)
		}, 3},
		{"swap the last two", func(ev, _ *bolt.Bucket) error {
			a, b := append([]byte{}, ev.Get(seqKey(13))...), append([]byte{}, ev.Get(seqKey(14))...)
			ev.Put(seqKey(13), b)
			return ev.Put(seqKey(14), a)
		}, 13},
		{"truncate after event 11", func(ev, _ *bolt.Bucket) error {
			for s := uint64(12); s <= 14; s++ {
				if err := ev.Delete(seqKey(s)); err != nil {
					return err
				}
			}
			return nil
		}, 12},
		{"append an event outside custos", func(ev, _ *bolt.Bucket) error {
			return ev.Put(seqKey(15), append([]byte{}, ev.Get(seqKey(14))...))
		}, 15},
		{"re-number event 6 as 60", func(ev, _ *bolt.Bucket) error {
			v := append([]byte{}, ev.Get(seqKey(6))...)
			ev.Delete(seqKey(6))
			return ev.Put(seqKey(60), v)
		}, 6},
		{"replace event 4 with a consistent forgery", func(ev, _ *bolt.Bucket) error {
			old, _ := decodeStored(4, ev.Get(seqKey(4)))
			old.Body = []byte(`{"i":999}`)
			rec, err := encodeRecord(old)
			if err != nil {
				return err
			}
			forged, _ := decodeRecord(rec)
			return ev.Put(seqKey(4), storedValue(forged.Hash, rec))
		}, 5},
		{"short value", func(ev, _ *bolt.Bucket) error { return ev.Put(seqKey(2), []byte("x")) }, 2},
		{"head record changed", func(_, meta *bolt.Bucket) error {
			h, _ := decodeHead(meta.Get(keyHead))
			h.Hash[0] ^= 1
			return meta.Put(keyHead, encodeHead(h))
		}, 14},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, _ := tamperLog(t)
			inRolledBack(t, l, func(btx *bolt.Tx) {
				if err := c.tamper(btx.Bucket(bucketEvents), btx.Bucket(bucketMeta)); err != nil {
					t.Fatal(err)
				}
				_, err := verifyTx(btx, nil)
				if got := chainErrorSeq(t, err, ErrBrokenChain); got != c.want {
					t.Errorf("Verify names event %d, want %d: %v", got, c.want, err)
				}
				t.Logf("%v", err)
			})
		})
	}
}

// A chain cut back with its head record rewritten to match, or a log
// rewritten wholesale, is consistent in itself: only an anchor catches it.
func TestTamperCaughtByAnchor(t *testing.T) {
	boltOnly(t)
	t.Run("truncated with head record rewritten", func(t *testing.T) {
		l, anchor := tamperLog(t)
		inRolledBack(t, l, func(btx *bolt.Tx) {
			ev := btx.Bucket(bucketEvents)
			e11, _ := decodeStored(11, ev.Get(seqKey(11)))
			for s := uint64(12); s <= 14; s++ {
				ev.Delete(seqKey(s))
			}
			btx.Bucket(bucketMeta).Put(keyHead, encodeHead(e11.Head()))
			// The ceremony-events index is untouched by steps 12-14, so the
			// log is consistent in itself.
			if _, err := verifyTx(btx, nil); err != nil {
				t.Fatalf("without an anchor the cut log should verify: %v", err)
			}
			_, err := verifyTx(btx, []Head{anchor})
			if got := chainErrorSeq(t, err, ErrAnchor); got != 14 {
				t.Errorf("anchor check names event %d: %v", got, err)
			}
		})
	})

	t.Run("rolled back to an older copy", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "custos.db")
		l, err := open(path, nil, testClock())
		if err != nil {
			t.Fatal(err)
		}
		fillCeremony(t, l, sampleCeremony("c1", "vol-1", 2, 3))
		older, _ := l.Head()
		l.Close()
		old, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		l, _ = Open(path, nil)
		fillCeremony(t, l, sampleCeremony("c2", "vol-2", 2, 2))
		anchor, _ := l.Head()
		l.Close()
		if err := os.WriteFile(path, old, 0o600); err != nil { // the attacker's rollback
			t.Fatal(err)
		}
		l, err = Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { checkConsistent(t, l) })
		if _, err := l.Verify(older); err != nil {
			t.Fatalf("the older copy verifies against its own head: %v", err)
		}
		_, err = l.Verify(older, anchor)
		if got := chainErrorSeq(t, err, ErrAnchor); got != anchor.Seq {
			t.Errorf("anchor check names event %d, want %d: %v", got, anchor.Seq, err)
		}
		if !strings.Contains(err.Error(), "rolled back") {
			t.Errorf("message %q does not say rolled back", err)
		}
	})

	t.Run("rewritten wholesale", func(t *testing.T) {
		l1, anchor := tamperLog(t)
		_ = l1
		// The forger builds a whole new log of the same length.
		l2 := openTest(t)
		fillCeremony(t, l2, sampleCeremony("c1", "vol-1", 2, 2))
		h2 := appendN(t, l2, 6)
		if h2.Seq != anchor.Seq {
			t.Fatalf("forgery has %d events, want %d", h2.Seq, anchor.Seq)
		}
		if _, err := l2.Verify(); err != nil {
			t.Fatalf("forgery verifies in itself: %v", err)
		}
		_, err := l2.Verify(anchor)
		if got := chainErrorSeq(t, err, ErrAnchor); got != anchor.Seq || !strings.Contains(err.Error(), "rewritten") {
			t.Errorf("anchor check: %v", err)
		}
	})
}

func TestTamperIndexes(t *testing.T) {
	boltOnly(t)
	cases := map[string]func(btx *bolt.Tx) error{
		"ceremony record altered": func(btx *bolt.Tx) error {
			b := btx.Bucket(bucketCeremonies)
			v := bytes.Replace(b.Get([]byte(idOf("c1"))), []byte(`"k":2`), []byte(`"k":1`), 1)
			return b.Put([]byte(idOf("c1")), v)
		},
		"volume current changed": func(btx *bolt.Tx) error {
			return btx.Bucket(bucketVolumes).Put([]byte(volOf("vol-1")), []byte(`{"uuid":"`+volOf("vol-1")+`","history":["`+idOf("c1")+`"]}`))
		},
		"card added": func(btx *bolt.Tx) error {
			return btx.Bucket(bucketCards).Put([]byte("666"), []byte(`{"serial":"666"}`))
		},
		"fingerprint removed": func(btx *bolt.Tx) error {
			k, _ := btx.Bucket(bucketFingerprints).Cursor().First()
			return btx.Bucket(bucketFingerprints).Delete(append([]byte{}, k...))
		},
		"ceremony event unlisted": func(btx *bolt.Tx) error {
			return btx.Bucket(bucketCeremonyEvents).Delete(ceremonyEventKey(idOf("c1"), 3))
		},
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			l, _ := tamperLog(t)
			inRolledBack(t, l, func(btx *bolt.Tx) {
				if err := tamper(btx); err != nil {
					t.Fatal(err)
				}
				_, err := verifyTx(btx, nil)
				if !errors.Is(err, ErrIndex) {
					t.Errorf("Verify: %v, want ErrIndex", err)
				}
			})
		})
	}
}
