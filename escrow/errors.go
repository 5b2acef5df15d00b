package escrow

import (
	"errors"
	"fmt"
	"strings"

	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// Sentinel errors. Errors from this package wrap one of these where one
// applies (test with errors.Is); ExitCode maps them to exit statuses.
var (
	// ErrUsage: the options make no sense (k > n, no cards, ...). Exit 2.
	ErrUsage = errors.New("usage")

	// ErrQuorum: fewer than k good shares were collected. Exit 3.
	ErrQuorum = errors.New("quorum not reached")

	// ErrVerification: something that must check out did not — the log's
	// chain or anchor, a share against its commitment, the copies of a
	// ceremony, the recovered key against its keyslot. Exit 4.
	ErrVerification = errors.New("verification failed")

	// ErrCopiesDisagree: the token, the log and a card hold different
	// copies of the same ceremony or share (a *DisagreeError). It wraps
	// ErrVerification too.
	ErrCopiesDisagree = fmt.Errorf("copies of the ceremony disagree: %w", ErrVerification)

	// ErrKeyslotMismatch: the recovered key does not open the ceremony's
	// keyslot. It wraps ErrVerification too.
	ErrKeyslotMismatch = fmt.Errorf("recovered key does not open its keyslot: %w", ErrVerification)

	// ErrUnconfirmed: what custos was about to act on is not confirmed by
	// two independent copies (or proven by a recovered key), so it does
	// not act. It wraps ErrVerification too.
	ErrUnconfirmed = fmt.Errorf("not confirmed by two copies: %w", ErrVerification)

	// ErrUnattested: a card's key could not be proven, by its
	// attestation, to have been generated on a genuine card with a PIN
	// policy that protects it. It wraps ErrVerification too.
	ErrUnattested = fmt.Errorf("card attestation: %w", ErrVerification)

	// ErrNoCeremony: no token, log entry or card tells of a ceremony for
	// this volume.
	ErrNoCeremony = errors.New("no custos ceremony for this volume")

	// ErrAlreadyEnrolled: the volume already has an active ceremony;
	// rotate it instead of enrolling again.
	ErrAlreadyEnrolled = errors.New("volume already has an active ceremony")

	// ErrUnfinished: the volume has an unfinished ceremony of another kind
	// than the one asked for; finish it first.
	ErrUnfinished = errors.New("volume has an unfinished ceremony")

	// ErrNoLog: the ceremony needs the ceremony log and Env.Log is nil.
	ErrNoLog = errors.New("this ceremony needs the ceremony log")

	// ErrMismatch: a secret typed twice differed.
	ErrMismatch = errors.New("the two entries differ")

	// Outcomes of one card, in a CardOutcome's Err.

	// ErrNotCustodian: the card holds no share of this volume.
	ErrNotCustodian = errors.New("not a custodian card of this volume")
	// ErrSeenTwice: the card (or its share index) was already counted.
	ErrSeenTwice = errors.New("card seen a second time")
	// ErrOtherCeremony: the card holds a share of another ceremony of
	// this volume (a retired or abandoned one), not of the current one.
	ErrOtherCeremony = errors.New("card holds a share of another ceremony of this volume")
	// ErrNoFreeSlot: the card has no custody slot free for a new share.
	ErrNoFreeSlot = errors.New("card has no free custody slot")
	// ErrNotInSet: the card is not one of the custodian set's cards (or
	// not the one a fleet ceremony asked for).
	ErrNotInSet = errors.New("card is not in the custodian set")
	// ErrSetExists: a set of that name is in the log already.
	ErrSetExists = errors.New("custodian set already exists")
	// ErrNoSet: the log holds no custodian set of that name.
	ErrNoSet = errors.New("no custodian set of that name in the log")
	// ErrNotEnrolledToSet: the volume's ceremony is not enrolled to the
	// custodian set named.
	ErrNotEnrolledToSet = errors.New("volume is not enrolled to the custodian set")
	// ErrNeedsToken: a ceremony enrolled to a custodian set lives in the
	// volume's LUKS2 token and the log (no card carries it), so the
	// volume must hold its token: a LUKS1 header, or a LUKS2 header too
	// small for the token, cannot.
	ErrNeedsToken = errors.New("a volume enrolled to a custodian set needs its ceremony's luks2 token")
	// ErrReadBack: a share read back from a card differs from the one
	// written, or does not open to the share sealed. It wraps
	// ErrVerification too.
	ErrReadBack = fmt.Errorf("share read back from the card does not match: %w", ErrVerification)
)

// Error is an error with a hint for the operator: what to do next.
type Error struct {
	Err  error
	Hint string
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// withHint wraps err with a hint, keeping a nil error nil.
func withHint(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err, Hint: fmt.Sprintf(format, args...)}
}

// Hint returns the first hint found in err's chain, or "".
func Hint(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Hint
	}
	return ""
}

// DisagreeError names copies of a ceremony that differ.
type DisagreeError struct {
	// Ceremony is the ceremony ID.
	Ceremony string
	// Index is the share index the disagreement is about, 0 when it is
	// about the ceremony as a whole.
	Index int
	// Field is what differs: "k", "n", "digest", "keyslot", "commitment",
	// "sealed share", "cards".
	Field string
	// Copies names the copies on each side, e.g. ["token"] and ["log",
	// "card 12345678"].
	A, B []string
}

func (e *DisagreeError) Error() string {
	what := e.Field
	if e.Index > 0 {
		what = fmt.Sprintf("share %d's %s", e.Index, e.Field)
	}
	return fmt.Sprintf("ceremony %s: %s differs between %s and %s", e.Ceremony, what,
		strings.Join(e.A, ", "), strings.Join(e.B, ", "))
}

func (e *DisagreeError) Unwrap() error { return ErrCopiesDisagree }

// Exit statuses (the command's contract).
const (
	ExitOK           = 0
	ExitError        = 1
	ExitUsage        = 2
	ExitQuorum       = 3
	ExitVerification = 4
)

// ExitCode maps an error to the exit status of the command that returned
// it: 0 for nil, 2 for usage errors, 3 when the quorum was not reached, 4
// when a verification failed (log chain or anchor, commitments, copies,
// keyslot), 1 for anything else; for a *FleetError, the highest of its
// volumes'.
func ExitCode(err error) int {
	var qe *shares.QuorumError
	var fe *FleetError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &fe):
		// A fleet ceremony: the worst of its volumes' failures.
		return fe.exitCode()
	case errors.Is(err, ErrUsage):
		return ExitUsage
	case errors.Is(err, ErrQuorum), errors.As(err, &qe):
		return ExitQuorum
	case errors.Is(err, ErrVerification),
		errors.Is(err, shares.ErrCommitmentMismatch),
		errors.Is(err, shares.ErrDigestMismatch),
		errors.Is(err, shares.ErrInconsistentShare),
		errors.Is(err, store.ErrBrokenChain),
		errors.Is(err, store.ErrAnchor),
		errors.Is(err, store.ErrIndex):
		return ExitVerification
	}
	return ExitError
}
