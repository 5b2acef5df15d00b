package luks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"custos.dev/custos/internal/realtest"
)

// cheap is the PBKDF the tests use: production keeps cryptsetup's defaults.
var cheap = &PBKDF{Type: "pbkdf2", Iterations: 1000}

// imageSize fits a LUKS2 header with its default 16 MiB keyslots area.
const imageSize = 20 << 20

func testCtx(t testing.TB) context.Context {
	// A guard against a hung cryptsetup, generous because the test
	// machine is shared and at times heavily loaded.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// format makes an image file in a fresh directory, luksFormats it as LUKS
// version with key in keyslot 0 (pbkdf2 with the given iterations), and
// returns it as a Volume.
func format(t testing.TB, version int, key []byte, iterations int) *Volume {
	t.Helper()
	bin := realtest.Binary(t, "cryptsetup")
	path := filepath.Join(t.TempDir(), "vol.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, imageSize); err != nil {
		t.Fatal(err)
	}
	formatFile(t, bin, path, version, key, iterations)
	return &Volume{Path: path, Cryptsetup: bin}
}

func formatFile(t testing.TB, bin, path string, version int, key []byte, iterations int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "luksFormat", "--type=luks"+strconv.Itoa(version), "--batch-mode",
		"--pbkdf=pbkdf2", "--pbkdf-force-iterations="+strconv.Itoa(iterations),
		"--key-file=/dev/fd/3", path)
	cmd.Env = childEnv
	cmd.ExtraFiles = []*os.File{r}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	w.Write(key)
	w.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("luksFormat: %v: %s", err, stderr.Bytes())
	}
}

// cryptsetup runs the binary directly, for setting up states the package
// itself refuses to make.
func cryptsetup(t testing.TB, v *Volume, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(v.Cryptsetup, args...)
	cmd.Env = childEnv
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cryptsetup %v: %v: %s", args, err, out)
	}
	return out
}

func inspect(t testing.TB, v *Volume) *Header {
	t.Helper()
	h, err := v.Inspect(testCtx(t))
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	return h
}

func slotIDs(h *Header) []int {
	var ids []int
	for _, k := range h.Keyslots {
		ids = append(ids, k.ID)
	}
	return ids
}

func wantSlots(t testing.TB, v *Volume, want ...int) {
	t.Helper()
	if got := slotIDs(inspect(t, v)); !slices.Equal(got, want) {
		t.Fatalf("keyslots in use = %v, want %v", got, want)
	}
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
}

// jsonMetadata is the raw LUKS2 metadata, for checks beyond Header.
func jsonMetadata(t testing.TB, v *Volume) map[string]any {
	t.Helper()
	out := cryptsetup(t, v, nil, "luksDump", "--dump-json-metadata", v.Path)
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// versions runs f as a subtest for LUKS1 and LUKS2.
func versions(t *testing.T, f func(t *testing.T, version int)) {
	for _, v := range []int{1, 2} {
		t.Run("luks"+strconv.Itoa(v), func(t *testing.T) {
			t.Parallel()
			f(t, v)
		})
	}
}

func asCryptsetupError(err error, target **CryptsetupError) bool { return errors.As(err, target) }

// addRaw adds a keyslot with cryptsetup directly, with cheap pbkdf2: for
// setting up a state, not for testing AddKeyslot.
func addRaw(t testing.TB, v *Volume, auth, key []byte) {
	t.Helper()
	r3, w3, _ := os.Pipe()
	r4, w4, _ := os.Pipe()
	cmd := exec.Command(v.Cryptsetup, "luksAddKey", "--batch-mode", "--pbkdf=pbkdf2",
		"--pbkdf-force-iterations=1000", "--key-file=/dev/fd/3", v.Path, "/dev/fd/4")
	cmd.Env = childEnv
	cmd.ExtraFiles = []*os.File{r3, r4}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r3.Close()
	r4.Close()
	go func() { w3.Write(auth); w3.Close() }()
	w4.Write(key)
	w4.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("luksAddKey: %v: %s", err, stderr.Bytes())
	}
}

// addKey is AddKeyslot on a header read right before, as a ceremony step
// that adds a keyslot first thing does; it returns the new keyslot's
// number, or -1.
func addKey(t testing.TB, v *Volume, auth, key []byte, opts AddOptions) (int, error) {
	t.Helper()
	h, err := v.Inspect(testCtx(t))
	if err != nil {
		return -1, err
	}
	k, _, err := v.AddKeyslot(testCtx(t), h, auth, key, opts)
	return k.ID, err
}

// killKey is KillKeyslot on a header read right before.
func killKey(t testing.TB, v *Volume, slot, keep int, auth []byte) error {
	t.Helper()
	h, err := v.Inspect(testCtx(t))
	if err != nil {
		return err
	}
	_, err = v.KillKeyslot(testCtx(t), h, slot, keep, auth)
	return err
}

// sameHeader fails the test unless got, a header a change returned, says
// what a fresh read of the volume says.
func sameHeader(t testing.TB, v *Volume, got *Header) {
	t.Helper()
	want := inspect(t, v)
	if got == nil {
		t.Fatal("no header returned")
	}
	if got.Version != want.Version || got.UUID != want.UUID || !slices.Equal(got.Keyslots, want.Keyslots) {
		t.Fatalf("header returned: version %d uuid %s keyslots %+v; read: version %d uuid %s keyslots %+v",
			got.Version, got.UUID, got.Keyslots, want.Version, want.UUID, want.Keyslots)
	}
	if len(got.Tokens) != len(want.Tokens) {
		t.Fatalf("header returned has tokens %+v; read: %+v", got.Tokens, want.Tokens)
	}
	for i, w := range want.Tokens {
		g := got.Tokens[i]
		if g.ID != w.ID || g.Type != w.Type || !slices.Equal(g.Keyslots, w.Keyslots) || !bytes.Equal(g.JSON, w.JSON) {
			t.Fatalf("header returned has token %+v (%s); read: %+v (%s)", g, g.JSON, w, w.JSON)
		}
	}
}
