package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// testdata/format/records.json holds the vectors of docs/FORMAT.md sections
// 7-12. TestRecordVectors makes them (go test -run TestRecordVectors
// -update writes the file), checks that the file is what this generator
// makes, and checks every case in the file against this package.
const recordVectorsPath = "../testdata/format/records.json"

type vectorFile struct {
	About        []string      `json:"about"`
	Cases        []vectorCase  `json:"cases"`
	Chains       []vectorChain `json:"chains"`
	AnchorChecks []anchorCheck `json:"anchor_checks"`
}

type vectorCase struct {
	Name     string  `json:"name"`
	Section  string  `json:"section"`
	Copy     string  `json:"copy"`
	Input    *string `json:"input,omitempty"`
	InputHex *string `json:"input_hex,omitempty"`
	Expect   string  `json:"expect"`
	Value    any     `json:"value,omitempty"`
	Path     *string `json:"path,omitempty"`
	Layer    string  `json:"layer,omitempty"`
	Problem  string  `json:"problem,omitempty"`
}

type vectorChain struct {
	Name    string   `json:"name"`
	Extends string   `json:"extends,omitempty"`
	Events  []string `json:"events"`
	Hashes  []string `json:"hashes"`
	Expect  string   `json:"expect"`
	At      uint64   `json:"at,omitempty"`
	Rule    string   `json:"rule,omitempty"`
}

type anchorCheck struct {
	Name   string `json:"name"`
	Chain  string `json:"chain"`
	Copy   string `json:"copy"`
	Input  string `json:"input"`
	Expect string `json:"expect"`
}

var vectorAbout = []string{
	"Vectors of docs/FORMAT.md sections 7-12: the ceremony record, its three copies (LUKS2 token, certificate extension, ceremony event) and anchors.",
	"cases: one input each. copy says which reader takes it: record (section 8), token (section 10; version 1 tokens, which have custos_version, per the appendix), certificate (the extension's JSON, section 12), event (the body of a ceremony event, section 11; version 1 bodies per the appendix) or anchor (section 9).",
	"input is the input's exact text; input_hex its bytes in hex when they are not valid UTF-8.",
	"expect ok: the reader accepts the input; value is what it decodes to. Records: version, id, volume, k, n, keyslot, salt (null: absent), digest, replaces (null: none), set (null: none), allow_unattested, cards (sealed as the hex of the decoded bytes; custodian and attestation null when absent). Tokens: version (of the record), keyslots (numbers), record, anchor (null: none). Certificates: record, anchor. Events: status, record. Anchors: seq, hash.",
	"expect reject: the reader rejects the input and names path, the member at fault (section 7, Paths; \"\" is the outermost object of a token, certificate, event or anchor). layer codec: the form of sections 7-12 rejects it; layer use: only the checks that need the sealed share (section 8: the sealed share parses as section 6, its header names the record's id, volume, k, n and the card's index, its recipient is the card's key) reject it. problem is custos's message, for the reader, not compared.",
	"chains: event records (section 11), one per line of a log, from event 1 (or, when extends names another chain, following that chain's events); hashes are their SHA-256. expect ok: the chain links and every ceremony event keeps the log's rules; expect reject: event at breaks rule (a section 11 rule: frame, salt, cards, status, first, complete, replaces, event; or chain for a broken link).",
	"anchor_checks: a copy (token or certificate) read against the chain named: expect ok when its anchor is good (section 9), reject when not.",
}

// vecBase is the record most cases start from: complete, 2 of 3, with a
// salt, attested cards and custodians.
func vecBase() *Record {
	rec := complete(sampleCeremony("vector", "vector volume", 2, 3))
	rec.Cards[1].Custodian = "Zoë Ødegård"
	rec.Cards[2].Custodian = "山田 太郎"
	return rec
}

func mustEncode(t testing.TB, rec *Record) string {
	t.Helper()
	b, err := rec.Encode()
	if err != nil {
		t.Fatalf("encode vector record: %v", err)
	}
	return string(b)
}

// replaceOnce replaces the first old in s, which must hold it.
func replaceOnce(t testing.TB, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("vector: %q not in %.200s", old, s)
	}
	return strings.Replace(s, old, new, 1)
}

// member returns `"name":value` as it appears first in s.
func member(t testing.TB, s, name string) string {
	t.Helper()
	i := strings.Index(s, `"`+name+`":`)
	if i < 0 {
		t.Fatalf("vector: no member %s", name)
	}
	j := i + len(name) + 3
	switch s[j] {
	case '"':
		j = strings.IndexByte(s[j+1:], '"') + j + 2
	case '{', '[':
		depth := 0
		for k := j; k < len(s); k++ {
			if s[k] == '{' || s[k] == '[' {
				depth++
			} else if s[k] == '}' || s[k] == ']' {
				depth--
				if depth == 0 {
					j = k + 1
					break
				}
			}
		}
	default:
		for j < len(s) && s[j] != ',' && s[j] != '}' && s[j] != ']' {
			j++
		}
	}
	return s[i:j]
}

type vecValue struct {
	Version         int       `json:"version"`
	ID              string    `json:"id"`
	Volume          string    `json:"volume"`
	K               int       `json:"k"`
	N               int       `json:"n"`
	Keyslot         int       `json:"keyslot"`
	Salt            *string   `json:"salt"`
	Digest          *string   `json:"digest"`
	Replaces        *string   `json:"replaces"`
	Set             *vecSet   `json:"set"`
	AllowUnattested bool      `json:"allow_unattested"`
	Cards           []vecCard `json:"cards"`
}

type vecSet struct {
	Name        string `json:"name"`
	Version     int    `json:"version"`
	Fingerprint string `json:"fingerprint"`
}

type vecCard struct {
	Index       int     `json:"index"`
	Serial      string  `json:"serial"`
	Slot        string  `json:"slot"`
	Custodian   *string `json:"custodian"`
	Key         string  `json:"key"`
	Attestation *string `json:"attestation"`
	Commitment  string  `json:"commitment"`
	Sealed      string  `json:"sealed"`
}

func optHex(b []byte) *string {
	if bytes.Equal(b, make([]byte, len(b))) {
		return nil
	}
	s := hex.EncodeToString(b)
	return &s
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func recordValue(r *Record) vecValue {
	v := vecValue{Version: r.Version, ID: r.IDString(), Volume: r.VolumeString(), K: r.K, N: r.N, Keyslot: r.Keyslot,
		Salt: optString(r.Salt), Digest: optHex(r.Digest[:]), Replaces: optHex(r.Replaces[:]),
		AllowUnattested: r.AllowUnattested, Cards: []vecCard{}}
	if r.Set != nil {
		v.Set = &vecSet{Name: r.Set.Name, Version: r.Set.Version, Fingerprint: hex.EncodeToString(r.Set.Fingerprint[:])}
	}
	for _, c := range r.Cards {
		v.Cards = append(v.Cards, vecCard{Index: c.Index, Serial: c.Serial, Slot: fmt.Sprintf("%02x", c.Slot),
			Custodian: optString(c.Custodian), Key: hex.EncodeToString(c.Key[:]), Attestation: optHex(c.Attestation[:]),
			Commitment: hex.EncodeToString(c.Commitment[:]), Sealed: hex.EncodeToString(c.Sealed)})
	}
	return v
}

func anchorValue(h Head) *string {
	if h.Seq == 0 {
		return nil
	}
	s := h.String()
	return &s
}

// decodeCase runs the reader of c.Copy and returns the decoded value.
func decodeCase(copy string, in []byte) (any, error) {
	switch copy {
	case CopyRecord:
		r, err := ParseRecord(in)
		if err != nil {
			return nil, err
		}
		return recordValue(r), nil
	case CopyToken:
		t, err := ParseToken(in)
		if err != nil {
			return nil, err
		}
		return map[string]any{"version": t.Record.Version, "keyslots": t.Keyslots, "record": recordValue(t.Record), "anchor": anchorValue(t.Anchor)}, nil
	case CopyCertificate:
		c, err := ParseCardCopy(in)
		if err != nil {
			return nil, err
		}
		return map[string]any{"record": recordValue(c.Record), "anchor": anchorValue(c.Anchor)}, nil
	case CopyEvent:
		status, r, err := parseCeremonyBody(in)
		if err != nil {
			return nil, err
		}
		return map[string]any{"status": status, "record": recordValue(r)}, nil
	case CopyAnchor:
		h, err := ParseAnchor(string(in))
		if err != nil {
			return nil, err
		}
		return map[string]any{"seq": h.Seq, "hash": h.Hash.String()}, nil
	}
	return nil, fmt.Errorf("unknown copy %q", copy)
}

// canonicalJSON re-encodes a value as the file holds it, to compare.
func canonicalJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var x any
	json.Unmarshal(b, &x)
	b, _ = json.Marshal(x)
	return string(b)
}

// vecGen collects cases, checking each against the readers as it goes.
type vecGen struct {
	t     testing.TB
	cases []vectorCase
	names map[string]bool
}

func (g *vecGen) input(in string) (*string, *string) {
	if utf8.ValidString(in) {
		return &in, nil
	}
	h := hex.EncodeToString([]byte(in))
	return nil, &h
}

func (g *vecGen) ok(section, copy, name, in string) {
	g.t.Helper()
	v, err := decodeCase(copy, []byte(in))
	if err != nil {
		g.t.Fatalf("vector %q: %v", name, err)
	}
	c := vectorCase{Name: name, Section: section, Copy: copy, Expect: "ok", Value: v}
	c.Input, c.InputHex = g.input(in)
	g.add(c)
}

func (g *vecGen) reject(section, copy, name, in, path string) {
	g.t.Helper()
	_, err := decodeCase(copy, []byte(in))
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Copy != copy || fe.Path != path {
		g.t.Fatalf("vector %q: %v, want a %s error at %q", name, err, copy, path)
	}
	c := vectorCase{Name: name, Section: section, Copy: copy, Expect: "reject", Path: &path, Layer: "codec", Problem: fe.Problem}
	c.Input, c.InputHex = g.input(in)
	g.add(c)
}

// rejectUse is a case only the checks that need the sealed share reject.
func (g *vecGen) rejectUse(section, copy, name, in, path, problem string) {
	g.t.Helper()
	if _, err := decodeCase(copy, []byte(in)); err != nil {
		g.t.Fatalf("vector %q: the codec rejects it (%v); it must pass the codec", name, err)
	}
	c := vectorCase{Name: name, Section: section, Copy: copy, Expect: "reject", Path: &path, Layer: "use", Problem: problem}
	c.Input, c.InputHex = g.input(in)
	g.add(c)
}

func (g *vecGen) add(c vectorCase) {
	g.t.Helper()
	if g.names[c.Name] {
		g.t.Fatalf("vector name %q twice", c.Name)
	}
	g.names[c.Name] = true
	g.cases = append(g.cases, c)
}

// luksDumpIndent indents a compact token as cryptsetup luksDump
// --dump-json-metadata prints a token (json-c's pretty form: two spaces
// per level, no space after the colon), at the depth of a token object.
func luksDumpIndent(compact string) string {
	var b strings.Builder
	depth := 2
	in := false
	nl := func() {
		b.WriteByte('\n')
		b.WriteString(strings.Repeat("  ", depth))
	}
	for i := 0; i < len(compact); i++ {
		c := compact[i]
		if in {
			b.WriteByte(c)
			if c == '"' {
				in = false
			}
			continue
		}
		switch c {
		case '"':
			in = true
			b.WriteByte(c)
		case '{', '[':
			b.WriteByte(c)
			if i+1 < len(compact) && (compact[i+1] == ']' || compact[i+1] == '}') {
				continue
			}
			depth++
			nl()
		case '}', ']':
			if compact[i-1] != '[' && compact[i-1] != '{' {
				depth--
				nl()
			}
			b.WriteByte(c)
		case ',':
			b.WriteByte(c)
			nl()
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func makeCases(t testing.TB) []vectorCase {
	g := &vecGen{t: t, names: map[string]bool{}}
	base := vecBase()
	full := mustEncode(t, base)
	anchor := Head{Seq: 9, Hash: Hash(key32("vector anchor"))}

	// Section 8: accepted records.
	open := sampleCeremony("vector", "vector volume", 2, 3)
	g.ok("8", CopyRecord, "record open: no salt, no cards", mustEncode(t, open))
	g.ok("8", CopyRecord, "record with its salt", mustEncode(t, withSalt(open)))
	g.ok("8", CopyRecord, "record with one card", mustEncode(t, withCards(withSalt(open), 1)))
	g.ok("8", CopyRecord, "record complete", full)
	rich := vecBase()
	rich.Replaces = testID("vector replaced")
	rich.Set = &SetRef{Name: "ops-team_1.eu", Version: 4294967295, Fingerprint: key32("set")}
	rich.AllowUnattested = true
	rich.Cards[0].Attestation = [32]byte{}
	rich.Cards[1].Custodian = ""
	rich.Cards[2].Custodian = "O'Brien (ops) #2 é 🔑 ½ ∑"
	rich.Keyslot = 31
	rich.Salt = strings.Repeat("ab", 256)
	g.ok("8", CopyRecord, "record with replaces, set, allow_unattested, an unattested card, no custodian, 512-digit salt, keyslot 31", mustEncode(t, rich))
	edge := complete(sampleCeremony("edges", "edges", 2, 2))
	edge.Keyslot = 0
	edge.Cards[0].Serial, edge.Cards[0].Slot = "4294967295", 0x95
	edge.Cards[1].Serial, edge.Cards[1].Slot = "1", 0x8a
	edge.Cards[0].Custodian = strings.Repeat("é", 32) // 64 bytes
	edge.Cards[1].Custodian = "e\u0301 a"             // a combining mark, an inner space
	g.ok("8", CopyRecord, "record with keyslot 0, serials 4294967295 and 1, slots 95 and 8a, a 64-byte custodian, a combining mark", mustEncode(t, edge))
	big := sampleCeremony("big", "big", 255, 255)
	g.ok("8", CopyRecord, "record 255 of 255, open", mustEncode(t, big))
	sparse := withSalt(sampleCeremony("sparse", "sparse", 2, 5))
	sparse.Cards = []RecordCard{testCard(sparse, 2), testCard(sparse, 5)}
	g.ok("8", CopyRecord, "record with cards 2 and 5 of 5 (increasing, not contiguous)", mustEncode(t, sparse))

	// Section 7: the form.
	rec := func(name, in, path string) { g.t.Helper(); g.reject("7", CopyRecord, name, in, path) }
	rec("byte order mark", "\ufeff"+full, "record")
	rec("whitespace before the object", " "+full, "record")
	rec("a line end after the object", full+"\n", "record")
	rec("trailing }", full+"}", "record")
	rec("trailing ]", full+"]", "record")
	rec("a second object", full+full, "record")
	rec("empty input", "", "record")
	rec("an array", "["+full+"]", "record")
	rec("whitespace after a colon", replaceOnce(t, full, `"k":2`, `"k": 2`), "record.k")
	rec("whitespace after a comma", replaceOnce(t, full, `,"k":2`, `, "k":2`), "record")
	rec("whitespace before a comma", replaceOnce(t, full, `"k":2,`, `"k":2 ,`), "record.k")
	rec("indented", luksDumpIndent(full), "record")
	rec("duplicate member k", replaceOnce(t, full, `"k":2,`, `"k":2,"k":2,`), "record.k")
	rec("duplicate member cards", strings.TrimSuffix(full, "}")+`,"cards":[]}`, "record.cards")
	rec("unknown member", replaceOnce(t, full, `"k":2,`, `"k":2,"status":"active",`), "record")
	rec("unknown member at the end", strings.TrimSuffix(full, "}")+`,"x":1}`, "record")
	rec("member differing in case: K", replaceOnce(t, full, `"k":2`, `"K":2`), "record.k")
	rec("member differing in case: Cards", replaceOnce(t, full, `"cards":`, `"Cards":`), "record.cards")
	rec("members out of order: salt after digest",
		replaceOnce(t, replaceOnce(t, full, member(t, full, "salt")+",", ""), member(t, full, "digest"), member(t, full, "digest")+","+member(t, full, "salt")),
		"record.salt")
	rec("members out of order: k before id", replaceOnce(t, full, `"id":`, `"k":2,"id":`), "record.id")
	rec("member missing: digest", replaceOnce(t, full, member(t, full, "digest")+",", ""), "record.digest")
	rec("member missing: cards", replaceOnce(t, mustEncode(t, open), `,"cards":[]`, ""), "record.cards")
	rec("empty object", "{}", "record.v")
	rec("escape in a string", replaceOnce(t, full, "Ada Lovelace", `Ada\u0020Lovelace`), "record.cards[0].custodian")
	rec("escape in a member name", replaceOnce(t, full, `"k":2`, `"\u006b":2`), "record")
	rec("escaped solidus in base64url", replaceOnce(t, full, `"sealed":"`, `"sealed":"\/`), "record.cards[0].sealed")
	rec("null salt", replaceOnce(t, full, member(t, full, "salt"), `"salt":null`), "record.salt")
	rec("null custodian", replaceOnce(t, full, `"Ada Lovelace"`, `null`), "record.cards[0].custodian")
	rec("null set before digest", replaceOnce(t, full, `"digest":`, `"set":null,"digest":`), "record.digest")
	rec("null set in its place", replaceOnce(t, full, `,"cards":`, `,"set":null,"cards":`), "record.set")
	rec("null record", "null", "record")
	rec("allow_unattested false", replaceOnce(t, full, `,"cards":`, `,"allow_unattested":false,"cards":`), "record.allow_unattested")
	rec("allow_unattested as a string", replaceOnce(t, full, `,"cards":`, `,"allow_unattested":"true","cards":`), "record.allow_unattested")
	rec("integer with a leading zero", replaceOnce(t, full, `"k":2`, `"k":02`), "record.k")
	rec("negative integer", replaceOnce(t, full, `"keyslot":1`, `"keyslot":-1`), "record.keyslot")
	rec("integer with a plus sign", replaceOnce(t, full, `"k":2`, `"k":+2`), "record.k")
	rec("integer with a fraction", replaceOnce(t, full, `"k":2`, `"k":2.0`), "record.k")
	rec("integer with an exponent", replaceOnce(t, full, `"k":2`, `"k":2e0`), "record.k")
	rec("integer as a string", replaceOnce(t, full, `"k":2`, `"k":"2"`), "record.k")
	rec("integer too large", replaceOnce(t, full, `"keyslot":1`, `"keyslot":18446744073709551617`), "record.keyslot")
	rec("upper-case hex id", replaceOnce(t, full, base.IDString(), strings.ToUpper(base.IDString())), "record.id")
	rec("upper-case hex in a key", replaceOnce(t, full, hex.EncodeToString(base.Cards[0].Key[:]), strings.ToUpper(hex.EncodeToString(base.Cards[0].Key[:]))), "record.cards[0].key")
	rec("hex digest one digit short", replaceOnce(t, full, hex.EncodeToString(base.Digest[:]), hex.EncodeToString(base.Digest[:])[1:]), "record.digest")
	rec("hex not hex", replaceOnce(t, full, hex.EncodeToString(base.Digest[:])[:2], "zz"), "record.digest")
	sealed0 := member(t, full, "sealed")
	b64 := strings.TrimSuffix(strings.TrimPrefix(sealed0, `"sealed":"`), `"`)
	rec("base64url with padding", replaceOnce(t, full, sealed0, `"sealed":"`+b64+`="`), "record.cards[0].sealed")
	std := strings.NewReplacer("-", "+", "_", "/").Replace(b64)
	if std == b64 {
		t.Fatal("vector: the sealed share has no - or _ to turn into standard base64")
	}
	rec("standard base64 alphabet", replaceOnce(t, full, sealed0, `"sealed":"`+std+`"`), "record.cards[0].sealed")
	rec("base64url with a line break", replaceOnce(t, full, sealed0, `"sealed":"`+b64[:40]+"\n"+b64[40:]+`"`), "record.cards[0].sealed")
	rec("base64url with a space", replaceOnce(t, full, sealed0, `"sealed":"`+b64[:40]+" "+b64[40:]+`"`), "record.cards[0].sealed")
	// 187 bytes: the last of 250 characters carries 2 bits and 4 unused
	// bits; set one of them.
	if len(b64)%4 != 2 {
		t.Fatalf("vector: sealed share of %d base64url characters", len(b64))
	}
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", b64[len(b64)-1])
	nonCanon := b64[:len(b64)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last|1])
	rec("base64url with non-zero unused bits", replaceOnce(t, full, sealed0, `"sealed":"`+nonCanon+`"`), "record.cards[0].sealed")
	rec("base64url of an impossible length", replaceOnce(t, full, sealed0, `"sealed":"`+b64+`AAA"`), "record.cards[0].sealed")
	rec("invalid utf-8 in a custodian", replaceOnce(t, full, "Ada Lovelace", "Ada \xff Lovelace"), "record.cards[0].custodian")
	rec("overlong utf-8 in a custodian", replaceOnce(t, full, "Ada Lovelace", "Ada \xc1\xa1 Lovelace"), "record.cards[0].custodian")
	rec("utf-16 surrogate in a custodian", replaceOnce(t, full, "Ada Lovelace", "Ada \xed\xa0\x80 Lovelace"), "record.cards[0].custodian")
	rec("raw control character in a string", replaceOnce(t, full, "Ada Lovelace", "Ada\tLovelace"), "record.cards[0].custodian")
	rec("raw line end in a string", replaceOnce(t, full, "Ada Lovelace", "Ada\nLovelace"), "record.cards[0].custodian")
	rec("unterminated string", full[:strings.Index(full, "Ada Lovelace")+3], "record.cards[0].custodian")
	rec("truncated after a value", full[:strings.Index(full, `,"id"`)], "record.v")
	rec("truncated in a card", full[:strings.Index(full, `"key"`)], "record.cards[0]")
	rec("trailing comma in an object", replaceOnce(t, full, `"k":2,`, `"k":2,,`), "record")
	rec("trailing comma in cards", strings.TrimSuffix(full, "]}")+",]}", "record.cards[3]")
	for _, tc := range []struct{ name, custodian string }{
		{"right-to-left override", "Ada \u202eecalevoL"},
		{"zero-width space", "Ada\u200bLovelace"},
		{"no-break space", "Ada\u00a0Lovelace"},
		{"line separator", "Ada\u2028Lovelace"},
		{"private use character", "Ada \ue000"},
		{"unassigned character (U+0378)", "Ada \u0378"},
		{"noncharacter U+FFFF", "Ada \uffff"},
		{"byte order mark inside", "Ada\ufeffLovelace"},
		{"leading space", " Ada Lovelace"},
		{"trailing space", "Ada Lovelace "},
		{"less-than sign", "Ada <ops>"},
		{"ampersand", "Ada & Co"},
		{"empty", ""},
		{"65 bytes", strings.Repeat("a", 65)},
		{"emoji with a zero-width joiner", "Ada 👩\u200d🔬"},
		{"escape character (ESC, control)", "Ada \x1b[31m"},
	} {
		rec("text rule: custodian with "+tc.name, replaceOnce(t, full, `"Ada Lovelace"`, `"`+tc.custodian+`"`), "record.cards[0].custodian")
	}

	// Section 8: the members' values and the rules between them.
	rec("v 1", replaceOnce(t, full, `"v":2`, `"v":1`), "record.v")
	rec("v 3", replaceOnce(t, full, `"v":2`, `"v":3`), "record.v")
	rec("id all zero", replaceOnce(t, full, base.IDString(), strings.Repeat("0", 32)), "record.id")
	rec("volume in upper case", replaceOnce(t, full, base.VolumeString(), strings.ToUpper(base.VolumeString())), "record.volume")
	rec("volume without dashes", replaceOnce(t, full, base.VolumeString(), strings.ReplaceAll(base.VolumeString(), "-", "")), "record.volume")
	rec("volume in braces", replaceOnce(t, full, base.VolumeString(), "{"+base.VolumeString()+"}"), "record.volume")
	rec("k 1", replaceOnce(t, full, `"k":2`, `"k":1`), "record.k")
	rec("k 256 (n 3)", replaceOnce(t, full, `"k":2`, `"k":256`), "record.k")
	rec("k above n", replaceOnce(t, full, `"k":2`, `"k":4`), "record.n")
	rec("n below k", replaceOnce(t, full, `"n":3`, `"n":1`), "record.n")
	rec("n 256", replaceOnce(t, full, `"n":3`, `"n":256`), "record.n")
	rec("keyslot 32", replaceOnce(t, full, `"keyslot":1`, `"keyslot":32`), "record.keyslot")
	rec("salt of an odd length", replaceOnce(t, full, base.Salt, base.Salt[1:]), "record.salt")
	rec("salt empty", replaceOnce(t, full, base.Salt, ""), "record.salt")
	rec("salt of 514 digits", replaceOnce(t, full, base.Salt, strings.Repeat("ab", 257)), "record.salt")
	rec("salt in upper case", replaceOnce(t, full, base.Salt, strings.ToUpper(base.Salt)), "record.salt")
	rec("digest all zero", replaceOnce(t, full, hex.EncodeToString(base.Digest[:]), strings.Repeat("0", 64)), "record.digest")
	withRepl := mustEncode(t, rich)
	rec("replaces its own id", replaceOnce(t, withRepl, rich.ReplacesString(), rich.IDString()), "record.replaces")
	rec("replaces all zero", replaceOnce(t, withRepl, rich.ReplacesString(), strings.Repeat("0", 32)), "record.replaces")
	rec("set name in upper case", replaceOnce(t, withRepl, "ops-team_1.eu", "Ops-team"), "record.set.name")
	rec("set name starting with a dash", replaceOnce(t, withRepl, "ops-team_1.eu", "-ops"), "record.set.name")
	rec("set name of 65 bytes", replaceOnce(t, withRepl, "ops-team_1.eu", strings.Repeat("a", 65)), "record.set.name")
	rec("set version 0", replaceOnce(t, withRepl, `"version":4294967295`, `"version":0`), "record.set.version")
	rec("set version 4294967296", replaceOnce(t, withRepl, `"version":4294967295`, `"version":4294967296`), "record.set.version")
	rec("set fingerprint missing", replaceOnce(t, withRepl, `,"fingerprint":`+`"`+hex.EncodeToString(rich.Set.Fingerprint[:])+`"`, ""), "record.set.fingerprint")
	rec("set with an unknown member", replaceOnce(t, withRepl, `"set":{`, `"set":{"id":1,`), "record.set")
	rec("cards not an array", replaceOnce(t, mustEncode(t, open), `"cards":[]`, `"cards":{}`), "record.cards")
	rec("card not an object", replaceOnce(t, mustEncode(t, open), `"cards":[]`, `"cards":[1]`), "record.cards[0]")
	rec("card index 0", replaceOnce(t, full, `{"index":1,`, `{"index":0,`), "record.cards[0].index")
	rec("card index above n", replaceOnce(t, full, `{"index":3,`, `{"index":4,`), "record.cards[2].index")
	rec("card indexes decreasing", replaceOnce(t, full, `{"index":2,`, `{"index":1,`), "record.cards[1].index")
	c2 := full[strings.Index(full, `{"index":2,`):strings.Index(full, `,{"index":3,`)]
	c3 := full[strings.Index(full, `{"index":3,`) : len(full)-2]
	rec("cards out of index order", replaceOnce(t, full, c2+","+c3, c3+","+c2), "record.cards[2].index")
	rec("more cards than n", strings.TrimSuffix(full, "]}")+","+replaceOnce(t, c3, `"index":3`, `"index":4`)+"]}", "record.cards[3].index")
	serial := func(name, s string) {
		rec("serial "+name, replaceOnce(t, full, `"serial":"10000001"`, `"serial":"`+s+`"`), "record.cards[0].serial")
	}
	serial("with a leading zero", "010000001")
	serial("of 11 digits", "10000000001")
	serial("4294967296", "4294967296")
	serial("0", "0")
	serial("empty", "")
	serial("in hex", "1a2b")
	serial("with a sign", "+1")
	rec("serial of another card", replaceOnce(t, full, `"serial":"10000002"`, `"serial":"10000001"`), "record.cards[1].serial")
	rec("serial as a number", replaceOnce(t, full, `"serial":"10000001"`, `"serial":10000001`), "record.cards[0].serial")
	slot := func(name, s string) {
		rec("slot "+name, replaceOnce(t, full, `"slot":"82"`, `"slot":"`+s+`"`), "record.cards[0].slot")
	}
	slot("81", "81")
	slot("96", "96")
	slot("9A in upper case", "9A")
	slot("of one digit", "2")
	slot("as 0x82", "0x82")
	rec("key of another card", replaceOnce(t, full, hex.EncodeToString(base.Cards[1].Key[:]), hex.EncodeToString(base.Cards[0].Key[:])), "record.cards[1].key")
	rec("card without attestation, unattested not allowed", replaceOnce(t, full, `,"attestation":"`+hex.EncodeToString(base.Cards[0].Attestation[:])+`"`, ""), "record.cards[0].attestation")
	rec("attestation all zero", replaceOnce(t, full, hex.EncodeToString(base.Cards[0].Attestation[:]), strings.Repeat("0", 64)), "record.cards[0].attestation")
	rec("custodian after key", replaceOnce(t, replaceOnce(t, full, `"custodian":"Ada Lovelace",`, ""), `,"attestation"`, `,"custodian":"Ada Lovelace","attestation"`), "record.cards[0].custodian")
	rec("commitment missing", replaceOnce(t, full, `,"commitment":"`+hex.EncodeToString(base.Cards[0].Commitment[:])+`"`, ""), "record.cards[0].commitment")
	sealedOf := func(b []byte) string { return `"sealed":"` + b64urlText(b) + `"` }
	rec("sealed share of 155 bytes", replaceOnce(t, full, sealed0, sealedOf(make([]byte, 155))), "record.cards[0].sealed")
	rec("sealed share of 411 bytes", replaceOnce(t, full, sealed0, sealedOf(make([]byte, 411))), "record.cards[0].sealed")
	rec("sealed share empty", replaceOnce(t, full, sealed0, `"sealed":""`), "record.cards[0].sealed")

	// Section 8: what needs the sealed share (section 6).
	use := func(name, path string, mutate func([]byte) []byte, problem string) {
		s := bytes.Clone(base.Cards[0].Sealed)
		g.rejectUse("8", CopyRecord, name, replaceOnce(t, full, sealed0, sealedOf(mutate(s))), path, problem)
	}
	use("sealed share for another ceremony", "record.cards[0].sealed", func(s []byte) []byte { s[4] ^= 1; return s }, "the sealed share's header names another ceremony id")
	use("sealed share for another volume", "record.cards[0].sealed", func(s []byte) []byte { s[20] ^= 1; return s }, "the sealed share's header names another volume")
	use("sealed share of another index", "record.cards[0].sealed", func(s []byte) []byte { s[36] = 2; return s }, "the sealed share's header names index 2")
	use("sealed share of another k", "record.cards[0].sealed", func(s []byte) []byte { s[37] = 3; return s }, "the sealed share's header names another k")
	use("sealed share of another n", "record.cards[0].sealed", func(s []byte) []byte { s[38] = 4; return s }, "the sealed share's header names another n")
	use("sealed share for another recipient", "record.cards[0].sealed", func(s []byte) []byte { s[39] ^= 1; return s }, "the sealed share's recipient is not the card's key")
	use("sealed share with a bad magic", "record.cards[0].sealed", func(s []byte) []byte { s[2] = 'H'; return s }, "not a sealed share (magic CSH)")
	use("sealed share of version 2", "record.cards[0].sealed", func(s []byte) []byte { s[3] = 2; return s }, "sealed share version 2")
	use("sealed share whose C does not match its length", "record.cards[0].sealed", func(s []byte) []byte { binary.BigEndian.PutUint16(s[136:], 48); return s }, "a byte after the ciphertext")
	use("sealed share with a compressed ephemeral key", "record.cards[0].sealed", func(s []byte) []byte { s[71] = 2; return s }, "ephemeral key not uncompressed")

	// Section 10: tokens.
	tokOpen, err := EncodeToken(withSalt(open), anchor)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := EncodeToken(base, anchor)
	if err != nil {
		t.Fatal(err)
	}
	ts := string(tok)
	g.ok("10", CopyToken, "token of an open ceremony", string(tokOpen))
	g.ok("10", CopyToken, "token of a complete ceremony", ts)
	g.ok("10", CopyToken, "token indented as luksDump prints it", luksDumpIndent(ts))
	g.ok("10", CopyToken, "token whose keyslot cryptsetup killed", replaceOnce(t, ts, `"keyslots":["1"]`, `"keyslots":[]`))
	g.ok("10", CopyToken, "token with whitespace between members", replaceOnce(t, ts, `,"anchor"`, ",\r\n\t \"anchor\""))
	tk := func(name, in, path string) { g.t.Helper(); g.reject("10", CopyToken, name, in, path) }
	tk("token type Custos", replaceOnce(t, ts, `"type":"custos"`, `"type":"Custos"`), "type")
	tk("token type missing", replaceOnce(t, ts, `"type":"custos",`, ""), "type")
	tk("token keyslots of two", replaceOnce(t, ts, `"keyslots":["1"]`, `"keyslots":["1","2"]`), "keyslots[1]")
	tk("token keyslot as a number", replaceOnce(t, ts, `"keyslots":["1"]`, `"keyslots":[1]`), "keyslots[0]")
	tk("token keyslot with a leading zero", replaceOnce(t, ts, `"keyslots":["1"]`, `"keyslots":["01"]`), "keyslots[0]")
	tk("token keyslot 32", replaceOnce(t, ts, `"keyslots":["1"]`, `"keyslots":["32"]`), "keyslots[0]")
	tk("token bound to another keyslot than its record's", replaceOnce(t, ts, `"keyslots":["1"]`, `"keyslots":["2"]`), "record.keyslot")
	tk("token keyslots null", replaceOnce(t, ts, `"keyslots":["1"]`, `"keyslots":null`), "keyslots")
	part, err := EncodeToken(withSalt(open), anchor)
	if err != nil {
		t.Fatal(err)
	}
	oneCard := withCards(withSalt(open), 1)
	tk("token with some of the cards", replaceOnce(t, string(part), mustEncode(t, withSalt(open)), mustEncode(t, oneCard)), "record.cards")
	tk("token without anchor", replaceOnce(t, ts, `,"anchor":"`+anchor.String()+`"`, ""), "anchor")
	tk("token anchor null", replaceOnce(t, ts, `"`+anchor.String()+`"`, "null"), "anchor")
	tk("token anchor before record", replaceOnce(t, replaceOnce(t, ts, `,"anchor":"`+anchor.String()+`"`, ""), `"record":`, `"anchor":"`+anchor.String()+`","record":`), "record")
	tk("token anchor of event 0", replaceOnce(t, ts, anchor.String(), "0:"+anchor.Hash.String()), "anchor")
	tk("token anchor in upper case", replaceOnce(t, ts, anchor.String(), strings.ToUpper(anchor.String())), "anchor")
	tk("token record with an error", replaceOnce(t, ts, `"k":2`, `"k":"2"`), "record.k")
	tk("token with a member of version 1", replaceOnce(t, ts, `"type":"custos",`, `"type":"custos","status":"active",`), "")
	tk("token with trailing data", ts+"}", "")
	tk("token with a byte order mark", "\ufeff"+ts, "")
	tk("token indented with an escape", replaceOnce(t, luksDumpIndent(ts), "Ada Lovelace", `Ada\/Lovelace`), "record.cards[0].custodian")

	// Section 10, appendix: version 1 tokens, as custos 467e758 wrote them.
	for _, f := range []struct{ name, file string }{
		{"version 1 token as luks.ImportToken passed it (keys sorted, names escaped)", "token-enrolled.json"},
		{"version 1 token as encodeToken wrote it", "token-enrolled-encoded.json"},
		{"version 1 token as cryptsetup 2.6.1 luksDump printed it", "token-enrolled-luksdump.json"},
		{"version 1 token of a rotation", "token-rotated.json"},
		{"version 1 token without custodian names", "token-unnamed.json"},
	} {
		b, err := os.ReadFile(filepath.Join("testdata/v1", f.file))
		if err != nil {
			t.Fatal(err)
		}
		g.ok("appendix", CopyToken, f.name, string(b))
	}
	v1b, _ := os.ReadFile("testdata/v1/token-enrolled.json")
	v1 := string(v1b)
	v1k := func(name, in, path string) { g.t.Helper(); g.reject("appendix", CopyToken, name, in, path) }
	v1k(`version 1 token with "status":"revoked","status":"active"`, replaceOnce(t, v1, `"status":"active"`, `"status":"revoked","status":"active"`), "status")
	v1k(`version 1 token with "status":"active","status":"revoked"`, replaceOnce(t, v1, `"status":"active"`, `"status":"active","status":"revoked"`), "status")
	v1k(`version 1 token with "status":"active" twice`, replaceOnce(t, v1, `"status":"active"`, `"status":"active","status":"active"`), "status")
	v1k("version 1 token with a member in another case", replaceOnce(t, v1, `"status":"active"`, `"Status":"active"`), "status")
	v1k("version 1 token with an unknown member", replaceOnce(t, v1, `"status":"active"`, `"status":"active","revoked":true`), "")
	v1k("version 1 token with a trailing }", v1+"}", "")
	v1k("version 1 token with a trailing ]", v1+"]", "")
	v1k("version 1 token with anchor null", replaceOnce(t, v1, `"anchor":"6:274f77cd5db77b6c4f66a563a5be17014856da274d6ef930a2a1f12856ebcfd0"`, `"anchor":null`), "anchor")
	v1k("version 1 token with an upper-case digest", replaceOnce(t, v1, "a00092b1ea607156eb4f2d6771d05baeeddb0ac8ee53bcd6cacc8670e4d83c85", "A00092B1EA607156EB4F2D6771D05BAEEDDB0AC8EE53BCD6CACC8670E4D83C85"), "digest")
	v1k("version 1 token with an upper-case ceremony", replaceOnce(t, v1, `"ceremony":"4cc0823d2f3245673b86962e7bae4572"`, `"ceremony":"4CC0823D2F3245673B86962E7BAE4572"`), "ceremony")
	v1sealed := member(t, v1, "sealed")
	v1b64 := strings.TrimSuffix(strings.TrimPrefix(v1sealed, `"sealed":"`), `"`)
	v1k("version 1 token with an escaped line break in base64", replaceOnce(t, v1, v1sealed, `"sealed":"`+v1b64[:76]+`\n`+v1b64[76:]+`"`), "cards[0].sealed")
	v1k("version 1 token with a raw line break in base64", replaceOnce(t, v1, v1sealed, `"sealed":"`+v1b64[:76]+"\n"+v1b64[76:]+`"`), "cards[0].sealed")
	v1k("version 1 token with base64 without padding", replaceOnce(t, v1, v1sealed, `"sealed":"`+strings.TrimRight(v1b64, "=")+`"`), "cards[0].sealed")
	v1k("version 1 token with base64url", replaceOnce(t, v1, v1sealed, `"sealed":"`+strings.NewReplacer("+", "-", "/", "_").Replace(v1b64)+`"`), "cards[0].sealed")
	// The last character before "==" carries 4 bits and 2 unused bits.
	if !strings.HasSuffix(v1b64, "==") {
		t.Fatal("vector: version 1 sealed share without ==")
	}
	const std64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	ci := strings.IndexByte(std64, v1b64[len(v1b64)-3])
	v1k("version 1 token with non-zero padding bits in base64", replaceOnce(t, v1, v1sealed, `"sealed":"`+v1b64[:len(v1b64)-3]+string(std64[ci|1])+`=="`), "cards[0].sealed")
	v1k("version 1 token with an upper-case fingerprint", replaceOnce(t, v1, "70d8711c2876f10697a32e25cd9f4c2eb923b8fea605c458cbefb667d17b7f54", "70D8711C2876F10697A32E25CD9F4C2EB923B8FEA605C458CBEFB667D17B7F54"), "cards[0].fingerprint")
	v1k("version 1 token with invalid utf-8", replaceOnce(t, v1, "Zoë", "Zo\xeb"), "cards[2].custodian")
	v1k("version 1 token with a duplicate card member", replaceOnce(t, v1, `"serial":"1000",`, `"serial":"1000","serial":"1000",`), "cards[0].serial")
	v1k("version 1 token with a card null", replaceOnce(t, v1, `"cards":[`, `"cards":[null,`), "cards[0]")
	v1k("version 1 token with status retired", replaceOnce(t, v1, `"status":"active"`, `"status":"retired"`), "status")
	v1k("version 1 token of custos_version 2", replaceOnce(t, v1, `"custos_version":1`, `"custos_version":2`), "custos_version")
	v1k("version 1 token with a card missing", replaceOnce(t, v1, `"n":3`, `"n":4`), "cards")

	// Section 12: certificate extensions.
	one := withCards(withSalt(open), 0)
	one.Cards = []RecordCard{testCard(open, 2)}
	cc, err := EncodeCardCopy(one, anchor)
	if err != nil {
		t.Fatal(err)
	}
	cs := string(cc)
	g.ok("12", CopyCertificate, "certificate of card 2", cs)
	ce := func(name, in, path string) { g.t.Helper(); g.reject("12", CopyCertificate, name, in, path) }
	ce("certificate with two cards", replaceOnce(t, cs, mustEncode(t, one), mustEncode(t, withCards(withSalt(open), 2))), "record.cards")
	ce("certificate with no card", replaceOnce(t, cs, mustEncode(t, one), mustEncode(t, withSalt(open))), "record.cards")
	ce("certificate without anchor", replaceOnce(t, cs, `,"anchor":"`+anchor.String()+`"`, ""), "anchor")
	ce("certificate with a type member", replaceOnce(t, cs, `{"record"`, `{"type":"custos","record"`), "")
	ce("certificate indented", luksDumpIndent(cs), "")
	ce("certificate anchor with a leading zero", replaceOnce(t, cs, anchor.String(), "0"+anchor.String()), "anchor")

	// Section 11: event bodies.
	body, err := encodeCeremonyBody(StatusActive, base)
	if err != nil {
		t.Fatal(err)
	}
	bs := string(body)
	g.ok("11", CopyEvent, "event body of an active ceremony", bs)
	for _, st := range []string{StatusOpen, StatusAbandoned, StatusRetired} {
		b, err := encodeCeremonyBody(st, withSalt(open))
		if err != nil {
			t.Fatal(err)
		}
		g.ok("11", CopyEvent, "event body "+st, string(b))
	}
	ev := func(name, in, path string) { g.t.Helper(); g.reject("11", CopyEvent, name, in, path) }
	ev("event status unknown", replaceOnce(t, bs, `"status":"active"`, `"status":"revoked"`), "status")
	ev("event status in upper case", replaceOnce(t, bs, `"status":"active"`, `"status":"ACTIVE"`), "status")
	ev("event status missing", replaceOnce(t, bs, `"status":"active",`, ""), "status")
	ev("event record before status", `{"record":`+full+`,"status":"active"}`, "status")
	ev("event with duplicate status", replaceOnce(t, bs, `"status":"active"`, `"status":"active","status":"active"`), "status")
	ev("event with an anchor", strings.TrimSuffix(bs, "}")+`,"anchor":"`+anchor.String()+`"}`, "")
	for _, seq := range []int{4, 7} {
		b := fixtureEventBody(t, seq)
		g.ok("appendix", CopyEvent, fmt.Sprintf("version 1 event body (event %d of custos 467e758's log)", seq), b)
	}

	// Section 9: anchors.
	g.ok("9", CopyAnchor, "anchor", anchor.String())
	g.ok("9", CopyAnchor, "anchor of event 1", "1:"+strings.Repeat("0", 64))
	g.ok("9", CopyAnchor, "anchor of event 18446744073709551615", "18446744073709551615:"+anchor.Hash.String())
	an := func(name, in string) { g.t.Helper(); g.reject("9", CopyAnchor, name, in, "") }
	an("anchor of event 0", "0:"+anchor.Hash.String())
	an("anchor with a leading zero", "09:"+anchor.Hash.String())
	an("anchor of event 18446744073709551616", "18446744073709551616:"+anchor.Hash.String())
	an("anchor without an event number", ":"+anchor.Hash.String())
	an("anchor without a colon", "9"+anchor.Hash.String())
	an("anchor with 63 hex digits", "9:"+anchor.Hash.String()[1:])
	an("anchor with 65 hex digits", "9:"+anchor.Hash.String()+"0")
	an("anchor in upper case", "9:"+strings.ToUpper(anchor.Hash.String()))
	an("anchor with a space", "9: "+anchor.Hash.String())
	an("anchor with a line end", anchor.String()+"\n")
	an("anchor with the hash in groups", "9:"+groups(anchor.Hash.String()))
	an("anchor with a sign", "+9:"+anchor.Hash.String())
	return g.cases
}

func b64urlText(b []byte) string {
	var w writer
	w.b64url(b)
	return string(w.b[1 : len(w.b)-1])
}

// fixtureEventBody returns the body of event seq of the version 1 fixture.
func fixtureEventBody(t testing.TB, seq int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "custos.db")
	copyFile(t, fixtureV1Log, path)
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var body string
	l.Events("", func(ev Event) error {
		if ev.Seq == uint64(seq) {
			body = string(ev.Body)
		}
		return nil
	})
	if !isV1Body([]byte(body)) {
		t.Fatalf("fixture event %d: %.60s is not a version 1 ceremony body", seq, body)
	}
	return body
}

func TestRecordVectors(t *testing.T) {
	boltOnly(t)
	chains, checks := makeChains(t)
	vf := vectorFile{About: vectorAbout, Cases: makeCases(t), Chains: chains, AnchorChecks: checks}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(vf); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(recordVectorsPath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(recordVectorsPath)
	if err != nil {
		t.Fatalf("%v (go test -run TestRecordVectors -update makes it)", err)
	}
	if !bytes.Equal(data, buf.Bytes()) {
		t.Errorf("%s is not what the generator makes (go test -run TestRecordVectors -update rewrites it)", recordVectorsPath)
	}
	checkVectorFile(t, data)
}

// checkVectorFile checks every case of the file against this package, as
// the spec decoder checks them against FORMAT.md.
func checkVectorFile(t *testing.T, data []byte) {
	var vf vectorFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&vf); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, c := range vf.Cases {
		var in []byte
		switch {
		case c.Input != nil && c.InputHex == nil:
			in = []byte(*c.Input)
		case c.InputHex != nil && c.Input == nil:
			var err error
			if in, err = hex.DecodeString(*c.InputHex); err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
		default:
			t.Fatalf("%s: want one of input and input_hex", c.Name)
		}
		got, err := decodeCase(c.Copy, in)
		switch {
		case c.Expect == "ok":
			if err != nil {
				t.Errorf("%s: %v", c.Name, err)
			} else if g, w := canonicalJSON(got), canonicalJSON(c.Value); g != w {
				t.Errorf("%s: decodes to\n%s\nwant\n%s", c.Name, g, w)
			}
		case c.Expect == "reject" && c.Layer == "codec":
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Copy != c.Copy || c.Path == nil || fe.Path != *c.Path {
				t.Errorf("%s: %v, want a %s error at %v", c.Name, err, c.Copy, c.Path)
			}
		case c.Expect == "reject" && c.Layer == "use":
			// store checks only the sealed share's length and form:
			// whoever uses the record parses it (escrow, the spec decoder).
			if err != nil {
				t.Errorf("%s: %v; store passes what only the sealed share's reader rejects", c.Name, err)
			}
		default:
			t.Errorf("%s: expect %q layer %q", c.Name, c.Expect, c.Layer)
		}
		counts[c.Copy+" "+c.Expect+" "+c.Layer]++
	}
	byName := map[string]vectorChain{}
	for _, ch := range vf.Chains {
		byName[ch.Name] = ch
	}
	for _, ch := range vf.Chains {
		var recs [][]byte
		if ch.Extends != "" {
			for _, line := range byName[ch.Extends].Events {
				recs = append(recs, []byte(line))
			}
		}
		for i, line := range ch.Events {
			h := sha256.Sum256([]byte(line))
			if hex.EncodeToString(h[:]) != ch.Hashes[i] {
				t.Errorf("chain %s: event %d hash", ch.Name, i+1)
			}
			recs = append(recs, []byte(line))
		}
		seq, rule, err := replayChain(recs)
		switch ch.Expect {
		case "ok":
			if err != nil {
				t.Errorf("chain %s: %v", ch.Name, err)
			}
		case "reject":
			if err == nil || seq != ch.At || rule != ch.Rule {
				t.Errorf("chain %s: event %d rule %q (%v), want event %d rule %q", ch.Name, seq, rule, err, ch.At, ch.Rule)
			}
		}
		counts["chain "+ch.Expect]++
	}
	logs := map[string]*Log{}
	for _, ac := range vf.AnchorChecks {
		l := logs[ac.Chain]
		if l == nil {
			l = logFromChain(t, vf.Chains, ac.Chain)
			logs[ac.Chain] = l
		}
		var err error
		switch ac.Copy {
		case CopyToken:
			var tok *Token
			if tok, err = ParseToken([]byte(ac.Input)); err == nil {
				err = l.CheckAnchor(tok.Anchor, tok.Record)
			}
		case CopyCertificate:
			var cc *CardCopy
			if cc, err = ParseCardCopy([]byte(ac.Input)); err == nil {
				err = l.CheckAnchor(cc.Anchor, cc.Record)
			}
		}
		if (err == nil) != (ac.Expect == "ok") || err != nil && !errors.Is(err, ErrAnchor) {
			t.Errorf("anchor check %s: %v, want %s", ac.Name, err, ac.Expect)
		}
		counts["anchor check "+ac.Expect]++
	}
	t.Logf("vectors: %d cases, %d chains, %d anchor checks: %v", len(vf.Cases), len(vf.Chains), len(vf.AnchorChecks), counts)
}

// replayChain checks event records as Verify does (links, then the log's
// rules through fresh indexes) and returns the line (from 1) that fails
// and the rule it breaks ("chain" for a link or form).
func replayChain(recs [][]byte) (uint64, string, error) {
	w := newChainWalker(newMemIndexes())
	for i, rec := range recs {
		ev, err := decodeRecord(rec)
		if err != nil {
			return uint64(i + 1), "chain", err
		}
		if err := w.step(ev); err != nil {
			var re *RuleError
			if errors.As(err, &re) {
				return uint64(i + 1), re.Rule, err
			}
			return uint64(i + 1), "chain", err
		}
	}
	return 0, "", nil
}

// logFromChain builds a log holding exactly the records of the chain
// named, by writing them into a new file's buckets and indexes.
func logFromChain(t *testing.T, chains []vectorChain, name string) *Log {
	t.Helper()
	var ch *vectorChain
	for i := range chains {
		if chains[i].Name == name {
			ch = &chains[i]
		}
	}
	if ch == nil {
		t.Fatalf("no chain %q", name)
	}
	l, err := open(filepath.Join(t.TempDir(), "custos.db"), nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkConsistent(t, l) })
	err = l.db.Update(func(btx *bolt.Tx) error {
		for _, name := range append([][]byte{bucketEvents}, indexBuckets...) {
			if err := btx.DeleteBucket(name); err != nil {
				return err
			}
			if _, err := btx.CreateBucket(name); err != nil {
				return err
			}
		}
		var head Head
		for _, line := range ch.Events {
			ev, err := decodeRecord([]byte(line))
			if err != nil {
				return err
			}
			if err := apply(boltKV{btx}, ev); err != nil {
				return err
			}
			if err := btx.Bucket(bucketEvents).Put(seqKey(ev.Seq), storedValue(ev.Hash, []byte(line))); err != nil {
				return err
			}
			head = ev.Head()
		}
		return btx.Bucket(bucketMeta).Put(keyHead, encodeHead(head))
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// makeChains writes a short log through this package (a 2-of-2
// enrollment, its rotation, an abandoned one) and forges, after it, one
// well-chained event per rule of docs/FORMAT.md section 11 that the log
// refuses. It returns the chains and the anchor checks against the good
// one.
func makeChains(t *testing.T) ([]vectorChain, []anchorCheck) {
	l, err := open(filepath.Join(t.TempDir(), "custos.db"), nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c1 := sampleCeremony("chain c1", "chain A", 2, 2)
	c2 := sampleCeremony("chain c2", "chain A", 2, 2)
	c2.Keyslot, c2.Replaces = 2, c1.ID
	c3 := sampleCeremony("chain c3", "chain B", 2, 3)
	fillCeremony(t, l, c1) // events 2-8
	fillCeremony(t, l, c2) // 9-15
	_, err = l.Update(func(tx *Tx) error {
		if _, err := tx.PutCeremony("operator", StatusRetired, complete(c1)); err != nil { // 16
			return err
		}
		if _, err := tx.Append(Event{Actor: "Ada Lovelace", Type: "rotate.wiped", Ceremony: c1.IDString(), Body: []byte(`{"serial":"10000001"}`)}); err != nil { // 17
			return err
		}
		if _, err := tx.PutCeremony("operator", StatusOpen, c3); err != nil { // 18
			return err
		}
		_, err := tx.PutCeremony("operator", StatusAbandoned, c3) // 19
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var export bytes.Buffer
	if err := l.ExportJSONL(&export, ""); err != nil {
		t.Fatal(err)
	}
	good := strings.Split(strings.TrimSuffix(export.String(), "\n"), "\n")
	const goodName = "enrollment, rotation, retirement, abandonment"
	chains := []vectorChain{chainOf(goodName, good, "ok", 0, "")}

	last, err := decodeRecord([]byte(good[len(good)-1]))
	if err != nil {
		t.Fatal(err)
	}
	// forge appends well-chained events after the good chain; the last one
	// breaks the rule.
	forge := func(name, rule string, evs ...Event) {
		t.Helper()
		lines := append([]string(nil), good...)
		prev := last
		for _, ev := range evs {
			ev.Seq, ev.Prev, ev.Time = prev.Seq+1, prev.Hash, prev.Time.Add(time.Second)
			if ev.Actor == "" {
				ev.Actor = "mallory"
			}
			rec, err := encodeRecord(ev)
			if err != nil {
				t.Fatalf("forge %s: %v", name, err)
			}
			if prev, err = decodeRecord(rec); err != nil {
				t.Fatalf("forge %s: %v", name, err)
			}
			lines = append(lines, string(rec))
		}
		c := chainOf(name, lines[len(good):], "reject", prev.Seq, rule)
		c.Extends = goodName
		chains = append(chains, c)
	}
	cer := func(status string, rec *Record) Event {
		t.Helper()
		body, err := encodeCeremonyBody(status, rec)
		if err != nil {
			t.Fatal(err)
		}
		return Event{Type: TypeCeremony, Ceremony: rec.IDString(), Body: body}
	}
	a2 := complete(c2)
	mod := func(f func(r *Record)) *Record {
		r := a2.Clone()
		f(r)
		return r
	}
	forge("the active ceremony moved onto the retired one's keyslot, with its salt", RuleFrame,
		cer(StatusActive, mod(func(r *Record) { r.Keyslot, r.Salt = c1.Keyslot, withSalt(c1).Salt })))
	forge("keyslot changed", RuleFrame, cer(StatusActive, mod(func(r *Record) { r.Keyslot = 7 })))
	forge("salt changed", RuleSalt, cer(StatusActive, mod(func(r *Record) { r.Salt = strings.Repeat("ab", 16) })))
	forge("salt removed", RuleSalt, cer(StatusActive, mod(func(r *Record) { r.Salt = "" })))
	forge("digest changed", RuleFrame, cer(StatusActive, mod(func(r *Record) { r.Digest[0] ^= 1 })))
	forge("k changed", RuleFrame, cer(StatusActive, mod(func(r *Record) { r.K = 1; r.K = 2; r.N = 3 })))
	forge("replaces dropped", RuleFrame, cer(StatusActive, mod(func(r *Record) { r.Replaces = [16]byte{} })))
	forge("set added", RuleFrame, cer(StatusActive, mod(func(r *Record) { r.Set = &SetRef{Name: "ops", Version: 1} })))
	forge("allow_unattested added", RuleFrame, cer(StatusActive, mod(func(r *Record) { r.AllowUnattested = true })))
	forge("a card's commitment changed", RuleCards, cer(StatusActive, mod(func(r *Record) { r.Cards[0].Commitment[0] ^= 1 })))
	forge("a card's custodian changed", RuleCards, cer(StatusActive, mod(func(r *Record) { r.Cards[1].Custodian = "Mallory" })))
	forge("a card removed", RuleCards, cer(StatusActive, mod(func(r *Record) { r.Cards = r.Cards[1:] })))
	forge("status active back to open", RuleStatus, cer(StatusOpen, a2))
	forge("status abandoned to open", RuleStatus, cer(StatusOpen, c3))
	forge("status retired to active", RuleStatus, cer(StatusActive, complete(c1)))
	c4 := sampleCeremony("chain c4", "chain B", 2, 2)
	forge("first record active with one of two cards", RuleComplete, cer(StatusActive, withCards(withSalt(c4), 1)))
	forge("open record becomes active with one of two cards", RuleComplete,
		cer(StatusOpen, withCards(withSalt(c4), 1)), cer(StatusActive, withCards(withSalt(c4), 1)))
	forge("first record abandoned", RuleFirst, cer(StatusAbandoned, c4))
	forge("first record retired", RuleFirst, cer(StatusRetired, complete(c4)))
	r4 := c4.Clone()
	r4.Replaces = testID("never logged")
	forge("replaces a ceremony the log does not hold", RuleReplaces, cer(StatusOpen, r4))
	r4.Replaces = c1.ID
	forge("replaces a ceremony of another volume", RuleReplaces, cer(StatusOpen, r4))
	wrong := cer(StatusOpen, c4)
	wrong.Ceremony = c1.IDString()
	forge("event names another ceremony than its record", RuleEvent, wrong)
	forge("frame changed before the salt: keyslot", RuleFrame, cer(StatusOpen, c4), cer(StatusOpen, func() *Record { r := c4.Clone(); r.Keyslot = 5; return r }()))
	two := withSalt(c4)
	two.Cards = []RecordCard{testCard(c4, 2)}
	forge("a card added before one already written", RuleCards, cer(StatusOpen, two), cer(StatusOpen, withCards(withSalt(c4), 2)))
	v1body := fixtureEventBody(t, 4)
	forge("a version 1 body in a log of version 2", RuleVersion, Event{Type: TypeCeremony, Ceremony: fixtureRetired, Body: []byte(v1body)})
	forge("a link broken", "chain", Event{Type: "audit.note", Body: []byte(`{}`)}, Event{Type: "audit.note", Body: []byte(`{}`)})
	// The broken link: the second forged event names a previous hash that
	// is not its predecessor's.
	bl := &chains[len(chains)-1]
	ev, _ := decodeRecord([]byte(bl.Events[len(bl.Events)-1]))
	ev.Prev[0] ^= 1
	rec, err := encodeRecord(ev)
	if err != nil {
		t.Fatal(err)
	}
	bl.Events[len(bl.Events)-1] = string(rec)
	h := sha256.Sum256(rec)
	bl.Hashes[len(bl.Hashes)-1] = hex.EncodeToString(h[:])

	// Anchor checks against the good chain: c2's events are 9 (open), 10
	// (salt), 11 and 13 (steps), 12 and 14 (cards 1 and 2), 15 (active).
	heads := map[uint64]Head{}
	for _, line := range good {
		ev, _ := decodeRecord([]byte(line))
		heads[ev.Seq] = ev.Head()
	}
	var checks []anchorCheck
	tokenCheck := func(name string, rec *Record, a Head, expect string) {
		t.Helper()
		b, err := EncodeToken(rec, a)
		if err != nil {
			t.Fatal(err)
		}
		checks = append(checks, anchorCheck{Name: name, Chain: goodName, Copy: CopyToken, Input: string(b), Expect: expect})
	}
	certCheck := func(name string, rec *Record, index int, a Head, expect string) {
		t.Helper()
		r := rec.Clone()
		r.Cards = []RecordCard{*rec.Card(index)}
		b, err := EncodeCardCopy(r, a)
		if err != nil {
			t.Fatal(err)
		}
		checks = append(checks, anchorCheck{Name: name, Chain: goodName, Copy: CopyCertificate, Input: string(b), Expect: expect})
	}
	tokenCheck("token of the complete ceremony, anchored after its last card", a2, heads[14], "ok")
	tokenCheck("token of the open ceremony, anchored after its salt", withSalt(c2), heads[10], "ok")
	tokenCheck("token anchored at the head after it went active", a2, heads[15], "ok")
	certCheck("certificate of card 1, anchored after the salt", a2, 1, heads[10], "ok")
	certCheck("certificate of card 2, anchored after card 1", a2, 2, heads[12], "ok")
	forgedCard := a2.Clone()
	forgedCard.Cards[1].Custodian = "Mallory"
	certCheck("certificate of card 2 with another custodian, anchored after card 1: the anchor precedes the card, so it is good (the card is checked against the log's later records where it is used)", forgedCard, 2, heads[12], "ok")
	certCheck("certificate of card 2 with another custodian, anchored after card 2 was logged", forgedCard, 2, heads[14], "reject")
	tokenCheck("token anchored with another event's hash", a2, Head{Seq: 14, Hash: heads[13].Hash}, "reject")
	tokenCheck("token anchored beyond the log", a2, Head{Seq: 99, Hash: heads[14].Hash}, "reject")
	tokenCheck("token anchored before its ceremony's first event", a2, heads[8], "reject")
	tokenCheck("token whose card 1 differs from the log", mod(func(r *Record) { r.Cards[0].Commitment[0] ^= 1 }), heads[14], "reject")
	tokenCheck("token moved onto the retired keyslot with its salt", mod(func(r *Record) { r.Keyslot, r.Salt = c1.Keyslot, withSalt(c1).Salt }), heads[14], "reject")
	tokenCheck("token of the open ceremony anchored before its salt", withSalt(c2), heads[9], "reject")
	return chains, checks
}

func chainOf(name string, lines []string, expect string, at uint64, rule string) vectorChain {
	c := vectorChain{Name: name, Events: lines, Expect: expect, At: at, Rule: rule}
	for _, line := range lines {
		h := sha256.Sum256([]byte(line))
		c.Hashes = append(c.Hashes, hex.EncodeToString(h[:]))
	}
	return c
}
