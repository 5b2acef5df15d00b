package luks

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// Volume is a LUKS1 or LUKS2 volume: a block device or an image file.
// Its methods run cryptsetup on it; the zero Cryptsetup finds cryptsetup in
// /usr/sbin, then /sbin, and only then in PATH.
type Volume struct {
	// Path is the block device or image file.
	Path string
	// Cryptsetup is the cryptsetup program; "" looks it up.
	Cryptsetup string
}

// Open returns the Volume at path, which must be a block device or a
// regular file. It does not read the header; Inspect does.
func Open(path string) (*Volume, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open volume: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("open volume: %w: %w", ErrPermission, err)
		}
		return nil, fmt.Errorf("open volume: %w", err)
	}
	if !fi.Mode().IsRegular() && fi.Mode()&fs.ModeDevice == 0 {
		return nil, fmt.Errorf("open volume %s: not a block device or regular file", abs)
	}
	return &Volume{Path: abs}, nil
}

// Inspect reads the header: version, UUID, keyslots in use and, for LUKS2,
// tokens. A damaged LUKS2 primary header is read from its secondary copy
// (cryptsetup repairs the primary from it as it reads).
func (v *Volume) Inspect(ctx context.Context) (*Header, error) {
	out, err := v.exec(ctx, run{op: "luksDump", args: []string{v.Path}})
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	h, err := parseDump(out)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", v.Path, err)
	}
	if h.Version == 1 {
		return h, nil
	}
	out, err = v.exec(ctx, run{op: "luksDump", args: []string{"--dump-json-metadata", v.Path}})
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	if err := parseMetadata(out, h); err != nil {
		return nil, fmt.Errorf("inspect %s: %w", v.Path, err)
	}
	return h, nil
}

// reread reads the keyslots and tokens again after a change to a header
// that Inspect read as before: for LUKS2 the JSON metadata alone, one
// cryptsetup run instead of two.
func (v *Volume) reread(ctx context.Context, before *Header) (*Header, error) {
	if before.Version == 1 {
		return v.Inspect(ctx)
	}
	out, err := v.exec(ctx, run{op: "luksDump", args: []string{"--dump-json-metadata", v.Path}})
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	h := &Header{Version: before.Version, UUID: before.UUID}
	if err := parseMetadata(out, h); err != nil {
		return nil, fmt.Errorf("inspect %s: %w", v.Path, err)
	}
	return h, nil
}

// PBKDF is a keyslot's key derivation setting. Zero fields keep
// cryptsetup's defaults (argon2id benchmarked to 2 s for LUKS2, pbkdf2
// benchmarked to 2 s for LUKS1).
type PBKDF struct {
	// Type is "pbkdf2", "argon2i" or "argon2id" (LUKS1: only "pbkdf2").
	Type string
	// Hash is the pbkdf2 hash, e.g. "sha256" (LUKS2 only; LUKS1 keyslots
	// use the header's hash).
	Hash string
	// Iterations fixes the cost and skips the benchmark
	// (--pbkdf-force-iterations; at least 1000 for pbkdf2, 4 for argon2).
	Iterations int
	// IterTime is the unlock time the benchmark aims at (--iter-time).
	IterTime time.Duration
	// MemoryKiB and Parallel are argon2's memory cost and threads.
	MemoryKiB, Parallel int
}

// minimalPBKDF is what AddOptions.MinimalPBKDF stands for: pbkdf2 with
// SHA-512 and 1000 iterations, no benchmark, as systemd-cryptenroll uses
// for its recovery keys (src/shared/cryptsetup-util.c,
// cryptsetup_set_minimal_pbkdf). 1000 is the least cryptsetup accepts for
// pbkdf2 (the minimum NIST SP 800-132 recommends).
var minimalPBKDF = PBKDF{Type: "pbkdf2", Hash: "sha512", Iterations: 1000}

// minimalKeyLen is the shortest key AddOptions.MinimalPBKDF accepts: 32
// bytes can carry the 256 random bits the option requires.
const minimalKeyLen = 32

// maxKeyLen is cryptsetup's default key file limit (--keyfile-size-max,
// 8192 KiB).
const maxKeyLen = 8192 << 10

// AddOptions tune AddKeyslot. The zero value fills the first free keyslot
// with cryptsetup's default PBKDF.
type AddOptions struct {
	// Slot, if not nil, is the keyslot to fill; it must be free.
	// (Go 1.26: AddOptions{Slot: new(3)}.)
	Slot *int

	// PBKDF, if not nil, replaces cryptsetup's default PBKDF settings.
	// Tests pass cheap ones; production should not.
	PBKDF *PBKDF

	// MinimalPBKDF gives the new keyslot pbkdf2 with SHA-512 and 1000
	// iterations, without a benchmark (LUKS1: pbkdf2 with the header's
	// hash, 1000 iterations). It is meant for
	// one kind of key only: a recovery key of at least 256 bits from
	// crypto/rand. A PBKDF exists to make guessing a low-entropy
	// passphrase expensive; against a uniformly random 256-bit key there
	// is nothing to guess, and no PBKDF cost changes a 2^256 search. What
	// a costly PBKDF would still do is slow every unlock with the key and,
	// for argon2, demand up to 1 GiB of memory on whatever rescue machine
	// the recovery happens on, years later. systemd-cryptenroll makes the
	// same choice for its recovery keys.
	//
	// Never set it for a passphrase a person chose: that keyslot would
	// fall to a dictionary attack. AddKeyslot refuses keys shorter than 32
	// bytes with it, which catches short passphrases but cannot check
	// entropy. Off by default; exclusive with PBKDF.
	MinimalPBKDF bool
}

// pbkdfArgs turns PBKDF settings into cryptsetup options, each as one
// --opt=value argument so no value can be read as another option.
func pbkdfArgs(p *PBKDF, version int) ([]string, error) {
	var args []string
	switch p.Type {
	case "":
	case "pbkdf2", "argon2i", "argon2id":
		if version == 1 && p.Type != "pbkdf2" {
			return nil, fmt.Errorf("luks1 keyslots support only pbkdf2, not %s", p.Type)
		}
		args = append(args, "--pbkdf="+p.Type)
	default:
		return nil, fmt.Errorf("unknown pbkdf %q", clip(p.Type))
	}
	if p.Hash != "" && version == 2 {
		if !hashName.MatchString(p.Hash) {
			return nil, fmt.Errorf("bad pbkdf hash name %q", clip(p.Hash))
		}
		args = append(args, "--hash="+p.Hash)
	}
	if p.Iterations < 0 || p.MemoryKiB < 0 || p.Parallel < 0 || p.IterTime < 0 {
		return nil, errors.New("negative pbkdf setting")
	}
	if p.Iterations > 0 {
		args = append(args, "--pbkdf-force-iterations="+strconv.Itoa(p.Iterations))
	}
	if p.IterTime > 0 {
		ms := max(1, p.IterTime.Milliseconds())
		args = append(args, "--iter-time="+strconv.FormatInt(ms, 10))
	}
	if p.MemoryKiB > 0 {
		args = append(args, "--pbkdf-memory="+strconv.Itoa(p.MemoryKiB))
	}
	if p.Parallel > 0 {
		args = append(args, "--pbkdf-parallel="+strconv.Itoa(p.Parallel))
	}
	return args, nil
}

var hashName = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

// checkKey refuses keys cryptsetup would not take as a key file.
func checkKey(name string, k []byte) error {
	switch {
	case len(k) == 0:
		return fmt.Errorf("%s is empty", name)
	case len(k) > maxKeyLen:
		return fmt.Errorf("%s is longer than cryptsetup's %d-byte key file limit", name, maxKeyLen)
	}
	return nil
}

func checkSlot(h *Header, slot int) error {
	if slot < 0 || slot >= h.MaxKeyslots() {
		return fmt.Errorf("keyslot %d out of range: luks%d has keyslots 0 to %d", slot, h.Version, h.MaxKeyslots()-1)
	}
	return nil
}

var (
	createdRE  = regexp.MustCompile(`(?m)^Key slot ([0-9]+) created\.$`)
	unlockedRE = regexp.MustCompile(`(?m)^Key slot ([0-9]+) unlocked\.$`)
)

// AddKeyslot adds newKey in a new keyslot, authorised by auth (a key that
// opens some keyslot already), and returns the new keyslot's number. Both
// keys reach cryptsetup through pipes on inherited descriptors 3 and 4
// (--key-file=/dev/fd/3, new key file /dev/fd/4), read to EOF: any bytes,
// newlines and NULs included, and never argv, the environment or a file.
// A key typed at a passphrase prompt matches a key given here only if it
// has the same bytes, without a trailing newline.
func (v *Volume) AddKeyslot(ctx context.Context, auth, newKey []byte, opts AddOptions) (int, error) {
	if err := checkKey("authorising key", auth); err != nil {
		return -1, fmt.Errorf("add keyslot: %w", err)
	}
	if err := checkKey("new key", newKey); err != nil {
		return -1, fmt.Errorf("add keyslot: %w", err)
	}
	p := opts.PBKDF
	if opts.MinimalPBKDF {
		if p != nil {
			return -1, errors.New("add keyslot: MinimalPBKDF and PBKDF are exclusive")
		}
		if len(newKey) < minimalKeyLen {
			return -1, fmt.Errorf("add keyslot: minimal pbkdf needs a random key of at least %d bytes, got %d", minimalKeyLen, len(newKey))
		}
		mp := minimalPBKDF
		p = &mp
	}

	before, err := v.Inspect(ctx)
	if err != nil {
		return -1, fmt.Errorf("add keyslot: %w", err)
	}
	args := []string{"--batch-mode", "--verbose", "--key-file=" + fdPath(firstInputFD)}
	if p != nil {
		pa, err := pbkdfArgs(p, before.Version)
		if err != nil {
			return -1, fmt.Errorf("add keyslot: %w", err)
		}
		args = append(args, pa...)
	}
	if opts.Slot != nil {
		s := *opts.Slot
		if err := checkSlot(before, s); err != nil {
			return -1, fmt.Errorf("add keyslot: %w", err)
		}
		if before.InUse(s) {
			return -1, fmt.Errorf("add keyslot %d: %w", s, ErrKeyslotInUse)
		}
		args = append(args, "--key-slot="+strconv.Itoa(s))
	} else if len(before.FreeKeyslots()) == 0 {
		return -1, fmt.Errorf("add keyslot: %w", ErrNoFreeKeyslot)
	}
	args = append(args, v.Path, fdPath(firstInputFD+1))

	out, err := v.exec(ctx, run{op: "luksAddKey", args: args, inputs: [][]byte{auth, newKey}, write: true})
	if err != nil {
		return -1, fmt.Errorf("add keyslot: %w", err)
	}
	m := createdRE.FindSubmatch(out)
	if m == nil {
		return -1, fmt.Errorf("add keyslot: cryptsetup did not say which keyslot it created")
	}
	slot, _ := strconv.Atoi(string(m[1]))
	after, err := v.reread(ctx, before)
	if err != nil {
		return -1, fmt.Errorf("add keyslot %d: re-read header: %w", slot, err)
	}
	if before.InUse(slot) || !after.InUse(slot) || (opts.Slot != nil && *opts.Slot != slot) {
		return -1, fmt.Errorf("add keyslot: header does not show keyslot %d as newly added", slot)
	}
	return slot, nil
}

// TestKey checks that key opens keyslot slot, without activating anything
// (cryptsetup open --test-passphrase --key-slot). A key that opens no
// keyslot, or another one, gives ErrWrongKey.
func (v *Volume) TestKey(ctx context.Context, key []byte, slot int) error {
	if err := checkKey("key", key); err != nil {
		return fmt.Errorf("test key: %w", err)
	}
	if slot < 0 || slot >= LUKS2Keyslots {
		return fmt.Errorf("test key: keyslot %d out of range", slot)
	}
	_, err := v.exec(ctx, run{op: "open", args: []string{
		"--test-passphrase", "--disable-external-tokens", "--batch-mode",
		"--key-slot=" + strconv.Itoa(slot), "--key-file=" + fdPath(firstInputFD), v.Path,
	}, inputs: [][]byte{key}})
	if err != nil {
		return fmt.Errorf("test key on keyslot %d: %w", slot, err)
	}
	return nil
}

// FindKeyslot returns the keyslot that key opens, or ErrWrongKey.
func (v *Volume) FindKeyslot(ctx context.Context, key []byte) (int, error) {
	if err := checkKey("key", key); err != nil {
		return -1, fmt.Errorf("find keyslot: %w", err)
	}
	out, err := v.exec(ctx, run{op: "open", args: []string{
		"--test-passphrase", "--disable-external-tokens", "--batch-mode", "--verbose",
		"--key-file=" + fdPath(firstInputFD), v.Path,
	}, inputs: [][]byte{key}})
	if err != nil {
		return -1, fmt.Errorf("find keyslot: %w", err)
	}
	m := unlockedRE.FindSubmatch(out)
	if m == nil {
		return -1, errors.New("find keyslot: cryptsetup did not say which keyslot opened")
	}
	slot, _ := strconv.Atoi(string(m[1]))
	return slot, nil
}

// KillKeyslot wipes keyslot slot. It refuses unless keep names another
// keyslot in use that auth opens, checked with TestKey right before; it
// refuses to kill the last keyslot (ErrLastKeyslot). Afterwards it re-reads
// the header and checks that slot is gone and every other keyslot is still
// there.
//
// To undo a keyslot just added (say, writing its token failed), kill it
// with keep set to the keyslot the authorising key opened.
func (v *Volume) KillKeyslot(ctx context.Context, slot, keep int, auth []byte) error {
	if err := checkKey("authorising key", auth); err != nil {
		return fmt.Errorf("kill keyslot %d: %w", slot, err)
	}
	before, err := v.Inspect(ctx)
	if err != nil {
		return fmt.Errorf("kill keyslot %d: %w", slot, err)
	}
	if err := checkSlot(before, slot); err != nil {
		return fmt.Errorf("kill keyslot: %w", err)
	}
	if !before.InUse(slot) {
		return fmt.Errorf("kill keyslot %d: %w", slot, ErrKeyslotInactive)
	}
	if len(before.Keyslots) < 2 {
		return fmt.Errorf("kill keyslot %d: %w", slot, ErrLastKeyslot)
	}
	if keep == slot {
		return fmt.Errorf("kill keyslot %d: the keyslot to keep must be another one", slot)
	}
	if err := checkSlot(before, keep); err != nil {
		return fmt.Errorf("kill keyslot %d: keyslot to keep: %w", slot, err)
	}
	if !before.InUse(keep) {
		return fmt.Errorf("kill keyslot %d: keyslot %d to keep: %w", slot, keep, ErrKeyslotInactive)
	}
	if err := v.TestKey(ctx, auth, keep); err != nil {
		return fmt.Errorf("kill keyslot %d: the key does not open keyslot %d to keep: %w", slot, keep, err)
	}
	_, err = v.exec(ctx, run{op: "luksKillSlot", args: []string{
		"--batch-mode", "--key-file=" + fdPath(firstInputFD), v.Path, strconv.Itoa(slot),
	}, inputs: [][]byte{auth}, write: true})
	if err != nil {
		return fmt.Errorf("kill keyslot %d: %w", slot, err)
	}
	after, err := v.reread(ctx, before)
	if err != nil {
		return fmt.Errorf("kill keyslot %d: re-read header: %w", slot, err)
	}
	var want []int
	for _, k := range before.Keyslots {
		if k.ID != slot {
			want = append(want, k.ID)
		}
	}
	var got []int
	for _, k := range after.Keyslots {
		got = append(got, k.ID)
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("kill keyslot %d: header shows keyslots %v afterwards, want %v", slot, got, want)
	}
	return nil
}
