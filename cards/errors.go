package cards

import (
	"errors"
	"fmt"
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
