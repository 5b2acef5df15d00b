package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"math/bits"
)

// A multiset digest lets Verify check that two collections of entries are
// equal when it reads one in event order and the other in key order,
// holding neither: each side adds prf(entry) for each of its entries into
// a sum modulo 2^128 (and may subtract an entry it replaces), and the
// sums are compared at the end. prf is CBC-MAC under AES with a key drawn
// anew for each verification and the message's length as its first
// block, a pseudorandom function on messages of any length: someone who
// writes the log cannot know the key, so cannot choose entries whose sums
// agree while the entries differ (the chance is 2^-128 per comparison).

// A digester computes prf; it keeps its scratch state, so each goroutine
// has its own (clone), all under the same key.
type digester struct {
	block cipher.Block
	m     cbcMAC
}

func newDigester() *digester {
	var key [16]byte
	if _, err := rand.Read(key[:]); err != nil {
		panic("store: no randomness for verification: " + err.Error())
	}
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err)
	}
	return &digester{block: b, m: cbcMAC{b: b}}
}

// clone returns a digester with the same key for another goroutine.
func (d *digester) clone() *digester { return &digester{block: d.block, m: cbcMAC{b: d.block}} }

// sum128 is a running sum modulo 2^128 and a count.
type sum128 struct {
	hi, lo uint64
	n      int64
}

func (s *sum128) add(v [16]byte) {
	var c uint64
	s.lo, c = bits.Add64(s.lo, binary.BigEndian.Uint64(v[8:]), 0)
	s.hi, _ = bits.Add64(s.hi, binary.BigEndian.Uint64(v[:8]), c)
	s.n++
}

func (s *sum128) sub(v [16]byte) {
	var b uint64
	s.lo, b = bits.Sub64(s.lo, binary.BigEndian.Uint64(v[8:]), 0)
	s.hi, _ = bits.Sub64(s.hi, binary.BigEndian.Uint64(v[:8]), b)
	s.n--
}

// prf returns CBC-MAC of the parts, joined with each part's length before
// it (so that no two lists of parts give the same message).
func (d *digester) prf(parts ...[]byte) [16]byte {
	total := 0
	for _, p := range parts {
		total += 4 + len(p)
	}
	m := &d.m
	m.st, m.n = [16]byte{}, 0
	clear(m.buf[:8])
	binary.BigEndian.PutUint64(m.buf[8:], uint64(total))
	m.block(&m.buf)
	var l [4]byte
	for _, p := range parts {
		binary.BigEndian.PutUint32(l[:], uint32(len(p)))
		m.write(l[:])
		m.write(p)
	}
	return m.sum()
}

// cbcMAC is CBC-MAC in progress: st the chaining value, the first n bytes
// of buf a block not yet full.
type cbcMAC struct {
	b   cipher.Block
	st  [16]byte
	buf [16]byte
	n   int
}

// block chains one full block.
func (m *cbcMAC) block(blk *[16]byte) {
	hi := binary.LittleEndian.Uint64(m.st[:8]) ^ binary.LittleEndian.Uint64(blk[:8])
	lo := binary.LittleEndian.Uint64(m.st[8:]) ^ binary.LittleEndian.Uint64(blk[8:])
	binary.LittleEndian.PutUint64(m.st[:8], hi)
	binary.LittleEndian.PutUint64(m.st[8:], lo)
	m.b.Encrypt(m.st[:], m.st[:])
}

func (m *cbcMAC) write(p []byte) {
	if m.n > 0 {
		c := copy(m.buf[m.n:], p)
		m.n += c
		p = p[c:]
		if m.n < 16 {
			return
		}
		m.block(&m.buf)
		m.n = 0
	}
	for len(p) >= 16 {
		m.block((*[16]byte)(p[:16]))
		p = p[16:]
	}
	m.n = copy(m.buf[:], p)
}

// sum chains the last block, padded with zeros.
func (m *cbcMAC) sum() [16]byte {
	if m.n > 0 {
		clear(m.buf[m.n:])
		m.block(&m.buf)
	}
	return m.st
}
