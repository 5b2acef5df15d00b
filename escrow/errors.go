package escrow

import (
	"errors"
	"fmt"
	"strings"

	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// Sentinel errors. Errors from this package wrap one of these where one
// applies (test with errors.Is); the command line maps them to its exit
// statuses and its hints (what to run next), which this package does not
// word.
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
	// ErrNoCustodyKey: the card holds no custody key at all (it was not
	// initialised as a custody card). It wraps ErrNoFreeSlot too.
	ErrNoCustodyKey = fmt.Errorf("%w: it holds no custody key", ErrNoFreeSlot)
	// ErrSlotsFull: every custody slot of the card holds a share of
	// another volume. It wraps ErrNoFreeSlot too.
	ErrSlotsFull = fmt.Errorf("%w: every custody slot holds a share of another volume", ErrNoFreeSlot)
	// ErrNoCustodian: a card initialised with the log at hand must name
	// its custodian. It wraps ErrUsage too.
	ErrNoCustodian = fmt.Errorf("%w: no custodian named", ErrUsage)
	// ErrAuthorise: the key given (passphrase or key file) opens no
	// keyslot of the volume, or could not be tried.
	ErrAuthorise = errors.New("authorise")
	// ErrNoCeremonyLeft: every ceremony the copies name was tried and
	// its recovered key opened no keyslot.
	ErrNoCeremonyLeft = errors.New("no ceremony is left to try")
	// ErrSetFile: a set file could not be read as one.
	ErrSetFile = errors.New("the set file")
	// ErrReadBack: a share read back from a card differs from the one
	// written, or does not open to the share sealed. It wraps
	// ErrVerification too.
	ErrReadBack = fmt.Errorf("share read back from the card does not match: %w", ErrVerification)
)

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

// Step is what a ceremony had done, and keeps, when a later step failed.
type Step int

const (
	// StepSharesWritten: enroll wrote and verified every share; the
	// token or the log was not written.
	StepSharesWritten Step = iota + 1
	// StepSharesVerified: rotate verified every new share; a later step
	// (token, log, the old keyslot, wiping) was not done.
	StepSharesVerified
	// StepKeyslotAdded: recover added the new keyslot (the volume opens
	// with the new key); the log was not written, or the copies' anchors
	// fail against it.
	StepKeyslotAdded
)

// StepError is a ceremony that failed after a step it keeps: a rerun of the
// same command finishes it (enroll, rotate), or the volume is usable and
// only the log needs care (recover).
type StepError struct {
	Op      string // "enroll", "rotate", "recover"
	Done    Step
	Keyslot int // StepKeyslotAdded: the keyslot added
	Err     error
}

func (e *StepError) Error() string {
	var done string
	switch e.Done {
	case StepSharesWritten:
		done = "every share is written"
	case StepSharesVerified:
		done = "every new share is verified"
	case StepKeyslotAdded:
		done = fmt.Sprintf("keyslot %d added", e.Keyslot)
	}
	return fmt.Sprintf("%s: %s, but %v", e.Op, done, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// UndoError is a failed ceremony whose undoing failed too: the volume may
// hold the failed ceremony's keyslot or token until a rerun undoes it.
type UndoError struct {
	Op      string // "enroll", "rotate"
	Err     error  // why the ceremony failed
	UndoErr error  // why undoing it failed
}

func (e *UndoError) Error() string {
	return fmt.Sprintf("%v; undoing it failed too: %v", e.Err, e.UndoErr)
}

// Unwrap gives the ceremony's failure (which decides the exit status), not
// the undo's.
func (e *UndoError) Unwrap() error { return e.Err }

// UnfinishedError is a volume's unfinished ceremony of another kind than
// the one asked for. It wraps ErrUnfinished.
type UnfinishedError struct {
	Kind     string // "enrollment" or "rotation"
	Ceremony string // its ID
}

func (e *UnfinishedError) Error() string {
	return fmt.Sprintf("%v: %s %s", ErrUnfinished, e.Kind, e.Ceremony)
}

func (e *UnfinishedError) Unwrap() error { return ErrUnfinished }

// AnchorsError is the anchors of copies of a ceremony (tokens, cards) that
// fail against the log: the copies were written against another log, or
// the log was rolled back.
type AnchorsError struct{ Errs []error }

func (e *AnchorsError) Error() string { return errors.Join(e.Errs...).Error() }

func (e *AnchorsError) Unwrap() []error { return e.Errs }

// anchorsError is nil when no anchor failed.
func anchorsError(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return &AnchorsError{Errs: errs}
}

// FailedCardsError is a rollcall in which cards failed their check (a
// share or key that no longer verifies, not an absent card). It wraps
// ErrVerification.
type FailedCardsError struct {
	Failed int
	Set    string // the custodian set's name, for a rollcall of a set
}

func (e *FailedCardsError) Error() string {
	if e.Set != "" {
		return fmt.Sprintf("%v: %d cards of set %s failed their check", ErrVerification, e.Failed, e.Set)
	}
	return fmt.Sprintf("%v: %d cards failed their check", ErrVerification, e.Failed)
}

func (e *FailedCardsError) Unwrap() error { return ErrVerification }

// KeptKeyslotError is a rotation that left the old ceremony's keyslot in
// place: the copies name it, but do not prove it holds the old recovery
// key (it may hold a key someone added since). It wraps ErrUnconfirmed.
type KeptKeyslotError struct {
	Keyslot  int
	Ceremony string // the old ceremony's ID
	Why      string
}

func (e *KeptKeyslotError) Error() string {
	return fmt.Sprintf("%v: keyslot %d, which the copies name as the old recovery keyslot of %s, is left in place: %s", ErrUnconfirmed, e.Keyslot, e.Ceremony, e.Why)
}

func (e *KeptKeyslotError) Unwrap() error { return ErrUnconfirmed }

// RecoveryKeyGivenError is a rotation authorised by a key that opens the
// recovery keyslot itself: the key to replace cannot authorise its own
// replacement. It wraps ErrUsage.
type RecoveryKeyGivenError struct{ Keyslot int }

func (e *RecoveryKeyGivenError) Error() string {
	return fmt.Sprintf("%v: the key given opens the recovery keyslot %d itself", ErrUsage, e.Keyslot)
}

func (e *RecoveryKeyGivenError) Unwrap() error { return ErrUsage }

// SlotsError is a card of a custodian set that holds several custody keys
// when none was named. It wraps ErrUsage.
type SlotsError struct {
	Serial string
	Keys   int
}

func (e *SlotsError) Error() string {
	return fmt.Sprintf("%v: card %s holds %d custody keys", ErrUsage, e.Serial, e.Keys)
}

func (e *SlotsError) Unwrap() error { return ErrUsage }

// MissingCardsError is a set create that ended (no more cards, or the
// wait ran out) before every card named was proven; nothing was logged.
type MissingCardsError struct {
	Serials []string // the cards not proven
	Err     error
}

func (e *MissingCardsError) Error() string {
	return fmt.Sprintf("%v (cards not proven: %s)", e.Err, strings.Join(e.Serials, ", "))
}

func (e *MissingCardsError) Unwrap() error { return e.Err }

// SetAttestationError is a card of a custodian set whose attestation does
// not verify. It wraps ErrUnattested and the verifier's error.
type SetAttestationError struct {
	Set, Serial string
	Err         error
}

func (e *SetAttestationError) Error() string {
	return fmt.Sprintf("set %s: card %s: %v: %v", e.Set, e.Serial, ErrUnattested, e.Err)
}

func (e *SetAttestationError) Unwrap() []error { return []error{ErrUnattested, e.Err} }

// FingerprintError is a set file whose fingerprint is not the one given.
// It wraps ErrVerification.
type FingerprintError struct {
	Set       string
	Version   int
	Got, Want [32]byte
}

func (e *FingerprintError) Error() string {
	return fmt.Sprintf("%v: set %s version %d: the file's fingerprint is %s, not the %s given",
		ErrVerification, e.Set, e.Version, FingerprintGroups(e.Got), FingerprintGroups(e.Want))
}

func (e *FingerprintError) Unwrap() error { return ErrVerification }

// FleetError is a fleet ceremony in which some volumes failed: each is
// named with its error; the others were done.
type FleetError struct {
	Op     string // "enroll", "recover", "rotate"
	Total  int
	Failed []VolumeError
}

// VolumeError is one volume's failure in a fleet ceremony.
type VolumeError struct {
	Device string
	Err    error
}

func (e *FleetError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d of %d volumes failed", e.Op, len(e.Failed), e.Total)
	for _, f := range e.Failed {
		fmt.Fprintf(&b, "; %s: %v", f.Device, f.Err)
	}
	return b.String()
}

func (e *FleetError) Unwrap() []error {
	out := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		out[i] = f.Err
	}
	return out
}

// failedCheck tells whether err, a card's outcome, is a check that failed
// (a share, key, commitment or copy that does not verify), rather than a
// card absent, refused or set aside.
func failedCheck(err error) bool {
	var qe *shares.QuorumError
	switch {
	case err == nil, errors.Is(err, ErrUsage), errors.Is(err, ErrQuorum), errors.As(err, &qe):
		return false
	}
	return errors.Is(err, ErrVerification) ||
		errors.Is(err, shares.ErrCommitmentMismatch) ||
		errors.Is(err, shares.ErrDigestMismatch) ||
		errors.Is(err, shares.ErrInconsistentShare) ||
		errors.Is(err, store.ErrBrokenChain) ||
		errors.Is(err, store.ErrAnchor) ||
		errors.Is(err, store.ErrIndex)
}
