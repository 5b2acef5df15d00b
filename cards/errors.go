package cards

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Each message tells the custodian what to do.
var (
	// ErrNotPIV is returned for a card without a PIV application.
	ErrNotPIV = errors.New("this card has no PIV application: use a YubiKey 5 or another PIV card")

	// ErrNoCustodySlot is returned for a slot that holds no key or no
	// custos certificate, or when no retired slot is free.
	ErrNoCustodySlot = errors.New("no custos share on this card: check that this is the custodian's card for this ceremony")

	// ErrCardRemoved is returned when the card left the reader during an
	// operation, or is not in it.
	ErrCardRemoved = errors.New("the card was removed: insert it again and repeat the step")

	// ErrCardBusy is returned when another program holds the card.
	ErrCardBusy = errors.New("the card is in use by another program: close it (gpg-agent, pcscd clients, another custos) and repeat the step")

	// ErrWrongCard is returned when a share was sealed to another card's key.
	ErrWrongCard = errors.New("this share is sealed to another card: insert the card it was sealed to")

	// ErrWeakFirmware is returned for firmware known to generate weak keys.
	ErrWeakFirmware = errors.New("this card's firmware is known to generate weak keys: use another card")

	// ErrAttestation is returned when the card cannot prove its key was
	// generated on a genuine card of a trusted maker.
	ErrAttestation = errors.New("the card's attestation does not chain to a trusted root: use a genuine card, or add the right root with --attestation-roots")

	// ErrNoAttestation is returned when the card cannot attest a slot's
	// key: a PIV card without Yubico's attestation, or a key that was
	// imported rather than generated on the card.
	ErrNoAttestation = errors.New("the card cannot attest this key (not a YubiKey, or a key imported rather than generated on the card): use a key generated on a genuine card")

	// ErrFactoryDefault is returned while a PIN, PUK or management key
	// would stay at its factory value.
	ErrFactoryDefault = errors.New("the card still has a factory default PIN, PUK or management key: run card init first")

	// ErrPINBlocked is returned when the PIN has no retries left.
	ErrPINBlocked = errors.New("the PIN is blocked: unblock it with the PUK (yubico-piv-tool -a unblock-pin) and repeat the step")

	// ErrPINRequired is returned by WriteShare before VerifyPIN.
	ErrPINRequired = errors.New("the card needs the custodian's PIN first")

	// ErrNoService is returned when pcscd does not answer.
	ErrNoService = errors.New("the smartcard service is not running: start pcscd and repeat the step")

	// ErrWrongPIN is wrapped by every *PINError.
	ErrWrongPIN = errors.New("wrong PIN")

	// ErrCardTimeout is wrapped by every *TimeoutError.
	ErrCardTimeout = errors.New("the card did not answer in time")

	// ErrBadResponse is wrapped by every *ResponseError.
	ErrBadResponse = errors.New("the card answered what no PIV card answers")

	// errManagementKey is the card refusing the management key custos
	// authenticated with (the one it stored, or the factory one).
	errManagementKey = errors.New("the card refused its management key: it was changed outside custos; reset the card's PIV application (ykman piv reset), which erases its keys, or use another card")
)

// PINError is a wrong PIN (or PUK). It wraps ErrWrongPIN. The PIN is never
// retried automatically.
type PINError struct {
	// Retries is the number of attempts left before the PIN is blocked.
	Retries int
	// PUK is set when the wrong value was the PUK.
	PUK bool
}

func (e *PINError) Error() string {
	what := "PIN"
	if e.PUK {
		what = "PUK"
	}
	tries := "tries"
	if e.Retries == 1 {
		tries = "try"
	}
	return fmt.Sprintf("wrong %s: %d %s left before it is blocked; check it and enter it again", what, e.Retries, tries)
}

func (e *PINError) Unwrap() error { return ErrWrongPIN }

// TimeoutError is a card that did not answer within the operation's
// deadline. It wraps ErrCardTimeout. The Card is unusable afterwards: every
// later operation returns the same error.
type TimeoutError struct {
	// Reader is the card's reader.
	Reader string
	// Timeout is the operation's deadline, 0 when not known.
	Timeout time.Duration
}

func (e *TimeoutError) Error() string {
	within := ""
	if e.Timeout > 0 {
		within = " within " + e.Timeout.String()
	}
	return fmt.Sprintf("the card in %q did not answer%s: remove it (a genuine card answers again once reinserted) and repeat the step, or use another card", e.Reader, within)
}

func (e *TimeoutError) Unwrap() error { return ErrCardTimeout }

// ResponseError is an answer no PIV card gives: too long, in too many
// pieces, without a status word, or not the data the command asks for. It
// wraps ErrBadResponse.
type ResponseError struct {
	// Reader is the card's reader.
	Reader string
	// Detail says what was wrong with the answer.
	Detail string
}

func (e *ResponseError) Error() string {
	return fmt.Sprintf("the card in %q gave %s, which no PIV card does: it may be counterfeit or broken; remove it and use another card", e.Reader, e.Detail)
}

func (e *ResponseError) Unwrap() error { return ErrBadResponse }
