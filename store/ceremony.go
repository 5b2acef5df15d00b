package store

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// CeremonyState is a ceremony as the log holds it: its latest ceremony
// event's status and record.
type CeremonyState struct {
	Status string
	Record *Record
	// ReplacedBy is the ID of the ceremony whose record replaces this one
	// (the newest one the log holds that is not abandoned); "" if none.
	// It is derived from the other ceremonies' records, never recorded.
	ReplacedBy string
	// First and Last are the numbers of the ceremony's first and latest
	// "ceremony" events.
	First, Last uint64
}

// ceremonyEntry is the index entry of one ceremony (bucketCeremonies,
// schema 3): what CeremonyState returns, and what the log's rules need
// without reading the events again.
type ceremonyEntry struct {
	Status    string          `json:"status"`
	Volume    string          `json:"volume"`
	Replaces  string          `json:"replaces,omitempty"`
	First     uint64          `json:"first"`
	Last      uint64          `json:"last"`
	Replacers []string        `json:"replacers,omitempty"` // ceremonies whose records named this one in replaces, in order
	Body      json.RawMessage `json:"body"`                // the latest ceremony event's body
}

// transitions lists the statuses a ceremony may move to from each status.
var transitions = map[string][]string{
	StatusOpen:      {StatusOpen, StatusActive, StatusAbandoned},
	StatusActive:    {StatusActive, StatusRetired},
	StatusAbandoned: {},
	StatusRetired:   {},
}

// PutCeremony records a ceremony as it now stands: status (StatusOpen,
// StatusActive, StatusAbandoned, StatusRetired) and its record, as the
// event body {"status":S,"record":R} (docs/FORMAT.md section 11). The
// record is encoded as version 2, whatever rec.Version says. The log
// refuses, with a *RuleError (errors.Is ErrInvalid) naming the rule, what
// section 11 says it refuses: a frame member changed (a salt may be added
// once; a record read from version 1 may also gain the keyslot and digest
// it lacked), the salt changed, a card changed, removed or added out of
// index order, a status change other than open to open, active or
// abandoned and active to active or retired, an active record with fewer
// than n cards, a replaces the log does not hold or of another volume, and
// a first record that is neither open nor active. A record that breaks
// section 8 is a *FormatError.
func (t *Tx) PutCeremony(actor, status string, rec *Record) (Event, error) {
	if rec == nil {
		return Event{}, &FormatError{Copy: CopyEvent, Path: "record", Problem: "no record"}
	}
	body, err := encodeCeremonyBody(status, rec)
	if err != nil {
		return Event{}, err
	}
	return t.append(Event{Actor: actor, Type: TypeCeremony, Ceremony: rec.IDString(), Body: body})
}

// recordsV2Only reports whether the log takes only version 2 ceremony
// bodies: it does from its creation or migration at schema 3 on.
func recordsV2Only(ix indexes) (bool, error) {
	v, err := ix.get(bucketLogState, keyRecordVersion)
	return v != nil, err
}

// planLogEvent reads the log's own events: from "log.created" at schema
// 3 or "log.migrated" to schema 3 on, version 1 ceremony bodies are
// refused, so no one can write the older, laxer form into a log custos
// now writes.
func planLogEvent(ev Event) ([]write, error) {
	var body struct {
		Schema *uint32 `json:"schema"`
		From   *uint32 `json:"from"`
		To     *uint32 `json:"to"`
	}
	if err := strictUnmarshal(ev.Body, &body); err != nil {
		return nil, fmt.Errorf("%s: %w", ev.Type, err)
	}
	var v uint32
	switch {
	case ev.Type == TypeCreated && ev.Seq == 1 && body.Schema != nil && body.From == nil && body.To == nil:
		v = *body.Schema
	case ev.Type == TypeMigrated && body.Schema == nil && body.From != nil && body.To != nil && *body.From < *body.To:
		v = *body.To
	default:
		return nil, fmt.Errorf("%w: %s event %d with body %s", ErrInvalid, ev.Type, ev.Seq, clipText(string(ev.Body)))
	}
	if v >= 3 {
		return []write{{bucketLogState, keyRecordVersion, []byte("2")}}, nil
	}
	return nil, nil
}

func planCeremony(ix indexes, ev Event) ([]write, error) {
	status, rec, err := parseCeremonyBody(ev.Body)
	if err != nil {
		return nil, err
	}
	id := rec.IDString()
	rule := func(rule, format string, args ...any) error {
		return &RuleError{Ceremony: id, Rule: rule, Detail: fmt.Sprintf(format, args...)}
	}
	if rec.Version == 1 {
		if v2, err := recordsV2Only(ix); err != nil {
			return nil, err
		} else if v2 {
			return nil, rule(RuleVersion, "a version 1 record in a log that takes version 2 only")
		}
	}
	if ev.Ceremony != id {
		return nil, rule(RuleEvent, "the event names ceremony %q", clipText(ev.Ceremony))
	}
	var old ceremonyEntry
	found, err := getJSON(ix, bucketCeremonies, []byte(id), &old)
	if err != nil {
		return nil, err
	}
	entry := ceremonyEntry{Status: status, Volume: rec.VolumeString(), Replaces: rec.ReplacesString(),
		First: ev.Seq, Last: ev.Seq, Body: ev.Body}
	if found {
		_, prev, err := parseCeremonyBody(old.Body)
		if err != nil {
			return nil, fmt.Errorf("index of ceremony %s: %w", id, err)
		}
		if !slices.Contains(transitions[old.Status], status) {
			return nil, rule(RuleStatus, "status cannot go from %s to %s", old.Status, status)
		}
		if err := checkChange(prev, rec, rule); err != nil {
			return nil, err
		}
		entry.First, entry.Replacers = old.First, old.Replacers
	} else if status != StatusOpen && status != StatusActive {
		return nil, rule(RuleFirst, "first record %s, want open or active", status)
	}
	if status == StatusActive && !rec.Complete() {
		return nil, rule(RuleComplete, "active with %d of %d cards", len(rec.Cards), rec.N)
	}
	if status == StatusActive && rec.Version == 1 {
		for _, c := range rec.Cards {
			if c.Commitment == ([32]byte{}) {
				return nil, rule(RuleComplete, "active but card %d has no commitment", c.Index)
			}
		}
	}
	ws := []write{}
	if r := rec.ReplacesString(); r != "" {
		var prior ceremonyEntry
		ok, err := getJSON(ix, bucketCeremonies, []byte(r), &prior)
		if err != nil {
			return nil, err
		}
		if !ok || prior.Volume != entry.Volume {
			return nil, rule(RuleReplaces, "replaces %s, which is not a ceremony of volume %s in the log", r, entry.Volume)
		}
		if !slices.Contains(prior.Replacers, id) {
			prior.Replacers = append(prior.Replacers, id)
			ws = append(ws, write{bucketCeremonies, []byte(r), mustJSON(prior)})
		}
	}
	ws = append(ws, write{bucketCeremonies, []byte(id), mustJSON(entry)})

	// The volume: history, and the newest active ceremony as current.
	var vol VolumeRecord
	if _, err := getJSON(ix, bucketVolumes, []byte(entry.Volume), &vol); err != nil {
		return nil, err
	}
	vol.UUID = entry.Volume
	if !slices.Contains(vol.History, id) {
		vol.History = append(vol.History, id)
	}
	vol.Current = ""
	for i := len(vol.History) - 1; i >= 0; i-- {
		other := vol.History[i]
		st := status
		if other != id {
			var c ceremonyEntry
			if _, err := getJSON(ix, bucketCeremonies, []byte(other), &c); err != nil {
				return nil, err
			}
			st = c.Status
		}
		if st == StatusActive {
			vol.Current = other
			break
		}
	}
	ws = append(ws, write{bucketVolumes, []byte(vol.UUID), mustJSON(vol)})

	// The cards: each learns the ceremony and its key.
	for _, c := range cardsIndexed(rec) {
		key := CardKey{Slot: fmt.Sprintf("%02x", c.Slot), Fingerprint: hex.EncodeToString(c.Key[:])}
		cw, err := planCardKey(ix, c.Serial, c.Custodian, key, id, false)
		if err != nil {
			return nil, err
		}
		ws = append(ws, cw...)
	}
	return ws, nil
}

// checkChange applies the frame and card rules of docs/FORMAT.md section 8
// between a ceremony's previous record and its next one.
func checkChange(prev, next *Record, rule func(string, string, ...any) error) error {
	frame := func(member string, was, now any) error {
		return rule(RuleFrame, "%s %v became %v", member, was, now)
	}
	if next.Version == 1 {
		if prev.Version != 1 {
			return rule(RuleVersion, "a version 1 record after version 2")
		}
		// Version 1 records keep the rules of the custos that wrote them.
		switch {
		case prev.Volume != next.Volume:
			return frame("volume", prev.VolumeString(), next.VolumeString())
		case prev.K != next.K:
			return frame("k", prev.K, next.K)
		case prev.N != next.N:
			return frame("n", prev.N, next.N)
		}
		return nil
	}
	v1 := prev.Version == 1
	switch {
	case prev.Volume != next.Volume:
		return frame("volume", prev.VolumeString(), next.VolumeString())
	case prev.K != next.K:
		return frame("k", prev.K, next.K)
	case prev.N != next.N:
		return frame("n", prev.N, next.N)
	case prev.Keyslot != next.Keyslot && !(v1 && prev.Keyslot < 0):
		return frame("keyslot", prev.Keyslot, next.Keyslot)
	case prev.Salt != "" && prev.Salt != next.Salt:
		return rule(RuleSalt, "salt %s became %s", clipText(prev.Salt), clipText(next.Salt))
	case prev.Digest != next.Digest && !(v1 && prev.Digest == [32]byte{}):
		return frame("digest", hex.EncodeToString(prev.Digest[:]), hex.EncodeToString(next.Digest[:]))
	case prev.Replaces != next.Replaces:
		return frame("replaces", prev.ReplacesString(), next.ReplacesString())
	case (prev.Set == nil) != (next.Set == nil) || prev.Set != nil && *prev.Set != *next.Set:
		return rule(RuleFrame, "set changed")
	case prev.AllowUnattested != next.AllowUnattested:
		return frame("allow_unattested", prev.AllowUnattested, next.AllowUnattested)
	}
	for i := range prev.Cards {
		pc := &prev.Cards[i]
		if i >= len(next.Cards) || next.Cards[i].Index != pc.Index {
			return rule(RuleCards, "card %d removed", pc.Index)
		}
		if f := cardDifference(pc, &next.Cards[i]); f != "" {
			return rule(RuleCards, "card %d changed its %s", pc.Index, f)
		}
	}
	return nil
}

// Ceremony returns a ceremony by ID (32 hex digits), as the log now holds
// it. An unknown ceremony is ErrNotFound.
func (l *Log) Ceremony(id string) (CeremonyState, error) {
	var st CeremonyState
	err := l.view(func(r kvRead) (err error) {
		st, err = readCeremony(r, id)
		return err
	})
	return st, err
}

// Ceremony reads a ceremony as it stands in this transaction.
func (t *Tx) Ceremony(id string) (CeremonyState, error) {
	if t.kv == nil {
		return CeremonyState{}, ErrClosed
	}
	return readCeremony(t.kv, id)
}

func readEntry(r kvRead, id string) (ceremonyEntry, error) {
	var e ceremonyEntry
	return e, readJSON(r, bucketCeremonies, id, "ceremony", &e)
}

func readCeremony(r kvRead, id string) (CeremonyState, error) {
	e, err := readEntry(r, id)
	if err != nil {
		return CeremonyState{}, err
	}
	status, rec, err := parseCeremonyBody(e.Body)
	if err != nil {
		return CeremonyState{}, fmt.Errorf("ceremony %s: %w", id, err)
	}
	st := CeremonyState{Status: status, Record: rec, First: e.First, Last: e.Last}
	for i := len(e.Replacers) - 1; i >= 0; i-- {
		re, err := readEntry(r, e.Replacers[i])
		if err != nil {
			return CeremonyState{}, err
		}
		if re.Status != StatusAbandoned && re.Replaces == id {
			st.ReplacedBy = e.Replacers[i]
			break
		}
	}
	return st, nil
}

// volumeKey is the index key of a volume: its UUID in lower case.
func volumeKey(uuid string) string {
	if v, err := ParseVolume(uuid); err == nil {
		return volumeText(v)
	}
	return uuid
}

// Volume returns a volume's record: its current ceremony and history. The
// UUID may be in either case.
func (l *Log) Volume(uuid string) (VolumeRecord, error) {
	var rec VolumeRecord
	return rec, l.view(func(r kvRead) error { return readJSON(r, bucketVolumes, volumeKey(uuid), "volume", &rec) })
}

// VolumeCeremony returns the current (newest active) ceremony of a volume.
func (l *Log) VolumeCeremony(uuid string) (CeremonyState, error) {
	var st CeremonyState
	err := l.view(func(r kvRead) error {
		var vol VolumeRecord
		if err := readJSON(r, bucketVolumes, volumeKey(uuid), "volume", &vol); err != nil {
			return err
		}
		if vol.Current == "" {
			return fmt.Errorf("volume %q has no active ceremony: %w", uuid, ErrNotFound)
		}
		var err error
		st, err = readCeremony(r, vol.Current)
		return err
	})
	return st, err
}

// VolumeCeremonies returns the ceremonies of a volume, oldest first; nil,
// nil when the log knows no ceremony of it.
func (l *Log) VolumeCeremonies(uuid string) ([]CeremonyState, error) {
	var out []CeremonyState
	err := l.view(func(r kvRead) error {
		raw, err := r.get(bucketVolumes, []byte(volumeKey(uuid)))
		if err != nil {
			return err
		}
		if raw == nil {
			return nil
		}
		var vol VolumeRecord
		if err := json.Unmarshal(raw, &vol); err != nil {
			return fmt.Errorf("volume %q: %w", uuid, err)
		}
		for _, id := range vol.History {
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
	return out, nil
}

// CheckAnchor checks an anchor read from a copy of rec (its LUKS2 token or
// a card's certificate), as docs/FORMAT.md section 9 defines a good
// anchor: the log holds event a.Seq, its hash is a.Hash, and the latest
// ceremony event of rec's ceremony at or before a.Seq holds a record that
// agrees with rec (Compare finds nothing). Otherwise it returns an
// *AnchorError (errors.Is ErrAnchor) saying what is wrong; a zero anchor is
// one too ("no anchor").
func (l *Log) CheckAnchor(a Head, rec *Record) error {
	if a.Seq == 0 {
		return &AnchorError{Problem: "no anchor"}
	}
	fail := func(format string, args ...any) error {
		return &AnchorError{Seq: a.Seq, Problem: fmt.Sprintf(format, args...)}
	}
	return l.view(func(r kvRead) error {
		v, err := r.get(bucketEvents, seqKey(a.Seq))
		if err != nil {
			return err
		}
		if v == nil {
			head, _ := readHead(r)
			if a.Seq > head.Seq {
				return fail("the log ends at event %d: it was rolled back or truncated", head.Seq)
			}
			return fail("event %d is missing from the log", a.Seq)
		}
		ev, err := decodeStored(a.Seq, v)
		if err != nil {
			return fail("event %d %s", a.Seq, err)
		}
		if ev.Hash != a.Hash {
			return fail("event %d hashes to %s, the anchor says %s: the log was rewritten", a.Seq, ev.Hash, a.Hash)
		}
		id := rec.IDString()
		prefix := append([]byte(id), 0)
		var found error = fail("the log holds no record of ceremony %s at or before event %d", id, a.Seq)
		err = r.scanDesc(bucketCeremonyEvents, prefix, ceremonyEventKey(id, a.Seq+1), func(k, _ []byte) error {
			if len(k) != len(prefix)+8 {
				return errStop
			}
			seq, _ := keySeq(k[len(prefix):])
			cv, err := r.get(bucketEvents, seqKey(seq))
			if err != nil {
				return err
			}
			if cv == nil {
				found = fail("event %d of ceremony %s is missing", seq, id)
				return errStop
			}
			ev, err := decodeStored(seq, cv)
			if err != nil {
				found = fail("event %d %s", seq, err)
				return errStop
			}
			if ev.Type != TypeCeremony {
				return nil
			}
			_, logRec, err := parseCeremonyBody(ev.Body)
			if err != nil {
				found = fail("event %d: %v", seq, err)
				return errStop
			}
			if d := Compare(rec, logRec); len(d) > 0 {
				names := make([]string, len(d))
				for i, x := range d {
					names[i] = x.String()
				}
				found = fail("the copy disagrees with the log's record at event %d: %s", seq, strings.Join(names, ", "))
				return errStop
			}
			found = nil
			return errStop
		})
		if err != nil {
			return err
		}
		return found
	})
}
