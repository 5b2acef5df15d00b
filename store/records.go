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
	TypeCeremony = "ceremony" // body: {"status":S,"record":R}, the ceremony as it now stands
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
	bucketCeremonies     = []byte("ceremonies")      // id -> ceremonyEntry (schema 3)
	bucketVolumes        = []byte("volumes")         // uuid -> VolumeRecord
	bucketCards          = []byte("cards")           // serial -> CardRecord
	bucketFingerprints   = []byte("fingerprints")    // fingerprint -> serial
	bucketCeremonyEvents = []byte("ceremony-events") // id 0x00 seq -> empty (schema 2)
	bucketLogState       = []byte("log")             // keyRecordVersion -> "2" once the log takes only version 2 ceremony bodies (schema 3)
)

// keyRecordVersion, in bucketLogState, says which ceremony bodies the log
// takes from here on.
var keyRecordVersion = []byte("ceremony-records")

// indexBuckets lists the index buckets of the current schema.
var indexBuckets = [][]byte{bucketCeremonies, bucketVolumes, bucketCards, bucketFingerprints, bucketCeremonyEvents, bucketLogState,
	bucketSets, bucketSetCeremonies, bucketSetRollcalls}

// indexes is where apply reads and writes: the backend's buckets in a
// write transaction, or maps during the reference replay of Verify.
type indexes interface {
	get(bucket, key []byte) ([]byte, error)
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
		if ws, err = planCeremony(ix, ev); err == nil {
			ws, err = planSetCeremony(ix, ev, ws)
		}
	case TypeSet, TypeSetRollcall:
		ws, err = planSets(ix, ev)
	case TypeCard:
		ws, err = planCard(ix, ev)
	case TypeRollcall:
		ws, err = planRollcall(ix, ev)
	case TypeCreated, TypeMigrated:
		ws, err = planLogEvent(ev)
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
	b, err := ix.get(bucket, key)
	if err != nil {
		return false, err
	}
	if b == nil {
		return false, nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, fmt.Errorf("index %s %q: %w", bucket, key, err)
	}
	return true, nil
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
	owner, err := ix.get(bucketFingerprints, []byte(key.Fingerprint))
	if err != nil {
		return nil, err
	}
	if owner != nil && string(owner) != serial {
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
	if c, err := ix.get(bucketCeremonies, []byte(rc.Ceremony)); err != nil {
		return nil, err
	} else if c == nil {
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
	if !slices.Contains(card.Ceremonies, rc.Ceremony) && !setCeremonyHolds(ix, rc) {
		return nil, fmt.Errorf("%w: rollcall: card %s holds no share of ceremony %s", ErrInvalid, rc.Serial, rc.Ceremony)
	}
	if !rc.OK {
		return nil, nil
	}
	card.LastRollcall = ev.Time
	card.LastRollcallCeremony = rc.Ceremony
	return []write{{bucketCards, []byte(rc.Serial), mustJSON(card)}}, nil
}
