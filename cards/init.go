package cards

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/shares"
)

// InitOptions are the custodian's choices for Init.
type InitOptions struct {
	// PIN and PUK are the custodian's new PIN and PUK, 6 to 8 characters,
	// distinct from each other and from the factory values.
	PIN, PUK []byte
	// Slot is the retired slot to use, 0x82 to 0x95; 0 picks the first
	// free one. A slot that already holds a key is refused.
	Slot uint8
	// PINPolicy is the slot key's PIN policy; 0 means piv.PINPolicyAlways.
	PINPolicy piv.PINPolicy
	// TouchPolicy is the slot key's touch policy; 0 means
	// piv.TouchPolicyNever.
	TouchPolicy piv.TouchPolicy
	// Roots are extra attestation roots (the virtual card's CA for a
	// rehearsal), trusted besides Yubico's. Nil trusts Yubico's alone.
	Roots *x509.CertPool
	// CurrentPIN and CurrentPUK are the card's current PIN and PUK; nil
	// means the factory defaults. They are needed only when the card says
	// (GET METADATA) that they were changed, or on firmware before 5.3.
	CurrentPIN, CurrentPUK []byte
}

// Custody is what Init did: the card's identity, the slot and its key, and
// the attestation proving the key was generated on the card.
type Custody struct {
	Serial      uint32
	Version     string
	Slot        uint8
	PublicKey   *ecdsa.PublicKey
	Fingerprint shares.Fingerprint
	// Attestation is the slot key's attestation certificate, signed by
	// Intermediate, the card's attestation certificate.
	Attestation, Intermediate *x509.Certificate
	// PINPolicy and TouchPolicy are the slot key's policies as attested:
	// "never", "once", "always" or "cached".
	PINPolicy, TouchPolicy string
}

// weakFirmware are the firmware versions known to generate weak keys:
// YubiKey FIPS Series 4.4.2 and 4.4.4, whose random number generator starts
// with reduced randomness after power-up (Yubico security advisory
// YSA-2019-02), so that the first keys and ECDSA nonces it makes can be
// guessed.
var weakFirmware = map[piv.Version]bool{
	{Major: 4, Minor: 4, Patch: 2}: true,
	{Major: 4, Minor: 4, Patch: 4}: true,
}

// Factory values of a YubiKey's PIV application.
var (
	factoryPIN = []byte(piv.DefaultPIN)
	factoryPUK = []byte(piv.DefaultPUK)
)

// managementKeySize is the new management key's length: AES-192 or 3DES.
// (piv-go's SetMetadata stores only 24-byte keys.)
const managementKeySize = 24

// Init makes the card a custody card. In this order, so that a failure or a
// crash at any step leaves a card Init can simply be run on again:
//
//  1. refuse weak firmware and bad options, read the PIN, PUK and
//     management-key state with GET METADATA (never by trying a PIN);
//  2. authenticate with the current management key (the factory one, or
//     the one custos stored PIN-protected on an earlier run);
//  3. generate the P-256 key in the slot, attest it and verify the
//     attestation against Yubico's root and opts.Roots;
//  4. store a new random management key PIN-protected, then make it the
//     card's management key;
//  5. set the custodian's PIN and PUK.
//
// It keeps the new management key for WriteShare on this Card.
func (c *Card) Init(opts InitOptions) (*Custody, error) {
	cu, err := c.init(opts)
	if err != nil {
		return nil, fmt.Errorf("init card %d: %w", c.serial, err)
	}
	return cu, nil
}

func (c *Card) init(opts InitOptions) (*Custody, error) {
	if weakFirmware[c.version] {
		return nil, fmt.Errorf("%w: firmware %s is a YubiKey FIPS release whose random number generator starts with reduced randomness after power-up (Yubico advisory YSA-2019-02), so a key it generates may be guessed", ErrWeakFirmware, c.Version())
	}
	if err := checkNewCredentials(opts.PIN, opts.PUK); err != nil {
		return nil, err
	}
	pinPolicy, touchPolicy := opts.PINPolicy, opts.TouchPolicy
	if pinPolicy == 0 {
		pinPolicy = piv.PINPolicyAlways
	}
	if touchPolicy == 0 {
		touchPolicy = piv.TouchPolicyNever
	}
	switch pinPolicy {
	case piv.PINPolicyAlways, piv.PINPolicyOnce:
	default:
		return nil, errors.New("the custody key's PIN policy must be always or once")
	}
	switch touchPolicy {
	case piv.TouchPolicyNever, piv.TouchPolicyAlways, piv.TouchPolicyCached:
	default:
		return nil, errors.New("unknown touch policy")
	}

	// 1. The credentials' state, over a connection of custos's own (piv-go
	// does not return the default flags): close, read, reopen.
	curPIN, curPUK, mgmtDefault, err := c.currentCredentials(opts)
	if err != nil {
		return nil, err
	}

	// 2. The current management key.
	mgmt, err := c.currentManagementKey(curPIN, mgmtDefault)
	if err != nil {
		return nil, err
	}
	defer shares.Wipe(mgmt)

	// 3. The key, its attestation.
	slot, err := c.freeSlot(opts.Slot)
	if err != nil {
		return nil, err
	}
	s, _ := retiredSlot(slot)
	pub, err := c.yk.GenerateKey(mgmt, s, piv.Key{Algorithm: piv.AlgorithmEC256, PINPolicy: pinPolicy, TouchPolicy: touchPolicy})
	if err != nil {
		return nil, c.fail("generate key", err)
	}
	ecpub, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("generate key: card returned a %T", pub)
	}
	cu, err := c.attest(s, ecpub, opts.Roots)
	if err != nil {
		return nil, err
	}

	// 4. A random management key, stored where only the PIN reads it
	// before it replaces the current one: a crash in between leaves the
	// current key working.
	newMgmt := make([]byte, managementKeySize)
	if _, err := rand.Read(newMgmt); err != nil {
		return nil, err
	}
	stored := append([]byte(nil), newMgmt...)
	if err := c.yk.SetMetadata(mgmt, &piv.Metadata{ManagementKey: &stored}); err != nil {
		shares.Wipe(newMgmt)
		shares.Wipe(stored)
		return nil, c.fail("store management key", err)
	}
	shares.Wipe(stored)
	if err := c.yk.SetManagementKey(mgmt, newMgmt); err != nil {
		shares.Wipe(newMgmt)
		return nil, c.fail("set management key", err)
	}
	shares.Wipe(c.mgmt)
	c.mgmt = newMgmt

	// 5. The custodian's PIN and PUK.
	if !bytes.Equal(curPIN, opts.PIN) {
		if err := c.yk.SetPIN(string(curPIN), string(opts.PIN)); err != nil {
			return nil, c.fail("set PIN", err)
		}
	}
	if !bytes.Equal(curPUK, opts.PUK) {
		if err := c.yk.SetPUK(string(curPUK), string(opts.PUK)); err != nil {
			err = mapError(c.reader, err)
			var pe *PINError
			if errors.As(err, &pe) {
				pe.PUK = true
			} else if errors.Is(err, ErrPINBlocked) {
				err = errPUKBlocked
			}
			return nil, fmt.Errorf("set PUK: %w", err)
		}
	}
	return cu, nil
}

// errPUKBlocked is a blocked PUK: only a reset of the PIV application helps.
var errPUKBlocked = fmt.Errorf("%w: the PUK is blocked too; only resetting the card's PIV application (ykman piv reset), which erases its keys, makes it usable again", ErrPINBlocked)

// checkNewCredentials enforces what Init asks of the custodian's PIN and PUK.
func checkNewCredentials(pin, puk []byte) error {
	if len(pin) < 6 || len(pin) > 8 || len(puk) < 6 || len(puk) > 8 {
		return errors.New("the PIN and the PUK must each be 6 to 8 characters")
	}
	if bytes.Equal(pin, factoryPIN) || bytes.Equal(puk, factoryPUK) || bytes.Equal(pin, factoryPUK) || bytes.Equal(puk, factoryPIN) {
		return fmt.Errorf("%w: choose a PIN and a PUK other than the factory values", ErrFactoryDefault)
	}
	if bytes.Equal(pin, puk) {
		return errors.New("the PUK must differ from the PIN")
	}
	return nil
}

// currentCredentials decides the current PIN and PUK to change from, and
// whether the management key is still the factory one, from GET METADATA
// (firmware 5.3 and later) or, before that, from opts alone.
func (c *Card) currentCredentials(opts InitOptions) (pin, puk []byte, mgmtDefault bool, err error) {
	pin, puk = opts.CurrentPIN, opts.CurrentPUK
	if pin == nil {
		pin = factoryPIN
	}
	if puk == nil {
		puk = factoryPUK
	}
	if !c.atLeast(5, 3, 0) {
		return pin, puk, false, nil
	}
	if err := c.yk.Close(); err != nil {
		c.yk = nil
		return nil, nil, false, c.fail("read credentials", err)
	}
	c.yk = nil
	mPIN, mPUK, mMgmt, ok, rerr := credentials(c.reader)
	yk, oerr := openYubiKey(c.reader)
	if oerr != nil {
		return nil, nil, false, c.fail("reopen card", oerr)
	}
	c.yk = yk
	if rerr != nil {
		return nil, nil, false, c.fail("read credentials", rerr)
	}
	if !ok {
		return pin, puk, false, nil
	}
	switch {
	case mPIN.Retries == 0:
		return nil, nil, false, ErrPINBlocked
	case mPUK.Retries == 0 && !mPUK.Default:
		return nil, nil, false, errPUKBlocked
	case mPIN.Default:
		pin = factoryPIN
	case opts.CurrentPIN == nil:
		return nil, nil, false, fmt.Errorf("%w: this card's PIN was changed; give its current PIN", ErrPINRequired)
	}
	switch {
	case mPUK.Default:
		puk = factoryPUK
	case opts.CurrentPUK == nil:
		return nil, nil, false, fmt.Errorf("%w: this card's PUK was changed; give its current PUK", ErrPINRequired)
	}
	return pin, puk, mMgmt.Default, nil
}

// currentManagementKey returns the management key to authenticate with: the
// factory one, or the one stored PIN-protected on the card.
func (c *Card) currentManagementKey(pin []byte, isDefault bool) ([]byte, error) {
	if isDefault {
		return append([]byte(nil), piv.DefaultManagementKey...), nil
	}
	m, err := c.yk.Metadata(string(pin))
	if err != nil {
		return nil, c.fail("read management key", err)
	}
	if m.ManagementKey != nil {
		k := append([]byte(nil), *m.ManagementKey...)
		shares.Wipe(*m.ManagementKey)
		return k, nil
	}
	if !c.atLeast(5, 3, 0) {
		// No metadata to tell: the factory key is the only guess, and a
		// wrong management key costs no retry.
		return append([]byte(nil), piv.DefaultManagementKey...), nil
	}
	return nil, errors.New("the card's management key was changed and is not stored on the card: reset the card's PIV application (ykman piv reset) or use another card")
}

// freeSlot returns want when it holds no key, or the first retired slot
// that holds none.
func (c *Card) freeSlot(want uint8) (uint8, error) {
	first, last := uint8(firstRetiredSlot), uint8(lastRetiredSlot)
	if want != 0 {
		if _, err := retiredSlot(want); err != nil {
			return 0, err
		}
		first, last = want, want
	}
	for slot := first; slot <= last; slot++ {
		s, _ := retiredSlot(slot)
		_, err := c.slotKey(s)
		if errors.Is(err, piv.ErrNotFound) {
			return slot, nil
		}
		if err != nil && !errors.Is(err, ErrNoCustodySlot) {
			return 0, c.fail("find a free slot", err)
		}
	}
	if want != 0 {
		return 0, fmt.Errorf("slot %02x already holds a key: choose another slot, or wipe it first", want)
	}
	return 0, fmt.Errorf("%w: all retired slots (82-95) hold keys", ErrNoCustodySlot)
}

// attest reads the slot key's attestation and verifies it (Attest), and
// that it is the key just generated.
func (c *Card) attest(s piv.Slot, pub *ecdsa.PublicKey, roots *x509.CertPool) (*Custody, error) {
	a, err := c.Attest(uint8(s.Key), roots)
	if err != nil {
		return nil, err
	}
	if !a.PublicKey.Equal(pub) {
		return nil, fmt.Errorf("%w: the attested key is not the key just generated", ErrAttestation)
	}
	if c.serial == 0 {
		c.serial = a.Serial
	}
	return &Custody{
		Serial:       c.serial,
		Version:      c.Version(),
		Slot:         a.Slot,
		PublicKey:    pub,
		Fingerprint:  a.Fingerprint,
		Attestation:  a.Cert,
		Intermediate: a.Intermediate,
		PINPolicy:    pinPolicyName(a.PINPolicy),
		TouchPolicy:  touchPolicyName(a.TouchPolicy),
	}, nil
}

func pinPolicyName(p piv.PINPolicy) string {
	switch p {
	case piv.PINPolicyNever:
		return "never"
	case piv.PINPolicyOnce:
		return "once"
	case piv.PINPolicyAlways:
		return "always"
	}
	return fmt.Sprintf("unknown (%d)", p)
}

func touchPolicyName(p piv.TouchPolicy) string {
	switch p {
	case piv.TouchPolicyNever:
		return "never"
	case piv.TouchPolicyAlways:
		return "always"
	case piv.TouchPolicyCached:
		return "cached"
	}
	return fmt.Sprintf("unknown (%d)", p)
}
