package store

import (
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// rawFile is a closed bbolt file's bytes, read as bbolt lays them out
// (boltpages.go), for tests that damage its pages the way a disk or an
// editor would.
type rawFile struct {
	b    []byte
	psz  int
	meta int // the offset of the current meta's fields
}

func readRawFile(t *testing.T, path string) *rawFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f := &rawFile{b: b, psz: int(ne.Uint32(b[pageHeader+8:]))}
	// The current meta: the higher txid of the two.
	f.meta = pageHeader
	if ne.Uint64(b[f.psz+pageHeader+48:]) > ne.Uint64(b[pageHeader+48:]) {
		f.meta = f.psz + pageHeader
	}
	return f
}

func (f *rawFile) page(id uint64) []byte { return f.b[int(id)*f.psz:] }

func (f *rawFile) u64(off int) uint64 { return ne.Uint64(f.b[off:]) }

// bucketRoot returns the root page of one of the root's buckets.
func (f *rawFile) bucketRoot(t *testing.T, name string) uint64 {
	t.Helper()
	pg := f.page(f.u64(f.meta + 16))
	if ne.Uint16(pg[8:]) != leafFlag {
		t.Fatal("the root bucket is not one leaf")
	}
	for i := 0; i < int(ne.Uint16(pg[10:])); i++ {
		at := pageHeader + i*elementSize
		pos, ksize := int(ne.Uint32(pg[at+4:])), int(ne.Uint32(pg[at+8:]))
		if string(pg[at+pos:at+pos+ksize]) == name {
			return ne.Uint64(pg[at+pos+ksize:])
		}
	}
	t.Fatalf("no bucket %s", name)
	return 0
}

// children returns the pages a branch page points to.
func (f *rawFile) children(id uint64) []uint64 {
	pg := f.page(id)
	if ne.Uint16(pg[8:]) != branchFlag {
		return nil
	}
	var out []uint64
	for i := 0; i < int(ne.Uint16(pg[10:])); i++ {
		out = append(out, ne.Uint64(pg[pageHeader+i*elementSize+8:]))
	}
	return out
}

// freelist returns the offset of the freelist's ids and their number.
func (f *rawFile) freelist() (off, n int) {
	pg := int(f.u64(f.meta+32)) * f.psz
	n = int(ne.Uint16(f.b[pg+10:]))
	off = pg + pageHeader
	if n == 0xFFFF {
		n = int(ne.Uint64(f.b[off:]))
		off += 8
	}
	return off, n
}

// pagesLog writes a log whose events bucket spans pages in three levels
// and whose file has free pages: a ceremony and 3,000 steps in many
// transactions.
func pagesLog(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "custos.db")
	l, err := open(path, nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	fillCeremony(t, l, sampleCeremony("pages", "pages", 2, 3))
	for i := 0; i < 30; i++ {
		if _, err := l.Update(func(tx *Tx) error {
			for j := 0; j < 100; j++ {
				if _, err := tx.Append(Event{Actor: "tester", Type: "test.step", Ceremony: idOf("pages"),
					Body: []byte(`{"pad":"` + strings.Repeat("x", 200) + `"}`)}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// streamVerdict runs the streaming verification alone on the file.
func streamVerdict(t *testing.T, path string) bool {
	t.Helper()
	l, err := Open(path, &Options{NoCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var ok bool
	l.view(func(r kvRead) error {
		_, ok = verifyStream(r, l.be, nil)
		return nil
	})
	return ok
}

// The streaming verification reads a file's pages itself, and checks them
// as bbolt's Check does: a sound file of several levels passes, and each
// damage that bbolt's Check reports makes it hand over to the replay,
// which names the damage in bbolt's words.
func TestVerifyFilePages(t *testing.T) {
	boltOnly(t)
	sound := pagesLog(t)
	f := readRawFile(t, sound)
	events := f.bucketRoot(t, string(bucketEvents))
	level1 := f.children(events)
	if len(level1) < 2 || len(f.children(level1[0])) < 2 {
		t.Fatalf("the events bucket is not three levels deep: root %d, children %v", events, level1)
	}
	if _, n := f.freelist(); n < 2 {
		t.Fatalf("the file has %d free pages, want some", n)
	}
	if !streamVerdict(t, sound) {
		t.Fatal("the streaming verification does not pass a sound file")
	}
	leaf := f.children(level1[0])[0]

	for _, tc := range []struct {
		name   string
		damage func(f *rawFile)
		want   string // what bbolt's Check says
	}{
		{"a free page left out of the freelist", func(f *rawFile) {
			off, n := f.freelist()
			pg := int(f.u64(f.meta+32)) * f.psz
			if ne.Uint16(f.b[pg+10:]) == 0xFFFF {
				binary.NativeEndian.PutUint64(f.b[pg+pageHeader:], uint64(n-1))
			} else {
				binary.NativeEndian.PutUint16(f.b[pg+10:], uint16(n-1))
			}
			_ = off
		}, "unreachable unfreed"},
		{"a page both in the tree and free", func(f *rawFile) {
			off, n := f.freelist()
			binary.NativeEndian.PutUint64(f.b[off+8*(n-1):], leaf)
		}, "reachable freed"},
		{"a page freed twice", func(f *rawFile) {
			off, n := f.freelist()
			copy(f.b[off+8*(n-1):off+8*n], f.b[off+8*(n-2):])
		}, "already freed"},
		{"a branch pointing twice at one page", func(f *rawFile) {
			pg := f.page(level1[0])
			copy(pg[pageHeader+elementSize+8:pageHeader+elementSize+16], pg[pageHeader+8:pageHeader+16])
		}, "multiple references"},
		{"two keys of a leaf swapped", func(f *rawFile) {
			pg := f.page(leaf)
			k := func(i int) []byte {
				at := pageHeader + i*elementSize
				pos, ksize := int(ne.Uint32(pg[at+4:])), int(ne.Uint32(pg[at+8:]))
				return pg[at+pos : at+pos+ksize]
			}
			a, b := k(0), k(1)
			tmp := append([]byte{}, a...)
			copy(a, b)
			copy(b, tmp)
		}, "needs to be"},
		{"a branch key below the one before", func(f *rawFile) {
			pg := f.page(events)
			at := pageHeader + elementSize
			pos, ksize := int(ne.Uint32(pg[at:])), int(ne.Uint32(pg[at+4:]))
			clear(pg[at+pos : at+pos+ksize])
		}, "needs to be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "custos.db")
			g := readRawFile(t, sound)
			tc.damage(g)
			if err := os.WriteFile(path, g.b, 0o600); err != nil {
				t.Fatal(err)
			}
			if streamVerdict(t, path) {
				t.Fatal("the streaming verification passed the damaged file")
			}
			l, err := Open(path, &Options{NoCreate: true})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			_, err = l.Verify()
			if err == nil || !strings.Contains(err.Error(), "bbolt consistency check") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("verify: %v, want bbolt's check saying %q", err, tc.want)
			}
		})
	}
}

// Events on a file reads the events bucket as Verify does (with pread,
// walkEventsPages), and gives what bbolt's cursor gives: on a sound file
// of three levels, and on one whose pages it cannot read that way (a page
// freed twice), where bbolt's cursor takes over. A panic of the caller's
// function is the caller's, not taken for damaged pages.
func TestEventsReadsPages(t *testing.T) {
	boltOnly(t)
	sound := pagesLog(t)
	damaged := filepath.Join(t.TempDir(), "damaged.db")
	g := readRawFile(t, sound)
	off, n := g.freelist()
	copy(g.b[off+8*(n-1):off+8*n], g.b[off+8*(n-2):])
	if err := os.WriteFile(damaged, g.b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{sound, damaged} {
		l, err := Open(path, &Options{NoCreate: true})
		if err != nil {
			t.Fatal(err)
		}
		var viaPages, viaCursor []Event
		pagesUsed := false
		if err := l.view(func(r kvRead) error {
			_, done, err := walkEventsPages(r, func(k, v []byte) error { return nil })
			pagesUsed = done && err == nil
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := l.Events("", func(ev Event) error { viaPages = append(viaPages, ev); return nil }); err != nil {
			t.Fatalf("%s: Events: %v", path, err)
		}
		if err := l.view(func(r kvRead) error {
			return r.scan(bucketEvents, nil, nil, func(k, v []byte) error {
				seq, _ := keySeq(k)
				ev, err := decodeStored(seq, v)
				viaCursor = append(viaCursor, ev)
				return err
			})
		}); err != nil {
			t.Fatal(err)
		}
		if len(viaPages) < 3000 || !reflect.DeepEqual(viaPages, viaCursor) {
			t.Errorf("%s: Events gave %d events, bbolt's cursor %d, or others", path, len(viaPages), len(viaCursor))
		}
		if want := path == sound; pagesUsed != want {
			t.Errorf("%s: read through the pages: %v, want %v", path, pagesUsed, want)
		}
		func() {
			defer func() {
				if x := recover(); x != "the caller's" {
					t.Errorf("%s: a panic of the caller's function came back as %v", path, x)
				}
			}()
			l.Events("", func(ev Event) error {
				if ev.Seq == 1500 {
					panic("the caller's")
				}
				return nil
			})
		}()
		l.Close()
	}
}

// EventsOfType gives exactly the events of the types asked for, as Events
// gives them, on a file and on etcd alike.
func TestEventsOfType(t *testing.T) {
	l := openTest(t)
	rec := sampleCeremony("types", "vol-types", 2, 3)
	card := testCard(rec, 1)
	if _, err := l.Update(func(tx *Tx) error {
		_, err := tx.RegisterCard("operator", "", CardRegistration{Serial: card.Serial, Custodian: card.Custodian, Slot: "82",
			Fingerprint: hex.EncodeToString(card.Key[:]), Attestation: []byte("attestation")})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	fillCeremony(t, l, rec)
	appendN(t, l, 5)
	for _, types := range [][]string{{TypeCard}, {TypeCeremony}, {TypeCard, TypeCeremony}, {"no.such.type"}} {
		var want, got []Event
		if err := l.Events("", func(ev Event) error {
			if slices.Contains(types, ev.Type) {
				want = append(want, ev)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := l.EventsOfType(types, func(ev Event) error { got = append(got, ev); return nil }); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) || len(types) < 3 && types[0] != "no.such.type" && len(got) == 0 {
			t.Errorf("EventsOfType(%v): %d events, Events of those types: %d", types, len(got), len(want))
		}
	}
}

// TestEventPagesFilled: the events bucket's keys only grow, and its pages
// are filled as appending allows (appendFillPercent), not to bbolt's
// default of half: on a log of 1,000,000 events the file was 737 MB of
// leaves half empty, and log verify reads all of them.
func TestEventPagesFilled(t *testing.T) {
	boltOnly(t)
	l, err := open(filepath.Join(t.TempDir(), "custos.db"), nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkConsistent(t, l) })
	if err := fillBatched(l, 20_000); err != nil {
		t.Fatal(err)
	}
	var st bolt.BucketStats
	if err := l.db.View(func(btx *bolt.Tx) error {
		st = btx.Bucket(bucketEvents).Stats()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if st.LeafAlloc == 0 {
		t.Fatal("no leaf pages")
	}
	if used := float64(st.LeafInuse) / float64(st.LeafAlloc); used < 0.8 {
		t.Errorf("the events' leaf pages are %.0f%% used (%d of %d bytes), want at least 80%%", 100*used, st.LeafInuse, st.LeafAlloc)
	}
}
