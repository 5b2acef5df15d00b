package store

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
)

// Record is a ceremony's content (docs/FORMAT.md section 8): everything
// needed to recover from k cards except the cards. Every field is public.
// The same Record is the body of the LUKS2 token (Token), the metadata in
// each card's certificate (CardCopy) and the ceremony events of the log
// (PutCeremony).
type Record struct {
	// Version is 2; 1 when the record was read from a version 1 copy
	// (docs/FORMAT.md, appendix). Encode always writes version 2.
	Version int
	ID      [16]byte // the ceremony ID; never all zero
	Volume  [16]byte // the LUKS UUID's 16 bytes in text order
	K, N    int      // 2 <= K <= N <= 255
	// Keyslot is the recovery key's LUKS keyslot, 0-31. A version 1
	// record may say -1 (not chosen yet).
	Keyslot int
	// Salt is the keyslot's PBKDF salt as read back right after the
	// keyslot was added (lower-case hex, 2-512 digits): the keyslot's
	// identity. "" when absent.
	Salt string
	// Digest is the secret digest (docs/FORMAT.md section 5). Zero only in
	// a version 1 record that had none yet.
	Digest   [32]byte
	Replaces [16]byte // the ceremony a rotation replaces; zero: none
	Set      *SetRef  // the custodian set enrolled to; nil: none
	// AllowUnattested says the ceremony accepts cards without a verified
	// attestation. Records read from version 1 copies, which name no
	// attestation, have it set.
	AllowUnattested bool
	Cards           []RecordCard // by increasing Index; at most N
}

// SetRef names the custodian set a ceremony was enrolled to
// (docs/FORMAT.md sections 8 and 14).
type SetRef struct {
	Name        string // 1-64 of a-z 0-9 . _ -, starting with a letter or digit
	Version     int    // 1 to 4294967295
	Fingerprint [32]byte
}

// RecordCard is one custodian's card in a ceremony.
type RecordCard struct {
	Index       int      // the share index, 1..N
	Serial      string   // the card's serial number: decimal, 1 to 4294967295, no leading zero
	Slot        uint8    // the PIV slot of the card key, 0x82-0x95
	Custodian   string   // who holds the card (section 7's text rule); "" when unknown
	Key         [32]byte // SHA-256 of the card key's DER SubjectPublicKeyInfo
	Attestation [32]byte // SHA-256 of the attestation chain; zero: absent
	Commitment  [32]byte // the share's commitment (section 4)
	// Sealed is the sealed share (section 6). store checks only its
	// length (156 to 410 bytes) and, in a copy, its base64url form;
	// whoever uses it parses it and checks its header and recipient.
	Sealed []byte
}

// Limits of the record's members (docs/FORMAT.md section 8).
const (
	RecordVersion = 2
	MaxKeyslot    = 31
	MinSlot       = 0x82
	MaxSlot       = 0x95
	// A sealed share is 138 + C bytes, C = L+1+16 for a share value of
	// L+1 bytes, 2 <= L+1 <= 256.
	MinSealedSize  = 138 + 2 + 16
	MaxSealedSize  = 138 + 256 + 16
	maxSaltDigits  = 512
	maxSerial      = 4294967295
	maxSetVersion  = 4294967295
	maxSetNameSize = 64
)

// The members of each object, in the order FORMAT.md lists them.
var (
	recordMembers = []string{"v", "id", "volume", "k", "n", "keyslot", "salt", "digest", "replaces", "set", "allow_unattested", "cards"}
	cardMembers   = []string{"index", "serial", "slot", "custodian", "key", "attestation", "commitment", "sealed"}
	setMembers    = []string{"name", "version", "fingerprint"}
)

const (
	recV, recID, recVolume, recK, recN, recKeyslot, recSalt, recDigest, recReplaces, recSet, recAllow, recCards = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
	cardIndex, cardSerial, cardSlot, cardCustodian, cardKey, cardAttestation, cardCommitment, cardSealed        = 0, 1, 2, 3, 4, 5, 6, 7

	recordRequired = 1<<recV | 1<<recID | 1<<recVolume | 1<<recK | 1<<recN | 1<<recKeyslot | 1<<recDigest | 1<<recCards
	cardRequired   = 1<<cardIndex | 1<<cardSerial | 1<<cardSlot | 1<<cardKey | 1<<cardCommitment | 1<<cardSealed
	setRequired    = 1<<0 | 1<<1 | 1<<2
)

// ParseRecord reads a record in the canonical form of docs/FORMAT.md
// sections 7 and 8, rejecting anything else. Errors are *FormatError
// (errors.Is ErrInvalid) naming the path, e.g. "record.cards[2].sealed".
func ParseRecord(b []byte) (*Record, error) {
	r := reader{b: b, copy: CopyRecord}
	if err := r.start("record"); err != nil {
		return nil, err
	}
	rec, err := r.record("record")
	if err != nil {
		return nil, err
	}
	if err := r.end("record"); err != nil {
		return nil, err
	}
	return rec, nil
}

// record reads a version 2 record object at path.
func (r *reader) record(path string) (*Record, error) {
	var o object
	if err := o.open(r, path, recordMembers, recordRequired); err != nil {
		return nil, err
	}
	rec := &Record{Version: RecordVersion}
	for {
		j, err := o.next()
		if err != nil {
			return nil, err
		}
		if j < 0 {
			return rec, nil
		}
		var p string
		switch j {
		case recV:
			var v uint64
			if v, p = r.uint(); p == "" && v != RecordVersion {
				p = fmt.Sprintf("version %d, want %d", v, RecordVersion)
			}
		case recID:
			if p = r.hexInto(rec.ID[:]); p == "" && rec.ID == ([16]byte{}) {
				p = "all zero"
			}
		case recVolume:
			var s []byte
			if s, p = r.str(); p == "" {
				rec.Volume, p = parseVolumeStrict(s)
			}
		case recK:
			rec.K, p = r.intIn(2, 255)
		case recN:
			rec.N, p = r.intIn(uint64(rec.K), 255)
		case recKeyslot:
			rec.Keyslot, p = r.intIn(0, MaxKeyslot)
		case recSalt:
			var s []byte
			if s, p = r.str(); p == "" {
				rec.Salt, p = hexString(s, 2, maxSaltDigits)
			}
		case recDigest:
			if p = r.hexInto(rec.Digest[:]); p == "" && rec.Digest == ([32]byte{}) {
				p = "all zero"
			}
		case recReplaces:
			if p = r.hexInto(rec.Replaces[:]); p == "" {
				p = replacesProblem(rec)
			}
		case recSet:
			if rec.Set, err = r.set(o.memberPath(j)); err != nil {
				return nil, err
			}
		case recAllow:
			p = r.trueLit()
			rec.AllowUnattested = true
		case recCards:
			if rec.Cards, err = r.cards(o.memberPath(j), rec); err != nil {
				return nil, err
			}
		}
		if p != "" {
			return nil, o.failMember(p)
		}
	}
}

func replacesProblem(rec *Record) string {
	switch {
	case rec.Replaces == ([16]byte{}):
		return "all zero"
	case rec.Replaces == rec.ID:
		return "a ceremony cannot replace itself"
	}
	return ""
}

func (r *reader) set(path string) (*SetRef, error) {
	var o object
	if err := o.open(r, path, setMembers, setRequired); err != nil {
		return nil, err
	}
	s := &SetRef{}
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
		case 0:
			var b []byte
			if b, p = r.str(); p == "" {
				if p = setNameProblem(b); p == "" {
					s.Name = string(b)
				}
			}
		case 1:
			s.Version, p = r.intIn(1, maxSetVersion)
		case 2:
			p = r.hexInto(s.Fingerprint[:])
		}
		if p != "" {
			return nil, o.failMember(p)
		}
	}
}

func setNameProblem(b []byte) string {
	if len(b) == 0 || len(b) > maxSetNameSize {
		return fmt.Sprintf("set name of %d bytes, want 1 to %d", len(b), maxSetNameSize)
	}
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return "set name: want a-z 0-9 . _ - starting with a letter or digit"
		}
	}
	return ""
}

func (r *reader) cards(path string, rec *Record) ([]RecordCard, error) {
	var a array
	if err := a.open(r, path); err != nil {
		return nil, err
	}
	var cards []RecordCard
	for {
		more, err := a.next()
		if err != nil {
			return nil, err
		}
		if !more {
			return cards, nil
		}
		c, err := r.card(elem(path, a.n-1), rec, cards)
		if err != nil {
			return nil, err
		}
		cards = append(cards, c)
	}
}

func (r *reader) card(path string, rec *Record, before []RecordCard) (RecordCard, error) {
	req := uint64(cardRequired)
	if !rec.AllowUnattested {
		req |= 1 << cardAttestation
	}
	var o object
	var c RecordCard
	if err := o.open(r, path, cardMembers, req); err != nil {
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
		case cardIndex:
			lo := 1
			if len(before) > 0 {
				lo = before[len(before)-1].Index + 1
			}
			if c.Index, p = r.intIn(1, uint64(rec.N)); p == "" && c.Index < lo {
				p = fmt.Sprintf("index %d after index %d: want increasing indexes", c.Index, lo-1)
			}
		case cardSerial:
			var s []byte
			if s, p = r.str(); p == "" {
				if p = serialProblem(s); p == "" {
					for _, b := range before {
						if b.Serial == string(s) {
							p = fmt.Sprintf("card %s holds share %d too", s, b.Index)
							break
						}
					}
					c.Serial = string(s)
				}
			}
		case cardSlot:
			var s []byte
			if s, p = r.str(); p == "" {
				c.Slot, p = slotProblem(s)
			}
		case cardCustodian:
			var s []byte
			if s, p = r.str(); p == "" {
				if p = textProblem(s, maxText); p == "" {
					c.Custodian = string(s)
				}
			}
		case cardKey:
			if p = r.hexInto(c.Key[:]); p == "" {
				for _, b := range before {
					if b.Key == c.Key {
						p = fmt.Sprintf("the key of share %d too", b.Index)
						break
					}
				}
			}
		case cardAttestation:
			if p = r.hexInto(c.Attestation[:]); p == "" && c.Attestation == ([32]byte{}) {
				p = "all zero"
			}
		case cardCommitment:
			p = r.hexInto(c.Commitment[:])
		case cardSealed:
			if c.Sealed, p = r.b64url(); p == "" {
				p = sealedProblem(c.Sealed)
			}
		}
		if p != "" {
			return c, o.failMember(p)
		}
	}
}

func serialProblem(s []byte) string {
	if len(s) == 0 || len(s) > 10 {
		return fmt.Sprintf("serial of %d digits, want 1 to 10", len(s))
	}
	var v uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return "serial is not decimal"
		}
		v = v*10 + uint64(c-'0')
	}
	switch {
	case len(s) == 1 && s[0] == '0':
		return "serial 0, want 1 to 4294967295"
	case s[0] == '0':
		return "leading zero"
	case v > maxSerial:
		return "serial out of range"
	}
	return ""
}

func slotProblem(s []byte) (uint8, string) {
	var b [1]byte
	if p := hexDecode(b[:], s); p != "" {
		return 0, p
	}
	if b[0] < MinSlot || b[0] > MaxSlot {
		return 0, fmt.Sprintf("slot %02x, want 82 to 95", b[0])
	}
	return b[0], ""
}

func sealedProblem(b []byte) string {
	if len(b) < MinSealedSize || len(b) > MaxSealedSize {
		return fmt.Sprintf("sealed share of %d bytes, want %d to %d", len(b), MinSealedSize, MaxSealedSize)
	}
	return ""
}

// parseVolumeStrict reads a lower-case UUID.
func parseVolumeStrict(s []byte) ([16]byte, string) {
	var v [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return v, "not a uuid (8-4-4-4-12 hex digits)"
	}
	var h [32]byte
	n := 0
	for i, c := range s {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			continue
		}
		h[n] = c
		n++
	}
	if p := hexDecode(v[:], h[:]); p != "" {
		return v, p
	}
	return v, ""
}

// Encode returns the record's canonical version 2 bytes (docs/FORMAT.md
// section 8), whatever its Version. It checks every rule first and
// returns a *FormatError naming the member that breaks one; a record Encode
// accepts is one ParseRecord reads back as the same value.
func (r *Record) Encode() ([]byte, error) {
	if err := r.check(CopyRecord, "record"); err != nil {
		return nil, err
	}
	var w writer
	w.b = make([]byte, 0, r.size())
	r.write(&w)
	return w.b, nil
}

func (r *Record) size() int {
	n := 400
	for _, c := range r.Cards {
		n += 320 + len(c.Custodian) + len(c.Sealed)*4/3
	}
	return n
}

// check applies the rules ParseRecord applies, in the same order and with
// the same paths.
func (r *Record) check(copy, path string) error {
	fail := func(member, problem string) error {
		return &FormatError{Copy: copy, Path: join(path, member), Problem: problem}
	}
	switch {
	case r == nil:
		return &FormatError{Copy: copy, Path: path, Problem: "no record"}
	case r.ID == ([16]byte{}):
		return fail("id", "all zero")
	case r.K < 2 || r.K > 255:
		return fail("k", fmt.Sprintf("%d out of range 2-255", r.K))
	case r.N < r.K || r.N > 255:
		return fail("n", fmt.Sprintf("%d out of range %d-255", r.N, r.K))
	case r.Keyslot < 0 || r.Keyslot > MaxKeyslot:
		return fail("keyslot", fmt.Sprintf("%d out of range 0-%d", r.Keyslot, MaxKeyslot))
	}
	if r.Salt != "" {
		if _, p := hexString([]byte(r.Salt), 2, maxSaltDigits); p != "" {
			return fail("salt", p)
		}
	}
	if r.Digest == ([32]byte{}) {
		return fail("digest", "all zero")
	}
	if r.Replaces != ([16]byte{}) {
		if p := replacesProblem(r); p != "" {
			return fail("replaces", p)
		}
	}
	if r.Set != nil {
		if p := setNameProblem([]byte(r.Set.Name)); p != "" {
			return fail("set.name", p)
		}
		if r.Set.Version < 1 || r.Set.Version > maxSetVersion {
			return fail("set.version", fmt.Sprintf("%d out of range 1-%d", r.Set.Version, maxSetVersion))
		}
	}
	cards := join(path, "cards")
	for i := range r.Cards {
		c := &r.Cards[i]
		cfail := func(member, problem string) error {
			return &FormatError{Copy: copy, Path: join(elem(cards, i), member), Problem: problem}
		}
		lo := 1
		if i > 0 {
			lo = r.Cards[i-1].Index + 1
		}
		switch {
		case c.Index < 1 || c.Index > r.N:
			return cfail("index", fmt.Sprintf("%d out of range 1-%d", c.Index, r.N))
		case c.Index < lo:
			return cfail("index", fmt.Sprintf("index %d after index %d: want increasing indexes", c.Index, lo-1))
		}
		if p := serialProblem([]byte(c.Serial)); p != "" {
			return cfail("serial", p)
		}
		for _, b := range r.Cards[:i] {
			if b.Serial == c.Serial {
				return cfail("serial", fmt.Sprintf("card %s holds share %d too", c.Serial, b.Index))
			}
		}
		if c.Slot < MinSlot || c.Slot > MaxSlot {
			return cfail("slot", fmt.Sprintf("slot %02x, want 82 to 95", c.Slot))
		}
		if c.Custodian != "" {
			if p := textProblem([]byte(c.Custodian), maxText); p != "" {
				return cfail("custodian", p)
			}
		}
		for _, b := range r.Cards[:i] {
			if b.Key == c.Key {
				return cfail("key", fmt.Sprintf("the key of share %d too", b.Index))
			}
		}
		if c.Attestation == ([32]byte{}) && !r.AllowUnattested {
			return cfail("attestation", "missing")
		}
		if p := sealedProblem(c.Sealed); p != "" {
			return cfail("sealed", p)
		}
	}
	return nil
}

// write appends the canonical form of a checked record.
func (r *Record) write(w *writer) {
	w.raw(`{"v":2,"id":`)
	w.hex(r.ID[:])
	w.raw(`,"volume":"`)
	w.raw(volumeText(r.Volume))
	w.raw(`","k":`)
	w.uint(uint64(r.K))
	w.raw(`,"n":`)
	w.uint(uint64(r.N))
	w.raw(`,"keyslot":`)
	w.uint(uint64(r.Keyslot))
	if r.Salt != "" {
		w.key(',', "salt")
		w.str(r.Salt)
	}
	w.key(',', "digest")
	w.hex(r.Digest[:])
	if r.Replaces != ([16]byte{}) {
		w.key(',', "replaces")
		w.hex(r.Replaces[:])
	}
	if r.Set != nil {
		w.raw(`,"set":{"name":`)
		w.str(r.Set.Name)
		w.raw(`,"version":`)
		w.uint(uint64(r.Set.Version))
		w.raw(`,"fingerprint":`)
		w.hex(r.Set.Fingerprint[:])
		w.byte('}')
	}
	if r.AllowUnattested {
		w.raw(`,"allow_unattested":true`)
	}
	w.raw(`,"cards":[`)
	for i := range r.Cards {
		c := &r.Cards[i]
		if i > 0 {
			w.byte(',')
		}
		w.raw(`{"index":`)
		w.uint(uint64(c.Index))
		w.raw(`,"serial":`)
		w.str(c.Serial)
		w.raw(`,"slot":`)
		w.hex([]byte{c.Slot})
		if c.Custodian != "" {
			w.key(',', "custodian")
			w.str(c.Custodian)
		}
		w.key(',', "key")
		w.hex(c.Key[:])
		if c.Attestation != ([32]byte{}) {
			w.key(',', "attestation")
			w.hex(c.Attestation[:])
		}
		w.key(',', "commitment")
		w.hex(c.Commitment[:])
		w.key(',', "sealed")
		w.b64url(c.Sealed)
		w.byte('}')
	}
	w.raw("]}")
}

// Card returns the card with share index i, or nil.
func (r *Record) Card(index int) *RecordCard {
	for i := range r.Cards {
		if r.Cards[i].Index == index {
			return &r.Cards[i]
		}
	}
	return nil
}

// Complete reports whether the record holds all N cards, each with its
// commitment and sealed share.
func (r *Record) Complete() bool {
	if len(r.Cards) != r.N {
		return false
	}
	for i := 1; i <= r.N; i++ {
		c := r.Card(i)
		if c == nil || len(c.Sealed) == 0 {
			return false
		}
	}
	return true
}

// Clone returns a deep copy.
func (r *Record) Clone() *Record {
	if r == nil {
		return nil
	}
	c := *r
	if r.Set != nil {
		s := *r.Set
		c.Set = &s
	}
	c.Cards = slices.Clone(r.Cards)
	for i := range c.Cards {
		c.Cards[i].Sealed = bytes.Clone(c.Cards[i].Sealed)
	}
	return &c
}

// IDString returns the ceremony ID as 32 lower-case hex digits.
func (r *Record) IDString() string { return hex.EncodeToString(r.ID[:]) }

// VolumeString returns the volume's UUID in lower case.
func (r *Record) VolumeString() string { return volumeText(r.Volume) }

// ReplacesString returns the replaced ceremony's ID, "" if none.
func (r *Record) ReplacesString() string {
	if r.Replaces == ([16]byte{}) {
		return ""
	}
	return hex.EncodeToString(r.Replaces[:])
}

func volumeText(v [16]byte) string {
	h := hex.EncodeToString(v[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ParseID reads a ceremony ID: 32 lower-case hex digits.
func ParseID(s string) ([16]byte, error) {
	var id [16]byte
	if p := hexDecode(id[:], []byte(s)); p != "" {
		return id, fmt.Errorf("%w: ceremony id %q: %s", ErrInvalid, clipText(s), p)
	}
	return id, nil
}

// ParseVolume reads a volume UUID in its text form, 8-4-4-4-12 hex digits.
// Upper-case digits are accepted here, for a UUID cryptsetup prints as it
// was set (luksFormat --uuid); records always hold and write lower case,
// and their reader accepts only that.
func ParseVolume(s string) ([16]byte, error) {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'F' {
			b[i] = c + 'a' - 'A'
		}
	}
	v, p := parseVolumeStrict(b)
	if p != "" {
		return v, fmt.Errorf("%w: volume uuid %q: %s", ErrInvalid, clipText(s), p)
	}
	return v, nil
}

// Difference is one way in which two copies of a ceremony differ: a frame
// member (Index 0, Field the member's name, e.g. "keyslot") or a card both
// copies hold (Index the share index, Field the first member that differs).
type Difference struct {
	Index int
	Field string
}

func (d Difference) String() string {
	if d.Index == 0 {
		return d.Field
	}
	return "card " + strconv.Itoa(d.Index) + " " + d.Field
}

// Compare lists how two copies of one ceremony differ (docs/FORMAT.md
// section 8, "agree"): the frame members in order, then the cards both
// copies hold whose entries differ, by index. Cards only one copy holds are
// not differences. The version is not compared, and a member that a
// version 1 record leaves empty (keyslot -1, no salt, no digest) is not
// held by it, so it is not compared either.
func Compare(a, b *Record) []Difference {
	var d []Difference
	frame := func(differ bool, field string) {
		if differ {
			d = append(d, Difference{Field: field})
		}
	}
	v1Empty := func(r *Record, empty bool) bool { return r.Version == 1 && empty }
	frame(a.ID != b.ID, "id")
	frame(a.Volume != b.Volume, "volume")
	frame(a.K != b.K, "k")
	frame(a.N != b.N, "n")
	if !v1Empty(a, a.Keyslot < 0) && !v1Empty(b, b.Keyslot < 0) {
		frame(a.Keyslot != b.Keyslot, "keyslot")
	}
	if !v1Empty(a, a.Salt == "") && !v1Empty(b, b.Salt == "") {
		frame(a.Salt != b.Salt, "salt")
	}
	if !v1Empty(a, a.Digest == [32]byte{}) && !v1Empty(b, b.Digest == [32]byte{}) {
		frame(a.Digest != b.Digest, "digest")
	}
	frame(a.Replaces != b.Replaces, "replaces")
	frame((a.Set == nil) != (b.Set == nil) || a.Set != nil && *a.Set != *b.Set, "set")
	frame(a.AllowUnattested != b.AllowUnattested, "allow_unattested")
	for i := range a.Cards {
		ca := &a.Cards[i]
		cb := b.Card(ca.Index)
		if cb == nil {
			continue
		}
		if f := cardDifference(ca, cb); f != "" {
			d = append(d, Difference{Index: ca.Index, Field: f})
		}
	}
	return d
}

// cardDifference names the first member in which two card entries differ.
func cardDifference(a, b *RecordCard) string {
	switch {
	case a.Serial != b.Serial:
		return "serial"
	case a.Slot != b.Slot:
		return "slot"
	case a.Custodian != b.Custodian:
		return "custodian"
	case a.Key != b.Key:
		return "key"
	case a.Attestation != b.Attestation:
		return "attestation"
	case a.Commitment != b.Commitment:
		return "commitment"
	case !bytes.Equal(a.Sealed, b.Sealed):
		return "sealed"
	}
	return ""
}
