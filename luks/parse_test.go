package luks

import (
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The testdata dumps come from cryptsetup 2.6.1: a LUKS1 volume with
// keyslots 0 and 3, and a LUKS2 volume with keyslots 0 (pbkdf2) and 2
// (argon2id), a custos token 0 on keyslot 2 and a foreign token 5.
func TestParseDumpLUKS1(t *testing.T) {
	h, err := parseDump(readTestdata(t, "luks1-dump.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != 1 || h.UUID != "11111111-2222-4333-8444-555555555555" {
		t.Fatalf("header = %+v", h)
	}
	if got := slotIDs(h); !slices.Equal(got, []int{0, 3}) {
		t.Fatalf("keyslots = %v", got)
	}
	if got := h.FreeKeyslots(); !slices.Equal(got, []int{1, 2, 4, 5, 6, 7}) {
		t.Fatalf("free = %v", got)
	}
	if h.Keyslot(0).Salt != "7722f12d515d99ec0dafa26cf85ceabe507e45c6d34ee57a064d0a2640e18507" ||
		h.Keyslot(3).Salt != "d1b3d8f42530d8f6f2c467cc32dd09f5265e055b6fb6329668eec8b8d70328a4" || h.Keyslot(1) != nil {
		t.Fatalf("salts = %+v", h.Keyslots)
	}
}

func TestParseLUKS2(t *testing.T) {
	h, err := parseDump(readTestdata(t, "luks2-dump.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != 2 || h.UUID != "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee" || len(h.Keyslots) != 0 {
		t.Fatalf("header from text dump = %+v", h)
	}
	if err := parseMetadata(readTestdata(t, "luks2-metadata.json"), h); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.Keyslots, []Keyslot{
		{0, "pbkdf2", "bc3eaa3975be3a68d75da7784c18b6d6f73edc304b4e2dd3e40d6a85a94246e4"},
		{2, "argon2id", "3519cc717c45470cd549dbacbbc36a660cb0fdf9dc13e17766174e70b5db4cff"},
	}) {
		t.Fatalf("keyslots = %+v", h.Keyslots)
	}
	if len(h.Tokens) != 2 || h.Tokens[0].Type != TokenType || !slices.Equal(h.Tokens[0].Keyslots, []int{2}) ||
		h.Tokens[1].ID != 5 || h.Tokens[1].Type != "systemd-recovery" {
		t.Fatalf("tokens = %+v", h.Tokens)
	}
	if h.Token(5) == nil || h.Token(1) != nil || !h.InUse(2) || h.InUse(1) || h.MaxKeyslots() != 32 {
		t.Fatal("header accessors disagree with the tokens and keyslots parsed")
	}
	if h.jsonSize != 12288 || h.jsonUsed <= 0 || h.jsonUsed > 2000 {
		t.Fatalf("json area size %d used %d", h.jsonSize, h.jsonUsed)
	}
	tok, err := parseToken(0, readTestdata(t, "token.json"))
	if err != nil || tok.Type != TokenType || !slices.Equal(tok.Keyslots, []int{2}) {
		t.Fatalf("token = %+v, %v", tok, err)
	}
}

func TestParseDumpRejects(t *testing.T) {
	good := string(readTestdata(t, "luks1-dump.txt"))
	for name, in := range map[string]string{
		"empty":           "",
		"no version":      strings.Replace(good, "Version:", "Versoin:", 1),
		"version 3":       strings.Replace(good, "Version:       \t1", "Version: 3", 1),
		"two versions":    good + "Version: 1\n",
		"no uuid":         strings.Replace(good, "UUID:", "UUDI:", 1),
		"bad uuid":        strings.Replace(good, "11111111-2222", "1111111x-2222", 1),
		"two uuids":       good + "UUID: 11111111-2222-4333-8444-555555555555\n",
		"duplicate slot":  strings.Replace(good, "Key Slot 7:", "Key Slot 6:", 1),
		"slot 8":          strings.Replace(good, "Key Slot 7:", "Key Slot 8:", 1),
		"slot -1":         strings.Replace(good, "Key Slot 7:", "Key Slot -1:", 1),
		"missing slot":    strings.Replace(good, "Key Slot 7: DISABLED", "", 1),
		"bad state":       strings.Replace(good, "Key Slot 7: DISABLED", "Key Slot 7: MAYBE", 1),
		"luks1 slot in 2": string(readTestdata(t, "luks2-dump.txt")) + "Key Slot 0: ENABLED\n",
		"bad salt":        strings.Replace(good, "77 22 f1", "77 22 zz", 1),
		"odd salt":        strings.Replace(good, "77 22 f1", "77 22 f", 1),
		"two salts":       strings.Replace(good, "\tKey material offset:\t8", "\tSalt: 00\n\tKey material offset:\t8", 1),
	} {
		if h, err := parseDump([]byte(in)); err == nil {
			t.Errorf("%s: parsed as %+v", name, h)
		}
	}
}

func TestParseMetadataRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":         `{`,
		"no keyslots":      `{"tokens":{}}`,
		"no tokens":        `{"keyslots":{}}`,
		"keyslot 32":       `{"keyslots":{"32":{"kdf":{"type":"pbkdf2"}}},"tokens":{}}`,
		"keyslot 01":       `{"keyslots":{"01":{"kdf":{"type":"pbkdf2"}}},"tokens":{}}`,
		"keyslot +1":       `{"keyslots":{"+1":{"kdf":{"type":"pbkdf2"}}},"tokens":{}}`,
		"keyslot no kdf":   `{"keyslots":{"1":{"type":"luks2"}},"tokens":{}}`,
		"keyslot no type":  `{"keyslots":{"1":{}},"tokens":{}}`,
		"token no type":    `{"keyslots":{},"tokens":{"0":{"keyslots":[]}}}`,
		"token no slots":   `{"keyslots":{},"tokens":{"0":{"type":"x"}}}`,
		"token bad slot":   `{"keyslots":{},"tokens":{"0":{"type":"x","keyslots":["a"]}}}`,
		"token id 32":      `{"keyslots":{},"tokens":{"32":{"type":"x","keyslots":[]}}}`,
		"token not object": `{"keyslots":{},"tokens":{"0":[1]}}`,
		"bad json_size":    `{"keyslots":{},"tokens":{},"config":{"json_size":"-1"}}`,
		"bad salt":         `{"keyslots":{"1":{"type":"luks2","kdf":{"type":"pbkdf2","salt":"!!"}}},"tokens":{}}`,
	} {
		h := &Header{Version: 2}
		if err := parseMetadata([]byte(in), h); err == nil {
			t.Errorf("%s: parsed as %+v", name, h)
		}
	}
}

// TestClassify maps messages cryptsetup 2.6.1 printed in the runs above
// (LC_ALL=C) to errors.
func TestClassify(t *testing.T) {
	luks1 := headerProbe{magic: true, version: 1}
	luks2 := headerProbe{magic: true, version: 2}
	none := headerProbe{}
	for _, c := range []struct {
		code   int
		stderr string
		hdr    headerProbe
		want   error
	}{
		{2, "No key available with this passphrase.", luks2, ErrWrongKey},
		{2, "Command failed with code -2 (no permission or bad passphrase).", luks2, ErrWrongKey},
		{1, "All key slots full.", luks1, ErrNoFreeKeyslot},
		{1, "Key slot 1 is full, please select another one.", luks2, ErrKeyslotInUse},
		{1, "Keyslot 5 is not active.", luks2, ErrKeyslotInactive},
		{1, "No usable keyslot is available.", luks2, ErrKeyslotInactive},
		{1, "Device x.img is not a valid LUKS device.", none, ErrNotLUKS},
		{1, "Device x.img is not a valid LUKS device.", luks2, ErrDamagedHeader},
		{1, "Device t2.img is too small. Need at least 16777216 bytes. Device t2.img is not a valid LUKS device.", luks2, ErrDamagedHeader},
		{1, "Device b1.img is not a valid LUKS2 device.", luks1, ErrNoTokens},
		{1, "Failed to get token 5 for export.", luks2, ErrTokenNotFound},
		{1, "Token 1 is not in use.", luks2, ErrTokenNotFound},
		{1, "Token 0 in use.", luks2, nil},
		{4, "Device /nonexistent/x.img does not exist or access denied.", none, fs.ErrNotExist},
		{1, "Failed to acquire write lock on device x.", luks2, ErrBusy},
		{5, "Cannot use device x which is in use (already mapped or mounted).", luks2, ErrBusy},
		{1, "Cannot write to device x, permission denied.", luks2, ErrPermission},
		{1, "Usage: cryptsetup [-?VqrvyN] [--disable-locks] ...", luks2, nil},
		{1, "Failed to import token from file.", luks2, nil},
		{1, "Usage: cryptsetup [-?VqrvyN] ... --new-key-slot=2: unknown option", luks2, errUnknownOption},
	} {
		got := classify(c.code, c.stderr, c.hdr, false, "/nonexistent/x.img")
		if got != c.want {
			t.Errorf("classify(%d, %q, %+v) = %v, want %v", c.code, c.stderr, c.hdr, got, c.want)
		}
	}
}

func TestSanitize(t *testing.T) {
	key := []byte("s3cret\nkey")
	got := sanitize([]byte("line one\n\tbad \x00\xff byte s3cret\nkey here\n\n"), [][]byte{key})
	if got != "line one bad ?? byte [redacted] here" {
		t.Fatalf("sanitize = %q", got)
	}
	if long := sanitize([]byte(strings.Repeat("a", 5000)), nil); len(long) > maxStderr+3 {
		t.Fatalf("sanitize kept %d bytes", len(long))
	}
	// The reason cryptsetup prints after a long usage text survives.
	usage := "Usage: cryptsetup [-?VqrvyN] " + strings.Repeat("[--option=STRING] ", 100) + "\n--new-key-slot=1: unknown option\n"
	got = sanitize([]byte(usage), nil)
	if !strings.HasPrefix(got, "Usage: cryptsetup") || !strings.HasSuffix(got, "--new-key-slot=1: unknown option") || len(got) > maxStderr+3 {
		t.Fatalf("sanitize(usage) = %q", got)
	}
}

func FuzzParseDump(f *testing.F) {
	f.Add(readTestdata(f, "luks1-dump.txt"))
	f.Add(readTestdata(f, "luks2-dump.txt"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseDump(b)
		if err != nil {
			return
		}
		if h.Version != 1 && h.Version != 2 || !validUUID(h.UUID) {
			t.Fatalf("accepted header %+v", h)
		}
		for i, k := range h.Keyslots {
			if k.ID < 0 || k.ID >= h.MaxKeyslots() || i > 0 && h.Keyslots[i-1].ID >= k.ID {
				t.Fatalf("keyslots out of range or order: %+v", h.Keyslots)
			}
		}
		if len(h.Keyslots)+len(h.FreeKeyslots()) != h.MaxKeyslots() {
			t.Fatalf("used %d + free %d != %d", len(h.Keyslots), len(h.FreeKeyslots()), h.MaxKeyslots())
		}
	})
}

func FuzzParseMetadata(f *testing.F) {
	f.Add(readTestdata(f, "luks2-metadata.json"))
	f.Add(readTestdata(f, "token.json"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h := &Header{Version: 2}
		if err := parseMetadata(b, h); err != nil {
			return
		}
		for i, k := range h.Keyslots {
			if k.ID < 0 || k.ID >= LUKS2Keyslots || i > 0 && h.Keyslots[i-1].ID >= k.ID {
				t.Fatalf("bad keyslots %+v", h.Keyslots)
			}
		}
		for i, tok := range h.Tokens {
			if tok.ID < 0 || tok.ID >= LUKS2Tokens || tok.Type == "" || i > 0 && h.Tokens[i-1].ID >= tok.ID {
				t.Fatalf("bad tokens %+v", h.Tokens)
			}
			for _, s := range tok.Keyslots {
				if s < 0 || s >= LUKS2Keyslots {
					t.Fatalf("token %d keyslot %d", tok.ID, s)
				}
			}
			// A token accepted here parses the same on its own, as Token
			// reads it from cryptsetup token export.
			again, err := parseToken(tok.ID, tok.JSON)
			if err != nil || again.Type != tok.Type || !slices.Equal(again.Keyslots, tok.Keyslots) {
				t.Fatalf("token %d reparsed = %+v, %v", tok.ID, again, err)
			}
		}
	})
}
