package vcard

import "errors"

var (
	// ErrCorruptState is wrapped by every error about a state file that
	// cannot be decoded or is inconsistent.
	ErrCorruptState = errors.New("corrupt card state")

	// ErrBadVersion is returned for a firmware version that is not
	// major.minor.patch.
	ErrBadVersion = errors.New("bad firmware version")

	// ErrStateExists is returned by NewCard when the state file already
	// exists: a card is never silently overwritten.
	ErrStateExists = errors.New("card state file already exists")

	// ErrNoReader is returned by Insert when pcscd does not offer the vpcd
	// reader for the port, or does not report the card in it in time.
	ErrNoReader = errors.New("vpcd reader not available")

	// ErrInserted is returned by Insert for a card that is already in a
	// reader.
	ErrInserted = errors.New("card already inserted")
)
