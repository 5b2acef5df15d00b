package store

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// makeV1 writes a schema-1 log as custos of schema 1 wrote it: the v1
// buckets, the same events and indexes, no ceremony-events index.
func makeV1(t *testing.T, path string) Head {
	t.Helper()
	l, err := open(path, nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	fillCeremony(t, l, sampleCeremony("c1", "vol-1", 2, 3))
	fillCeremony(t, l, sampleCeremony("c2", "vol-2", 2, 2))
	head := appendN(t, l, 2)
	err = l.db.Update(func(btx *bolt.Tx) error {
		if err := btx.DeleteBucket(bucketCeremonyEvents); err != nil {
			return err
		}
		return btx.Bucket(bucketMeta).Put(keySchema, encodeVersion(1))
	})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	return head
}

func TestMigrateV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "custos.db")
	v1Head := makeV1(t, path)
	l, err := Open(path, nil)
	if err != nil {
		t.Fatalf("open a v1 log: %v", err)
	}
	t.Cleanup(func() { checkConsistent(t, l) })
	rep, err := l.Verify(v1Head) // the old head is still in the log
	if err != nil {
		t.Fatal(err)
	}
	var last Event
	l.Events("", func(ev Event) error { last = ev; return nil })
	if last.Type != TypeMigrated || string(last.Body) != `{"from":1,"to":2}` || rep.Head.Seq != v1Head.Seq+1 {
		t.Errorf("last event %s %s, head %v", last.Type, last.Body, rep.Head)
	}
	var seqs []uint64
	if err := l.Events("c1", func(ev Event) error { seqs = append(seqs, ev.Seq); return nil }); err != nil || len(seqs) != 5 {
		t.Errorf("events of c1 after migration: %v, %v", seqs, err)
	}
	l.db.View(func(btx *bolt.Tx) error {
		if v, _ := readVersion(btx, path); v != schemaVersion {
			t.Errorf("schema %d after migration", v)
		}
		return nil
	})
	// A second open does not migrate again.
	l.Close()
	l, _ = Open(path, nil)
	if h, _ := l.Head(); h != rep.Head {
		t.Errorf("reopening moved the head: %v -> %v", rep.Head, h)
	}
}

func TestMigrationRefusesBrokenChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "custos.db")
	makeV1(t, path)
	checkFileStructureAtCleanup(t, path)
	db, _ := bolt.Open(path, 0o600, nil)
	db.Update(func(btx *bolt.Tx) error {
		b := btx.Bucket(bucketEvents)
		v := append([]byte{}, b.Get(seqKey(3))...)
		v[40] ^= 1
		return b.Put(seqKey(3), v)
	})
	db.Close()
	_, err := Open(path, nil)
	if got := chainErrorSeq(t, err, ErrBrokenChain); got != 3 || !strings.Contains(err.Error(), "migrate") {
		t.Errorf("open of a broken v1 log: %v", err)
	}
	db, _ = bolt.Open(path, 0o600, nil)
	defer db.Close()
	db.View(func(btx *bolt.Tx) error {
		if v, _ := readVersion(btx, path); v != 1 {
			t.Errorf("schema %d after a refused migration, want 1", v)
		}
		if btx.Bucket(bucketCeremonyEvents) != nil {
			t.Error("a refused migration left its bucket")
		}
		return nil
	})
}

func TestMigrationCrashKeepsV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "custos.db")
	v1Head := makeV1(t, path)
	cmd := child(t, "open", path, childCrashAt+"="+fpMigrateStep+":1")
	cmd.Run()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(btx *bolt.Tx) error {
		if v, _ := readVersion(btx, path); v != 1 {
			t.Errorf("schema %d after a crash mid-migration, want 1", v)
		}
		return nil
	})
	db.Close()
	l, err := Open(path, nil) // migrates now
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Verify(v1Head); err != nil {
		t.Error(err)
	}
	t.Cleanup(func() { checkConsistent(t, l) })
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "custos.db")
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.db.Update(func(btx *bolt.Tx) error { return btx.Bucket(bucketMeta).Put(keySchema, encodeVersion(schemaVersion+1)) })
	l.Close()
	checkFileStructureAtCleanup(t, path)
	before, _ := readFile(path)
	_, err = Open(path, nil)
	var se *SchemaError
	if !errors.As(err, &se) || !errors.Is(err, ErrNewerSchema) || se.Found != schemaVersion+1 || se.Supported != schemaVersion {
		t.Fatalf("open of a newer log: %v", err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "newer") {
		t.Errorf("message %q", err)
	}
	after, _ := readFile(path)
	if !bytes.Equal(before, after) {
		t.Error("a refused open changed the file")
	}
}

func TestEveryMigrationIsListed(t *testing.T) {
	if len(migrations) != int(schemaVersion)-1 {
		t.Fatalf("%d migrations for schema %d", len(migrations), schemaVersion)
	}
	for i, m := range migrations {
		if m.from != uint32(i+1) || m.run == nil || m.what == "" {
			t.Errorf("migration %d: %+v", i, m)
		}
		if _, ok := layouts[m.from]; !ok {
			t.Errorf("no layout for schema %d", m.from)
		}
	}
	if len(layouts[schemaVersion]) != 2+len(indexBuckets) {
		t.Errorf("layout of schema %d does not hold every index bucket", schemaVersion)
	}
}
