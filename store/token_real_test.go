package store

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"custos.dev/custos/internal/realtest"
)

// cryptsetup runs the cryptsetup binary with inputs on stdin and fd 3.
func cryptsetup(t *testing.T, bin string, stdin, fd3 []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	if fd3 != nil {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		go func() { w.Write(fd3); w.Close() }()
		defer r.Close()
		cmd.ExtraFiles = []*os.File{r}
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("cryptsetup %s: %v\n%s", strings.Join(args, " "), err, errOut.Bytes())
	}
	return out.Bytes()
}

// TestTokenThroughCryptsetup: a token written into a real LUKS2 header
// comes back from cryptsetup byte for byte (token export), reads as the
// same token from luksDump's indented metadata, and still reads, bound to
// no keyslot, once cryptsetup killed its keyslot.
func TestTokenThroughCryptsetup(t *testing.T) {
	boltOnly(t)
	bin := realtest.Binary(t, "cryptsetup")
	img := filepath.Join(t.TempDir(), "volume.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 20<<20); err != nil {
		t.Fatal(err)
	}
	cheap := []string{"--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}
	cryptsetup(t, bin, []byte("operator key"), nil, append([]string{"luksFormat", "--type", "luks2", "--key-file", "-"}, append(cheap, img)...)...)
	cryptsetup(t, bin, []byte("operator key"), []byte("recovery key"),
		append([]string{"luksAddKey", "--key-file", "-", "--new-keyfile", "/dev/fd/3", "--new-key-slot", "1"}, append(cheap, img)...)...)
	rec := vecBase()
	rec.Keyslot = 1
	anchor := Head{Seq: 12, Hash: Hash(key32("anchor"))}
	tok, err := EncodeToken(rec, anchor)
	if err != nil {
		t.Fatal(err)
	}
	cryptsetup(t, bin, tok, nil, "token", "import", "--json-file", "-", "--token-id", "0", img)

	exported := cryptsetup(t, bin, nil, nil, "token", "export", "--token-id", "0", img)
	if !bytes.Equal(bytes.TrimSuffix(exported, []byte("\n")), tok) {
		t.Errorf("cryptsetup changed the token:\nwrote    %s\nexported %s", tok, exported)
	}
	dumped := func() []byte {
		var md struct {
			Tokens map[string]json.RawMessage `json:"tokens"`
		}
		out := cryptsetup(t, bin, nil, nil, "luksDump", "--dump-json-metadata", img)
		if err := json.Unmarshal(out, &md); err != nil {
			t.Fatal(err)
		}
		return md.Tokens["0"]
	}
	raw := dumped()
	if !bytes.Contains(raw, []byte("\n")) {
		t.Fatalf("luksDump printed the token compact: %s", raw)
	}
	if !bytes.Equal(stripWhitespace(raw), tok) {
		t.Errorf("luksDump's token without whitespace is not the token:\n%s", raw)
	}
	if string(raw) != luksDumpIndent(string(tok)) {
		t.Errorf("the vectors' luksDump indentation differs from cryptsetup's:\n%s", raw)
	}
	got, err := ParseToken(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, &Token{Keyslots: []int{1}, Record: rec, Anchor: anchor}) {
		t.Errorf("token read from luksDump: %+v", got)
	}

	// Killing the keyslot empties the token's keyslots.
	cryptsetup(t, bin, []byte("operator key"), nil, "luksKillSlot", "--key-file", "-", "--batch-mode", img, "1")
	got, err = ParseToken(dumped())
	if err != nil {
		t.Fatalf("token after its keyslot was killed: %v", err)
	}
	if len(got.Keyslots) != 0 || !reflect.DeepEqual(got.Record, rec) || got.Anchor != anchor {
		t.Errorf("token after its keyslot was killed: %+v", got)
	}
}
