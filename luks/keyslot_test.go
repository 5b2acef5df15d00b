package luks

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

var (
	keyA = []byte("first passphrase")
	keyB = []byte("second passphrase")
	keyC = []byte("third passphrase")
)

func TestAddTestKill(t *testing.T) {
	versions(t, func(t *testing.T, version int) {
		ctx := testCtx(t)
		v := format(t, version, keyA, 1000)

		h := inspect(t, v)
		if h.Version != version || !validUUID(h.UUID) {
			t.Fatalf("header = version %d uuid %q, want version %d and a uuid", h.Version, h.UUID, version)
		}
		wantSlots(t, v, 0)
		if got := len(h.FreeKeyslots()); got != h.MaxKeyslots()-1 {
			t.Fatalf("free keyslots = %d, want %d", got, h.MaxKeyslots()-1)
		}

		slot, err := v.AddKeyslot(ctx, keyA, keyB, AddOptions{PBKDF: cheap})
		if err != nil {
			t.Fatal(err)
		}
		if slot != 1 {
			t.Fatalf("new keyslot = %d, want 1 (the first free)", slot)
		}
		wantSlots(t, v, 0, 1)
		if got := inspect(t, v).Keyslots[1].PBKDF; got != "pbkdf2" {
			t.Fatalf("keyslot 1 pbkdf = %q", got)
		}
		if err := v.TestKey(ctx, keyB, 1); err != nil {
			t.Fatalf("TestKey(new key, 1): %v", err)
		}
		if err := v.TestKey(ctx, keyA, 0); err != nil {
			t.Fatalf("TestKey(old key, 0): %v", err)
		}
		wantErr(t, v.TestKey(ctx, keyB, 0), ErrWrongKey)
		wantErr(t, v.TestKey(ctx, keyC, 1), ErrWrongKey)
		wantErr(t, v.TestKey(ctx, keyA, 6), ErrKeyslotInactive)
		if s, err := v.FindKeyslot(ctx, keyB); err != nil || s != 1 {
			t.Fatalf("FindKeyslot(new key) = %d, %v; want 1", s, err)
		}
		_, err = v.FindKeyslot(ctx, keyC)
		wantErr(t, err, ErrWrongKey)

		slot, err = v.AddKeyslot(ctx, keyB, keyC, AddOptions{PBKDF: cheap, Slot: new(5)})
		if err != nil || slot != 5 {
			t.Fatalf("AddKeyslot(slot 5) = %d, %v", slot, err)
		}
		_, err = v.AddKeyslot(ctx, keyB, keyC, AddOptions{PBKDF: cheap, Slot: new(5)})
		wantErr(t, err, ErrKeyslotInUse)
		_, err = v.AddKeyslot(ctx, keyB, keyC, AddOptions{PBKDF: cheap, Slot: new(h.MaxKeyslots())})
		if err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Fatalf("AddKeyslot(slot %d) error = %v, want out of range", h.MaxKeyslots(), err)
		}
		wantSlots(t, v, 0, 1, 5)

		if err := v.KillKeyslot(ctx, 5, 1, keyB); err != nil {
			t.Fatalf("KillKeyslot(5, keep 1): %v", err)
		}
		wantSlots(t, v, 0, 1)
		wantErr(t, v.TestKey(ctx, keyC, 5), ErrKeyslotInactive)
		// The original keyslot can go too, once another one is proven.
		if err := v.KillKeyslot(ctx, 0, 1, keyB); err != nil {
			t.Fatalf("KillKeyslot(0, keep 1): %v", err)
		}
		wantSlots(t, v, 1)
		if err := v.TestKey(ctx, keyB, 1); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAddKeyslotWrongAuth(t *testing.T) {
	versions(t, func(t *testing.T, version int) {
		ctx := testCtx(t)
		v := format(t, version, keyA, 1000)
		_, err := v.AddKeyslot(ctx, keyC, keyB, AddOptions{PBKDF: cheap})
		wantErr(t, err, ErrWrongKey)
		var ce *CryptsetupError
		if !asCryptsetupError(err, &ce) || ce.Op != "luksAddKey" || ce.ExitCode != 2 {
			t.Fatalf("error = %#v, want a luksAddKey CryptsetupError with exit 2", err)
		}
		wantSlots(t, v, 0)
		_, err = v.AddKeyslot(ctx, nil, keyB, AddOptions{PBKDF: cheap})
		if err == nil || !strings.Contains(err.Error(), "empty") {
			t.Fatalf("empty authorising key: error = %v", err)
		}
		wantSlots(t, v, 0)
	})
}

func TestKillKeyslotRefusals(t *testing.T) {
	versions(t, func(t *testing.T, version int) {
		ctx := testCtx(t)
		v := format(t, version, keyA, 1000)

		wantErr(t, v.KillKeyslot(ctx, 0, 1, keyA), ErrLastKeyslot)
		wantSlots(t, v, 0)

		if _, err := v.AddKeyslot(ctx, keyA, keyB, AddOptions{PBKDF: cheap}); err != nil {
			t.Fatal(err)
		}
		// keep must be another keyslot.
		if err := v.KillKeyslot(ctx, 1, 1, keyB); err == nil || !strings.Contains(err.Error(), "keep must be another") {
			t.Fatalf("kill with keep == slot: error = %v", err)
		}
		// keep must be in use.
		wantErr(t, v.KillKeyslot(ctx, 1, 4, keyA), ErrKeyslotInactive)
		// the key must open keep: keyB opens keyslot 1, not keyslot 0.
		wantErr(t, v.KillKeyslot(ctx, 1, 0, keyB), ErrWrongKey)
		// and a key that opens nothing.
		wantErr(t, v.KillKeyslot(ctx, 1, 0, keyC), ErrWrongKey)
		// the keyslot to kill must be in use.
		wantErr(t, v.KillKeyslot(ctx, 3, 0, keyA), ErrKeyslotInactive)
		wantSlots(t, v, 0, 1)
		for s, k := range map[int][]byte{0: keyA, 1: keyB} {
			if err := v.TestKey(ctx, k, s); err != nil {
				t.Fatalf("after refusals, keyslot %d: %v", s, err)
			}
		}
	})
}

func TestKeyslotsFull(t *testing.T) {
	versions(t, func(t *testing.T, version int) {
		ctx := testCtx(t)
		v := format(t, version, keyA, 1000)
		max := inspect(t, v).MaxKeyslots()
		if want := map[int]int{1: 8, 2: 32}[version]; max != want {
			t.Fatalf("MaxKeyslots = %d, want %d", max, want)
		}
		// Fill all but the last keyslot with cryptsetup directly (setup,
		// five times fewer runs), the last one through AddKeyslot.
		for i := 1; i < max-1; i++ {
			addRaw(t, v, keyA, []byte("key "+strings.Repeat("x", i)))
		}
		if s, err := v.AddKeyslot(ctx, keyA, []byte("key "+strings.Repeat("x", max-1)), AddOptions{PBKDF: cheap}); err != nil || s != max-1 {
			t.Fatalf("add the last keyslot = %d, %v; want %d", s, err, max-1)
		}
		if free := inspect(t, v).FreeKeyslots(); len(free) != 0 {
			t.Fatalf("free keyslots = %v, want none", free)
		}
		_, err := v.AddKeyslot(ctx, keyA, keyB, AddOptions{PBKDF: cheap})
		wantErr(t, err, ErrNoFreeKeyslot)

		// cryptsetup's own refusal maps to the same error, for when the
		// header fills between Inspect and luksAddKey.
		_, err = v.exec(ctx, run{op: "luksAddKey", args: []string{
			"--batch-mode", "--pbkdf=pbkdf2", "--pbkdf-force-iterations=1000",
			"--key-file=/dev/fd/3", v.Path, "/dev/fd/4",
		}, inputs: [][]byte{keyA, keyB}, write: true})
		wantErr(t, err, ErrNoFreeKeyslot)

		// The last key added still works, and killing one frees a keyslot.
		if err := v.TestKey(ctx, []byte("key "+strings.Repeat("x", max-1)), max-1); err != nil {
			t.Fatal(err)
		}
		if err := v.KillKeyslot(ctx, 3, 0, keyA); err != nil {
			t.Fatal(err)
		}
		if s, err := v.AddKeyslot(ctx, keyA, keyB, AddOptions{PBKDF: cheap}); err != nil || s != 3 {
			t.Fatalf("add after kill = %d, %v; want keyslot 3", s, err)
		}
	})
}

func TestKeysWithNewlinesAndNULs(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := make([]byte, 200<<10) // more than a pipe buffer holds
	rand.Read(big)
	versions(t, func(t *testing.T, version int) {
		ctx := testCtx(t)
		auth := []byte("auth\n\x00with\nnewlines\x00")
		v := format(t, version, auth, 1000)
		for _, key := range [][]byte{
			[]byte("line one\nline two\n"),
			[]byte("\x00\x00\x00nul-led\x00"),
			[]byte("\n"),
			all,
			big,
		} {
			slot, err := v.AddKeyslot(ctx, auth, key, AddOptions{PBKDF: cheap})
			if err != nil {
				t.Fatalf("add key %q: %v", key[:min(len(key), 16)], err)
			}
			if err := v.TestKey(ctx, key, slot); err != nil {
				t.Fatalf("test key %q: %v", key[:min(len(key), 16)], err)
			}
			// A key is all of its bytes: cut at the first newline or NUL,
			// or with a byte dropped or added, it is another key.
			for _, other := range [][]byte{
				key[:len(key)-1],
				key[1:],
				append(bytes.Clone(key), '\n'),
				key[:max(1, bytes.IndexAny(key, "\n\x00"))],
			} {
				if len(other) == 0 || hmacEquivalent(key, other) {
					continue
				}
				if err := v.TestKey(ctx, other, slot); !errors.Is(err, ErrWrongKey) {
					t.Fatalf("key %q (%d bytes) cut to %q (%d bytes): TestKey = %v, want ErrWrongKey", key[:min(len(key), 16)], len(key), other[:min(len(other), 16)], len(other), err)
				}
			}
		}
	})
}

func TestMinimalPBKDF(t *testing.T) {
	versions(t, func(t *testing.T, version int) {
		ctx := testCtx(t)
		v := format(t, version, keyA, 1000)
		recovery := make([]byte, 32)
		rand.Read(recovery)

		_, err := v.AddKeyslot(ctx, keyA, []byte("short passphrase"), AddOptions{MinimalPBKDF: true})
		if err == nil || !strings.Contains(err.Error(), "at least 32 bytes") {
			t.Fatalf("minimal pbkdf with a short key: error = %v", err)
		}
		_, err = v.AddKeyslot(ctx, keyA, recovery, AddOptions{MinimalPBKDF: true, PBKDF: cheap})
		if err == nil || !strings.Contains(err.Error(), "exclusive") {
			t.Fatalf("minimal pbkdf with pbkdf: error = %v", err)
		}
		wantSlots(t, v, 0)

		slot, err := v.AddKeyslot(ctx, keyA, recovery, AddOptions{MinimalPBKDF: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := v.TestKey(ctx, recovery, slot); err != nil {
			t.Fatal(err)
		}
		if version == 2 {
			kdf := jsonMetadata(t, v)["keyslots"].(map[string]any)["1"].(map[string]any)["kdf"].(map[string]any)
			if kdf["type"] != "pbkdf2" || kdf["hash"] != "sha512" || kdf["iterations"] != float64(1000) {
				t.Fatalf("keyslot 1 kdf = %v, want pbkdf2 sha512 1000 iterations", kdf)
			}
		} else {
			out := string(cryptsetup(t, v, nil, "luksDump", v.Path))
			i := strings.Index(out, "Key Slot 1: ENABLED")
			if i < 0 || !strings.Contains(out[i:i+80], "Iterations:") || !strings.Contains(out[i:i+80], "\t1000\n") {
				t.Fatalf("luks1 keyslot 1 not at 1000 iterations:\n%s", out)
			}
		}
	})
}

// hmacEquivalent reports whether pbkdf2 cannot tell a from b: HMAC pads a
// key shorter than the hash's block with zero bytes, so a key and the same
// key with trailing NULs (within one block) derive the same value. That is
// a property of PBKDF2-HMAC, not of this package or of cryptsetup.
func hmacEquivalent(a, b []byte) bool {
	if len(a) < len(b) {
		a, b = b, a
	}
	return len(a) <= 64 && bytes.HasPrefix(a, b) && len(bytes.Trim(a[len(b):], "\x00")) == 0
}

func TestPBKDF2TrailingNULs(t *testing.T) {
	// Pins the caveat in doc.go: with pbkdf2 keyslots, trailing NULs do
	// not make a different key. If this ever fails, the caveat is stale.
	ctx := testCtx(t)
	v := format(t, 2, []byte("key\x00"), 1000)
	if err := v.TestKey(ctx, []byte("key"), 0); err != nil {
		t.Fatalf("key without its trailing nul: %v", err)
	}
	wantErr(t, v.TestKey(ctx, []byte("key\x00x"), 0), ErrWrongKey)
}

// TestKeyslotSalt: every keyslot has a salt, and a key added under the
// number of a killed keyslot has another one, so the salt tells them apart.
func TestKeyslotSalt(t *testing.T) {
	versions(t, func(t *testing.T, version int) {
		ctx := testCtx(t)
		v := format(t, version, keyA, 1000)
		slot, err := v.AddKeyslot(ctx, keyA, keyB, AddOptions{PBKDF: cheap})
		if err != nil {
			t.Fatal(err)
		}
		h := inspect(t, v)
		first := h.Keyslot(slot).Salt
		if len(first) != 64 || h.Keyslot(0).Salt == "" || h.Keyslot(0).Salt == first {
			t.Fatalf("salts of keyslots 0 and %d: %q, %q", slot, h.Keyslot(0).Salt, first)
		}
		if again := inspect(t, v).Keyslot(slot).Salt; again != first {
			t.Fatalf("salt of keyslot %d read twice: %q, then %q", slot, first, again)
		}
		if err := v.KillKeyslot(ctx, slot, 0, keyA); err != nil {
			t.Fatal(err)
		}
		addRaw(t, v, keyA, keyB)
		h = inspect(t, v)
		if h.Keyslot(slot) == nil {
			t.Fatalf("luksAddKey did not reuse keyslot %d: %+v", slot, h.Keyslots)
		}
		if second := h.Keyslot(slot).Salt; second == "" || second == first {
			t.Fatalf("keyslot %d re-added: salt %q, before %q", slot, second, first)
		}
	})
}
