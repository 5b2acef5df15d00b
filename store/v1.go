package store

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// This file reads the version 1 encodings of docs/FORMAT.md's appendix,
// which custos wrote before the version 2 record: the LUKS2 token (members
// in any order) and the body of a ceremony event. Both become a Record
// with Version 1. Nothing here writes.

var (
	tokenV1Members = []string{"type", "keyslots", "custos_version", "ceremony", "volume", "k", "n", "keyslot", "digest", "status", "replaces", "anchor", "cards"}
	cardV1Members  = []string{"index", "serial", "slot", "fingerprint", "custodian", "commitment", "sealed"}
	bodyV1Members  = []string{"id", "volume_uuid", "k", "n", "keyslot", "keyslot_salt", "cards", "digest", "status", "replaces", "replaced_by"}
	cardV1Body     = []string{"index", "serial", "fingerprint", "slot", "custodian", "commitment", "sealed_share"}
)

// maxV1Text is the limit version 1 put on names (the event actor's).
const maxV1Text = 256

// tokenV1 reads a version 1 token: the members in any order, each at most
// once, with the rules of section 7 as far as they go.
func (r *reader) tokenV1() (*Token, error) {
	var o object
	if err := o.open(r, "", tokenV1Members, (1<<13-1)&^(1<<10|1<<11)); err != nil {
		return nil, err
	}
	o.anyOrder = true
	t := &Token{}
	rec := &Record{Version: 1, AllowUnattested: true}
	t.Record = rec
	var k, n uint64
	var cardsAt []int // the card positions, for paths after sorting
	for {
		j, err := o.next()
		if err != nil {
			return nil, err
		}
		if j < 0 {
			break
		}
		var p string
		switch tokenV1Members[j] {
		case "type":
			_, p = r.lit(TokenType)
		case "keyslots":
			if t.Keyslots, err = r.keyslots("keyslots"); err != nil {
				return nil, err
			}
			if len(t.Keyslots) > 1 {
				return nil, r.fail("keyslots[1]", "more than one keyslot")
			}
		case "custos_version":
			var v uint64
			if v, p = r.uint(); p == "" && v != 1 {
				p = fmt.Sprintf("custos_version %d, want 1", v)
			}
		case "ceremony":
			p = r.hexInto(rec.ID[:])
		case "volume":
			var s []byte
			if s, p = r.str(); p == "" {
				rec.Volume, p = parseVolumeStrict(s)
			}
		case "k":
			k, p = r.uint()
		case "n":
			n, p = r.uint()
		case "keyslot":
			rec.Keyslot, p = r.intIn(0, MaxKeyslot)
		case "digest":
			p = r.hexInto(rec.Digest[:])
		case "status":
			_, p = r.lit(StatusActive)
		case "replaces":
			p = r.hexInto(rec.Replaces[:])
		case "anchor":
			var s []byte
			if s, p = r.str(); p == "" {
				t.Anchor, p = anchorProblem(s)
			}
		case "cards":
			var a array
			if err := a.open(r, "cards"); err != nil {
				return nil, err
			}
			for {
				more, err := a.next()
				if err != nil {
					return nil, err
				}
				if !more {
					break
				}
				c, err := r.cardV1(elem("cards", a.n-1), cardV1Members, "sealed", "fingerprint")
				if err != nil {
					return nil, err
				}
				rec.Cards = append(rec.Cards, c)
				cardsAt = append(cardsAt, a.n-1)
			}
		}
		if p != "" {
			return nil, o.failMember(p)
		}
	}
	// The rules between members, once all are read.
	if k < 2 || k > 255 {
		return nil, r.fail("k", fmt.Sprintf("%d out of range 2-255", k))
	}
	if n < k || n > 255 {
		return nil, r.fail("n", fmt.Sprintf("%d out of range %d-255", n, k))
	}
	rec.K, rec.N = int(k), int(n)
	if rec.ID == ([16]byte{}) {
		return nil, r.fail("ceremony", "all zero")
	}
	if rec.Replaces != ([16]byte{}) {
		if p := replacesProblem(rec); p != "" {
			return nil, r.fail("replaces", p)
		}
	}
	if len(t.Keyslots) == 1 && t.Keyslots[0] != rec.Keyslot {
		return nil, r.fail("keyslot", fmt.Sprintf("keyslot %d, but the token is bound to keyslot %d", rec.Keyslot, t.Keyslots[0]))
	}
	if err := r.v1Cards(rec, "cards", cardsAt, "fingerprint"); err != nil {
		return nil, err
	}
	if len(rec.Cards) != rec.N {
		return nil, r.fail("cards", fmt.Sprintf("%d cards, want all %d", len(rec.Cards), rec.N))
	}
	return t, nil
}

// cardV1 reads a version 1 card: of a token (members in any order,
// standard base64 sealed share required) or of an event body (members in
// the order encoding/json wrote them, commitment and sealed share
// optional).
func (r *reader) cardV1(path string, members []string, sealedName, keyName string) (RecordCard, error) {
	var c RecordCard
	var o object
	token := sealedName == "sealed"
	req := uint64(1<<0 | 1<<1 | 1<<2 | 1<<3)
	if token {
		req |= 1<<5 | 1<<6
	} else {
		req |= 1 << 4 // encoding/json wrote "custodian" always
	}
	if err := o.open(r, path, members, req); err != nil {
		return c, err
	}
	o.anyOrder = token
	for {
		j, err := o.next()
		if err != nil {
			return c, err
		}
		if j < 0 {
			return c, nil
		}
		var p string
		switch members[j] {
		case "index":
			c.Index, p = r.intIn(1, 255)
		case "serial":
			var s []byte
			if s, p = r.str(); p == "" {
				if p = serialProblem(s); p == "" {
					c.Serial = string(s)
				}
			}
		case "slot":
			var s []byte
			if s, p = r.str(); p == "" {
				c.Slot, p = slotProblem(s)
			}
		case keyName:
			p = r.hexInto(c.Key[:])
		case "custodian":
			c.Custodian, p = r.textV1(token)
		case "commitment":
			if token {
				p = r.hexInto(c.Commitment[:])
			} else {
				var b []byte
				if b, p = r.b64std(); p == "" {
					if len(b) != len(c.Commitment) {
						p = fmt.Sprintf("commitment of %d bytes, want %d", len(b), len(c.Commitment))
					}
					copy(c.Commitment[:], b)
				}
			}
		case sealedName:
			if c.Sealed, p = r.b64std(); p == "" {
				p = sealedProblem(c.Sealed)
			}
		}
		if p != "" {
			return c, o.failMember(p)
		}
	}
}

// v1Cards checks a version 1 record's cards once k and n are known: each
// index in 1..n and each index, serial and key at most once; then sorts
// them by index.
func (r *reader) v1Cards(rec *Record, path string, at []int, keyName string) error {
	for i := range rec.Cards {
		c := &rec.Cards[i]
		cp := elem(path, at[i])
		if c.Index > rec.N {
			return r.fail(cp+".index", fmt.Sprintf("%d out of range 1-%d", c.Index, rec.N))
		}
		for _, b := range rec.Cards[:i] {
			switch {
			case b.Index == c.Index:
				return r.fail(cp+".index", fmt.Sprintf("index %d twice", c.Index))
			case b.Serial == c.Serial:
				return r.fail(cp+".serial", fmt.Sprintf("card %s holds share %d too", c.Serial, b.Index))
			case b.Key == c.Key:
				return r.fail(cp+"."+keyName, fmt.Sprintf("the key of share %d too", b.Index))
			}
		}
	}
	if len(rec.Cards) > rec.N {
		return r.fail(path, fmt.Sprintf("%d cards for n=%d", len(rec.Cards), rec.N))
	}
	slices.SortFunc(rec.Cards, func(a, b RecordCard) int { return a.Index - b.Index })
	return nil
}

// textV1 reads a version 1 name: valid UTF-8 without control characters,
// at most 256 bytes, JSON escapes allowed (encoding/json wrote <, > and &
// as \u003c, \u003e and \u0026). A token's name is never empty.
func (r *reader) textV1(token bool) (string, string) {
	if !r.peek('"') {
		return "", r.problem("a string")
	}
	r.i++
	start := r.i
	esc := false
	for {
		if r.i >= len(r.b) {
			return "", "unterminated string"
		}
		c := r.b[r.i]
		if c == '"' {
			break
		}
		if c < 0x20 {
			return "", "control character in string"
		}
		if c == '\\' {
			esc = true
			r.i++
		}
		r.i++
	}
	raw := r.b[start:r.i]
	r.i++
	if !utf8.Valid(raw) {
		return "", "invalid utf-8"
	}
	s := string(raw)
	if esc {
		var p string
		if s, p = unescapeJSON(raw); p != "" {
			return "", p
		}
	}
	if s == "" && token {
		return "", "empty text"
	}
	if len(s) > maxV1Text {
		return "", fmt.Sprintf("text of %d bytes, more than %d", len(s), maxV1Text)
	}
	if !utf8.ValidString(s) {
		return "", "invalid utf-8"
	}
	for _, c := range s {
		if unicode.IsControl(c) {
			return "", "control character in text"
		}
	}
	return s, ""
}

// unescapeJSON decodes the escapes of a JSON string's content.
func unescapeJSON(b []byte) (string, string) {
	var sb strings.Builder
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\\' {
			sb.WriteByte(c)
			continue
		}
		i++
		if i >= len(b) {
			return "", "bad escape"
		}
		switch b[i] {
		case '"', '\\', '/':
			sb.WriteByte(b[i])
		case 'b':
			sb.WriteByte('\b')
		case 'f':
			sb.WriteByte('\f')
		case 'n':
			sb.WriteByte('\n')
		case 'r':
			sb.WriteByte('\r')
		case 't':
			sb.WriteByte('\t')
		case 'u':
			r1, ok := hex4(b[i+1:])
			if !ok {
				return "", "bad escape"
			}
			i += 4
			if utf16.IsSurrogate(r1) {
				if i+2 >= len(b) || b[i+1] != '\\' || b[i+2] != 'u' {
					return "", "unpaired surrogate"
				}
				r2, ok := hex4(b[i+3:])
				if !ok {
					return "", "bad escape"
				}
				r1 = utf16.DecodeRune(r1, r2)
				if r1 == utf8.RuneError {
					return "", "unpaired surrogate"
				}
				i += 6
			}
			sb.WriteRune(r1)
		default:
			return "", "bad escape"
		}
	}
	return sb.String(), ""
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var v rune
	for _, c := range b[:4] {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		v = v<<4 | rune(d)
	}
	return v, true
}

// parseV1Body reads the body of a version 1 ceremony event: the version 1
// record as encoding/json wrote it (members in order, optional ones
// omitted, byte strings in standard base64, "cards":null for none).
func parseV1Body(b []byte) (string, *Record, error) {
	r := reader{b: b, copy: CopyEvent, v1: true}
	var o object
	req := uint64(1<<0 | 1<<1 | 1<<2 | 1<<3 | 1<<4 | 1<<6 | 1<<8)
	if err := o.open(&r, "", bodyV1Members, req); err != nil {
		return "", nil, err
	}
	rec := &Record{Version: 1, AllowUnattested: true}
	var status string
	var k, n uint64
	var at []int
	for {
		j, err := o.next()
		if err != nil {
			return "", nil, err
		}
		if j < 0 {
			break
		}
		var p string
		switch bodyV1Members[j] {
		case "id":
			if p = r.hexInto(rec.ID[:]); p != "" {
				p = "not a ceremony id of 32 hex digits: " + p
			}
		case "volume_uuid":
			var s []byte
			if s, p = r.str(); p == "" {
				rec.Volume, p = parseVolumeStrict(s)
			}
		case "k":
			k, p = r.uint()
		case "n":
			n, p = r.uint()
		case "keyslot":
			if r.has("-1") {
				r.i += 2
				rec.Keyslot = -1
			} else {
				rec.Keyslot, p = r.intIn(0, MaxKeyslot)
			}
		case "keyslot_salt":
			var s []byte
			if s, p = r.str(); p == "" {
				rec.Salt, p = hexString(s, 2, maxSaltDigits)
			}
		case "cards":
			if r.has("null") {
				r.i += 4
				break
			}
			var a array
			if err := a.open(&r, "cards"); err != nil {
				return "", nil, err
			}
			for {
				more, err := a.next()
				if err != nil {
					return "", nil, err
				}
				if !more {
					break
				}
				c, err := r.cardV1(elem("cards", a.n-1), cardV1Body, "sealed_share", "fingerprint")
				if err != nil {
					return "", nil, err
				}
				rec.Cards = append(rec.Cards, c)
				at = append(at, a.n-1)
			}
		case "digest":
			var d []byte
			if d, p = r.b64std(); p == "" {
				if len(d) != len(rec.Digest) {
					p = fmt.Sprintf("digest of %d bytes, want %d", len(d), len(rec.Digest))
				}
				copy(rec.Digest[:], d)
			}
		case "status":
			status, p = r.lit(StatusOpen, StatusActive, StatusAbandoned, StatusRetired)
		case "replaces", "replaced_by":
			var id [16]byte
			p = r.hexInto(id[:])
			if bodyV1Members[j] == "replaces" {
				rec.Replaces = id
			}
		}
		if p != "" {
			return "", nil, o.failMember(p)
		}
	}
	if err := r.end(""); err != nil {
		return "", nil, err
	}
	if k < 2 || k > 255 {
		return "", nil, r.fail("k", fmt.Sprintf("%d out of range 2-255", k))
	}
	if n < k || n > 255 {
		return "", nil, r.fail("n", fmt.Sprintf("%d out of range %d-255", n, k))
	}
	rec.K, rec.N = int(k), int(n)
	if rec.Salt != "" && rec.Keyslot < 0 {
		return "", nil, r.fail("keyslot_salt", "a salt without a keyslot")
	}
	if rec.Replaces != ([16]byte{}) {
		if p := replacesProblem(rec); p != "" {
			return "", nil, r.fail("replaces", p)
		}
	}
	if err := r.v1Cards(rec, "cards", at, "fingerprint"); err != nil {
		return "", nil, err
	}
	return status, rec, nil
}
