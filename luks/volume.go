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
	"sync"
	"time"
)

// Volume is a LUKS1 or LUKS2 volume: a block device or an image file.
// Its methods run cryptsetup on it; the zero Cryptsetup finds cryptsetup in
// /usr/sbin or /sbin, else in PATH.
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
// tokens. For LUKS2 it reads the header itself when both copies' checksums
// hold, the copies are twins and the JSON area is in the form cryptsetup
// writes (diskHeader.header lists the conditions): then it runs nothing,
// and gives the Header cryptsetup's dump would. Otherwise it asks
// cryptsetup: with the primary's checksum holding, luksDump
// --dump-json-metadata for the keyslots and tokens, the version and UUID
// coming from the binary header; with the primary's checksum failing, or
// no LUKS header, or LUKS1, luksDump first, as cryptsetup reads a damaged
// LUKS2 primary from its secondary copy (and repairs the primary from it
// as it reads) and says what is wrong with the others: two runs for
// LUKS2.
//
// Every change this package makes takes the Header read for the step and
// returns the Header after the change: a ceremony step reads the header
// once.
//
// # Caveats
//
//   - When cryptsetup reads the keyslots, the UUID and the keyslots come
//     from two reads, the binary header's and cryptsetup's: a process
//     changing the UUID (cryptsetup luksUUID --uuid) in between would not
//     be seen. Keyslots and tokens are read in one run.
//   - Read without cryptsetup, a header is taken only in the form
//     cryptsetup writes for a plain volume, every member known (see
//     diskHeader.header); anything else, including what cryptsetup's own
//     checks refuse, is cryptsetup's to read or refuse.
func (v *Volume) Inspect(ctx context.Context) (*Header, error) {
	if dh, err := readDiskHeader(v.Path); err == nil && dh.version == 2 {
		if h, err := dh.header(); err == nil {
			return h, nil
		}
		h := &Header{Version: 2, UUID: dh.uuid}
		if err := v.readMetadata(ctx, h); err != nil {
			return nil, err
		}
		return h, nil
	}
	return v.inspectCryptsetup(ctx)
}

// inspectCryptsetup is Inspect by cryptsetup alone: luksDump, and for
// LUKS2 luksDump --dump-json-metadata.
func (v *Volume) inspectCryptsetup(ctx context.Context) (*Header, error) {
	out, err := v.exec(ctx, run{op: "luksDump", args: []string{v.Path}})
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	h, err := parseDump(out)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", v.Path, err)
	}
	if h.Version == 2 {
		if err := v.readMetadata(ctx, h); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// readMetadata reads a LUKS2 header's keyslots and tokens into h.
func (v *Volume) readMetadata(ctx context.Context, h *Header) error {
	out, err := v.exec(ctx, run{op: "luksDump", args: []string{"--dump-json-metadata", v.Path}})
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	if err := parseMetadata(out, h); err != nil {
		return fmt.Errorf("inspect %s: %w", v.Path, err)
	}
	return nil
}

// checkHeader refuses a header that Inspect cannot have returned.
func checkHeader(h *Header) error {
	if h == nil {
		return errors.New("no header: pass the header Inspect read for this step")
	}
	if h.Version != 1 && h.Version != 2 || !validUUID(h.UUID) {
		return fmt.Errorf("header of version %d, uuid %q: not one Inspect read", h.Version, clip(h.UUID))
	}
	return nil
}

// keyslotChange compares the keyslots of after with those of before plus
// added (-1: none) and minus killed (-1: none), by number and salt, and
// describes the difference, or returns "" when there is none.
func keyslotChange(before, after *Header, added, killed int) string {
	if after.UUID != before.UUID {
		return fmt.Sprintf("volume uuid %s, was %s", after.UUID, before.UUID)
	}
	var want, got []string
	for _, k := range before.Keyslots {
		if k.ID != killed {
			want = append(want, fmt.Sprintf("%d/%s", k.ID, k.Salt))
		}
	}
	for _, k := range after.Keyslots {
		if k.ID == added && !before.InUse(added) {
			continue
		}
		got = append(got, fmt.Sprintf("%d/%s", k.ID, k.Salt))
	}
	if added >= 0 && after.Keyslot(added) == nil {
		return fmt.Sprintf("keyslot %d is not there", added)
	}
	if !slices.Equal(got, want) {
		return fmt.Sprintf("keyslots %v (number/salt), want %v", got, want)
	}
	return ""
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

	// AuthSlot, if not nil, is the keyslot the authorising key opens: it
	// is tried on that keyslot alone, one PBKDF, and a key that does not
	// open it gives ErrWrongKey. Without it cryptsetup tries the key on
	// every keyslot in turn until one opens, one PBKDF each (up to 2 s
	// and 1 GiB apiece with argon2id). A caller that has just recovered a
	// key for a known keyslot passes that keyslot here instead of calling
	// TestKey first: the key is then tested once. luksAddKey then needs
	// the new keyslot named: without Slot it is the first free one in the
	// header passed.
	AuthSlot *int

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
		if !hashName().MatchString(p.Hash) {
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

var hashName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9_-]{1,32}$`) })

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

// cryptsetup's --verbose lines naming a keyslot, compiled when first
// used: a command that runs no cryptsetup does not pay for them at start.
var (
	createdRE  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?m)^Key slot ([0-9]+) created\.$`) })
	unlockedRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?m)^Key slot ([0-9]+) unlocked\.$`) })
)

// AddKeyslot adds newKey in a new keyslot, authorised by auth (a key that
// opens some keyslot already), and returns the new keyslot, with its salt,
// and the header after the change.
//
// h is the header read for this step (by Inspect, or returned by the
// previous change): AddKeyslot checks the keyslots asked for against it
// instead of reading the header again. Afterwards it reads the header once
// and checks that it shows the new keyslot and every keyslot of h with its
// salt, and nothing else; a difference gives ErrHeaderChanged.
//
// Both keys reach cryptsetup through pipes on inherited descriptors 3 and
// 4 (--key-file=/dev/fd/3, new key file /dev/fd/4), read to EOF: any
// bytes, newlines and NULs included, and never argv, the environment or a
// file. A key typed at a passphrase prompt matches a key given here only
// if it has the same bytes, without a trailing newline.
//
// On an error the returned Keyslot's ID is -1, unless cryptsetup added the
// keyslot: then it is the new keyslot's number (with its salt when the
// header could be read after), so that the caller can undo it.
//
// # Caveats
//
//   - Another process can change the header between the caller's read and
//     luksAddKey: a keyslot asked for that is taken by then makes
//     cryptsetup refuse (ErrKeyslotInUse); any other change shows
//     afterwards as ErrHeaderChanged, with the keyslot added.
//   - AddOptions.AuthSlot needs cryptsetup 2.6 or later (luksAddKey
//     --new-key-slot); with an older one the key is tested on that keyslot
//     with TestKey first, then luksAddKey unlocks with any keyslot.
func (v *Volume) AddKeyslot(ctx context.Context, h *Header, auth, newKey []byte, opts AddOptions) (Keyslot, *Header, error) {
	none := Keyslot{ID: -1}
	if err := checkHeader(h); err != nil {
		return none, nil, fmt.Errorf("add keyslot: %w", err)
	}
	if err := checkKey("authorising key", auth); err != nil {
		return none, nil, fmt.Errorf("add keyslot: %w", err)
	}
	if err := checkKey("new key", newKey); err != nil {
		return none, nil, fmt.Errorf("add keyslot: %w", err)
	}
	p := opts.PBKDF
	if opts.MinimalPBKDF {
		if p != nil {
			return none, nil, errors.New("add keyslot: MinimalPBKDF and PBKDF are exclusive")
		}
		if len(newKey) < minimalKeyLen {
			return none, nil, fmt.Errorf("add keyslot: minimal pbkdf needs a random key of at least %d bytes, got %d", minimalKeyLen, len(newKey))
		}
		mp := minimalPBKDF
		p = &mp
	}
	args := []string{"--batch-mode", "--verbose", "--key-file=" + fdPath(firstInputFD)}
	if p != nil {
		pa, err := pbkdfArgs(p, h.Version)
		if err != nil {
			return none, nil, fmt.Errorf("add keyslot: %w", err)
		}
		args = append(args, pa...)
	}
	newSlot := -1 // cryptsetup takes the first free keyslot
	if opts.Slot != nil {
		newSlot = *opts.Slot
		if err := checkSlot(h, newSlot); err != nil {
			return none, nil, fmt.Errorf("add keyslot: %w", err)
		}
		if h.InUse(newSlot) {
			return none, nil, fmt.Errorf("add keyslot %d: %w", newSlot, ErrKeyslotInUse)
		}
	} else if len(h.FreeKeyslots()) == 0 {
		return none, nil, fmt.Errorf("add keyslot: %w", ErrNoFreeKeyslot)
	}
	authSlot := -1
	if opts.AuthSlot != nil {
		authSlot = *opts.AuthSlot
		if err := checkSlot(h, authSlot); err != nil {
			return none, nil, fmt.Errorf("add keyslot: authorising keyslot: %w", err)
		}
		if !h.InUse(authSlot) {
			return none, nil, fmt.Errorf("add keyslot: authorising keyslot %d: %w", authSlot, ErrKeyslotInactive)
		}
		if newSlot < 0 {
			newSlot = h.FreeKeyslots()[0]
		}
	}
	target := []string{v.Path, fdPath(firstInputFD + 1)}
	add := func(slotArgs ...string) ([]byte, error) {
		a := append(append(slices.Clone(args), slotArgs...), target...)
		return v.exec(ctx, run{op: "luksAddKey", args: a, inputs: [][]byte{auth, newKey}, write: true})
	}
	var out []byte
	var err error
	switch {
	case authSlot >= 0:
		// Unlock with that keyslot alone (cryptsetup-luksAddKey(8),
		// --key-slot with --new-key-slot): the key costs one PBKDF, on
		// the keyslot it is meant for, instead of one for every keyslot
		// tried before it.
		out, err = add("--key-slot="+strconv.Itoa(authSlot), "--new-key-slot="+strconv.Itoa(newSlot))
		if errors.Is(err, errUnknownOption) {
			if err := v.TestKey(ctx, auth, authSlot); err != nil {
				return none, nil, fmt.Errorf("add keyslot: authorising keyslot: %w", err)
			}
			out, err = add("--key-slot=" + strconv.Itoa(newSlot))
		}
	case newSlot >= 0:
		out, err = add("--key-slot=" + strconv.Itoa(newSlot))
	default:
		out, err = add()
	}
	if err != nil {
		return none, nil, fmt.Errorf("add keyslot: %w", err)
	}
	m := createdRE().FindSubmatch(out)
	if m == nil {
		return none, nil, fmt.Errorf("add keyslot: cryptsetup did not say which keyslot it created")
	}
	slot, _ := strconv.Atoi(string(m[1]))
	added := Keyslot{ID: slot}
	after, err := v.Inspect(ctx)
	if err != nil {
		return added, nil, fmt.Errorf("add keyslot %d: re-read header: %w", slot, err)
	}
	if k := after.Keyslot(slot); k != nil {
		added = *k
	}
	if newSlot >= 0 && slot != newSlot {
		return added, after, fmt.Errorf("add keyslot: cryptsetup created keyslot %d, not %d", slot, newSlot)
	}
	if d := keyslotChange(h, after, slot, -1); d != "" || h.InUse(slot) {
		if d == "" {
			d = fmt.Sprintf("keyslot %d was in use before", slot)
		}
		return added, after, fmt.Errorf("add keyslot %d: %w: %s", slot, ErrHeaderChanged, d)
	}
	return added, after, nil
}

// TestKey checks that key opens keyslot slot, without activating anything
// (cryptsetup open --test-passphrase --key-slot): one PBKDF, on that
// keyslot alone. A key that opens no keyslot, or another one, gives
// ErrWrongKey. It does not read the header.
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

// FindKeyslot returns the keyslot that key opens, or ErrWrongKey. It tries
// the keyslots in cryptsetup's order, one PBKDF each until one opens, and
// does not read the header.
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
	m := unlockedRE().FindSubmatch(out)
	if m == nil {
		return -1, errors.New("find keyslot: cryptsetup did not say which keyslot opened")
	}
	slot, _ := strconv.Atoi(string(m[1]))
	return slot, nil
}

// KillKeyslot wipes keyslot slot and returns the header after the change.
//
// h is the header read for this step. KillKeyslot refuses, on h, unless
// keep names another keyslot in use (keep == slot gives
// ErrAuthorisingKeyslot: the keyslot the authorising key opens is never
// killed); it refuses to kill the last keyslot (ErrLastKeyslot) and a
// keyslot that a token of another program is bound to
// (ErrBoundToForeignToken: systemd-cryptenroll's TPM2 and FIDO2 keyslots
// let a machine boot unattended). Then it checks with TestKey that auth
// opens keep, right before luksKillSlot, and afterwards it reads the
// header once and checks that slot is gone and every other keyslot of h is
// still there with its salt (else ErrHeaderChanged).
//
// luksKillSlot runs in batch mode without a key (cryptsetup-luksKillSlot(8):
// "Except running in batch-mode (-q) a remaining passphrase must be
// supplied"): TestKey has proven the key on keep; cryptsetup would try it
// again on every other keyslot in turn, one PBKDF each.
//
// To undo a keyslot just added (say, writing its token failed), kill it
// with keep set to the keyslot the authorising key opened.
//
// # Caveats
//
//   - Another process can change the header between the caller's read and
//     the kill: the refusals above are decided on h. The keyslot killed is
//     the one with number slot then, whatever it holds; a change shows
//     afterwards as ErrHeaderChanged. Callers that must kill a particular
//     key compare its salt in h right before (as escrow does).
func (v *Volume) KillKeyslot(ctx context.Context, h *Header, slot, keep int, auth []byte) (*Header, error) {
	if err := checkHeader(h); err != nil {
		return nil, fmt.Errorf("kill keyslot %d: %w", slot, err)
	}
	if err := checkKey("authorising key", auth); err != nil {
		return nil, fmt.Errorf("kill keyslot %d: %w", slot, err)
	}
	if err := checkSlot(h, slot); err != nil {
		return nil, fmt.Errorf("kill keyslot: %w", err)
	}
	if !h.InUse(slot) {
		return nil, fmt.Errorf("kill keyslot %d: %w", slot, ErrKeyslotInactive)
	}
	if len(h.Keyslots) < 2 {
		return nil, fmt.Errorf("kill keyslot %d: %w", slot, ErrLastKeyslot)
	}
	if keep == slot {
		return nil, fmt.Errorf("kill keyslot %d: the keyslot to keep must be another one: %w", slot, ErrAuthorisingKeyslot)
	}
	if err := checkSlot(h, keep); err != nil {
		return nil, fmt.Errorf("kill keyslot %d: keyslot to keep: %w", slot, err)
	}
	if !h.InUse(keep) {
		return nil, fmt.Errorf("kill keyslot %d: keyslot %d to keep: %w", slot, keep, ErrKeyslotInactive)
	}
	for _, t := range h.Tokens {
		if t.Type != TokenType && slices.Contains(t.Keyslots, slot) {
			return nil, fmt.Errorf("kill keyslot %d: token %d of type %q: %w", slot, t.ID, clip(t.Type), ErrBoundToForeignToken)
		}
	}
	if err := v.TestKey(ctx, auth, keep); err != nil {
		return nil, fmt.Errorf("kill keyslot %d: the key does not open keyslot %d to keep: %w", slot, keep, err)
	}
	_, err := v.exec(ctx, run{op: "luksKillSlot", args: []string{
		"--batch-mode", v.Path, strconv.Itoa(slot),
	}, write: true})
	if err != nil {
		return nil, fmt.Errorf("kill keyslot %d: %w", slot, err)
	}
	after, err := v.Inspect(ctx)
	if err != nil {
		return nil, fmt.Errorf("kill keyslot %d: re-read header: %w", slot, err)
	}
	if d := keyslotChange(h, after, -1, slot); d != "" {
		return after, fmt.Errorf("kill keyslot %d: %w: %s", slot, ErrHeaderChanged, d)
	}
	return after, nil
}
