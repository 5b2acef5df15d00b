package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"runtime"
	"slices"
	"sync"
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
	v := newStreamVerifier(r)
	if kv, ok := r.(boltKV); ok && !kv.btx.Writable() {
		// A file: read its pages in place, checking them as bbolt's
		// Check does, with the resident set bounded. (A write
		// transaction's pages are not in the file yet: the tests verify
		// inside one, through the backend's reads and bbolt's Check.)
		if v.pages, ok = newBoltPages(kv.btx); !ok {
			return rep, false
		}
		defer v.pages.close()
	}
	for _, a := range anchors {
		v.anchorWant[a.Seq] = true
	}
	if !v.walk() {
		return rep, false
	}
	v.cache, v.recent, v.recentIn = nil, nil, nil // the rest needs the cards and the digests only
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
	if v.pages != nil && !v.pages.finish() || v.pages == nil && be.check(r) != nil {
		return rep, false
	}
	return Report{Events: v.head.Seq, Head: v.head, Anchors: len(anchors)}, true
}

// cerState is what the rules need of a ceremony after an event: small,
// so that the cache holds many (96 bytes). The latest record itself is
// kept only for the ceremonies written to last (recent); the others read
// it back from their latest event when they need it.
type cerState struct {
	first    uint64 // its first ceremony event
	last     uint64 // its latest ceremony event
	volume   [16]byte
	replaces [16]byte // zero: none
	// The cards (their indices in cardList) and the ceremonies replaced
	// that its records have named so far (with a version 1 first record
	// they need not be the latest record's): the first few here, the rest
	// in extra.
	named  [16]byte // zero: none
	cards  [4]uint32
	ncards uint8
	status uint8 // in statuses
	set    bool  // its records name a custodian set (from the first on)
	extra  *cerExtra
}

type cerExtra struct {
	cards []uint32
	named [][16]byte
}

var statuses = []string{StatusOpen, StatusActive, StatusAbandoned, StatusRetired}

func statusIndex(s string) (uint8, bool) {
	i := slices.Index(statuses, s)
	return uint8(i), i >= 0
}

func (st *cerState) statusName() string { return statuses[st.status] }

func (st *cerState) hasCard(i uint32) bool {
	n := min(int(st.ncards), len(st.cards))
	return slices.Contains(st.cards[:n], i) || st.extra != nil && slices.Contains(st.extra.cards, i)
}

// addCard adds card i (not there yet); the extra part is copied, as
// states share it.
func (st *cerState) addCard(i uint32) {
	if int(st.ncards) < len(st.cards) {
		st.cards[st.ncards] = i
		st.ncards++
		return
	}
	x := &cerExtra{named: st.extraNamed()}
	if st.extra != nil {
		x.cards = slices.Clone(st.extra.cards)
	}
	x.cards = append(x.cards, i)
	st.extra = x
}

func (st *cerState) extraNamed() [][16]byte {
	if st.extra == nil {
		return nil
	}
	return st.extra.named
}

func (st *cerState) hasNamed(r [16]byte) bool {
	return st.named == r || st.extra != nil && slices.Contains(st.extra.named, r)
}

func (st *cerState) addNamed(r [16]byte) {
	if st.named == ([16]byte{}) {
		st.named = r
		return
	}
	x := &cerExtra{}
	if st.extra != nil {
		x.cards, x.named = st.extra.cards, slices.Clone(st.extra.named)
	}
	x.named = append(x.named, r)
	st.extra = x
}

// cerCache holds the states of the ceremonies seen last: two generations
// of at most gen entries each, a state read from the older moving to the
// newer; when the newer is full the older is dropped. The ceremonies
// dropped go into a filter, so that a ceremony found in neither
// generation nor the filter is one that has no state yet (its first
// event), without asking the log.
type cerCache struct {
	cur, old map[[16]byte]*cerState
	gen      int
	dropped  idFilter
}

func newCerCache(gen int) *cerCache {
	return &cerCache{cur: make(map[[16]byte]*cerState, gen), old: map[[16]byte]*cerState{}, gen: gen,
		dropped: newIDFilter(1 << 23)}
}

func (c *cerCache) get(id [16]byte) *cerState {
	if st, ok := c.cur[id]; ok {
		return st
	}
	if st, ok := c.old[id]; ok {
		c.put(id, st)
		return st
	}
	return nil
}

func (c *cerCache) put(id [16]byte, st *cerState) {
	c.cur[id] = st
	if len(c.cur) >= c.gen {
		for id := range c.old {
			if _, ok := c.cur[id]; !ok {
				c.dropped.add(id)
			}
		}
		c.old, c.cur = c.cur, make(map[[16]byte]*cerState, c.gen)
	}
}

// idFilter is a Bloom filter of ceremony IDs: has is never false for an
// ID added, and rarely true for another.
type idFilter struct {
	bits []uint64
	seed maphash.Seed
}

func newIDFilter(m int) idFilter {
	return idFilter{bits: make([]uint64, m/64), seed: maphash.MakeSeed()}
}

func (f *idFilter) probes(id [16]byte, fn func(i uint64) bool) bool {
	h := maphash.Bytes(f.seed, id[:])
	h1, h2 := h, h>>32|h<<32|1
	m := uint64(len(f.bits)) * 64
	for i := uint64(0); i < 4; i++ {
		if !fn((h1 + i*h2) % m) {
			return false
		}
	}
	return true
}

func (f *idFilter) add(id [16]byte) {
	f.probes(id, func(i uint64) bool { f.bits[i/64] |= 1 << (i % 64); return true })
}

func (f *idFilter) has(id [16]byte) bool {
	return f.probes(id, func(i uint64) bool { return f.bits[i/64]&(1<<(i%64)) != 0 })
}

type cardState struct {
	idx  uint32     // in cardList
	rec  CardRecord // without Ceremonies
	nCer int
	cer  sum128 // digest of (serial, position, ceremony) for its ceremonies
}

type streamVerifier struct {
	r     kvRead
	pages *boltPages // a file's pages, read in place; nil on etcd
	d     *digester
	head  Head

	v2Only   bool
	cards    map[string]*cardState
	cardList []*cardState
	fps      map[string]string

	cache    *cerCache
	recent   map[[16]byte]*Record // the latest records of the ceremonies written to last
	recentIn [][16]byte           // those ceremonies, in a ring
	recentAt int

	cerEvents sum128 // (ceremony, seq) of each event with a ceremony
	entries   sum128 // each ceremony's entry: status, volume, replaces, first, last
	replacers sum128 // (replaced, replacer, seq)
	volumes   sum128 // (volume, ceremony, first)

	anchorSeqs map[uint64]Hash
	anchorWant map[uint64]bool

	sets setStream // custodian sets (streamsets.go)
}

// cacheGeneration bounds the ceremonies the cache holds (between one and
// two generations of them): about 150 bytes each. A variable for the
// tests, which make it small to exercise reading states back.
var cacheGeneration = 1 << 15

func newStreamVerifier(r kvRead) *streamVerifier {
	return &streamVerifier{r: r, d: newDigester(), cards: map[string]*cardState{}, fps: map[string]string{},
		cache: newCerCache(cacheGeneration), recent: map[[16]byte]*Record{},
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
	val []byte // the stored value, in its batch's buffer
	ok  bool
	ev  rawEvent
	h   Hash
	cer [16]byte // the digest of (ceremony, seq) when it has a ceremony
	// the typed body, read by the workers
	status string
	rec    *Record
	reg    *CardRegistration
	rc     *Rollcall
	set    *Set
	src    *SetRollcall
}

// batch is a run of events with their values copied out of the store, so
// that the store's pages can be let go of as soon as they are read.
type batch struct {
	items []item
	buf   []byte
	done  chan struct{}
}

const (
	batchSize  = 512
	batchBytes = 128 << 10
)

// scanAll reads a whole bucket in key order: a file's pages in place
// (checking them), or the backend's scan.
func (v *streamVerifier) scanAll(bucket []byte, fn func(k, val []byte) error) error {
	if v.pages == nil {
		return v.r.scan(bucket, nil, nil, fn)
	}
	ok, err := v.pages.scan(bucket, fn)
	if err == nil && !ok {
		return errNotSound // not as bbolt writes it
	}
	return err
}

// errNotSound ends the streaming verification: the reference names why.
var errNotSound = errors.New("not sound")

// get reads a key outside scanAll: on a file with boltPages, elsewhere
// from the snapshot. The value is valid until the next get.
func (v *streamVerifier) get(bucket, key []byte) ([]byte, error) {
	if v.pages != nil {
		val, ok := v.pages.get(bucket, key)
		if !ok {
			return nil, errNotSound
		}
		return val, nil
	}
	return v.r.get(bucket, key)
}

// scanRange reads the keys of bucket in [from, to) outside scanAll, as
// get does; fn may call get.
func (v *streamVerifier) scanRange(bucket, from, to []byte, desc bool, fn func(k, val []byte) error) error {
	if v.pages != nil {
		return v.pages.scanRange(bucket, from, to, desc, fn)
	}
	if desc {
		return v.r.scanDesc(bucket, from, to, fn)
	}
	return v.r.scan(bucket, from, to, fn)
}

func (v *streamVerifier) walk() bool {
	workers := max(1, runtime.GOMAXPROCS(0))
	inFlight := 2*workers + 2
	todo := make(chan *batch, 2*workers)
	ordered := make(chan *batch, 4*workers)
	free := make(chan *batch, inFlight)
	for range inFlight {
		free <- &batch{items: make([]item, 0, batchSize), buf: make([]byte, 0, batchBytes)}
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := v.d.clone()
			for b := range todo {
				for i := range b.items {
					prepare(&b.items[i], d)
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
		var b *batch
		next := func() bool {
			select {
			case b = <-free:
			case <-stop:
				return false
			}
			b.items, b.buf, b.done = b.items[:0], b.buf[:0], make(chan struct{})
			return true
		}
		// send hands b to the workers and to the checker; b is nil
		// after it until next takes another batch, so that a batch is
		// never sent twice (its done channel is closed once).
		send := func() bool {
			sent := b
			b = nil
			select {
			case todo <- sent:
			case <-stop:
				return false
			}
			select {
			case ordered <- sent:
			case <-stop:
				return false
			}
			return next()
		}
		if !next() {
			return
		}
		scanErr = v.scanAll(bucketEvents, func(k, val []byte) error {
			seq, ok := keySeq(k)
			if !ok {
				return errNotSound
			}
			if len(b.items) == batchSize || len(b.buf)+len(val) > cap(b.buf) && len(b.items) > 0 {
				if !send() {
					return errStop
				}
			}
			off := len(b.buf)
			b.buf = append(b.buf, val...)
			b.items = append(b.items, item{seq: seq, val: b.buf[off:len(b.buf):len(b.buf)]})
			return nil
		})
		if scanErr == nil && b != nil && len(b.items) > 0 {
			send()
		}
	}()
	good := true
	for b := range ordered {
		<-b.done
		if good {
			for i := range b.items {
				if !v.step(&b.items[i]) {
					good = false
					close(stop)
					break
				}
			}
		}
		clear(b.items) // let go of the records it holds
		free <- b
	}
	wg.Wait()
	return good && scanErr == nil
}

// prepare does what one event needs without the state: its stored hash,
// its record, its typed body, the digest of its ceremony event entry.
func prepare(it *item, d *digester) {
	val := it.val
	if len(val) <= len(Hash{}) {
		return
	}
	rec := val[len(Hash{}):]
	it.h = sha256.Sum256(rec)
	if it.h != Hash(val[:len(Hash{})]) || !parseRecordFast(rec, &it.ev) || it.ev.seq != it.seq {
		return
	}
	if it.ev.ceremony != nil {
		var sk [8]byte
		binary.BigEndian.PutUint64(sk[:], it.seq)
		it.cer = d.prf(it.ev.ceremony, sk[:])
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
		v.cerEvents.add(it.cer)
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
	return v.d.prf([]byte(id), []byte(st.statusName()), []byte(volumeText(st.volume)), []byte(idText(st.replaces)), n[:])
}

// idText is a ceremony ID in hex, "" for zero.
func idText(id [16]byte) string {
	if id == ([16]byte{}) {
		return ""
	}
	return hex.EncodeToString(id[:])
}

// ceremony applies planCeremony's rules.
func (v *streamVerifier) ceremony(it *item, cer string) bool {
	rec, status := it.rec, it.status
	id := rec.IDString()
	if rec.Version == 1 && v.v2Only || cer != id {
		return false
	}
	old, ok := v.state(rec.ID, it.seq)
	if !ok {
		return false
	}
	rule := func(string, string, ...any) error { return errStop }
	si, ok := statusIndex(status)
	if !ok {
		return false
	}
	next := &cerState{status: si, volume: rec.Volume, replaces: rec.Replaces, first: it.seq, last: it.seq}
	if old != nil {
		prev := v.recent[rec.ID]
		if prev == nil {
			if prev = v.recordAt(id, old.last); prev == nil {
				return false
			}
		}
		if !slices.Contains(transitions[old.statusName()], status) || checkChange(prev, rec, rule) != nil {
			return false
		}
		next.first, next.set = old.first, old.set
		next.named, next.cards, next.ncards, next.extra = old.named, old.cards, old.ncards, old.extra
		v.entries.sub(v.entryDigest(id, old))
	} else {
		if status != StatusOpen && status != StatusActive {
			return false
		}
		v.volumes.add(v.d.prf([]byte(rec.VolumeString()), []byte(id), seqKey(it.seq)))
		next.set = rec.Set != nil
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
	if r := rec.Replaces; r != ([16]byte{}) {
		prior, ok := v.state(r, it.seq)
		if !ok || prior == nil || prior.volume != next.volume {
			return false
		}
		if !next.hasNamed(r) {
			next.addNamed(r)
			v.replacers.add(v.d.prf([]byte(idText(r)), []byte(id), seqKey(it.seq)))
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
		if cs := v.cards[c.Serial]; !next.hasCard(cs.idx) {
			next.addCard(cs.idx)
			var pos [8]byte
			binary.BigEndian.PutUint64(pos[:], uint64(cs.nCer))
			cs.cer.add(v.d.prf([]byte(c.Serial), pos[:], []byte(id)))
			cs.nCer++
		}
	}
	v.entries.add(v.entryDigest(id, next))
	v.cache.put(rec.ID, next)
	v.keepRecord(rec.ID, rec)
	return true
}

// keepRecord keeps ceremony id's latest record while it is among the
// last recentRecords ceremonies written to.
func (v *streamVerifier) keepRecord(id [16]byte, rec *Record) {
	if _, ok := v.recent[id]; !ok {
		if len(v.recentIn) < recentRecords {
			v.recentIn = append(v.recentIn, id)
		} else {
			delete(v.recent, v.recentIn[v.recentAt])
			v.recentIn[v.recentAt] = id
			v.recentAt = (v.recentAt + 1) % recentRecords
		}
	}
	v.recent[id] = rec
}

var recentRecords = 256 // a variable for the tests

// recordAt reads ceremony id's record from its event seq.
func (v *streamVerifier) recordAt(id string, seq uint64) *Record {
	body := v.ceremonyBody(id, seq)
	if body == nil {
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
		cs = &cardState{idx: uint32(len(v.cardList))}
		v.cards[serial] = cs
		v.cardList = append(v.cardList, cs)
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
	id, err := ParseID(rc.Ceremony)
	if err != nil {
		return false // no ceremony event names it
	}
	st, ok := v.state(id, it.seq)
	if !ok || st == nil {
		return false
	}
	cs := v.cards[rc.Serial]
	if cs == nil || !slices.ContainsFunc(cs.rec.Keys, func(k CardKey) bool { return k.Fingerprint == rc.Fingerprint }) {
		return false
	}
	if !st.hasCard(cs.idx) && !v.setCeremonyHolds(id, st, rc) {
		return false
	}
	if rc.OK {
		cs.rec.LastRollcall = it.ev.time.when()
		cs.rec.LastRollcallCeremony = rc.Ceremony
	}
	return true
}

// state returns ceremony id as it stood before event seq: nil if it had
// no ceremony event yet; ok false if the log cannot say.
func (v *streamVerifier) state(id [16]byte, seq uint64) (*cerState, bool) {
	if st := v.cache.get(id); st != nil {
		return st, true
	}
	if !v.cache.dropped.has(id) {
		return nil, true // never in the cache: no ceremony event yet
	}
	st, ok := v.load(id, seq)
	if ok && st != nil {
		v.cache.put(id, st)
	}
	return st, ok
}

// load reads back the state before event seq of a ceremony the cache
// let go of. Its entry in the ceremonies index holds its latest record
// and names its latest ceremony event; when that event is before seq,
// the entry says it all (one read). Otherwise, or when that record is
// version 1, its ceremony events before seq are read through the
// ceremony-events index. The indexes are believed here and checked at
// the end against the events (the entry's body against its latest event,
// the digests of the entries and of the ceremony-events index): an index
// that lies makes the verification fail there. Every event before seq
// has passed step in this verification, so their records are read with
// peekRecord, without checking them again.
func (v *streamVerifier) load(id [16]byte, seq uint64) (*cerState, bool) {
	hexID := hex.EncodeToString(id[:])
	raw, err := v.get(bucketCeremonies, []byte(hexID))
	if err != nil || raw == nil {
		return nil, false
	}
	e, ok := parseEntry(raw)
	if !ok || e.first == 0 || e.first > e.last {
		return nil, false
	}
	if e.last < seq && !isV1Body(e.body) {
		// A version 2 record's cards only grow and what it replaces never
		// changes: the latest record names every card and replaced
		// ceremony named before (after a version 1 record, perhaps fewer:
		// a rollcall of a card it dropped then fails here, and the
		// replay decides).
		st := &cerState{first: e.first}
		if !v.apply(st, e.last, e.body) {
			return nil, false
		}
		return st, true
	}
	return v.loadEvents(hexID, seq)
}

// ceremonyBody returns the body of ceremony event seq of ceremony id, or
// nil.
func (v *streamVerifier) ceremonyBody(id string, seq uint64) []byte {
	val, err := v.get(bucketEvents, seqKey(seq))
	if err != nil || len(val) <= len(Hash{}) {
		return nil
	}
	typ, cer, body, ok := peekRecord(val[len(Hash{}):])
	if !ok || string(typ) != TypeCeremony || string(cer) != id {
		return nil
	}
	return body
}

// apply makes st what the ceremony event seq with body says, adding its
// cards and what it replaces to those named before.
func (v *streamVerifier) apply(st *cerState, seq uint64, body []byte) bool {
	status, rec, err := parseCeremonyBody(body)
	if err != nil {
		return false
	}
	si, ok := statusIndex(status)
	if !ok {
		return false
	}
	st.status, st.last = si, seq
	st.volume, st.replaces, st.set = rec.Volume, rec.Replaces, rec.Set != nil
	for _, c := range cardsIndexed(rec) {
		cs := v.cards[c.Serial]
		if cs == nil {
			return false
		}
		if !st.hasCard(cs.idx) {
			st.addCard(cs.idx)
		}
	}
	if r := st.replaces; r != ([16]byte{}) && !st.hasNamed(r) {
		st.addNamed(r)
	}
	return true
}

// loadEvents reads a ceremony's state before event seq from its ceremony
// events, through the ceremony-events index.
func (v *streamVerifier) loadEvents(id string, seq uint64) (*cerState, bool) {
	prefix := append([]byte(id), 0)
	type found struct {
		seq  uint64
		body []byte
	}
	// Each ceremony event of id, in order, through fn; stop when fn says.
	walk := func(desc bool, fn func(found) bool) bool {
		good := true
		err := v.scanRange(bucketCeremonyEvents, prefix, ceremonyEventKey(id, seq), desc, func(k, _ []byte) error {
			if len(k) != len(prefix)+8 {
				good = false
				return errStop
			}
			s, _ := keySeq(k[len(prefix):])
			val, err := v.get(bucketEvents, seqKey(s))
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
	st := &cerState{first: first.seq}
	good := true
	add := func(f found) bool {
		good = good && v.apply(st, f.seq, f.body)
		return good
	}
	var ok bool
	if isV1Body(first.body) {
		// Version 1 records may drop a card or change what they replace:
		// every record counts.
		ok = walk(false, add)
	} else {
		// From a version 2 first record on, cards only grow and replaces
		// never changes: the latest record says it all.
		ok = walk(true, func(f found) bool { add(f); return false })
	}
	if !ok || !good || st.last == 0 {
		return nil, false
	}
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
	// ceremony-events: id 0x00 seq -> empty
	if v.scanAll(bucketCeremonyEvents, func(k, val []byte) error {
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
	if v.scanAll(bucketCeremonies, func(k, val []byte) error {
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
	if v.scanAll(bucketVolumes, func(k, val []byte) error {
		var vol VolumeRecord
		if json.Unmarshal(val, &vol) != nil || !bytes.Equal(mustJSON(vol), val) || vol.UUID != string(k) {
			good = false
			return errStop
		}
		var prev uint64
		current := ""
		for _, id := range vol.History {
			raw, err := v.get(bucketCeremonies, []byte(id))
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
	if v.scanAll(bucketCards, func(k, val []byte) error {
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
	if v.scanAll(bucketFingerprints, func(k, val []byte) error {
		if v.fps[string(k)] != string(val) {
			good = false
			return errStop
		}
		n++
		return nil
	}) != nil || !good || n != len(v.fps) {
		return false
	}
	if !v.sets.checkStored(v.r, v.d) {
		return false
	}
	// log: the record version flag.
	n = 0
	if v.scanAll(bucketLogState, func(k, val []byte) error {
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
	val, err := v.get(bucketEvents, seqKey(e.last))
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
	err := v.scanRange(bucketCeremonyEvents, prefix, prefixEnd(prefix), false, func(k, _ []byte) error {
		s, _ := keySeq(k[len(prefix):])
		val, err := v.get(bucketEvents, seqKey(s))
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
