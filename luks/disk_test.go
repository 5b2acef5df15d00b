package luks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The testdata headers were written by cryptsetup 2.6.1 luksFormat with
// --uuid: the primary LUKS2 header area (binary header and JSON area, 16
// KiB) and the first 4 KiB of a LUKS1 volume.
const (
	luks2TestUUID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
	luks1TestUUID = "11111111-2222-4333-8444-555555555555"
)

// reseal recomputes a LUKS2 header area's checksum, as cryptsetup does
// when it writes one, after a test changed a field.
func reseal(area []byte) []byte {
	area = bytes.Clone(area)
	copy(area[diskCsumOff:diskCsumOff+diskCsumLen], make([]byte, diskCsumLen))
	copy(area[diskCsumOff:], diskChecksum(area))
	return area
}

func TestParseDiskHeader(t *testing.T) {
	area := readTestdata(t, "luks2-header.bin")
	dh, err := parseDiskHeader(area)
	if err != nil || dh.version != 2 || dh.uuid != luks2TestUUID {
		t.Fatalf("luks2 header = %+v, %v", dh, err)
	}
	if !bytes.Equal(reseal(area), area) {
		t.Fatal("reseal changes a header cryptsetup wrote: the checksum is computed differently")
	}
	// More bytes than the header (the keyslots area follows) are fine.
	if dh, err := parseDiskHeader(append(bytes.Clone(area), make([]byte, 4096)...)); err != nil || dh.uuid != luks2TestUUID {
		t.Fatalf("header with the bytes after it = %+v, %v", dh, err)
	}
	dh, err = parseDiskHeader(readTestdata(t, "luks1-header.bin"))
	if err != nil || dh.version != 1 {
		t.Fatalf("luks1 header = %+v, %v", dh, err)
	}

	set := func(off int, b ...byte) []byte {
		c := bytes.Clone(area)
		copy(c[off:], b)
		return c
	}
	u64 := func(off int, n uint64) []byte {
		c := bytes.Clone(area)
		binary.BigEndian.PutUint64(c[off:], n)
		return c
	}
	for name, in := range map[string][]byte{
		"empty":                 nil,
		"zeros":                 make([]byte, 16384),
		"secondary magic":       set(0, magicSecondary...),
		"version 3":             set(diskVersionOff, 0, 3),
		"json byte changed":     set(diskBinLen+10, 'X'),
		"uuid changed":          set(diskUUIDOff, 'b'),
		"checksum changed":      set(diskCsumOff, area[diskCsumOff]^1),
		"size not allowed":      reseal(u64(diskHdrSizeOff, 20<<10)),
		"size 0":                reseal(u64(diskHdrSizeOff, 0)),
		"size huge":             reseal(u64(diskHdrSizeOff, 1<<62)),
		"offset not 0":          reseal(u64(diskHdrOffOff, 16384)),
		"checksum alg sha1":     reseal(set(diskCsumAlgOff, 's', 'h', 'a', '1', 0, 0)),
		"uuid not a uuid":       reseal(set(diskUUIDOff, '-')),
		"uuid not terminated":   reseal(set(diskUUIDOff+36, 'x', 'x', 'x', 'x')),
		"luks1 magic truncated": readTestdata(t, "luks1-header.bin")[:5],
	} {
		dh, err := parseDiskHeader(in)
		if err == nil {
			t.Errorf("%s: parsed as %+v", name, dh)
			continue
		}
		if !errors.Is(err, errNotVerified) {
			t.Errorf("%s: error %v, want errNotVerified", name, err)
		}
	}

	// Cut short, the parser asks for what it needs.
	for _, n := range []int{8, 4095, 4096, 16383} {
		_, err := parseDiskHeader(area[:n])
		var short *shortHeaderError
		if !errors.As(err, &short) || short.need <= n || short.need > 16384 {
			t.Errorf("header cut at %d: error %v, want a request for more, up to 16384 bytes", n, err)
		}
	}
}

func TestReadDiskHeader(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	area := readTestdata(t, "luks2-header.bin")
	if dh, err := readDiskHeader(write("whole", append(bytes.Clone(area), make([]byte, 1<<20)...))); err != nil || dh.uuid != luks2TestUUID {
		t.Fatalf("image = %+v, %v", dh, err)
	}
	if dh, err := readDiskHeader(write("exact", area)); err != nil || dh.uuid != luks2TestUUID {
		t.Fatalf("header alone = %+v, %v", dh, err)
	}
	for name, b := range map[string][]byte{
		"truncated in json": area[:10000],
		"truncated in bin":  area[:3000],
		"empty":             nil,
	} {
		if dh, err := readDiskHeader(write(name, b)); !errors.Is(err, errNotVerified) {
			t.Errorf("%s: %+v, %v; want errNotVerified", name, dh, err)
		}
	}
	if _, err := readDiskHeader(filepath.Join(dir, "missing")); err == nil || errors.Is(err, errNotVerified) {
		t.Errorf("missing file: %v", err)
	}
}

// FuzzParseDiskHeader: the seeds are 4 and 16 KiB, which the fuzzer's
// minimiser takes minutes over; run it with -fuzzminimizetime=0.
func FuzzParseDiskHeader(f *testing.F) {
	f.Add(readTestdata(f, "luks2-header.bin"))
	f.Add(readTestdata(f, "luks1-header.bin"))
	f.Fuzz(func(t *testing.T, b []byte) {
		dh, err := parseDiskHeader(b)
		if err != nil {
			var short *shortHeaderError
			if errors.As(err, &short) && (short.need <= len(b) || short.need > 4<<20) {
				t.Fatalf("asks for %d bytes of %d", short.need, len(b))
			}
			return
		}
		switch dh.version {
		case 1:
			if dh.uuid != "" {
				t.Fatalf("luks1 header gave a uuid: %+v", dh)
			}
		case 2:
			// Accepted: the uuid is the field at its offset, and the
			// checksum field starts with the SHA-256 of the area as it
			// is (cryptsetup compares the hash's length only).
			size := binary.BigEndian.Uint64(b[diskHdrSizeOff:])
			if !validUUID(dh.uuid) || dh.uuid != cString(b[diskUUIDOff:diskUUIDOff+diskUUIDLen]) ||
				!bytes.Equal(reseal(b[:size])[diskCsumOff:diskCsumOff+32], b[diskCsumOff:diskCsumOff+32]) {
				t.Fatalf("accepted %+v", dh)
			}
		default:
			t.Fatalf("version %d", dh.version)
		}
	})
}
