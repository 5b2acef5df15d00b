package luks

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns for one of these
// conditions matches it with errors.Is; most arrive wrapped in a
// *CryptsetupError that says which cryptsetup action failed and what it
// printed.
var (
	// ErrWrongKey: no keyslot (or not the keyslot asked for) opens with the
	// key given.
	ErrWrongKey = errors.New("wrong key: no keyslot opens with it")

	// ErrNoFreeKeyslot: every keyslot is in use (8 for LUKS1, 32 for LUKS2),
	// or the LUKS2 keyslots area has no room left.
	ErrNoFreeKeyslot = errors.New("no free keyslot: kill an unused keyslot first")

	// ErrKeyslotInUse: the keyslot asked for already holds a key.
	ErrKeyslotInUse = errors.New("keyslot is already in use")

	// ErrKeyslotInactive: the keyslot named holds no key.
	ErrKeyslotInactive = errors.New("keyslot is not in use")

	// ErrLastKeyslot: the keyslot to kill is the only one left; killing it
	// would make the volume unopenable.
	ErrLastKeyslot = errors.New("refusing to kill the last keyslot: the volume would become unopenable")

	// ErrAuthorisingKeyslot: the keyslot to kill is the one the
	// authorising key opens (the keyslot to keep); it is never killed.
	ErrAuthorisingKeyslot = errors.New("refusing to kill the keyslot the authorising key opens")

	// ErrBoundToForeignToken: a token of another program (its type is not
	// TokenType; systemd-cryptenroll's systemd-tpm2 and systemd-fido2
	// tokens, clevis) is bound to the keyslot to kill. Such keyslots let
	// a machine boot unattended; this package never kills them.
	ErrBoundToForeignToken = errors.New("keyslot is bound to another program's token")

	// ErrHeaderChanged: after a change, the header shows more changed
	// than this package did: another process changed it between the
	// caller's read and the change. The change itself was made.
	ErrHeaderChanged = errors.New("header changed by another process meanwhile")

	// ErrBusy: another process holds the volume's metadata lock, or the
	// volume is in use.
	ErrBusy = errors.New("volume is busy: another process holds its lock or has it open")

	// ErrPermission: the volume cannot be read, or written, by this process.
	ErrPermission = errors.New("permission denied on the volume (run as root?)")

	// ErrNotLUKS: the file or device carries no LUKS header at all.
	ErrNotLUKS = errors.New("not a luks volume")

	// ErrDamagedHeader: a LUKS header is there but no copy of it is valid
	// (both LUKS2 copies damaged, a damaged LUKS1 header, or a truncated
	// file). Restore a header backup, if one exists.
	ErrDamagedHeader = errors.New("luks header is damaged and no valid copy is left: restore a header backup")

	// ErrNoTokens: LUKS1 headers have no tokens. Callers fall back to the
	// ceremony log and the cards.
	ErrNoTokens = errors.New("luks1 volume has no tokens: use the ceremony log or the cards")

	// ErrTokenNotFound: no token with the ID asked for.
	ErrTokenNotFound = errors.New("no such token")

	// ErrForeignToken: the token belongs to another program (its type is
	// not TokenType); this package does not change or remove it.
	ErrForeignToken = errors.New("token belongs to another program")

	// ErrTokenTooLarge: the token does not fit in the LUKS2 header's JSON
	// area (12 KiB of JSON by default, fixed when the volume was formatted).
	ErrTokenTooLarge = errors.New("token does not fit in the luks2 header's metadata area")

	// ErrForeignBackup: the header backup is of a different volume (its
	// UUID differs from the volume's).
	ErrForeignBackup = errors.New("header backup belongs to a different volume")

	// errUnknownOption: this cryptsetup does not know an option passed
	// (popt's "unknown option"): it is older than the option. Callers
	// fall back to what older versions have.
	errUnknownOption = errors.New("cryptsetup does not know an option custos uses")
)

// CryptsetupError is a failed run of the cryptsetup binary.
type CryptsetupError struct {
	// Op is the cryptsetup action, e.g. "luksAddKey".
	Op string
	// Path is the volume, or header backup, it ran on.
	Path string
	// ExitCode is cryptsetup's exit status, or -1 if it did not exit on
	// its own.
	ExitCode int
	// Stderr is what cryptsetup printed on stderr: printable ASCII only,
	// shortened, with any key passed to the run blanked out.
	Stderr string
	// Err is the sentinel error the failure maps to, or nil when it maps to
	// none of them.
	Err error
}

func (e *CryptsetupError) Error() string {
	what := "failed"
	if e.Err != nil {
		what = e.Err.Error()
	}
	detail := fmt.Sprintf("exit %d", e.ExitCode)
	if e.Stderr != "" {
		detail += ": " + e.Stderr
	}
	return fmt.Sprintf("cryptsetup %s %s: %s (%s)", e.Op, e.Path, what, detail)
}

func (e *CryptsetupError) Unwrap() error { return e.Err }
