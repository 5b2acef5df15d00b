package store

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Test for them with errors.Is; the typed errors below
// carry the details and unwrap to one of these.
var (
	// ErrInUse means another process holds the log file open for writing.
	ErrInUse = errors.New("ceremony log in use")
	// ErrNotFound means no ceremony, volume or card has the given key.
	ErrNotFound = errors.New("not found")
	// ErrBrokenChain means an event is missing, altered, reordered or does
	// not link to the event before it.
	ErrBrokenChain = errors.New("ceremony log chain is broken")
	// ErrAnchor means the log does not contain a head hash recorded
	// elsewhere (paper, LUKS2 token, card certificate).
	ErrAnchor = errors.New("ceremony log does not contain the anchor")
	// ErrIndex means a lookup index disagrees with the events it is built from.
	ErrIndex = errors.New("ceremony log index disagrees with its events")
	// ErrNewerSchema means the file was written by a newer custos.
	ErrNewerSchema = errors.New("ceremony log written by a newer custos")
	// ErrNotLog means the file is not a custos ceremony log.
	ErrNotLog = errors.New("not a custos ceremony log")
	// ErrInvalid means an event or record given to the log is malformed.
	ErrInvalid = errors.New("invalid record")
	// ErrClosed means the log or transaction was used after it ended.
	ErrClosed = errors.New("ceremony log closed")
)

// InUseError is returned by Open when another process (another custos)
// holds the file's lock for longer than Options.Timeout.
type InUseError struct {
	Path   string
	Waited time.Duration
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("ceremony log %s: another custos holds it (waited %s)", e.Path, e.Waited)
}

func (e *InUseError) Unwrap() error { return ErrInUse }

// ChainError names the first event at which verification failed and what is
// wrong with it. Seq is 0 when the problem is not tied to one event (an
// index entry, the head record of an empty log).
type ChainError struct {
	Seq     uint64
	Problem string
	Err     error // ErrBrokenChain, ErrAnchor or ErrIndex
}

func (e *ChainError) Error() string {
	if e.Seq == 0 {
		return e.Problem
	}
	return fmt.Sprintf("event %d: %s", e.Seq, e.Problem)
}

func (e *ChainError) Unwrap() error { return e.Err }

// SchemaError is returned by Open for a file whose schema version this
// custos cannot read.
type SchemaError struct {
	Path      string
	Found     uint32
	Supported uint32
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("ceremony log %s: schema version %d is newer than this custos supports (%d): use a newer custos",
		e.Path, e.Found, e.Supported)
}

func (e *SchemaError) Unwrap() error { return ErrNewerSchema }
