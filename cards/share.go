package cards

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"errors"
	"fmt"

	"custos.dev/custos/shares"
)

// ShareCert is what a version 1 custody certificate carried besides the
// slot's public key: the sealed share and the ceremony's metadata. custos
// reads it (SlotCert.V1) and no longer writes it. Ceremony, Volume, K, N and
// Index are the sealed share's header, repeated for convenience.
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

// recipientKey returns the slot's public key after checking that it is the
// one sealed was sealed to: ErrWrongCard otherwise, ErrNoCustodySlot when
// the slot holds no key. One command (see slotKey).
func (c *Card) recipientKey(slot uint8, sealed *shares.SealedShare) (*ecdsa.PublicKey, error) {
	pub, err := c.slotKey(slot)
	if errors.Is(err, errNotFound) {
		return nil, fmt.Errorf("%w: the slot holds no key; init the card first", ErrNoCustodySlot)
	}
	if err != nil {
		return nil, err
	}
	fp, err := shares.FingerprintOf(pub)
	if err != nil {
		return nil, err
	}
	if fp != sealed.Recipient {
		return nil, ErrWrongCard
	}
	return pub, nil
}

// CheckRecipient checks, without the PIN, that the slot's key is the one
// sealed was sealed to: ErrWrongCard otherwise (a share of another card,
// or a slot whose key was replaced since), ErrNoCustodySlot when the slot
// holds no key. One command, GET METADATA (ATTEST before firmware 5.3),
// which OpenShare and WriteShare on the same Card then do not send again:
// a caller checks before it asks the custodian for the PIN, at no cost.
func (c *Card) CheckRecipient(slot uint8, sealed *shares.SealedShare) error {
	c.tr.begin()
	if err := checkRetired(slot); err != nil {
		return fmt.Errorf("check slot %02x: %w", slot, err)
	}
	if sealed == nil {
		return fmt.Errorf("check slot %02x: no sealed share", slot)
	}
	if _, err := c.recipientKey(slot, sealed); err != nil {
		return fmt.Errorf("check slot %02x: %w", slot, mapError(c.reader, err))
	}
	return nil
}

// ReadShare reads the custos content of the certificate in slot (GET DATA,
// with GET RESPONSE). A slot without a certificate, or with one that is not
// custos's, gives ErrNoCustodySlot.
func (c *Card) ReadShare(slot uint8) (*SlotCert, error) {
	c.tr.begin()
	sc, err := c.readShare(slot)
	if err != nil {
		return nil, fmt.Errorf("read share from slot %02x: %w", slot, mapError(c.reader, err))
	}
	return sc, nil
}

func (c *Card) readShare(slot uint8) (*SlotCert, error) {
	if err := checkRetired(slot); err != nil {
		return nil, err
	}
	cert, err := c.readCertificate(slot)
	if errors.Is(err, errNotFound) {
		return nil, ErrNoCustodySlot
	}
	if err != nil {
		return nil, err
	}
	sc, err := slotCertOf(cert)
	if err != nil {
		return nil, err
	}
	if sc == nil {
		return nil, ErrNoCustodySlot
	}
	return sc, nil
}

// OpenShare opens a share sealed to the slot's key: it checks that the slot's
// key is the share's recipient before it sends the PIN (ErrWrongCard
// otherwise), then verifies the PIN (VERIFY, SP 800-73-4 Part 2 section
// 3.2.1) and performs the ECDH on the card (GENERAL AUTHENTICATE, section
// 3.2.4), right after VERIFY as a key with PIN policy "always" needs. A
// wrong PIN is never retried. Three commands: GET METADATA (ATTEST before
// firmware 5.3), VERIFY, GENERAL AUTHENTICATE.
func (c *Card) OpenShare(slot uint8, pin []byte, sealed *shares.SealedShare) (*shares.Share, error) {
	c.tr.begin()
	sh, err := c.openShare(slot, pin, sealed)
	if err != nil {
		return nil, fmt.Errorf("open share in slot %02x: %w", slot, mapError(c.reader, err))
	}
	return sh, nil
}

func (c *Card) openShare(slot uint8, pin []byte, sealed *shares.SealedShare) (*shares.Share, error) {
	if err := checkRetired(slot); err != nil {
		return nil, err
	}
	if sealed == nil {
		return nil, errors.New("no sealed share")
	}
	if err := checkPINLength(pin); err != nil {
		return nil, err
	}
	pub, err := c.recipientKey(slot, sealed)
	if err != nil {
		return nil, err
	}
	return c.openWithPIN(slot, pub, pin, sealed)
}

// openWithPIN is VERIFY immediately followed by the key agreement, inside
// shares.Open: nothing is sent between them.
func (c *Card) openWithPIN(slot uint8, pub *ecdsa.PublicKey, pin []byte, sealed *shares.SealedShare) (*shares.Share, error) {
	recipient, err := pub.ECDH()
	if err != nil {
		return nil, err
	}
	var cardErr error
	sh, err := shares.Open(sealed, recipient, func(eph *ecdh.PublicKey) ([]byte, error) {
		if err := c.verify(pin); err != nil {
			cardErr = err
			return nil, err
		}
		c.secured = true
		z, err := c.ecdh(slot, eph.Bytes())
		if err != nil {
			cardErr = err
			return nil, err
		}
		return z, nil
	})
	if cardErr != nil {
		return nil, cardErr
	}
	if err != nil {
		return nil, err
	}
	return sh, nil
}

// WriteShare is one custodian's step of an enrollment, with one VERIFY: it
// checks that the slot's key is sealed's recipient (before the PIN is
// sent), verifies the PIN and opens sealed on the card (proving the key
// opens it; the share is returned for the caller to compare with what it
// sealed), then, with the same verification, reads the PIN-protected
// management key, writes a certificate for the slot key carrying payload
// (the version 2 ceremony record with this card's entry, docs/FORMAT.md
// section 12) and reads it back. Nothing is written when the share does
// not open.
//
// The order follows a YubiKey's PIN policies: a key with policy "always"
// needs its GENERAL AUTHENTICATE to come right after VERIFY (any command in
// between, management-key authentication included, ends that
// verification), while the PIN stays verified for the protected data until
// the card is reset or the PIV application selected again (a card that
// does otherwise gets a second VERIFY of the same PIN). Commands: GET
// METADATA (ATTEST before firmware 5.3), VERIFY, GENERAL AUTHENTICATE
// (ECDH), GET DATA 5FC109, GET METADATA 9B (firmware 5.3 and later, the
// management key's algorithm), two GENERAL AUTHENTICATE (management key),
// PUT DATA (chained), GET DATA (the read-back, with GET RESPONSE).
func (c *Card) WriteShare(slot uint8, pin []byte, sealed *shares.SealedShare, payload []byte) (*shares.Share, error) {
	c.tr.begin()
	sh, err := c.writeShare(slot, pin, sealed, payload)
	if err != nil {
		return nil, fmt.Errorf("write share to slot %02x: %w", slot, mapError(c.reader, err))
	}
	return sh, nil
}

func (c *Card) writeShare(slot uint8, pin []byte, sealed *shares.SealedShare, payload []byte) (*shares.Share, error) {
	if err := checkRetired(slot); err != nil {
		return nil, err
	}
	if sealed == nil {
		return nil, errors.New("no sealed share")
	}
	if err := checkPINLength(pin); err != nil {
		return nil, err
	}
	pub, err := c.recipientKey(slot, sealed)
	if err != nil {
		return nil, err
	}
	cert, err := newSlotCertificate(pub, sealed, payload)
	if err != nil {
		return nil, err
	}
	sh, err := c.openWithPIN(slot, pub, pin, sealed)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*shares.Share, error) {
		sh.Wipe()
		return nil, err
	}
	err = c.readStoredKey()
	if errors.Is(err, ErrPINRequired) {
		// A card that ends the PIN's verification with the "always"
		// key's use, which a YubiKey does not: verify the same PIN again
		// (it cannot be wrong, and costs no retry) rather than fail.
		if err = c.verify(pin); err == nil {
			err = c.readStoredKey()
		}
	}
	if err != nil {
		return fail(fmt.Errorf("read management key: %w", err))
	}
	if err := c.authenticateStored(); err != nil {
		return fail(err)
	}
	stored, err := c.storeCertificate(slot, cert)
	if err != nil {
		return fail(err)
	}
	back, err := slotCertOf(stored)
	if err != nil || back == nil || !bytes.Equal(back.Payload, payload) {
		return fail(fmt.Errorf("the certificate read back does not carry what was written: %v", err))
	}
	return sh, nil
}

// WipeShare generates a new key over the slot, with the old key's policies,
// and replaces its certificate by one for the new key that carries nothing,
// so that the share sealed to the old key can never be opened again. It
// verifies the PIN to read the management key, and keeps the slot counted
// in the Key History object.
func (c *Card) WipeShare(slot uint8, pin []byte) error {
	c.tr.begin()
	if err := c.wipeShare(slot, pin); err != nil {
		return fmt.Errorf("wipe share in slot %02x: %w", slot, mapError(c.reader, err))
	}
	return nil
}

func (c *Card) wipeShare(slot uint8, pin []byte) error {
	if err := checkRetired(slot); err != nil {
		return err
	}
	pinPolicy, touchPolicy := byte(0x03), byte(0x01) // always, never
	if !c.noMetadata {
		m, err := c.getMetadata(slot)
		switch {
		case errors.Is(err, errNotFound):
			return fmt.Errorf("%w: the slot holds no key", ErrNoCustodySlot)
		case errors.Is(err, errNotSupported):
			c.noMetadata = true
		case err != nil:
			return err
		default:
			if m.pinPolicy != 0 {
				pinPolicy = m.pinPolicy
			}
			if m.touchPolicy != 0 {
				touchPolicy = m.touchPolicy
			}
		}
	}
	if err := c.verifyAndReadKey(pin); err != nil {
		return err
	}
	if c.mgmt == nil {
		return fmt.Errorf("%w: the card's management key is not stored on it; init the card with custos", ErrFactoryDefault)
	}
	if err := c.authenticateStored(); err != nil {
		return err
	}
	pub, err := c.generate(slot, pinPolicy, touchPolicy)
	if err != nil {
		return err
	}
	cert, err := newSlotCertificate(pub, nil, nil)
	if err != nil {
		return err
	}
	if _, err := c.storeCertificate(slot, cert); err != nil {
		return err
	}
	return c.countInKeyHistory(slot)
}
