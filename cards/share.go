package cards

import "custos.dev/custos/shares"

// ShareCert is what a custody card's certificate carries besides the slot's
// public key: the sealed share and the ceremony's metadata.
type ShareCert struct {
	Ceremony   shares.CeremonyID
	Volume     shares.VolumeID
	K, N       int
	Index      int
	Keyslot    int // the LUKS keyslot of the recovery key
	Digest     shares.Digest
	Commitment shares.Commitment
	// Anchor is the log head hash (the ceremony record's hash).
	Anchor [32]byte
	Sealed *shares.SealedShare
}

// WriteShare writes a certificate for the slot's public key carrying sc, signed
// by a fresh ephemeral key, into the slot's certificate object, then reads it
// back and compares bytes. It needs the management key, which the card
// keeps PIN-protected: call VerifyPIN (or Init) on this Card first, or it
// returns ErrPINRequired.
func (c *Card) WriteShare(slot uint8, sc *ShareCert) error { return ErrNotImplemented }

// ReadShare reads and decodes the custos certificate in slot.
func (c *Card) ReadShare(slot uint8) (*ShareCert, error) { return nil, ErrNotImplemented }

// OpenShare opens a share sealed to the slot's key: it checks that the slot's
// key is the share's recipient before it sends the PIN, then verifies the
// PIN and performs the ECDH on the card.
func (c *Card) OpenShare(slot uint8, pin []byte, sealed *shares.SealedShare) (*shares.Share, error) {
	return nil, ErrNotImplemented
}

// WipeShare generates a new key over the slot and clears its certificate,
// so that the share sealed to the old key can never be opened again.
func (c *Card) WipeShare(slot uint8, pin []byte) error { return ErrNotImplemented }
