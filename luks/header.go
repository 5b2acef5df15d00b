package luks

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Keyslot counts, from the on-disk formats: LUKS1 (LUKS On-Disk Format
// Specification, LUKS_NUMKEYS) and LUKS2 (LUKS2 On-Disk Format
// Specification; libcryptsetup LUKS2_KEYSLOTS_MAX).
const (
	LUKS1Keyslots = 8
	LUKS2Keyslots = 32
	// LUKS2Tokens is the number of token IDs in a LUKS2 header
	// (libcryptsetup LUKS2_TOKENS_MAX).
	LUKS2Tokens = 32
)

// Header is what Inspect reads from a LUKS header.
type Header struct {
	// Version is the LUKS version, 1 or 2.
	Version int
	// UUID is the volume's UUID as cryptsetup prints it.
	UUID string
	// Keyslots are the keyslots in use, in ascending order.
	Keyslots []Keyslot
	// Tokens are the LUKS2 tokens of any type, in ascending order of ID;
	// always empty for LUKS1.
	Tokens []Token

	// jsonSize is the LUKS2 JSON area's size and jsonUsed about how much
	// of it the metadata takes (its compact encoding); 0 for LUKS1.
	jsonSize, jsonUsed int
}

// Keyslot is a keyslot in use.
type Keyslot struct {
	ID int
	// PBKDF is the keyslot's key derivation function: "pbkdf2",
	// "argon2i" or "argon2id"; "" for a LUKS2 keyslot that holds no key
	// (a "reencrypt" keyslot).
	PBKDF string
	// Salt is the keyslot's PBKDF salt in lowercase hexadecimal (LUKS1:
	// the keyslot's "Salt" in luksDump; LUKS2: keyslots[N].kdf.salt),
	// "" when the keyslot has none. cryptsetup draws a fresh random salt
	// for every key it adds, so the salt tells a keyslot apart from
	// another key added later under the same number.
	Salt string
}

// Keyslot returns the keyslot id in use, or nil.
func (h *Header) Keyslot(id int) *Keyslot {
	for i := range h.Keyslots {
		if h.Keyslots[i].ID == id {
			return &h.Keyslots[i]
		}
	}
	return nil
}

// Token is a LUKS2 token.
type Token struct {
	ID int
	// Type is the token's "type" member, e.g. TokenType.
	Type string
	// Keyslots are the keyslots the token is bound to.
	Keyslots []int
	// JSON is the whole token object as stored in the header, with the
	// whitespace outside strings removed (json.Compact; cryptsetup prints
	// the metadata indented). A token ImportToken or ReplaceToken wrote
	// reads back byte for byte as it was given.
	JSON json.RawMessage
}

// withToken returns a copy of h with token t added, or replacing the
// token with its ID.
func (h *Header) withToken(t Token) *Header {
	c := h.clone()
	if old := c.Token(t.ID); old != nil {
		c.jsonUsed += len(t.JSON) - len(old.JSON)
		*old = t
		return c
	}
	c.jsonUsed += len(t.JSON) + len(strconv.Itoa(t.ID)) + 4 // "N":,
	c.Tokens = append(c.Tokens, t)
	slices.SortFunc(c.Tokens, func(a, b Token) int { return a.ID - b.ID })
	return c
}

// withoutToken returns a copy of h without token id.
func (h *Header) withoutToken(id int) *Header {
	c := h.clone()
	if old := c.Token(id); old != nil {
		c.jsonUsed -= len(old.JSON) + len(strconv.Itoa(id)) + 4
	}
	c.Tokens = slices.DeleteFunc(c.Tokens, func(t Token) bool { return t.ID == id })
	return c
}

// clone copies h, its keyslots and tokens.
func (h *Header) clone() *Header {
	c := *h
	c.Keyslots = slices.Clone(h.Keyslots)
	c.Tokens = slices.Clone(h.Tokens)
	for i, t := range c.Tokens {
		t.Keyslots = slices.Clone(t.Keyslots)
		t.JSON = bytes.Clone(t.JSON)
		c.Tokens[i] = t
	}
	return &c
}

// MaxKeyslots is the number of keyslots the header's format has.
func (h *Header) MaxKeyslots() int {
	if h.Version == 1 {
		return LUKS1Keyslots
	}
	return LUKS2Keyslots
}

// InUse reports whether keyslot id holds a key.
func (h *Header) InUse(id int) bool {
	return slices.ContainsFunc(h.Keyslots, func(k Keyslot) bool { return k.ID == id })
}

// FreeKeyslots lists the keyslots that hold no key, in ascending order.
func (h *Header) FreeKeyslots() []int {
	var free []int
	for i := range h.MaxKeyslots() {
		if !h.InUse(i) {
			free = append(free, i)
		}
	}
	return free
}

// Token returns the token with the given ID, or nil.
func (h *Header) Token(id int) *Token {
	for i := range h.Tokens {
		if h.Tokens[i].ID == id {
			return &h.Tokens[i]
		}
	}
	return nil
}

// maxDump bounds the cryptsetup output the parsers accept. A LUKS2 JSON
// area is at most 4 MiB (LUKS2 On-Disk Format Specification: hdr_size up
// to 4 MiB).
const maxDump = 4 << 20

// parseDump reads the version and UUID from cryptsetup luksDump's text
// output (LUKS1 or LUKS2), and for LUKS1 the keyslots ("Key Slot N:
// ENABLED|DISABLED", one line for each of the 8). The output is treated as
// untrusted: a header can hold anything, and cryptsetup prints parts of it.
func parseDump(out []byte) (*Header, error) {
	if len(out) > maxDump {
		return nil, errors.New("parse luksDump: output too long")
	}
	h := &Header{}
	seen := make(map[int]bool)
	// salt is the LUKS1 keyslot whose "Salt:" lines are being read (the
	// salt continues on lines without a colon), else nil; slot the
	// enabled LUKS1 keyslot whose section the lines are in, else -1.
	var salt *strings.Builder
	slot := -1
	salts := map[int]*strings.Builder{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), maxDump)
	for sc.Scan() {
		line := sc.Text()
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			if salt != nil && strings.TrimSpace(line) != "" {
				salt.WriteString(strings.Join(strings.Fields(line), ""))
			} else {
				salt = nil
			}
			continue
		}
		salt = nil
		val = strings.TrimSpace(val)
		if slot >= 0 && strings.TrimSpace(key) == "Salt" && strings.HasPrefix(key, "\t") {
			if salts[slot] != nil {
				return nil, fmt.Errorf("parse luksDump: keyslot %d: two salt lines", slot)
			}
			salt = &strings.Builder{}
			salt.WriteString(strings.Join(strings.Fields(val), ""))
			salts[slot] = salt
			continue
		}
		switch {
		case key == "Version":
			if h.Version != 0 {
				return nil, errors.New("parse luksDump: two version lines")
			}
			switch val {
			case "1":
				h.Version = 1
			case "2":
				h.Version = 2
			default:
				return nil, fmt.Errorf("parse luksDump: unsupported luks version %q", clip(val))
			}
		case key == "UUID":
			if h.UUID != "" {
				return nil, errors.New("parse luksDump: two uuid lines")
			}
			if !validUUID(val) {
				return nil, fmt.Errorf("parse luksDump: invalid uuid %q", clip(val))
			}
			h.UUID = val
		case strings.HasPrefix(key, "Key Slot "):
			id, err := strconv.Atoi(strings.TrimPrefix(key, "Key Slot "))
			if err != nil || id < 0 || id >= LUKS1Keyslots || seen[id] {
				return nil, fmt.Errorf("parse luksDump: bad keyslot line %q", clip(line))
			}
			seen[id] = true
			slot = -1
			switch val {
			case "ENABLED":
				h.Keyslots = append(h.Keyslots, Keyslot{ID: id, PBKDF: "pbkdf2"})
				slot = id
			case "DISABLED":
			default:
				return nil, fmt.Errorf("parse luksDump: bad keyslot state %q", clip(val))
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse luksDump: %w", err)
	}
	if h.Version == 0 {
		return nil, errors.New("parse luksDump: no version line")
	}
	if h.UUID == "" {
		return nil, errors.New("parse luksDump: no uuid line")
	}
	if h.Version == 1 && len(seen) != LUKS1Keyslots {
		return nil, fmt.Errorf("parse luksDump: %d keyslot lines, want %d", len(seen), LUKS1Keyslots)
	}
	if h.Version == 2 && len(seen) != 0 {
		return nil, errors.New("parse luksDump: luks1 keyslot lines in a luks2 dump")
	}
	for i := range h.Keyslots {
		if b := salts[h.Keyslots[i].ID]; b != nil {
			s, err := hexSalt(b.String())
			if err != nil {
				return nil, fmt.Errorf("parse luksDump: keyslot %d: %w", h.Keyslots[i].ID, err)
			}
			h.Keyslots[i].Salt = s
		}
	}
	slices.SortFunc(h.Keyslots, func(a, b Keyslot) int { return a.ID - b.ID })
	return h, nil
}

// metadata is the part of the LUKS2 JSON area (LUKS2 On-Disk Format
// Specification, "JSON area") that this package reads.
type metadata struct {
	Keyslots map[string]struct {
		Type string `json:"type"`
		KDF  struct {
			Type string `json:"type"`
			Salt string `json:"salt"`
		} `json:"kdf"`
	} `json:"keyslots"`
	Tokens map[string]json.RawMessage `json:"tokens"`
	Config struct {
		JSONSize string `json:"json_size"`
	} `json:"config"`
}

// tokenHead is the part of a token object (LUKS2 On-Disk Format
// Specification, "Tokens") that every token has.
type tokenHead struct {
	Type     *string   `json:"type"`
	Keyslots *[]string `json:"keyslots"`
}

// parseMetadata reads keyslots and tokens from the output of cryptsetup
// luksDump --dump-json-metadata, into h. Like parseDump it treats its input
// as untrusted.
func parseMetadata(out []byte, h *Header) error {
	return parseMetadataCompact(out, h, -1)
}

// parseMetadataCompact is parseMetadata of a text whose compact form is
// compactLen bytes long, when the caller knows (-1: it does not).
func parseMetadataCompact(out []byte, h *Header, compactLen int) error {
	if len(out) > maxDump {
		return errors.New("parse luks2 metadata: output too long")
	}
	var md metadata
	if err := json.Unmarshal(out, &md); err != nil {
		return fmt.Errorf("parse luks2 metadata: %w", err)
	}
	if md.Keyslots == nil || md.Tokens == nil {
		return errors.New("parse luks2 metadata: no keyslots or tokens object")
	}
	h.Keyslots = nil
	h.Tokens = nil
	if md.Config.JSONSize != "" {
		n, err := strconv.Atoi(md.Config.JSONSize)
		if err != nil || n <= 0 || n > maxDump {
			return fmt.Errorf("parse luks2 metadata: bad json_size %q", clip(md.Config.JSONSize))
		}
		h.jsonSize = n
	}
	if compactLen >= 0 {
		h.jsonUsed = compactLen
	} else {
		var compact bytes.Buffer
		if err := json.Compact(&compact, out); err == nil {
			h.jsonUsed = compact.Len()
		}
	}
	for k, ks := range md.Keyslots {
		id, err := parseID(k, LUKS2Keyslots)
		if err != nil {
			return fmt.Errorf("parse luks2 metadata: keyslot %q: %w", clip(k), err)
		}
		// A "luks2" keyslot holds a key behind a KDF; others (a
		// "reencrypt" keyslot during online re-encryption) hold none.
		if ks.Type == "" {
			return fmt.Errorf("parse luks2 metadata: keyslot %d has no type", id)
		}
		if ks.Type == "luks2" && ks.KDF.Type == "" {
			return fmt.Errorf("parse luks2 metadata: keyslot %d has no kdf type", id)
		}
		k := Keyslot{ID: id, PBKDF: ks.KDF.Type}
		if ks.KDF.Salt != "" {
			b, err := base64.StdEncoding.DecodeString(ks.KDF.Salt)
			if err != nil || len(b) > maxSalt {
				return fmt.Errorf("parse luks2 metadata: keyslot %d: bad kdf salt", id)
			}
			k.Salt = hex.EncodeToString(b)
		}
		h.Keyslots = append(h.Keyslots, k)
	}
	for k, raw := range md.Tokens {
		id, err := parseID(k, LUKS2Tokens)
		if err != nil {
			return fmt.Errorf("parse luks2 metadata: token %q: %w", clip(k), err)
		}
		tok, err := parseToken(id, raw)
		if err != nil {
			return fmt.Errorf("parse luks2 metadata: %w", err)
		}
		h.Tokens = append(h.Tokens, *tok)
	}
	slices.SortFunc(h.Keyslots, func(a, b Keyslot) int { return a.ID - b.ID })
	slices.SortFunc(h.Tokens, func(a, b Token) int { return a.ID - b.ID })
	return nil
}

// parseToken checks one token object and reads its type and keyslots.
func parseToken(id int, raw []byte) (*Token, error) {
	var th tokenHead
	if err := json.Unmarshal(raw, &th); err != nil {
		return nil, fmt.Errorf("token %d: %w", id, err)
	}
	if th.Type == nil || *th.Type == "" {
		return nil, fmt.Errorf("token %d: no type", id)
	}
	if th.Keyslots == nil {
		return nil, fmt.Errorf("token %d: no keyslots array", id)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, fmt.Errorf("token %d: %w", id, err)
	}
	t := &Token{ID: id, Type: *th.Type, JSON: json.RawMessage(compact.Bytes())}
	for _, s := range *th.Keyslots {
		ks, err := parseID(s, LUKS2Keyslots)
		if err != nil {
			return nil, fmt.Errorf("token %d: keyslot %q: %w", id, clip(s), err)
		}
		t.Keyslots = append(t.Keyslots, ks)
	}
	slices.Sort(t.Keyslots)
	return t, nil
}

// maxSalt bounds a keyslot's salt, in bytes (LUKS1 and cryptsetup's
// LUKS2 keyslots use 32).
const maxSalt = 256

// hexSalt checks a LUKS1 salt read from luksDump (hexadecimal, spaces
// removed) and returns it in lowercase.
func hexSalt(s string) (string, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) == 0 || len(b) > maxSalt {
		return "", fmt.Errorf("bad salt %q", clip(s))
	}
	return hex.EncodeToString(b), nil
}

// parseID parses a LUKS2 object key: a decimal number below max, written
// without sign or leading zeros, as cryptsetup writes them.
func parseID(s string, max int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n >= max || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("not an id below %d", max)
	}
	return n, nil
}

// validUUID accepts the 8-4-4-4-12 hexadecimal form cryptsetup writes.
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// clip shortens untrusted text quoted in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// On-disk magic (LUKS1 and LUKS2 On-Disk Format Specifications, binary
// header): the primary header starts with "LUKS\xba\xbe", a LUKS2
// secondary header with "SKUL\xba\xbe", followed by a big-endian 16-bit
// version.
var (
	magicPrimary   = []byte{'L', 'U', 'K', 'S', 0xba, 0xbe}
	magicSecondary = []byte{'S', 'K', 'U', 'L', 0xba, 0xbe}
)

// secondaryOffsets are where a LUKS2 secondary header may start: right
// after a primary binary header plus JSON area of one of the allowed sizes,
// 16 KiB to 4 MiB (libcryptsetup hdr_areas[]).
var secondaryOffsets = []int64{16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20}

// headerProbe is what the first bytes of a file say about a LUKS header,
// without checking it: classify uses it to tell "damaged" from "none".
type headerProbe struct {
	magic   bool // a primary or secondary LUKS magic is present
	version int  // the version next to the first magic found, else 0
}

// probeHeader looks for LUKS magic in path.
func probeHeader(path string) headerProbe {
	f, err := os.Open(path)
	if err != nil {
		return headerProbe{}
	}
	defer f.Close()
	var b [8]byte
	check := func(off int64, magic []byte) (headerProbe, bool) {
		b = [8]byte{}
		n, err := f.ReadAt(b[:], off)
		if err != nil && err != io.EOF || n < len(magic) || !bytes.Equal(b[:6], magic) {
			return headerProbe{}, false
		}
		return headerProbe{magic: true, version: int(binary.BigEndian.Uint16(b[6:8]))}, true
	}
	if p, ok := check(0, magicPrimary); ok {
		return p
	}
	for _, off := range secondaryOffsets {
		if p, ok := check(off, magicSecondary); ok {
			return p
		}
	}
	return headerProbe{}
}
