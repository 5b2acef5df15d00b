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
	// ErrContention means other appenders kept moving the head (etcd).
	ErrContention = errors.New("ceremony log too busy")
	// ErrUnavailable means the log's etcd cluster did not answer in time:
	// no quorum, no member reachable, or a certificate refused.
	ErrUnavailable = errors.New("ceremony log unavailable")
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
	// Cause is why the event does not apply to the events before it,
	// when that is the problem: a *RuleError or a *FormatError.
	Cause error
}

func (e *ChainError) Error() string {
	if e.Seq == 0 {
		return e.Problem
	}
	return fmt.Sprintf("event %d: %s", e.Seq, e.Problem)
}

// Unwrap returns Err, and Cause when there is one.
func (e *ChainError) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Err, e.Cause}
	}
	return []error{e.Err}
}

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

// FormatError says why a copy of a ceremony (a record, a LUKS2 token, a
// certificate's extension, a ceremony event's body, an anchor) is not in
// the form docs/FORMAT.md specifies. It unwraps to ErrInvalid.
type FormatError struct {
	// Copy names the copy: CopyRecord, CopyToken, CopyCertificate,
	// CopyEvent or CopyAnchor.
	Copy string
	// Path names the member at fault, e.g. "record.cards[2].sealed" (card
	// positions count from 0); "" is the copy's outermost object (and
	// "record" that of a bare record).
	Path string
	// Problem says what is wrong, e.g. "duplicate member".
	Problem string
}

func (e *FormatError) Error() string {
	if e.Path == "" {
		return e.Copy + ": " + e.Problem
	}
	return e.Copy + " " + e.Path + ": " + e.Problem
}

func (e *FormatError) Unwrap() error { return ErrInvalid }

// Rules of the log (docs/FORMAT.md section 11) that a ceremony event can
// break, as RuleError names them.
const (
	RuleFrame    = "frame"    // a frame member other than an added salt changed
	RuleSalt     = "salt"     // the keyslot's salt changed once recorded
	RuleCards    = "cards"    // a card entry changed or was removed, or was added out of index order
	RuleStatus   = "status"   // a status change the log does not allow
	RuleFirst    = "first"    // a first record that is neither open nor active
	RuleComplete = "complete" // an active record with fewer than n cards
	RuleReplaces = "replaces" // replaces a ceremony the log does not hold, or one of another volume
	RuleEvent    = "event"    // the event names another ceremony than its record
	RuleVersion  = "version"  // a version 1 body where the log takes only version 2
)

// RuleError is a ceremony event the log refuses: PutCeremony returns it,
// and Verify reports it (inside a *ChainError naming the event) for an
// event that was written behind the log's back. It unwraps to ErrInvalid.
type RuleError struct {
	Ceremony string // the ceremony's ID
	Rule     string // one of the Rule constants
	Detail   string // what changed, e.g. "keyslot 1 became 3"
}

func (e *RuleError) Error() string {
	return "ceremony " + e.Ceremony + " breaks the log's " + e.Rule + " rule: " + e.Detail
}

func (e *RuleError) Unwrap() error { return ErrInvalid }

// AnchorError says why an anchor read from a copy (a token, a card's
// certificate) is not good (docs/FORMAT.md section 9). It unwraps to
// ErrAnchor.
type AnchorError struct {
	// Copy names the copy the anchor was read from when the caller knows
	// it (CheckAnchor leaves it empty; escrow sets it before passing the
	// error on).
	Copy    string
	Seq     uint64 // the anchor's event number; 0 for a missing anchor
	Problem string
}

func (e *AnchorError) Error() string {
	s := "anchor"
	if e.Copy != "" {
		s += " of the " + e.Copy
	}
	if e.Seq != 0 {
		s += fmt.Sprintf(" at event %d", e.Seq)
	}
	return s + ": " + e.Problem
}

func (e *AnchorError) Unwrap() error { return ErrAnchor }

// ContentionError says an Update gave up after other appenders moved the
// head before each of its attempts to commit (etcd only). Nothing of it
// was written. It unwraps to ErrContention.
type ContentionError struct {
	Log      string
	Attempts int
}

func (e *ContentionError) Error() string {
	return fmt.Sprintf("ceremony log %s: other appenders moved the head before each of %d attempts to commit: nothing was written; repeat the command", e.Log, e.Attempts)
}

func (e *ContentionError) Unwrap() error { return ErrContention }
