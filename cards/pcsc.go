package cards

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"time"

	"custos.dev/custos/internal/pcsc"
	"github.com/ebfe/scard"
	"github.com/go-piv/piv-go/v2/piv"
)

// Status words, ISO/IEC 7816-4:2020 section 5.6 and SP 800-73-4 Part 2
// Table 6.
const (
	swOK                  = 0x9000
	swBytesRemaining      = 0x6100 // 61XX: XX more bytes with GET RESPONSE
	swVerifyFailed        = 0x63c0 // 63CX: X retries left
	swSecurityNotSatisfed = 0x6982
	swAuthBlocked         = 0x6983
	swFileNotFound        = 0x6a82
	swRefDataNotFound     = 0x6a88
	swInsNotSupported     = 0x6d00
)

// PIV key references, SP 800-73-4 Part 1 Table 4 and Yubico's extensions.
const (
	keyPIN           = 0x80
	keyPUK           = 0x81
	keyManagementKey = 0x9b
)

// Instructions.
const (
	insSelect      = 0xa4 // SP 800-73-4 Part 2 section 3.1.1
	insGetResponse = 0xc0 // ISO/IEC 7816-4:2020 section 11.5.6
	insGetSerial   = 0xf8 // Yubico PIV extension
	insGetMetadata = 0xf7 // Yubico PIV extension, firmware 5.3 and later
)

// pivAID is the PIV application's AID, SP 800-73-4 Part 1 section 2.2 (the
// truncated form, as every PIV client selects it).
var pivAID = []byte{0xa0, 0x00, 0x00, 0x03, 0x08}

// statusError is a card's status word (piv-go's error type has this method).
type statusError interface{ Status() uint16 }

// swError is a status word from a command custos sends itself.
type swError uint16

func (e swError) Status() uint16 { return uint16(e) }
func (e swError) Error() string  { return fmt.Sprintf("card status %04x", uint16(e)) }

// pcscCode returns the PC/SC return code inside err: ebfe/scard's Error, or
// piv-go's unexported scErr, whose rc field is read by reflection because
// piv-go gives no other way to tell a pulled card from a busy one.
func pcscCode(err error) (scard.Error, bool) {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if se, ok := e.(scard.Error); ok {
			return se, true
		}
		v := reflect.ValueOf(e)
		if v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().Kind() == reflect.Struct {
			if f := v.Elem().FieldByName("rc"); f.IsValid() && f.CanInt() && v.Elem().Type().PkgPath() == reflect.TypeFor[piv.Slot]().PkgPath() {
				return scard.Error(uint32(f.Int())), true
			}
		}
	}
	return 0, false
}

// mapError turns an error from piv-go, ebfe/scard or a raw command into the
// package's errors: the one place where status words and PC/SC return codes
// get their meaning. Errors already of this package pass through. reader,
// when not empty, is checked for the card after a transport error, so that
// a pulled card is reported as such whatever code the stack returned.
func mapError(reader string, err error) error {
	if err == nil {
		return nil
	}
	var pe *PINError
	for _, s := range []error{ErrNotPIV, ErrNoCustodySlot, ErrCardRemoved, ErrCardBusy, ErrWrongCard,
		ErrWeakFirmware, ErrAttestation, ErrFactoryDefault, ErrPINBlocked, ErrPINRequired, ErrNoService} {
		if errors.Is(err, s) {
			return err
		}
	}
	if errors.As(err, &pe) {
		return err
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
		}
		return err
	}
	var ae piv.AuthErr
	if errors.As(err, &ae) {
		if ae.Retries == 0 {
			return ErrPINBlocked
		}
		return &PINError{Retries: ae.Retries}
	}
	if code, ok := pcscCode(err); ok {
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
		return err
	}
	if reader != "" && !cardPresent(reader) {
		return fmt.Errorf("%w (%v)", ErrCardRemoved, err)
	}
	return err
}

// cardPresent reports whether reader holds a card, without connecting to it.
// It is asked after a transport error, when pcscd may not have noticed the
// card leave yet: a card still reported is watched for up to settle before
// it is called present.
func cardPresent(reader string) bool {
	ctx, err := scard.EstablishContext()
	if err != nil {
		return false
	}
	defer ctx.Release()
	rs := []scard.ReaderState{{Reader: reader, CurrentState: scard.StateUnaware}}
	if err := pcsc.GetStatusChange(ctx, rs, 0); err != nil {
		return false
	}
	deadline := time.Now().Add(settle)
	for rs[0].EventState&scard.StatePresent != 0 {
		left := time.Until(deadline)
		if left <= 0 {
			return true
		}
		rs[0].CurrentState = rs[0].EventState &^ scard.StateChanged
		err := pcsc.GetStatusChange(ctx, rs, left)
		if errors.Is(err, scard.ErrTimeout) {
			continue // each call waits at most pcsc.MaxWait; the deadline decides
		}
		if err != nil {
			return false
		}
	}
	return false
}

// settle is how long cardPresent waits for pcscd to see a card leave.
const settle = time.Second

// rawCard is a connection custos drives itself, for the few Yubico commands
// piv-go does not expose (GET METADATA of the PIN, PUK and management key)
// and for reading a serial number without holding the card.
type rawCard struct {
	card *scard.Card
}

// openRaw connects to the card in reader (exclusively or not), begins a
// transaction and selects the PIV application.
func openRaw(ctx *scard.Context, reader string, mode scard.ShareMode) (*rawCard, error) {
	card, err := ctx.Connect(reader, mode, scard.ProtocolAny)
	if err != nil {
		return nil, err
	}
	if err := card.BeginTransaction(); err != nil {
		card.Disconnect(scard.LeaveCard)
		return nil, err
	}
	r := &rawCard{card: card}
	// SELECT, SP 800-73-4 Part 2 section 3.1.1.
	if _, err := r.transmit(insSelect, 0x04, 0x00, pivAID); err != nil {
		r.close()
		var st statusError
		if errors.As(err, &st) {
			return nil, ErrNotPIV
		}
		return nil, err
	}
	return r, nil
}

func (r *rawCard) close() {
	r.card.EndTransaction(scard.LeaveCard)
	r.card.Disconnect(scard.LeaveCard)
}

// transmit sends one short APDU (ISO/IEC 7816-4:2020 section 5.1) and
// collects a chained response with GET RESPONSE (section 11.5.6).
func (r *rawCard) transmit(ins, p1, p2 byte, data []byte) ([]byte, error) {
	if len(data) > 0xff {
		return nil, errors.New("command data too long")
	}
	cmd := []byte{0x00, ins, p1, p2}
	if len(data) > 0 {
		cmd = append(cmd, byte(len(data)))
		cmd = append(cmd, data...)
	}
	cmd = append(cmd, 0x00) // Le: up to 256 bytes
	var out []byte
	for {
		resp, err := r.card.Transmit(cmd)
		if err != nil {
			return nil, err
		}
		if len(resp) < 2 {
			return nil, errors.New("card response too short")
		}
		sw := binary.BigEndian.Uint16(resp[len(resp)-2:])
		out = append(out, resp[:len(resp)-2]...)
		switch {
		case sw == swOK:
			return out, nil
		case sw&0xff00 == swBytesRemaining:
			cmd = []byte{0x00, insGetResponse, 0x00, 0x00, byte(sw)}
		default:
			return nil, swError(sw)
		}
	}
}

// serial is GET SERIAL (Yubico extension, firmware 5 and later).
func (r *rawCard) serial() (uint32, error) {
	b, err := r.transmit(insGetSerial, 0, 0, nil)
	if err != nil {
		return 0, err
	}
	if len(b) != 4 {
		return 0, fmt.Errorf("serial: %d bytes, want 4", len(b))
	}
	return binary.BigEndian.Uint32(b), nil
}

// credential is what GET METADATA tells of a PIN, PUK or management key.
type credential struct {
	Default   bool // still the factory value
	Retries   int  // attempts left (PIN and PUK)
	Algorithm byte // management key algorithm (0x03 3DES, 0x08/0x0a/0x0c AES)
}

// metadata is GET METADATA for a PIN, PUK or management key: Yubico's PIV
// extension "GET METADATA", tags 0x01 algorithm, 0x05 default value, 0x06
// retries (total, remaining). Firmware before 5.3 answers 6D00.
func (r *rawCard) metadata(key byte) (credential, error) {
	b, err := r.transmit(insGetMetadata, 0x00, key, nil)
	if err != nil {
		return credential{}, err
	}
	var c credential
	seen := false
	for len(b) > 0 {
		if len(b) < 2 || int(b[1]) > len(b)-2 || b[1] >= 0x80 {
			return credential{}, errors.New("metadata: malformed response")
		}
		tag, v := b[0], b[2:2+int(b[1])]
		b = b[2+int(b[1]):]
		switch tag {
		case 0x01:
			if len(v) == 1 {
				c.Algorithm = v[0]
			}
		case 0x05:
			if len(v) != 1 {
				return credential{}, errors.New("metadata: malformed default flag")
			}
			c.Default, seen = v[0] != 0, true
		case 0x06:
			if len(v) != 2 {
				return credential{}, errors.New("metadata: malformed retries")
			}
			c.Retries = int(v[1])
		}
	}
	if !seen {
		return credential{}, errors.New("metadata: no default flag")
	}
	return c, nil
}

// credentials reads the PIN, PUK and management-key state of the card in
// reader over a connection of its own. ok is false when the firmware has no
// GET METADATA (before 5.3).
func credentials(reader string) (pin, puk, mgmt credential, ok bool, err error) {
	ctx, err := scard.EstablishContext()
	if err != nil {
		return pin, puk, mgmt, false, err
	}
	defer ctx.Release()
	var r *rawCard
	for try := 0; ; try++ {
		// piv-go leaves the card a moment after Close: retry a busy card
		// briefly before calling it busy.
		r, err = openRaw(ctx, reader, scard.ShareExclusive)
		if code, isPCSC := pcscCode(err); isPCSC && code == scard.ErrSharingViolation && try < busyRetries {
			time.Sleep(busyPause)
			continue
		}
		break
	}
	if err != nil {
		return pin, puk, mgmt, false, err
	}
	defer r.close()
	if pin, err = r.metadata(keyPIN); err != nil {
		var st statusError
		if errors.As(err, &st) && (st.Status() == swInsNotSupported || st.Status() == 0x6e00) {
			return pin, puk, mgmt, false, nil
		}
		return pin, puk, mgmt, false, err
	}
	if puk, err = r.metadata(keyPUK); err != nil {
		return pin, puk, mgmt, false, err
	}
	if mgmt, err = r.metadata(keyManagementKey); err != nil {
		return pin, puk, mgmt, false, err
	}
	return pin, puk, mgmt, true, nil
}
