package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// DefaultPath is where the log lives unless a path is given.
const DefaultPath = "/var/lib/custos/custos.db"

// DefaultTimeout is how long Open waits for another process to release the
// file before it returns an InUseError.
const DefaultTimeout = 3 * time.Second

// File and directory modes for a log Open creates.
const (
	dirMode  = 0o700
	fileMode = 0o600
)

// Options configures Open. A nil *Options means the defaults.
type Options struct {
	// Timeout is how long to wait for another process holding the file.
	// Zero or negative means DefaultTimeout; the wait is never unbounded.
	Timeout time.Duration
}

var (
	bucketMeta   = []byte("meta")
	bucketEvents = []byte("events") // seq (8 bytes, big endian) -> hash || record
	keySchema    = []byte("schema") // uint32, big endian
	keyHead      = []byte("head")   // seq (8 bytes) || hash (32 bytes)
)

// Log is an open ceremony log. Its methods are safe for concurrent use by
// the goroutines of one process; only one process may hold the file.
type Log struct {
	db   *bolt.DB
	path string
	now  func() time.Time // tests fix the clock
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
func Open(path string, opts *Options) (*Log, error) {
	return open(path, opts, time.Now)
}

func open(path string, opts *Options, now func() time.Time) (*Log, error) {
	if path == "" {
		path = DefaultPath
	}
	timeout := DefaultTimeout
	if opts != nil && opts.Timeout > 0 {
		timeout = opts.Timeout
	}
	l := &Log{path: path, now: now}
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return nil, fmt.Errorf("open ceremony log: %w", err)
	}
	fi, err := os.Lstat(path)
	switch {
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
	l.db = db
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
func (l *Log) create(timeout time.Duration) (err error) {
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
	tl := &Log{db: db, path: tmp, now: l.now}
	err = db.Update(func(btx *bolt.Tx) error {
		if err := createLayout(btx, schemaVersion); err != nil {
			return err
		}
		t := &Tx{btx: btx, log: tl}
		_, err := t.append(Event{Actor: "custos", Type: TypeCreated, Body: mustJSON(map[string]uint32{"schema": schemaVersion})})
		return err
	})
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

// Path returns the file the log lives in.
func (l *Log) Path() string { return l.path }

// Close releases the file. Closing a closed log does nothing.
func (l *Log) Close() error {
	if l == nil || l.db == nil {
		return nil
	}
	err := l.db.Close()
	l.db = nil
	if err != nil {
		return fmt.Errorf("close ceremony log %s: %w", l.path, err)
	}
	return nil
}

func (l *Log) view(fn func(*bolt.Tx) error) error {
	if l == nil || l.db == nil {
		return ErrClosed
	}
	return l.db.View(fn)
}

// Update runs fn in one write transaction and returns the head after it:
// the anchor to hand on. Before fn runs, the tail of the chain is checked;
// a broken tail refuses the write with a *ChainError. If fn returns an
// error, nothing fn did is kept. The *Tx must not be used after fn returns.
func (l *Log) Update(fn func(*Tx) error) (Head, error) {
	if l == nil || l.db == nil {
		return Head{}, ErrClosed
	}
	var head Head
	err := l.db.Update(func(btx *bolt.Tx) error {
		if err := fail(fpUpdateBegin); err != nil {
			return err
		}
		h, err := checkTail(btx)
		if err != nil {
			return fmt.Errorf("refusing to write to ceremony log %s: %w", l.path, err)
		}
		if err := fail(fpUpdateTailChecked); err != nil {
			return err
		}
		t := &Tx{btx: btx, log: l, head: h}
		defer func() { t.btx = nil }()
		if err := fn(t); err != nil {
			return err
		}
		if t.err != nil {
			return t.err
		}
		if err := fail(fpUpdateBeforeCommit); err != nil {
			return err
		}
		head = t.head
		return nil
	})
	if err != nil {
		return Head{}, err
	}
	if err := fail(fpUpdateCommitted); err != nil {
		return Head{}, err
	}
	return head, nil
}

// Append appends one event in its own transaction; see Tx.Append.
func (l *Log) Append(ev Event) (Head, error) {
	return l.Update(func(t *Tx) error {
		_, err := t.Append(ev)
		return err
	})
}

// RecordRollcall records one rollcall in its own transaction; see
// Tx.RecordRollcall.
func (l *Log) RecordRollcall(actor string, rc Rollcall) (Head, error) {
	return l.Update(func(t *Tx) error {
		_, err := t.RecordRollcall(actor, rc)
		return err
	})
}

// Tx is a write transaction, valid only inside the function given to Update.
type Tx struct {
	btx  *bolt.Tx
	log  *Log
	head Head
	err  error // a failure after a partial write: the transaction must roll back
}

// Head returns the head as it stands in this transaction.
func (t *Tx) Head() Head { return t.head }

// Append appends a step of a ceremony or any other event: the caller sets
// Actor, Type and optionally Ceremony and Body (a JSON object of public data
// only); the log sets Seq, Time, Prev and Hash and returns the stored event.
// The types the log interprets (TypeCeremony, TypeCard, TypeRollcall, and
// "log.*") are refused here: use the typed methods.
func (t *Tx) Append(ev Event) (Event, error) {
	switch {
	case ev.Type == TypeCeremony || ev.Type == TypeCard || ev.Type == TypeRollcall || ev.Type == TypeSet || ev.Type == TypeSetRollcall:
		return Event{}, fmt.Errorf("%w: event type %q is written by its own method", ErrInvalid, ev.Type)
	case len(ev.Type) >= 4 && ev.Type[:4] == "log.":
		return Event{}, fmt.Errorf("%w: event type %q is reserved for the log", ErrInvalid, ev.Type)
	}
	return t.append(ev)
}

// RegisterCard records a card key made by card init, optionally as a step
// of ceremony (or "").
func (t *Tx) RegisterCard(actor, ceremony string, reg CardRegistration) (Event, error) {
	return t.append(Event{Actor: actor, Type: TypeCard, Ceremony: ceremony, Body: mustJSON(reg)})
}

// RecordRollcall records one card's rollcall. A successful one sets the
// card's LastRollcall to the event's time.
func (t *Tx) RecordRollcall(actor string, rc Rollcall) (Event, error) {
	return t.append(Event{Actor: actor, Type: TypeRollcall, Ceremony: rc.Ceremony, Body: mustJSON(rc)})
}

func (t *Tx) append(ev Event) (Event, error) {
	if t.btx == nil {
		return Event{}, ErrClosed
	}
	if t.err != nil {
		return Event{}, t.err
	}
	ev.Seq = t.head.Seq + 1
	ev.Time = t.log.now().UTC()
	ev.Prev = t.head.Hash
	rec, err := encodeRecord(ev)
	if err != nil {
		return Event{}, err
	}
	// Round-trip through the decoder: what is stored is what Verify reads.
	stored, err := decodeRecord(rec)
	if err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	poison := func(err error) (Event, error) {
		t.err = err
		return Event{}, err
	}
	// apply validates the event against the indexes before it writes any;
	// an error from it after that point leaves the transaction poisoned.
	if err := apply(boltIndexes{t.btx}, stored); err != nil {
		if errors.Is(err, errIndexWrite) {
			return poison(err)
		}
		return Event{}, err
	}
	if err := fail(fpAppendIndexed); err != nil {
		return poison(err)
	}
	if err := t.btx.Bucket(bucketEvents).Put(seqKey(stored.Seq), storedValue(stored.Hash, rec)); err != nil {
		return poison(fmt.Errorf("store event %d: %w", stored.Seq, err))
	}
	if err := fail(fpAppendEventPut); err != nil {
		return poison(err)
	}
	if err := t.btx.Bucket(bucketMeta).Put(keyHead, encodeHead(stored.Head())); err != nil {
		return poison(fmt.Errorf("store head: %w", err))
	}
	t.head = stored.Head()
	return stored, nil
}

func encodeHead(h Head) []byte {
	b := make([]byte, 8, 8+len(h.Hash))
	binary.BigEndian.PutUint64(b, h.Seq)
	return append(b, h.Hash[:]...)
}

func decodeHead(b []byte) (Head, bool) {
	var h Head
	if len(b) != 8+len(h.Hash) {
		return h, false
	}
	h.Seq = binary.BigEndian.Uint64(b)
	copy(h.Hash[:], b[8:])
	return h, true
}

// checkTail checks the end of the chain before a write: the head record,
// the last event and its link to the one before. It returns the head.
func checkTail(btx *bolt.Tx) (Head, error) {
	meta, events := btx.Bucket(bucketMeta), btx.Bucket(bucketEvents)
	if meta == nil || events == nil {
		return Head{}, fmt.Errorf("%w: missing buckets", ErrNotLog)
	}
	head, ok := decodeHead(meta.Get(keyHead))
	if !ok {
		return Head{}, &ChainError{Problem: "head record is missing or malformed", Err: ErrBrokenChain}
	}
	k, v := events.Cursor().Last()
	if k == nil {
		if head.Seq != 0 {
			return Head{}, &ChainError{Seq: 1, Problem: fmt.Sprintf("missing: the head record names event %d but the log is empty", head.Seq), Err: ErrBrokenChain}
		}
		return head, nil
	}
	last, ok := keySeq(k)
	if !ok {
		return Head{}, &ChainError{Problem: fmt.Sprintf("event key %x is not an event number", k), Err: ErrBrokenChain}
	}
	if last != head.Seq {
		return Head{}, headMismatch(head, last)
	}
	ev, err := decodeStored(last, v)
	if err != nil {
		return Head{}, &ChainError{Seq: last, Problem: err.Error(), Err: ErrBrokenChain}
	}
	if ev.Hash != head.Hash {
		return Head{}, &ChainError{Seq: last, Problem: "hash differs from the head record", Err: ErrBrokenChain}
	}
	if last > 1 {
		pv := events.Get(seqKey(last - 1))
		if pv == nil {
			return Head{}, &ChainError{Seq: last - 1, Problem: "missing", Err: ErrBrokenChain}
		}
		if len(pv) < len(Hash{}) || sha256.Sum256(pv[len(Hash{}):]) != Hash(pv[:len(Hash{})]) {
			return Head{}, &ChainError{Seq: last - 1, Problem: "content does not match its stored hash (altered)", Err: ErrBrokenChain}
		}
		if Hash(pv[:len(Hash{})]) != ev.Prev {
			return Head{}, linkError(last, ev.Prev, Hash(pv[:len(Hash{})]))
		}
	} else if ev.Prev != (Hash{}) {
		return Head{}, linkError(1, ev.Prev, Hash{})
	}
	return head, nil
}

func headMismatch(head Head, last uint64) *ChainError {
	if head.Seq > last {
		return &ChainError{Seq: last + 1, Problem: fmt.Sprintf("missing: the head record names event %d but the events end at %d (truncated)", head.Seq, last), Err: ErrBrokenChain}
	}
	return &ChainError{Seq: head.Seq + 1, Problem: fmt.Sprintf("beyond the head record, which names event %d (appended outside custos)", head.Seq), Err: ErrBrokenChain}
}

func linkError(seq uint64, named, actual Hash) *ChainError {
	return &ChainError{Seq: seq, Problem: fmt.Sprintf("does not link to event %d: it names previous hash %s, event %d hashes to %s (one of the two was altered)",
		seq-1, named, seq-1, actual), Err: ErrBrokenChain}
}

// readJSON reads and decodes one index record, copying out of the
// transaction.
func readJSON(btx *bolt.Tx, bucket []byte, key, what string, v any) error {
	b := btx.Bucket(bucket)
	if b == nil {
		return fmt.Errorf("%w: missing bucket %s", ErrNotLog, bucket)
	}
	raw := b.Get([]byte(key))
	if raw == nil {
		return fmt.Errorf("%s %q: %w", what, key, ErrNotFound)
	}
	if err := json.Unmarshal(raw, v); err != nil { // Unmarshal copies
		return fmt.Errorf("%s %q: %w", what, key, err)
	}
	return nil
}

// Head returns the log's head: the last event's number and hash.
func (l *Log) Head() (Head, error) {
	var h Head
	err := l.view(func(btx *bolt.Tx) error {
		m := btx.Bucket(bucketMeta)
		if m == nil {
			return fmt.Errorf("%w: missing bucket meta", ErrNotLog)
		}
		var ok bool
		if h, ok = decodeHead(m.Get(keyHead)); !ok {
			return &ChainError{Problem: "head record is missing or malformed", Err: ErrBrokenChain}
		}
		return nil
	})
	return h, err
}

// Card returns a card by serial.
func (l *Log) Card(serial string) (CardRecord, error) {
	var rec CardRecord
	return rec, l.view(func(btx *bolt.Tx) error { return readJSON(btx, bucketCards, serial, "card", &rec) })
}

// CardByFingerprint returns the card holding the key with this fingerprint.
func (l *Log) CardByFingerprint(fingerprint string) (CardRecord, error) {
	var rec CardRecord
	err := l.view(func(btx *bolt.Tx) error {
		serial := btx.Bucket(bucketFingerprints).Get([]byte(fingerprint))
		if serial == nil {
			return fmt.Errorf("card key %q: %w", fingerprint, ErrNotFound)
		}
		return readJSON(btx, bucketCards, string(serial), "card", &rec)
	})
	return rec, err
}

// Events calls fn for each event in order: the whole log if ceremony is "",
// else the events of that ceremony. Each event is decoded and its stored
// hash checked; an event that fails stops the walk with a *ChainError.
func (l *Log) Events(ceremony string, fn func(Event) error) error {
	return l.view(func(btx *bolt.Tx) error { return walkEvents(btx, ceremony, fn) })
}

func walkEvents(btx *bolt.Tx, ceremony string, fn func(Event) error) error {
	events := btx.Bucket(bucketEvents)
	visit := func(seq uint64, v []byte) error {
		if v == nil {
			return &ChainError{Seq: seq, Problem: "missing", Err: ErrBrokenChain}
		}
		ev, err := decodeStored(seq, v)
		if err != nil {
			return &ChainError{Seq: seq, Problem: err.Error(), Err: ErrBrokenChain}
		}
		return fn(ev)
	}
	if ceremony == "" {
		c := events.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			seq, ok := keySeq(k)
			if !ok {
				return &ChainError{Problem: fmt.Sprintf("event key %x is not an event number", k), Err: ErrBrokenChain}
			}
			if err := visit(seq, v); err != nil {
				return err
			}
		}
		return nil
	}
	prefix := append([]byte(ceremony), 0)
	c := btx.Bucket(bucketCeremonyEvents).Cursor()
	n := 0
	for k, _ := c.Seek(prefix); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
		seq, _ := keySeq(k[len(prefix):])
		if err := visit(seq, events.Get(seqKey(seq))); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("ceremony %q: %w", ceremony, ErrNotFound)
	}
	return nil
}

// boltIndexes reads and writes the index buckets of a write transaction.
type boltIndexes struct{ btx *bolt.Tx }

func (b boltIndexes) get(bucket, key []byte) []byte {
	bk := b.btx.Bucket(bucket)
	if bk == nil {
		return nil // an index a log made before it lacks (schema.go)
	}
	v := bk.Get(key)
	if v == nil {
		return nil
	}
	return append([]byte{}, v...)
}

func (b boltIndexes) put(bucket, key, val []byte) error {
	bk, err := b.btx.CreateBucketIfNotExists(bucket)
	if err != nil {
		return err
	}
	return bk.Put(key, val)
}

func (b boltIndexes) del(bucket, key []byte) error {
	if bk := b.btx.Bucket(bucket); bk != nil {
		return bk.Delete(key)
	}
	return nil
}
