package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Hash is the SHA-256 of one event's record (see the package documentation
// for the exact bytes hashed).
type Hash [sha256.Size]byte

// String returns the hash in lowercase hexadecimal.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Head names the last event of the log: its number and its hash. After a
// ceremony it is the anchor that goes into the LUKS2 token, each card's
// certificate and the printed transcript. The zero Head is an empty log.
type Head struct {
	Seq  uint64
	Hash Hash
}

// String returns the head as "<seq>:<hex hash>", the form ParseHead reads.
func (h Head) String() string { return strconv.FormatUint(h.Seq, 10) + ":" + h.Hash.String() }

// ParseHead reads a head in the form Head.String writes ("<seq>:<64 hex
// digits>"). Spaces and dashes inside the hash are ignored and hex digits may
// be upper case, so a hash copied from paper in groups reads back.
func ParseHead(s string) (Head, error) {
	seqPart, hashPart, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return Head{}, fmt.Errorf("parse anchor %q: want <event number>:<sha-256 hex>", s)
	}
	seq, err := strconv.ParseUint(strings.TrimSpace(seqPart), 10, 64)
	if err != nil || seq == 0 {
		return Head{}, fmt.Errorf("parse anchor %q: bad event number", s)
	}
	hexDigits := strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' || r == '\t' {
			return -1
		}
		return unicode.ToLower(r)
	}, hashPart)
	var h Head
	h.Seq = seq
	if len(hexDigits) != 2*len(h.Hash) {
		return Head{}, fmt.Errorf("parse anchor %q: hash must be %d hex digits", s, 2*len(h.Hash))
	}
	if _, err := hex.Decode(h.Hash[:], []byte(hexDigits)); err != nil {
		return Head{}, fmt.Errorf("parse anchor %q: hash is not hex", s)
	}
	return h, nil
}

// Event is one entry of the log. Seq, Time, Prev and Hash are set by the log
// when the event is appended; the caller gives Actor, Type, Ceremony and
// Body.
type Event struct {
	Seq      uint64          // 1 for the first event, then one more each time
	Time     time.Time       // when it was appended, UTC
	Actor    string          // who did it: an operator, a custodian, "custos"
	Type     string          // what happened, e.g. "enroll.keyslot-added"
	Ceremony string          // the ceremony it belongs to, or ""
	Body     json.RawMessage // a JSON object of public data only
	Prev     Hash            // Hash of event Seq-1; zero for event 1
	Hash     Hash            // SHA-256 of this event's record
}

// Head returns the head of the log as it stood right after this event.
func (ev Event) Head() Head { return Head{Seq: ev.Seq, Hash: ev.Hash} }

// wireEvent is an event's record: the JSON object that is stored, hashed and
// exported. Field order and names are part of the format (doc.go).
type wireEvent struct {
	Seq      uint64          `json:"seq"`
	Time     string          `json:"time"`
	Actor    string          `json:"actor"`
	Type     string          `json:"type"`
	Ceremony string          `json:"ceremony,omitempty"`
	Body     json.RawMessage `json:"body"`
	Prev     string          `json:"prev"`
}

// Limits on the fields of an event.
const (
	maxActorLen    = 256
	maxTypeLen     = 64
	maxCeremonyLen = 128
	maxBodyLen     = 1 << 20
	maxRecordLen   = maxBodyLen + 4096
	timeFormat     = time.RFC3339Nano
)

// encodeRecord returns the canonical record of ev (Seq, Time and Prev set).
func encodeRecord(ev Event) ([]byte, error) {
	if err := checkFields(ev); err != nil {
		return nil, err
	}
	return marshalRecord(ev)
}

// marshalRecord encodes an event whose fields are already checked.
func marshalRecord(ev Event) ([]byte, error) {
	body := ev.Body
	if len(body) == 0 {
		body = json.RawMessage("{}")
	}
	rec, err := json.Marshal(wireEvent{
		Seq:      ev.Seq,
		Time:     ev.Time.UTC().Format(timeFormat),
		Actor:    ev.Actor,
		Type:     ev.Type,
		Ceremony: ev.Ceremony,
		Body:     body,
		Prev:     ev.Prev.String(),
	})
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	return rec, nil
}

// checkFields validates the caller-given fields of an event.
func checkFields(ev Event) error {
	if err := checkText("actor", ev.Actor, maxActorLen); err != nil {
		return err
	}
	if !validType(ev.Type) {
		return fmt.Errorf("%w: event type %q: want 1-%d of a-z 0-9 . - starting with a letter", ErrInvalid, ev.Type, maxTypeLen)
	}
	if ev.Ceremony != "" && !validID(ev.Ceremony) {
		return fmt.Errorf("%w: ceremony id %q: want 1-%d of A-Z a-z 0-9 . _ : -", ErrInvalid, ev.Ceremony, maxCeremonyLen)
	}
	if len(ev.Body) > maxBodyLen {
		return fmt.Errorf("%w: event body is %d bytes, limit %d", ErrInvalid, len(ev.Body), maxBodyLen)
	}
	if len(ev.Body) > 0 {
		if !json.Valid(ev.Body) {
			return fmt.Errorf("%w: event body is not valid json", ErrInvalid)
		}
		if b := bytes.TrimLeft(ev.Body, " \t\r\n"); len(b) == 0 || b[0] != '{' {
			return fmt.Errorf("%w: event body must be a json object", ErrInvalid)
		}
	}
	return nil
}

// checkText accepts non-empty valid UTF-8 without control characters.
func checkText(what, s string, max int) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(s) > max {
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalid, what, max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid utf-8", ErrInvalid, what)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %s contains a control character", ErrInvalid, what)
		}
	}
	return nil
}

func validType(s string) bool {
	if len(s) == 0 || len(s) > maxTypeLen || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// validID accepts ceremony IDs and other keys used in index keys: no NUL, no
// spaces, nothing that needs quoting in a transcript.
func validID(s string) bool {
	if len(s) == 0 || len(s) > maxCeremonyLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// decodeRecordJSON is decodeRecord by encoding/json: the reference the
// reader of eventcodec.go follows, and what names a record's fault.
func decodeRecordJSON(rec []byte) (Event, error) {
	if len(rec) > maxRecordLen {
		return Event{}, fmt.Errorf("record is %d bytes, limit %d", len(rec), maxRecordLen)
	}
	// Unknown fields, repeated keys and data after the record all fail the
	// canonical comparison at the end; Unmarshal refuses trailing data too.
	var w wireEvent
	if err := json.Unmarshal(rec, &w); err != nil {
		return Event{}, fmt.Errorf("decode record: %w", err)
	}
	if w.Seq == 0 {
		return Event{}, errors.New("decode record: seq is 0")
	}
	t, err := time.Parse(timeFormat, w.Time)
	if err != nil || t.UTC().Format(timeFormat) != w.Time {
		return Event{}, fmt.Errorf("decode record: time %q is not rfc 3339 utc", w.Time)
	}
	var prev Hash
	if len(w.Prev) != 2*len(prev) || strings.ToLower(w.Prev) != w.Prev {
		return Event{}, fmt.Errorf("decode record: prev is not %d lowercase hex digits", 2*len(prev))
	}
	if _, err := hex.Decode(prev[:], []byte(w.Prev)); err != nil {
		return Event{}, fmt.Errorf("decode record: prev is not hex")
	}
	ev := Event{
		Seq:      w.Seq,
		Time:     t.UTC(),
		Actor:    w.Actor,
		Type:     w.Type,
		Ceremony: w.Ceremony,
		Body:     append(json.RawMessage(nil), w.Body...),
		Prev:     prev,
		Hash:     sha256.Sum256(rec),
	}
	if err := checkFields(ev); err != nil {
		return Event{}, fmt.Errorf("decode record: %w", err)
	}
	if len(w.Body) == 0 || w.Body[0] != '{' {
		return Event{}, errors.New("decode record: body is not a json object")
	}
	canon, err := marshalRecord(ev)
	if err != nil {
		return Event{}, fmt.Errorf("decode record: %w", err)
	}
	if !bytes.Equal(canon, rec) {
		return Event{}, errors.New("decode record: not in canonical form")
	}
	return ev, nil
}

// A stored value is the record's SHA-256 followed by the record itself.

func storedValue(h Hash, rec []byte) []byte {
	v := make([]byte, 0, len(h)+len(rec))
	v = append(v, h[:]...)
	return append(v, rec...)
}

// decodeStored checks and decodes the value stored under key seq. Its error
// says what is wrong, for a ChainError naming seq.
func decodeStored(seq uint64, v []byte) (Event, error) {
	if len(v) <= len(Hash{}) {
		return Event{}, fmt.Errorf("stored value is %d bytes, too short to hold an event", len(v))
	}
	rec := v[len(Hash{}):]
	h := sha256.Sum256(rec)
	if h != Hash(v[:len(Hash{})]) {
		return Event{}, errors.New("content does not match its stored hash (altered)")
	}
	var raw rawEvent
	var ev Event
	if parseRecordFast(rec, &raw) {
		ev = raw.event(h)
	} else {
		var err error
		if ev, err = decodeRecordJSON(rec); err != nil {
			return Event{}, fmt.Errorf("cannot be decoded: %v", err)
		}
	}
	if ev.Seq != seq {
		return Event{}, fmt.Errorf("stored as event %d but records itself as event %d (events moved or swapped)", seq, ev.Seq)
	}
	return ev, nil
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func keySeq(k []byte) (uint64, bool) {
	if len(k) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(k), true
}
