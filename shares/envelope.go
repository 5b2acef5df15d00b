package shares

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// CeremonyID names one key ceremony: 128 random bits.
type CeremonyID [16]byte

// NewCeremonyID returns a fresh random ceremony ID.
func NewCeremonyID() CeremonyID {
	var id CeremonyID
	rand.Read(id[:]) // never fails since Go 1.24
	return id
}

// String returns the ID as 32 lower-case hex digits.
func (id CeremonyID) String() string { return hex.EncodeToString(id[:]) }

// MarshalText implements encoding.TextMarshaler (32 hex digits).
func (id CeremonyID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *CeremonyID) UnmarshalText(b []byte) error {
	v, err := ParseCeremonyID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseCeremonyID reads 32 hex digits.
func ParseCeremonyID(s string) (CeremonyID, error) {
	var id CeremonyID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("ceremony id %q: want 32 hex digits: %w", s, ErrOutOfRange)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("ceremony id %q: not hex", s)
	}
	return id, nil
}

// VolumeID is a LUKS volume's UUID as 16 bytes.
type VolumeID [16]byte

// ParseVolumeID reads a UUID in its usual text form
// (8-4-4-4-12 hex digits), as cryptsetup prints it.
func ParseVolumeID(s string) (VolumeID, error) {
	var v VolumeID
	h := strings.ReplaceAll(s, "-", "")
	if len(s) != 36 || len(h) != 32 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return v, fmt.Errorf("volume uuid %q: not of the form 8-4-4-4-12", s)
	}
	if _, err := hex.Decode(v[:], []byte(h)); err != nil {
		return v, fmt.Errorf("volume uuid %q: not hex", s)
	}
	return v, nil
}

// String returns the UUID in its usual text form, lower case.
func (v VolumeID) String() string {
	h := hex.EncodeToString(v[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// MarshalText implements encoding.TextMarshaler.
func (v VolumeID) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (v *VolumeID) UnmarshalText(b []byte) error {
	p, err := ParseVolumeID(string(b))
	if err != nil {
		return err
	}
	*v = p
	return nil
}

// Header is the public part of a share: which ceremony and volume it
// belongs to, its index and the quorum it is part of.
type Header struct {
	Ceremony CeremonyID
	Volume   VolumeID
	Index    int // 1..N, never 0
	K, N     int // 2 ≤ K ≤ N ≤ 255
}

// Share is one Shamir share with its header. Value is the share as
// hashicorp/vault/shamir makes it: one y byte per byte of the secret, then
// the x coordinate.
type Share struct {
	Header
	Value []byte
}

// Wipe zeroes the share's value.
func (s *Share) Wipe() {
	if s != nil {
		Wipe(s.Value)
	}
}

const (
	shareMagic   = "CSH"
	sealedMagic  = "CSS"
	formatV1     = 1
	headerSize   = 3 + 1 + 16 + 16 + 1 + 1 + 1 // magic, version, ceremony, volume, index, k, n
	maxValueSize = 256                         // a 255-byte secret plus its x coordinate
	minValueSize = 2                           // a 1-byte secret plus its x coordinate
)

func (h *Header) check() error {
	if h.K < 2 || h.K > 255 {
		return fmt.Errorf("threshold k = %d: want 2..255: %w", h.K, ErrOutOfRange)
	}
	if h.N < h.K || h.N > 255 {
		return fmt.Errorf("count n = %d: want k..255 (k = %d): %w", h.N, h.K, ErrOutOfRange)
	}
	if h.Index < 1 || h.Index > h.N {
		return fmt.Errorf("index %d: want 1..%d: %w", h.Index, h.N, ErrOutOfRange)
	}
	return nil
}

// appendHeader writes magic, version and the header fields.
func (h *Header) appendHeader(b []byte, magic string) []byte {
	b = append(b, magic...)
	b = append(b, formatV1)
	b = append(b, h.Ceremony[:]...)
	b = append(b, h.Volume[:]...)
	return append(b, byte(h.Index), byte(h.K), byte(h.N))
}

// parseHeader reads what appendHeader writes and checks the ranges.
func parseHeader(b []byte, magic string) (Header, error) {
	var h Header
	if len(b) < 4 {
		return h, fmt.Errorf("header: %w", ErrTruncated)
	}
	if string(b[:3]) != magic {
		return h, fmt.Errorf("header: magic %q: %w", b[:3], ErrUnknownFormat)
	}
	if b[3] != formatV1 {
		return h, fmt.Errorf("header: version %d: %w", b[3], ErrUnknownFormat)
	}
	if len(b) < headerSize {
		return h, fmt.Errorf("header: %w", ErrTruncated)
	}
	copy(h.Ceremony[:], b[4:20])
	copy(h.Volume[:], b[20:36])
	h.Index, h.K, h.N = int(b[36]), int(b[37]), int(b[38])
	if err := h.check(); err != nil {
		return h, fmt.Errorf("header: %w", err)
	}
	return h, nil
}

func checkValue(v []byte) error {
	if len(v) < minValueSize || len(v) > maxValueSize {
		return fmt.Errorf("share value of %d bytes: want %d..%d: %w", len(v), minValueSize, maxValueSize, ErrOutOfRange)
	}
	if v[len(v)-1] == 0 {
		return ErrForgedShare
	}
	return nil
}

// MarshalBinary encodes the share as docs/FORMAT.md's share envelope.
func (s *Share) MarshalBinary() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("encode share: %w", err)
	}
	if err := checkValue(s.Value); err != nil {
		return nil, fmt.Errorf("encode share: %w", err)
	}
	b := make([]byte, 0, headerSize+2+len(s.Value))
	b = s.appendHeader(b, shareMagic)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.Value)))
	return append(b, s.Value...), nil
}

// ParseShare decodes a share envelope. It never panics on any input, and
// rejects truncation, trailing bytes, unknown versions, and index, k, n or
// length out of range.
func ParseShare(b []byte) (*Share, error) {
	h, err := parseHeader(b, shareMagic)
	if err != nil {
		return nil, fmt.Errorf("decode share: %w", err)
	}
	v, rest, err := readValue(b[headerSize:])
	if err != nil {
		return nil, fmt.Errorf("decode share %d: %w", h.Index, err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("decode share %d: %d byte(s) after the share: %w", h.Index, len(rest), ErrTrailingBytes)
	}
	if err := checkValue(v); err != nil {
		return nil, fmt.Errorf("decode share %d: %w", h.Index, err)
	}
	return &Share{Header: h, Value: append([]byte(nil), v...)}, nil
}

// readValue reads a 2-byte big-endian length and that many bytes.
func readValue(b []byte) (v, rest []byte, err error) {
	if len(b) < 2 {
		return nil, nil, ErrTruncated
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b)-2 < n {
		return nil, nil, ErrTruncated
	}
	return b[2 : 2+n], b[2+n:], nil
}
