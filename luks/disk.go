package luks

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"unicode/utf8"
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
	diskSeqIDOff    = 16  // LUKS2: uint64, raised by every header write
	diskCsumAlgOff  = 72  // LUKS2: char[32], NUL-terminated
	diskSaltOff     = 104 // LUKS2: uint8[64], different in each copy
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
	// LUKS2 only: area is the primary header area (binary header and
	// JSON area, hdr_size bytes) whose checksum held; twin says that the
	// secondary copy's checksum holds too and that it is the primary's
	// twin (same sequence ID, UUID and JSON area: what cryptsetup writes
	// in one header update); devSize is the size of the file or device.
	area    []byte
	twin    bool
	devSize int64
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
	return &diskHeader{version: 2, uuid: uuid, area: b[:size]}, nil
}

// isTwin reports whether b, read where the primary header area says the
// secondary copy starts (at hdr_size), is a LUKS2 secondary header area
// whose checksum holds and which carries the same header as the primary
// area: the same version, size, sequence ID, label, checksum algorithm,
// UUID, subsystem and JSON area, byte for byte. The salt, the offset and
// the checksum differ between the copies by design (libcryptsetup
// hdr_to_disk and hdr_read_disk). The input is untrusted.
func isTwin(primary, b []byte) bool {
	size := uint64(len(primary))
	if uint64(len(b)) != size || !bytes.Equal(b[:6], magicSecondary) {
		return false
	}
	if binary.BigEndian.Uint64(b[diskHdrOffOff:]) != size {
		return false
	}
	if !bytes.Equal(b[diskVersionOff:diskSaltOff], primary[diskVersionOff:diskSaltOff]) ||
		!bytes.Equal(b[diskUUIDOff:diskHdrOffOff], primary[diskUUIDOff:diskHdrOffOff]) ||
		!bytes.Equal(b[diskBinLen:], primary[diskBinLen:]) {
		return false
	}
	return bytes.Equal(diskChecksum(b), b[diskCsumOff:diskCsumOff+sha256.Size])
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

// diskFirstRead is what readDiskHeader reads first: both copies of a
// LUKS2 header of the default (and smallest) size, so that one read
// serves the common case. Right after cryptsetup wrote the header (with
// O_DIRECT, past the page cache) each read goes to the disk.
const diskFirstRead = 2 * luks2MinHdrSize

// readDiskHeader reads and parses the primary binary header of path: the
// first 32 KiB, then the whole LUKS2 header area if the binary header
// asks for more; for a LUKS2 header whose checksum holds, also the
// secondary copy (to tell whether it is the primary's twin; within the
// first read for a 16 KiB header) and the size of the file or device.
func readDiskHeader(path string) (*diskHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, diskFirstRead)
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
		if err != nil || dh.version != 2 {
			return dh, err
		}
		size := int64(len(dh.area))
		if int64(n) >= 2*size {
			dh.twin = isTwin(dh.area, b[size:2*size])
		} else {
			second := make([]byte, size)
			if n, err := f.ReadAt(second, size); err == nil || err == io.EOF && int64(n) == size {
				dh.twin = isTwin(dh.area, second)
			}
		}
		if end, err := f.Seek(0, io.SeekEnd); err == nil {
			dh.devSize = end
		}
		return dh, nil
	}
}

// header reads the keyslots and tokens straight from the JSON area whose
// checksum parseDiskHeader verified, when that is certain to give the
// Header that cryptsetup luksDump --dump-json-metadata would: every
// condition below holds, else it returns an error wrapping
// errNotVerified and Inspect asks cryptsetup.
//
//   - The secondary copy is the primary's twin (readDiskHeader), so
//     cryptsetup, which reads both copies and follows the one with the
//     higher sequence ID, reads this JSON area whichever it follows, and
//     has no copy to repair.
//   - The JSON area holds one JSON object followed only by NUL bytes, at
//     least one (libcryptsetup validate_json_area).
//   - The text is in the form cryptsetup's JSON library (json-c) writes
//     and writes back unchanged: UTF-8, compact, without a backslash
//     escape, a member name used twice in one object, or a number other
//     than a plain integer in int64 range (checkTokenValues). The dump is
//     then this text with whitespace added, which parseMetadata removes.
//   - The top-level keyslots, tokens, segments, digests and config
//     members are objects, config.json_size is the JSON area's size and
//     the file or device holds both copies and the keyslots area
//     (config.keyslots_size), as libcryptsetup checks (LUKS2_hdr_validate,
//     device_check_size).
//   - The metadata is a plain volume's exactly as cryptsetup writes it,
//     every member known and every reference resolved (checkUnderstood):
//     stricter than LUKS2_hdr_validate, so that a header read here is one
//     cryptsetup reads too, and the same way.
//
// Headers cryptsetup writes for a plain volume meet them all; the rest
// (an online re-encryption, a detached header, a field of a later
// cryptsetup, and whatever cryptsetup would refuse) is left to
// cryptsetup.
func (dh *diskHeader) header() (*Header, error) {
	if dh.version != 2 || len(dh.area) <= diskBinLen {
		return nil, errNotVerified
	}
	if !dh.twin {
		return nil, fmt.Errorf("%w: the secondary header is not the primary's twin", errNotVerified)
	}
	area := dh.area[diskBinLen:]
	n := bytes.IndexByte(area, 0)
	if n <= 0 || slices.ContainsFunc(area[n:], func(b byte) bool { return b != 0 }) {
		return nil, fmt.Errorf("%w: json area is not one nul-terminated text", errNotVerified)
	}
	text := area[:n]
	if err := checkWritten(text); err != nil {
		return nil, fmt.Errorf("%w: %v", errNotVerified, err)
	}
	var top struct {
		Keyslots, Tokens, Segments, Digests json.RawMessage
		Config                              struct {
			JSONSize     string `json:"json_size"`
			KeyslotsSize string `json:"keyslots_size"`
		} `json:"config"`
	}
	if err := json.Unmarshal(text, &top); err != nil {
		return nil, fmt.Errorf("%w: %v", errNotVerified, err)
	}
	for _, m := range []json.RawMessage{top.Keyslots, top.Tokens, top.Segments, top.Digests} {
		if len(m) == 0 || m[0] != '{' {
			return nil, fmt.Errorf("%w: a top-level member is missing or not an object", errNotVerified)
		}
	}
	if top.Config.JSONSize != strconv.Itoa(len(area)) {
		return nil, fmt.Errorf("%w: json_size %q for a json area of %d bytes", errNotVerified, clip(top.Config.JSONSize), len(area))
	}
	ks, err := strconv.ParseInt(top.Config.KeyslotsSize, 10, 64)
	if err != nil || ks < 0 || ks > dh.devSize || dh.devSize-ks < 2*int64(len(dh.area)) {
		return nil, fmt.Errorf("%w: keyslots_size %q on a volume of %d bytes", errNotVerified, clip(top.Config.KeyslotsSize), dh.devSize)
	}
	if err := checkUnderstood(text, int64(len(dh.area)), ks); err != nil {
		return nil, fmt.Errorf("%w: %v", errNotVerified, err)
	}
	h := &Header{Version: 2, UUID: dh.uuid}
	if err := parseMetadataCompact(text, h, len(text)); err != nil { // compact: checkWritten
		return nil, fmt.Errorf("%w: %v", errNotVerified, err)
	}
	return h, nil
}

// checkWritten checks that text is JSON as json-c writes it and writes it
// back: a UTF-8 object, compact, without a backslash escape, a duplicate
// member name or a number other than a plain int64 (the form checkToken
// asks of a token, for the same reason).
func checkWritten(text []byte) error {
	if len(text) == 0 || text[0] != '{' || !utf8.Valid(text) {
		return errors.New("not a json object in utf-8")
	}
	// json.Compact checks the whole text as json.Valid does.
	var compact bytes.Buffer
	if err := json.Compact(&compact, text); err != nil {
		return errors.New("not a json object in utf-8")
	}
	if !bytes.Equal(compact.Bytes(), text) {
		return errors.New("not compact")
	}
	if bytes.IndexByte(text, '\\') >= 0 {
		return errors.New("a backslash escape")
	}
	return checkTokenValues(text)
}
