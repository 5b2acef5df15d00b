package store

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	for name, rec := range map[string]*Record{
		"open":     sampleCeremony("rt", "rt", 2, 3),
		"salt":     withSalt(sampleCeremony("rt", "rt", 2, 3)),
		"complete": vecBase(),
		"rich": func() *Record {
			r := vecBase()
			r.Replaces = testID("older")
			r.Set = &SetRef{Name: "fleet", Version: 7, Fingerprint: key32("set")}
			r.AllowUnattested = true
			r.Cards[1].Attestation = [32]byte{}
			r.Cards[2].Custodian = ""
			return r
		}(),
	} {
		b, err := rec.Encode()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := ParseRecord(b)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, b)
		}
		if !reflect.DeepEqual(got, rec) {
			t.Errorf("%s: read back %+v\nwant %+v", name, got, rec)
		}
		again, _ := got.Encode()
		if !bytes.Equal(again, b) {
			t.Errorf("%s: encodes differently the second time", name)
		}
		if d := Compare(got, rec); len(d) != 0 {
			t.Errorf("%s: Compare finds %v", name, d)
		}
	}
}

// Encode checks what ParseRecord checks, and names the same member.
func TestEncodeRefusesWhatParseRefuses(t *testing.T) {
	for _, c := range []struct {
		path   string
		mutate func(r *Record)
	}{
		{"record.id", func(r *Record) { r.ID = [16]byte{} }},
		{"record.k", func(r *Record) { r.K = 1 }},
		{"record.n", func(r *Record) { r.N = 256 }},
		{"record.n", func(r *Record) { r.K, r.N = 3, 2 }},
		{"record.keyslot", func(r *Record) { r.Keyslot = -1 }},
		{"record.keyslot", func(r *Record) { r.Keyslot = 32 }},
		{"record.salt", func(r *Record) { r.Salt = "ABCD" }},
		{"record.salt", func(r *Record) { r.Salt = "abc" }},
		{"record.digest", func(r *Record) { r.Digest = [32]byte{} }},
		{"record.replaces", func(r *Record) { r.Replaces = r.ID }},
		{"record.set.name", func(r *Record) { r.Set = &SetRef{Name: "Fleet", Version: 1} }},
		{"record.set.version", func(r *Record) { r.Set = &SetRef{Name: "fleet"} }},
		{"record.cards[0].index", func(r *Record) { r.Cards[0].Index = 0 }},
		{"record.cards[1].index", func(r *Record) { r.Cards[1].Index = 1 }},
		{"record.cards[2].index", func(r *Record) { r.Cards[2].Index = 4 }},
		{"record.cards[0].serial", func(r *Record) { r.Cards[0].Serial = "007" }},
		{"record.cards[1].serial", func(r *Record) { r.Cards[1].Serial = r.Cards[0].Serial }},
		{"record.cards[0].slot", func(r *Record) { r.Cards[0].Slot = 0x9d }},
		{"record.cards[0].custodian", func(r *Record) { r.Cards[0].Custodian = "a\"b" }},
		{"record.cards[0].custodian", func(r *Record) { r.Cards[0].Custodian = "a\u202eb" }},
		{"record.cards[0].custodian", func(r *Record) { r.Cards[0].Custodian = "\xff" }},
		{"record.cards[1].key", func(r *Record) { r.Cards[1].Key = r.Cards[0].Key }},
		{"record.cards[0].attestation", func(r *Record) { r.Cards[0].Attestation = [32]byte{} }},
		{"record.cards[0].sealed", func(r *Record) { r.Cards[0].Sealed = nil }},
		{"record.cards[0].sealed", func(r *Record) { r.Cards[0].Sealed = make([]byte, MaxSealedSize+1) }},
	} {
		r := vecBase()
		c.mutate(r)
		_, err := r.Encode()
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Path != c.path || fe.Copy != CopyRecord || !errors.Is(err, ErrInvalid) {
			t.Errorf("want a record error at %s, got %v", c.path, err)
		}
	}
	if _, err := (*Record)(nil).Encode(); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil record: %v", err)
	}
	// A version 1 record encodes as version 2 when it can.
	r := vecBase()
	r.Version = 1
	b, err := r.Encode()
	if err != nil || !bytes.HasPrefix(b, []byte(`{"v":2,`)) {
		t.Errorf("version 1 record: %s, %v", b, err)
	}
}

func TestRecordHelpers(t *testing.T) {
	r := vecBase()
	if c := r.Card(2); c == nil || c.Index != 2 {
		t.Errorf("Card(2) = %v", c)
	}
	if r.Card(4) != nil || !r.Complete() || withSalt(sampleCeremony("x", "x", 2, 3)).Complete() {
		t.Error("Card or Complete")
	}
	c := r.Clone()
	c.Cards[0].Sealed[0] ^= 1
	c.Cards[1].Custodian = "changed"
	c.Set = &SetRef{Name: "x", Version: 1}
	if r.Cards[0].Sealed[0] == c.Cards[0].Sealed[0] || r.Cards[1].Custodian == "changed" || r.Set != nil {
		t.Error("Clone shares memory with the original")
	}
	s := vecBase()
	s.Set = &SetRef{Name: "x", Version: 1}
	if cs := s.Clone(); cs.Set == s.Set || *cs.Set != *s.Set {
		t.Error("Clone shares or loses the set")
	}
	if r.IDString() != idOf("vector") || r.VolumeString() != volOf("vector volume") || r.ReplacesString() != "" {
		t.Errorf("IDString %s VolumeString %s", r.IDString(), r.VolumeString())
	}
	id, err := ParseID(r.IDString())
	if err != nil || id != r.ID {
		t.Errorf("ParseID: %v", err)
	}
	for _, bad := range []string{strings.ToUpper(r.IDString()), r.IDString()[1:], "", r.IDString() + "0"} {
		if _, err := ParseID(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseID(%q): %v", bad, err)
		}
	}
	for _, s := range []string{r.VolumeString(), strings.ToUpper(r.VolumeString())} {
		if v, err := ParseVolume(s); err != nil || v != r.Volume {
			t.Errorf("ParseVolume(%q): %v", s, err)
		}
	}
	for _, bad := range []string{strings.ReplaceAll(r.VolumeString(), "-", ""), "{" + r.VolumeString() + "}", r.VolumeString()[:35] + "g"} {
		if _, err := ParseVolume(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseVolume(%q): %v", bad, err)
		}
	}
}

func TestCompare(t *testing.T) {
	a := vecBase()
	if d := Compare(a, a.Clone()); d != nil {
		t.Errorf("identical: %v", d)
	}
	// Cards only one copy holds are no difference.
	if d := Compare(withCards(withSalt(sampleCeremony("vector", "vector volume", 2, 3)), 1), a); d != nil {
		t.Errorf("a copy holding fewer cards: %v", d)
	}
	b := a.Clone()
	b.Keyslot, b.Salt = 5, "00"
	b.Cards[1].Sealed = bytes.Clone(b.Cards[1].Sealed)
	b.Cards[1].Sealed[150] ^= 1
	b.Cards[2].Slot, b.Cards[2].Commitment[0] = 0x90, 1
	got := Compare(a, b)
	want := []Difference{{0, "keyslot"}, {0, "salt"}, {2, "sealed"}, {3, "slot"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Compare = %v, want %v", got, want)
	}
	if got[2].String() != "card 2 sealed" || got[0].String() != "keyslot" {
		t.Errorf("String: %v", got)
	}
	for field, mutate := range map[string]func(*Record){
		"id": func(r *Record) { r.ID[0] ^= 1 }, "volume": func(r *Record) { r.Volume[0] ^= 1 },
		"k": func(r *Record) { r.K = 3 }, "n": func(r *Record) { r.N = 4 }, "digest": func(r *Record) { r.Digest[0] ^= 1 },
		"replaces": func(r *Record) { r.Replaces[0] = 1 }, "set": func(r *Record) { r.Set = &SetRef{} },
		"allow_unattested": func(r *Record) { r.AllowUnattested = true },
	} {
		b := a.Clone()
		mutate(b)
		if d := Compare(a, b); len(d) != 1 || d[0] != (Difference{Field: field}) {
			t.Errorf("%s: %v", field, d)
		}
	}
	// A version 1 copy does not hold the members it leaves empty.
	v1 := a.Clone()
	v1.Version, v1.Salt, v1.AllowUnattested = 1, "", true
	v2 := a.Clone()
	v2.AllowUnattested = true
	if d := Compare(v1, v2); d != nil {
		t.Errorf("a version 1 copy without salt: %v", d)
	}
	v1.Keyslot, v1.Digest = -1, [32]byte{}
	if d := Compare(v2, v1); d != nil {
		t.Errorf("a version 1 copy without keyslot or digest: %v", d)
	}
	v2.Version = 2
	v2.Salt = ""
	if d := Compare(a, v2); len(d) == 0 {
		t.Error("a version 2 copy without salt agrees with one that has it")
	}
}

func TestCopiesRoundTrip(t *testing.T) {
	anchor := Head{Seq: 42, Hash: Hash(key32("anchor"))}
	rec := vecBase()
	tok, err := EncodeToken(rec, anchor)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range [][]byte{tok, []byte(luksDumpIndent(string(tok)))} {
		got, err := ParseToken(in)
		if err != nil {
			t.Fatal(err)
		}
		if got.Anchor != anchor || !reflect.DeepEqual(got.Keyslots, []int{rec.Keyslot}) || !reflect.DeepEqual(got.Record, rec) {
			t.Errorf("token read back as %+v", got)
		}
	}
	if _, err := EncodeToken(withCards(withSalt(sampleCeremony("x", "x", 2, 3)), 2), anchor); !isFormat(err, CopyToken, "record.cards") {
		t.Errorf("token of 2 of 3 cards: %v", err)
	}
	if _, err := EncodeToken(rec, Head{}); !isFormat(err, CopyToken, "anchor") {
		t.Errorf("token without anchor: %v", err)
	}
	r := vecBase()
	r.Keyslot = 40
	if _, err := EncodeToken(r, anchor); !isFormat(err, CopyToken, "record.keyslot") {
		t.Errorf("token of a bad record: %v", err)
	}

	one := rec.Clone()
	one.Cards = one.Cards[2:]
	cc, err := EncodeCardCopy(one, anchor)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseCardCopy(cc)
	if err != nil || got.Anchor != anchor || !reflect.DeepEqual(got.Record, one) {
		t.Errorf("certificate read back as %+v, %v", got, err)
	}
	if _, err := EncodeCardCopy(rec, anchor); !isFormat(err, CopyCertificate, "record.cards") {
		t.Errorf("certificate of 3 cards: %v", err)
	}
	if _, err := EncodeCardCopy(one, Head{}); !isFormat(err, CopyCertificate, "anchor") {
		t.Errorf("certificate without anchor: %v", err)
	}

	body, err := encodeCeremonyBody(StatusRetired, rec)
	if err != nil {
		t.Fatal(err)
	}
	status, back, err := ParseCeremonyEvent(Event{Type: TypeCeremony, Body: body})
	if err != nil || status != StatusRetired || !reflect.DeepEqual(back, rec) {
		t.Errorf("event body read back as %s %+v, %v", status, back, err)
	}
	if _, _, err := ParseCeremonyEvent(Event{Type: "card", Body: body}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a card event read as a ceremony: %v", err)
	}
	if _, err := encodeCeremonyBody("done", rec); !isFormat(err, CopyEvent, "status") {
		t.Errorf("unknown status: %v", err)
	}
	for _, s := range []string{anchor.String(), "1:" + strings.Repeat("f", 64)} {
		if h, err := ParseAnchor(s); err != nil || h.String() != s {
			t.Errorf("ParseAnchor(%q) = %v, %v", s, h, err)
		}
	}
}

func isFormat(err error, copy, path string) bool {
	var fe *FormatError
	return errors.As(err, &fe) && fe.Copy == copy && fe.Path == path && errors.Is(err, ErrInvalid)
}

// The token parser of custos before the version 2 record accepted each of
// these (issue 10); each is now rejected, naming the member.
func TestTokenLeniencies(t *testing.T) {
	v1b, err := os.ReadFile("testdata/v1/token-enrolled-encoded.json")
	if err != nil {
		t.Fatal(err)
	}
	v1 := string(v1b)
	tok, err := EncodeToken(vecBase(), Head{Seq: 9, Hash: Hash(key32("a"))})
	if err != nil {
		t.Fatal(err)
	}
	v2 := string(tok)
	sealed := member(t, v1, "sealed")
	for _, c := range []struct{ name, in, path string }{
		{"duplicate key, last one wins", replaceOnce(t, v1, `"status":"active"`, `"status":"revoked","status":"active"`), "status"},
		{"duplicate key, first one wins", replaceOnce(t, v1, `"status":"active"`, `"status":"active","status":"revoked"`), "status"},
		{"key in another case", replaceOnce(t, v1, `"keyslot":1`, `"KeySlot":1`), "keyslot"},
		// Without custos_version itself, the token reads as version 2.
		{"custos_version in another case", replaceOnce(t, v1, `"custos_version":1`, `"Custos_Version":1`), ""},
		{"key in another case (version 2)", replaceOnce(t, v2, `"anchor"`, `"Anchor"`), "anchor"},
		{"trailing }", v1 + "}", ""},
		{"trailing ]", v1 + "]", ""},
		{"trailing } (version 2)", v2 + "}", ""},
		{"base64 with a line break", replaceOnce(t, v1, sealed, sealed[:40]+`\n`+sealed[40:]), "cards[0].sealed"},
		{"base64 with non-zero padding bits", replaceOnce(t, v1, `=="`, `9="`), "cards[0].sealed"},
		{"base64url with non-zero unused bits (version 2)", replaceOnce(t, v2, member(t, v2, "sealed"), member(t, v2, "sealed")[:len(member(t, v2, "sealed"))-2]+`B"`), "record.cards[0].sealed"},
		{"upper-case hex", replaceOnce(t, v1, `"digest":"a0`, `"digest":"A0`), "digest"},
		{"upper-case hex (version 2)", replaceOnce(t, v2, `"digest":"`, `"digest":"A`), "record.digest"},
		{"invalid utf-8", replaceOnce(t, v1, "alice", "al\xffce"), "cards[0].custodian"},
		{"invalid utf-8 (version 2)", replaceOnce(t, v2, "Ada Lovelace", "Ada \xc0 Lovelace"), "record.cards[0].custodian"},
		{`"anchor":null`, replaceOnce(t, v1, member(t, v1, "anchor"), `"anchor":null`), "anchor"},
		{`"anchor":null (version 2)`, replaceOnce(t, v2, member(t, v2, "anchor"), `"anchor":null`), "anchor"},
	} {
		if _, err := ParseToken([]byte(c.in)); !isFormat(err, CopyToken, c.path) {
			t.Errorf("%s: %v, want a token error at %q", c.name, err, c.path)
		}
	}
}

func TestReadersRefuseHugeInput(t *testing.T) {
	huge := bytes.Repeat([]byte(" "), maxCopySize+1)
	if _, err := ParseRecord(huge); !isFormat(err, CopyRecord, "record") {
		t.Errorf("record: %v", err)
	}
	if _, err := ParseToken(huge); !errors.Is(err, ErrInvalid) {
		t.Errorf("token: %v", err)
	}
}

func TestShowText(t *testing.T) {
	for in, want := range map[string]string{
		"Ada Lovelace":          "Ada Lovelace",
		"Zoë 山田":                "Zoë 山田",
		"a\u202eb":              "a?b",
		"a\x1b[31mb":            "a?[31mb",
		"a\xffb":                "a?b",
		"a<b>&c":                "a?b??c",
		strings.Repeat("x", 64): strings.Repeat("x", 64),
		strings.Repeat("x", 65): strings.Repeat("x", 61) + "...",
		strings.Repeat("é", 40): strings.Repeat("é", 30) + "...",
	} {
		if got := ShowText(in); got != want {
			t.Errorf("ShowText(%q) = %q, want %q", in, got, want)
		}
	}
}
