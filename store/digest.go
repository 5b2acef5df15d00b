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

type digester struct{ block cipher.Block }

func newDigester() *digester {
	var key [16]byte
	if _, err := rand.Read(key[:]); err != nil {
		panic("store: no randomness for verification: " + err.Error())
	}
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err)
	}
	return &digester{block: b}
}

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
	var st, blk [16]byte
	total := 0
	for _, p := range parts {
		total += 4 + len(p)
	}
	binary.BigEndian.PutUint64(blk[8:], uint64(total))
	xorInto(&st, blk[:])
	d.block.Encrypt(st[:], st[:])
	n := 0 // bytes in blk
	put := func(b []byte) {
		for len(b) > 0 {
			m := copy(blk[n:], b)
			n += m
			b = b[m:]
			if n == 16 {
				xorInto(&st, blk[:])
				d.block.Encrypt(st[:], st[:])
				n = 0
			}
		}
	}
	var l [4]byte
	for _, p := range parts {
		binary.BigEndian.PutUint32(l[:], uint32(len(p)))
		put(l[:])
		put(p)
	}
	if n > 0 {
		clear(blk[n:])
		xorInto(&st, blk[:])
		d.block.Encrypt(st[:], st[:])
	}
	return st
}

func xorInto(dst *[16]byte, b []byte) {
	for i := range dst {
		dst[i] ^= b[i]
	}
}
