package vcard

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// stateFormat is the version of the state file layout.
const stateFormat = 1

// Factory defaults of a YubiKey 5.
var (
	defaultPIN     = []byte("123456")
	defaultPUK     = []byte("12345678")
	defaultMgmtKey = []byte{
		1, 2, 3, 4, 5, 6, 7, 8,
		1, 2, 3, 4, 5, 6, 7, 8,
		1, 2, 3, 4, 5, 6, 7, 8,
	}
)

const defaultRetries = 3

// secret is a PIN or PUK: only a salted hash is kept, with its counters.
type secret struct {
	Salt      []byte `json:"salt"`
	Hash      []byte `json:"hash"`
	Total     int    `json:"total"`
	Remaining int    `json:"remaining"`
	Default   bool   `json:"default"`
}

// slotKey is a private key in a key slot.
type slotKey struct {
	Alg         byte   `json:"alg"`
	PINPolicy   byte   `json:"pin_policy"`
	TouchPolicy byte   `json:"touch_policy"`
	Origin      byte   `json:"origin"`
	PKCS8       []byte `json:"pkcs8"`

	priv *ecdsa.PrivateKey
}

// state is everything a card keeps across power cycles; it is what the
// state file holds.
type state struct {
	Format      int               `json:"format"`
	Serial      uint32            `json:"serial"`
	Version     string            `json:"version"`
	PIN         secret            `json:"pin"`
	PUK         secret            `json:"puk"`
	MgmtAlg     byte              `json:"mgmt_alg"`
	MgmtKey     []byte            `json:"mgmt_key"`
	MgmtTouch   bool              `json:"mgmt_touch"`
	MgmtDefault bool              `json:"mgmt_default"`
	Keys        map[byte]*slotKey `json:"keys"`
	Objects     map[uint32][]byte `json:"objects"`
	AttestKey   []byte            `json:"attest_key"`
	// NoAttest makes the card a PIV card without Yubico's attestation:
	// ATTEST is an unknown instruction and 5FFF01 holds nothing.
	NoAttest bool `json:"no_attest,omitempty"`

	version [3]byte
	attest  *ecdsa.PrivateKey
}

// parseVersion reads "major.minor.patch".
func parseVersion(s string) ([3]byte, error) {
	var v [3]byte
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("%w: %q is not major.minor.patch", ErrBadVersion, s)
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 8)
		if err != nil {
			return v, fmt.Errorf("%w: %q is not major.minor.patch", ErrBadVersion, s)
		}
		v[i] = byte(n)
	}
	return v, nil
}

func versionAtLeast(v [3]byte, major, minor, patch byte) bool {
	return bytes.Compare(v[:], []byte{major, minor, patch}) >= 0
}

func newSecret(value []byte, retries int) (secret, error) {
	s := secret{Total: retries, Remaining: retries, Default: true}
	s.Salt = make([]byte, 16)
	if _, err := rand.Read(s.Salt); err != nil {
		return secret{}, err
	}
	s.Hash = hashSecret(s.Salt, pad8(value))
	return s, nil
}

func (s *secret) set(value []byte, isDefault bool) {
	rand.Read(s.Salt)
	s.Hash = hashSecret(s.Salt, pad8(value))
	s.Remaining = s.Total
	s.Default = isDefault
}

// matches compares a padded 8-byte reference value in constant time.
func (s *secret) matches(padded []byte) bool {
	return subtle.ConstantTimeCompare(hashSecret(s.Salt, padded), s.Hash) == 1
}

func hashSecret(salt, padded []byte) []byte {
	h := sha256.New()
	h.Write([]byte("custos vcard reference data\x00"))
	h.Write(salt)
	h.Write(padded)
	return h.Sum(nil)
}

// pad8 pads a PIN or PUK with 0xFF to 8 bytes, SP 800-73-4 Part 2 §2.4.3.
func pad8(v []byte) []byte {
	out := bytes.Repeat([]byte{0xff}, 8)
	copy(out, v)
	return out
}

// factoryState is a fresh card with the given serial and firmware version;
// attestKey is the card's attestation key, attestCert its certificate.
func factoryState(serial uint32, version string, attestKey *ecdsa.PrivateKey, attestCert []byte) (*state, error) {
	v, err := parseVersion(version)
	if err != nil {
		return nil, err
	}
	st := &state{
		Format:  stateFormat,
		Serial:  serial,
		Version: version,
		Keys:    map[byte]*slotKey{},
		Objects: map[uint32][]byte{},
		version: v,
		attest:  attestKey,
	}
	st.AttestKey, err = x509.MarshalPKCS8PrivateKey(attestKey)
	if err != nil {
		return nil, err
	}
	st.Objects[tagAttestCert] = certObject(attestCert)
	if err := st.factoryReset(); err != nil {
		return nil, err
	}
	return st, nil
}

// factoryReset is what RESET does: PIN, PUK and management key back to
// their defaults, every key and object gone except the attestation key and
// its certificate.
func (st *state) factoryReset() error {
	var err error
	if st.PIN, err = newSecret(defaultPIN, defaultRetries); err != nil {
		return err
	}
	if st.PUK, err = newSecret(defaultPUK, defaultRetries); err != nil {
		return err
	}
	st.MgmtAlg = alg3DES
	if versionAtLeast(st.version, 5, 7, 0) {
		st.MgmtAlg = algAES192
	}
	st.MgmtKey = append([]byte(nil), defaultMgmtKey...)
	st.MgmtTouch = false
	st.MgmtDefault = true
	st.Keys = map[byte]*slotKey{}
	attestCert := st.Objects[tagAttestCert]
	st.Objects = map[uint32][]byte{}
	if attestCert != nil {
		st.Objects[tagAttestCert] = attestCert
	}
	return nil
}

// certObject is the content of a certificate data object, SP 800-73-4
// Part 1 Appendix A Table 15: the certificate, CertInfo 0 (uncompressed)
// and an empty error detection code.
func certObject(der []byte) []byte {
	b := tlvBytes(0x70, der)
	b = appendTLV(b, 0x71, []byte{0})
	return appendTLV(b, 0xfe, nil)
}

func (st *state) marshal() ([]byte, error) {
	return json.MarshalIndent(st, "", "  ")
}

// unmarshalState decodes and checks a state file: anything inconsistent is
// an error wrapping ErrCorruptState, never a card that misbehaves later.
func unmarshalState(b []byte) (*state, error) {
	var st state
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptState, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrCorruptState)
	}
	if err := st.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptState, err)
	}
	return &st, nil
}

func (st *state) check() error {
	if st.Format != stateFormat {
		return fmt.Errorf("format %d, want %d", st.Format, stateFormat)
	}
	v, err := parseVersion(st.Version)
	if err != nil {
		return err
	}
	st.version = v
	for name, s := range map[string]*secret{"pin": &st.PIN, "puk": &st.PUK} {
		if len(s.Salt) != 16 || len(s.Hash) != sha256.Size {
			return fmt.Errorf("%s: bad salt or hash", name)
		}
		if s.Total < 1 || s.Total > 255 || s.Remaining < 0 || s.Remaining > s.Total {
			return fmt.Errorf("%s: bad retry counters %d/%d", name, s.Remaining, s.Total)
		}
	}
	if n := mgmtKeyLen(st.MgmtAlg); n == 0 || n != len(st.MgmtKey) {
		return fmt.Errorf("management key: algorithm %#x with %d bytes", st.MgmtAlg, len(st.MgmtKey))
	}
	if st.Keys == nil {
		st.Keys = map[byte]*slotKey{}
	}
	for slot, k := range st.Keys {
		if k == nil || !isKeySlot(slot) {
			return fmt.Errorf("key in slot %#x", slot)
		}
		if k.PINPolicy < pinPolicyNever || k.PINPolicy > pinPolicyAlways ||
			k.TouchPolicy < touchPolicyNever || k.TouchPolicy > touchPolicyCached ||
			(k.Origin != originGenerated && k.Origin != originImported) {
			return fmt.Errorf("slot %#x: bad policy or origin", slot)
		}
		priv, err := parseECKey(k.PKCS8)
		if err != nil {
			return fmt.Errorf("slot %#x: %v", slot, err)
		}
		if curveAlg(priv.Curve) != k.Alg {
			return fmt.Errorf("slot %#x: algorithm %#x does not match its key", slot, k.Alg)
		}
		k.priv = priv
	}
	if st.Objects == nil {
		st.Objects = map[uint32][]byte{}
	}
	for tag, obj := range st.Objects {
		if !isObjectTag(tag) {
			return fmt.Errorf("object %#x", tag)
		}
		if len(obj) > maxObjectSize {
			return fmt.Errorf("object %#x: %d bytes", tag, len(obj))
		}
	}
	st.attest, err = parseECKey(st.AttestKey)
	if err != nil {
		return fmt.Errorf("attestation key: %v", err)
	}
	return nil
}

func parseECKey(der []byte) (*ecdsa.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	priv, ok := k.(*ecdsa.PrivateKey)
	if !ok || curveAlg(priv.Curve) == 0 {
		return nil, errors.New("not a P-256 or P-384 key")
	}
	return priv, nil
}

func curveAlg(c elliptic.Curve) byte {
	switch c {
	case elliptic.P256():
		return algECCP256
	case elliptic.P384():
		return algECCP384
	}
	return 0
}

// loadState reads a state file.
func loadState(path string) (*state, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read card state: %w", err)
	}
	st, err := unmarshalState(b)
	if err != nil {
		return nil, fmt.Errorf("read card state %s: %w", path, err)
	}
	return st, nil
}

// removeStaleTemps deletes temporary files a killed writer of path left
// behind; the state file itself is always whole.
func removeStaleTemps(path string) {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp*"))
	for _, m := range matches {
		os.Remove(m)
	}
}

// writeFileAtomic replaces path with b so that a crash at any moment leaves
// either the old or the new content: write a temporary file in the same
// directory (0600), fsync it, rename it over path, fsync the directory.
func writeFileAtomic(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(b); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
