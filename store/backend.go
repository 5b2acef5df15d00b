package store

import "errors"

// The log keeps its events, head and indexes as keys in named buckets of
// an ordered key-value store: a bbolt file (bolt.go) or an etcd cluster
// (etcd.go). Everything above this file — the chain, the indexes, the
// rules and Verify — reads and writes through kvRead and kvWrite, so the
// two backends hold the same keys and values and give the same answers.

// kvRead is a consistent snapshot of the store.
type kvRead interface {
	// get returns the value of key in bucket, or nil when there is none.
	// The bytes are valid until the view ends and must not be changed.
	get(bucket, key []byte) ([]byte, error)
	// scan calls fn for each key of bucket in [from, to) in increasing
	// order (from nil: the first key; to nil: to the last). fn returning
	// errStop ends the scan without error. k and v are valid only during
	// the call.
	scan(bucket, from, to []byte, fn func(k, v []byte) error) error
	// scanDesc is scan in decreasing order.
	scanDesc(bucket, from, to []byte, fn func(k, v []byte) error) error
	// hasBucket reports whether the bucket exists (bbolt) or may hold
	// keys (etcd, where a bucket is a key prefix and always exists).
	hasBucket(bucket []byte) bool
}

// kvWrite is a write transaction: it reads its own writes.
type kvWrite interface {
	kvRead
	put(bucket, key, val []byte) error
	del(bucket, key []byte) error
}

// backend is where a Log keeps its keys.
type backend interface {
	// view runs fn on a consistent snapshot.
	view(fn func(kvRead) error) error
	// update runs fn in one atomic transaction: everything fn wrote is
	// kept if fn returns nil, nothing otherwise. On etcd the commit is
	// conditional on the head being the one fn read; when another
	// appender moved it first, update returns errConflict and the caller
	// runs fn again.
	update(fn func(kvWrite) error) error
	// check runs the backend's own consistency check of its storage
	// (bbolt's page check); nil where there is none.
	check(r kvRead) error
	close() error
}

// errStop ends a scan early without error.
var errStop = errors.New("stop scan")

// errConflict says another appender moved the head between this
// transaction's read and its commit (etcd only).
var errConflict = errors.New("the head moved while this transaction ran")

// prefixEnd returns the first key after every key that starts with p.
func prefixEnd(p []byte) []byte {
	end := append([]byte{}, p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // every byte 0xff: no end
}
