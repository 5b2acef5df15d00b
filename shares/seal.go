package shares

import (
	"crypto"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// Fingerprint identifies a public key: the SHA-256 of its DER
// SubjectPublicKeyInfo. It is how a sealed share names its recipient and how
// the log names a card's key.
type Fingerprint [32]byte

// FingerprintOf computes the fingerprint of a public key of any type
// crypto/x509 can marshal (*ecdsa.PublicKey, *ecdh.PublicKey, ...).
func FingerprintOf(pub crypto.PublicKey) (Fingerprint, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Fingerprint{}, fmt.Errorf("fingerprint: %w", err)
	}
	return sha256.Sum256(der), nil
}

func (f Fingerprint) String() string { return hex.EncodeToString(f[:]) }

// MarshalText implements encoding.TextMarshaler (64 hex digits).
func (f Fingerprint) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (f *Fingerprint) UnmarshalText(b []byte) error {
	return unhex32((*[32]byte)(f), b, "fingerprint")
}

// SealedShare is a share encrypted to one P-256 public key. Everything in
// it is public; only the holder of the recipient's private key opens it.
type SealedShare struct {
	Header
	Recipient  Fingerprint
	Ephemeral  []byte // the ephemeral P-256 public key, uncompressed (65 bytes)
	Ciphertext []byte // the share value sealed with ChaCha20-Poly1305
}

const (
	p256PointSize = 65
	sealInfo      = "custos sealed share v1"
)

// Seal encrypts a share to a P-256 public key: an ephemeral ECDH key
// agreement, HKDF-SHA256 and ChaCha20-Poly1305, with the share's header and
// the recipient's fingerprint as associated data (docs/FORMAT.md).
func Seal(s *Share, recipient *ecdh.PublicKey) (*SealedShare, error) {
	// crypto/rand.Reader, never nil: under GODEBUG=cryptocustomrand=1 the
	// reader given is used, and nil would crash.
	eph, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("seal share %d: %w", s.Index, err)
	}
	return seal(s, recipient, eph)
}

// sealable checks a share and its recipient before either seal sends a
// byte of it anywhere, and returns the recipient's fingerprint.
func sealable(s *Share, recipient *ecdh.PublicKey) (Fingerprint, error) {
	if err := s.check(); err != nil {
		return Fingerprint{}, fmt.Errorf("seal share: %w", err)
	}
	if err := checkValue(s.Value); err != nil {
		return Fingerprint{}, fmt.Errorf("seal share %d: %w", s.Index, err)
	}
	if recipient.Curve() != ecdh.P256() {
		return Fingerprint{}, fmt.Errorf("seal share %d: recipient key is not P-256", s.Index)
	}
	fp, err := FingerprintOf(recipient)
	if err != nil {
		return Fingerprint{}, fmt.Errorf("seal share %d: %w", s.Index, err)
	}
	return fp, nil
}

// seal is Seal with the ephemeral key given, for the format vectors.
func seal(s *Share, recipient *ecdh.PublicKey, eph *ecdh.PrivateKey) (*SealedShare, error) {
	fp, err := sealable(s, recipient)
	if err != nil {
		return nil, err
	}
	shared, err := eph.ECDH(recipient)
	if err != nil {
		return nil, fmt.Errorf("seal share %d: %w", s.Index, err)
	}
	defer Wipe(shared)
	return sealShared(s, recipient, fp, eph, shared)
}

// sealShared is seal with the key agreement's result given.
func sealShared(s *Share, recipient *ecdh.PublicKey, fp Fingerprint, eph *ecdh.PrivateKey, shared []byte) (*SealedShare, error) {
	out := &SealedShare{Header: s.Header, Recipient: fp, Ephemeral: eph.PublicKey().Bytes()}
	aead, err := sealAEAD(shared, out.Ephemeral, recipient.Bytes())
	if err != nil {
		return nil, fmt.Errorf("seal share %d: %w", s.Index, err)
	}
	out.Ciphertext = aead.Seal(nil, make([]byte, chacha20poly1305.NonceSize), s.Value, out.associatedData())
	return out, nil
}

// Open decrypts a sealed share. recipient is the public key the share is
// expected to be sealed to; it is checked against the sealed share's
// fingerprint before agree is called, so a card is never asked for its PIN
// for a share that is not its own. agree performs the ECDH with the
// recipient's private key and the given ephemeral public key and returns
// the shared secret (a card does this; Open wipes it after use).
func Open(s *SealedShare, recipient *ecdh.PublicKey, agree func(ephemeral *ecdh.PublicKey) ([]byte, error)) (*Share, error) {
	fp, err := FingerprintOf(recipient)
	if err != nil {
		return nil, fmt.Errorf("open share %d: %w", s.Index, err)
	}
	if fp != s.Recipient {
		return nil, fmt.Errorf("open share %d: %w", s.Index, ErrWrongRecipient)
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("open share: %w", err)
	}
	eph, err := ecdh.P256().NewPublicKey(s.Ephemeral)
	if err != nil {
		return nil, fmt.Errorf("open share %d: ephemeral key: %w", s.Index, ErrUnsealFailed)
	}
	shared, err := agree(eph)
	if err != nil {
		return nil, fmt.Errorf("open share %d: key agreement: %w", s.Index, err)
	}
	defer Wipe(shared)
	aead, err := sealAEAD(shared, s.Ephemeral, recipient.Bytes())
	if err != nil {
		return nil, fmt.Errorf("open share %d: %w", s.Index, err)
	}
	value, err := aead.Open(nil, make([]byte, chacha20poly1305.NonceSize), s.Ciphertext, s.associatedData())
	if err != nil {
		return nil, fmt.Errorf("open share %d: %w", s.Index, ErrUnsealFailed)
	}
	if err := checkValue(value); err != nil {
		Wipe(value)
		return nil, fmt.Errorf("open share %d: %w", s.Index, err)
	}
	return &Share{Header: s.Header, Value: value}, nil
}

// sealAEAD derives the key: HKDF-SHA256 with the shared secret as input
// key material, ephemeral ‖ recipient public keys as salt.
func sealAEAD(shared, ephemeral, recipient []byte) (interface {
	Seal(dst, nonce, plaintext, ad []byte) []byte
	Open(dst, nonce, ciphertext, ad []byte) ([]byte, error)
}, error) {
	salt := make([]byte, 0, len(ephemeral)+len(recipient))
	salt = append(append(salt, ephemeral...), recipient...)
	key, err := hkdf.Key(sha256.New, shared, salt, sealInfo, chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	defer Wipe(key)
	return chacha20poly1305.New(key)
}

// associatedData is the sealed share's encoding up to its ciphertext:
// magic, version, header, recipient fingerprint, ephemeral key.
func (s *SealedShare) associatedData() []byte {
	b := make([]byte, 0, headerSize+32+len(s.Ephemeral))
	b = s.appendHeader(b, sealedMagic)
	b = append(b, s.Recipient[:]...)
	return append(b, s.Ephemeral...)
}

// MarshalBinary encodes the sealed share as docs/FORMAT.md says.
func (s *SealedShare) MarshalBinary() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("encode sealed share: %w", err)
	}
	if len(s.Ephemeral) != p256PointSize {
		return nil, fmt.Errorf("encode sealed share %d: ephemeral key of %d bytes: %w", s.Index, len(s.Ephemeral), ErrOutOfRange)
	}
	if n := len(s.Ciphertext) - chacha20poly1305.Overhead; n < minValueSize || n > maxValueSize {
		return nil, fmt.Errorf("encode sealed share %d: ciphertext of %d bytes: %w", s.Index, len(s.Ciphertext), ErrOutOfRange)
	}
	b := s.associatedData()
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.Ciphertext)))
	return append(b, s.Ciphertext...), nil
}

// ParseSealedShare decodes a sealed share. It never panics on any input and
// rejects truncation, trailing bytes, unknown versions and out-of-range
// fields; it does not (cannot) tell whether the ciphertext is genuine: Open
// does.
func ParseSealedShare(b []byte) (*SealedShare, error) {
	h, err := parseHeader(b, sealedMagic)
	if err != nil {
		return nil, fmt.Errorf("decode sealed share: %w", err)
	}
	rest := b[headerSize:]
	if len(rest) < 32+p256PointSize {
		return nil, fmt.Errorf("decode sealed share %d: %w", h.Index, ErrTruncated)
	}
	s := &SealedShare{Header: h}
	copy(s.Recipient[:], rest[:32])
	s.Ephemeral = append([]byte(nil), rest[32:32+p256PointSize]...)
	if s.Ephemeral[0] != 4 {
		return nil, fmt.Errorf("decode sealed share %d: ephemeral key not an uncompressed point: %w", h.Index, ErrOutOfRange)
	}
	ct, rest, err := readValue(rest[32+p256PointSize:])
	if err != nil {
		return nil, fmt.Errorf("decode sealed share %d: %w", h.Index, err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("decode sealed share %d: %d byte(s) after the share: %w", h.Index, len(rest), ErrTrailingBytes)
	}
	if n := len(ct) - chacha20poly1305.Overhead; n < minValueSize || n > maxValueSize {
		return nil, fmt.Errorf("decode sealed share %d: ciphertext of %d bytes: %w", h.Index, len(ct), ErrOutOfRange)
	}
	s.Ciphertext = append([]byte(nil), ct...)
	return s, nil
}
