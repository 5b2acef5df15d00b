package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// boltBackend keeps the log in one bbolt file: a bucket per bucket name,
// the keys as they are.
type boltBackend struct {
	db *bolt.DB
}

func (b *boltBackend) view(fn func(kvRead) error) error {
	return b.db.View(func(btx *bolt.Tx) error { return fn(boltKV{btx}) })
}

func (b *boltBackend) update(fn func(kvWrite) error) error {
	return b.db.Update(func(btx *bolt.Tx) error { return fn(boltKV{btx}) })
}

func (b *boltBackend) check(r kvRead) error {
	kv, ok := r.(boltKV)
	if !ok {
		return nil
	}
	return boltCheck(kv.btx)
}

func (b *boltBackend) close() error { return b.db.Close() }

// boltKV is a bbolt transaction seen as a kvWrite (a read-only one only
// reads).
type boltKV struct{ btx *bolt.Tx }

func (b boltKV) get(bucket, key []byte) ([]byte, error) {
	bk := b.btx.Bucket(bucket)
	if bk == nil && lateIndex(bucket) {
		return nil, nil // a log made before the set indexes (schema.go)
	}
	if bk == nil {
		return nil, fmt.Errorf("%w: missing bucket %s", ErrNotLog, bucket)
	}
	v := bk.Get(key)
	if v == nil {
		return nil, nil
	}
	if b.btx.Writable() {
		// A later write may move the page the value lives on.
		return append([]byte{}, v...), nil
	}
	return v, nil
}

func (b boltKV) scan(bucket, from, to []byte, fn func(k, v []byte) error) error {
	bk := b.btx.Bucket(bucket)
	if bk == nil {
		return fmt.Errorf("%w: missing bucket %s", ErrNotLog, bucket)
	}
	c := bk.Cursor()
	var k, v []byte
	if from == nil {
		k, v = c.First()
	} else {
		k, v = c.Seek(from)
	}
	for ; k != nil && (to == nil || bytes.Compare(k, to) < 0); k, v = c.Next() {
		if err := fn(k, v); err != nil {
			if err == errStop {
				return nil
			}
			return err
		}
	}
	return nil
}

func (b boltKV) scanDesc(bucket, from, to []byte, fn func(k, v []byte) error) error {
	bk := b.btx.Bucket(bucket)
	if bk == nil {
		return fmt.Errorf("%w: missing bucket %s", ErrNotLog, bucket)
	}
	c := bk.Cursor()
	var k, v []byte
	if to == nil {
		k, v = c.Last()
	} else if k, v = c.Seek(to); k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	for ; k != nil && (from == nil || bytes.Compare(k, from) >= 0); k, v = c.Prev() {
		if err := fn(k, v); err != nil {
			if err == errStop {
				return nil
			}
			return err
		}
	}
	return nil
}

func (b boltKV) hasBucket(bucket []byte) bool { return b.btx.Bucket(bucket) != nil }

func (b boltKV) put(bucket, key, val []byte) error {
	bk := b.btx.Bucket(bucket)
	if bk == nil && lateIndex(bucket) {
		// A log made before the set indexes gets each when first
		// written (schema.go).
		var err error
		if bk, err = b.btx.CreateBucket(bucket); err != nil {
			return err
		}
	}
	if bk == nil {
		return fmt.Errorf("%w: missing bucket %s", ErrNotLog, bucket)
	}
	if bytes.Equal(bucket, bucketEvents) {
		// The events' keys only grow: pages filled as far as
		// appending allows, not to bbolt's default of half, which
		// leaves every page of the bucket half empty for good.
		bk.FillPercent = appendFillPercent
	}
	return bk.Put(key, val)
}

// appendFillPercent is how full bbolt fills the pages of a bucket whose
// keys only grow (etcd's backend uses the same for its revisions).
const appendFillPercent = 0.9

func (b boltKV) del(bucket, key []byte) error {
	bk := b.btx.Bucket(bucket)
	if bk == nil && lateIndex(bucket) {
		return nil
	}
	if bk == nil {
		return fmt.Errorf("%w: missing bucket %s", ErrNotLog, bucket)
	}
	return bk.Delete(key)
}

// Open opens the ceremony log at path (DefaultPath if empty), creating it
// and its directory if they do not exist. A new file is built and checked
// under a temporary name and only then linked into place, so a crash never
// leaves a half-made log at path. If another process holds the file, Open
// returns an *InUseError (errors.Is ErrInUse) after opts.Timeout. A file of
// an older schema is migrated; a newer one is refused with *SchemaError.
//
// Open does not verify the chain (so that a damaged log can still be
// verified and exported); every write checks the tail first.
func openBoltLog(path string, opts *Options, now func() time.Time) (*Log, error) {
	if path == "" {
		path = DefaultPath
	}
	timeout := DefaultTimeout
	if opts != nil && opts.Timeout > 0 {
		timeout = opts.Timeout
	}
	l := &Log{path: path, now: now}
	if opts == nil || !opts.NoCreate {
		if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
			return nil, fmt.Errorf("open ceremony log: %w", err)
		}
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && opts != nil && opts.NoCreate:
		return nil, fmt.Errorf("no ceremony log at %s: %w", path, ErrNotFound)
	case errors.Is(err, fs.ErrNotExist):
		if err := l.create(timeout); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("open ceremony log: %w", err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("open ceremony log %s: %w: not a regular file", path, ErrNotLog)
	}
	db, err := openBolt(path, timeout)
	if err != nil {
		return nil, err
	}
	l.db, l.be = db, &boltBackend{db: db}
	if err := l.checkSchema(); err != nil {
		db.Close()
		return nil, err
	}
	return l, nil
}

// openBolt opens an existing file: never NoSync, always a lock timeout, and
// never creating the file (only create does that).
func openBolt(path string, timeout time.Duration) (*bolt.DB, error) {
	db, err := bolt.Open(path, fileMode, &bolt.Options{
		Timeout: timeout,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			return os.OpenFile(name, flag&^os.O_CREATE, perm)
		},
	})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, &InUseError{Path: path, Waited: timeout}
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrChecksum):
		return nil, fmt.Errorf("open ceremony log %s: %w (bbolt: %v)", path, ErrNotLog, err)
	default:
		return nil, fmt.Errorf("open ceremony log %s: %w", path, err)
	}
}

// create builds a new log at l.path: schema, buckets and a first event, in a
// temporary file in the same directory that is checked and then linked to
// its final name.
func (l *Log) create(timeout time.Duration) error { return l.createWith(timeout, nil) }

// createWith builds a new log at l.path: the schema and buckets, then
// fill's events, in a temporary file in the same directory that is checked
// and only then linked to its final name. With fill nil the log gets its
// "log.created" event in the transaction that makes the buckets. If
// another process links a file at path first, create uses theirs (Copy
// checks that path is free before it begins).
func (l *Log) createWith(timeout time.Duration, fill func(tl *Log) error) (err error) {
	dir := filepath.Dir(l.path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(l.path)+".new-*")
	if err != nil {
		return fmt.Errorf("create ceremony log: %w", err)
	}
	tmp := f.Name()
	f.Close()
	defer func() {
		if rmErr := os.Remove(tmp); err == nil && rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
			err = fmt.Errorf("create ceremony log: %w", rmErr)
		}
	}()
	if err := os.Chmod(tmp, fileMode); err != nil {
		return fmt.Errorf("create ceremony log: %w", err)
	}
	db, err := openBolt(tmp, timeout)
	if err != nil {
		return err
	}
	tl := &Log{db: db, be: &boltBackend{db: db}, path: tmp, now: l.now}
	err = db.Update(func(btx *bolt.Tx) error {
		if err := createLayout(btx, schemaVersion); err != nil || fill != nil {
			return err
		}
		t := &Tx{kv: boltKV{btx}, log: tl}
		_, err := t.append(Event{Actor: "custos", Type: TypeCreated, Body: mustJSON(map[string]uint32{"schema": schemaVersion})})
		return err
	})
	if err == nil && fill != nil {
		err = fill(tl)
	}
	if err == nil {
		err = db.View(func(btx *bolt.Tx) error { return boltCheck(btx) })
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create ceremony log %s: %w", l.path, err)
	}
	if err := fail(fpCreateInitialized); err != nil {
		return err
	}
	if err := os.Link(tmp, l.path); err != nil && !errors.Is(err, fs.ErrExist) {
		// ErrExist: another process created it first; use theirs.
		return fmt.Errorf("create ceremony log: %w", err)
	}
	if err := fail(fpCreateLinked); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// boltCheck runs bbolt's own consistency check and joins what it finds.
func boltCheck(btx *bolt.Tx) error {
	var errs []error
	for err := range btx.Check() {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("bbolt consistency check: %w", errors.Join(errs...))
	}
	return nil
}
