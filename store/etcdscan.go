package store

import (
	"fmt"
	"math/big"
)

// A scan on etcd reads a bucket in pages, each a range request with a
// limit. etcd (3.4 and 3.5 alike) walks every key between a request's key
// and range_end before it applies the limit: it gathers them all for the
// reply's count. A scan that asked for each page up to the bucket's end
// cost the server the square of the bucket's keys over the page size (a
// copy of a 100,000-event log: 73 million keys walked to read 1.4
// million). So each page after the first is asked for within a window
// ending where, judging by how densely the last page's keys lay, about a
// page and a quarter of keys end; a window that holds fewer keys than a
// page is read to its end and the next one made wider. The windows are
// measured on keys' names as numbers (keyNumber): any keys at all are
// read in order and whole, dense or sparse; only the cost depends on how
// evenly they lie.

const (
	// pageSize is how many keys a scan asks for at once; pages of larger
	// values hold fewer keys, so a page stays near pageBytes.
	pageSize  = 1000
	pageBytes = 4 << 20
	// windowBytes is how many bytes of a key's name a window measures.
	windowBytes = 24
	// windowMaxGrowth bounds how much wider a window grows after one that
	// held too few keys.
	windowMaxGrowth = 16
)

// etcdScan calls fn with the name (the key without prefix) and value of
// each key in [start, end), every key of which starts with prefix, in
// order, or in reverse order when desc; fetch reads one page. It stops
// without error when fn returns errStop.
func etcdScan(prefix, start, end string, desc bool, fetch func(*etcdRangeRequest) (*etcdRangeResponse, error), fn func(name, v []byte) error) error {
	strip := len(prefix)
	// Small first pages: most scans in a transaction stop after a key or
	// two (the tail check); a long one grows to pageSize at once.
	limit := int64(16)
	var span *big.Int // a window's width as keyNumber; nil while unknown
	// The keys in [start, end) not read yet, as the first reply counted
	// them (reads are at one revision); -1 while unknown. The last page
	// ends the scan without a window after it asking for nothing.
	remaining := int64(-1)
	for start < end {
		lo, hi := start, end
		if span != nil {
			if desc {
				if k, ok := numberKey(prefix, new(big.Int).Sub(keyNumber(hi, prefix), span)); ok && k > lo {
					lo = k
				}
			} else if k, ok := numberKey(prefix, new(big.Int).Add(keyNumber(lo, prefix), span)); ok && k < hi {
				hi = k
			}
		}
		r := &etcdRangeRequest{Key: []byte(lo), RangeEnd: []byte(hi), Limit: limit, Descend: desc}
		resp, err := fetch(r)
		if err != nil {
			return err
		}
		if err := checkPage(r, resp, strip); err != nil {
			return err
		}
		size := 0
		for _, e := range resp.Kvs {
			size += len(e.Value)
			if err := fn(e.Key[strip:], e.Value); err != nil {
				if err == errStop {
					return nil
				}
				return err
			}
		}
		n := len(resp.Kvs)
		if span == nil && resp.Count >= int64(n) {
			remaining = resp.Count
		}
		if remaining >= 0 {
			if remaining -= int64(n); remaining <= 0 {
				return nil
			}
		}
		// Aim the next page at pageBytes.
		next := min(pageSize, limit*8)
		if n > 0 {
			if avg := size / n; avg > 0 {
				next = min(next, int64(max(16, pageBytes/avg)))
			}
		}
		if resp.More && n > 0 {
			// The window holds more keys than the page: go on after its
			// last key, in a window sized by how densely the page's last
			// half of keys lay (the half nearer the next).
			mid, last := string(resp.Kvs[n/2].Key), string(resp.Kvs[n-1].Key)
			if desc {
				end = last
			} else {
				start = last + "\x00"
			}
			span = keysSpan(keyNumber(mid, prefix), keyNumber(last, prefix), n-n/2, next)
		} else {
			// The window is read to its end.
			if lo == start && hi == end {
				return nil
			}
			if desc {
				end = lo
			} else {
				start = hi
			}
			growth := int64(windowMaxGrowth)
			if n > 0 {
				growth = min(growth, max(2, next*5/4/int64(n)))
			}
			span.Mul(span, big.NewInt(growth))
		}
		limit = next
	}
	return nil
}

// checkPage refuses a reply that is not an answer to r: more keys than
// its limit, a key outside [Key, RangeEnd) or of another bucket, or one
// not after the key before it in the order asked. The scan goes on from
// the page's last key; a forged one could send it back or on forever.
func checkPage(r *etcdRangeRequest, resp *etcdRangeResponse, strip int) error {
	if int64(len(resp.Kvs)) > r.Limit {
		return fmt.Errorf("store: etcd answered a range request with %d keys, over its limit of %d", len(resp.Kvs), r.Limit)
	}
	prev := ""
	for i, e := range resp.Kvs {
		k := string(e.Key)
		if k < string(r.Key) || k >= string(r.RangeEnd) || len(k) < strip {
			return fmt.Errorf("store: etcd answered a range request with key %q, outside the range asked for", k)
		}
		if i > 0 && (!r.Descend && k <= prev || r.Descend && k >= prev) {
			return fmt.Errorf("store: etcd answered a range request with key %q out of order", k)
		}
		prev = k
	}
	return nil
}

// keysSpan is the width of a window that should hold about a quarter more
// than want keys, where n keys lay between a and b.
func keysSpan(a, b *big.Int, n int, want int64) *big.Int {
	d := new(big.Int).Sub(b, a)
	d.Abs(d)
	if n > 1 {
		d.Mul(d, big.NewInt(want*5/4))
		d.Quo(d, big.NewInt(int64(n-1)))
	}
	if d.Sign() == 0 {
		d.SetInt64(1)
	}
	return d
}

// keyNumber reads the first windowBytes bytes of key's name after prefix,
// zero-padded, as a number: of two keys in order, the first's number is
// not the greater. A key that does not start with prefix (a bucket's end)
// reads as the number one past the last name.
func keyNumber(key, prefix string) *big.Int {
	var b [windowBytes]byte
	if len(key) < len(prefix) || key[:len(prefix)] != prefix {
		return new(big.Int).Lsh(big.NewInt(1), 8*windowBytes)
	}
	copy(b[:], key[len(prefix):])
	return new(big.Int).SetBytes(b[:])
}

// numberKey is the key of prefix whose name is n in windowBytes bytes;
// ok is false where n is negative or too large for them.
func numberKey(prefix string, n *big.Int) (key string, ok bool) {
	if n.Sign() < 0 || n.BitLen() > 8*windowBytes {
		return "", false
	}
	var b [windowBytes]byte
	n.FillBytes(b[:])
	return prefix + string(b[:]), true
}
