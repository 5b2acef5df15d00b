package luks

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"custos.dev/custos/internal/realtest"
)

// bothWays reads v's header without cryptsetup (diskHeader.header, which
// must accept it when native says so, and refuse it otherwise) and with
// cryptsetup alone, and fails unless both give the same Header, unexported
// fields included. It returns the Header.
func bothWays(t *testing.T, v *Volume, native bool) *Header {
	t.Helper()
	dh, err := readDiskHeader(v.Path)
	var direct *Header
	if err == nil {
		direct, err = dh.header()
	}
	switch {
	case native && err != nil:
		t.Fatalf("header read without cryptsetup: %v", err)
	case !native && err == nil:
		t.Fatalf("header read without cryptsetup, want it left to cryptsetup: %+v", direct)
	case !native && !errors.Is(err, errNotVerified):
		t.Fatalf("header left to cryptsetup with %v, want errNotVerified", err)
	}
	viaCryptsetup, err := v.inspectCryptsetup(testCtx(t))
	if err != nil {
		t.Fatalf("inspect with cryptsetup: %v", err)
	}
	got := inspect(t, v)
	if !reflect.DeepEqual(got, viaCryptsetup) {
		t.Fatalf("Inspect = %+v\ncryptsetup's dump = %+v", got, viaCryptsetup)
	}
	if native && !reflect.DeepEqual(direct, viaCryptsetup) {
		t.Fatalf("read without cryptsetup = %+v\ncryptsetup's dump = %+v", direct, viaCryptsetup)
	}
	return got
}

// hdrSize is the size of each LUKS2 header copy of the image at path.
func hdrSize(t *testing.T, path string) int64 {
	t.Helper()
	b := make([]byte, diskBinLen)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return int64(binary.BigEndian.Uint64(b[diskHdrSizeOff:]))
}

// patch writes b at off in the file at path.
func patch(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// readArea reads n bytes at off of the file at path.
func readArea(t *testing.T, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// twinOf is the secondary header area cryptsetup would write beside the
// primary area p.
func twinOf(p []byte) []byte {
	s := bytes.Clone(p)
	copy(s, magicSecondary)
	binary.BigEndian.PutUint64(s[diskHdrOffOff:], uint64(len(p)))
	return reseal(s)
}

// TestInspectWithoutCryptsetup: the LUKS2 header read straight from the
// disk is the Header cryptsetup's dump gives, on the images cryptsetup
// makes (keyslots of both KDFs, custos's and other programs' tokens, a
// larger metadata area) and on the testdata header; anything that is not
// a pair of twin copies in the form cryptsetup writes is left to
// cryptsetup, which then reads it as before.
func TestInspectWithoutCryptsetup(t *testing.T) {
	ctx := testCtx(t)
	v := format(t, 2, keyA, 1000)
	bothWays(t, v, true)

	// Keyslots of both KDFs and tokens: custos's, and another program's
	// in json-c's own form (cryptsetup writes it compact).
	_, h, err := v.AddKeyslot(ctx, inspect(t, v), keyA, keyB, AddOptions{PBKDF: cheap})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.AddKeyslot(ctx, h, keyA, []byte("third key"), AddOptions{PBKDF: &PBKDF{Type: "argon2id", Iterations: 4, MemoryKiB: 32, Parallel: 1}}); err != nil {
		t.Fatal(err)
	}
	tok := []byte(`{"type":"custos","keyslots":["1"],"ceremony":"0123"}`)
	if _, _, err := v.ImportToken(ctx, inspect(t, v), tok, 1); err != nil {
		t.Fatal(err)
	}
	cryptsetup(t, v, []byte(`{"type":"x-foreign","keyslots":["0"],"tpm2-pcrs":[7,11],"tpm2-blob":"AAEC/w=="}`),
		"token", "import", "--token-id=5", v.Path)
	h = bothWays(t, v, true)
	if len(h.Keyslots) != 3 || len(h.Tokens) != 2 || h.Keyslots[2].PBKDF != "argon2id" || !bytes.Equal(h.Tokens[0].JSON, tok) {
		t.Fatalf("header %+v, want keyslots 0-2 and tokens 0 and 5", h)
	}

	// A token json-c writes with an escape: left to cryptsetup.
	cryptsetup(t, v, []byte(`{"type":"x-other","keyslots":[],"note":"line\nbreak"}`), "token", "import", "--token-id=6", v.Path)
	bothWays(t, v, false)
	cryptsetup(t, v, nil, "token", "remove", "--token-id=6", v.Path)
	bothWays(t, v, true)

	size := hdrSize(t, v.Path)
	second := readArea(t, v.Path, size, size)

	// A damaged secondary copy: left to cryptsetup (which repairs it as
	// it reads, after which the copies are twins again).
	patch(t, v.Path, size+diskBinLen+2, []byte{'X'})
	bothWays(t, v, false)
	bothWays(t, v, true)

	// A secondary copy one update behind (a write cut between the two
	// copies): left to cryptsetup, which follows the newer primary.
	if _, _, err := v.AddKeyslot(ctx, inspect(t, v), keyA, []byte("fourth key"), AddOptions{PBKDF: cheap}); err != nil {
		t.Fatal(err)
	}
	patch(t, v.Path, size, second)
	if h := bothWays(t, v, false); len(h.Keyslots) != 4 {
		t.Fatalf("keyslots %v, want the primary's 4", slotIDs(h))
	}

	// A larger metadata area (64 KiB copies).
	big := format(t, 2, keyA, 1000)
	if err := os.Truncate(big.Path, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big.Path, imageSize); err != nil {
		t.Fatal(err)
	}
	cryptsetup(t, big, keyA, "luksFormat", "--type=luks2", "--batch-mode", "--pbkdf=pbkdf2", "--pbkdf-force-iterations=1000",
		"--luks2-metadata-size=64k", "--key-file=-", big.Path)
	if s := hdrSize(t, big.Path); s != 64<<10 {
		t.Fatalf("header copies of %d bytes, want 64 KiB", s)
	}
	bothWays(t, big, true)

	// The testdata header (cryptsetup 2.6.1) with its twin, on an image.
	area := readTestdata(t, "luks2-header.bin")
	img := filepath.Join(t.TempDir(), "testdata.img")
	if err := os.WriteFile(img, append(bytes.Clone(area), twinOf(area)...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, imageSize); err != nil {
		t.Fatal(err)
	}
	fixture := &Volume{Path: img, Cryptsetup: v.Cryptsetup}
	if h := bothWays(t, fixture, true); h.UUID != luks2TestUUID {
		t.Fatalf("uuid %s, want %s", h.UUID, luks2TestUUID)
	}
}

// TestHeaderRefusals: what diskHeader.header leaves to cryptsetup, each
// on a pair of copies otherwise read without it.
func TestHeaderRefusals(t *testing.T) {
	area := readTestdata(t, "luks2-header.bin")
	size := int64(len(area))
	text := area[diskBinLen:]
	text = text[:bytes.IndexByte(text, 0)]
	withText := func(s string) []byte {
		a := bytes.Clone(area)
		copy(a[diskBinLen:], make([]byte, len(a)-diskBinLen))
		copy(a[diskBinLen:], s)
		return reseal(a)
	}
	dh := func(p, s []byte, dev int64) *diskHeader {
		t.Helper()
		d, err := parseDiskHeader(p)
		if err != nil {
			t.Fatalf("primary: %v", err)
		}
		d.twin = isTwin(d.area, s)
		d.devSize = dev
		return d
	}
	if h, err := dh(area, twinOf(area), imageSize).header(); err != nil || h.UUID != luks2TestUUID || len(h.Keyslots) == 0 {
		t.Fatalf("testdata header with its twin = %+v, %v", h, err)
	}
	replace := func(old, new string) string {
		t.Helper()
		if !bytes.Contains(text, []byte(old)) {
			t.Fatalf("testdata json has no %q", old)
		}
		return strings.Replace(string(text), old, new, 1)
	}
	seq := bytes.Clone(area)
	binary.BigEndian.PutUint64(seq[diskSeqIDOff:], binary.BigEndian.Uint64(area[diskSeqIDOff:])+1)
	label := bytes.Clone(area)
	copy(label[24:], "other")
	for name, c := range map[string]struct {
		p, s []byte
		dev  int64
	}{
		"no secondary":            {area, make([]byte, size), imageSize},
		"secondary seqid differs": {area, twinOf(reseal(seq)), imageSize},
		"secondary label differs": {area, twinOf(reseal(label)), imageSize},
		"secondary checksum":      {area, func() []byte { s := twinOf(area); s[diskCsumOff] ^= 1; return s }(), imageSize},
		"secondary as primary":    {area, reseal(bytes.Clone(area)), imageSize},
		"json not terminated":     {withText(string(text) + strings.Repeat(" ", int(size)-diskBinLen-len(text))), nil, imageSize},
		"bytes after the json":    {withText(string(text) + "\x00x"), nil, imageSize},
		"whitespace":              {withText(replace(`{"keyslots":`, `{ "keyslots":`)), nil, imageSize},
		"escape":                  {withText(replace(`"type":"luks2"`, `"type":"luks\u0032"`)), nil, imageSize},
		"duplicate member":        {withText(replace(`{"keyslots":`, `{"tokens":{},"keyslots":`)), nil, imageSize},
		"float":                   {withText(replace(`"stripes":4000`, `"stripes":4000.0`)), nil, imageSize},
		"no segments":             {withText(replace(`"segments":`, `"segmentz":`)), nil, imageSize},
		"json_size wrong":         {withText(replace(`"json_size":"12288"`, `"json_size":"12289"`)), nil, imageSize},
		"keyslots area cut off":   {area, twinOf(area), 2*size + 4096},
		"not json":                {withText("{nope"), nil, imageSize},
	} {
		s := c.s
		if s == nil {
			s = twinOf(c.p)
		}
		h, err := dh(c.p, s, c.dev).header()
		if !errors.Is(err, errNotVerified) {
			t.Errorf("%s: %+v, %v; want errNotVerified", name, h, err)
		}
	}
}

// FuzzHeaderJSON: whatever JSON area a pair of twin copies carries,
// diskHeader.header either leaves it to cryptsetup or gives the Header
// that cryptsetup's dump of it (json-c's pretty form of the same text)
// gives through parseMetadata.
func FuzzHeaderJSON(f *testing.F) {
	area := readTestdata(f, "luks2-header.bin")
	text := area[diskBinLen:]
	f.Add(bytes.Clone(text[:bytes.IndexByte(text, 0)]))
	f.Add([]byte(`{"keyslots":{},"tokens":{"0":{"type":"custos","keyslots":[]}},"segments":{},"digests":{},"config":{"json_size":"12288","keyslots_size":"16744448"}}`))
	// Accepted: the testdata header with a token of keyslot 0, and with a
	// second keyslot (argon2id) beside it.
	seed := string(text[:bytes.IndexByte(text, 0)])
	f.Add([]byte(strings.Replace(seed, `"tokens":{}`, `"tokens":{"3":{"type":"custos","keyslots":["0"],"ceremony":"00ff"}}`, 1)))
	f.Add([]byte(strings.Replace(seed, `"keyslots":{"0":`, `"keyslots":{"1":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"area":{"type":"raw","offset":"290816","size":"258048","encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"argon2id","time":4,"memory":32,"cpus":1,"salt":"HMg2NRvNeAMArxQDnGAjFfJZGwBQfiA7/Iw9O4NPWHE="}},"0":`, 1)))
	f.Fuzz(func(t *testing.T, js []byte) {
		if len(js) >= len(area)-diskBinLen {
			return
		}
		checkMemberNames(t, js)
		a := bytes.Clone(area)
		copy(a[diskBinLen:], make([]byte, len(a)-diskBinLen))
		copy(a[diskBinLen:], js)
		a = reseal(a)
		d, err := parseDiskHeader(a)
		if err != nil {
			t.Fatal(err)
		}
		d.twin, d.devSize = isTwin(a, twinOf(a)), imageSize
		h, err := d.header()
		if err != nil {
			if !errors.Is(err, errNotVerified) {
				t.Fatalf("error %v, want errNotVerified", err)
			}
			return
		}
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, js, "", "  "); err != nil {
			t.Fatalf("accepted text that does not indent: %v", err)
		}
		want := &Header{Version: 2, UUID: d.uuid}
		if err := parseMetadata(pretty.Bytes(), want); err != nil {
			t.Fatalf("accepted text whose dump does not parse: %v", err)
		}
		if !reflect.DeepEqual(h, want) {
			t.Fatalf("read %+v, dump gives %+v", h, want)
		}
	})
}

// checkMemberNames: the member names strict reads without decoding raw
// are, in order, those encoding/json reads from it.
func checkMemberNames(t *testing.T, raw []byte) {
	t.Helper()
	names, ok := memberNames(raw)
	if !ok || !json.Valid(raw) {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	var want []string
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("memberNames read %q from %q, not an object", names, raw)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(names, want) {
		t.Fatalf("memberNames(%q) = %q, encoding/json reads %q", raw, names, want)
	}
}

func TestMemberNames(t *testing.T) {
	for _, c := range []struct {
		raw   string
		names []string // nil: not read (strict decodes a map instead)
	}{
		{`{}`, []string{}},
		{`{"a":1}`, []string{"a"}},
		{`{"a":{"b":[1,{"c":","}],"d":"}"},"e":"{[,:\"","f":[],"g":null}`, nil}, // a backslash
		{`{"a":{"b":[1,{"c":","}],"d":"}"},"e":"{[,:","f":[],"g":null}`, []string{"a", "e", "f", "g"}},
		{`{"a":"x","A":"y"}`, []string{"a", "A"}},
		{`{ "a":1}`, nil},
		{`{"a":1}x`, nil},
		{`{"a":1`, nil},
		{`{"a":[1}`, nil},
		{`{"a\u0062":1}`, nil},
		{`[1]`, nil},
		{"{\"\x8d\":{}}", nil}, // not UTF-8: encoding/json reads U+FFFD (found by FuzzHeaderJSON)
	} {
		names, ok := memberNames([]byte(c.raw))
		if ok != (c.names != nil) || ok && !slices.Equal(names, c.names) && !(len(names) == 0 && len(c.names) == 0) {
			t.Errorf("memberNames(%s) = %q, %v; want %q", c.raw, names, ok, c.names)
		}
		checkMemberNames(t, []byte(c.raw))
	}
	// strict names an unknown member whichever way it read the names.
	var v struct {
		Type string `json:"type"`
	}
	for _, raw := range []string{`{"type":"x","Type":"y"}`, `{"type":"x", "Type":"y"}`} {
		if err := strict([]byte(raw), &v); err == nil || !strings.Contains(err.Error(), `member "Type"`) {
			t.Errorf("strict(%s) = %v, want member \"Type\" refused", raw, err)
		}
	}
	if err := strict([]byte(`{"type":"x"}`), &v); err != nil || v.Type != "x" {
		t.Errorf("strict: %v, %+v", err, v)
	}
}

// TestHeaderNativeAgreesWithCryptsetup: headers whose copies are
// checksummed twins in json-c's form, but whose metadata is not what
// cryptsetup writes for a plain volume (some of them headers cryptsetup
// itself refuses), are each left to cryptsetup, so that Inspect says
// what cryptsetup says: the same Header, or an error where cryptsetup
// refuses the header. Before the metadata was checked member by member,
// the first five were read without cryptsetup and given a Header.
func TestHeaderNativeAgreesWithCryptsetup(t *testing.T) {
	bin := realtest.Binary(t, "cryptsetup")
	area := readTestdata(t, "luks2-header.bin")
	text := area[diskBinLen:]
	text = text[:bytes.IndexByte(text, 0)]
	keyslot0 := `"0":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"area":{"type":"raw","offset":"32768","size":"258048","encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"pbkdf2","hash":"sha256","iterations":1000,"salt":"HMg2NRvNeAMArxQDnGAjFfJZGwBQfiA7/Iw9O4NPWHE="}}`
	if !bytes.Contains(text, []byte(keyslot0)) {
		t.Fatalf("testdata json has no keyslot %s", keyslot0)
	}
	replace := func(old, new string) string {
		t.Helper()
		if !bytes.Contains(text, []byte(old)) {
			t.Fatalf("testdata json has no %q", old)
		}
		return strings.Replace(string(text), old, new, 1)
	}
	cases := []struct{ name, json string }{
		{"a token of a keyslot that does not exist", replace(`"tokens":{}`, `"tokens":{"0":{"type":"custos","keyslots":["7"]}}`)},
		{"a keyslot area over the secondary header", replace(`"offset":"32768"`, `"offset":"16384"`)},
		{"two keyslots on one area", replace(keyslot0, keyslot0+","+strings.Replace(keyslot0, `"0":`, `"1":`, 1))},
		{"a digest of a segment that does not exist", replace(`"segments":["0"]`, `"segments":["1"]`)},
		{"a keyslot's type in capitals", replace(`{"type":"luks2"`, `{"TYPE":"luks2"`)},
		{"a keyslot area not aligned", replace(`"offset":"32768"`, `"offset":"33000"`)},
		{"a keyslot of another kdf", replace(`"kdf":{"type":"pbkdf2"`, `"kdf":{"type":"scrypt"`)},
		{"a member cryptsetup does not write", replace(`"key_size":64,"af"`, `"key_size":64,"note":"x","af"`)},
		{"requirements", replace(`"keyslots_size":"16744448"`, `"keyslots_size":"16744448","requirements":{"mandatory":["x-future"]}`)},
		{"a second segment", replace(`"segments":{`, `"segments":{"1":{"type":"linear","offset":"20971520","size":"dynamic"},`)},
		{"a top-level member of its own", replace(`"config":`, `"x-note":{},"config":`)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := bytes.Clone(area)
			copy(a[diskBinLen:], make([]byte, len(a)-diskBinLen))
			copy(a[diskBinLen:], c.json)
			a = reseal(a)
			img := filepath.Join(t.TempDir(), "crafted.img")
			if err := os.WriteFile(img, append(a, twinOf(a)...), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, imageSize); err != nil {
				t.Fatal(err)
			}
			dh, err := readDiskHeader(img)
			if err != nil || !dh.twin {
				t.Fatalf("crafted copies are not twins: %+v, %v", dh, err)
			}
			if h, err := dh.header(); !errors.Is(err, errNotVerified) {
				t.Fatalf("read without cryptsetup: %+v, %v; want it left to cryptsetup", h, err)
			}
			v := &Volume{Path: img, Cryptsetup: bin}
			want, werr := v.inspectCryptsetup(testCtx(t))
			got, gerr := v.Inspect(testCtx(t))
			if (werr == nil) != (gerr == nil) || werr == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("Inspect = %+v, %v; cryptsetup alone = %+v, %v", got, gerr, want, werr)
			}
			t.Logf("cryptsetup: %v", werr)
		})
	}
}

// The fuzz seeds that stand for headers cryptsetup writes are read
// without cryptsetup (else the fuzzer would explore refusals only).
func TestHeaderJSONSeedsAccepted(t *testing.T) {
	area := readTestdata(t, "luks2-header.bin")
	text := area[diskBinLen:]
	seed := string(text[:bytes.IndexByte(text, 0)])
	for _, js := range []string{
		seed,
		strings.Replace(seed, `"tokens":{}`, `"tokens":{"3":{"type":"custos","keyslots":["0"],"ceremony":"00ff"}}`, 1),
		strings.Replace(seed, `"keyslots":{"0":`, `"keyslots":{"1":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"area":{"type":"raw","offset":"290816","size":"258048","encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"argon2id","time":4,"memory":32,"cpus":1,"salt":"HMg2NRvNeAMArxQDnGAjFfJZGwBQfiA7/Iw9O4NPWHE="}},"0":`, 1),
	} {
		a := bytes.Clone(area)
		copy(a[diskBinLen:], make([]byte, len(a)-diskBinLen))
		copy(a[diskBinLen:], js)
		a = reseal(a)
		d, err := parseDiskHeader(a)
		if err != nil {
			t.Fatal(err)
		}
		d.twin, d.devSize = isTwin(a, twinOf(a)), imageSize
		if h, err := d.header(); err != nil || len(h.Keyslots) == 0 {
			t.Errorf("seed %.60s...: %+v, %v; want it read without cryptsetup", js, h, err)
		}
	}
}
