package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
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
	// Timeout is how long to wait for another process holding the file,
	// or, on etcd, for each request to the cluster (a write's read and its
	// commit, each page of a scan). Zero or negative means DefaultTimeout;
	// the wait is never unbounded.
	Timeout time.Duration
	// EtcdCACert, EtcdCert and EtcdKey are PEM files for TLS to an etcd
	// cluster: the CA that signed its members' certificates, and this
	// client's certificate and key. All empty: plain TCP.
	EtcdCACert, EtcdCert, EtcdKey string
	// NoCreate makes Open refuse, with ErrNotFound, a log that does not
	// exist yet (no file; an empty etcd prefix) instead of creating it.
	NoCreate bool
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
	be   backend
	db   *bolt.DB         // the bbolt backend's file; nil on etcd
	path string           // the file, or the etcd endpoints ("etcd://...")
	now  func() time.Time // tests fix the clock
}

// Open opens the ceremony log named by dsn: a file path (DefaultPath if
// empty), or an etcd cluster as etcd://HOST:PORT[,HOST:PORT...][/PREFIX]
// (see OpenEtcd). A file is created with its directory if it does not
// exist; a new file is built and checked under a temporary name and only
// then linked into place, so a crash never leaves a half-made log at
// path. If another process holds the file, Open returns an *InUseError
// (errors.Is ErrInUse) after opts.Timeout. A file of an older schema is
// migrated; a newer one is refused with *SchemaError.
//
// Open does not verify the chain (so that a damaged log can still be
// verified and exported); every write checks the tail first.
func Open(dsn string, opts *Options) (*Log, error) {
	return open(dsn, opts, time.Now)
}

func open(dsn string, opts *Options, now func() time.Time) (*Log, error) {
	if IsEtcd(dsn) {
		return openEtcdLog(dsn, opts, now)
	}
	return openBoltLog(dsn, opts, now)
}

// Path returns where the log lives: its file, or its etcd endpoints and
// prefix ("etcd://HOST:PORT,.../PREFIX").
func (l *Log) Path() string { return l.path }

// Close releases the file or the etcd connection. Closing a closed log
// does nothing.
func (l *Log) Close() error {
	if l == nil || l.be == nil {
		return nil
	}
	err := l.be.close()
	l.be, l.db = nil, nil
	if err != nil {
		return fmt.Errorf("close ceremony log %s: %w", l.path, err)
	}
	return nil
}

func (l *Log) view(fn func(kvRead) error) error {
	if l == nil || l.be == nil {
		return ErrClosed
	}
	return l.be.view(fn)
}

// maxAttempts bounds how often Update runs its function when other
// appenders keep moving the head first (etcd only; a bbolt file has one
// writer at a time).
const maxAttempts = 40

// Update runs fn in one write transaction and returns the head after it:
// the anchor to hand on. Before fn runs, the tail of the chain is checked;
// a broken tail refuses the write with a *ChainError. If fn returns an
// error, nothing fn did is kept. The *Tx must not be used after fn returns.
//
// On etcd the transaction commits only if the head is still the one it
// read: when another appender got there first, fn runs again on the new
// head (up to maxAttempts times, then *ContentionError). fn must
// therefore have no effect outside the Tx that it cannot repeat.
func (l *Log) Update(fn func(*Tx) error) (Head, error) {
	if l == nil || l.be == nil {
		return Head{}, ErrClosed
	}
	start := time.Now()
	for attempt := 1; ; attempt++ {
		head, err := l.updateOnce(fn)
		var ue *UnavailableError
		switch {
		case errors.As(err, &ue) && time.Since(start) < ue.Waited:
			// A member went away (etcd): nothing was written, or the
			// commit was found to have happened; the others may answer.
		case !errors.Is(err, errConflict):
			return head, err
		case attempt == maxAttempts:
			return Head{}, &ContentionError{Log: l.path, Attempts: attempt}
		}
		backoff(attempt)
	}
}

func (l *Log) updateOnce(fn func(*Tx) error) (Head, error) {
	var head Head
	err := l.be.update(func(kv kvWrite) error {
		if err := fail(fpUpdateBegin); err != nil {
			return err
		}
		h, chained := Head{}, false
		if c, ok := kv.(interface{ chainedHead() (Head, bool) }); ok {
			h, chained = c.chainedHead()
		}
		if !chained {
			var err error
			if h, err = checkTail(kv); err != nil {
				return fmt.Errorf("refusing to write to ceremony log %s: %w", l.path, err)
			}
		}
		if err := fail(fpUpdateTailChecked); err != nil {
			return err
		}
		t := &Tx{kv: kv, log: l, head: h}
		defer func() { t.kv = nil }()
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
	kv   kvWrite
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
	if t.kv == nil {
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
	return t.appendRecord(stored, rec)
}

// appendRecord stores an event decoded from rec, which must follow the
// head: the indexes first (validating the event), then the event and the
// head.
func (t *Tx) appendRecord(stored Event, rec []byte) (Event, error) {
	poison := func(err error) (Event, error) {
		t.err = err
		return Event{}, err
	}
	// apply validates the event against the indexes before it writes any;
	// an error from it after that point leaves the transaction poisoned.
	if err := apply(t.kv, stored); err != nil {
		if errors.Is(err, errIndexWrite) {
			return poison(err)
		}
		return Event{}, err
	}
	if err := fail(fpAppendIndexed); err != nil {
		return poison(err)
	}
	if err := t.kv.put(bucketEvents, seqKey(stored.Seq), storedValue(stored.Hash, rec)); err != nil {
		return poison(fmt.Errorf("store event %d: %w", stored.Seq, err))
	}
	if err := fail(fpAppendEventPut); err != nil {
		return poison(err)
	}
	if err := t.kv.put(bucketMeta, keyHead, encodeHead(stored.Head())); err != nil {
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
func checkTail(r kvRead) (Head, error) {
	if !r.hasBucket(bucketMeta) || !r.hasBucket(bucketEvents) {
		return Head{}, fmt.Errorf("%w: missing buckets", ErrNotLog)
	}
	hv, err := r.get(bucketMeta, keyHead)
	if err != nil {
		return Head{}, err
	}
	head, ok := decodeHead(hv)
	if !ok {
		return Head{}, &ChainError{Problem: "head record is missing or malformed", Err: ErrBrokenChain}
	}
	// The last two events, newest first.
	keys, vals, err := tailAtHead(r, head.Seq)
	if err != nil {
		return Head{}, err
	}
	if keys == nil {
		// Not as the head record says: the events bucket's own last
		// keys, to name the problem.
		err = r.scanDesc(bucketEvents, nil, nil, func(k, v []byte) error {
			keys, vals = append(keys, append([]byte{}, k...)), append(vals, append([]byte{}, v...))
			if len(keys) == 2 {
				return errStop
			}
			return nil
		})
		if err != nil {
			return Head{}, err
		}
	}
	if len(keys) == 0 {
		if head.Seq != 0 {
			return Head{}, &ChainError{Seq: 1, Problem: fmt.Sprintf("missing: the head record names event %d but the log is empty", head.Seq), Err: ErrBrokenChain}
		}
		return head, nil
	}
	last, ok := keySeq(keys[0])
	if !ok {
		return Head{}, &ChainError{Problem: fmt.Sprintf("event key %x is not an event number", keys[0]), Err: ErrBrokenChain}
	}
	if last != head.Seq {
		return Head{}, headMismatch(head, last)
	}
	ev, err := decodeStored(last, vals[0])
	if err != nil {
		return Head{}, &ChainError{Seq: last, Problem: err.Error(), Err: ErrBrokenChain}
	}
	if ev.Hash != head.Hash {
		return Head{}, &ChainError{Seq: last, Problem: "hash differs from the head record", Err: ErrBrokenChain}
	}
	if last > 1 {
		var pv []byte
		if len(keys) == 2 {
			if s, ok := keySeq(keys[1]); ok && s == last-1 {
				pv = vals[1]
			}
		}
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

// tailAtHead reads the events bucket from the event before the head
// record's on: when it holds exactly the events seq-1 and seq (seq alone
// when it is 1, nothing when it is 0) and no key after them, it returns
// them newest first, as checkTail's scan from the end would; otherwise
// nil, and checkTail reads the bucket's end to say what is wrong. One
// short ascending read, where a read from the end costs etcd a sort of
// the whole range (it drops the limit of any sorted range).
func tailAtHead(r kvRead, seq uint64) (keys, vals [][]byte, err error) {
	var from []byte
	if seq > 1 {
		from = seqKey(seq - 1)
	} else if seq == 1 {
		from = seqKey(1)
	}
	var want [][]byte
	for s := max(seq, 2) - 1; s <= seq && s > 0; s++ {
		want = append(want, seqKey(s))
	}
	good := true
	var ks, vs [][]byte
	err = r.scan(bucketEvents, from, nil, func(k, v []byte) error {
		if len(ks) == len(want) || !bytes.Equal(k, want[len(ks)]) {
			good = false
			return errStop
		}
		ks, vs = append(ks, append([]byte{}, k...)), append(vs, append([]byte{}, v...))
		return nil
	})
	if err != nil || !good || len(ks) != len(want) {
		return nil, nil, err
	}
	slices.Reverse(ks)
	slices.Reverse(vs)
	if ks == nil {
		ks = [][]byte{} // an empty log, as the head record says
	}
	return ks, vs, nil
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

// readJSON reads and decodes one index record.
func readJSON(r kvRead, bucket []byte, key, what string, v any) error {
	if !r.hasBucket(bucket) {
		return fmt.Errorf("%w: missing bucket %s", ErrNotLog, bucket)
	}
	raw, err := r.get(bucket, []byte(key))
	if err != nil {
		return err
	}
	if raw == nil {
		return fmt.Errorf("%s %q: %w", what, key, ErrNotFound)
	}
	if err := json.Unmarshal(raw, v); err != nil { // Unmarshal copies
		return fmt.Errorf("%s %q: %w", what, key, err)
	}
	return nil
}

func readHead(r kvRead) (Head, error) {
	if !r.hasBucket(bucketMeta) {
		return Head{}, fmt.Errorf("%w: missing bucket meta", ErrNotLog)
	}
	hv, err := r.get(bucketMeta, keyHead)
	if err != nil {
		return Head{}, err
	}
	h, ok := decodeHead(hv)
	if !ok {
		return Head{}, &ChainError{Problem: "head record is missing or malformed", Err: ErrBrokenChain}
	}
	return h, nil
}

// Head returns the log's head: the last event's number and hash.
func (l *Log) Head() (Head, error) {
	var h Head
	err := l.view(func(r kvRead) (err error) {
		h, err = readHead(r)
		return err
	})
	return h, err
}

// Card returns a card by serial.
func (l *Log) Card(serial string) (CardRecord, error) {
	var rec CardRecord
	return rec, l.view(func(r kvRead) error { return readJSON(r, bucketCards, serial, "card", &rec) })
}

// CardByFingerprint returns the card holding the key with this fingerprint.
func (l *Log) CardByFingerprint(fingerprint string) (CardRecord, error) {
	var rec CardRecord
	err := l.view(func(r kvRead) error {
		serial, err := r.get(bucketFingerprints, []byte(fingerprint))
		if err != nil {
			return err
		}
		if serial == nil {
			return fmt.Errorf("card key %q: %w", fingerprint, ErrNotFound)
		}
		return readJSON(r, bucketCards, string(serial), "card", &rec)
	})
	return rec, err
}

// Events calls fn for each event in order: the whole log if ceremony is "",
// else the events of that ceremony. Each event is decoded and its stored
// hash checked; an event that fails stops the walk with a *ChainError.
func (l *Log) Events(ceremony string, fn func(Event) error) error {
	return l.view(func(r kvRead) error { return walkEvents(r, ceremony, nil, fn) })
}

// EventsOfType calls fn for each event of the whole log whose type is one
// of types, in order, as Events does. An event of another type is only
// read as far as its type: it is not decoded, nor its stored hash checked
// (Verify checks the chain; a record whose type cannot be read that way is
// decoded and checked as Events does). For a pass that needs a few kinds
// of events out of many: the attestations of a fleet's log.
func (l *Log) EventsOfType(types []string, fn func(Event) error) error {
	keep := func(typ []byte) bool { return slices.Contains(types, string(typ)) }
	return l.view(func(r kvRead) error { return walkEvents(r, "", keep, fn) })
}

// walkEventsPages walks the events bucket of a file's read transaction
// as Verify does (boltPages: pread through its own descriptor), so that a
// pass over the whole log does not map the file into the resident set
// page by page. done says it walked every event; otherwise (not a file,
// or its pages not as bbolt writes them) the caller goes on through
// bbolt from from, the key after the last event it gave each. An error
// of each ends the walk with it (errStop: without error); a panic of
// each is each's own.
func walkEventsPages(r kvRead, each func(k, v []byte) error) (from []byte, done bool, err error) {
	kv, ok := r.(boltKV)
	if !ok || kv.btx.Writable() {
		return nil, false, nil
	}
	p, ok := newBoltPages(kv.btx)
	if !ok {
		return nil, false, nil
	}
	defer p.close()
	var last []byte
	var panicked any
	ok, err = p.scan(bucketEvents, func(k, v []byte) (ferr error) {
		defer func() {
			if x := recover(); x != nil {
				panicked, ferr = x, errStop
			}
		}()
		if ferr = each(k, v); ferr == nil {
			last = append(last[:0], k...)
		}
		return ferr
	})
	if panicked != nil {
		panic(panicked)
	}
	if err == errStop {
		err = nil // as the backend's scan says it
	}
	if err != nil || ok {
		return nil, true, err
	}
	if last != nil {
		from = append(last, 0)
	}
	return from, false, nil
}

// walkEvents calls fn for the events of ceremony ("": all), or only for
// those whose type keep takes when keep is set (see EventsOfType).
func walkEvents(r kvRead, ceremony string, keep func(typ []byte) bool, fn func(Event) error) error {
	visit := func(seq uint64, v []byte) error {
		if v == nil {
			return &ChainError{Seq: seq, Problem: "missing", Err: ErrBrokenChain}
		}
		if keep != nil && len(v) > len(Hash{}) {
			if typ, _, _, ok := peekRecord(v[len(Hash{}):]); ok && !keep(typ) {
				return nil
			}
		}
		ev, err := decodeStored(seq, v)
		if err != nil {
			return &ChainError{Seq: seq, Problem: err.Error(), Err: ErrBrokenChain}
		}
		return fn(ev)
	}
	if ceremony == "" {
		each := func(k, v []byte) error {
			seq, ok := keySeq(k)
			if !ok {
				return &ChainError{Problem: fmt.Sprintf("event key %x is not an event number", k), Err: ErrBrokenChain}
			}
			return visit(seq, v)
		}
		from, done, err := walkEventsPages(r, each)
		if done || err != nil {
			return err
		}
		return r.scan(bucketEvents, from, nil, each)
	}
	prefix := append([]byte(ceremony), 0)
	n := 0
	err := r.scan(bucketCeremonyEvents, prefix, prefixEnd(prefix), func(k, _ []byte) error {
		if len(k) != len(prefix)+8 {
			return nil
		}
		seq, _ := keySeq(k[len(prefix):])
		v, err := r.get(bucketEvents, seqKey(seq))
		if err != nil {
			return err
		}
		n++
		return visit(seq, v)
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("ceremony %q: %w", ceremony, ErrNotFound)
	}
	return nil
}
