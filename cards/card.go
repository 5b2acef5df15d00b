package cards

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/ebfe/scard"

	"custos.dev/custos/shares"
)

// Card is an open, exclusive connection to one PIV card. It is not safe for
// concurrent use.
type Card struct {
	reader string
	link   *link
	tr     *transport
	serial uint32

	version     [3]byte
	haveVersion bool
	// noMetadata is set once the card answered GET METADATA with 6D00
	// (firmware before 5.3).
	noMetadata bool

	// mgmt is the management key, read after VERIFY (or set by Init);
	// wiped by Close. mgmtAlg is its algorithm, 0 until known.
	mgmt    []byte
	mgmtAlg byte
	// secured is set once a PIN was verified or the management key
	// authenticated: Close then resets the card, so that nobody who
	// connects next finds it unlocked.
	secured bool
	// keys are the slot keys read (or generated) on this Card. The
	// connection is exclusive, so only this Card changes them until
	// Close: a key read once is not asked for again. policies are the
	// PIN policies GET METADATA told with a key in keys (absent when not
	// told: generated, or read before firmware 5.3).
	keys     map[uint8]*ecdsa.PublicKey
	policies map[uint8]byte
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

// Open connects to the card in reader, exclusively (until Close, no other
// program can use the card), with DefaultTimeout for each operation. It
// sends SELECT and GET SERIAL.
func Open(reader string) (*Card, error) { return OpenTimeout(reader, DefaultTimeout) }

// OpenTimeout is Open with another deadline for each operation: Open
// itself, and every later method of the Card, must be done within timeout,
// or it returns a *TimeoutError and the Card is unusable.
func OpenTimeout(reader string, timeout time.Duration) (*Card, error) {
	c, err := dial(reader, scard.ShareExclusive, timeout)
	if err != nil {
		return nil, fmt.Errorf("open card in %q: %w", reader, err)
	}
	if c.serial, err = c.getSerial(); err != nil {
		c.Close()
		return nil, fmt.Errorf("open card in %q: %w", reader, err)
	}
	return c, nil
}

// busyWait and busyPause bound how long Open waits for a card that is busy
// only for a moment (another program reading its serial, as Readers does)
// before calling it busy.
const (
	busyWait  = time.Second
	busyPause = 40 * time.Millisecond
)

// dial connects to the card in reader and selects the PIV application,
// retrying briefly while the card is busy.
func dial(reader string, mode scard.ShareMode, timeout time.Duration) (*Card, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	deadline := time.Now().Add(timeout)
	busyUntil := time.Now().Add(busyWait)
	var l *link
	for {
		var err error
		l, err = connect(reader, mode, deadline)
		if err == nil {
			break
		}
		err = mapError(reader, err)
		if errors.Is(err, ErrCardBusy) && time.Now().Before(busyUntil) && time.Until(deadline) > busyPause {
			time.Sleep(busyPause)
			continue
		}
		return nil, err
	}
	c := &Card{reader: reader, link: l}
	c.tr = &transport{reader: reader, timeout: timeout, deadline: deadline, xfer: l.transmit}
	if mode == scard.ShareShared {
		// Keep other programs' commands out of ours.
		if err := l.within(deadline, l.card.BeginTransaction); err != nil {
			l.close(false)
			return nil, mapError(reader, err)
		}
	}
	if err := c.selectPIV(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Close releases the card and forgets the management key. After a PIN was
// verified or the management key used, it resets the card (SCARD_RESET_CARD),
// which ends that security status for whoever connects next.
func (c *Card) Close() error {
	shares.Wipe(c.mgmt)
	c.mgmt = nil
	if c.link == nil {
		return nil
	}
	err := c.link.close(c.secured)
	c.link = nil
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

// Version is the card's firmware version, "major.minor.patch". It is read
// (GET VERSION) the first time it is asked for, not by Open, which opening
// a share does not need; "" when the card does not tell.
func (c *Card) Version() string {
	c.tr.begin()
	if err := c.readVersion(); err != nil {
		return ""
	}
	return c.versionString()
}

func (c *Card) versionString() string {
	return fmt.Sprintf("%d.%d.%d", c.version[0], c.version[1], c.version[2])
}

// readVersion asks the card its version once.
func (c *Card) readVersion() error {
	if c.haveVersion {
		return nil
	}
	v, err := c.getVersion()
	if err != nil {
		return err
	}
	c.version, c.haveVersion = v, true
	return nil
}

// atLeast compares the firmware version, which readVersion must have read.
func (c *Card) atLeast(major, minor, patch byte) bool {
	v := c.version
	if v[0] != major {
		return v[0] > major
	}
	if v[1] != minor {
		return v[1] > minor
	}
	return v[2] >= patch
}

// fail wraps err for the custodian.
func (c *Card) fail(op string, err error) error {
	return fmt.Errorf("%s: %w", op, mapError(c.reader, err))
}

func checkRetired(slot uint8) error {
	if slot < firstRetiredSlot || slot > lastRetiredSlot {
		return fmt.Errorf("slot %02x is not a retired key-management slot (82-95)", slot)
	}
	return nil
}

// slotKey returns the public key in slot, errNotFound when the slot holds
// none. From firmware 5.3 it is GET METADATA, one command. Before (the card
// answers 6D00), it is ATTEST: the cheapest proof of the key that is honest,
// since a certificate object can hold any key while an attestation is signed
// by the card for the key in the slot; it fails for an imported key.
func (c *Card) slotKey(slot uint8) (*ecdsa.PublicKey, error) {
	if pub, ok := c.keys[slot]; ok {
		return pub, nil
	}
	pub, policy, err := c.readSlotKey(slot)
	if err != nil {
		return nil, err
	}
	c.rememberKey(slot, pub, policy)
	return pub, nil
}

// rememberKey notes the key now in slot (read, or just generated) and its
// PIN policy byte as GET METADATA told it (0: not told).
func (c *Card) rememberKey(slot uint8, pub *ecdsa.PublicKey, policy byte) {
	if c.keys == nil {
		c.keys, c.policies = map[uint8]*ecdsa.PublicKey{}, map[uint8]byte{}
	}
	c.keys[slot] = pub
	if policy != 0 {
		c.policies[slot] = policy
	} else {
		delete(c.policies, slot)
	}
}

// forgetKey drops what this Card knew of slot's key.
func (c *Card) forgetKey(slot uint8) {
	delete(c.keys, slot)
	delete(c.policies, slot)
}

// readSlotKey reads slot's public key, and its PIN policy byte when the
// card tells it (GET METADATA; 0 from ATTEST before firmware 5.3).
func (c *Card) readSlotKey(slot uint8) (*ecdsa.PublicKey, byte, error) {
	if !c.noMetadata {
		m, err := c.getMetadata(slot)
		switch {
		case err == nil:
			if m.alg != algECCP256 {
				return nil, 0, fmt.Errorf("slot %02x holds a key of algorithm %#x, not P-256: %w", slot, m.alg, ErrNoCustodySlot)
			}
			pub, err := p256Point(m.point)
			if err != nil {
				return nil, 0, c.malformed("GET METADATA", err)
			}
			return pub, m.pinPolicy, nil
		case errors.Is(err, errNotSupported):
			c.noMetadata = true
		default:
			return nil, 0, err
		}
	}
	cert, err := c.attest(slot)
	var st statusError
	if errors.As(err, &st) && st.Status() == swIncorrectData {
		return nil, 0, fmt.Errorf("%w (no key generated on the card in slot %02x)", errNotFound, slot)
	}
	if err != nil {
		return nil, 0, err
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, 0, fmt.Errorf("slot %02x holds a %T, not a P-256 key: %w", slot, cert.PublicKey, ErrNoCustodySlot)
	}
	return pub, 0, nil
}

// readCertificate reads the certificate in slot's object (GET DATA). A
// missing object gives errNotFound; one that does not decode an error
// wrapping ErrNoCustodySlot.
func (c *Card) readCertificate(slot uint8) (*x509.Certificate, error) {
	v, err := c.getData(retiredCertObject(slot))
	if err != nil {
		return nil, err
	}
	der, err := parseCertObject(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoCustodySlot, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: the slot's certificate does not decode: %v", ErrNoCustodySlot, err)
	}
	return cert, nil
}

// Custody lists the retired slots (82–95) that hold a key, with the custos
// certificate's content where there is one.
func (c *Card) Custody() ([]SlotInfo, error) {
	c.tr.begin()
	var out []SlotInfo
	for slot := uint8(firstRetiredSlot); slot <= lastRetiredSlot; slot++ {
		pub, err := c.slotKey(slot)
		if errors.Is(err, errNotFound) || errors.Is(err, ErrNoCustodySlot) {
			continue
		}
		if err != nil {
			return nil, c.fail("list custody slots", err)
		}
		fp, err := shares.FingerprintOf(pub)
		if err != nil {
			return nil, fmt.Errorf("list custody slots: %w", err)
		}
		info := SlotInfo{Slot: slot, PublicKey: pub, Fingerprint: fp}
		cert, err := c.readCertificate(slot)
		switch {
		case err == nil:
			// A certificate that is not custos's, or a damaged custos
			// extension, leaves Cert nil: ReadShare says why.
			info.Cert, _ = slotCertOf(cert)
		case errors.Is(err, errNotFound), errors.Is(err, ErrNoCustodySlot):
		default:
			return nil, c.fail("list custody slots", err)
		}
		out = append(out, info)
	}
	return out, nil
}

// VerifyPIN checks the PIN. A wrong PIN gives a *PINError with the retries
// left; a blocked one ErrPINBlocked. It is never retried. On success it also
// reads the PIN-protected management key Init stored, which WriteShare needs;
// the Card keeps it until Close. Two commands: VERIFY, GET DATA 5FC109.
func (c *Card) VerifyPIN(pin []byte) error {
	c.tr.begin()
	if err := c.verifyAndReadKey(pin); err != nil {
		return c.fail("verify PIN", err)
	}
	return nil
}

// verifyAndReadKey is VERIFY, then GET DATA of the protected data (5FC109,
// readable with the PIN verified) for the management key stored there.
func (c *Card) verifyAndReadKey(pin []byte) error {
	if err := c.verify(pin); err != nil {
		return err
	}
	c.secured = true
	return c.readStoredKey()
}

// readStoredKey reads the management key from the protected data; the PIN
// must be verified. A card without one keeps c.mgmt nil.
func (c *Card) readStoredKey() error {
	o, err := c.readProtected()
	if err != nil || o == nil {
		return err
	}
	defer o.wipe()
	if k, ok := o.get(protectedMgmKey); ok {
		switch len(k) {
		case 16, 24, 32:
		default:
			return fmt.Errorf("the management key stored on the card is %d bytes long, not 16, 24 or 32", len(k))
		}
		shares.Wipe(c.mgmt)
		c.mgmt = append([]byte(nil), k...)
	}
	return nil
}

// readProtected reads the protected data object (5FC109), nil when the card
// has none; the PIN must be verified.
func (c *Card) readProtected() (*pivmanObject, error) {
	v, err := c.getData(objPrinted)
	if errors.Is(err, errNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer clear(v)
	o, err := parsePivman(v, 0x88)
	if err != nil {
		return nil, fmt.Errorf("the card's protected data does not decode: %w", err)
	}
	return o, nil
}

// managementAlgorithm returns the management key's algorithm: from GET
// METADATA (firmware 5.3 and later), else 3DES, the only one before 5.4.
func (c *Card) managementAlgorithm() (byte, error) {
	if c.mgmtAlg != 0 {
		return c.mgmtAlg, nil
	}
	c.mgmtAlg = alg3DES
	if !c.noMetadata {
		m, err := c.getMetadata(keyManagementKey)
		switch {
		case err == nil:
			if mgmtKeyLen(m.alg) == 0 {
				return 0, fmt.Errorf("unknown management key algorithm %#x", m.alg)
			}
			c.mgmtAlg = m.alg
		case errors.Is(err, errNotSupported):
			c.noMetadata = true
		default:
			c.mgmtAlg = 0
			return 0, err
		}
	}
	return c.mgmtAlg, nil
}

// authenticateStored authenticates with the management key the card keeps
// PIN-protected, which VerifyPIN (or Init) read.
func (c *Card) authenticateStored() error {
	if c.mgmt == nil {
		return fmt.Errorf("%w: verify the PIN first (and init the card if custos did not)", ErrPINRequired)
	}
	alg, err := c.managementAlgorithm()
	if err != nil {
		return err
	}
	if len(c.mgmt) != mgmtKeyLen(alg) {
		return fmt.Errorf("the stored management key is %d bytes, not a key of algorithm %#x: %w", len(c.mgmt), alg, errManagementKey)
	}
	c.secured = true
	return c.authenticate(alg, c.mgmt)
}

func mgmtKeyLen(alg byte) int {
	switch alg {
	case alg3DES, algAES192:
		return 24
	case algAES128:
		return 16
	case algAES256:
		return 32
	}
	return 0
}

// Tries returns how many tries the PIN and the PUK have left: GET METADATA
// of each (firmware 5.3 and later); before, an empty VERIFY for the PIN
// (SP 800-73-4 Part 2 section 3.2.1), and -1 for the PUK, whose count
// older firmware tells only to a try. -1 also stands for a PIN already
// verified on this connection, whose count VERIFY does not tell.
func (c *Card) Tries() (pin, puk int, err error) {
	c.tr.begin()
	if !c.noMetadata {
		mp, err := c.getMetadata(keyPIN)
		switch {
		case err == nil:
			mk, err := c.getMetadata(keyPUK)
			if err != nil {
				return 0, 0, c.fail("read PIN and PUK tries", err)
			}
			if !mp.hasRetries || !mk.hasRetries {
				return 0, 0, c.fail("read PIN and PUK tries", c.malformed("GET METADATA", errors.New("no retry counter")))
			}
			return mp.remaining, mk.remaining, nil
		case errors.Is(err, errNotSupported):
			c.noMetadata = true
		default:
			return 0, 0, c.fail("read PIN and PUK tries", err)
		}
	}
	n, err := c.pinTries()
	if err != nil {
		return 0, 0, c.fail("read PIN tries", err)
	}
	return n, -1, nil
}
