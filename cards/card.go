package cards

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
	"time"

	"github.com/ebfe/scard"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/shares"
)

// Card is an open, exclusive connection to one PIV card. It is not safe for
// concurrent use.
type Card struct {
	reader  string
	yk      *piv.YubiKey
	serial  uint32
	version piv.Version
	// mgmt is the management key, read after VERIFY (or set by Init);
	// wiped by Close.
	mgmt []byte
}

// SlotInfo describes one retired key-management slot that holds a key.
type SlotInfo struct {
	// Slot is the key reference, 0x82 to 0x95.
	Slot uint8
	// PublicKey is the slot's P-256 public key.
	PublicKey *ecdsa.PublicKey
	// Fingerprint is shares.FingerprintOf(PublicKey).
	Fingerprint shares.Fingerprint
	// Cert is the custos content of the slot's certificate, nil when the
	// certificate is absent or not a custos one.
	Cert *SlotCert
}

// First and last retired key-management slots, SP 800-73-4 Part 1 Table 4b.
const (
	firstRetiredSlot = 0x82
	lastRetiredSlot  = 0x95
)

// Open connects to the card in reader, exclusively: until Close, no other
// program can use the card.
func Open(reader string) (*Card, error) {
	yk, err := openYubiKey(reader)
	if err != nil {
		if errors.Is(err, piv.ErrNotFound) {
			return nil, fmt.Errorf("open card in %q: %w", reader, ErrNotPIV)
		}
		return nil, fmt.Errorf("open card in %q: %w", reader, mapError(reader, err))
	}
	c := &Card{reader: reader, yk: yk, version: yk.Version()}
	if err := c.readSerial(); err != nil {
		yk.Close()
		return nil, fmt.Errorf("open card in %q: %w", reader, err)
	}
	return c, nil
}

// busyRetries and busyPause bound how long Open waits for a card that is
// busy only for a moment (another program reading its serial, as Readers
// does, or piv-go letting go of it) before calling it busy.
const (
	busyRetries = 5
	busyPause   = 40 * time.Millisecond
)

// openYubiKey is piv.Open, retried briefly while the card is busy.
func openYubiKey(reader string) (*piv.YubiKey, error) {
	for try := 0; ; try++ {
		yk, err := piv.Open(reader)
		if code, ok := pcscCode(err); ok && code == scard.ErrSharingViolation && try < busyRetries {
			time.Sleep(busyPause)
			continue
		}
		return yk, err
	}
}

// readSerial asks the card its serial number. Cards that do not tell (not
// YubiKeys, or YubiKeys before 5 whose OTP application is off) keep 0.
func (c *Card) readSerial() error {
	s, err := c.yk.Serial()
	if err != nil {
		if m := mapError(c.reader, err); errors.Is(m, ErrCardRemoved) || errors.Is(m, ErrNoService) {
			return m
		}
		return nil
	}
	c.serial = s
	return nil
}

// Close releases the card and forgets the management key.
func (c *Card) Close() error {
	shares.Wipe(c.mgmt)
	c.mgmt = nil
	if c.yk == nil {
		return nil
	}
	err := c.yk.Close()
	c.yk = nil
	if err != nil {
		if m := mapError("", err); errors.Is(m, ErrCardRemoved) {
			return nil // nothing left to release
		}
		return fmt.Errorf("close card: %w", err)
	}
	return nil
}

// Reader is the PC/SC name of the card's reader.
func (c *Card) Reader() string { return c.reader }

// Serial is the card's serial number, 0 when the card does not tell.
func (c *Card) Serial() uint32 { return c.serial }

// Version is the card's firmware version, "major.minor.patch".
func (c *Card) Version() string {
	return fmt.Sprintf("%d.%d.%d", c.version.Major, c.version.Minor, c.version.Patch)
}

func (c *Card) atLeast(major, minor, patch int) bool {
	v := c.version
	if v.Major != major {
		return v.Major > major
	}
	if v.Minor != minor {
		return v.Minor > minor
	}
	return v.Patch >= patch
}

// fail wraps err for the custodian, checking the reader when the error came
// from the transport.
func (c *Card) fail(op string, err error) error {
	return fmt.Errorf("%s: %w", op, mapError(c.reader, err))
}

func retiredSlot(slot uint8) (piv.Slot, error) {
	s, ok := piv.RetiredKeyManagementSlot(uint32(slot))
	if !ok {
		return piv.Slot{}, fmt.Errorf("slot %02x is not a retired key-management slot (82-95)", slot)
	}
	return s, nil
}

// slotKey returns the public key in slot, wrapping piv.ErrNotFound when the
// slot is empty. From firmware 5.3 it is GET METADATA (one command); before,
// an attestation (which proves the same key).
func (c *Card) slotKey(s piv.Slot) (*ecdsa.PublicKey, error) {
	var pub any
	if c.atLeast(5, 3, 0) {
		ki, err := c.yk.KeyInfo(s)
		if err != nil {
			return nil, err
		}
		pub = ki.PublicKey
	} else {
		cert, err := c.yk.Attest(s)
		if err != nil {
			return nil, err
		}
		pub = cert.PublicKey
	}
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("slot %s holds a %T, not a P-256 key: %w", s, pub, ErrNoCustodySlot)
	}
	return k, nil
}

// Custody lists the retired slots (82–95) that hold a key, with the custos
// certificate's content where there is one.
func (c *Card) Custody() ([]SlotInfo, error) {
	var out []SlotInfo
	for slot := firstRetiredSlot; slot <= lastRetiredSlot; slot++ {
		s, _ := retiredSlot(uint8(slot))
		pub, err := c.slotKey(s)
		if errors.Is(err, piv.ErrNotFound) || errors.Is(err, ErrNoCustodySlot) {
			continue
		}
		if err != nil {
			return nil, c.fail("list custody slots", err)
		}
		fp, err := shares.FingerprintOf(pub)
		if err != nil {
			return nil, fmt.Errorf("list custody slots: %w", err)
		}
		info := SlotInfo{Slot: uint8(slot), PublicKey: pub, Fingerprint: fp}
		cert, err := c.yk.Certificate(s)
		switch {
		case err == nil:
			// A certificate that is not custos's, or a damaged custos
			// extension, leaves Cert nil: ReadShare says why.
			info.Cert, _ = slotCertOf(cert)
		case errors.Is(err, piv.ErrNotFound):
		default:
			if m := mapError(c.reader, err); errors.Is(m, ErrCardRemoved) || errors.Is(m, ErrNoService) {
				return nil, fmt.Errorf("list custody slots: %w", m)
			}
		}
		out = append(out, info)
	}
	return out, nil
}

// VerifyPIN checks the PIN. A wrong PIN gives a *PINError with the retries
// left; a blocked one ErrPINBlocked. It is never retried. On success it also
// reads the PIN-protected management key Init stored, which WriteShare needs;
// the Card keeps it until Close.
func (c *Card) VerifyPIN(pin []byte) error {
	if err := checkPINLength(pin); err != nil {
		return fmt.Errorf("verify PIN: %w", err)
	}
	// piv-go's Metadata is VERIFY then GET DATA of the protected object.
	m, err := c.yk.Metadata(string(pin))
	if err != nil {
		return c.fail("verify PIN", err)
	}
	if m.ManagementKey != nil {
		shares.Wipe(c.mgmt)
		c.mgmt = append([]byte(nil), *m.ManagementKey...)
		shares.Wipe(*m.ManagementKey)
	}
	return nil
}

// verify is VERIFY alone, SP 800-73-4 Part 2 section 3.2.1.
func (c *Card) verify(pin []byte) error {
	if err := checkPINLength(pin); err != nil {
		return err
	}
	return mapError(c.reader, c.yk.VerifyPIN(string(pin)))
}

// checkPINLength refuses a PIN no PIV card accepts (SP 800-73-4 Part 2
// section 2.4.3: up to 8 bytes), before it could burn a retry.
func checkPINLength(pin []byte) error {
	if len(pin) == 0 || len(pin) > 8 {
		return errors.New("a PIN is 1 to 8 characters (6 to 8 on a YubiKey)")
	}
	return nil
}
