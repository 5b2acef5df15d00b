package store

import (
	"bytes"
	"encoding/binary"
	"hash/fnv"
	"math/bits"
	"os"
	"sync/atomic"
	"unsafe"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// boltPages reads a bbolt file's pages in place, for the streaming
// verification: it walks each bucket's tree in key order, yielding the
// keys and values of its leaves, and checks on the way what bbolt's own
// Tx.Check checks (every page referenced once, below the high water mark,
// of a branch or leaf type, not free; the keys of each page in order and
// within the bounds of its parent; the freelist without duplicates; every
// page reachable or free), with a bitmap of the pages seen where Check
// keeps a map of them. Anything it does not find exactly as bbolt writes
// it makes it stop (ok false): the verification then falls back to the
// replay, which runs bbolt's Check and names the problem in its words.
//
// It reads through bbolt's own read-only mapping of the file, which stays
// put while the read transaction is open, and drops the pages it has
// touched from the process's resident set every releaseEvery bytes
// (madvise MADV_DONTNEED: a shared mapping of a file keeps its data in the
// page cache, and a later read maps it again), so that the resident set
// does not grow with the file.
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
	data     []byte // the mapping, hwm pages long
	psz      uint64
	hwm      uint64
	root     uint64
	freelist uint64

	reach, free bitset
	buckets     map[string][]byte // the root's buckets: name -> value
	scanned     map[string]bool   // the buckets walked so far

	touched atomic.Int64 // bytes mapped since the last release, at most
	window  uint64       // the fault-around window walk read last, plus one
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

	// A read fault on a file mapping maps the pages of the page cache
	// around it too, in an aligned window of fault_around_bytes (64 KiB
	// unless an administrator changed it): a page read costs the resident
	// set up to that much.
	faultAround  = 64 << 10
	releaseEvery = 8 << 20
)

var ne = binary.NativeEndian

type bitset []uint64

func newBitset(n uint64) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) has(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) set(i uint64)      { b[i/64] |= 1 << (i % 64) }

// newBoltPages finds the meta page of btx in bbolt's mapping and reads
// the freelist; ok false when anything is not as bbolt writes it.
func newBoltPages(btx *bolt.Tx) (p *boltPages, ok bool) {
	defer func() {
		if recover() != nil {
			p, ok = nil, false
		}
	}()
	db := btx.DB()
	info := db.Info()
	fi, err := os.Stat(db.Path())
	if err != nil || info.PageSize < 1024 || btx.Size() <= 0 || btx.Size() > fi.Size() {
		return nil, false
	}
	// bbolt maps the whole file read-only and keeps the mapping while a
	// read transaction is open; Info gives its address. Only the first
	// tx.Size() bytes (the transaction's high water mark) are read, and
	// they lie within the file.
	base := *(*unsafe.Pointer)(unsafe.Pointer(&info.Data))
	p = &boltPages{data: unsafe.Slice((*byte)(base), btx.Size()), psz: uint64(info.PageSize)}
	p.hwm = uint64(btx.Size()) / p.psz
	if p.hwm < 4 {
		return nil, false
	}
	// The meta page of this transaction: the one with its txid.
	found := false
	for id := uint64(0); id < 2; id++ {
		pg := p.page(id)
		if ne.Uint64(pg) != id || ne.Uint16(pg[8:]) != metaFlag {
			return nil, false
		}
		m := pg[pageHeader:]
		h := fnv.New64a()
		h.Write(m[:56])
		if ne.Uint32(m) != boltMagic || ne.Uint32(m[4:]) != boltVersion || uint64(ne.Uint32(m[8:])) != p.psz || ne.Uint64(m[56:]) != h.Sum64() {
			continue
		}
		if ne.Uint64(m[48:]) != uint64(btx.ID()) {
			continue
		}
		if ne.Uint64(m[40:]) != p.hwm {
			return nil, false
		}
		p.root, p.freelist = ne.Uint64(m[16:]), ne.Uint64(m[32:])
		found = true
	}
	if !found || p.root < 2 || p.root >= p.hwm || p.freelist == noFreelist || p.freelist < 2 || p.freelist >= p.hwm {
		return nil, false
	}
	p.reach, p.free = newBitset(p.hwm), newBitset(p.hwm)
	p.scanned = map[string]bool{}
	p.reach.set(0)
	p.reach.set(1)
	// The freelist page and its overflow, then the pages it lists.
	fl, ok := p.span(p.freelist)
	if !ok || ne.Uint16(fl[8:]) != freelistFlag {
		return nil, false
	}
	for i := uint64(0); i <= uint64(ne.Uint32(fl[12:])); i++ {
		p.reach.set(p.freelist + i)
	}
	idx, count := uint64(0), uint64(ne.Uint16(fl[10:]))
	if count == 0xFFFF {
		idx, count = 1, ne.Uint64(fl[pageHeader:])
	}
	if count > (uint64(len(fl))-pageHeader)/8 || (idx+count)*8 > uint64(len(fl))-pageHeader {
		return nil, false
	}
	for i := idx; i < idx+count; i++ {
		id := ne.Uint64(fl[pageHeader+8*i:])
		if id >= p.hwm || p.free.has(id) { // beyond the file, or freed twice
			return nil, false
		}
		p.free.set(id)
	}
	p.touchSpan(p.freelist*p.psz, uint64(len(fl)))
	// The root bucket's tree: the buckets, by name.
	p.buckets = map[string][]byte{}
	if _, ok := p.walk(p.root, nil, nil, 0, func(k, v []byte, flags uint32) bool {
		p.buckets[string(k)] = v
		return flags&bucketFlag != 0 // the root holds buckets only
	}); !ok {
		return nil, false
	}
	return p, true
}

// page returns page id's first page (its header and what follows).
func (p *boltPages) page(id uint64) []byte {
	off := id * p.psz
	return p.data[off : off+p.psz]
}

// span returns page id with its overflow pages; ok false when it passes
// the high water mark or is not page id.
func (p *boltPages) span(id uint64) ([]byte, bool) {
	if id >= p.hwm {
		return nil, false
	}
	pg := p.page(id)
	over := uint64(ne.Uint32(pg[12:]))
	if ne.Uint64(pg) != id || over >= p.hwm-id {
		return nil, false
	}
	off := id * p.psz
	return p.data[off : off+(over+1)*p.psz], true
}

// touch counts a read of n bytes at an unknown place: a window.
func (p *boltPages) touch(n uint64) {
	if p.touched.Add(int64(n+faultAround)) >= releaseEvery {
		p.release()
	}
}

// touchSpan counts a read of the pages at off, n bytes long: the windows
// it enters (walk's reads of neighbouring pages share theirs).
func (p *boltPages) touchSpan(off, n uint64) {
	first, last := off/faultAround, (off+n-1)/faultAround
	windows := last - first + 1
	if p.window == first+1 {
		windows--
	}
	p.window = last + 1
	if p.touched.Add(int64(windows*faultAround)) >= releaseEvery {
		p.release()
	}
}

// release drops the mapping's pages from the resident set.
func (p *boltPages) release() {
	p.touched.Store(0)
	unix.Madvise(p.data, unix.MADV_DONTNEED)
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
// it returns the last key of the subtree. min and max bound its keys (min
// inclusive, max exclusive; nil: none).
func (p *boltPages) walk(id uint64, min, max []byte, depth int, each func(k, v []byte, flags uint32) bool) ([]byte, bool) {
	if depth > 64 || id < 2 {
		return nil, false
	}
	pg, ok := p.span(id)
	if !ok {
		return nil, false
	}
	for i := id; i < id+uint64(len(pg))/p.psz; i++ {
		if p.reach.has(i) || p.free.has(i) {
			return nil, false // referenced twice, or reachable and free
		}
		p.reach.set(i)
	}
	p.touchSpan(id*p.psz, uint64(len(pg)))
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
