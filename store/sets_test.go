package store

import (
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// testdata/format/sets.json holds the vectors of docs/FORMAT.md section
// 14. TestSetVectors makes them (go test -run TestSetVectors -update
// writes the file), checks that the file is what this generator makes,
// and checks every case in it against this package.
const setVectorsPath = "../testdata/format/sets.json"

// testPublicKey is a deterministic P-256 key's DER SubjectPublicKeyInfo.
func testPublicKey(seed string) []byte {
	scalar := sha256.Sum256([]byte("set key " + seed))
	k, err := ecdh.P256().NewPrivateKey(scalar[:])
	if err != nil {
		panic(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.PublicKey())
	if err != nil {
		panic(err)
	}
	return der
}

// testSet is a set of n cards with deterministic keys and stand-in
// attestations (the codec checks their form, not their chain).
func testSet(name string, n, k int) *Set {
	s := &Set{Name: name, Version: 1, K: k}
	for i := range n {
		pub := testPublicKey(fmt.Sprintf("%s/%d", name, i))
		s.Cards = append(s.Cards, SetCard{Serial: strconv.Itoa(20000000 + i), Slot: 0x82, Custodian: custodianNames[i%len(custodianNames)],
			Key: sha256.Sum256(pub), PublicKey: pub, Attestation: []byte(fmt.Sprintf("attestation chain of card %d of %s", i, name))})
	}
	return s
}

// nextVersion is s with card at replaced by a new card: the next version.
func nextVersion(t testing.TB, s *Set, at int, serial string) *Set {
	t.Helper()
	fp, err := s.Fingerprint()
	if err != nil {
		t.Fatal(err)
	}
	n := s.Clone()
	n.Version++
	n.Previous = fp
	pub := testPublicKey(fmt.Sprintf("%s/v%d/%s", s.Name, n.Version, serial))
	n.Cards[at] = SetCard{Serial: serial, Slot: 0x83, Key: sha256.Sum256(pub), PublicKey: pub, Attestation: []byte("attestation of " + serial)}
	return n
}

func mustSetText(t testing.TB, s *Set) string {
	t.Helper()
	b, err := s.Encode()
	if err != nil {
		t.Fatalf("encode set: %v", err)
	}
	return string(b)
}

type setVectorFile struct {
	About []string        `json:"about"`
	Cases []setVectorCase `json:"cases"`
}

type setVectorCase struct {
	Name    string    `json:"name"`
	Input   string    `json:"input"`
	File    bool      `json:"file,omitempty"`
	Expect  string    `json:"expect"`
	Value   *setValue `json:"value,omitempty"`
	Path    *string   `json:"path,omitempty"`
	Problem string    `json:"problem,omitempty"`
}

type setValue struct {
	Name            string         `json:"name"`
	Version         int            `json:"version"`
	Previous        *string        `json:"previous"`
	K               int            `json:"k"`
	AllowUnattested bool           `json:"allow_unattested"`
	Fingerprint     string         `json:"fingerprint"`
	Cards           []setCardValue `json:"cards"`
}

type setCardValue struct {
	Serial      string  `json:"serial"`
	Slot        string  `json:"slot"`
	Custodian   *string `json:"custodian"`
	Key         string  `json:"key"`
	PublicKey   string  `json:"public_key"`
	Attestation *string `json:"attestation"`
}

var setVectorAbout = []string{
	"Vectors of docs/FORMAT.md section 14: the custodian set file.",
	"input is the set's JSON text; file true means input is a whole set file (the text and its line feed, or not) and the reader of set files takes it.",
	"expect ok: the reader accepts it; value is what it decodes to (public_key and attestation as hex of the decoded bytes, custodian and attestation null when absent, previous null for version 1) and fingerprint the SHA-256 of the JSON text.",
	"expect reject: the reader rejects it and names path, the member at fault (section 7, Paths; the set's own path is \"\"). problem is custos's message, not compared.",
}

func setValueOf(s *Set, text []byte) *setValue {
	v := &setValue{Name: s.Name, Version: s.Version, K: s.K, AllowUnattested: s.AllowUnattested, Cards: []setCardValue{}}
	fp := sha256.Sum256(text)
	v.Fingerprint = hex.EncodeToString(fp[:])
	if s.Version > 1 {
		p := hex.EncodeToString(s.Previous[:])
		v.Previous = &p
	}
	for _, c := range s.Cards {
		cv := setCardValue{Serial: c.Serial, Slot: fmt.Sprintf("%02x", c.Slot), Key: hex.EncodeToString(c.Key[:]), PublicKey: hex.EncodeToString(c.PublicKey)}
		if c.Custodian != "" {
			cv.Custodian = &c.Custodian
		}
		if c.Attestation != nil {
			a := hex.EncodeToString(c.Attestation)
			cv.Attestation = &a
		}
		v.Cards = append(v.Cards, cv)
	}
	return v
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// makeSetCases builds the vectors: accepted sets, then one rejection per
// rule, each with the path section 7 says.
func makeSetCases(t testing.TB) []setVectorCase {
	var cases []setVectorCase
	ok := func(name, in string, file bool) {
		body := []byte(in)
		parse := ParseSet
		if file {
			body = bytes.TrimSuffix(body, []byte("\n"))
			parse = ParseSetFile
		}
		s, err := parse([]byte(in))
		if err != nil {
			t.Fatalf("vector %q: %v", name, err)
		}
		cases = append(cases, setVectorCase{Name: name, Input: in, File: file, Expect: "ok", Value: setValueOf(s, body)})
	}
	reject := func(name, in, path string, file bool) {
		parse := ParseSet
		if file {
			parse = ParseSetFile
		}
		_, err := parse([]byte(in))
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Fatalf("vector %q: want a *FormatError, got %v", name, err)
		}
		if fe.Path != path {
			t.Fatalf("vector %q: path %q, want %q (%v)", name, fe.Path, path, err)
		}
		p := path
		cases = append(cases, setVectorCase{Name: name, Input: in, File: file, Expect: "reject", Path: &p, Problem: fe.Problem})
	}

	base := testSet("dc-east", 5, 3)
	text := mustSetText(t, base)
	ok("version 1, 3 of 5", text, false)
	ok("version 1 as a file", text+"\n", true)
	v2 := nextVersion(t, base, 2, "20000099")
	ok("version 2 replaces card 2", mustSetText(t, v2), false)
	un := testSet("lab.2", 2, 2)
	un.AllowUnattested = true
	un.Cards[1].Attestation = nil
	un.Cards[1].Custodian = ""
	un.Cards[0].Custodian = "Zoë Ødegård"
	ok("unattested card allowed, no custodian", mustSetText(t, un), false)

	pub0 := b64(base.Cards[0].PublicKey)
	key0 := hex.EncodeToString(base.Cards[0].Key[:])
	reject("no line feed", text, "", true)
	reject("two line feeds", text+"\n\n", "", true)
	reject("carriage return", text+"\r\n", "", true)
	reject("format 2", replaceOnce(t, text, `"custos_set":1`, `"custos_set":2`), "custos_set", false)
	reject("name upper case", replaceOnce(t, text, `"name":"dc-east"`, `"name":"DC-east"`), "name", false)
	reject("name starts with a dash", replaceOnce(t, text, `"name":"dc-east"`, `"name":"-dc"`), "name", false)
	reject("name empty", replaceOnce(t, text, `"name":"dc-east"`, `"name":""`), "name", false)
	reject("version 0", replaceOnce(t, text, `"version":1`, `"version":0`), "version", false)
	reject("version 1 with previous", replaceOnce(t, text, `"version":1`, `"version":1,"previous":"`+strings.Repeat("ab", 32)+`"`), "previous", false)
	v2text := mustSetText(t, v2)
	reject("version 2 without previous", replaceOnce(t, v2text, member(t, v2text, "previous")+",", ""), "previous", false)
	reject("previous all zero", replaceOnce(t, v2text, member(t, v2text, "previous"), `"previous":"`+strings.Repeat("0", 64)+`"`), "previous", false)
	reject("k 1", replaceOnce(t, text, `"k":3`, `"k":1`), "k", false)
	reject("k above the cards", replaceOnce(t, text, `"k":3`, `"k":6`), "cards", false)
	reject("one card", oneCard(t), "cards", false)
	reject("members out of order", replaceOnce(t, text, `"name":"dc-east","version":1`, `"version":1,"name":"dc-east"`), "name", false)
	reject("unknown member", replaceOnce(t, text, `"k":3`, `"k":3,"n":5`), "", false)
	reject("case variant", replaceOnce(t, text, `"k":3`, `"K":3`), "k", false)
	reject("duplicate member", replaceOnce(t, text, `"k":3`, `"k":3,"k":3`), "k", false)
	reject("whitespace", replaceOnce(t, text, `"k":3`, `"k": 3`), "k", false)
	reject("trailing data", text+"x", "", false)
	reject("allow_unattested false", replaceOnce(t, text, `"k":3`, `"k":3,"allow_unattested":false`), "allow_unattested", false)
	reject("serial twice", replaceOnce(t, text, `"serial":"20000001"`, `"serial":"20000000"`), "cards[1].serial", false)
	reject("serial with a leading zero", replaceOnce(t, text, `"serial":"20000001"`, `"serial":"020000001"`), "cards[1].serial", false)
	reject("slot 81", replaceOnce(t, text, `"slot":"82"`, `"slot":"81"`), "cards[0].slot", false)
	reject("custodian with a bidi override", replaceOnce(t, text, `"custodian":"Ada Lovelace"`, "\"custodian\":\"Ada \u202eLovelace\""), "cards[0].custodian", false)
	reject("key twice", replaceOnce(t, text, `"key":"`+hex.EncodeToString(base.Cards[1].Key[:])+`"`, `"key":"`+key0+`"`), "cards[1].key", false)
	reject("key upper case", replaceOnce(t, text, key0, strings.ToUpper(key0)), "cards[0].key", false)
	flipped := []byte(key0)
	flipped[10] ^= 1
	reject("key not the public key's digest", replaceOnce(t, text, key0, string(flipped)), "cards[0].public_key", false)
	reject("public key padded", replaceOnce(t, text, pub0, base64.URLEncoding.EncodeToString(base.Cards[0].PublicKey)), "cards[0].public_key", false)
	reject("public key standard base64", replaceOnce(t, text, pub0, strings.ReplaceAll(strings.ReplaceAll(pub0, "-", "+"), "_", "/")+"+"), "cards[0].public_key", false)
	// A point off the curve: change the last byte of Y (and the key to match).
	off := append([]byte(nil), base.Cards[0].PublicKey...)
	off[len(off)-1] ^= 1
	offKey := sha256.Sum256(off)
	reject("public key off the curve", replaceOnce(t, replaceOnce(t, text, pub0, b64(off)), key0, hex.EncodeToString(offKey[:])), "cards[0].public_key", false)
	short := base.Cards[0].PublicKey[:90]
	shortKey := sha256.Sum256(short)
	reject("public key short", replaceOnce(t, replaceOnce(t, text, pub0, b64(short)), key0, hex.EncodeToString(shortKey[:])), "cards[0].public_key", false)
	att0 := member(t, text, "attestation")
	reject("attestation missing", replaceOnce(t, text, ","+att0, ""), "cards[0].attestation", false)
	reject("attestation empty", replaceOnce(t, text, att0, `"attestation":""`), "cards[0].attestation", false)
	reject("attestation too long", replaceOnce(t, text, att0, `"attestation":"`+b64(make([]byte, MaxAttestation+1))+`"`), "cards[0].attestation", false)
	reject("null cards", replaceOnce(t, text, text[strings.Index(text, `"cards":`):len(text)-1], `"cards":null`), "cards", false)
	reject("escape in a custodian", replaceOnce(t, text, `"custodian":"Ada Lovelace"`, `"custodian":"Ada\u0020Lovelace"`), "cards[0].custodian", false)
	return cases
}

// oneCard is a set of one card, which the reader refuses at its cards.
func oneCard(t testing.TB) string {
	s := testSet("one", 2, 2)
	text := mustSetText(t, s)
	i := strings.Index(text, `,{"serial":"20000001"`)
	return text[:i] + "]}"
}

func TestSetVectors(t *testing.T) {
	vf := setVectorFile{About: setVectorAbout, Cases: makeSetCases(t)}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(vf); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(setVectorsPath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(setVectorsPath)
	if err != nil {
		t.Fatalf("%v (go test -run TestSetVectors -update makes it)", err)
	}
	if !bytes.Equal(data, buf.Bytes()) {
		t.Errorf("%s is not what the generator makes (go test -run TestSetVectors -update rewrites it)", setVectorsPath)
	}
	var got setVectorFile
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	oks, rejects := 0, 0
	for _, c := range got.Cases {
		parse := ParseSet
		if c.File {
			parse = ParseSetFile
		}
		s, err := parse([]byte(c.Input))
		switch c.Expect {
		case "ok":
			oks++
			if err != nil {
				t.Errorf("%s: %v", c.Name, err)
				continue
			}
			body := strings.TrimSuffix(c.Input, "\n")
			if v := setValueOf(s, []byte(body)); !jsonEqual(t, v, c.Value) {
				t.Errorf("%s: decodes to %+v, want %+v", c.Name, v, c.Value)
			}
			again, err := s.Encode()
			if err != nil || string(again) != body {
				t.Errorf("%s: re-encodes as %s (%v)", c.Name, again, err)
			}
			if fp, _ := s.Fingerprint(); hex.EncodeToString(fp[:]) != c.Value.Fingerprint {
				t.Errorf("%s: fingerprint %x", c.Name, fp)
			}
		case "reject":
			rejects++
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Copy != CopySet || c.Path == nil || fe.Path != *c.Path {
				t.Errorf("%s: %v, want a rejection at %q", c.Name, err, *c.Path)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v does not wrap ErrInvalid", c.Name, err)
			}
		default:
			t.Errorf("%s: expect %q", c.Name, c.Expect)
		}
	}
	if oks < 4 || rejects < 30 {
		t.Fatalf("%d accepted and %d rejected vectors: too few", oks, rejects)
	}
	t.Logf("set vectors: %d accepted, %d rejected", oks, rejects)
}

func jsonEqual(t testing.TB, a, b any) bool {
	x, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

// Encode refuses what ParseSet refuses, at the same path.
func TestSetEncodeChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(s *Set)
		path string
	}{
		{"name", func(s *Set) { s.Name = "A" }, "name"},
		{"version 0", func(s *Set) { s.Version = 0 }, "version"},
		{"version 2 without previous", func(s *Set) { s.Version = 2 }, "previous"},
		{"version 1 with previous", func(s *Set) { s.Previous[0] = 1 }, "previous"},
		{"k", func(s *Set) { s.K = 1 }, "k"},
		{"k above n", func(s *Set) { s.K = 6 }, "cards"},
		{"serial", func(s *Set) { s.Cards[2].Serial = "0" }, "cards[2].serial"},
		{"serial twice", func(s *Set) { s.Cards[2].Serial = s.Cards[0].Serial }, "cards[2].serial"},
		{"slot", func(s *Set) { s.Cards[1].Slot = 0x9a }, "cards[1].slot"},
		{"custodian", func(s *Set) { s.Cards[1].Custodian = "a\tb" }, "cards[1].custodian"},
		{"key twice", func(s *Set) { s.Cards[3].Key = s.Cards[1].Key }, "cards[3].key"},
		{"public key", func(s *Set) { s.Cards[3].PublicKey = s.Cards[2].PublicKey }, "cards[3].public_key"},
		{"attestation missing", func(s *Set) { s.Cards[4].Attestation = nil }, "cards[4].attestation"},
		{"one card", func(s *Set) { s.Cards, s.K = s.Cards[:1], 2 }, "cards"},
	} {
		s := testSet("enc", 5, 3)
		tc.edit(s)
		_, err := s.Encode()
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Path != tc.path {
			t.Errorf("%s: %v, want a *FormatError at %q", tc.name, err, tc.path)
		}
	}
}

// FuzzParseSet: whatever the set reader accepts re-encodes to the same
// bytes (one encoding per set), and the file reader agrees with it.
func FuzzParseSet(f *testing.F) {
	data, err := os.ReadFile(setVectorsPath)
	if err != nil {
		f.Fatal(err)
	}
	var vf setVectorFile
	if err := json.Unmarshal(data, &vf); err != nil {
		f.Fatal(err)
	}
	for _, c := range vf.Cases {
		f.Add([]byte(c.Input))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSet(b)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Copy != CopySet {
				t.Fatalf("rejected with %T %v, want a *FormatError of the set", err, err)
			}
			if _, ferr := ParseSetFile(append(bytes.Clone(b), '\n')); ferr == nil {
				t.Fatal("the file reader accepts what the set reader refuses")
			}
			return
		}
		again, err := s.Encode()
		if err != nil {
			t.Fatalf("accepted %q but cannot re-encode: %v", b, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted a non-canonical set:\n%q\nre-encodes as\n%q", b, again)
		}
		fs, err := ParseSetFile(append(bytes.Clone(b), '\n'))
		if err != nil {
			t.Fatalf("the file reader refuses an accepted set: %v", err)
		}
		if fp1, _ := fs.Fingerprint(); fp1 != sha256.Sum256(b) {
			t.Fatal("fingerprint is not the SHA-256 of the text")
		}
	})
}

func putSet(l *Log, s *Set) (Head, error) {
	return l.Update(func(tx *Tx) error {
		_, err := tx.PutSet("operator", s)
		return err
	})
}

func TestSetLogRules(t *testing.T) {
	l := openTest(t)
	v1 := testSet("fleet", 5, 3)
	if _, err := putSet(l, v1); err != nil {
		t.Fatal(err)
	}
	var se *SetRuleError
	if _, err := putSet(l, v1); !errors.As(err, &se) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("version 1 twice: %v", err)
	}
	other := testSet("fleet", 4, 2)
	if _, err := putSet(l, other); !errors.As(err, &se) {
		t.Fatalf("another version 1 of the name: %v", err)
	}
	v2 := nextVersion(t, v1, 1, "30000001")
	bad := v2.Clone()
	bad.Previous[0] ^= 1
	if _, err := putSet(l, bad); !errors.As(err, &se) || !strings.Contains(err.Error(), "previous") {
		t.Fatalf("a wrong previous: %v", err)
	}
	v3 := nextVersion(t, v2, 0, "30000002")
	if _, err := putSet(l, v3); !errors.As(err, &se) || !strings.Contains(err.Error(), "next is 2") {
		t.Fatalf("version 3 before 2: %v", err)
	}
	lone := nextVersion(t, testSet("lonely", 3, 2), 0, "30000003")
	if _, err := putSet(l, lone); !errors.As(err, &se) || !strings.Contains(err.Error(), "version 1 comes first") {
		t.Fatalf("version 2 of an unknown set: %v", err)
	}
	if _, err := putSet(l, v2); err != nil {
		t.Fatal(err)
	}
	if _, err := putSet(l, v3); err != nil {
		t.Fatal(err)
	}
	cur, err := l.Set("fleet")
	if err != nil || cur.Set.Version != 3 {
		t.Fatalf("current: %+v %v", cur, err)
	}
	fp3, _ := v3.Fingerprint()
	if cur.Fingerprint != fp3 || mustSetText(t, cur.Set) != mustSetText(t, v3) {
		t.Fatal("the log's version 3 is not the one put")
	}
	old, err := l.SetVersion("fleet", 1)
	if err != nil || mustSetText(t, old.Set) != mustSetText(t, v1) {
		t.Fatalf("version 1: %v", err)
	}
	if _, err := l.SetVersion("fleet", 4); !errors.Is(err, ErrNotFound) {
		t.Fatalf("version 4: %v", err)
	}
	if _, err := l.Set("nothing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown set: %v", err)
	}
	if _, err := putSet(l, testSet("another", 2, 2)); err != nil {
		t.Fatal(err)
	}
	all, err := l.Sets()
	if err != nil || len(all) != 2 || all[0].Set.Name != "another" || all[1].Set.Name != "fleet" || all[1].Set.Version != 3 {
		t.Fatalf("sets: %v %v", all, err)
	}
	// The set's keys joined the card registry.
	cr, err := l.CardByFingerprint(hex.EncodeToString(v3.Cards[0].Key[:]))
	if err != nil || cr.Serial != "30000002" {
		t.Fatalf("card of a set key: %+v %v", cr, err)
	}
	// A set event may not name a ceremony, nor be appended as a step.
	if _, err := l.Append(Event{Actor: "x", Type: TypeSet, Body: []byte(mustSetText(t, testSet("sneaky", 2, 2)))}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a set appended as a step: %v", err)
	}
	if _, err := l.Sets(); err != nil {
		t.Fatal(err)
	}
}

// A set event written behind the log's back that breaks the rule is
// reported by Verify at that event.
func TestSetForgedEventFailsVerify(t *testing.T) {
	l, err := open(filepath.Join(t.TempDir(), "custos.db"), nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkStructure(t, l); l.Close() })
	v1 := testSet("fleet", 3, 2)
	if _, err := putSet(l, v1); err != nil {
		t.Fatal(err)
	}
	forged := testSet("fleet", 3, 3)
	body, _ := forged.Encode()
	head, _ := l.Head()
	seq := head.Seq + 1
	writeRaw(t, l, Event{Seq: seq, Time: l.now().UTC(), Actor: "mallory", Type: TypeSet, Body: body, Prev: head.Hash})
	_, err = l.Verify()
	var ce *ChainError
	var se *SetRuleError
	if !errors.As(err, &ce) || ce.Seq != seq || !errors.As(err, &se) {
		t.Fatalf("verify: %v, want event %d refused by the set rule", err, seq)
	}
}

// writeRaw appends an event straight into the file (as someone who can
// write it would), head record and indexes untouched but the head.
func writeRaw(t *testing.T, l *Log, ev Event) {
	t.Helper()
	rec, err := encodeRecord(ev)
	if err != nil {
		t.Fatal(err)
	}
	ev.Hash = sha256.Sum256(rec)
	err = l.db.Update(func(btx *bolt.Tx) error {
		if err := btx.Bucket(bucketEvents).Put(seqKey(ev.Seq), storedValue(ev.Hash, rec)); err != nil {
			return err
		}
		return btx.Bucket(bucketMeta).Put(keyHead, encodeHead(ev.Head()))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// setRecord is a complete ceremony of volume vol enrolled to s: its cards
// are the set's, with their keys.
func setRecord(t testing.TB, s *Set, name, vol string, k int) *Record {
	t.Helper()
	ref, err := s.Ref()
	if err != nil {
		t.Fatal(err)
	}
	rec := sampleCeremony(name, vol, k, len(s.Cards))
	rec.Salt = fp("salt " + name)[:64]
	rec.Set = ref
	for i, c := range s.Cards {
		rc := testCard(rec, i+1)
		rc.Serial, rc.Slot, rc.Custodian, rc.Key = c.Serial, c.Slot, c.Custodian, c.Key
		rc.Attestation = sha256.Sum256(c.Attestation)
		rc.Sealed = testSealed(rec.ID, rec.Volume, i+1, rec.K, rec.N, c.Key)
		rec.Cards = append(rec.Cards, rc)
	}
	return rec
}

func TestSetCeremoniesAndRollcalls(t *testing.T) {
	l := openTest(t)
	s := testSet("fleet", 5, 3)
	if _, err := putSet(l, s); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		rec := setRecord(t, s, fmt.Sprintf("c%d", i), fmt.Sprintf("v%d", i), 3)
		_, err := l.Update(func(tx *Tx) error {
			open := rec.Clone()
			open.Cards = nil
			if _, err := tx.PutCeremony("op", StatusOpen, open); err != nil {
				return err
			}
			if _, err := tx.PutCeremony("op", StatusOpen, rec); err != nil {
				return err
			}
			_, err := tx.PutCeremony("op", StatusActive, rec)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.IDString())
	}
	// One ceremony not enrolled to a set.
	plain := complete(sampleCeremony("plain", "v9", 2, 3))
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("op", StatusActive, plain); return err }); err != nil {
		t.Fatal(err)
	}
	got, err := l.SetCeremonies("fleet")
	if err != nil || len(got) != 3 {
		t.Fatalf("set ceremonies: %d, %v", len(got), err)
	}
	for i, st := range got {
		if st.Record.IDString() != ids[i] || st.Status != StatusActive {
			t.Fatalf("set ceremony %d: %s %s, want %s active", i, st.Record.IDString(), st.Status, ids[i])
		}
	}
	if none, err := l.SetCeremonies("other"); err != nil || none != nil {
		t.Fatalf("another set's ceremonies: %v %v", none, err)
	}
	// The set's cards do not carry every ceremony of the fleet in their
	// records; a rollcall of one of them is still taken.
	cr, err := l.Card(s.Cards[0].Serial)
	if err != nil || len(cr.Ceremonies) != 0 {
		t.Fatalf("card record: %+v %v", cr, err)
	}
	rc := Rollcall{Ceremony: ids[1], Serial: s.Cards[0].Serial, Fingerprint: hex.EncodeToString(s.Cards[0].Key[:]), OK: true}
	if _, err := l.RecordRollcall("custodian", rc); err != nil {
		t.Fatalf("rollcall of a set ceremony: %v", err)
	}
	rc.Fingerprint = hex.EncodeToString(s.Cards[1].Key[:])
	if _, err := l.RecordRollcall("custodian", rc); !errors.Is(err, ErrInvalid) {
		t.Fatalf("rollcall with another card's key: %v", err)
	}

	// Set rollcalls: the latest per card.
	srcs := []SetRollcall{
		{Set: "fleet", Version: 1, Serial: s.Cards[0].Serial, Fingerprint: hex.EncodeToString(s.Cards[0].Key[:]), OK: true},
		{Set: "fleet", Version: 1, Serial: s.Cards[1].Serial, Fingerprint: hex.EncodeToString(s.Cards[1].Key[:]), OK: false, Reason: "wrong card"},
		{Set: "fleet", Version: 1, Serial: s.Cards[0].Serial, Fingerprint: hex.EncodeToString(s.Cards[0].Key[:]), OK: false, Reason: "pin blocked"},
	}
	for _, r := range srcs {
		if _, err := l.Update(func(tx *Tx) error { _, err := tx.RecordSetRollcall("custodian", r); return err }); err != nil {
			t.Fatal(err)
		}
	}
	last, err := l.SetRollcalls("fleet")
	if err != nil || len(last) != 2 || last[s.Cards[0].Serial].Reason != "pin blocked" || last[s.Cards[1].Serial].OK {
		t.Fatalf("set rollcalls: %+v %v", last, err)
	}
	for _, bad := range []SetRollcall{
		{Set: "fleet", Version: 2, Serial: s.Cards[0].Serial, Fingerprint: hex.EncodeToString(s.Cards[0].Key[:]), OK: true},
		{Set: "fleet", Version: 1, Serial: "99", Fingerprint: hex.EncodeToString(s.Cards[0].Key[:]), OK: true},
		{Set: "fleet", Version: 1, Serial: s.Cards[0].Serial, Fingerprint: hex.EncodeToString(s.Cards[1].Key[:]), OK: true},
		{Set: "nope", Version: 1, Serial: s.Cards[0].Serial, Fingerprint: hex.EncodeToString(s.Cards[0].Key[:]), OK: true},
	} {
		if _, err := l.Update(func(tx *Tx) error { _, err := tx.RecordSetRollcall("custodian", bad); return err }); !errors.Is(err, ErrInvalid) {
			t.Errorf("rollcall %+v: %v", bad, err)
		}
	}
}

// A log made before the set indexes lacks their buckets: it verifies, the
// lookups find nothing, and the first set written makes them.
func TestSetIndexesLate(t *testing.T) {
	boltOnly(t)
	l := openTest(t)
	rec := complete(sampleCeremony("before", "v1", 2, 3))
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("op", StatusActive, rec); return err }); err != nil {
		t.Fatal(err)
	}
	err := l.db.Update(func(btx *bolt.Tx) error {
		for _, b := range [][]byte{bucketSets, bucketSetCeremonies, bucketSetRollcalls} {
			if err := btx.DeleteBucket(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Verify(); err != nil {
		t.Fatalf("verify without the set indexes: %v", err)
	}
	if all, err := l.Sets(); err != nil || len(all) != 0 {
		t.Fatalf("sets: %v %v", all, err)
	}
	if _, err := l.Set("x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("set: %v", err)
	}
	if st, err := l.SetRollcalls("x"); err != nil || len(st) != 0 {
		t.Fatalf("set rollcalls: %v %v", st, err)
	}
	if _, err := putSet(l, testSet("late", 3, 2)); err != nil {
		t.Fatal(err)
	}
	if st, err := l.Set("late"); err != nil || st.Set.Version != 1 {
		t.Fatalf("set written late: %v", err)
	}
}

// setTamperLog is a log holding every set index: two versions of a set,
// a ceremony enrolled to it, a card's rollcall of that ceremony and two
// set rollcalls.
func setTamperLog(t *testing.T) (*Log, *Set, string) {
	l := openTest(t)
	s := testSet("fleet", 3, 2)
	if _, err := putSet(l, s); err != nil {
		t.Fatal(err)
	}
	rec := setRecord(t, s, "c0", "v0", 2)
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("op", StatusActive, rec); return err }); err != nil {
		t.Fatal(err)
	}
	rc := Rollcall{Ceremony: rec.IDString(), Serial: s.Cards[0].Serial, Fingerprint: hex.EncodeToString(s.Cards[0].Key[:]), OK: true}
	if _, err := l.RecordRollcall("custodian", rc); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		src := SetRollcall{Set: "fleet", Version: 1, Serial: s.Cards[i].Serial, Fingerprint: hex.EncodeToString(s.Cards[i].Key[:]), OK: i == 0}
		if _, err := l.Update(func(tx *Tx) error { _, err := tx.RecordSetRollcall("custodian", src); return err }); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := putSet(l, nextVersion(t, s, 2, "30000009")); err != nil {
		t.Fatal(err)
	}
	return l, s, rec.IDString()
}

// The streaming verifier passes a sound log holding sets on its own, and
// refuses one whose set indexes were altered: the reference replay then
// names the index.
func TestSetIndexesTampered(t *testing.T) {
	boltOnly(t)
	stream := func(btx *bolt.Tx) bool {
		_, ok := verifyStream(boltKV{btx}, &boltBackend{db: btx.DB()}, nil)
		return ok
	}
	put := func(bucket []byte, k string, v []byte) func(*bolt.Tx) error {
		return func(btx *bolt.Tx) error { return btx.Bucket(bucket).Put([]byte(k), v) }
	}
	edit := func(bucket []byte, k, old, new string) func(*bolt.Tx) error {
		return func(btx *bolt.Tx) error {
			b := btx.Bucket(bucket)
			v := b.Get([]byte(k))
			if !bytes.Contains(v, []byte(old)) {
				return fmt.Errorf("%s %q holds no %q: %s", bucket, printable([]byte(k)), old, v)
			}
			return b.Put([]byte(k), bytes.Replace(v, []byte(old), []byte(new), 1))
		}
	}
	del := func(bucket []byte, k string) func(*bolt.Tx) error {
		return func(btx *bolt.Tx) error {
			if btx.Bucket(bucket).Get([]byte(k)) == nil {
				return fmt.Errorf("%s %q: nothing to delete", bucket, printable([]byte(k)))
			}
			return btx.Bucket(bucket).Delete([]byte(k))
		}
	}
	l, s, id := setTamperLog(t)
	v1, v2 := string(setVersionKey("fleet", 1)), string(setVersionKey("fleet", 2))
	card0, card1 := string(setSubKey("fleet", s.Cards[0].Serial)), string(setSubKey("fleet", s.Cards[1].Serial))
	cases := map[string]func(btx *bolt.Tx) error{
		"set head names version 1":      edit(bucketSets, "fleet", `"version":2`, `"version":1`),
		"set head removed":              del(bucketSets, "fleet"),
		"set head of an unknown set":    put(bucketSets, "ghost", []byte(`{"version":1,"fingerprint":"00","seq":2}`)),
		"set version's seq altered":     edit(bucketSets, v1, `"seq":2`, `"seq":3`),
		"set version removed":           del(bucketSets, v2),
		"set version 3 added":           put(bucketSets, string(setVersionKey("fleet", 3)), []byte(`{"fingerprint":"00","seq":9,"body":{}}`)),
		"set ceremony removed":          del(bucketSetCeremonies, string(setSubKey("fleet", id))),
		"set ceremony's version":        edit(bucketSetCeremonies, string(setSubKey("fleet", id)), `"version":1`, `"version":2`),
		"set ceremony added":            put(bucketSetCeremonies, string(setSubKey("fleet", idOf("other"))), []byte(`{"volume":"v","version":1}`)),
		"set rollcall turned ok":        edit(bucketSetRollcalls, card1, `"ok":false`, `"ok":true`),
		"set rollcall removed":          del(bucketSetRollcalls, card0),
		"set rollcall of another card":  put(bucketSetRollcalls, string(setSubKey("fleet", s.Cards[2].Serial)), []byte(`{}`)),
		"set rollcall's seq altered":    edit(bucketSetRollcalls, card0, `"Seq":`, `"Seq":1`),
		"set card's attestation gone":   edit(bucketCards, s.Cards[1].Serial, `,"attestation":"`, `,"x":"`),
		"set card learns the ceremony":  edit(bucketCards, s.Cards[1].Serial, `"keys":`, `"ceremonies":["`+id+`"],"keys":`),
		"set version's body altered":    edit(bucketSets, v1, `"k":2`, `"k":3`),
		"set rollcalls bucket removed":  func(btx *bolt.Tx) error { return btx.DeleteBucket(bucketSetRollcalls) },
		"set ceremonies bucket removed": func(btx *bolt.Tx) error { return btx.DeleteBucket(bucketSetCeremonies) },
	}
	inRolledBack(t, l, func(btx *bolt.Tx) {
		if !stream(btx) {
			t.Fatal("the streaming verifier refused the sound log")
		}
	})
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			inRolledBack(t, l, func(btx *bolt.Tx) {
				if err := tamper(btx); err != nil {
					t.Fatal(err)
				}
				if stream(btx) {
					t.Error("the streaming verifier passed it")
				}
				if _, err := verifyTx(btx, nil); !errors.Is(err, ErrIndex) {
					t.Errorf("Verify: %v, want ErrIndex", err)
				}
			})
		})
	}
}

// A set rollcall of a version beyond 32 bits would name, through the
// index key, the version 2^32 below it: the log refuses it, written
// through Tx or behind the log's back.
func TestSetRollcallVersionWraps(t *testing.T) {
	l, err := open(filepath.Join(t.TempDir(), "custos.db"), nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkStructure(t, l); l.Close() })
	s := testSet("fleet", 3, 2)
	if _, err := putSet(l, s); err != nil {
		t.Fatal(err)
	}
	src := SetRollcall{Set: "fleet", Version: 1<<32 + 1, Serial: s.Cards[0].Serial, Fingerprint: hex.EncodeToString(s.Cards[0].Key[:]), OK: true}
	var se *SetRuleError
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.RecordSetRollcall("custodian", src); return err }); !errors.As(err, &se) {
		t.Fatalf("rollcall of version 2^32+1: %v", err)
	}
	head, _ := l.Head()
	seq := head.Seq + 1
	writeRaw(t, l, Event{Seq: seq, Time: l.now().UTC(), Actor: "mallory", Type: TypeSetRollcall, Body: mustJSON(src), Prev: head.Hash})
	_, err = l.Verify()
	var ce *ChainError
	if !errors.As(err, &ce) || ce.Seq != seq || !errors.As(err, &se) {
		t.Fatalf("verify: %v, want event %d refused by the set rule", err, seq)
	}
}
