package store

import (
	"bytes"
	"container/list"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"
	"unicode/utf8"
)

// verifyStream checks the log in memory that does not grow with it: ok
// means the log is sound, with the same meaning as verifyReference
// finding nothing; !ok means it found something (or could not tell), and
// the caller runs verifyReference to name it.
//
// How. One pass over the events in order, several goroutines hashing and
// decoding ahead of one that follows the chain and applies the log's rules
// with only this state:
//
//   - the cards and their keys (a log has as many as it has physical
//     cards), exactly as the indexes hold them, with a digest of each
//     card's list of ceremonies;
//   - the custodian sets: each one's newest version, each version's
//     cards' keys, each card's latest set rollcall (streamsets.go; as
//     many as the card ceremonies that made them);
//   - a bounded cache of ceremonies (status, latest record, first event);
//     a ceremony not in it is read back from the log through the
//     ceremony-events index;
//   - multiset digests (digest.go) of what the events say the other
//     indexes hold: each event of a ceremony, each ceremony's entry (less
//     its body and replacers, checked against the events they name), each
//     replacer, each volume's ceremony.
//
// Then each index is read in key order and digested the same way. If
// every digest and every card agrees, the indexes are what the events
// make them, and so was the ceremony-events index the cache read from.
func verifyStream(r kvRead, be backend, anchors []Head) (rep Report, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false // the reference names whatever this path tripped on
		}
	}()
	for _, name := range append([][]byte{bucketMeta, bucketEvents}, indexBuckets...) {
		if !r.hasBucket(name) && !lateIndex(name) {
			return rep, false
		}
	}
	if rel, ok := r.(interface{ release() }); ok {
		// Drop the file's pages from the resident set as the pass goes
		// (bbolt's reads and its page check touch every page).
		done, stopped := make(chan struct{}), make(chan struct{})
		// The goroutine must be gone before the transaction closes: it
		// reads the transaction's file.
		defer func() { close(done); <-stopped }()
		go func() {
			defer close(stopped)
			for {
				select {
				case <-done:
					return
				case <-time.After(5 * time.Millisecond):
					rel.release()
				}
			}
		}()
	}
	v := newStreamVerifier(r)
	for _, a := range anchors {
		v.anchorWant[a.Seq] = true
	}
	if !v.walk() {
		return rep, false
	}
	if checkHeadRecord(r, v.head) != nil {
		return rep, false
	}
	for _, a := range anchors {
		if a.Seq == 0 || a.Seq > v.head.Seq {
			return rep, false
		}
	}
	if v.anchorsOK(anchors) != len(anchors) {
		return rep, false
	}
	if !v.checkStored() {
		return rep, false
	}
	if be.check(r) != nil {
		return rep, false
	}
	return Report{Events: v.head.Seq, Head: v.head, Anchors: len(anchors)}, true
}

// cerState is what the rules need of a ceremony after an event: small,
// so that the cache holds many. The latest record itself is kept only for
// the ceremonies written to last (recent); the others read it back from
// their latest event when they need it.
type cerState struct {
	status   string
	volume   string
	replaces string
	first    uint64 // its first ceremony event
	last     uint64 // its latest ceremony event
	// serials and named are the cards and the ceremonies replaced that
	// its records have named so far (with a version 1 first record they
	// need not be the latest record's).
	serials []string
	named   []string
	v1      bool    // its first record is version 1
	set     bool    // its records name a custodian set (from the first on)
	rec     *Record // the latest record, or nil
}

func (st *cerState) hasSerial(s string) bool { return slices.Contains(st.serials, s) }

type cardState struct {
	rec  CardRecord // without Ceremonies
	nCer int
	cer  sum128 // digest of (serial, position, ceremony) for its ceremonies
}

type streamVerifier struct {
	r    kvRead
	d    *digester
	head Head

	v2Only bool
	cards  map[string]*cardState
	fps    map[string]string

	cache    map[string]*list.Element // of *cacheEntry
	lru      *list.List
	cacheCap int
	recent   []*cerState // the states that keep their record
	recentAt int

	cerEvents sum128 // (ceremony, seq) of each event with a ceremony
	entries   sum128 // each ceremony's entry: status, volume, replaces, first, last
	replacers sum128 // (replaced, replacer, seq)
	volumes   sum128 // (volume, ceremony, first)

	anchorSeqs map[uint64]Hash
	anchorWant map[uint64]bool

	sets setStream // custodian sets (streamsets.go)
}

type cacheEntry struct {
	id string
	st *cerState
}

func newStreamVerifier(r kvRead) *streamVerifier {
	return &streamVerifier{r: r, d: newDigester(), cards: map[string]*cardState{}, fps: map[string]string{},
		cache: map[string]*list.Element{}, lru: list.New(), cacheCap: 1 << 16,
		anchorSeqs: map[uint64]Hash{}, anchorWant: map[uint64]bool{}, sets: newSetStream()}
}

func (v *streamVerifier) anchorsOK(anchors []Head) int {
	n := 0
	for _, a := range anchors {
		if h, ok := v.anchorSeqs[a.Seq]; ok && h == a.Hash {
			n++
		}
	}
	return n
}

// item is one event on its way through the pipeline.
type item struct {
	seq uint64
	val []byte
	ok  bool
	ev  rawEvent
	h   Hash
	// the typed body, read by the workers
	status string
	rec    *Record
	reg    *CardRegistration
	rc     *Rollcall
	set    *Set
	src    *SetRollcall
}

type batch struct {
	items []item
	done  chan struct{}
}

const batchSize = 512

func (v *streamVerifier) walk() bool {
	workers := max(1, runtime.GOMAXPROCS(0))
	todo := make(chan *batch, 2*workers)
	ordered := make(chan *batch, 4*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range todo {
				for i := range b.items {
					prepare(&b.items[i])
				}
				close(b.done)
			}
		}()
	}
	stop := make(chan struct{})
	var scanErr error
	go func() {
		defer close(ordered)
		defer close(todo)
		b := &batch{done: make(chan struct{})}
		send := func() bool {
			select {
			case todo <- b:
			case <-stop:
				return false
			}
			select {
			case ordered <- b:
			case <-stop:
				return false
			}
			b = &batch{done: make(chan struct{})}
			return true
		}
		scanErr = v.r.scan(bucketEvents, nil, nil, func(k, val []byte) error {
			seq, ok := keySeq(k)
			if !ok {
				return errStop
			}
			b.items = append(b.items, item{seq: seq, val: val})
			if len(b.items) == batchSize {
				if !send() {
					return errStop
				}
			}
			return nil
		})
		if len(b.items) > 0 {
			send()
		}
	}()
	good := true
	for b := range ordered {
		<-b.done
		if !good {
			continue
		}
		for i := range b.items {
			if !v.step(&b.items[i]) {
				good = false
				close(stop)
				break
			}
		}
		b.items = nil
	}
	wg.Wait()
	return good && scanErr == nil
}

// prepare does what one event needs without the state: its stored hash,
// its record, its typed body.
func prepare(it *item) {
	v := it.val
	if len(v) <= len(Hash{}) {
		return
	}
	rec := v[len(Hash{}):]
	it.h = sha256.Sum256(rec)
	if it.h != Hash(v[:len(Hash{})]) || !parseRecordFast(rec, &it.ev) || it.ev.seq != it.seq {
		return
	}
	switch string(it.ev.typ) {
	case TypeCeremony:
		status, r, err := parseCeremonyBody(it.ev.body)
		if err != nil {
			return
		}
		it.status, it.rec = status, r
	case TypeCard:
		reg, err := parseCardRegistration(it.ev.body)
		if err != nil {
			return
		}
		it.reg = reg
	case TypeRollcall:
		rc, err := parseRollcall(it.ev.body)
		if err != nil {
			return
		}
		it.rc = rc
	case TypeSet:
		s, err := ParseSet(it.ev.body)
		if err != nil {
			return
		}
		it.set = s
	case TypeSetRollcall:
		var rc SetRollcall
		if strictUnmarshal(it.ev.body, &rc) != nil {
			return
		}
		it.src = &rc
	}
	it.ok = true
}

// step follows the chain and applies the rules to one prepared event.
func (v *streamVerifier) step(it *item) bool {
	if !it.ok || it.seq != v.head.Seq+1 || it.ev.prev != v.head.Hash {
		return false
	}
	ev := &it.ev
	cer := string(ev.ceremony)
	if ev.ceremony != nil {
		v.cerEvents.add(v.d.prf(ev.ceremony, seqKey(it.seq)))
	}
	switch string(ev.typ) {
	case TypeSet:
		if ev.ceremony != nil || !v.set(it) {
			return false
		}
	case TypeSetRollcall:
		if ev.ceremony != nil || !v.setRollcall(it) {
			return false
		}
	case TypeCeremony:
		if !v.ceremony(it, cer) {
			return false
		}
	case TypeCard:
		reg := it.reg
		if checkCardKey(reg.Serial, reg.Slot, reg.Fingerprint, reg.Custodian) != nil || reg.Custodian == "" {
			return false
		}
		if !v.cardKey(reg.Serial, reg.Custodian, CardKey{Slot: reg.Slot, Fingerprint: reg.Fingerprint, Attestation: reg.Attestation}, true) {
			return false
		}
	case TypeRollcall:
		if !v.rollcall(it, cer) {
			return false
		}
	case TypeCreated, TypeMigrated:
		ws, err := planLogEvent(Event{Seq: it.seq, Type: string(ev.typ), Body: ev.body})
		if err != nil {
			return false
		}
		if len(ws) > 0 {
			v.v2Only = true
		}
	}
	if v.anchorWant[it.seq] {
		v.anchorSeqs[it.seq] = it.h
	}
	v.head = Head{Seq: it.seq, Hash: it.h}
	return true
}

func (v *streamVerifier) entryDigest(id string, st *cerState) [16]byte {
	var n [16]byte
	binary.BigEndian.PutUint64(n[:8], st.first)
	binary.BigEndian.PutUint64(n[8:], st.last)
	return v.d.prf([]byte(id), []byte(st.status), []byte(st.volume), []byte(st.replaces), n[:])
}

// ceremony applies planCeremony's rules.
func (v *streamVerifier) ceremony(it *item, cer string) bool {
	rec, status := it.rec, it.status
	id := rec.IDString()
	if rec.Version == 1 && v.v2Only || cer != id {
		return false
	}
	old, ok := v.state(id, it.seq)
	if !ok {
		return false
	}
	rule := func(string, string, ...any) error { return errStop }
	next := &cerState{status: status, rec: rec, volume: rec.VolumeString(), replaces: rec.ReplacesString(), first: it.seq, last: it.seq}
	if old != nil {
		prev := old.rec
		if prev == nil {
			if prev = v.recordAt(id, old.last); prev == nil {
				return false
			}
		}
		if !slices.Contains(transitions[old.status], status) || checkChange(prev, rec, rule) != nil {
			return false
		}
		next.first, next.v1, next.set = old.first, old.v1, old.set
		next.serials, next.named = old.serials, old.named
		v.entries.sub(v.entryDigest(id, old))
	} else {
		if status != StatusOpen && status != StatusActive {
			return false
		}
		next.v1, next.set = rec.Version == 1, rec.Set != nil
		v.volumes.add(v.d.prf([]byte(next.volume), []byte(id), seqKey(it.seq)))
		if rec.Set != nil {
			// planSetCeremony: the set's ceremonies, from the first
			// record (checkChange keeps the set from then on).
			v.sets.ceremony(v.d, rec, id)
		}
	}
	if status == StatusActive && !rec.Complete() {
		return false
	}
	if status == StatusActive && rec.Version == 1 {
		for _, c := range rec.Cards {
			if c.Commitment == ([32]byte{}) {
				return false
			}
		}
	}
	if r := rec.ReplacesString(); r != "" {
		prior, ok := v.state(r, it.seq)
		if !ok || prior == nil || prior.volume != next.volume {
			return false
		}
		if !slices.Contains(next.named, r) {
			next.named = append(slices.Clip(next.named), r)
			v.replacers.add(v.d.prf([]byte(r), []byte(id), seqKey(it.seq)))
		}
	}
	// Every card's fingerprint must be free or its own before any card
	// changes (planCeremony plans all cards before writing any). The
	// cards of a ceremony enrolled to a set reach it through the set
	// (cardsIndexed).
	cards := cardsIndexed(rec)
	for _, c := range cards {
		if owner, ok := v.fps[hex.EncodeToString(c.Key[:])]; ok && owner != c.Serial {
			return false
		}
	}
	for _, c := range cards {
		key := CardKey{Slot: fmt.Sprintf("%02x", c.Slot), Fingerprint: hex.EncodeToString(c.Key[:])}
		if !v.cardKey(c.Serial, c.Custodian, key, false) {
			return false
		}
		if !next.hasSerial(c.Serial) {
			next.serials = append(slices.Clip(next.serials), c.Serial)
			cs := v.cards[c.Serial]
			var pos [8]byte
			binary.BigEndian.PutUint64(pos[:], uint64(cs.nCer))
			cs.cer.add(v.d.prf([]byte(c.Serial), pos[:], []byte(id)))
			cs.nCer++
		}
	}
	v.entries.add(v.entryDigest(id, next))
	v.put(id, next)
	v.keepRecord(next)
	return true
}

// keepRecord keeps st's record while st is among the last recentRecords
// ceremonies written to, and lets go of the record of the one it
// displaces.
func (v *streamVerifier) keepRecord(st *cerState) {
	if len(v.recent) < recentRecords {
		v.recent = append(v.recent, st)
		return
	}
	v.recent[v.recentAt].rec = nil
	v.recent[v.recentAt] = st
	v.recentAt = (v.recentAt + 1) % recentRecords
}

const recentRecords = 256

// recordAt reads ceremony id's record from its event seq.
func (v *streamVerifier) recordAt(id string, seq uint64) *Record {
	val, err := v.r.get(bucketEvents, seqKey(seq))
	if err != nil || len(val) <= len(Hash{}) {
		return nil
	}
	typ, cer, body, ok := peekRecord(val[len(Hash{}):])
	if !ok || string(typ) != TypeCeremony || string(cer) != id {
		return nil
	}
	_, rec, err := parseCeremonyBody(body)
	if err != nil {
		return nil
	}
	return rec
}

// cardKey is planCardKey on the cards in memory.
func (v *streamVerifier) cardKey(serial, custodian string, key CardKey, registration bool) bool {
	if owner, ok := v.fps[key.Fingerprint]; ok && owner != serial {
		return false
	}
	cs := v.cards[serial]
	if cs == nil {
		cs = &cardState{}
		v.cards[serial] = cs
	}
	card := &cs.rec
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
			card.Keys = slices.DeleteFunc(card.Keys, func(k CardKey) bool {
				if k.Slot == key.Slot {
					delete(v.fps, k.Fingerprint)
					return true
				}
				return false
			})
		}
		card.Keys = append(card.Keys, key)
	}
	v.fps[key.Fingerprint] = serial
	return true
}

// rollcall applies planRollcall's rules.
func (v *streamVerifier) rollcall(it *item, cer string) bool {
	rc := it.rc
	if !validID(rc.Ceremony) || cer != rc.Ceremony {
		return false
	}
	if checkCardKey(rc.Serial, "", rc.Fingerprint, "") != nil {
		return false
	}
	if rc.Reason != "" && checkText("rollcall reason", rc.Reason, maxActorLen) != nil {
		return false
	}
	st, ok := v.state(rc.Ceremony, it.seq)
	if !ok || st == nil {
		return false
	}
	cs := v.cards[rc.Serial]
	if cs == nil || !slices.ContainsFunc(cs.rec.Keys, func(k CardKey) bool { return k.Fingerprint == rc.Fingerprint }) {
		return false
	}
	if !st.hasSerial(rc.Serial) && !v.setCeremonyHolds(st, rc) {
		return false
	}
	if rc.OK {
		cs.rec.LastRollcall = it.ev.time
		cs.rec.LastRollcallCeremony = rc.Ceremony
	}
	return true
}

func (v *streamVerifier) put(id string, st *cerState) {
	if e, ok := v.cache[id]; ok {
		e.Value.(*cacheEntry).st = st
		v.lru.MoveToFront(e)
		return
	}
	v.cache[id] = v.lru.PushFront(&cacheEntry{id: id, st: st})
	if v.lru.Len() > v.cacheCap {
		old := v.lru.Remove(v.lru.Back()).(*cacheEntry)
		delete(v.cache, old.id)
	}
}

// state returns ceremony id as it stood before event seq: nil if it had
// no ceremony event yet; ok false if the log cannot say.
func (v *streamVerifier) state(id string, seq uint64) (*cerState, bool) {
	if e, ok := v.cache[id]; ok {
		v.lru.MoveToFront(e)
		return e.Value.(*cacheEntry).st, true
	}
	st, ok := v.load(id, seq)
	if ok && st != nil {
		v.put(id, st)
	}
	return st, ok
}

// load reads a ceremony's state before event seq back from the log,
// through the ceremony-events index (which the digest checks at the end).
// Every event before seq has passed step in this verification, so their
// records are read with peekRecord, without checking them again.
func (v *streamVerifier) load(id string, seq uint64) (*cerState, bool) {
	prefix := append([]byte(id), 0)
	type found struct {
		seq  uint64
		body []byte
	}
	// Each ceremony event of id, in order, through fn; stop when fn says.
	walk := func(desc bool, fn func(found) bool) bool {
		good := true
		scan := v.r.scan
		if desc {
			scan = v.r.scanDesc
		}
		err := scan(bucketCeremonyEvents, prefix, ceremonyEventKey(id, seq), func(k, _ []byte) error {
			if len(k) != len(prefix)+8 {
				good = false
				return errStop
			}
			s, _ := keySeq(k[len(prefix):])
			val, err := v.r.get(bucketEvents, seqKey(s))
			if err != nil || val == nil || len(val) <= len(Hash{}) {
				good = false
				return errStop
			}
			typ, cer, body, ok := peekRecord(val[len(Hash{}):])
			if !ok || string(cer) != id {
				good = false
				return errStop
			}
			if string(typ) != TypeCeremony {
				return nil
			}
			if !fn(found{s, body}) {
				return errStop
			}
			return nil
		})
		return err == nil && good
	}
	var first found
	if !walk(false, func(f found) bool { first = f; return false }) {
		return nil, false
	}
	if first.seq == 0 {
		return nil, true // no ceremony event before seq
	}
	st := &cerState{first: first.seq, v1: isV1Body(first.body)}
	add := func(f found) bool {
		status, rec, err := parseCeremonyBody(f.body)
		if err != nil {
			st = nil
			return false
		}
		st.status, st.rec, st.last = status, rec, f.seq
		st.volume, st.replaces, st.set = rec.VolumeString(), rec.ReplacesString(), rec.Set != nil
		for _, c := range cardsIndexed(rec) {
			if !st.hasSerial(c.Serial) {
				st.serials = append(st.serials, c.Serial)
			}
		}
		if r := st.replaces; r != "" && !slices.Contains(st.named, r) {
			st.named = append(st.named, r)
		}
		return true
	}
	var ok bool
	if st.v1 {
		// Version 1 records may drop a card or change what they replace:
		// every record counts.
		ok = walk(false, add)
	} else {
		// From a version 2 first record on, cards only grow and replaces
		// never changes: the latest record says it all.
		ok = walk(true, func(f found) bool { add(f); return false })
	}
	if !ok || st == nil || st.rec == nil {
		return nil, false
	}
	st.rec = nil // read back when a ceremony event needs it
	return st, true
}

// peekRecord finds the type, ceremony and body of a record that was
// already read in full (parseRecordFast) in this verification: the member
// names cannot occur inside the actor's string, whose quotes are escaped.
func peekRecord(rec []byte) (typ, ceremony, body []byte, ok bool) {
	const tail = len(`,"prev":"`) + 64 + len(`"}`)
	i := bytes.Index(rec, []byte(`,"type":"`))
	if i < 0 || len(rec) < tail {
		return nil, nil, nil, false
	}
	rest := rec[i+len(`,"type":"`):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil, nil, nil, false
	}
	typ, rest = rest[:j], rest[j+1:]
	if c, ok := bytes.CutPrefix(rest, []byte(`,"ceremony":"`)); ok {
		j = bytes.IndexByte(c, '"')
		if j < 0 {
			return nil, nil, nil, false
		}
		ceremony, rest = c[:j], c[j+1:]
	}
	b, ok := bytes.CutPrefix(rest, []byte(`,"body":`))
	if !ok || len(b) < tail {
		return nil, nil, nil, false
	}
	return typ, ceremony, b[:len(b)-tail], true
}

// checkStored reads every index in key order and compares it with what
// the walk found.
func (v *streamVerifier) checkStored() bool {
	var cerEvents, entries, replacers, volumes sum128
	r := v.r
	// ceremony-events: id 0x00 seq -> empty
	if r.scan(bucketCeremonyEvents, nil, nil, func(k, val []byte) error {
		i := bytes.IndexByte(k, 0)
		if i < 0 || len(k) != i+9 || len(val) != 0 {
			return errStop
		}
		cerEvents.add(v.d.prf(k[:i], k[i+1:]))
		return nil
	}) != nil || cerEvents != v.cerEvents {
		return false
	}
	// ceremonies: each entry's frame, its body against its latest event,
	// its replacers against theirs.
	good := true
	if r.scan(bucketCeremonies, nil, nil, func(k, val []byte) error {
		e, ok := parseEntry(val)
		if !ok || !v.entryBodyOK(string(k), &e) {
			good = false
			return errStop
		}
		var n [16]byte
		binary.BigEndian.PutUint64(n[:8], e.first)
		binary.BigEndian.PutUint64(n[8:], e.last)
		entries.add(v.d.prf(k, e.status, e.volume, e.replaces, n[:]))
		var prev uint64
		for _, rp := range e.replacers {
			s, ok := v.firstNaming(string(rp), string(k))
			if !ok || s <= prev {
				good = false
				return errStop
			}
			prev = s
			replacers.add(v.d.prf(k, rp, seqKey(s)))
		}
		return nil
	}) != nil || !good || entries != v.entries || replacers != v.replacers {
		return false
	}
	// volumes: each ceremony of the volume, oldest first, and the newest
	// active one as current.
	if r.scan(bucketVolumes, nil, nil, func(k, val []byte) error {
		var vol VolumeRecord
		if json.Unmarshal(val, &vol) != nil || !bytes.Equal(mustJSON(vol), val) || vol.UUID != string(k) {
			good = false
			return errStop
		}
		var prev uint64
		current := ""
		for _, id := range vol.History {
			raw, err := r.get(bucketCeremonies, []byte(id))
			if err != nil || raw == nil {
				good = false
				return errStop
			}
			e, ok := parseEntry(raw)
			if !ok || string(e.volume) != vol.UUID || e.first <= prev {
				good = false
				return errStop
			}
			prev = e.first
			if string(e.status) == StatusActive {
				current = id
			}
			volumes.add(v.d.prf(k, []byte(id), seqKey(e.first)))
		}
		if current != vol.Current {
			good = false
			return errStop
		}
		return nil
	}) != nil || !good || volumes != v.volumes {
		return false
	}
	// cards and fingerprints: as held in memory.
	n := 0
	if r.scan(bucketCards, nil, nil, func(k, val []byte) error {
		cs := v.cards[string(k)]
		var card CardRecord
		if cs == nil || json.Unmarshal(val, &card) != nil || !bytes.Equal(mustJSON(card), val) {
			good = false
			return errStop
		}
		var sum sum128
		for i, c := range card.Ceremonies {
			var pos [8]byte
			binary.BigEndian.PutUint64(pos[:], uint64(i))
			sum.add(v.d.prf(k, pos[:], []byte(c)))
		}
		card.Ceremonies = nil
		want := cs.rec
		if sum != cs.cer || !bytes.Equal(mustJSON(card), mustJSON(want)) {
			good = false
			return errStop
		}
		n++
		return nil
	}) != nil || !good || n != len(v.cards) {
		return false
	}
	n = 0
	if r.scan(bucketFingerprints, nil, nil, func(k, val []byte) error {
		if v.fps[string(k)] != string(val) {
			good = false
			return errStop
		}
		n++
		return nil
	}) != nil || !good || n != len(v.fps) {
		return false
	}
	if !v.sets.checkStored(r, v.d) {
		return false
	}
	// log: the record version flag.
	n = 0
	if r.scan(bucketLogState, nil, nil, func(k, val []byte) error {
		if !v.v2Only || !bytes.Equal(k, keyRecordVersion) || string(val) != "2" {
			good = false
		}
		n++
		return nil
	}) != nil || !good || (n == 1) != v.v2Only || n > 1 {
		return false
	}
	return true
}

// entryBodyOK checks a ceremony entry's body against its latest event.
func (v *streamVerifier) entryBodyOK(id string, e *entryView) bool {
	val, err := v.r.get(bucketEvents, seqKey(e.last))
	if err != nil || val == nil || len(val) <= len(Hash{}) {
		return false
	}
	typ, cer, body, ok := peekRecord(val[len(Hash{}):])
	return ok && string(typ) == TypeCeremony && string(cer) == id && bytes.Equal(body, e.body)
}

// firstNaming returns the first ceremony event of ceremony id whose record
// replaces replaced.
func (v *streamVerifier) firstNaming(id, replaced string) (uint64, bool) {
	prefix := append([]byte(id), 0)
	var found uint64
	err := v.r.scan(bucketCeremonyEvents, prefix, prefixEnd(prefix), func(k, _ []byte) error {
		s, _ := keySeq(k[len(prefix):])
		val, err := v.r.get(bucketEvents, seqKey(s))
		if err != nil || val == nil || len(val) <= len(Hash{}) {
			return errStop
		}
		typ, _, body, ok := peekRecord(val[len(Hash{}):])
		if !ok || string(typ) != TypeCeremony {
			return nil
		}
		_, rec, err := parseCeremonyBody(body)
		if err == nil && rec.ReplacesString() == replaced {
			found = s
			return errStop
		}
		return nil
	})
	return found, err == nil && found != 0
}

// entryView is a ceremony entry read in place.
type entryView struct {
	status, volume, replaces []byte
	first, last              uint64
	replacers                [][]byte
	body                     []byte
}

// parseEntry reads a ceremony entry exactly as mustJSON(ceremonyEntry)
// writes it (its strings hold only characters that need no escape).
func parseEntry(b []byte) (entryView, bool) {
	var e entryView
	p := recParser{b: b}
	str := func() ([]byte, bool) {
		start := p.i
		for p.i < len(p.b) && p.b[p.i] != '"' {
			c := p.b[p.i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == ':') {
				return nil, false
			}
			p.i++
		}
		s := p.b[start:p.i]
		return s, p.lit(`"`)
	}
	var ok bool
	if !p.lit(`{"status":"`) {
		return e, false
	}
	if e.status, ok = str(); !ok || !validStatus(string(e.status)) || !p.lit(`,"volume":"`) {
		return e, false
	}
	if e.volume, ok = str(); !ok {
		return e, false
	}
	if p.lit(`,"replaces":"`) {
		if e.replaces, ok = str(); !ok || len(e.replaces) == 0 {
			return e, false
		}
	}
	if !p.lit(`,"first":`) {
		return e, false
	}
	if e.first, ok = p.seq(); !ok || !p.lit(`,"last":`) {
		return e, false
	}
	if e.last, ok = p.seq(); !ok {
		return e, false
	}
	if p.lit(`,"replacers":[`) {
		for {
			if !p.lit(`"`) {
				return e, false
			}
			s, ok := str()
			if !ok {
				return e, false
			}
			e.replacers = append(e.replacers, s)
			if p.lit(`]`) {
				break
			}
			if !p.lit(`,`) {
				return e, false
			}
		}
	}
	if !p.lit(`,"body":`) || len(p.b) < p.i+1 || p.b[len(p.b)-1] != '}' {
		return e, false
	}
	e.body = p.b[p.i : len(p.b)-1]
	return e, true
}

// parseCardRegistration reads a card event's body: the form json.Marshal
// writes without reflection, anything else as strictUnmarshal does.
func parseCardRegistration(b []byte) (*CardRegistration, error) {
	p := recParser{b: b}
	reg := &CardRegistration{}
	ok := p.lit(`{"serial":"`)
	var s []byte
	if ok {
		s, ok = plainString(&p)
		reg.Serial = string(s)
	}
	if ok = ok && p.lit(`,"custodian":"`); ok {
		s, ok = plainString(&p)
		reg.Custodian = string(s)
	}
	if ok = ok && p.lit(`,"slot":"`); ok {
		s, ok = plainString(&p)
		reg.Slot = string(s)
	}
	if ok = ok && p.lit(`,"fingerprint":"`); ok {
		s, ok = plainString(&p)
		reg.Fingerprint = string(s)
	}
	if ok && p.lit(`,"attestation":"`) {
		if s, ok = plainString(&p); ok {
			reg.Attestation = make([]byte, base64.StdEncoding.DecodedLen(len(s)))
			n, err := base64.StdEncoding.Decode(reg.Attestation, s)
			reg.Attestation, ok = reg.Attestation[:n], err == nil && n > 0
		}
	}
	if ok && p.lit(`}`) && p.i == len(b) {
		return reg, nil
	}
	reg = &CardRegistration{}
	if err := strictUnmarshal(b, reg); err != nil {
		return nil, err
	}
	return reg, nil
}

// parseRollcall reads a rollcall event's body, as parseCardRegistration.
func parseRollcall(b []byte) (*Rollcall, error) {
	p := recParser{b: b}
	rc := &Rollcall{}
	ok := p.lit(`{"ceremony":"`)
	var s []byte
	if ok {
		s, ok = plainString(&p)
		rc.Ceremony = string(s)
	}
	if ok = ok && p.lit(`,"serial":"`); ok {
		s, ok = plainString(&p)
		rc.Serial = string(s)
	}
	if ok = ok && p.lit(`,"fingerprint":"`); ok {
		s, ok = plainString(&p)
		rc.Fingerprint = string(s)
	}
	if ok = ok && p.lit(`,"ok":`); ok {
		switch {
		case p.lit("true"):
			rc.OK = true
		case p.lit("false"):
		default:
			ok = false
		}
	}
	if ok && p.lit(`,"reason":"`) {
		s, ok = plainString(&p)
		rc.Reason = string(s)
		ok = ok && rc.Reason != ""
	}
	if ok && p.lit(`}`) && p.i == len(b) {
		return rc, nil
	}
	rc = &Rollcall{}
	if err := strictUnmarshal(b, rc); err != nil {
		return nil, err
	}
	return rc, nil
}

// plainString reads the rest of a string with no escape and only valid
// UTF-8 (anything else: ok false, and the caller falls back).
func plainString(p *recParser) ([]byte, bool) {
	start := p.i
	for p.i < len(p.b) {
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		}
		p.i++
	}
	return nil, false
}
