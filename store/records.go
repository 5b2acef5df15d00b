package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Event types the log itself interprets: their bodies are the records below
// and they update the indexes. Append refuses them; use the typed Tx
// methods. Types beginning with "log." are the log's own.
const (
	TypeCeremony = "ceremony" // body: CeremonyRecord, the ceremony as it now stands
	TypeCard     = "card"     // body: CardRegistration
	TypeRollcall = "rollcall" // body: Rollcall
	TypeCreated  = "log.created"
	TypeMigrated = "log.migrated"
)

// Ceremony statuses.
const (
	StatusOpen      = "open"      // begun; shares not all sealed and checked
	StatusActive    = "active"    // complete: the volume's recovery path
	StatusAbandoned = "abandoned" // stopped; the volume was left as it was
	StatusRetired   = "retired"   // replaced by a rotation; its keyslot killed
)

// CeremonyRecord is a ceremony as it stands: everything needed to recover
// from k cards except the cards. Every field is public: the sealed shares
// are ciphertext that only the custodians' cards can open.
type CeremonyRecord struct {
	ID         string `json:"id"`
	VolumeUUID string `json:"volume_uuid"`
	K          int    `json:"k"`
	N          int    `json:"n"`
	Keyslot    int    `json:"keyslot"` // the recovery key's LUKS keyslot; -1 until added
	// KeyslotSalt is the recovery keyslot's PBKDF salt (lowercase hex) as
	// read back once the keyslot was added: the keyslot's identity, so
	// that a key added later under the same number is never taken for
	// it. Empty until recorded, and in records from before it existed.
	KeyslotSalt string         `json:"keyslot_salt,omitempty"`
	Cards       []CeremonyCard `json:"cards"`
	Digest      []byte         `json:"digest,omitempty"` // the envelope metadata digest, as escrow defines it
	Status      string         `json:"status"`
	Replaces    string         `json:"replaces,omitempty"`    // the ceremony this one rotates out
	ReplacedBy  string         `json:"replaced_by,omitempty"` // the ceremony that rotated this one out
}

// CeremonyCard is one custodian's part in a ceremony.
type CeremonyCard struct {
	Index       int    `json:"index"` // share index, 1..n
	Serial      string `json:"serial"`
	Fingerprint string `json:"fingerprint"` // of the card key's public key
	Slot        string `json:"slot"`        // PIV slot holding the key, e.g. "82"
	Custodian   string `json:"custodian"`
	Commitment  []byte `json:"commitment,omitempty"`   // commitment to the share
	SealedShare []byte `json:"sealed_share,omitempty"` // the share sealed to the card key (ciphertext)
}

// CardRegistration records a card key made by card init.
type CardRegistration struct {
	Serial      string `json:"serial"`
	Custodian   string `json:"custodian"`
	Slot        string `json:"slot"`
	Fingerprint string `json:"fingerprint"`
	Attestation []byte `json:"attestation,omitempty"` // DER attestation certificate chain
}

// Rollcall records one custodian's check that their card still opens its
// share, without reconstruction.
type Rollcall struct {
	Ceremony    string `json:"ceremony"`
	Serial      string `json:"serial"`
	Fingerprint string `json:"fingerprint"`
	OK          bool   `json:"ok"`
	Reason      string `json:"reason,omitempty"` // why it failed
}

// CardRecord is the index entry of one card: what the log knows about it.
type CardRecord struct {
	Serial               string    `json:"serial"`
	Custodian            string    `json:"custodian"`
	Keys                 []CardKey `json:"keys"`
	Ceremonies           []string  `json:"ceremonies,omitempty"`
	LastRollcall         time.Time `json:"last_rollcall,omitzero"` // last successful rollcall
	LastRollcallCeremony string    `json:"last_rollcall_ceremony,omitempty"`
}

// CardKey is one key on a card.
type CardKey struct {
	Slot        string `json:"slot"`
	Fingerprint string `json:"fingerprint"`
	Attestation []byte `json:"attestation,omitempty"`
}

// VolumeRecord is the index entry of one LUKS volume.
type VolumeRecord struct {
	UUID    string   `json:"uuid"`
	Current string   `json:"current,omitempty"` // the newest active ceremony
	History []string `json:"history"`           // every ceremony, oldest first
}

// Index buckets. Their contents are derived from the events alone, so
// Verify rebuilds them and compares.
var (
	bucketCeremonies     = []byte("ceremonies")      // id -> CeremonyRecord
	bucketVolumes        = []byte("volumes")         // uuid -> VolumeRecord
	bucketCards          = []byte("cards")           // serial -> CardRecord
	bucketFingerprints   = []byte("fingerprints")    // fingerprint -> serial
	bucketCeremonyEvents = []byte("ceremony-events") // id 0x00 seq -> empty (schema 2)
)

// indexBuckets lists the index buckets of the current schema.
var indexBuckets = [][]byte{bucketCeremonies, bucketVolumes, bucketCards, bucketFingerprints, bucketCeremonyEvents}

// indexes is where apply reads and writes: bbolt buckets in a write
// transaction, or maps during Verify's replay. get returns a copy.
type indexes interface {
	get(bucket, key []byte) []byte
	put(bucket, key, val []byte) error
	del(bucket, key []byte) error
}

// errIndexWrite marks a failure after apply began writing.
var errIndexWrite = errors.New("update index")

type write struct {
	bucket, key, val []byte // val nil: delete
}

// apply updates the indexes for one event. It validates everything before
// it writes anything.
func apply(ix indexes, ev Event) error {
	var ws []write
	var err error
	switch ev.Type {
	case TypeCeremony:
		ws, err = planCeremony(ix, ev)
	case TypeCard:
		ws, err = planCard(ix, ev)
	case TypeRollcall:
		ws, err = planRollcall(ix, ev)
	}
	if err != nil {
		return err
	}
	if ev.Ceremony != "" {
		ws = append(ws, write{bucketCeremonyEvents, ceremonyEventKey(ev.Ceremony, ev.Seq), []byte{}})
	}
	for _, w := range ws {
		if w.val == nil {
			err = ix.del(w.bucket, w.key)
		} else {
			err = ix.put(w.bucket, w.key, w.val)
		}
		if err != nil {
			return fmt.Errorf("%w %s: %w", errIndexWrite, w.bucket, err)
		}
	}
	return nil
}

func ceremonyEventKey(id string, seq uint64) []byte {
	k := make([]byte, 0, len(id)+9)
	k = append(k, id...)
	k = append(k, 0)
	return append(k, seqKey(seq)...)
}

// strictUnmarshal decodes a typed body, refusing unknown fields.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("store: marshal index record: " + err.Error()) // only plain structs reach here
	}
	return b
}

func getJSON(ix indexes, bucket, key []byte, v any) (bool, error) {
	b := ix.get(bucket, key)
	if b == nil {
		return false, nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, fmt.Errorf("index %s %q: %w", bucket, key, err)
	}
	return true, nil
}

// validSalt accepts a keyslot salt as luks.Keyslot gives it: an even
// number (2 to 512) of lowercase hex digits.
func validSalt(s string) bool {
	if len(s) < 2 || len(s) > 512 || len(s)%2 != 0 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// clipText shortens a value quoted in an error.
func clipText(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

func validStatus(s string) bool {
	return s == StatusOpen || s == StatusActive || s == StatusAbandoned || s == StatusRetired
}

// checkCeremony validates a ceremony record on its own.
func checkCeremony(rec CeremonyRecord) error {
	if !validID(rec.ID) {
		return fmt.Errorf("%w: ceremony id %q: want 1-%d of A-Z a-z 0-9 . _ : -", ErrInvalid, rec.ID, maxCeremonyLen)
	}
	if !validID(rec.VolumeUUID) {
		return fmt.Errorf("%w: ceremony %s: volume uuid %q", ErrInvalid, rec.ID, rec.VolumeUUID)
	}
	if rec.K < 2 || rec.K > rec.N || rec.N > 255 {
		return fmt.Errorf("%w: ceremony %s: k=%d n=%d: want 2 <= k <= n <= 255", ErrInvalid, rec.ID, rec.K, rec.N)
	}
	if rec.Keyslot < -1 || rec.Keyslot > 31 {
		return fmt.Errorf("%w: ceremony %s: keyslot %d: want -1 or 0-31", ErrInvalid, rec.ID, rec.Keyslot)
	}
	if rec.KeyslotSalt != "" && !validSalt(rec.KeyslotSalt) {
		return fmt.Errorf("%w: ceremony %s: keyslot salt %q: want 2-512 lowercase hex digits", ErrInvalid, rec.ID, clipText(rec.KeyslotSalt))
	}
	if rec.KeyslotSalt != "" && rec.Keyslot < 0 {
		return fmt.Errorf("%w: ceremony %s: keyslot salt without a keyslot", ErrInvalid, rec.ID)
	}
	if !validStatus(rec.Status) {
		return fmt.Errorf("%w: ceremony %s: unknown status %q", ErrInvalid, rec.ID, rec.Status)
	}
	if len(rec.Cards) > rec.N {
		return fmt.Errorf("%w: ceremony %s: %d cards for n=%d", ErrInvalid, rec.ID, len(rec.Cards), rec.N)
	}
	for _, other := range []string{rec.Replaces, rec.ReplacedBy} {
		if other != "" && (!validID(other) || other == rec.ID) {
			return fmt.Errorf("%w: ceremony %s: bad linked ceremony id %q", ErrInvalid, rec.ID, other)
		}
	}
	seenIndex := map[int]bool{}
	seenFP := map[string]bool{}
	seenSerial := map[string]bool{}
	for _, c := range rec.Cards {
		if c.Index < 1 || c.Index > rec.N || seenIndex[c.Index] {
			return fmt.Errorf("%w: ceremony %s: card index %d missing, out of 1-%d or repeated", ErrInvalid, rec.ID, c.Index, rec.N)
		}
		seenIndex[c.Index] = true
		if err := checkCardKey(c.Serial, c.Slot, c.Fingerprint, c.Custodian); err != nil {
			return fmt.Errorf("ceremony %s card %d: %w", rec.ID, c.Index, err)
		}
		if seenFP[c.Fingerprint] {
			return fmt.Errorf("%w: ceremony %s: card key %s used twice", ErrInvalid, rec.ID, c.Fingerprint)
		}
		seenFP[c.Fingerprint] = true
		if seenSerial[c.Serial] {
			return fmt.Errorf("%w: ceremony %s: card %s holds two shares", ErrInvalid, rec.ID, c.Serial)
		}
		seenSerial[c.Serial] = true
		if rec.Status == StatusActive && (len(c.Commitment) == 0 || len(c.SealedShare) == 0) {
			return fmt.Errorf("%w: ceremony %s: active but card %d has no sealed share or commitment", ErrInvalid, rec.ID, c.Index)
		}
	}
	if rec.Status == StatusActive && len(rec.Cards) != rec.N {
		return fmt.Errorf("%w: ceremony %s: active with %d of %d cards", ErrInvalid, rec.ID, len(rec.Cards), rec.N)
	}
	return nil
}

func checkCardKey(serial, slot, fingerprint, custodian string) error {
	if !validID(serial) {
		return fmt.Errorf("%w: card serial %q", ErrInvalid, serial)
	}
	if slot != "" && !validID(slot) {
		return fmt.Errorf("%w: card slot %q", ErrInvalid, slot)
	}
	if !validID(fingerprint) {
		return fmt.Errorf("%w: key fingerprint %q", ErrInvalid, fingerprint)
	}
	if custodian != "" {
		if err := checkText("custodian", custodian, maxActorLen); err != nil {
			return err
		}
	}
	return nil
}

// transitions lists the statuses a ceremony may move to from each status.
var transitions = map[string][]string{
	StatusOpen:      {StatusOpen, StatusActive, StatusAbandoned},
	StatusActive:    {StatusActive, StatusRetired},
	StatusAbandoned: {},
	StatusRetired:   {},
}

func planCeremony(ix indexes, ev Event) ([]write, error) {
	var rec CeremonyRecord
	if err := strictUnmarshal(ev.Body, &rec); err != nil {
		return nil, fmt.Errorf("ceremony record: %w", err)
	}
	if err := checkCeremony(rec); err != nil {
		return nil, err
	}
	if ev.Ceremony != rec.ID {
		return nil, fmt.Errorf("%w: event names ceremony %q, record %q", ErrInvalid, ev.Ceremony, rec.ID)
	}
	var old CeremonyRecord
	found, err := getJSON(ix, bucketCeremonies, []byte(rec.ID), &old)
	if err != nil {
		return nil, err
	}
	if found {
		if old.VolumeUUID != rec.VolumeUUID || old.K != rec.K || old.N != rec.N {
			return nil, fmt.Errorf("%w: ceremony %s: volume, k and n cannot change (was %s %d of %d)", ErrInvalid, rec.ID, old.VolumeUUID, old.K, old.N)
		}
		if !slices.Contains(transitions[old.Status], rec.Status) {
			return nil, fmt.Errorf("%w: ceremony %s: status cannot go from %s to %s", ErrInvalid, rec.ID, old.Status, rec.Status)
		}
	} else if rec.Status != StatusOpen && rec.Status != StatusActive {
		return nil, fmt.Errorf("%w: ceremony %s: first record must be open or active, not %s", ErrInvalid, rec.ID, rec.Status)
	}
	if rec.Replaces != "" {
		var prior CeremonyRecord
		ok, err := getJSON(ix, bucketCeremonies, []byte(rec.Replaces), &prior)
		if err != nil {
			return nil, err
		}
		if !ok || prior.VolumeUUID != rec.VolumeUUID {
			return nil, fmt.Errorf("%w: ceremony %s replaces %s, which is not a ceremony of volume %s", ErrInvalid, rec.ID, rec.Replaces, rec.VolumeUUID)
		}
	}
	ws := []write{{bucketCeremonies, []byte(rec.ID), mustJSON(rec)}}

	// The volume: history, and the newest active ceremony as current.
	var vol VolumeRecord
	if _, err := getJSON(ix, bucketVolumes, []byte(rec.VolumeUUID), &vol); err != nil {
		return nil, err
	}
	vol.UUID = rec.VolumeUUID
	if !slices.Contains(vol.History, rec.ID) {
		vol.History = append(vol.History, rec.ID)
	}
	vol.Current = ""
	for i := len(vol.History) - 1; i >= 0; i-- {
		id := vol.History[i]
		status := rec.Status
		if id != rec.ID {
			var c CeremonyRecord
			if _, err := getJSON(ix, bucketCeremonies, []byte(id), &c); err != nil {
				return nil, err
			}
			status = c.Status
		}
		if status == StatusActive {
			vol.Current = id
			break
		}
	}
	ws = append(ws, write{bucketVolumes, []byte(vol.UUID), mustJSON(vol)})

	// The cards: each learns the ceremony and its key.
	for _, c := range rec.Cards {
		cw, err := planCardKey(ix, c.Serial, c.Custodian, CardKey{Slot: c.Slot, Fingerprint: c.Fingerprint}, rec.ID, false)
		if err != nil {
			return nil, err
		}
		ws = append(ws, cw...)
	}
	return ws, nil
}

func planCard(ix indexes, ev Event) ([]write, error) {
	var reg CardRegistration
	if err := strictUnmarshal(ev.Body, &reg); err != nil {
		return nil, fmt.Errorf("card registration: %w", err)
	}
	if err := checkCardKey(reg.Serial, reg.Slot, reg.Fingerprint, reg.Custodian); err != nil {
		return nil, err
	}
	if reg.Custodian == "" {
		return nil, fmt.Errorf("%w: card %s: no custodian", ErrInvalid, reg.Serial)
	}
	return planCardKey(ix, reg.Serial, reg.Custodian, CardKey{Slot: reg.Slot, Fingerprint: reg.Fingerprint, Attestation: reg.Attestation}, "", true)
}

// planCardKey merges a key (and optionally a ceremony) into a card's record.
// A registration replaces whatever key the slot held and sets the
// custodian; a ceremony only adds what the card record lacks.
func planCardKey(ix indexes, serial, custodian string, key CardKey, ceremony string, registration bool) ([]write, error) {
	var ws []write
	var card CardRecord
	if _, err := getJSON(ix, bucketCards, []byte(serial), &card); err != nil {
		return nil, err
	}
	if owner := ix.get(bucketFingerprints, []byte(key.Fingerprint)); owner != nil && string(owner) != serial {
		return nil, fmt.Errorf("%w: key %s is already recorded on card %s, not %s", ErrInvalid, key.Fingerprint, owner, serial)
	}
	card.Serial = serial
	if custodian != "" && (registration || card.Custodian == "") {
		card.Custodian = custodian
	}
	i := slices.IndexFunc(card.Keys, func(k CardKey) bool { return k.Fingerprint == key.Fingerprint })
	switch {
	case i >= 0 && registration:
		card.Keys[i] = key
	case i < 0:
		if registration && key.Slot != "" {
			// A new key in a slot replaces the old one: its fingerprint
			// no longer leads to this card.
			card.Keys = slices.DeleteFunc(card.Keys, func(k CardKey) bool {
				if k.Slot == key.Slot {
					ws = append(ws, write{bucketFingerprints, []byte(k.Fingerprint), nil})
					return true
				}
				return false
			})
		}
		card.Keys = append(card.Keys, key)
	}
	if ceremony != "" && !slices.Contains(card.Ceremonies, ceremony) {
		card.Ceremonies = append(card.Ceremonies, ceremony)
	}
	ws = append(ws,
		write{bucketCards, []byte(serial), mustJSON(card)},
		write{bucketFingerprints, []byte(key.Fingerprint), []byte(serial)})
	return ws, nil
}

func planRollcall(ix indexes, ev Event) ([]write, error) {
	var rc Rollcall
	if err := strictUnmarshal(ev.Body, &rc); err != nil {
		return nil, fmt.Errorf("rollcall: %w", err)
	}
	if !validID(rc.Ceremony) || ev.Ceremony != rc.Ceremony {
		return nil, fmt.Errorf("%w: rollcall: ceremony %q", ErrInvalid, rc.Ceremony)
	}
	if err := checkCardKey(rc.Serial, "", rc.Fingerprint, ""); err != nil {
		return nil, fmt.Errorf("rollcall: %w", err)
	}
	if rc.Reason != "" {
		if err := checkText("rollcall reason", rc.Reason, maxActorLen); err != nil {
			return nil, err
		}
	}
	if ix.get(bucketCeremonies, []byte(rc.Ceremony)) == nil {
		return nil, fmt.Errorf("%w: rollcall: ceremony %s: %w", ErrInvalid, rc.Ceremony, ErrNotFound)
	}
	var card CardRecord
	found, err := getJSON(ix, bucketCards, []byte(rc.Serial), &card)
	if err != nil {
		return nil, err
	}
	if !found || !slices.ContainsFunc(card.Keys, func(k CardKey) bool { return k.Fingerprint == rc.Fingerprint }) {
		return nil, fmt.Errorf("%w: rollcall: card %s with key %s: %w", ErrInvalid, rc.Serial, rc.Fingerprint, ErrNotFound)
	}
	if !slices.Contains(card.Ceremonies, rc.Ceremony) {
		return nil, fmt.Errorf("%w: rollcall: card %s holds no share of ceremony %s", ErrInvalid, rc.Serial, rc.Ceremony)
	}
	if !rc.OK {
		return nil, nil
	}
	card.LastRollcall = ev.Time
	card.LastRollcallCeremony = rc.Ceremony
	return []write{{bucketCards, []byte(rc.Serial), mustJSON(card)}}, nil
}
