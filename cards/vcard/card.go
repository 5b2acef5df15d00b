package vcard

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"
)

// DefaultVersion is the firmware version a new card reports unless told
// otherwise: a YubiKey 5.7, whose factory management key is AES-192.
const DefaultVersion = "5.7.1"

// Config describes a factory-fresh card for NewCard.
type Config struct {
	// Serial is the card's serial number (GET SERIAL, attestation).
	Serial uint32
	// Version is the firmware version, "major.minor.patch"; empty means
	// DefaultVersion. It decides the factory management key algorithm
	// (AES-192 from 5.7, 3DES before), whether AES management keys are
	// accepted (from 5.4) and whether GET METADATA exists (from 5.3).
	Version string
	// CA signs the card's attestation certificate. Required.
	CA *CA
	// StatePath, if set, is the state file: created 0600 by NewCard
	// (which refuses to overwrite one) and rewritten atomically after
	// every command that changes the card. Empty keeps the card in memory.
	StatePath string
	// NoAttestation makes a PIV card without Yubico's attestation, as
	// other makers' PIV cards are: ATTEST answers 6D00 (instruction not
	// supported) and GET DATA 5FFF01 answers 6A82.
	NoAttestation bool
}

// Counts are a card's counters since it was created or loaded in this
// process.
type Counts struct {
	// APDUs is the number of command APDUs received, GET RESPONSE and
	// malformed ones included.
	APDUs uint64
	// Instructions counts well-formed command APDUs by INS byte.
	Instructions [256]uint64
	// Touches is the number of touches confirmed (keys with a touch
	// policy of always, or cached once the cache expired).
	Touches uint64
	// Resets is the number of resets the reader asked of the card (a
	// client's SCardDisconnect or SCardReconnect with SCARD_RESET_CARD),
	// power on and off not counted.
	Resets uint64
}

// Card is one virtual card. Its methods are safe for concurrent use.
type Card struct {
	path string

	mu       sync.Mutex
	app      applet
	saved    []byte // the state last written; restored if a write fails
	counts   Counts
	trace    io.Writer
	inserted *Inserted
	hostile  Hostile
}

// Hostile is a misbehaviour a card can be switched to, to test what a
// counterfeit or broken card does to a client. Each applies to every
// command APDU received from then on; the card still answers vpcd's power
// and ATR messages, so pcscd keeps it present.
type Hostile int

const (
	// Honest is a card that behaves.
	Honest Hostile = iota
	// ChainForever answers every command, GET RESPONSE included, with
	// 255 bytes and 61FF: "more bytes remain", for ever (ISO/IEC
	// 7816-4:2020 section 5.3.4).
	ChainForever
	// Garbage answers every command with 65535 random bytes, the longest
	// message vpcd carries.
	Garbage
	// Silent never answers a command: it reads it and sends nothing, so
	// that pcscd waits until the card is removed.
	Silent
)

func (h Hostile) String() string {
	switch h {
	case Honest:
		return "honest"
	case ChainForever:
		return "61xx forever"
	case Garbage:
		return "64 KiB of garbage"
	case Silent:
		return "never answers"
	}
	return fmt.Sprintf("hostile(%d)", int(h))
}

// SetHostile switches the card to a misbehaviour (Honest ends it).
func (c *Card) SetHostile(h Hostile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hostile = h
}

// NewCard makes a factory-fresh card: PIN 123456, PUK 12345678, the
// default management key, three retries each, an attestation key
// certified by cfg.CA.
func NewCard(cfg Config) (*Card, error) {
	if cfg.CA == nil {
		return nil, errors.New("new card: no attestation ca")
	}
	if cfg.Version == "" {
		cfg.Version = DefaultVersion
	}
	if _, err := parseVersion(cfg.Version); err != nil {
		return nil, fmt.Errorf("new card: %w", err)
	}
	if cfg.StatePath != "" {
		if _, err := os.Lstat(cfg.StatePath); err == nil {
			return nil, fmt.Errorf("new card: %w: %s", ErrStateExists, cfg.StatePath)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("new card: %w", err)
		}
	}
	key, cert, err := cfg.CA.issueAttestationKey(cfg.Serial)
	if err != nil {
		return nil, fmt.Errorf("new card: attestation key: %w", err)
	}
	st, err := factoryState(cfg.Serial, cfg.Version, key, cert)
	if err != nil {
		return nil, fmt.Errorf("new card: %w", err)
	}
	st.NoAttest = cfg.NoAttestation
	c := newCard(st, cfg.StatePath)
	b, err := st.marshal()
	if err != nil {
		return nil, fmt.Errorf("new card: %w", err)
	}
	if cfg.StatePath != "" {
		if err := writeFileAtomic(cfg.StatePath, b); err != nil {
			return nil, fmt.Errorf("new card: write state: %w", err)
		}
	}
	c.saved = b
	return c, nil
}

// LoadCard loads a card from its state file; the card keeps writing its
// changes there. A damaged file gives an error wrapping ErrCorruptState.
func LoadCard(path string) (*Card, error) {
	removeStaleTemps(path)
	st, err := loadState(path)
	if err != nil {
		return nil, err
	}
	c := newCard(st, path)
	if c.saved, err = st.marshal(); err != nil {
		return nil, fmt.Errorf("load card: %w", err)
	}
	return c, nil
}

func newCard(st *state, path string) *Card {
	return &Card{path: path, app: applet{st: st, now: time.Now}}
}

// Serial is the card's serial number.
func (c *Card) Serial() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.app.st.Serial
}

// StatePath is the card's state file, or "" for a card in memory.
func (c *Card) StatePath() string { return c.path }

// Counts returns the card's counters.
func (c *Card) Counts() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.counts
	n.Touches = c.app.touches
	return n
}

// SetTrace makes the card write one line per APDU to w (nil stops it):
// the header, the data length and the status word, never the data, which
// may hold a PIN or a key.
func (c *Card) SetTrace(w io.Writer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trace = w
}

// powerCycle is power off, power on or reset: the session is forgotten.
// SetNoAttestation switches Yubico's attestation off (on false, back on):
// see Config.NoAttestation. It lets a test give a card a key made while it
// could attest, then present it as a card that cannot. The state file is
// rewritten.
func (c *Card) SetNoAttestation(off bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.app.st.NoAttest
	c.app.st.NoAttest = off
	if err := c.persist(); err != nil {
		c.app.st.NoAttest = old
		return fmt.Errorf("set attestation: %w", err)
	}
	return nil
}

// Key policies for PutKey: Yubico's PIN and touch policies (GENERATE tags
// AA and AB).
const (
	PINPolicyNever    byte = pinPolicyNever
	PINPolicyOnce     byte = pinPolicyOnce
	PINPolicyAlways   byte = pinPolicyAlways
	TouchPolicyNever  byte = touchPolicyNever
	TouchPolicyAlways byte = touchPolicyAlways
	TouchPolicyCached byte = touchPolicyCached
)

// PutKey puts a new P-256 key into a key slot (82 to 95, 9A, 9C, 9D, 9E)
// with the given policies, as whoever holds the card's management key can
// with GENERATE, or with IMPORT when imported is true (a YubiKey does not
// attest an imported key), and returns its public key. The slot's
// certificate object is left as it is. It stands in for yubico-piv-tool
// or ykman preparing a card, in tests of what custos does with keys it did
// not make. The state file is rewritten.
func (c *Card) PutKey(slot, pinPolicy, touchPolicy byte, imported bool) (*ecdsa.PublicKey, error) {
	if !isKeySlot(slot) {
		return nil, fmt.Errorf("put key: slot %02x is no key slot", slot)
	}
	if pinPolicy < pinPolicyNever || pinPolicy > pinPolicyAlways || touchPolicy < touchPolicyNever || touchPolicy > touchPolicyCached {
		return nil, fmt.Errorf("put key: policies %02x %02x", pinPolicy, touchPolicy)
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("put key: %w", err)
	}
	origin := originGenerated
	if imported {
		origin = originImported
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.app.st.Keys[slot]
	if sw := c.app.storeKey(slot, algECCP256, pinPolicy, touchPolicy, origin, priv); sw != swOK {
		return nil, fmt.Errorf("put key: status %04x", sw)
	}
	c.app.dirty = false
	if err := c.persist(); err != nil {
		if old != nil {
			c.app.st.Keys[slot] = old
		} else {
			delete(c.app.st.Keys, slot)
		}
		return nil, fmt.Errorf("put key: %w", err)
	}
	return &priv.PublicKey, nil
}

func (c *Card) powerCycle(reset bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if reset {
		c.counts.Resets++
	}
	c.app.powerCycle()
}

// transmit answers one command APDU, writing the state file when the
// command changed the card. When that write fails the change is undone
// and the answer is 6581 (memory failure). A Silent card returns nil: no
// answer at all.
func (c *Card) transmit(apdu []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts.APDUs++
	if len(apdu) >= 4 {
		c.counts.Instructions[apdu[1]]++
	}
	switch c.hostile {
	case ChainForever:
		return response(bytes.Repeat([]byte{0x5a}, 255), swBytesAvailable|0xff)
	case Garbage:
		junk := make([]byte, 0xffff)
		rand.Read(junk)
		return junk
	case Silent:
		return nil
	}
	c.app.dirty = false
	resp := c.app.process(apdu)
	if c.app.dirty {
		c.app.dirty = false
		if err := c.persist(); err != nil {
			if c.trace != nil {
				fmt.Fprintf(c.trace, "vcard %d: write state: %v\n", c.app.st.Serial, err)
			}
			if st, lerr := unmarshalState(c.saved); lerr == nil {
				c.app.st = st
			}
			c.app.s = session{}
			resp = response(nil, swMemoryFailure)
		}
	}
	if c.trace != nil {
		if len(apdu) >= 4 {
			fmt.Fprintf(c.trace, "vcard %d: %02x %02x %02x %02x lc=%d -> %d bytes %02x%02x\n",
				c.app.st.Serial, apdu[0], apdu[1], apdu[2], apdu[3], len(apdu)-4, len(resp)-2, resp[len(resp)-2], resp[len(resp)-1])
		} else {
			fmt.Fprintf(c.trace, "vcard %d: %d-byte apdu -> %02x%02x\n", c.app.st.Serial, len(apdu), resp[len(resp)-2], resp[len(resp)-1])
		}
	}
	return resp
}

func (c *Card) persist() error {
	b, err := c.app.st.marshal()
	if err != nil {
		return err
	}
	if c.path != "" {
		if err := writeFileAtomic(c.path, b); err != nil {
			return err
		}
	}
	c.saved = b
	return nil
}
