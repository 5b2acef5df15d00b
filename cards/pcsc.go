package cards

import (
	"errors"
	"fmt"
	"time"

	"custos.dev/custos/internal/pcsc"
	"github.com/ebfe/scard"
)

// Status words, ISO/IEC 7816-4:2020 section 5.6 and SP 800-73-4 Part 2
// Table 6.
const (
	swOK                  = 0x9000
	swBytesRemaining      = 0x6100 // 61XX: XX more bytes with GET RESPONSE
	swVerifyFailed        = 0x63c0 // 63CX: X retries left
	swSecurityNotSatisfed = 0x6982
	swAuthBlocked         = 0x6983
	swIncorrectData       = 0x6a80
	swFileNotFound        = 0x6a82
	swRefDataNotFound     = 0x6a88
	swInsNotSupported     = 0x6d00
	swClassNotSupported   = 0x6e00
)

// statusError is a card's status word.
type statusError interface{ Status() uint16 }

// swError is a status word other than 9000 from a command custos sent.
type swError uint16

func (e swError) Status() uint16 { return uint16(e) }
func (e swError) Error() string  { return fmt.Sprintf("card status %04x", uint16(e)) }

// Errors mapError gives the status words that callers act on themselves.
var (
	// errNotFound: 6A82 or 6A88, no such object or key.
	errNotFound = errors.New("not found on the card")
	// errNotSupported: 6D00 or 6E00, an instruction the card (its
	// firmware) does not have.
	errNotSupported = errors.New("not supported by this card")
)

// mapError turns an error from a command or from ebfe/scard into the
// package's errors: the one place where status words and PC/SC return codes
// get their meaning. Errors already of this package pass through. reader,
// when not empty, is checked for the card after an unexplained PC/SC error,
// so that a pulled card is reported as such whatever code the stack
// returned.
func mapError(reader string, err error) error {
	if err == nil {
		return nil
	}
	for _, s := range []error{ErrNotPIV, ErrNoCustodySlot, ErrCardRemoved, ErrCardBusy, ErrWrongCard,
		ErrWeakFirmware, ErrAttestation, ErrFactoryDefault, ErrPINBlocked, ErrPINRequired, ErrNoService,
		ErrCardTimeout, ErrBadResponse, ErrWrongPIN, errNotFound, errNotSupported, errManagementKey} {
		if errors.Is(err, s) {
			return err
		}
	}
	var short *shortAnswer
	if errors.As(err, &short) {
		if reader != "" && !cardPresent(reader) {
			return fmt.Errorf("%w (%v)", ErrCardRemoved, err)
		}
		return &ResponseError{Reader: short.reader, Detail: short.Error()}
	}
	var st statusError
	if errors.As(err, &st) {
		sw := st.Status()
		switch {
		case sw == swAuthBlocked, sw&0xff0f == swVerifyFailed&0xff00:
			// 63C0, and 6300 from older YubiKeys: no retries left.
			return fmt.Errorf("%w (card status %04x)", ErrPINBlocked, sw)
		case sw&0xff00 == swVerifyFailed&0xff00:
			// 63CX, and 630X from older YubiKeys (not SP 800-73-4 but seen).
			return &PINError{Retries: int(sw & 0x0f)}
		case sw == swSecurityNotSatisfed:
			return fmt.Errorf("%w (card status %04x)", ErrPINRequired, sw)
		case sw == swFileNotFound, sw == swRefDataNotFound:
			return fmt.Errorf("%w (card status %04x)", errNotFound, sw)
		case sw == swInsNotSupported, sw == swClassNotSupported:
			return fmt.Errorf("%w (card status %04x)", errNotSupported, sw)
		}
		return err
	}
	var code scard.Error
	if errors.As(err, &code) {
		switch code {
		case scard.ErrSharingViolation:
			return fmt.Errorf("%w (%v)", ErrCardBusy, code)
		case scard.ErrRemovedCard, scard.ErrNoSmartcard, scard.ErrResetCard, scard.ErrUnpoweredCard,
			scard.ErrUnresponsiveCard, scard.ErrReaderUnavailable, scard.ErrUnknownReader, scard.ErrCommDataLost,
			scard.ErrInvalidHandle:
			return fmt.Errorf("%w (%v)", ErrCardRemoved, code)
		case scard.ErrNoService, scard.ErrServiceStopped, scard.ErrNoReadersAvailable:
			return fmt.Errorf("%w (%v)", ErrNoService, code)
		}
		if reader != "" && !cardPresent(reader) {
			return fmt.Errorf("%w (%v)", ErrCardRemoved, code)
		}
	}
	return err
}

// cardPresent reports whether reader holds a card, without connecting to it.
// It is asked after a transport error, when pcscd may not have noticed the
// card leave yet: a card still reported is watched for up to settle before
// it is called present.
func cardPresent(reader string) bool {
	ctx, err := pcsc.EstablishContext()
	if err != nil {
		return false
	}
	defer ctx.Release()
	rs := []scard.ReaderState{{Reader: reader, CurrentState: scard.StateUnaware}}
	if err := ctx.GetStatusChange(rs, 0); err != nil {
		return false
	}
	deadline := time.Now().Add(settle)
	for rs[0].EventState&scard.StatePresent != 0 {
		left := time.Until(deadline)
		if left <= 0 {
			return true
		}
		rs[0].CurrentState = rs[0].EventState &^ scard.StateChanged
		err := ctx.GetStatusChange(rs, left)
		if errors.Is(err, scard.ErrTimeout) {
			continue // the deadline decides
		}
		if err != nil {
			return false
		}
	}
	return false
}

// settle is how long cardPresent waits for pcscd to see a card leave.
const settle = time.Second
