package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// setStream is what verifyStream keeps of custodian sets (sets.go): as
// little as the cards. Each set's newest version and, per version, its
// cards' keys (a log holds as many as its card ceremonies made); each
// card's latest set rollcall; and multiset digests of the set versions'
// entries and of the set ceremonies, which grow with the log.
type setStream struct {
	heads     map[string]setHead           // name -> newest version
	versions  map[string]map[string]string // setVersionKey -> serial -> key fingerprint
	rollcalls map[string][16]byte          // setSubKey(set, serial) -> prf(key, entry)
	entries   sum128                       // prf(setVersionKey, setEntry) of each version
	cers      sum128                       // prf(setSubKey(set, ceremony), setCeremony)
}

func newSetStream() setStream {
	return setStream{heads: map[string]setHead{}, versions: map[string]map[string]string{}, rollcalls: map[string][16]byte{}}
}

// set applies planSets's rules to a set event.
func (v *streamVerifier) set(it *item) bool {
	s, body := it.set, it.ev.body
	head, found := v.sets.heads[s.Name]
	fp := sha256.Sum256(body)
	switch {
	case !found && s.Version != 1:
		return false
	case found && (s.Version != head.Version+1 || hex.EncodeToString(s.Previous[:]) != head.Fingerprint):
		return false
	}
	// The set's cards join the registry as planCardKey merges them: their
	// serials and keys are distinct (ParseSet), so one after the other is
	// what planning all before writing any gives.
	for _, c := range s.Cards {
		key := CardKey{Slot: fmt.Sprintf("%02x", c.Slot), Fingerprint: hex.EncodeToString(c.Key[:]), Attestation: c.Attestation}
		if !v.cardKey(c.Serial, c.Custodian, key, false) {
			return false
		}
	}
	fpText := hex.EncodeToString(fp[:])
	v.sets.heads[s.Name] = setHead{Version: s.Version, Fingerprint: fpText, Seq: it.seq}
	vk := setVersionKey(s.Name, s.Version)
	cards := make(map[string]string, len(s.Cards))
	for _, c := range s.Cards {
		cards[c.Serial] = hex.EncodeToString(c.Key[:])
	}
	v.sets.versions[string(vk)] = cards
	v.sets.entries.add(v.d.prf(vk, mustJSON(setEntry{Fingerprint: fpText, Seq: it.seq, Body: body})))
	return true
}

// setRollcall applies planSetRollcall's rules to a set rollcall event.
func (v *streamVerifier) setRollcall(it *item) bool {
	rc := it.src
	if setNameProblem([]byte(rc.Set)) != "" || checkCardKey(rc.Serial, "", rc.Fingerprint, "") != nil {
		return false
	}
	if rc.Reason != "" && checkText("set rollcall reason", rc.Reason, maxActorLen) != nil {
		return false
	}
	if rc.Version < 1 || rc.Version > maxSetVersion {
		return false
	}
	cards, ok := v.sets.versions[string(setVersionKey(rc.Set, rc.Version))]
	if !ok || cards[rc.Serial] != rc.Fingerprint {
		return false
	}
	k := setSubKey(rc.Set, rc.Serial)
	v.sets.rollcalls[string(k)] = v.d.prf(k, mustJSON(SetRollcallState{SetRollcall: *rc, Time: it.ev.time.when(), Seq: it.seq}))
	return true
}

// ceremony is planSetCeremony for a ceremony's first record, which names
// a set.
func (s *setStream) ceremony(d *digester, rec *Record, id string) {
	k := setSubKey(rec.Set.Name, id)
	s.cers.add(d.prf(k, mustJSON(setCeremony{Volume: rec.VolumeString(), Version: rec.Set.Version})))
}

// setCeremonyHolds is sets.go's setCeremonyHolds on a ceremony's state:
// its latest record names a set and holds the rollcall's card with that
// key.
func (v *streamVerifier) setCeremonyHolds(id [16]byte, st *cerState, rc *Rollcall) bool {
	if !st.set {
		return false
	}
	rec := v.recent[id]
	if rec == nil {
		if rec = v.recordAt(rc.Ceremony, st.last); rec == nil {
			return false
		}
	}
	if rec.Set == nil {
		return false
	}
	for _, c := range rec.Cards {
		if c.Serial == rc.Serial && hex.EncodeToString(c.Key[:]) == rc.Fingerprint {
			return true
		}
	}
	return false
}

// checkStored compares the set indexes with what the walk found. A log
// made before them may lack their buckets (schema.go) while it holds
// nothing for them.
func (s *setStream) checkStored(r kvRead, d *digester) bool {
	scan := func(bucket []byte, fn func(k, val []byte) bool) bool {
		if !r.hasBucket(bucket) {
			return true
		}
		good := true
		err := r.scan(bucket, nil, nil, func(k, val []byte) error {
			if !fn(k, val) {
				good = false
				return errStop
			}
			return nil
		})
		return err == nil && good
	}
	// sets: name -> head; name 0x00 version -> entry.
	var entries sum128
	heads := 0
	if !scan(bucketSets, func(k, val []byte) bool {
		if bytes.IndexByte(k, 0) >= 0 {
			entries.add(d.prf(k, val))
			return true
		}
		h, ok := s.heads[string(k)]
		heads++
		return ok && bytes.Equal(val, mustJSON(h))
	}) || heads != len(s.heads) || entries != s.entries {
		return false
	}
	var cers sum128
	if !scan(bucketSetCeremonies, func(k, val []byte) bool {
		cers.add(d.prf(k, val))
		return true
	}) || cers != s.cers {
		return false
	}
	n := 0
	if !scan(bucketSetRollcalls, func(k, val []byte) bool {
		want, ok := s.rollcalls[string(k)]
		n++
		return ok && d.prf(k, val) == want
	}) || n != len(s.rollcalls) {
		return false
	}
	return true
}
