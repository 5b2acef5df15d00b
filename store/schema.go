package store

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// schemaVersion is the layout this custos writes. History:
//
//	1  meta, events, ceremonies, volumes, cards, fingerprints
//	2  adds ceremony-events (the events of each ceremony, for export and
//	   transcripts), built from the events by migrate1to2
//	3  ceremonies holds a ceremonyEntry (status, first and last event,
//	   the latest body) for the version 2 record of docs/FORMAT.md; adds
//	   log (from here on the log takes version 2 ceremony bodies only);
//	   every index is rebuilt from the events by migrate2to3; the
//	   custodian sets' indexes (sets, set-ceremonies, set-rollcalls;
//	   docs/FORMAT.md section 14) came later within schema 3: a file
//	   made before them gets each on the first write that needs it, and
//	   one it lacks reads as empty (an older custos neither writes nor
//	   reads them)
const schemaVersion uint32 = 3

// migration upgrades a file from one schema version to the next, inside
// the write transaction that also records it in the log.
type migration struct {
	from uint32
	what string
	run  func(btx *bolt.Tx) error
}

// migrations[i] upgrades version i+1 to i+2.
var migrations = []migration{
	{from: 1, what: "index the events of each ceremony", run: migrate1to2},
	{from: 2, what: "rebuild the indexes for version 2 ceremony records", run: migrate2to3},
}

// layouts lists the buckets of each schema version.
var layouts = map[uint32][][]byte{
	1: {bucketMeta, bucketEvents, bucketCeremonies, bucketVolumes, bucketCards, bucketFingerprints},
	2: {bucketMeta, bucketEvents, bucketCeremonies, bucketVolumes, bucketCards, bucketFingerprints, bucketCeremonyEvents},
	3: {bucketMeta, bucketEvents, bucketCeremonies, bucketVolumes, bucketCards, bucketFingerprints, bucketCeremonyEvents, bucketLogState,
		bucketSets, bucketSetCeremonies, bucketSetRollcalls},
}

// createLayout makes an empty log of the given schema version.
func createLayout(btx *bolt.Tx, version uint32) error {
	for _, name := range layouts[version] {
		if _, err := btx.CreateBucket(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	m := btx.Bucket(bucketMeta)
	if err := m.Put(keySchema, encodeVersion(version)); err != nil {
		return err
	}
	return m.Put(keyHead, encodeHead(Head{}))
}

func encodeVersion(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func readVersion(btx *bolt.Tx, path string) (uint32, error) {
	m := btx.Bucket(bucketMeta)
	if m == nil {
		return 0, fmt.Errorf("open ceremony log %s: %w (no meta bucket)", path, ErrNotLog)
	}
	b := m.Get(keySchema)
	if len(b) != 4 {
		return 0, fmt.Errorf("open ceremony log %s: %w (no schema version)", path, ErrNotLog)
	}
	v := binary.BigEndian.Uint32(b)
	if v == 0 {
		return 0, fmt.Errorf("open ceremony log %s: %w (schema version 0)", path, ErrNotLog)
	}
	if v > schemaVersion {
		return v, &SchemaError{Path: path, Found: v, Supported: schemaVersion}
	}
	return v, nil
}

// checkSchema refuses newer files and migrates older ones.
func (l *Log) checkSchema() error {
	var v uint32
	if err := l.db.View(func(btx *bolt.Tx) (err error) {
		v, err = readVersion(btx, l.path)
		return err
	}); err != nil {
		return err
	}
	if v == schemaVersion {
		return nil
	}
	return l.migrate()
}

// migrate upgrades the file to schemaVersion in one transaction: it checks
// the whole chain first (a broken log is not migrated), runs each step, and
// records a TypeMigrated event.
func (l *Log) migrate() error {
	err := l.db.Update(func(btx *bolt.Tx) error {
		from, err := readVersion(btx, l.path)
		if err != nil {
			return err
		}
		head, err := checkTail(boltKV{btx})
		if err != nil {
			return err
		}
		if err := walkEvents(boltKV{btx}, "", nil, newChainWalker(nil).step); err != nil {
			return err
		}
		for v := from; v < schemaVersion; v++ {
			m := migrations[v-1]
			if err := m.run(btx); err != nil {
				return fmt.Errorf("schema %d to %d (%s): %w", v, v+1, m.what, err)
			}
			if err := fail(fpMigrateStep); err != nil {
				return err
			}
		}
		if err := btx.Bucket(bucketMeta).Put(keySchema, encodeVersion(schemaVersion)); err != nil {
			return err
		}
		t := &Tx{kv: boltKV{btx}, log: l, head: head}
		_, err = t.append(Event{Actor: "custos", Type: TypeMigrated,
			Body: mustJSON(map[string]uint32{"from": from, "to": schemaVersion})})
		return err
	})
	if err != nil {
		return fmt.Errorf("migrate ceremony log %s: %w", l.path, err)
	}
	return nil
}

// migrate1to2 builds the ceremony-events index from the events.
func migrate1to2(btx *bolt.Tx) error {
	b, err := btx.CreateBucket(bucketCeremonyEvents)
	if err != nil {
		return err
	}
	return walkAll(btx, func(ev Event) error {
		if ev.Ceremony == "" {
			return nil
		}
		return b.Put(ceremonyEventKey(ev.Ceremony, ev.Seq), []byte{})
	})
}

// migrate2to3 rebuilds every index from the events, as the events
// themselves say (the ceremony index's entries change shape; the others
// come out as they were). The version 1 ceremony bodies of the log are
// read into version 1 records; the "log.migrated" event the migration then
// appends closes the log to version 1 bodies.
func migrate2to3(btx *bolt.Tx) error {
	for _, name := range indexBuckets {
		if btx.Bucket(name) != nil {
			if err := btx.DeleteBucket(name); err != nil {
				return err
			}
		}
		if _, err := btx.CreateBucket(name); err != nil {
			return err
		}
	}
	ix := boltKV{btx}
	return walkAll(btx, func(ev Event) error {
		if err := apply(ix, ev); err != nil {
			return &ChainError{Seq: ev.Seq, Problem: fmt.Sprintf("does not apply to the events before it: %v", err), Err: ErrBrokenChain, Cause: err}
		}
		return nil
	})
}

func walkAll(btx *bolt.Tx, fn func(Event) error) error {
	c := btx.Bucket(bucketEvents).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		seq, _ := keySeq(k)
		ev, err := decodeStored(seq, v)
		if err != nil {
			return &ChainError{Seq: seq, Problem: err.Error(), Err: ErrBrokenChain}
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}
