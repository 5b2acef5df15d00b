package shares

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of these (test
// with errors.Is) and add what went wrong where; none ever carries secret
// bytes.
var (
	// ErrTruncated: the bytes end before the encoding does.
	ErrTruncated = errors.New("truncated")
	// ErrTrailingBytes: bytes follow a complete encoding.
	ErrTrailingBytes = errors.New("trailing bytes")
	// ErrUnknownFormat: the magic bytes are not custos's, or the version is
	// one this build does not know.
	ErrUnknownFormat = errors.New("unknown format or version")
	// ErrOutOfRange: an index, threshold, count or length outside its bounds.
	ErrOutOfRange = errors.New("out of range")

	// ErrForeignShare: the share belongs to another ceremony or volume, or
	// claims another threshold or count.
	ErrForeignShare = errors.New("share belongs to another ceremony")
	// ErrDuplicateShare: a second share with an index already seen.
	ErrDuplicateShare = errors.New("duplicate share")
	// ErrForgedShare: a share with x = 0, which would make Shamir's
	// interpolation return the forger's chosen value.
	ErrForgedShare = errors.New("forged share (x = 0)")
	// ErrCommitmentMismatch: the share's bytes do not match the ceremony's
	// commitment for its index: tampered, or from another split.
	ErrCommitmentMismatch = errors.New("share does not match its commitment")
	// ErrDigestMismatch: no k of the shares that passed their commitments
	// reconstruct a secret matching the ceremony's digest.
	ErrDigestMismatch = errors.New("reconstructed secret does not match the ceremony digest")

	// ErrInconsistentShare: a share that matched its commitment but does
	// not lie on the polynomial the other shares agree on; its commitment
	// must have been forged along with it.
	ErrInconsistentShare = errors.New("share disagrees with the other shares (its commitment was forged too)")

	// ErrWrongRecipient: the sealed share was sealed to another key than
	// the one offered to open it.
	ErrWrongRecipient = errors.New("sealed to another key")
	// ErrUnsealFailed: authenticated decryption failed: the sealed share or
	// its header was changed, or the key agreement was not done with the
	// recipient's private key.
	ErrUnsealFailed = errors.New("sealed share does not open: tampered, or the wrong key")
)

// QuorumError is returned by Ceremony.Combine when fewer than K good shares
// remain once the bad ones are set aside.
type QuorumError struct {
	Good, Need int
	Rejected   []Rejection
}

func (e *QuorumError) Error() string {
	return fmt.Sprintf("quorum not reached: %d good share(s) of %d needed, %d set aside", e.Good, e.Need, len(e.Rejected))
}

// Rejection names one share that Combine set aside, and why.
type Rejection struct {
	// Position is the share's place in the slice given to Combine, so the
	// caller can name the card it came from.
	Position int
	// Index is the index the share claims (1..255), or 0 when it had none.
	Index int
	// Err wraps one of the sentinel errors above.
	Err error
}

func (r Rejection) Error() string {
	return fmt.Sprintf("share %d (position %d): %v", r.Index, r.Position, r.Err)
}

func (r Rejection) Unwrap() error { return r.Err }

// RecoveryKeyError says where a typed recovery key goes wrong.
type RecoveryKeyError struct {
	// Offset is the 0-based position in the input, in bytes.
	Offset int
	// Reason says what is wrong there.
	Reason string
}

func (e *RecoveryKeyError) Error() string {
	return fmt.Sprintf("recovery key: at character %d: %s", e.Offset+1, e.Reason)
}
