package luks

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// checkUnderstood is the last condition diskHeader.header puts on a
// LUKS2 JSON area it reads without cryptsetup: the metadata of a plain
// volume exactly as cryptsetup writes it, every member known, every
// reference resolved (LUKS2 On-Disk Format Specification, section 3;
// libcryptsetup's LUKS2_hdr_validate). It is stricter than cryptsetup:
// whatever it refuses, cryptsetup reads instead (Inspect), so that what
// custos reads by itself is only ever what cryptsetup would accept and
// read the same way. size is one header copy's size (binary header and
// JSON area), keyslotsSize the config's keyslots_size, already checked.
//
// What it takes:
//
//   - the top level: keyslots, tokens, segments, digests and config, no
//     other member;
//   - config: json_size, keyslots_size (a multiple of 4096) and, if any,
//     flags (an array of strings); no requirements (an online
//     re-encryption, or a feature this reader does not know);
//   - keyslots: IDs 0-31, each of type luks2 with key_size, area (raw,
//     with offset, size, encryption and key_size), kdf (pbkdf2 with hash,
//     iterations and salt; argon2i or argon2id with time, memory, cpus
//     and salt), af (luks1 with stripes and hash) and, if any, priority;
//     each area aligned to 4096 bytes, within the keyslots area (from
//     twice size on, keyslots_size long), and no two overlapping;
//   - segments: exactly one, ID 0, of type crypt with offset, size
//     (dynamic or a number), iv_tweak, encryption and sector_size (512,
//     1024, 2048 or 4096), starting at or after the keyslots area's end;
//   - digests: IDs 0-31, each of type pbkdf2 with keyslots and segments
//     (arrays of IDs that exist), hash, iterations, salt and digest; a
//     keyslot in at most one digest;
//   - tokens: IDs 0-31, each with a type (a non-empty string) and
//     keyslots (an array of IDs of keyslots that exist); the other members
//     of a token are its program's.
//
// Numbers that cryptsetup writes as strings must be decimal without a
// leading zero and fit in an int64; the others must be plain integers
// (checkWritten has checked that).
func checkUnderstood(text []byte, size, keyslotsSize int64) error {
	var top struct {
		Keyslots map[string]json.RawMessage `json:"keyslots"`
		Tokens   map[string]json.RawMessage `json:"tokens"`
		Segments map[string]json.RawMessage `json:"segments"`
		Digests  map[string]json.RawMessage `json:"digests"`
		Config   json.RawMessage            `json:"config"`
	}
	if err := strict(text, &top); err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	if top.Keyslots == nil || top.Tokens == nil || top.Segments == nil || top.Digests == nil || top.Config == nil {
		return errors.New("metadata: a top-level member is missing")
	}
	var config struct {
		JSONSize     string    `json:"json_size"`
		KeyslotsSize string    `json:"keyslots_size"`
		Flags        *[]string `json:"flags"`
	}
	if err := strict(top.Config, &config); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if _, ok := decimal(config.JSONSize); !ok {
		return errors.New("config: json_size is not a decimal number")
	}
	if ks, ok := decimal(config.KeyslotsSize); !ok || ks != keyslotsSize || ks%4096 != 0 {
		return errors.New("config: keyslots_size is not a multiple of 4096")
	}
	areaStart, areaEnd := 2*size, 2*size+keyslotsSize

	type interval struct{ start, end int64 }
	var areas []interval
	for id, raw := range top.Keyslots {
		if _, err := parseID(id, LUKS2Keyslots); err != nil {
			return fmt.Errorf("keyslot %q: %w", clip(id), err)
		}
		var ks struct {
			Type     string `json:"type"`
			KeySize  *int64 `json:"key_size"`
			Priority *int64 `json:"priority"`
			Area     struct {
				Type       string `json:"type"`
				Offset     string `json:"offset"`
				Size       string `json:"size"`
				Encryption string `json:"encryption"`
				KeySize    *int64 `json:"key_size"`
			} `json:"area"`
			KDF json.RawMessage `json:"kdf"`
			AF  struct {
				Type    string `json:"type"`
				Stripes *int64 `json:"stripes"`
				Hash    string `json:"hash"`
			} `json:"af"`
		}
		if err := strict(raw, &ks); err != nil {
			return fmt.Errorf("keyslot %s: %w", id, err)
		}
		if ks.Type != "luks2" || ks.KeySize == nil || *ks.KeySize <= 0 ||
			ks.Priority != nil && (*ks.Priority < 0 || *ks.Priority > 2) {
			return fmt.Errorf("keyslot %s: not a luks2 keyslot as cryptsetup writes it", id)
		}
		off, ok1 := decimal(ks.Area.Offset)
		n, ok2 := decimal(ks.Area.Size)
		if ks.Area.Type != "raw" || !ok1 || !ok2 || ks.Area.Encryption == "" || ks.Area.KeySize == nil || *ks.Area.KeySize <= 0 {
			return fmt.Errorf("keyslot %s: area is not a raw area as cryptsetup writes it", id)
		}
		if off%4096 != 0 || n <= 0 || n%4096 != 0 || off < areaStart || off > areaEnd || n > areaEnd-off {
			return fmt.Errorf("keyslot %s: area is not aligned within the keyslots area", id)
		}
		areas = append(areas, interval{off, off + n})
		if ks.AF.Type != "luks1" || ks.AF.Stripes == nil || *ks.AF.Stripes <= 0 || ks.AF.Hash == "" {
			return fmt.Errorf("keyslot %s: af is not luks1 as cryptsetup writes it", id)
		}
		if err := checkKDF(ks.KDF); err != nil {
			return fmt.Errorf("keyslot %s: %w", id, err)
		}
	}
	slices.SortFunc(areas, func(a, b interval) int { return cmp.Compare(a.start, b.start) })
	for i := 1; i < len(areas); i++ {
		if areas[i].start < areas[i-1].end {
			return errors.New("keyslots: two areas overlap")
		}
	}

	if len(top.Segments) != 1 || top.Segments["0"] == nil {
		return errors.New("segments: not one segment 0")
	}
	var seg struct {
		Type       string `json:"type"`
		Offset     string `json:"offset"`
		Size       string `json:"size"`
		IVTweak    string `json:"iv_tweak"`
		Encryption string `json:"encryption"`
		SectorSize *int64 `json:"sector_size"`
	}
	if err := strict(top.Segments["0"], &seg); err != nil {
		return fmt.Errorf("segment 0: %w", err)
	}
	off, ok1 := decimal(seg.Offset)
	_, ok2 := decimal(seg.IVTweak)
	_, ok3 := decimal(seg.Size)
	if seg.Type != "crypt" || !ok1 || !ok2 || !ok3 && seg.Size != "dynamic" || seg.Encryption == "" ||
		seg.SectorSize == nil || !slices.Contains([]int64{512, 1024, 2048, 4096}, *seg.SectorSize) {
		return errors.New("segment 0: not a crypt segment as cryptsetup writes it")
	}
	if off < areaEnd {
		return errors.New("segment 0: starts within the header or the keyslots area")
	}

	inDigest := map[string]bool{}
	for id, raw := range top.Digests {
		if _, err := parseID(id, LUKS2Keyslots); err != nil {
			return fmt.Errorf("digest %q: %w", clip(id), err)
		}
		var d struct {
			Type       string   `json:"type"`
			Keyslots   []string `json:"keyslots"`
			Segments   []string `json:"segments"`
			Hash       string   `json:"hash"`
			Iterations *int64   `json:"iterations"`
			Salt       string   `json:"salt"`
			Digest     string   `json:"digest"`
		}
		if err := strict(raw, &d); err != nil {
			return fmt.Errorf("digest %s: %w", id, err)
		}
		if d.Type != "pbkdf2" || d.Keyslots == nil || d.Segments == nil || d.Hash == "" || d.Iterations == nil || *d.Iterations <= 0 ||
			!base64Std(d.Salt) || !base64Std(d.Digest) {
			return fmt.Errorf("digest %s: not a pbkdf2 digest as cryptsetup writes it", id)
		}
		for _, k := range d.Keyslots {
			if top.Keyslots[k] == nil || inDigest[k] {
				return fmt.Errorf("digest %s: keyslot %q missing, or in two digests", id, clip(k))
			}
			inDigest[k] = true
		}
		for _, s := range d.Segments {
			if top.Segments[s] == nil {
				return fmt.Errorf("digest %s: segment %q missing", id, clip(s))
			}
		}
	}

	for id, raw := range top.Tokens {
		if _, err := parseID(id, LUKS2Tokens); err != nil {
			return fmt.Errorf("token %q: %w", clip(id), err)
		}
		var t struct {
			Type     *string   `json:"type"`
			Keyslots *[]string `json:"keyslots"`
		}
		if err := json.Unmarshal(raw, &t); err != nil || len(raw) == 0 || raw[0] != '{' {
			return fmt.Errorf("token %s: not an object", id)
		}
		if t.Type == nil || *t.Type == "" || t.Keyslots == nil {
			return fmt.Errorf("token %s: no type or no keyslots array", id)
		}
		for _, k := range *t.Keyslots {
			if top.Keyslots[k] == nil {
				return fmt.Errorf("token %s: keyslot %q missing", id, clip(k))
			}
		}
	}
	return nil
}

// checkKDF takes a keyslot's kdf object as cryptsetup writes it.
func checkKDF(raw json.RawMessage) error {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return fmt.Errorf("kdf: %w", err)
	}
	switch head.Type {
	case "pbkdf2":
		var k struct {
			Type       string `json:"type"`
			Hash       string `json:"hash"`
			Iterations *int64 `json:"iterations"`
			Salt       string `json:"salt"`
		}
		if err := strict(raw, &k); err != nil || k.Hash == "" || k.Iterations == nil || *k.Iterations <= 0 || !base64Std(k.Salt) {
			return errors.New("kdf: not pbkdf2 as cryptsetup writes it")
		}
	case "argon2i", "argon2id":
		var k struct {
			Type   string `json:"type"`
			Time   *int64 `json:"time"`
			Memory *int64 `json:"memory"`
			CPUs   *int64 `json:"cpus"`
			Salt   string `json:"salt"`
		}
		if err := strict(raw, &k); err != nil || k.Time == nil || *k.Time <= 0 || k.Memory == nil || *k.Memory <= 0 ||
			k.CPUs == nil || *k.CPUs <= 0 || !base64Std(k.Salt) {
			return errors.New("kdf: not argon2 as cryptsetup writes it")
		}
	default:
		return errors.New("kdf: of a type this reader does not know")
	}
	return nil
}

// strict decodes one JSON object into v (a pointer to a struct), after
// checking that every member's name is, exactly, the json name of one of
// v's fields (encoding/json alone would match names regardless of case,
// where json-c, and so cryptsetup, would not see the member). A field
// whose member is missing keeps its zero value, which the callers refuse
// (empty strings, nil pointers, slices and maps).
func strict(raw []byte, v any) error {
	if len(raw) == 0 || raw[0] != '{' {
		return errors.New("not an object")
	}
	names, ok := memberNames(raw)
	if !ok {
		var members map[string]json.RawMessage
		if err := json.Unmarshal(raw, &members); err != nil {
			return err
		}
		names = slices.Sorted(maps.Keys(members))
	}
	t := reflect.TypeOf(v).Elem()
	for _, name := range names {
		known := false
		for i := 0; i < t.NumField() && !known; i++ {
			tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			known = tag == name
		}
		if !known {
			return fmt.Errorf("member %q is not one cryptsetup writes here", clip(name))
		}
	}
	return json.Unmarshal(raw, v)
}

// memberNames lists the member names of the JSON object raw, in order,
// when raw is in the form checkWritten asks of a header's text: compact,
// in UTF-8, with no backslash in a string. ok is false for anything else, which
// strict then decodes into a map instead (a second pass over the text,
// which this saves a header read: the text was checked by checkWritten).
// On text that is not JSON at all it may list names or not; strict's
// json.Unmarshal then refuses the text either way.
func memberNames(raw []byte) (names []string, ok bool) {
	if len(raw) < 2 || raw[0] != '{' {
		return nil, false
	}
	if raw[1] == '}' {
		return nil, len(raw) == 2
	}
	for i := 1; ; {
		name, next, ok := scanString(raw, i)
		if !ok || next >= len(raw) || raw[next] != ':' || !utf8.Valid(name) {
			// encoding/json reads a name not in UTF-8 with U+FFFD
			// in place of its bad bytes.
			return nil, false
		}
		names = append(names, string(name))
		if i, ok = skipValue(raw, next+1); !ok {
			return nil, false
		}
		switch raw[i] {
		case ',':
			i++
		case '}':
			return names, i+1 == len(raw)
		default:
			return nil, false
		}
	}
}

// scanString reads the string that starts at raw[i] (its opening quote):
// its bytes, and the index just past its closing quote. ok is false when
// there is no string there or it holds a backslash.
func scanString(raw []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(raw) || raw[i] != '"' {
		return nil, 0, false
	}
	end := bytes.IndexByte(raw[i+1:], '"')
	if end < 0 {
		return nil, 0, false
	}
	s = raw[i+1 : i+1+end]
	if bytes.IndexByte(s, '\\') >= 0 {
		return nil, 0, false
	}
	return s, i + end + 2, true
}

// skipValue skips the member value that starts at raw[i] and returns the
// index of the ',' or '}' that ends it. ok is false at whitespace, a
// backslash or the text's end.
func skipValue(raw []byte, i int) (end int, ok bool) {
	depth := 0
	for i < len(raw) {
		switch raw[i] {
		case '"':
			if _, i, ok = scanString(raw, i); !ok {
				return 0, false
			}
			continue
		case '{', '[':
			depth++
		case ']':
			if depth == 0 {
				return 0, false
			}
			depth--
		case '}':
			if depth == 0 {
				return i, true
			}
			depth--
		case ',':
			if depth == 0 {
				return i, true
			}
		case ' ', '\t', '\n', '\r':
			return 0, false
		}
		i++
	}
	return 0, false
}

// decimal reads a number cryptsetup writes as a string: decimal digits,
// no sign, no leading zero, in int64 range.
func decimal(s string) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0 && strconv.FormatInt(n, 10) == s
}

// base64Std says whether s is non-empty standard base64 with padding.
func base64Std(s string) bool {
	_, err := base64.StdEncoding.Strict().DecodeString(s)
	return s != "" && err == nil
}
