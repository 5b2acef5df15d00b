package cards

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/go-piv/piv-go/v2/piv"

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

// WriteShare puts a share on the card, checked end to end: it verifies the
// PIN, has the card open sealed with the slot's key (proving that this key
// opens it — the share is returned for the caller to compare with what it
// sealed), writes a certificate for the slot key carrying payload (the
// version 2 ceremony record with this card's entry, docs/FORMAT.md section
// 12), signed by a fresh ephemeral key, and reads it back. A share sealed to
// another key is refused with ErrWrongCard before the PIN is sent.
func (c *Card) WriteShare(slot uint8, pin []byte, sealed *shares.SealedShare, payload []byte) (*shares.Share, error) {
	sh, err := c.writeShare(slot, pin, sealed, payload)
	if err != nil {
		return nil, fmt.Errorf("write share to slot %02x: %w", slot, err)
	}
	return sh, nil
}

func (c *Card) writeShare(slot uint8, pin []byte, sealed *shares.SealedShare, payload []byte) (*shares.Share, error) {
	s, err := retiredSlot(slot)
	if err != nil {
		return nil, err
	}
	if sealed == nil {
		return nil, errors.New("no sealed share")
	}
	pub, err := c.slotKey(s)
	if errors.Is(err, piv.ErrNotFound) {
		return nil, fmt.Errorf("%w: the slot holds no key; init the card first", ErrNoCustodySlot)
	}
	if err != nil {
		return nil, mapError(c.reader, err)
	}
	fp, err := shares.FingerprintOf(pub)
	if err != nil {
		return nil, err
	}
	if fp != sealed.Recipient {
		return nil, ErrWrongCard
	}
	cert, err := newSlotCertificate(pub, sealed, payload)
	if err != nil {
		return nil, err
	}
	if err := c.VerifyPIN(pin); err != nil {
		return nil, errors.Unwrap(err) // VerifyPIN's own "verify PIN: " prefix
	}
	if c.mgmt == nil {
		return nil, fmt.Errorf("%w: the card's management key is not stored on it; init the card with custos", ErrFactoryDefault)
	}
	if err := c.storeCertificate(s, cert); err != nil {
		return nil, err
	}
	return c.openWith(s, pub, pin, sealed)
}

// storeCertificate writes cert into the slot's object (SP 800-73-4 Part 2
// section 3.3.2, PUT DATA) and reads it back (section 3.1.2, GET DATA).
func (c *Card) storeCertificate(s piv.Slot, cert *x509.Certificate) error {
	if err := c.yk.SetCertificate(c.mgmt, s, cert); err != nil {
		return mapError(c.reader, err)
	}
	back, err := c.yk.Certificate(s)
	if err != nil {
		return fmt.Errorf("read back: %w", mapError(c.reader, err))
	}
	if !bytes.Equal(back.Raw, cert.Raw) {
		return errors.New("the certificate read back differs from the one written: the card may be faulty; write it again or use another card")
	}
	return nil
}

// ReadShare reads the custos content of the certificate in slot. A slot
// without a certificate, or with one that is not custos's, gives
// ErrNoCustodySlot.
func (c *Card) ReadShare(slot uint8) (*SlotCert, error) {
	s, err := retiredSlot(slot)
	if err != nil {
		return nil, fmt.Errorf("read share: %w", err)
	}
	cert, err := c.yk.Certificate(s)
	if errors.Is(err, piv.ErrNotFound) {
		return nil, fmt.Errorf("read share from slot %02x: %w", slot, ErrNoCustodySlot)
	}
	if err != nil {
		return nil, c.fail(fmt.Sprintf("read share from slot %02x", slot), err)
	}
	sc, err := slotCertOf(cert)
	if err != nil {
		return nil, fmt.Errorf("read share from slot %02x: %w", slot, err)
	}
	if sc == nil {
		return nil, fmt.Errorf("read share from slot %02x: %w", slot, ErrNoCustodySlot)
	}
	return sc, nil
}

// OpenShare opens a share sealed to the slot's key: it checks that the slot's
// key is the share's recipient before it sends the PIN (ErrWrongCard
// otherwise), then verifies the PIN (VERIFY, SP 800-73-4 Part 2 section
// 3.2.1) and performs the ECDH on the card (GENERAL AUTHENTICATE, section
// 3.2.4). A wrong PIN is never retried.
func (c *Card) OpenShare(slot uint8, pin []byte, sealed *shares.SealedShare) (*shares.Share, error) {
	sh, err := c.openShare(slot, pin, sealed)
	if err != nil {
		return nil, fmt.Errorf("open share in slot %02x: %w", slot, err)
	}
	return sh, nil
}

func (c *Card) openShare(slot uint8, pin []byte, sealed *shares.SealedShare) (*shares.Share, error) {
	s, err := retiredSlot(slot)
	if err != nil {
		return nil, err
	}
	if sealed == nil {
		return nil, errors.New("no sealed share")
	}
	pub, err := c.slotKey(s)
	if errors.Is(err, piv.ErrNotFound) {
		return nil, fmt.Errorf("%w: the slot holds no key", ErrNoCustodySlot)
	}
	if err != nil {
		return nil, mapError(c.reader, err)
	}
	fp, err := shares.FingerprintOf(pub)
	if err != nil {
		return nil, err
	}
	if fp != sealed.Recipient {
		return nil, ErrWrongCard
	}
	return c.openWith(s, pub, pin, sealed)
}

// openWith verifies the PIN and has the card compute the ECDH for sealed
// with the slot's key (pub, already checked to be the recipient).
func (c *Card) openWith(s piv.Slot, pub *ecdsa.PublicKey, pin []byte, sealed *shares.SealedShare) (*shares.Share, error) {
	recipient, err := pub.ECDH()
	if err != nil {
		return nil, err
	}
	// PIN policy never: piv-go must not VERIFY on its own, custos just did.
	priv, err := c.yk.PrivateKey(s, pub, piv.KeyAuth{PINPolicy: piv.PINPolicyNever})
	if err != nil {
		return nil, err
	}
	key, ok := priv.(*piv.ECDSAPrivateKey)
	if !ok {
		return nil, fmt.Errorf("slot %s: unexpected key type %T", s, priv)
	}
	var cardErr error
	sh, err := shares.Open(sealed, recipient, func(eph *ecdh.PublicKey) ([]byte, error) {
		if err := c.verify(pin); err != nil {
			cardErr = err
			return nil, err
		}
		z, err := key.ECDH(eph)
		if err != nil {
			cardErr = mapError(c.reader, err)
			return nil, cardErr
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

// WipeShare generates a new key over the slot, with the old key's policies,
// and replaces its certificate by one for the new key that carries nothing,
// so that the share sealed to the old key can never be opened again. It
// verifies the PIN to read the management key.
func (c *Card) WipeShare(slot uint8, pin []byte) error {
	if err := c.wipeShare(slot, pin); err != nil {
		return fmt.Errorf("wipe share in slot %02x: %w", slot, err)
	}
	return nil
}

func (c *Card) wipeShare(slot uint8, pin []byte) error {
	s, err := retiredSlot(slot)
	if err != nil {
		return err
	}
	key := piv.Key{Algorithm: piv.AlgorithmEC256, PINPolicy: piv.PINPolicyAlways, TouchPolicy: piv.TouchPolicyNever}
	if c.atLeast(5, 3, 0) {
		ki, err := c.yk.KeyInfo(s)
		switch {
		case errors.Is(err, piv.ErrNotFound):
			return fmt.Errorf("%w: the slot holds no key", ErrNoCustodySlot)
		case err != nil:
			return mapError(c.reader, err)
		}
		if ki.PINPolicy != 0 {
			key.PINPolicy = ki.PINPolicy
		}
		if ki.TouchPolicy != 0 {
			key.TouchPolicy = ki.TouchPolicy
		}
	}
	if err := c.VerifyPIN(pin); err != nil {
		return errors.Unwrap(err) // VerifyPIN's own "verify PIN: " prefix
	}
	if c.mgmt == nil {
		return fmt.Errorf("%w: the card's management key is not stored on it; init the card with custos", ErrFactoryDefault)
	}
	pub, err := c.yk.GenerateKey(c.mgmt, s, key)
	if err != nil {
		return mapError(c.reader, err)
	}
	ecpub, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("generate key: card returned a %T", pub)
	}
	cert, err := newSlotCertificate(ecpub, nil, nil)
	if err != nil {
		return err
	}
	return c.storeCertificate(s, cert)
}
