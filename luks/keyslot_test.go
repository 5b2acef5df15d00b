package luks

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
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

		// A step reads the header once; each change returns the next.
		k, h, err := v.AddKeyslot(ctx, h, keyA, keyB, AddOptions{PBKDF: cheap})
		if err != nil {
			t.Fatal(err)
		}
		if k.ID != 1 || k.PBKDF != "pbkdf2" || len(k.Salt) != 64 {
			t.Fatalf("new keyslot = %+v, want 1 (the first free), pbkdf2, a 32-byte salt", k)
		}
		sameHeader(t, v, h)
		if *h.Keyslot(1) != k {
			t.Fatalf("header after shows keyslot 1 as %+v, AddKeyslot returned %+v", h.Keyslot(1), k)
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

		k, h, err = v.AddKeyslot(ctx, h, keyB, keyC, AddOptions{PBKDF: cheap, Slot: new(5)})
		if err != nil || k.ID != 5 {
			t.Fatalf("AddKeyslot(slot 5) = %+v, %v", k, err)
		}
		sameHeader(t, v, h)
		k, after, err := v.AddKeyslot(ctx, h, keyB, keyC, AddOptions{PBKDF: cheap, Slot: new(5)})
		wantErr(t, err, ErrKeyslotInUse)
		if k.ID != -1 || after != nil {
			t.Fatalf("refused add returned %+v, %v", k, after)
		}
		_, _, err = v.AddKeyslot(ctx, h, keyB, keyC, AddOptions{PBKDF: cheap, Slot: new(h.MaxKeyslots())})
		if err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Fatalf("AddKeyslot(slot %d) error = %v, want out of range", h.MaxKeyslots(), err)
		}
		wantSlots(t, v, 0, 1, 5)

		if h, err = v.KillKeyslot(ctx, h, 5, 1, keyB); err != nil {
			t.Fatalf("KillKeyslot(5, keep 1): %v", err)
		}
		sameHeader(t, v, h)
		wantSlots(t, v, 0, 1)
		wantErr(t, v.TestKey(ctx, keyC, 5), ErrKeyslotInactive)
		// The original keyslot can go too, once another one is proven.
		if h, err = v.KillKeyslot(ctx, h, 0, 1, keyB); err != nil {
			t.Fatalf("KillKeyslot(0, keep 1): %v", err)
		}
		sameHeader(t, v, h)
		wantSlots(t, v, 1)
		if err := v.TestKey(ctx, keyB, 1); err != nil {
			t.Fatal(err)
		}

		// A header is required, and must be one Inspect can return.
		for _, bad := range []*Header{nil, {}, {Version: 3, UUID: h.UUID}, {Version: version, UUID: "x"}} {
			if _, _, err := v.AddKeyslot(ctx, bad, keyB, keyC, AddOptions{PBKDF: cheap}); err == nil {
				t.Errorf("AddKeyslot with header %+v succeeded", bad)
			}
			if _, err := v.KillKeyslot(ctx, bad, 1, 0, keyB); err == nil {
				t.Errorf("KillKeyslot with header %+v succeeded", bad)
			}
		}
		wantSlots(t, v, 1)
	})
}

func TestAddKeyslotWrongAuth(t *testing.T) {
	versions(t, func(t *testing.T, version int) {
		v := format(t, version, keyA, 1000)
		_, err := addKey(t, v, keyC, keyB, AddOptions{PBKDF: cheap})
		wantErr(t, err, ErrWrongKey)
		var ce *CryptsetupError
		if !asCryptsetupError(err, &ce) || ce.Op != "luksAddKey" || ce.ExitCode != 2 {
			t.Fatalf("error = %#v, want a luksAddKey CryptsetupError with exit 2", err)
		}
		wantSlots(t, v, 0)
		_, err = addKey(t, v, nil, keyB, AddOptions{PBKDF: cheap})
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

		wantErr(t, killKey(t, v, 0, 1, keyA), ErrLastKeyslot)
		wantSlots(t, v, 0)

		if _, err := addKey(t, v, keyA, keyB, AddOptions{PBKDF: cheap}); err != nil {
			t.Fatal(err)
		}
		h := inspect(t, v)
		kill := func(slot, keep int, auth []byte) error {
			after, err := v.KillKeyslot(ctx, h, slot, keep, auth)
			if err != nil && after != nil {
				t.Errorf("refused kill returned a header")
			}
			return err
		}
		// keep must be another keyslot: the keyslot the authorising key
		// opens is never killed.
		err := kill(1, 1, keyB)
		wantErr(t, err, ErrAuthorisingKeyslot)
		if !strings.Contains(err.Error(), "keep must be another") {
			t.Fatalf("kill with keep == slot: error = %v", err)
		}
		// keep must be in use.
		wantErr(t, kill(1, 4, keyA), ErrKeyslotInactive)
		// the key must open keep: keyB opens keyslot 1, not keyslot 0.
		wantErr(t, kill(1, 0, keyB), ErrWrongKey)
		// and a key that opens nothing.
		wantErr(t, kill(1, 0, keyC), ErrWrongKey)
		// the keyslot to kill must be in use.
		wantErr(t, kill(3, 0, keyA), ErrKeyslotInactive)
		if err := kill(1, 0, nil); err == nil || !strings.Contains(err.Error(), "empty") {
			t.Fatalf("kill with an empty key: %v", err)
		}
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
		if s, err := addKey(t, v, keyA, []byte("key "+strings.Repeat("x", max-1)), AddOptions{PBKDF: cheap}); err != nil || s != max-1 {
			t.Fatalf("add the last keyslot = %d, %v; want %d", s, err, max-1)
		}
		if free := inspect(t, v).FreeKeyslots(); len(free) != 0 {
			t.Fatalf("free keyslots = %v, want none", free)
		}
		_, err := addKey(t, v, keyA, keyB, AddOptions{PBKDF: cheap})
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
		if err := killKey(t, v, 3, 0, keyA); err != nil {
			t.Fatal(err)
		}
		if s, err := addKey(t, v, keyA, keyB, AddOptions{PBKDF: cheap}); err != nil || s != 3 {
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
			slot, err := addKey(t, v, auth, key, AddOptions{PBKDF: cheap})
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

		_, err := addKey(t, v, keyA, []byte("short passphrase"), AddOptions{MinimalPBKDF: true})
		if err == nil || !strings.Contains(err.Error(), "at least 32 bytes") {
			t.Fatalf("minimal pbkdf with a short key: error = %v", err)
		}
		_, err = addKey(t, v, keyA, recovery, AddOptions{MinimalPBKDF: true, PBKDF: cheap})
		if err == nil || !strings.Contains(err.Error(), "exclusive") {
			t.Fatalf("minimal pbkdf with pbkdf: error = %v", err)
		}
		wantSlots(t, v, 0)

		slot, err := addKey(t, v, keyA, recovery, AddOptions{MinimalPBKDF: true})
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
		v := format(t, version, keyA, 1000)
		slot, err := addKey(t, v, keyA, keyB, AddOptions{PBKDF: cheap})
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
		if err := killKey(t, v, slot, 0, keyA); err != nil {
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

// TestStaleHeader: a change decided on the step's header, while another
// process changed the volume since that read, is reported afterwards as
// ErrHeaderChanged, with the change made and the header after returned.
func TestStaleHeader(t *testing.T) {
	versions(t, func(t *testing.T, version int) {
		ctx := testCtx(t)
		v := format(t, version, keyA, 1000)
		stale := inspect(t, v)
		addRaw(t, v, keyA, keyC) // another process takes keyslot 1

		// cryptsetup picks the first free keyslot, 2.
		k, after, err := v.AddKeyslot(ctx, stale, keyA, keyB, AddOptions{PBKDF: cheap})
		wantErr(t, err, ErrHeaderChanged)
		if k.ID != 2 || k.Salt == "" || after == nil || after.Keyslot(2) == nil || *after.Keyslot(2) != k {
			t.Fatalf("add on a stale header returned %+v, %+v", k, after)
		}
		sameHeader(t, v, after)
		if !strings.Contains(err.Error(), "keyslots [") {
			t.Fatalf("error does not say what differs: %v", err)
		}
		// A keyslot asked for that was taken meanwhile: cryptsetup refuses.
		k, after, err = v.AddKeyslot(ctx, stale, keyA, keyB, AddOptions{PBKDF: cheap, Slot: new(1)})
		wantErr(t, err, ErrKeyslotInUse)
		if k.ID != -1 || after != nil {
			t.Fatalf("refused add returned %+v, %+v", k, after)
		}
		wantSlots(t, v, 0, 1, 2)

		// Kill on a header read before another process killed keyslot 1.
		h := inspect(t, v)
		killRaw(t, v, 1)
		after, err = v.KillKeyslot(ctx, h, 2, 0, keyA)
		wantErr(t, err, ErrHeaderChanged)
		sameHeader(t, v, after)
		wantSlots(t, v, 0)
	})
}

// TestKillForeignToken: a keyslot bound to another program's token
// (systemd-cryptenroll's TPM2 keyslot lets a server boot unattended) is
// never killed; one bound to a custos token may be.
func TestKillForeignToken(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	v := format(t, 2, keyA, 1000)
	addRaw(t, v, keyA, keyB) // keyslot 1, "the tpm2 keyslot"
	addRaw(t, v, keyA, keyC) // keyslot 2
	// As systemd-cryptenroll --tpm2-device writes it (cryptsetup's systemd
	// token plugin, when installed, checks the members).
	cryptsetup(t, v, []byte(`{"type":"systemd-tpm2","keyslots":["1"],`+
		`"tpm2-blob":"+/PV7/U+TDkJAlh7t4Pvl5gRqhrHvt1Cb+ZsnV7bl/wl1tKQcGIHrudjTpQR1VJmbO/hxX1fVugeRKkSL53+VQ==",`+
		`"tpm2-pcrs":[7],"tpm2-pcr-bank":"sha256","tpm2-primary-alg":"ecc",`+
		`"tpm2-policy-hash":"eb7bc9dc8abe07a233471447e7312e0ac4a1e3f508760779b15ae81dd9796b92","tpm2-pin":false}`),
		"token", "import", "--token-id=0", v.Path)
	cryptsetup(t, v, []byte(`{"type":"custos","keyslots":["2"]}`), "token", "import", "--token-id=1", v.Path)
	h := inspect(t, v)

	after, err := v.KillKeyslot(ctx, h, 1, 0, keyA)
	wantErr(t, err, ErrBoundToForeignToken)
	if after != nil || !strings.Contains(err.Error(), "systemd-tpm2") {
		t.Fatalf("refusal: %v, header %v", err, after)
	}
	wantSlots(t, v, 0, 1, 2)
	if err := v.TestKey(ctx, keyB, 1); err != nil {
		t.Fatal(err)
	}
	// Nor with the foreign keyslot's own key as the authorisation.
	wantErr(t, func() error { _, err := v.KillKeyslot(ctx, h, 1, 2, keyC); return err }(), ErrBoundToForeignToken)

	// The custos token's keyslot goes, and cryptsetup unbinds the token.
	after, err = v.KillKeyslot(ctx, h, 2, 0, keyA)
	if err != nil {
		t.Fatal(err)
	}
	sameHeader(t, v, after)
	if tok := after.Token(1); tok == nil || len(tok.Keyslots) != 0 {
		t.Fatalf("custos token after its keyslot was killed: %+v", tok)
	}
	if tok := after.Token(0); tok == nil || !slices.Equal(tok.Keyslots, []int{1}) {
		t.Fatalf("foreign token after: %+v", tok)
	}
}

// TestAuthSlot: with AddOptions.AuthSlot the authorising key is tried on
// that keyslot alone.
func TestAuthSlot(t *testing.T) {
	versions(t, func(t *testing.T, version int) {
		ctx := testCtx(t)
		v := format(t, version, keyA, 1000)
		addRaw(t, v, keyA, keyB) // keyslot 1
		h := inspect(t, v)

		// keyB opens keyslot 1, not 0: refused, though it opens the volume.
		k, after, err := v.AddKeyslot(ctx, h, keyB, keyC, AddOptions{PBKDF: cheap, AuthSlot: new(0)})
		wantErr(t, err, ErrWrongKey)
		if k.ID != -1 || after != nil {
			t.Fatalf("refused add returned %+v, %+v", k, after)
		}
		_, _, err = v.AddKeyslot(ctx, h, keyA, keyC, AddOptions{PBKDF: cheap, AuthSlot: new(4)})
		wantErr(t, err, ErrKeyslotInactive)
		_, _, err = v.AddKeyslot(ctx, h, keyA, keyC, AddOptions{PBKDF: cheap, AuthSlot: new(h.MaxKeyslots())})
		if err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Fatalf("authorising keyslot out of range: %v", err)
		}
		wantSlots(t, v, 0, 1)

		k, h, err = v.AddKeyslot(ctx, h, keyB, keyC, AddOptions{PBKDF: cheap, AuthSlot: new(1)})
		if err != nil || k.ID != 2 {
			t.Fatalf("add authorised by keyslot 1 = %+v, %v", k, err)
		}
		sameHeader(t, v, h)
		k, h, err = v.AddKeyslot(ctx, h, keyB, keyC, AddOptions{PBKDF: cheap, AuthSlot: new(1), Slot: new(5)})
		if err != nil || k.ID != 5 {
			t.Fatalf("add to keyslot 5 authorised by keyslot 1 = %+v, %v", k, err)
		}
		sameHeader(t, v, h)
		if err := v.TestKey(ctx, keyC, 5); err != nil {
			t.Fatal(err)
		}
	})
}

// oldCryptsetup is a Volume whose cryptsetup refuses --new-key-slot as
// cryptsetup before 2.6 does (popt prints the usage, then "<option>:
// unknown option", and exits 1), and is the real one otherwise.
func oldCryptsetup(t *testing.T, v *Volume) *counter {
	t.Helper()
	c := countRuns(t, v)
	real := c.v.Cryptsetup
	script := filepath.Join(t.TempDir(), "cryptsetup-2.4")
	body := "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in --new-key-slot=*)\n" +
		"printf '%s\\n' \"$*\" >>'" + c.log + "'\n" +
		"echo 'Usage: cryptsetup [-?VqrvyN] [-?|--help] [--usage] [-V|--version]' >&2\n" +
		"echo \"        [OPTION...] <action> <action-specific>\" >&2\n" +
		"echo \"$a: unknown option\" >&2; exit 1;; esac; done\n" +
		"exec '" + real + "' \"$@\"\n"
	if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	c.v = &Volume{Path: v.Path, Cryptsetup: script}
	return c
}

// TestAuthSlotOldCryptsetup: a cryptsetup without --new-key-slot gets the
// key tested with TestKey first, then a plain luksAddKey.
func TestAuthSlotOldCryptsetup(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	v := format(t, 2, keyA, 1000)
	addRaw(t, v, keyA, keyB)
	c := oldCryptsetup(t, v)
	h := inspect(t, v)

	_, _, err := c.v.AddKeyslot(ctx, h, keyB, keyC, AddOptions{PBKDF: cheap, AuthSlot: new(0)})
	wantErr(t, err, ErrWrongKey)
	if runs := c.take(t); !slices.Equal(runs, []string{"luksAddKey", "open"}) {
		t.Fatalf("runs = %q", runs)
	}
	wantSlots(t, v, 0, 1)

	k, after, err := c.v.AddKeyslot(ctx, h, keyB, keyC, AddOptions{PBKDF: cheap, AuthSlot: new(1)})
	if err != nil || k.ID != 2 {
		t.Fatalf("add = %+v, %v", k, err)
	}
	sameHeader(t, v, after)
	if runs := c.take(t); !slices.Equal(runs, []string{"luksAddKey", "open", "luksAddKey"}) {
		t.Fatalf("runs = %q", runs)
	}
}

// TestOutputWithoutMemoryFile: where the kernel offers no memory file for
// cryptsetup's output, it comes through pipes, and reads the same: the
// keyslot cryptsetup reports created (stdout), and the reason of a
// refusal (stderr).
func TestOutputWithoutMemoryFile(t *testing.T) {
	v := format(t, 2, keyA, 1000)
	refused := 0
	memfdCreate = func(string, int) (int, error) { refused++; return -1, syscall.ENOSYS }
	t.Cleanup(func() { memfdCreate = unix.MemfdCreate })
	slot, err := addKey(t, v, keyA, keyB, AddOptions{PBKDF: cheap})
	if err != nil || slot != 1 {
		t.Fatalf("add keyslot = %d, %v; want keyslot 1", slot, err)
	}
	if refused == 0 {
		t.Fatal("cryptsetup ran without asking for a memory file")
	}
	_, err = addKey(t, v, keyC, keyB, AddOptions{PBKDF: cheap})
	wantErr(t, err, ErrWrongKey)
	wantSlots(t, v, 0, 1)
}
