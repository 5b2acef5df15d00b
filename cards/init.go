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
var weakFirmware = map[[3]byte]bool{
	{4, 4, 2}: true,
	{4, 4, 4}: true,
}

// Factory values of a YubiKey's PIV application.
var (
	factoryPIN           = []byte(piv.DefaultPIN)
	factoryPUK           = []byte(piv.DefaultPUK)
	factoryManagementKey = piv.DefaultManagementKey
)

// Init makes the card a custody card. In this order, so that a failure or a
// crash at any step leaves a card Init can simply be run on again:
//
//  1. read the firmware version and refuse weak firmware before anything
//     else is sent; refuse bad options; read the PIN, PUK and
//     management-key state with GET METADATA (never by trying a PIN);
//  2. authenticate with the current management key (the factory one, or
//     the one custos stored PIN-protected on an earlier run);
//  3. generate the P-256 key in the slot, attest it and verify the
//     attestation against Yubico's root and opts.Roots;
//  4. write a certificate for the key (carrying no share) into the slot's
//     object, and count the slot in the Key History object, so that every
//     PIV client (OpenSC, PKCS#11 modules) lists the key;
//  5. store a new random management key PIN-protected (the protected data,
//     and the flag in the admin data that tells yubico-piv-tool and ykman
//     so), then make it the card's management key;
//  6. set the custodian's PIN and PUK.
//
// It keeps the new management key for WriteShare on this Card.
func (c *Card) Init(opts InitOptions) (*Custody, error) {
	c.tr.begin()
	cu, err := c.init(opts)
	if err != nil {
		return nil, fmt.Errorf("init card %d: %w", c.serial, mapError(c.reader, err))
	}
	return cu, nil
}

func (c *Card) init(opts InitOptions) (*Custody, error) {
	if err := c.readVersion(); err != nil {
		return nil, fmt.Errorf("read firmware version: %w", err)
	}
	if weakFirmware[c.version] {
		return nil, fmt.Errorf("%w: firmware %s is a YubiKey FIPS release whose random number generator starts with reduced randomness after power-up (Yubico advisory YSA-2019-02), so a key it generates may be guessed", ErrWeakFirmware, c.versionString())
	}
	if err := checkNewCredentials(opts.PIN, opts.PUK); err != nil {
		return nil, err
	}
	pinPolicy, touchPolicy, err := policies(opts)
	if err != nil {
		return nil, err
	}

	// 1. The credentials' state.
	curPIN, curPUK, mgmtDefault, err := c.currentCredentials(opts)
	if err != nil {
		return nil, err
	}

	// 2. The current management key.
	mgmt, protected, err := c.currentManagementKey(curPIN, mgmtDefault)
	if err != nil {
		return nil, err
	}
	defer shares.Wipe(mgmt)
	if protected != nil {
		defer protected.wipe()
	}
	alg, err := c.managementAlgorithm()
	if err != nil {
		return nil, fmt.Errorf("read management key algorithm: %w", err)
	}

	// 3. The key, its attestation.
	slot, err := c.freeSlot(opts.Slot)
	if err != nil {
		return nil, err
	}
	c.secured = true
	if err := c.authenticate(alg, mgmt); err != nil {
		return nil, fmt.Errorf("authenticate with the management key: %w", err)
	}
	pub, err := c.generate(slot, pinPolicy, touchPolicy)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	cu, err := c.verifyAttestation(slot, pub, opts.Roots)
	if err != nil {
		return nil, err
	}

	// 4. Visible to every PIV client.
	cert, err := newCustodyCertificate(pub)
	if err != nil {
		return nil, err
	}
	if _, err := c.storeCertificate(slot, cert); err != nil {
		return nil, fmt.Errorf("write the key's certificate: %w", err)
	}
	if err := c.countInKeyHistory(slot); err != nil {
		return nil, err
	}

	// 5. A random management key, stored where only the PIN reads it
	// before it replaces the current one: a crash in between leaves the
	// current key working.
	newAlg := byte(alg3DES)
	if c.atLeast(5, 4, 0) {
		newAlg = algAES192
	}
	newMgmt := make([]byte, mgmtKeyLen(newAlg))
	if _, err := rand.Read(newMgmt); err != nil {
		return nil, err
	}
	if protected == nil {
		protected = &pivmanObject{outer: 0x88}
		defer protected.wipe()
	}
	protected.set(protectedMgmKey, newMgmt)
	stored := protected.marshal()
	err = c.putData(objPrinted, stored, true)
	clear(stored)
	if err != nil {
		shares.Wipe(newMgmt)
		return nil, fmt.Errorf("store management key: %w", err)
	}
	if err := c.markProtected(); err != nil {
		shares.Wipe(newMgmt)
		return nil, err
	}
	if err := c.setManagementKey(newAlg, newMgmt); err != nil {
		shares.Wipe(newMgmt)
		return nil, fmt.Errorf("set management key: %w", err)
	}
	shares.Wipe(c.mgmt)
	c.mgmt, c.mgmtAlg = newMgmt, newAlg

	// 6. The custodian's PIN and PUK.
	if !bytes.Equal(curPIN, opts.PIN) {
		if err := c.changeReference(keyPIN, curPIN, opts.PIN); err != nil {
			return nil, fmt.Errorf("set PIN: %w", err)
		}
	}
	if !bytes.Equal(curPUK, opts.PUK) {
		if err := c.changeReference(keyPUK, curPUK, opts.PUK); err != nil {
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

// policies returns the GENERATE policy bytes for opts (Yubico's PIN policy
// tag AA: 02 once, 03 always; touch policy tag AB: 01 never, 02 always, 03
// cached).
func policies(opts InitOptions) (pin, touch byte, err error) {
	switch opts.PINPolicy {
	case 0, piv.PINPolicyAlways:
		pin = 0x03
	case piv.PINPolicyOnce:
		pin = 0x02
	default:
		return 0, 0, errors.New("the custody key's PIN policy must be always or once")
	}
	switch opts.TouchPolicy {
	case 0, piv.TouchPolicyNever:
		touch = 0x01
	case piv.TouchPolicyAlways:
		touch = 0x02
	case piv.TouchPolicyCached:
		touch = 0x03
	default:
		return 0, 0, errors.New("unknown touch policy")
	}
	return pin, touch, nil
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
		c.noMetadata = true
		return pin, puk, false, nil
	}
	mPIN, err := c.getMetadata(keyPIN)
	if errors.Is(err, errNotSupported) {
		c.noMetadata = true
		return pin, puk, false, nil
	}
	if err != nil {
		return nil, nil, false, fmt.Errorf("read credentials: %w", err)
	}
	mPUK, err := c.getMetadata(keyPUK)
	if err != nil {
		return nil, nil, false, fmt.Errorf("read credentials: %w", err)
	}
	mMgmt, err := c.getMetadata(keyManagementKey)
	if err != nil {
		return nil, nil, false, fmt.Errorf("read credentials: %w", err)
	}
	if !mPIN.hasDefault || !mPUK.hasDefault || !mMgmt.hasDefault || !mPIN.hasRetries || !mPUK.hasRetries || mgmtKeyLen(mMgmt.alg) == 0 {
		return nil, nil, false, c.malformed("GET METADATA", errors.New("a default flag, retry counter or algorithm is missing"))
	}
	c.mgmtAlg = mMgmt.alg
	switch {
	case mPIN.remaining == 0:
		return nil, nil, false, ErrPINBlocked
	case mPUK.remaining == 0 && !mPUK.isDefault:
		return nil, nil, false, errPUKBlocked
	case mPIN.isDefault:
		pin = factoryPIN
	case opts.CurrentPIN == nil:
		return nil, nil, false, fmt.Errorf("%w: this card's PIN was changed; give its current PIN", ErrPINRequired)
	}
	switch {
	case mPUK.isDefault:
		puk = factoryPUK
	case opts.CurrentPUK == nil:
		return nil, nil, false, fmt.Errorf("%w: this card's PUK was changed; give its current PUK", ErrPINRequired)
	}
	return pin, puk, mMgmt.isDefault, nil
}

// currentManagementKey returns the management key to authenticate with: the
// factory one, or the one stored PIN-protected on the card (then with the
// protected data it was read from, whose other items Init keeps).
func (c *Card) currentManagementKey(pin []byte, isDefault bool) ([]byte, *pivmanObject, error) {
	if isDefault {
		return append([]byte(nil), factoryManagementKey...), nil, nil
	}
	if err := c.verify(pin); err != nil {
		return nil, nil, fmt.Errorf("read management key: %w", err)
	}
	c.secured = true
	o, err := c.readProtected()
	if err != nil {
		return nil, nil, fmt.Errorf("read management key: %w", err)
	}
	if o != nil {
		if k, ok := o.get(protectedMgmKey); ok {
			return append([]byte(nil), k...), o, nil
		}
	}
	if c.noMetadata {
		// No metadata to tell: the factory key is the only guess, and a
		// wrong management key costs no retry.
		return append([]byte(nil), factoryManagementKey...), o, nil
	}
	if o != nil {
		o.wipe()
	}
	return nil, nil, errors.New("the card's management key was changed and is not stored on the card: reset the card's PIV application (ykman piv reset) or use another card")
}

// freeSlot returns want when it holds no key, or the first retired slot
// that holds none. Without GET METADATA (firmware before 5.3) a slot is
// taken when it has a generated key (ATTEST), a certificate, or is counted
// in the Key History, so that a key imported by another tool is not
// overwritten whenever its slot can be told from an empty one.
func (c *Card) freeSlot(want uint8) (uint8, error) {
	first, last := uint8(firstRetiredSlot), uint8(lastRetiredSlot)
	if want != 0 {
		if err := checkRetired(want); err != nil {
			return 0, err
		}
		first, last = want, want
	}
	var hist keyHistory
	if c.noMetadata {
		if h, err := c.readKeyHistory(); err == nil {
			hist = h
		} else if !errors.Is(err, errNotFound) {
			return 0, fmt.Errorf("find a free slot: %w", err)
		}
	}
	for slot := first; slot <= last; slot++ {
		_, err := c.slotKey(slot)
		if err != nil && !errors.Is(err, errNotFound) && !errors.Is(err, ErrNoCustodySlot) {
			return 0, fmt.Errorf("find a free slot: %w", err)
		}
		free := errors.Is(err, errNotFound)
		if free && c.noMetadata {
			if int(slot-firstRetiredSlot) < hist.onCard+hist.offCard {
				free = false
			} else {
				_, err := c.getData(retiredCertObject(slot))
				switch {
				case errors.Is(err, errNotFound):
				case err == nil:
					free = false
				default:
					return 0, fmt.Errorf("find a free slot: %w", err)
				}
			}
		}
		if free {
			return slot, nil
		}
	}
	if want != 0 {
		return 0, fmt.Errorf("slot %02x already holds a key: choose another slot, or wipe it first", want)
	}
	return 0, fmt.Errorf("%w: all retired slots (82-95) hold keys", ErrNoCustodySlot)
}

// verifyAttestation reads the slot key's attestation and the card's
// attestation certificate and verifies them (Attest's checks), and that
// the attested key is the key just generated.
func (c *Card) verifyAttestation(slot uint8, pub *ecdsa.PublicKey, roots *x509.CertPool) (*Custody, error) {
	a, err := c.attestSlot(slot, roots)
	if errors.Is(err, ErrNoAttestation) {
		// At init, a card that cannot attest the key it just generated
		// is refused like one whose attestation fails.
		return nil, fmt.Errorf("%w: %v", ErrAttestation, err)
	}
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
		Version:      c.versionString(),
		Slot:         slot,
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
