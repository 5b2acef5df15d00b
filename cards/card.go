package cards

import (
	"crypto/ecdsa"

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
}

// SlotInfo describes one retired key-management slot that holds a key.
type SlotInfo struct {
	// Slot is the key reference, 0x82 to 0x95.
	Slot uint8
	// PublicKey is the slot's P-256 public key.
	PublicKey *ecdsa.PublicKey
	// Fingerprint is shares.FingerprintOf(PublicKey).
	Fingerprint shares.Fingerprint
	// Share is the custos certificate's content, nil when the slot's
	// certificate is absent or not a custos one.
	Share *ShareCert
}

// Open connects to the card in reader, exclusively: until Close, no other
// program can use the card.
func Open(reader string) (*Card, error) {
	return nil, ErrNotImplemented
}

// Close releases the card.
func (c *Card) Close() error { return ErrNotImplemented }

// Reader is the PC/SC name of the card's reader.
func (c *Card) Reader() string { return c.reader }

// Serial is the card's serial number, 0 when the card does not tell.
func (c *Card) Serial() uint32 { return c.serial }

// Version is the card's firmware version, "major.minor.patch".
func (c *Card) Version() string { return "" }

// Custody lists the retired slots (82–95) that hold a key, with the custos
// certificate's content where there is one.
func (c *Card) Custody() ([]SlotInfo, error) { return nil, ErrNotImplemented }

// VerifyPIN checks the PIN. A wrong PIN gives a *PINError with the retries
// left; a blocked one ErrPINBlocked. It is never retried. On success it also
// reads the PIN-protected management key Init stored, which WriteShare needs;
// the Card keeps it until Close.
func (c *Card) VerifyPIN(pin []byte) error { return ErrNotImplemented }
