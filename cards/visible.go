package cards

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// What makes a custody key an ordinary PIV key to every other client: a
// certificate in the slot's object, the slot counted in the Key History
// object, and Yubico's admin data saying where the management key is.

// readKeyHistory reads the Key History object (5FC10C), errNotFound when
// the card has none.
func (c *Card) readKeyHistory() (keyHistory, error) {
	v, err := c.getData(objKeyHistory)
	if err != nil {
		return keyHistory{}, err
	}
	h, err := parseKeyHistory(v)
	if err != nil {
		return keyHistory{}, c.malformed("GET DATA 5FC10C", err)
	}
	return h, nil
}

// countInKeyHistory makes the Key History object count slot among the
// retired keys whose certificate is on the card (SP 800-73-4 Part 1 section
// 3.3.2), writing it only when it does not already. OpenSC's PIV driver,
// and PIV middleware that follows the specification, reads retired slots
// 82 to 82+keysWithOnCardCerts-1 and no others. A history whose off-card
// keys would no longer fit is left as it is, and said so. The management
// key must be authenticated.
func (c *Card) countInKeyHistory(slot uint8) error {
	h, err := c.readKeyHistory()
	if err != nil && !errors.Is(err, errNotFound) {
		return fmt.Errorf("read key history: %w", err)
	}
	want, changed := h.covering(slot)
	if !changed {
		if need := int(slot-firstRetiredSlot) + 1; h.onCard < need {
			return fmt.Errorf("the card's key history counts %d retired keys with certificates off the card, which leaves no room to count slot %02x: remove them, or init another slot", h.offCard, slot)
		}
		return nil
	}
	if err := c.putData(objKeyHistory, want.marshal(), false); err != nil {
		return fmt.Errorf("write key history: %w", err)
	}
	return nil
}

// markProtected sets, in Yubico's admin data (5FFF00), the flag that says
// the management key is stored in the PIN-protected data, keeping the
// object's other items and dropping a PIN-derived key's salt: what
// yubico-piv-tool's ykpiv_util_set_protected_mgm and ykman's
// "piv access change-management-key --protect" write, so that they (and
// ykcs11) know to read the key with the PIN. The management key must be
// authenticated.
func (c *Card) markProtected() error {
	var admin *pivmanObject
	v, err := c.getData(objAdminData)
	switch {
	case err == nil:
		if admin, err = parsePivman(v, 0x80); err != nil {
			// Damaged admin data: replaced, as libykpiv does when it
			// cannot read it.
			admin = nil
		}
	case errors.Is(err, errNotFound):
	default:
		return fmt.Errorf("read admin data: %w", err)
	}
	before := []byte(nil)
	if admin != nil {
		before = admin.marshal()
	}
	after := protectedAdmin(admin).marshal()
	if bytes.Equal(before, after) {
		return nil
	}
	if err := c.putData(objAdminData, after, false); err != nil {
		return fmt.Errorf("write admin data: %w", err)
	}
	return nil
}

// storeCertificate writes cert into the slot's object (PUT DATA, SP
// 800-73-4 Part 2 section 3.3.1), reads it back (GET DATA, section 3.1.2)
// and returns what it read, the same bytes. The management key must be
// authenticated.
func (c *Card) storeCertificate(slot uint8, cert *x509.Certificate) (*x509.Certificate, error) {
	if len(cert.Raw) > maxCertSize {
		return nil, fmt.Errorf("the certificate is %d bytes, more than a card stores (%d)", len(cert.Raw), maxCertSize)
	}
	if err := c.putData(retiredCertObject(slot), certObject(cert.Raw), false); err != nil {
		return nil, err
	}
	back, err := c.readCertificate(slot)
	if err != nil {
		return nil, fmt.Errorf("read back: %w", err)
	}
	if !bytes.Equal(back.Raw, cert.Raw) {
		return nil, errors.New("the certificate read back differs from the one written: the card may be faulty; write it again or use another card")
	}
	return back, nil
}

// newCustodyCertificate makes the certificate Init writes for a new custody
// key: an ordinary X.509 certificate for the key, carrying no share, signed
// by an ephemeral key dropped at once (the signature only makes it
// well-formed), so that PIV clients list the key before any share is
// written. WriteShare replaces it.
func newCustodyCertificate(pub *ecdsa.PublicKey) (*x509.Certificate, error) {
	eph, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: "custos custody key"},
		NotBefore:    now,
		NotAfter:     noExpiry,
		KeyUsage:     x509.KeyUsageKeyAgreement,
	}
	parent := &x509.Certificate{Subject: pkix.Name{CommonName: "custos"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, eph)
	if err != nil {
		return nil, fmt.Errorf("make certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}
