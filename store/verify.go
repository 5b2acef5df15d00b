package store

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Report summarises a verification that found the log sound.
type Report struct {
	Events  uint64 // events checked
	Head    Head   // the head recomputed from the events
	Anchors int    // anchors found in the log
}

// Verify checks the whole log: it recomputes every event's hash and link
// from the first event on, replays the events against the log's rules and
// checks that the stored indexes are what the events make them, checks
// that each anchor (a head recorded elsewhere) is still in the log, and
// runs bbolt's own consistency check on a file. The first problem with
// the chain is returned as a *ChainError naming the event (errors.Is
// ErrBrokenChain; its Cause is the *RuleError or *FormatError when an
// event breaks a rule); a missing or different anchor unwraps to
// ErrAnchor, an index that disagrees to ErrIndex. Problems of different
// kinds are joined.
//
// Verify streams the log (see verifyStream): its memory does not grow with
// the log while the log is sound. When it finds a problem it replays the
// log once more the way it always has, with the indexes in memory, so
// that the problem is named exactly as before.
func (l *Log) Verify(anchors ...Head) (Report, error) {
	var rep Report
	var verr error
	err := l.view(func(r kvRead) error {
		rep, verr = verifyKV(r, l.be, anchors)
		return nil
	})
	if err != nil {
		return rep, err
	}
	if verr != nil {
		return rep, fmt.Errorf("verify %s: %w", l.path, verr)
	}
	return rep, nil
}

// verifyKV verifies the snapshot r of be: the streaming verification,
// and the reference replay when it finds anything wrong.
func verifyKV(r kvRead, be backend, anchors []Head) (Report, error) {
	rep, ok := verifyStream(r, be, anchors)
	if crossCheck != nil {
		crossCheck(r, be, anchors, rep, ok)
	}
	if ok {
		return rep, nil
	}
	return verifyReference(r, be, anchors)
}

// crossCheck, set by tests, sees every streaming verification's verdict.
var crossCheck func(r kvRead, be backend, anchors []Head, rep Report, ok bool)

// verifyTx verifies a bbolt transaction (tests tamper inside one).
func verifyTx(btx *bolt.Tx, anchors []Head) (Report, error) {
	return verifyKV(boltKV{btx}, &boltBackend{db: btx.DB()}, anchors)
}

// verifyReference is the replay Verify always did: every event applied to
// indexes rebuilt in memory, then compared with the stored ones. Its
// memory grows with the log; Verify uses it to name a problem.
func verifyReference(r kvRead, be backend, anchors []Head) (Report, error) {
	var rep Report
	var errs []error
	err := func() error {
		if !r.hasBucket(bucketMeta) || !r.hasBucket(bucketEvents) {
			return ErrNotLog
		}
		w := newChainWalker(newMemIndexes())
		want := map[uint64]bool{}
		for _, a := range anchors {
			want[a.Seq] = true
		}
		seen := map[uint64]Hash{}
		chainErr := walkEvents(r, "", nil, func(ev Event) error {
			if err := w.step(ev); err != nil {
				return err
			}
			if want[ev.Seq] {
				seen[ev.Seq] = ev.Hash
			}
			return nil
		})
		if chainErr == nil {
			chainErr = checkHeadRecord(r, w.head)
		}
		if chainErr != nil {
			errs = append(errs, chainErr)
		}
		rep.Events = w.head.Seq
		rep.Head = w.head
		n, aerrs := checkAnchors(anchors, seen, w.head, chainErr == nil)
		rep.Anchors = n
		errs = append(errs, aerrs...)
		if chainErr == nil {
			if err := compareIndexes(r, w.ix); err != nil {
				errs = append(errs, err)
			}
		}
		if err := be.check(r); err != nil {
			errs = append(errs, err)
		}
		return nil
	}()
	if err != nil {
		return rep, err
	}
	return rep, errors.Join(errs...)
}

// checkHeadRecord compares the stored head record with the head the
// events end at.
func checkHeadRecord(r kvRead, walked Head) error {
	hv, err := r.get(bucketMeta, keyHead)
	if err != nil {
		return err
	}
	head, ok := decodeHead(hv)
	switch {
	case !ok:
		return &ChainError{Problem: "head record is missing or malformed", Err: ErrBrokenChain}
	case head.Seq != walked.Seq:
		return headMismatch(head, walked.Seq)
	case head.Hash != walked.Hash:
		return &ChainError{Seq: head.Seq, Problem: "hash differs from the head record", Err: ErrBrokenChain}
	}
	return nil
}

// checkAnchors says which anchors the walked events hold (seen: the hash
// of each anchor's event).
func checkAnchors(anchors []Head, seen map[uint64]Hash, head Head, chainOK bool) (int, []error) {
	var errs []error
	n := 0
	for _, a := range anchors {
		h, ok := seen[a.Seq]
		switch {
		case a.Seq == 0:
			errs = append(errs, &ChainError{Problem: "anchor has no event number", Err: ErrAnchor})
		case ok && h == a.Hash:
			n++
		case ok:
			errs = append(errs, &ChainError{Seq: a.Seq, Problem: fmt.Sprintf("hashes to %s, but the anchor says %s: the log was rewritten", h, a.Hash), Err: ErrAnchor})
		case chainOK:
			errs = append(errs, &ChainError{Seq: a.Seq, Problem: fmt.Sprintf("anchor %s is not in the log, which ends at event %d: the log was rolled back or truncated", a, head.Seq), Err: ErrAnchor})
		default:
			errs = append(errs, &ChainError{Seq: a.Seq, Problem: fmt.Sprintf("anchor %s cannot be checked: the chain breaks before it", a), Err: ErrAnchor})
		}
	}
	return n, errs
}

// chainWalker follows the chain event by event.
type chainWalker struct {
	head Head        // the last event accepted
	ix   *memIndexes // replayed indexes, or nil
}

func newChainWalker(ix *memIndexes) *chainWalker { return &chainWalker{ix: ix} }

// step accepts the next event present in the log (its stored hash and
// number already checked by decodeStored).
func (w *chainWalker) step(ev Event) error {
	next := w.head.Seq + 1
	if ev.Seq != next {
		if ev.Seq < next { // cannot happen with ordered keys; guards the walker
			return &ChainError{Seq: ev.Seq, Problem: "out of order", Err: ErrBrokenChain}
		}
		if w.head.Seq == 0 {
			return &ChainError{Seq: 1, Problem: fmt.Sprintf("missing: the log starts at event %d (deleted)", ev.Seq), Err: ErrBrokenChain}
		}
		return &ChainError{Seq: next, Problem: fmt.Sprintf("missing: event %d is followed by event %d (deleted)", w.head.Seq, ev.Seq), Err: ErrBrokenChain}
	}
	if ev.Prev != w.head.Hash {
		return linkError(ev.Seq, ev.Prev, w.head.Hash)
	}
	if w.ix != nil {
		if err := apply(w.ix, ev); err != nil {
			return &ChainError{Seq: ev.Seq, Problem: fmt.Sprintf("does not apply to the events before it: %v", err), Err: ErrBrokenChain, Cause: err}
		}
	}
	w.head = ev.Head()
	return nil
}

// memIndexes holds indexes rebuilt in memory.
type memIndexes struct{ m map[string]map[string][]byte }

func newMemIndexes() *memIndexes {
	ix := &memIndexes{m: map[string]map[string][]byte{}}
	for _, b := range indexBuckets {
		ix.m[string(b)] = map[string][]byte{}
	}
	return ix
}

func (ix *memIndexes) get(bucket, key []byte) ([]byte, error) {
	v, ok := ix.m[string(bucket)][string(key)]
	if !ok {
		return nil, nil
	}
	return append([]byte{}, v...), nil
}

func (ix *memIndexes) put(bucket, key, val []byte) error {
	ix.m[string(bucket)][string(key)] = append([]byte{}, val...)
	return nil
}

func (ix *memIndexes) del(bucket, key []byte) error {
	delete(ix.m[string(bucket)], string(key))
	return nil
}

// compareIndexes reports the first stored index entry that the replayed
// events do not produce, or that they produce but is not stored.
func compareIndexes(r kvRead, ix *memIndexes) error {
	for _, name := range indexBuckets {
		want := ix.m[string(name)]
		if !r.hasBucket(name) && len(want) == 0 && lateIndex(name) {
			continue // a set index a log made before it lacks, and needs not
		}
		if !r.hasBucket(name) {
			return &ChainError{Problem: fmt.Sprintf("index %s is missing", name), Err: ErrIndex}
		}
		n := 0
		err := r.scan(name, nil, nil, func(k, v []byte) error {
			w, ok := want[string(k)]
			if !ok {
				return &ChainError{Problem: fmt.Sprintf("index %s: entry %q is not backed by any event", name, printable(k)), Err: ErrIndex}
			}
			if !bytes.Equal(w, v) {
				return &ChainError{Problem: fmt.Sprintf("index %s: entry %q differs from what the events say", name, printable(k)), Err: ErrIndex}
			}
			n++
			return nil
		})
		if err != nil {
			return err
		}
		if n != len(want) {
			for k := range want {
				if v, err := r.get(name, []byte(k)); err != nil {
					return err
				} else if v == nil {
					return &ChainError{Problem: fmt.Sprintf("index %s: entry %q is missing", name, printable([]byte(k))), Err: ErrIndex}
				}
			}
		}
	}
	return nil
}

// printable renders an index key for a message (ceremony-event keys hold a
// NUL and an event number).
func printable(k []byte) string {
	if i := bytes.IndexByte(k, 0); i >= 0 && len(k) == i+9 {
		seq, _ := keySeq(k[i+1:])
		return fmt.Sprintf("%s/event %d", k[:i], seq)
	}
	return string(k)
}
