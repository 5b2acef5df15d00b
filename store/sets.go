package store

import (
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Custodian sets (docs/FORMAT.md section 14): a team's cards, registered
// once in a card ceremony, so that any number of volumes can be enrolled
// to them without the cards present. The set file is the set in the
// canonical JSON of section 7 followed by a line feed; its fingerprint is
// the SHA-256 of the JSON text. The log records each version of a set in
// an event of type TypeSet whose body is that text, and each card's set
// rollcall in an event of type TypeSetRollcall.

// Event types of custodian sets, written by Tx.PutSet and
// Tx.RecordSetRollcall; apply interprets them.
const (
	TypeSet         = "set"          // body: the set's JSON text (section 14)
	TypeSetRollcall = "set.rollcall" // body: SetRollcall
)

// CopySet names a set file (or a set event's body) in a *FormatError. Its
// own path is "": members are "name", "cards[2].public_key".
const CopySet = "set"

// Limits of a set (section 14).
const (
	SetFormat      = 1   // custos_set
	MinSetCards    = 2   // cards in a set, at least
	MaxSetCards    = 255 // and at most
	PublicKeySize  = 91  // a P-256 key's DER SubjectPublicKeyInfo
	MaxAttestation = 4096
)

// Set is a custodian set (docs/FORMAT.md section 14). Everything in it is
// public.
type Set struct {
	Name    string // 1-64 of a-z 0-9 . _ -, starting with a letter or digit
	Version int    // 1 to 4294967295
	// Previous is the fingerprint of the version this one replaces: zero
	// for version 1, set from version 2.
	Previous [32]byte
	// K is the default threshold: 2 <= K <= len(Cards).
	K int
	// AllowUnattested says cards without a verified attestation are
	// accepted.
	AllowUnattested bool
	// Cards are the set's cards, in the order they were registered.
	Cards []SetCard
}

// SetCard is one card of a set.
type SetCard struct {
	Serial    string // as in a record: decimal, 1 to 4294967295
	Slot      uint8  // 0x82-0x95
	Custodian string // section 7's text rule; "" when unknown
	Key       [32]byte
	// PublicKey is the card key's DER SubjectPublicKeyInfo (P-256, 91
	// bytes); Key is its SHA-256.
	PublicKey []byte
	// Attestation is the slot's attestation certificate followed by the
	// card's attestation-signing certificate (DER); nil when absent
	// (allowed only with AllowUnattested). store checks only its form;
	// whoever takes a set in verifies it (cards.VerifyAttestation).
	Attestation []byte
}

var (
	setFileMembers = []string{"custos_set", "name", "version", "previous", "k", "allow_unattested", "cards"}
	setCardMembers = []string{"serial", "slot", "custodian", "key", "public_key", "attestation"}
)

const (
	setFormat, setName, setVersion, setPrevious, setK, setAllow, setCards = 0, 1, 2, 3, 4, 5, 6
	scSerial, scSlot, scCustodian, scKey, scPublicKey, scAttestation      = 0, 1, 2, 3, 4, 5

	setFileRequired = 1<<setFormat | 1<<setName | 1<<setVersion | 1<<setK | 1<<setCards
	setCardRequired = 1<<scSerial | 1<<scSlot | 1<<scKey | 1<<scPublicKey
)

// ParseSetFile reads a set file: the set's JSON text (ParseSet) followed
// by one line feed and nothing else.
func ParseSetFile(b []byte) (*Set, error) {
	if len(b) > 0 && b[len(b)-1] == '\n' {
		return ParseSet(b[:len(b)-1])
	}
	if _, err := ParseSet(b); err != nil {
		return nil, err
	}
	return nil, &FormatError{Copy: CopySet, Problem: "no line feed after the set"}
}

// ParseSet reads a set's JSON text (a set file without its line feed, or
// a set event's body) in the canonical form of docs/FORMAT.md sections 7
// and 14, rejecting anything else. Errors are *FormatError (errors.Is
// ErrInvalid) naming the member, e.g. "cards[2].public_key".
func ParseSet(b []byte) (*Set, error) {
	r := reader{b: b, copy: CopySet}
	if err := r.start(""); err != nil {
		return nil, err
	}
	s, err := r.custodianSet()
	if err != nil {
		return nil, err
	}
	if err := r.end(""); err != nil {
		return nil, err
	}
	return s, nil
}

func (r *reader) custodianSet() (*Set, error) {
	var o object
	if err := o.open(r, "", setFileMembers, setFileRequired); err != nil {
		return nil, err
	}
	s := &Set{}
	for {
		j, err := o.next()
		if err != nil {
			return nil, err
		}
		if j < 0 {
			return s, nil
		}
		var p string
		switch j {
		case setFormat:
			var v uint64
			if v, p = r.uint(); p == "" && v != SetFormat {
				p = fmt.Sprintf("set file format %d, want %d", v, SetFormat)
			}
		case setName:
			var b []byte
			if b, p = r.str(); p == "" {
				if p = setNameProblem(b); p == "" {
					s.Name = string(b)
				}
			}
		case setVersion:
			if s.Version, p = r.intIn(1, maxSetVersion); p == "" && s.Version > 1 {
				// From version 2, previous is required.
				o.req |= 1 << setPrevious
			}
		case setPrevious:
			if p = r.hexInto(s.Previous[:]); p == "" {
				switch {
				case s.Version == 1:
					p = "version 1 replaces no version"
				case s.Previous == ([32]byte{}):
					p = "all zero"
				}
			}
		case setK:
			s.K, p = r.intIn(2, MaxSetCards)
		case setAllow:
			p = r.trueLit()
			s.AllowUnattested = true
		case setCards:
			if s.Cards, err = r.setCards(o.memberPath(j), s); err != nil {
				return nil, err
			}
		}
		if p != "" {
			return nil, o.failMember(p)
		}
	}
}

func (r *reader) setCards(path string, s *Set) ([]SetCard, error) {
	var a array
	if err := a.open(r, path); err != nil {
		return nil, err
	}
	var cards []SetCard
	for {
		more, err := a.next()
		if err != nil {
			return nil, err
		}
		if !more {
			break
		}
		c, err := r.setCard(elem(path, a.n-1), s, cards)
		if err != nil {
			return nil, err
		}
		cards = append(cards, c)
	}
	if p := setCountProblem(len(cards), s.K); p != "" {
		return nil, r.fail(path, p)
	}
	return cards, nil
}

func setCountProblem(n, k int) string {
	switch {
	case n < MinSetCards || n > MaxSetCards:
		return fmt.Sprintf("%d cards, want %d to %d", n, MinSetCards, MaxSetCards)
	case k > n:
		return fmt.Sprintf("k is %d, more than the %d cards", k, n)
	}
	return ""
}

func (r *reader) setCard(path string, s *Set, before []SetCard) (SetCard, error) {
	req := uint64(setCardRequired)
	if !s.AllowUnattested {
		req |= 1 << scAttestation
	}
	var o object
	var c SetCard
	if err := o.open(r, path, setCardMembers, req); err != nil {
		return c, err
	}
	for {
		j, err := o.next()
		if err != nil {
			return c, err
		}
		if j < 0 {
			return c, nil
		}
		var p string
		switch j {
		case scSerial:
			var b []byte
			if b, p = r.str(); p == "" {
				if p = serialProblem(b); p == "" {
					c.Serial = string(b)
					p = setSerialProblem(c.Serial, before)
				}
			}
		case scSlot:
			var b []byte
			if b, p = r.str(); p == "" {
				c.Slot, p = slotProblem(b)
			}
		case scCustodian:
			var b []byte
			if b, p = r.str(); p == "" {
				if p = textProblem(b, maxText); p == "" {
					c.Custodian = string(b)
				}
			}
		case scKey:
			if p = r.hexInto(c.Key[:]); p == "" {
				p = setKeyProblem(c.Key, before)
			}
		case scPublicKey:
			if c.PublicKey, p = r.b64url(); p == "" {
				p = publicKeyProblem(c.PublicKey, c.Key)
			}
		case scAttestation:
			if c.Attestation, p = r.b64url(); p == "" {
				p = attestationProblem(c.Attestation)
			}
		}
		if p != "" {
			return c, o.failMember(p)
		}
	}
}

func setSerialProblem(serial string, before []SetCard) string {
	for i, b := range before {
		if b.Serial == serial {
			return fmt.Sprintf("card %s is card %d of the set too", serial, i)
		}
	}
	return ""
}

func setKeyProblem(key [32]byte, before []SetCard) string {
	for i, b := range before {
		if b.Key == key {
			return fmt.Sprintf("the key of card %d too", i)
		}
	}
	return ""
}

// publicKeyProblem checks a card's public key: the DER SubjectPublicKeyInfo
// of a point on P-256, in its one encoding, whose SHA-256 is key.
func publicKeyProblem(der []byte, key [32]byte) string {
	if len(der) != PublicKeySize {
		return fmt.Sprintf("%d bytes, want a P-256 key's %d", len(der), PublicKeySize)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return "not a public key: " + err.Error()
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return "not a P-256 key"
	}
	again, err := x509.MarshalPKIXPublicKey(ec)
	if err != nil || !bytes.Equal(again, der) {
		return "not in its canonical encoding"
	}
	if sha256.Sum256(der) != key {
		return "its SHA-256 is not the card's key"
	}
	return ""
}

func attestationProblem(b []byte) string {
	if len(b) == 0 || len(b) > MaxAttestation {
		return fmt.Sprintf("attestation of %d bytes, want 1 to %d", len(b), MaxAttestation)
	}
	return ""
}

// Encode returns the set's JSON text, canonical (docs/FORMAT.md section
// 14), after checking every rule ParseSet applies; errors are
// *FormatError with the same paths.
func (s *Set) Encode() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var w writer
	w.raw(`{"custos_set":1,"name":`)
	w.str(s.Name)
	w.raw(`,"version":`)
	w.uint(uint64(s.Version))
	if s.Version > 1 {
		w.key(',', "previous")
		w.hex(s.Previous[:])
	}
	w.raw(`,"k":`)
	w.uint(uint64(s.K))
	if s.AllowUnattested {
		w.raw(`,"allow_unattested":true`)
	}
	w.raw(`,"cards":[`)
	for i := range s.Cards {
		c := &s.Cards[i]
		if i > 0 {
			w.byte(',')
		}
		w.raw(`{"serial":`)
		w.str(c.Serial)
		w.raw(`,"slot":`)
		w.hex([]byte{c.Slot})
		if c.Custodian != "" {
			w.key(',', "custodian")
			w.str(c.Custodian)
		}
		w.key(',', "key")
		w.hex(c.Key[:])
		w.key(',', "public_key")
		w.b64url(c.PublicKey)
		if c.Attestation != nil {
			w.key(',', "attestation")
			w.b64url(c.Attestation)
		}
		w.byte('}')
	}
	w.raw("]}")
	return w.b, nil
}

// EncodeFile returns the set file: the JSON text and a line feed.
func (s *Set) EncodeFile() ([]byte, error) {
	b, err := s.Encode()
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Fingerprint returns the SHA-256 of the set's JSON text.
func (s *Set) Fingerprint() ([32]byte, error) {
	b, err := s.Encode()
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// Ref names the set as a ceremony record does (section 8's set member).
func (s *Set) Ref() (*SetRef, error) {
	fp, err := s.Fingerprint()
	if err != nil {
		return nil, err
	}
	return &SetRef{Name: s.Name, Version: s.Version, Fingerprint: fp}, nil
}

// Card returns the card with this serial, or nil.
func (s *Set) Card(serial string) *SetCard {
	for i := range s.Cards {
		if s.Cards[i].Serial == serial {
			return &s.Cards[i]
		}
	}
	return nil
}

// Clone returns a deep copy.
func (s *Set) Clone() *Set {
	if s == nil {
		return nil
	}
	c := *s
	c.Cards = slices.Clone(s.Cards)
	for i := range c.Cards {
		c.Cards[i].PublicKey = bytes.Clone(c.Cards[i].PublicKey)
		c.Cards[i].Attestation = bytes.Clone(c.Cards[i].Attestation)
	}
	return &c
}

// check applies ParseSet's rules, with its paths.
func (s *Set) check() error {
	fail := func(path, problem string) error { return &FormatError{Copy: CopySet, Path: path, Problem: problem} }
	if s == nil {
		return fail("", "no set")
	}
	if p := setNameProblem([]byte(s.Name)); p != "" {
		return fail("name", p)
	}
	if s.Version < 1 || s.Version > maxSetVersion {
		return fail("version", fmt.Sprintf("%d out of range 1-%d", s.Version, maxSetVersion))
	}
	switch {
	case s.Version == 1 && s.Previous != ([32]byte{}):
		return fail("previous", "version 1 replaces no version")
	case s.Version > 1 && s.Previous == ([32]byte{}):
		return fail("previous", "missing")
	}
	if s.K < 2 || s.K > MaxSetCards {
		return fail("k", fmt.Sprintf("%d out of range 2-%d", s.K, MaxSetCards))
	}
	for i := range s.Cards {
		c := &s.Cards[i]
		path := elem("cards", i)
		cfail := func(member, problem string) error { return fail(join(path, member), problem) }
		if p := serialProblem([]byte(c.Serial)); p != "" {
			return cfail("serial", p)
		}
		if p := setSerialProblem(c.Serial, s.Cards[:i]); p != "" {
			return cfail("serial", p)
		}
		if c.Slot < MinSlot || c.Slot > MaxSlot {
			return cfail("slot", fmt.Sprintf("slot %02x, want 82 to 95", c.Slot))
		}
		if c.Custodian != "" {
			if p := textProblem([]byte(c.Custodian), maxText); p != "" {
				return cfail("custodian", p)
			}
		}
		if p := setKeyProblem(c.Key, s.Cards[:i]); p != "" {
			return cfail("key", p)
		}
		if p := publicKeyProblem(c.PublicKey, c.Key); p != "" {
			return cfail("public_key", p)
		}
		switch {
		case c.Attestation != nil:
			if p := attestationProblem(c.Attestation); p != "" {
				return cfail("attestation", p)
			}
		case !s.AllowUnattested:
			return cfail("attestation", "missing")
		}
	}
	if p := setCountProblem(len(s.Cards), s.K); p != "" {
		return fail("cards", p)
	}
	return nil
}

// SetRuleError is a set event the log refuses: a version that does not
// follow the one before (docs/FORMAT.md section 14), a set rollcall of a
// card or version the log does not hold. PutSet and RecordSetRollcall
// return it, and Verify reports it for an event written behind the log's
// back. It unwraps to ErrInvalid.
type SetRuleError struct {
	Set     string
	Version int
	Detail  string
}

func (e *SetRuleError) Error() string {
	return fmt.Sprintf("set %s version %d: %s", e.Set, e.Version, e.Detail)
}

func (e *SetRuleError) Unwrap() error { return ErrInvalid }

// SetRollcall records one card's set rollcall: whether the card still
// answers to the key the set holds for it (it opened a challenge sealed
// to that key with its PIN).
type SetRollcall struct {
	Set         string `json:"set"`
	Version     int    `json:"version"`
	Serial      string `json:"serial"`
	Fingerprint string `json:"fingerprint"` // the card key's, 64 hex
	OK          bool   `json:"ok"`
	Reason      string `json:"reason,omitempty"` // why it failed
}

// SetState is one version of a set as the log holds it.
type SetState struct {
	Set         *Set
	Fingerprint [32]byte
	// Seq is the number of the event that recorded it.
	Seq uint64
}

// SetRollcallState is a card's latest set rollcall.
type SetRollcallState struct {
	SetRollcall
	Time time.Time
	Seq  uint64
}

// Index buckets of the sets, listed in indexBuckets (schema 3, late:
// schema.go).
var (
	// name -> setHead; name 0x00 version (4 bytes, big endian) -> setEntry
	bucketSets = []byte("sets")
	// name 0x00 ceremony id -> setCeremony: the ceremonies whose records
	// name the set, of any version.
	bucketSetCeremonies = []byte("set-ceremonies")
	// name 0x00 serial -> SetRollcallState: each card's latest set
	// rollcall.
	bucketSetRollcalls = []byte("set-rollcalls")
)

type setHead struct {
	Version     int    `json:"version"`
	Fingerprint string `json:"fingerprint"`
	Seq         uint64 `json:"seq"`
}

type setEntry struct {
	Fingerprint string          `json:"fingerprint"`
	Seq         uint64          `json:"seq"`
	Body        json.RawMessage `json:"body"`
}

type setCeremony struct {
	Volume  string `json:"volume"`
	Version int    `json:"version"`
}

func setVersionKey(name string, version int) []byte {
	k := append([]byte(name), 0)
	return binary.BigEndian.AppendUint32(k, uint32(version))
}

func setSubKey(name, sub string) []byte {
	k := append([]byte(name), 0)
	return append(k, sub...)
}

// PutSet records a version of a custodian set: an event of type TypeSet
// whose body is the set's JSON text. The log refuses (a *SetRuleError) a
// version 1 of a name it already holds, and a later version that is not
// one more than the last it holds or whose Previous is not that version's
// fingerprint. The set's cards' keys join the card registry (as a
// ceremony's do), with their attestations. A set the codec refuses is a
// *FormatError.
func (t *Tx) PutSet(actor string, s *Set) (Event, error) {
	body, err := s.Encode()
	if err != nil {
		return Event{}, err
	}
	return t.append(Event{Actor: actor, Type: TypeSet, Body: body})
}

// RecordSetRollcall records one card's set rollcall. The log refuses (a
// *SetRuleError) a set version it does not hold and a card or key that
// version does not hold.
func (t *Tx) RecordSetRollcall(actor string, rc SetRollcall) (Event, error) {
	return t.append(Event{Actor: actor, Type: TypeSetRollcall, Body: mustJSON(rc)})
}

// planSets applies a set event or a set rollcall event.
func planSets(ix indexes, ev Event) ([]write, error) {
	if ev.Ceremony != "" {
		return nil, fmt.Errorf("%w: a %s event belongs to no ceremony, this one names %q", ErrInvalid, ev.Type, clipText(ev.Ceremony))
	}
	if ev.Type == TypeSetRollcall {
		return planSetRollcall(ix, ev)
	}
	s, err := ParseSet(ev.Body)
	if err != nil {
		return nil, err
	}
	fp := sha256.Sum256(ev.Body)
	rule := func(format string, args ...any) error {
		return &SetRuleError{Set: s.Name, Version: s.Version, Detail: fmt.Sprintf(format, args...)}
	}
	var head setHead
	found, err := getJSON(ix, bucketSets, []byte(s.Name), &head)
	if err != nil {
		return nil, err
	}
	switch {
	case !found && s.Version != 1:
		return nil, rule("the log holds no version of the set: version 1 comes first")
	case found && s.Version != head.Version+1:
		return nil, rule("the log holds version %d: the next is %d", head.Version, head.Version+1)
	case found && hex.EncodeToString(s.Previous[:]) != head.Fingerprint:
		return nil, rule("previous is %x, but version %d's fingerprint is %s", s.Previous, head.Version, head.Fingerprint)
	}
	fpText := hex.EncodeToString(fp[:])
	ws := []write{
		{bucketSets, []byte(s.Name), mustJSON(setHead{Version: s.Version, Fingerprint: fpText, Seq: ev.Seq})},
		{bucketSets, setVersionKey(s.Name, s.Version), mustJSON(setEntry{Fingerprint: fpText, Seq: ev.Seq, Body: ev.Body})},
	}
	for _, c := range s.Cards {
		key := CardKey{Slot: fmt.Sprintf("%02x", c.Slot), Fingerprint: hex.EncodeToString(c.Key[:]), Attestation: c.Attestation}
		cw, err := planCardKey(ix, c.Serial, c.Custodian, key, "", false)
		if err != nil {
			return nil, err
		}
		ws = append(ws, cw...)
	}
	return ws, nil
}

func planSetRollcall(ix indexes, ev Event) ([]write, error) {
	var rc SetRollcall
	if err := strictUnmarshal(ev.Body, &rc); err != nil {
		return nil, fmt.Errorf("set rollcall: %w", err)
	}
	if p := setNameProblem([]byte(rc.Set)); p != "" {
		return nil, fmt.Errorf("%w: set rollcall: %s", ErrInvalid, p)
	}
	if err := checkCardKey(rc.Serial, "", rc.Fingerprint, ""); err != nil {
		return nil, fmt.Errorf("set rollcall: %w", err)
	}
	if rc.Reason != "" {
		if err := checkText("set rollcall reason", rc.Reason, maxActorLen); err != nil {
			return nil, err
		}
	}
	rule := func(format string, args ...any) error {
		return &SetRuleError{Set: rc.Set, Version: rc.Version, Detail: fmt.Sprintf(format, args...)}
	}
	var e setEntry
	found, err := getJSON(ix, bucketSets, setVersionKey(rc.Set, rc.Version), &e)
	if err != nil {
		return nil, err
	}
	if !found || rc.Version < 1 || rc.Version > maxSetVersion {
		// (setVersionKey keeps 32 bits: a version beyond them would
		// name another.)
		return nil, rule("a rollcall of a set version the log does not hold")
	}
	s, err := ParseSet(e.Body)
	if err != nil {
		return nil, fmt.Errorf("index of set %s: %w", rc.Set, err)
	}
	c := s.Card(rc.Serial)
	if c == nil || hex.EncodeToString(c.Key[:]) != rc.Fingerprint {
		return nil, rule("card %s with key %s is not in it", rc.Serial, rc.Fingerprint)
	}
	st := SetRollcallState{SetRollcall: rc, Time: ev.Time, Seq: ev.Seq}
	return []write{{bucketSetRollcalls, setSubKey(rc.Set, rc.Serial), mustJSON(st)}}, nil
}

// planSetCeremony indexes a ceremony event whose record names a set: the
// set's ceremonies, for status and the fleet's ceremonies. ws are the
// ceremony's own writes, which it returns with its own.
func planSetCeremony(ix indexes, ev Event, ws []write) ([]write, error) {
	// Only a record with a set member, and only its first event, is
	// indexed: the set's name is found without parsing the body (no
	// string of a record holds a quote), and the body is parsed only when
	// the index lacks the ceremony.
	name, ok := setNameIn(ev.Body)
	if !ok {
		return ws, nil
	}
	if v, err := ix.get(bucketSetCeremonies, setSubKey(name, ev.Ceremony)); err != nil || v != nil {
		return ws, err
	}
	_, rec, err := parseCeremonyBody(ev.Body)
	if err != nil || rec.Set == nil {
		return ws, err
	}
	key := setSubKey(rec.Set.Name, rec.IDString())
	if v, err := ix.get(bucketSetCeremonies, key); err != nil || v != nil {
		return ws, err
	}
	return append(ws, write{bucketSetCeremonies, key, mustJSON(setCeremony{Volume: rec.VolumeString(), Version: rec.Set.Version})}), nil
}

// setNameIn finds the set's name in a version 2 ceremony body without
// parsing it: the text after its only `"set":{"name":"` up to the next
// quote. The body is parsed (and checked) by planCeremony before.
func setNameIn(body []byte) (string, bool) {
	const marker = `"set":{"name":"`
	i := bytes.Index(body, []byte(marker))
	if i < 0 {
		return "", false
	}
	rest := body[i+len(marker):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return "", false
	}
	return string(rest[:j]), true
}

// cardsIndexed are the cards of a ceremony record that learn the ceremony
// in the card registry (CardRecord.Ceremonies). A ceremony enrolled to a
// set names its cards through the set instead (SetCeremonies): the set's
// cards hold a share of every volume enrolled to it, and a card record
// that grew by one ceremony per volume would make each ceremony event of a
// fleet cost more than the one before.
func cardsIndexed(rec *Record) []RecordCard {
	if rec.Set != nil {
		return nil
	}
	return rec.Cards
}

// setCeremonyHolds tells whether a rollcall's card holds a share of its
// ceremony through the set the ceremony is enrolled to: the ceremony's
// record, which names the set, has the card with that key.
func setCeremonyHolds(ix indexes, rc Rollcall) bool {
	var e ceremonyEntry
	if found, err := getJSON(ix, bucketCeremonies, []byte(rc.Ceremony), &e); err != nil || !found {
		return false
	}
	_, rec, err := parseCeremonyBody(e.Body)
	if err != nil || rec.Set == nil {
		return false
	}
	for _, c := range rec.Cards {
		if c.Serial == rc.Serial && hex.EncodeToString(c.Key[:]) == rc.Fingerprint {
			return true
		}
	}
	return false
}

// Set returns the newest version of a set (ErrNotFound if the log holds
// none).
func (l *Log) Set(name string) (SetState, error) {
	var st SetState
	err := l.view(func(r kvRead) error {
		var h setHead
		if !r.hasBucket(bucketSets) {
			return fmt.Errorf("set %q: %w", name, ErrNotFound)
		}
		if err := readJSON(r, bucketSets, name, "set", &h); err != nil {
			return err
		}
		var err error
		st, err = readSetVersion(r, name, h.Version)
		return err
	})
	return st, err
}

// SetVersion returns one version of a set (ErrNotFound if the log does
// not hold it).
func (l *Log) SetVersion(name string, version int) (SetState, error) {
	var st SetState
	err := l.view(func(r kvRead) (err error) {
		st, err = readSetVersion(r, name, version)
		return err
	})
	return st, err
}

func readSetVersion(r kvRead, name string, version int) (SetState, error) {
	if version < 1 || version > maxSetVersion || !r.hasBucket(bucketSets) {
		return SetState{}, fmt.Errorf("set %q version %d: %w", name, version, ErrNotFound)
	}
	var e setEntry
	if err := readJSON(r, bucketSets, string(setVersionKey(name, version)), "set", &e); err != nil {
		return SetState{}, fmt.Errorf("set %q version %d: %w", name, version, err)
	}
	s, err := ParseSet(e.Body)
	if err != nil {
		return SetState{}, fmt.Errorf("set %q version %d: %w", name, version, err)
	}
	return SetState{Set: s, Fingerprint: sha256.Sum256(e.Body), Seq: e.Seq}, nil
}

// Sets returns the newest version of every set the log holds, by name.
func (l *Log) Sets() ([]SetState, error) {
	var out []SetState
	err := l.view(func(r kvRead) error {
		if !r.hasBucket(bucketSets) {
			return nil // none yet (schema.go)
		}
		var names []string
		err := r.scan(bucketSets, nil, nil, func(k, v []byte) error {
			if bytes.IndexByte(k, 0) < 0 {
				names = append(names, string(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, name := range names {
			var h setHead
			if err := readJSON(r, bucketSets, name, "set", &h); err != nil {
				return err
			}
			st, err := readSetVersion(r, name, h.Version)
			if err != nil {
				return err
			}
			out = append(out, st)
		}
		return nil
	})
	return out, err
}

// SetCeremonies returns the ceremonies whose records name the set (any
// version), as they now stand, in the order the log first recorded them
// (by the number of their first ceremony event); nil when there are none.
func (l *Log) SetCeremonies(name string) ([]CeremonyState, error) {
	var out []CeremonyState
	err := l.view(func(r kvRead) error {
		if !r.hasBucket(bucketSetCeremonies) {
			return nil // none yet (schema.go)
		}
		prefix := append([]byte(name), 0)
		var ids []string
		err := r.scan(bucketSetCeremonies, prefix, prefixEnd(prefix), func(k, _ []byte) error {
			ids = append(ids, string(k[len(prefix):]))
			return nil
		})
		if err != nil {
			return err
		}
		for _, id := range ids {
			st, err := readCeremony(r, id)
			if err != nil {
				return err
			}
			out = append(out, st)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b CeremonyState) int { return cmp.Compare(a.First, b.First) })
	return out, nil
}

// SetRollcalls returns each card's latest set rollcall of the set, by
// serial.
func (l *Log) SetRollcalls(name string) (map[string]SetRollcallState, error) {
	out := map[string]SetRollcallState{}
	err := l.view(func(r kvRead) error {
		if !r.hasBucket(bucketSetRollcalls) {
			return nil // none yet (schema.go)
		}
		prefix := append([]byte(name), 0)
		return r.scan(bucketSetRollcalls, prefix, prefixEnd(prefix), func(k, v []byte) error {
			var st SetRollcallState
			if err := json.Unmarshal(v, &st); err != nil {
				return fmt.Errorf("set rollcall %q: %w", printable(k), err)
			}
			out[st.Serial] = st
			return nil
		})
	})
	return out, err
}

// lateIndex tells the indexes that came within schema 3 (schema.go): a log
// made before them lacks them until a write needs one.
func lateIndex(bucket []byte) bool {
	return bytes.Equal(bucket, bucketSets) || bytes.Equal(bucket, bucketSetCeremonies) || bytes.Equal(bucket, bucketSetRollcalls)
}

// CheckSetName checks a set's name against section 14's rule (1-64 of
// a-z 0-9 . _ -, starting with a letter or digit), so that a command can
// refuse it before a ceremony begins.
func CheckSetName(name string) error {
	if p := setNameProblem([]byte(name)); p != "" {
		return fmt.Errorf("%w: %s", ErrInvalid, p)
	}
	return nil
}
