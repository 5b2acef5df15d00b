package luks

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// The binary header at the start of a LUKS volume (LUKS On-Disk Format
// Specification 1.2.3, section 2.4, "PHDR layout"; LUKS2 On-Disk Format
// Specification 1.1.x, section 2, "binary header"; libcryptsetup
// lib/luks1/luks.h struct luks_phdr and lib/luks2/luks2.h struct
// luks2_hdr_disk). All integers are big-endian. Both versions start with
// the magic and the version and keep the UUID, a NUL-terminated string,
// at the same offset.
const (
	diskVersionOff  = 6   // uint16
	diskHdrSizeOff  = 8   // LUKS2: uint64, binary header plus JSON area
	diskCsumAlgOff  = 72  // LUKS2: char[32], NUL-terminated
	diskUUIDOff     = 168 // char[40], NUL-terminated
	diskUUIDLen     = 40
	diskHdrOffOff   = 256 // LUKS2: uint64, the header's own offset (0 for the primary)
	diskCsumOff     = 448 // LUKS2: uint8[64], the checksum, zero-padded
	diskCsumLen     = 64
	diskBinLen      = 4096 // LUKS2: the binary header; the JSON area follows
	diskCsumAlgLen  = 32
	luks2MinHdrSize = 16 << 10
)

// diskHeader is what the primary binary header says, read without
// cryptsetup.
type diskHeader struct {
	version int
	// uuid is the volume's UUID; for LUKS2 only when the primary header's
	// checksum holds.
	uuid string
}

// errNotVerified: the primary binary header is not a LUKS2 header whose
// checksum holds (or not a LUKS header at all); cryptsetup must read it.
var errNotVerified = errors.New("primary luks header not verified")

// parseDiskHeader reads the primary binary header at the start of b. For
// LUKS1 it checks the magic and the version only: cryptsetup reads the
// rest. For LUKS2 it checks the magic, the version, the header's size
// and offset, and the checksum over the binary header and the whole JSON
// area (SHA-256, with the checksum field zeroed), as libcryptsetup does
// before it trusts a header copy (luks2_disk_metadata.c,
// hdr_disk_sanity_check_pre and hdr_checksum_check); b must then hold at
// least the header's size, else errShortHeader with the size needed. The
// input is untrusted.
func parseDiskHeader(b []byte) (*diskHeader, error) {
	if len(b) < 8 || !bytes.Equal(b[:6], magicPrimary) {
		return nil, errNotVerified
	}
	switch v := binary.BigEndian.Uint16(b[diskVersionOff:]); v {
	case 1:
		return &diskHeader{version: 1}, nil
	case 2:
	default:
		return nil, fmt.Errorf("%w: version %d", errNotVerified, v)
	}
	if len(b) < diskBinLen {
		return nil, &shortHeaderError{need: diskBinLen}
	}
	size := binary.BigEndian.Uint64(b[diskHdrSizeOff:])
	if !slices.Contains(secondaryOffsets, int64(size)) {
		return nil, fmt.Errorf("%w: header size %d", errNotVerified, size)
	}
	if off := binary.BigEndian.Uint64(b[diskHdrOffOff:]); off != 0 {
		return nil, fmt.Errorf("%w: primary header at offset %d", errNotVerified, off)
	}
	if uint64(len(b)) < size {
		return nil, &shortHeaderError{need: int(size)}
	}
	if alg := cString(b[diskCsumAlgOff : diskCsumAlgOff+diskCsumAlgLen]); alg != "sha256" {
		return nil, fmt.Errorf("%w: checksum algorithm %q", errNotVerified, clip(alg))
	}
	if !bytes.Equal(diskChecksum(b[:size]), b[diskCsumOff:diskCsumOff+sha256.Size]) {
		return nil, fmt.Errorf("%w: checksum mismatch", errNotVerified)
	}
	uuid := cString(b[diskUUIDOff : diskUUIDOff+diskUUIDLen])
	if !validUUID(uuid) {
		return nil, fmt.Errorf("%w: invalid uuid %q", errNotVerified, clip(uuid))
	}
	return &diskHeader{version: 2, uuid: uuid}, nil
}

// diskChecksum is the SHA-256 of a LUKS2 header area (binary header and
// JSON area) with its checksum field zeroed.
func diskChecksum(area []byte) []byte {
	h := sha256.New()
	h.Write(area[:diskCsumOff])
	h.Write(make([]byte, diskCsumLen))
	h.Write(area[diskCsumOff+diskCsumLen:])
	return h.Sum(nil)
}

// cString is the NUL-terminated string at the start of b.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// shortHeaderError: parseDiskHeader needs need bytes to decide.
type shortHeaderError struct{ need int }

func (e *shortHeaderError) Error() string {
	return fmt.Sprintf("luks header needs %d bytes", e.need)
}

// readDiskHeader reads and parses the primary binary header of path: the
// first 4 KiB, then the whole LUKS2 header area if the binary header asks
// for more.
func readDiskHeader(path string) (*diskHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, diskBinLen)
	for {
		n, err := f.ReadAt(b, 0)
		if err != nil && err != io.EOF {
			return nil, err
		}
		dh, err := parseDiskHeader(b[:n])
		var short *shortHeaderError
		if errors.As(err, &short) && n == len(b) && short.need > len(b) {
			b = make([]byte, short.need)
			continue
		}
		if short != nil {
			return nil, fmt.Errorf("%w: file ends within the header", errNotVerified)
		}
		return dh, err
	}
}
