package cards

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"errors"
	"fmt"

	"custos.dev/custos/shares"
)

// Yubico's PIN policy byte, as GET METADATA (tag 02) and GENERATE (tag AA)
// carry it.
const pinPolicyOnceByte = 0x02

// OpenShares opens several shares sealed to the slot's key in one pass of
// the card: the pass of a one-pass recovery of many volumes. The slot's
// key is read once (GET METADATA, Yubico's extension; ATTEST before
// firmware 5.3), or not at all when this Card read it with its policy
// already (CheckRecipient, Custody), and checked against every share's
// recipient before the PIN is sent: a share sealed to another key gets ErrWrongCard and sends
// nothing. Then, for each share, VERIFY (SP 800-73-4 Part 2 section
// 3.2.1) and GENERAL AUTHENTICATE (section 3.2.4, the key agreement): a
// key with PIN policy "always" needs the VERIFY right before each use.
// A key whose policy GET METADATA says is "once" is verified before the
// first share only (and again should the card ask for it); before
// firmware 5.3 the policy is not known and "always" is assumed.
//
// It returns, in the order given, each share opened or the reason it did
// not open (a share whose ciphertext does not open with the key). err is
// a failure of the card as a whole — a wrong PIN (a *PINError; never
// retried), a blocked PIN, the card removed or mute — after which nothing
// more was sent; the shares opened before it are returned with it.
//
// Commands: 1 + 2 per share (policy always), or 2 + 1 per share (once);
// the first of them, GET METADATA, not sent after CheckRecipient.
func (c *Card) OpenShares(slot uint8, pin []byte, sealed []*shares.SealedShare) ([]*shares.Share, []error, error) {
	c.tr.begin()
	opened := make([]*shares.Share, len(sealed))
	errs := make([]error, len(sealed))
	fail := func(err error) ([]*shares.Share, []error, error) {
		return opened, errs, fmt.Errorf("open shares in slot %02x: %w", slot, mapError(c.reader, err))
	}
	if err := checkRetired(slot); err != nil {
		return fail(err)
	}
	if err := checkPINLength(pin); err != nil {
		return fail(err)
	}
	pub, once, err := c.slotKeyPolicy(slot)
	if errors.Is(err, errNotFound) {
		return fail(fmt.Errorf("%w: the slot holds no key; init the card first", ErrNoCustodySlot))
	}
	if err != nil {
		return fail(err)
	}
	fp, err := shares.FingerprintOf(pub)
	if err != nil {
		return fail(err)
	}
	recipient, err := pub.ECDH()
	if err != nil {
		return fail(err)
	}
	verified := false
	for i, s := range sealed {
		switch {
		case s == nil:
			errs[i] = errors.New("no sealed share")
			continue
		case s.Recipient != fp:
			errs[i] = ErrWrongCard
			continue
		}
		c.tr.begin()
		var cardErr error
		sh, err := shares.Open(s, recipient, func(eph *ecdh.PublicKey) ([]byte, error) {
			if !once || !verified {
				if cardErr = c.verify(pin); cardErr != nil {
					return nil, cardErr
				}
				c.secured, verified = true, true
			}
			z, err := c.ecdh(slot, eph.Bytes())
			if once && errors.Is(mapError(c.reader, err), ErrPINRequired) {
				// The card ended the verification after all: once more.
				if cardErr = c.verify(pin); cardErr != nil {
					return nil, cardErr
				}
				z, err = c.ecdh(slot, eph.Bytes())
			}
			cardErr = err
			return z, err
		})
		if cardErr != nil {
			return fail(cardErr)
		}
		if err != nil {
			errs[i] = err
			continue
		}
		opened[i] = sh
	}
	return opened, errs, nil
}

// slotKeyPolicy is slotKey with the key's PIN policy: once tells a policy
// of "once" that GET METADATA reported. At most one command: none when
// this Card read the key and its policy before.
func (c *Card) slotKeyPolicy(slot uint8) (pub *ecdsa.PublicKey, once bool, err error) {
	if _, told := c.policies[slot]; !told && !c.noMetadata {
		// Read the key again (a key this Card generated, or one read
		// before), for its policy.
		c.forgetKey(slot)
	}
	if pub, err = c.slotKey(slot); err != nil {
		return nil, false, err
	}
	return pub, c.policies[slot] == pinPolicyOnceByte, nil
}
