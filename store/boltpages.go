package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"hash/fnv"
	"math/bits"
	"os"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// boltPages reads a bbolt file's pages itself, for the streaming
// verification: it walks each bucket's tree in key order, yielding the
// keys and values of its leaves, and checks on the way what bbolt's own
// Tx.Check checks (every page referenced once, below the high water mark,
// of a branch or leaf type, not free; the keys of each page in order and
// within the bounds of its parent; the freelist without duplicates; every
// page reachable or free), with a bitmap of the pages seen where Check
// keeps a map of them. Anything it does not find exactly as bbolt writes
// it makes it stop (ok false): the verification then falls back to the
// replay, which runs bbolt's Check and names the problem in its words. It
// also looks keys up (get, scanRange) for the verification's other reads.
//
// It reads with pread through its own descriptor of the file, checked to
// be the file bbolt has mapped (its device and inode), and never through
// the mapping: a read fault on a mapped file maps the page cache's pages
// around it too (64 KiB), which would make the resident set grow with the
// file, and the tree's pages follow the keys, not the file (a leaf is
// rewritten elsewhere by each transaction that appends to it). The pages
// of a transaction's tree do not change while it is open. A run of pages
// read in file order is read ahead, up to 256 KiB at a time.
//
// The layout (go.etcd.io/bbolt, file format version 2, the machine's
// byte order): a page starts with id u64, flags u16, count u16, overflow
// u32; a branch element is pos u32, ksize u32, pgid u64; a leaf element
// flags u32, pos u32, ksize u32, vsize u32, pos counted from the
// element; a meta page holds magic, version, page size, flags, the root
// bucket (root u64, sequence u64), freelist, pgid (the high water mark),
// txid and an FNV-64a checksum of the fields before it; a bucket's value
// is its root page and sequence, followed by the bucket's page itself
// when root is 0 (an inline bucket).
type boltPages struct {
	f        *os.File
	psz      uint64
	hwm      uint64
	root     uint64
	freelist uint64

	reach, free bitset
	buckets     map[string][]byte // the root's buckets: name -> value
	scanned     map[string]bool   // the buckets walked so far

	// The walk's reads (one goroutine at a time): the pages read ahead,
	// and a copy of the branch page at each depth.
	ra     readahead
	levels [][]byte

	// Lookups (one goroutine at a time): the branch pages read last, and
	// a buffer for each kind of read.
	branches        map[uint64][]byte
	getBuf, scanBuf []byte
}

const (
	pageHeader   = 16
	elementSize  = 16
	branchFlag   = 0x01
	leafFlag     = 0x02
	metaFlag     = 0x04
	freelistFlag = 0x10
	bucketFlag   = 0x01
	boltMagic    = 0xED0CDAED
	boltVersion  = 2
	noFreelist   = 1<<64 - 1

	readAheadPages = 64
	branchCache    = 256
	lookupPages    = 4
)

var ne = binary.NativeEndian

type bitset []uint64

func newBitset(n uint64) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) has(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) set(i uint64)      { b[i/64] |= 1 << (i % 64) }

// newBoltPages opens the file of btx (a read transaction), finds the meta
// page of btx and reads the freelist and the root's buckets; ok false
// when anything is not as bbolt writes it, or the file opened is not the
// one bbolt has mapped.
func newBoltPages(btx *bolt.Tx) (p *boltPages, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
		if !ok && p != nil {
			p.close()
			p = nil
		}
	}()
	db := btx.DB()
	info := db.Info()
	p = &boltPages{psz: uint64(info.PageSize)}
	if !p.open(db.Path(), info.Data) {
		return p, false
	}
	fi, err := p.f.Stat()
	if err != nil || info.PageSize < 1024 || btx.Size() <= 0 || btx.Size() > fi.Size() {
		return p, false
	}
	p.hwm = uint64(btx.Size()) / p.psz
	if p.hwm < 4 {
		return p, false
	}
	p.ra = readahead{f: p.f, psz: p.psz, hwm: p.hwm}
	// The meta page of this transaction: the one with its txid.
	found := false
	meta := make([]byte, p.psz)
	for id := uint64(0); id < 2; id++ {
		if n, _ := p.f.ReadAt(meta, int64(id*p.psz)); n != len(meta) {
			return p, false
		}
		if ne.Uint64(meta) != id || ne.Uint16(meta[8:]) != metaFlag {
			return p, false
		}
		m := meta[pageHeader:]
		h := fnv.New64a()
		h.Write(m[:56])
		if ne.Uint32(m) != boltMagic || ne.Uint32(m[4:]) != boltVersion || uint64(ne.Uint32(m[8:])) != p.psz || ne.Uint64(m[56:]) != h.Sum64() {
			continue
		}
		if ne.Uint64(m[48:]) != uint64(btx.ID()) {
			continue
		}
		if ne.Uint64(m[40:]) != p.hwm {
			return p, false
		}
		p.root, p.freelist = ne.Uint64(m[16:]), ne.Uint64(m[32:])
		found = true
	}
	if !found || p.root < 2 || p.root >= p.hwm || p.freelist == noFreelist || p.freelist < 2 || p.freelist >= p.hwm {
		return p, false
	}
	p.reach, p.free = newBitset(p.hwm), newBitset(p.hwm)
	p.scanned = map[string]bool{}
	p.branches = map[uint64][]byte{}
	p.reach.set(0)
	p.reach.set(1)
	// The freelist page and its overflow, then the pages it lists.
	fl, ok := p.ra.span(p.freelist)
	if !ok || ne.Uint16(fl[8:]) != freelistFlag {
		return p, false
	}
	for i := uint64(0); i <= uint64(ne.Uint32(fl[12:])); i++ {
		p.reach.set(p.freelist + i)
	}
	idx, count := uint64(0), uint64(ne.Uint16(fl[10:]))
	if count == 0xFFFF {
		idx, count = 1, ne.Uint64(fl[pageHeader:])
	}
	if count > (uint64(len(fl))-pageHeader)/8 || (idx+count)*8 > uint64(len(fl))-pageHeader {
		return p, false
	}
	for i := idx; i < idx+count; i++ {
		id := ne.Uint64(fl[pageHeader+8*i:])
		if id >= p.hwm || p.free.has(id) { // beyond the file, or freed twice
			return p, false
		}
		p.free.set(id)
	}
	// The root bucket's tree: the buckets, by name.
	p.buckets = map[string][]byte{}
	if _, ok := p.walk(p.root, nil, nil, 0, func(k, v []byte, flags uint32) bool {
		p.buckets[string(k)] = bytes.Clone(v)
		return flags&bucketFlag != 0 // the root holds buckets only
	}); !ok {
		return p, false
	}
	return p, true
}

// open opens the log's file, and makes sure it is the file bbolt has
// mapped (the device and inode of the mapping at base, in
// /proc/self/maps).
func (p *boltPages) open(path string, base uintptr) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	p.f = f
	var st unix.Stat_t
	return unix.Fstat(int(f.Fd()), &st) == nil && mappedFile(base, unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
}

// mappedFile reports whether the mapping starting at base maps the file
// with that device and inode.
func mappedFile(base uintptr, major, minor uint32, ino uint64) bool {
	maps, err := os.Open("/proc/self/maps")
	if err != nil {
		return false
	}
	defer maps.Close()
	start := strconv.FormatUint(uint64(base), 16) + "-"
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		// start-end perms offset dev inode path
		f := strings.Fields(sc.Text())
		if len(f) < 6 || !strings.HasPrefix(f[0], start) {
			continue
		}
		maj, mn, ok := strings.Cut(f[3], ":")
		a, err1 := strconv.ParseUint(maj, 16, 32)
		b, err2 := strconv.ParseUint(mn, 16, 32)
		i, err3 := strconv.ParseUint(f[4], 10, 64)
		return ok && err1 == nil && err2 == nil && err3 == nil && uint32(a) == major && uint32(b) == minor && i == ino
	}
	return false
}

func (p *boltPages) close() {
	if p.f != nil {
		p.f.Close()
	}
}

// readahead reads pages with pread, a run of them when the reads follow
// the file's order.
type readahead struct {
	f        *os.File
	psz, hwm uint64
	buf      []byte
	first, n uint64 // the pages in buf
	next     uint64 // the page after the last one asked for
	run      uint64 // how many pages the next read takes
}

// span returns page id with its overflow pages, valid until the next
// call; ok false when it passes the high water mark or is not page id.
func (r *readahead) span(id uint64) ([]byte, bool) {
	if id >= r.hwm {
		return nil, false
	}
	if id < r.first || id >= r.first+r.n {
		if id >= r.next && id < r.next+4 {
			r.run = min(max(1, r.run*2), readAheadPages)
		} else {
			r.run = 1
		}
		if !r.read(id, min(r.run, r.hwm-id)) {
			return nil, false
		}
	}
	off := (id - r.first) * r.psz
	over := uint64(ne.Uint32(r.buf[off+12:]))
	if ne.Uint64(r.buf[off:]) != id || over >= r.hwm-id {
		return nil, false
	}
	if id+over >= r.first+r.n {
		if !r.read(id, over+1) {
			return nil, false
		}
		off = 0
	}
	r.next = id + over + 1
	return r.buf[off : off+(over+1)*r.psz], true
}

func (r *readahead) read(id, n uint64) bool {
	size := n * r.psz
	if uint64(cap(r.buf)) < size {
		r.buf = make([]byte, max(size, readAheadPages*r.psz))
	}
	r.buf = r.buf[:size]
	r.first, r.n = 0, 0
	if got, _ := r.f.ReadAt(r.buf, int64(id*r.psz)); uint64(got) != size {
		return false
	}
	r.first, r.n = id, n
	return true
}

// scan calls fn with each key and value of the root's bucket name, in key
// order, checking its pages; ok false when the bucket is missing, holds
// a nested bucket, was scanned before, or its pages are not as bbolt
// writes them. fn returning an error ends the scan with that error.
func (p *boltPages) scan(name []byte, fn func(k, v []byte) error) (ok bool, err error) {
	defer func() {
		if recover() != nil {
			ok, err = false, nil
		}
	}()
	val, found := p.buckets[string(name)]
	if !found || p.scanned[string(name)] {
		return false, nil // every page is read once
	}
	p.scanned[string(name)] = true
	each := func(k, v []byte, flags uint32) bool {
		if flags&bucketFlag != 0 {
			return false
		}
		if fn != nil {
			if err = fn(k, v); err != nil {
				return false
			}
		}
		return true
	}
	if len(val) < 16 {
		return false, nil
	}
	if root := ne.Uint64(val); root != 0 {
		_, ok = p.walk(root, nil, nil, 0, each)
	} else {
		// An inline bucket: its page follows the bucket header in the
		// value (bbolt's Check does not look inside; its keys are read
		// in order all the same).
		ok = len(val) >= 16+pageHeader && ne.Uint16(val[16+8:]) == leafFlag
		if ok {
			_, ok = walkLeaf(val[16:], int(ne.Uint16(val[16+10:])), nil, nil, each)
		}
	}
	return ok && err == nil, err
}

// finish walks the root's buckets not scanned yet (for their pages) and
// checks that every page below the high water mark was reached or is
// free, and not both.
func (p *boltPages) finish() bool {
	for name := range p.buckets {
		if !p.scanned[name] {
			if ok, _ := p.scan([]byte(name), nil); !ok {
				return false
			}
		}
	}
	var n int
	for i := range p.reach {
		if p.reach[i]&p.free[i] != 0 {
			return false // reachable and free
		}
		n += bits.OnesCount64(p.reach[i]) + bits.OnesCount64(p.free[i])
	}
	return uint64(n) == p.hwm
}

// walk walks the tree at page id depth first, checking each page as
// bbolt's Check does, and calls each for every leaf element in key order;
// it returns the last key of the subtree (valid until the next read).
// min and max bound its keys (min inclusive, max exclusive; nil: none).
func (p *boltPages) walk(id uint64, min, max []byte, depth int, each func(k, v []byte, flags uint32) bool) ([]byte, bool) {
	if depth > 64 || id < 2 {
		return nil, false
	}
	pg, ok := p.ra.span(id)
	if !ok {
		return nil, false
	}
	for i := id; i < id+uint64(len(pg))/p.psz; i++ {
		if p.reach.has(i) || p.free.has(i) {
			return nil, false // referenced twice, or reachable and free
		}
		p.reach.set(i)
	}
	if ne.Uint16(pg[8:]) == branchFlag {
		// Its children are read into the same buffer: keep a copy.
		for len(p.levels) <= depth {
			p.levels = append(p.levels, nil)
		}
		p.levels[depth] = append(p.levels[depth][:0], pg...)
		pg = p.levels[depth]
	}
	flags, count := ne.Uint16(pg[8:]), int(ne.Uint16(pg[10:]))
	if pageHeader+count*elementSize > len(pg) {
		return nil, false
	}
	switch flags {
	case branchFlag:
		if count == 0 {
			return nil, false
		}
		key := func(i int) ([]byte, bool) {
			at := pageHeader + i*elementSize
			return elemBytes(pg, at, ne.Uint32(pg[at:]), uint64(ne.Uint32(pg[at+4:])))
		}
		prev, last := min, []byte(nil)
		k, ok := key(0)
		for i := 0; i < count; i++ {
			if !ok || !keyInOrder(i, k, prev, max) {
				return nil, false
			}
			next := max
			if i < count-1 {
				if next, ok = key(i + 1); !ok {
					return nil, false
				}
			}
			if last, ok = p.walk(ne.Uint64(pg[pageHeader+i*elementSize+8:]), k, next, depth+1, each); !ok {
				return nil, false
			}
			prev, k, ok = last, next, true
		}
		return last, true
	case leafFlag:
		return walkLeaf(pg, count, min, max, each)
	}
	return nil, false
}

// walkLeaf reads the elements of a leaf page (or an inline bucket's page)
// in order.
func walkLeaf(pg []byte, count int, min, max []byte, each func(k, v []byte, flags uint32) bool) ([]byte, bool) {
	if pageHeader+count*elementSize > len(pg) {
		return nil, false
	}
	prev := min
	for i := 0; i < count; i++ {
		at := pageHeader + i*elementSize
		ksize := ne.Uint32(pg[at+8:])
		kv, ok := elemBytes(pg, at, ne.Uint32(pg[at+4:]), uint64(ksize)+uint64(ne.Uint32(pg[at+12:])))
		if !ok {
			return nil, false
		}
		k, v := kv[:ksize], kv[ksize:]
		if !keyInOrder(i, k, prev, max) || !each(k, v, ne.Uint32(pg[at:])) {
			return nil, false
		}
		prev = k
	}
	return prev, true
}

// elemBytes returns n bytes at pos counted from the element at offset at
// of pg; ok false when they do not lie within pg.
func elemBytes(pg []byte, at int, pos uint32, n uint64) ([]byte, bool) {
	start := uint64(at) + uint64(pos)
	end := start + n
	if end > uint64(len(pg)) {
		return nil, false
	}
	return pg[start:end], true
}

// keyInOrder is bbolt's verifyKeyOrder: the first key at least prev (the
// lower bound), each later one above the one before, all below max.
func keyInOrder(i int, k, prev, max []byte) bool {
	if i == 0 && prev != nil && bytes.Compare(prev, k) > 0 {
		return false
	}
	if i > 0 && bytes.Compare(prev, k) >= 0 {
		return false
	}
	return max == nil || bytes.Compare(k, max) < 0
}

// Lookups (a key, or the keys of a range) read the pages on their path
// with pread too, keeping the branch pages read last (at most
// branchCache of them); what a lookup returns is valid until the next.

// node reads page id with its overflow: a branch page from the cache or
// into it, a leaf page into buf.
func (p *boltPages) node(id uint64, buf *[]byte) ([]byte, bool) {
	if pg, ok := p.branches[id]; ok {
		return pg, true
	}
	if id < 2 || id >= p.hwm {
		return nil, false
	}
	// A leaf with a large value spans a few pages: read them at once.
	n := min(lookupPages, p.hwm-id)
	if uint64(cap(*buf)) < n*p.psz {
		*buf = make([]byte, n*p.psz)
	}
	pg := (*buf)[:n*p.psz]
	if got, _ := p.f.ReadAt(pg, int64(id*p.psz)); got != len(pg) {
		return nil, false
	}
	over := uint64(ne.Uint32(pg[12:]))
	if ne.Uint64(pg) != id || over >= p.hwm-id {
		return nil, false
	}
	if size := (over + 1) * p.psz; size > uint64(len(pg)) {
		if uint64(cap(*buf)) < size {
			*buf = make([]byte, size)
		}
		pg = (*buf)[:size]
		if got, _ := p.f.ReadAt(pg, int64(id*p.psz)); got != len(pg) {
			return nil, false
		}
	} else {
		pg = pg[:size]
	}
	if ne.Uint16(pg[8:]) == branchFlag {
		if len(p.branches) >= branchCache {
			clear(p.branches)
		}
		pg = bytes.Clone(pg)
		p.branches[id] = pg
	}
	return pg, true
}

// elements returns the count of a page's elements, checking they fit.
func elements(pg []byte) (int, bool) {
	n := int(ne.Uint16(pg[10:]))
	return n, pageHeader+n*elementSize <= len(pg)
}

func branchKey(pg []byte, i int) ([]byte, bool) {
	at := pageHeader + i*elementSize
	return elemBytes(pg, at, ne.Uint32(pg[at:]), uint64(ne.Uint32(pg[at+4:])))
}

func leafKV(pg []byte, i int) (k, v []byte, flags uint32, ok bool) {
	at := pageHeader + i*elementSize
	ksize := ne.Uint32(pg[at+8:])
	kv, ok := elemBytes(pg, at, ne.Uint32(pg[at+4:]), uint64(ksize)+uint64(ne.Uint32(pg[at+12:])))
	if !ok {
		return nil, nil, 0, false
	}
	return kv[:ksize], kv[ksize:], ne.Uint32(pg[at:]), true
}

// leafFor descends from the bucket's root to the leaf that holds key or
// would: at each branch the last element whose key is at most key (the
// first when none is).
func (p *boltPages) leafFor(bucket, key []byte, buf *[]byte) ([]byte, bool) {
	val, ok := p.buckets[string(bucket)]
	if !ok || len(val) < 16 {
		return nil, false
	}
	id := ne.Uint64(val)
	if id == 0 {
		pg := val[16:]
		return pg, len(pg) >= pageHeader && ne.Uint16(pg[8:]) == leafFlag
	}
	for depth := 0; depth < 64; depth++ {
		pg, ok := p.node(id, buf)
		if !ok {
			return nil, false
		}
		n, ok := elements(pg)
		if !ok || n == 0 {
			return nil, false
		}
		switch ne.Uint16(pg[8:]) {
		case leafFlag:
			return pg, true
		case branchFlag:
			i := 0
			for j := 1; j < n; j++ { // a branch holds a few hundred keys at most
				k, ok := branchKey(pg, j)
				if !ok {
					return nil, false
				}
				if bytes.Compare(k, key) > 0 {
					break
				}
				i = j
			}
			id = ne.Uint64(pg[pageHeader+i*elementSize+8:])
		default:
			return nil, false
		}
	}
	return nil, false
}

// get returns the value of key in bucket, nil when there is none.
func (p *boltPages) get(bucket, key []byte) (val []byte, ok bool) {
	defer func() {
		if recover() != nil {
			val, ok = nil, false
		}
	}()
	pg, ok := p.leafFor(bucket, key, &p.getBuf)
	if !ok {
		return nil, false
	}
	n, ok := elements(pg)
	if !ok {
		return nil, false
	}
	lo, hi := 0, n
	for lo < hi {
		m := (lo + hi) / 2
		k, _, _, ok := leafKV(pg, m)
		if !ok {
			return nil, false
		}
		if bytes.Compare(k, key) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == n {
		return nil, true
	}
	k, v, flags, ok := leafKV(pg, lo)
	if !ok || flags&bucketFlag != 0 {
		return nil, false
	}
	if !bytes.Equal(k, key) {
		return nil, true
	}
	return v, true
}

// scanRange calls fn for each key of bucket in [from, to) (from nil: the
// first; to nil: to the last), in increasing order or, desc, decreasing;
// the leaf it reads is its own, so fn may call get. fn returning an
// error ends the scan with it (errStop: without error).
func (p *boltPages) scanRange(bucket, from, to []byte, desc bool, fn func(k, v []byte) error) (err error) {
	defer func() {
		if recover() != nil {
			err = errNotSound
		}
	}()
	val, ok := p.buckets[string(bucket)]
	if !ok || len(val) < 16 {
		return errNotSound
	}
	var stop bool
	if id := ne.Uint64(val); id != 0 {
		stop, err = p.scanNode(id, from, to, desc, 0, fn)
	} else {
		pg := val[16:]
		if len(pg) < pageHeader || ne.Uint16(pg[8:]) != leafFlag {
			return errNotSound
		}
		stop, err = scanLeaf(pg, from, to, desc, fn)
	}
	_ = stop
	if err == errStop {
		err = nil
	}
	return err
}

// scanNode scans the subtree at page id; stop says the range has ended.
func (p *boltPages) scanNode(id uint64, from, to []byte, desc bool, depth int, fn func(k, v []byte) error) (stop bool, err error) {
	if depth > 64 {
		return true, errNotSound
	}
	pg, ok := p.node(id, &p.scanBuf)
	if !ok {
		return true, errNotSound
	}
	n, ok := elements(pg)
	if !ok {
		return true, errNotSound
	}
	switch ne.Uint16(pg[8:]) {
	case leafFlag:
		return scanLeaf(pg, from, to, desc, fn)
	case branchFlag:
		// Child i holds the keys in [key i, key i+1).
		key := func(i int) []byte {
			k, ok := branchKey(pg, i)
			if !ok {
				panic(errNotSound) // recovered by scanRange
			}
			return k
		}
		child := func(i int) uint64 { return ne.Uint64(pg[pageHeader+i*elementSize+8:]) }
		if !desc {
			i := 0
			for from != nil && i+1 < n && bytes.Compare(key(i+1), from) <= 0 {
				i++
			}
			for ; i < n; i++ {
				if to != nil && bytes.Compare(key(i), to) >= 0 {
					return true, nil
				}
				if stop, err := p.scanNode(child(i), from, to, desc, depth+1, fn); stop || err != nil {
					return stop, err
				}
			}
			return false, nil
		}
		i := n - 1
		for to != nil && i > 0 && bytes.Compare(key(i), to) >= 0 {
			i--
		}
		for ; i >= 0; i-- {
			if from != nil && i+1 < n && bytes.Compare(key(i+1), from) <= 0 {
				return true, nil
			}
			if stop, err := p.scanNode(child(i), from, to, desc, depth+1, fn); stop || err != nil {
				return stop, err
			}
		}
		return false, nil
	}
	return true, errNotSound
}

// scanLeaf scans a leaf page's elements in the range.
func scanLeaf(pg []byte, from, to []byte, desc bool, fn func(k, v []byte) error) (bool, error) {
	n, ok := elements(pg)
	if !ok {
		return true, errNotSound
	}
	for j := 0; j < n; j++ {
		i := j
		if desc {
			i = n - 1 - j
		}
		k, v, flags, ok := leafKV(pg, i)
		if !ok || flags&bucketFlag != 0 {
			return true, errNotSound
		}
		below := from != nil && bytes.Compare(k, from) < 0
		above := to != nil && bytes.Compare(k, to) >= 0
		switch {
		case below && desc, above && !desc:
			return true, nil
		case below, above:
			continue
		}
		if err := fn(k, v); err != nil {
			return true, err
		}
	}
	return false, nil
}
