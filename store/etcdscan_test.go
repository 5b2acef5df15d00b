package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// rangeServer answers range requests over a sorted set of keys as etcd
// does: the first Limit keys of [Key, RangeEnd) in the order asked, More
// when there were others, Count all of them. walked adds up the counts:
// the keys etcd walks to answer.
type rangeServer struct {
	keys     []string // sorted
	requests int
	walked   int
}

func (s *rangeServer) fetch(r *etcdRangeRequest) (*etcdRangeResponse, error) {
	s.requests++
	if len(r.RangeEnd) == 0 || string(r.RangeEnd) <= string(r.Key) {
		return nil, fmt.Errorf("range [%q, %q): not a range custos asks for", r.Key, r.RangeEnd)
	}
	lo, _ := slices.BinarySearch(s.keys, string(r.Key))
	hi, _ := slices.BinarySearch(s.keys, string(r.RangeEnd))
	in := slices.Clone(s.keys[lo:hi])
	s.walked += len(in)
	if r.Descend {
		slices.Reverse(in)
	}
	resp := &etcdRangeResponse{Count: int64(len(in))}
	if r.Limit > 0 && len(in) > int(r.Limit) {
		in, resp.More = in[:r.Limit], true
	}
	for _, k := range in {
		resp.Kvs = append(resp.Kvs, etcdPair{Key: []byte(k), Value: []byte("v")})
	}
	return resp, nil
}

const scanPrefix = "log/events/"

func newRangeServer(names []string) *rangeServer {
	s := &rangeServer{}
	for _, n := range names {
		s.keys = append(s.keys, scanPrefix+n)
	}
	// Keys of other buckets on either side, which no scan may read.
	s.keys = append(s.keys, "log/events.", "log/event/z", "log/eventsz", "log/cards/1")
	slices.Sort(s.keys)
	s.keys = slices.Compact(s.keys)
	return s
}

// scanAll runs etcdScan over [from, to) of the bucket (to "" for its end)
// and returns the names read.
func scanAll(t testing.TB, s *rangeServer, from, to string, desc bool) []string {
	t.Helper()
	end := "log/events0"
	if to != "" {
		end = scanPrefix + to
	}
	var got []string
	err := etcdScan(scanPrefix, scanPrefix+from, end, desc, s.fetch, func(name, v []byte) error {
		if string(v) != "v" {
			t.Fatalf("value %q", v)
		}
		got = append(got, string(name))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// wantNames is what a scan of [from, to) must read.
func wantNames(names []string, from, to string, desc bool) []string {
	var want []string
	for _, n := range names {
		if n >= from && (to == "" || n < to) {
			want = append(want, n)
		}
	}
	slices.Sort(want)
	want = slices.Compact(want)
	if desc {
		slices.Reverse(want)
	}
	return want
}

func seqNames(from, to uint64) []string {
	var names []string
	for i := from; i < to; i++ {
		names = append(names, string(seqKey(i)))
	}
	return names
}

// A scan reads every key of its range once, in order, whatever the keys:
// and it walks each of a dense bucket's keys about twice, not once per
// page that follows it.
func TestEtcdScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n, maxLen int) []string {
		var names []string
		for range n {
			b := make([]byte, 1+rng.IntN(maxLen))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			names = append(names, string(b))
		}
		return names
	}
	var ceremonyEvents []string // "<id>\x00<seq>", as bucketCeremonyEvents
	for c := range 300 {
		id := fmt.Sprintf("ceremony-%08d-0000-4000-8000-000000000000", c*7919%300)
		for s := range 1 + c%40 {
			ceremonyEvents = append(ceremonyEvents, id+"\x00"+string(seqKey(uint64(c*100+s))))
		}
	}
	gap := append(seqNames(1, 3000), string(seqKey(1<<60)), string(seqKey(1<<60+1)), "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
	for _, c := range []struct {
		name  string
		names []string
		// walkedPerKey bounds the keys walked per key read, for a scan of
		// the whole bucket (the first page walks them all once).
		walkedPerKey float64
	}{
		{"empty", nil, 0},
		{"one key", []string{"a"}, 1},
		{"dense events", seqNames(1, 20_001), 2.5},
		{"ceremony events", ceremonyEvents, 3},
		{"random names", random(5000, 40), 3},
		{"a gap of 2^60", gap, 3},
		{"names sharing 30 bytes", func() []string {
			var names []string
			for i := range 3000 {
				names = append(names, strings.Repeat("x", 30)+fmt.Sprint(i))
			}
			return names
		}(), 0}, // windows cannot tell them apart: only order is checked
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, desc := range []bool{false, true} {
				s := newRangeServer(c.names)
				got := scanAll(t, s, "", "", desc)
				if want := wantNames(c.names, "", "", desc); !slices.Equal(got, want) {
					t.Fatalf("desc=%v: read %d names, want %d (first difference at %d)", desc, len(got), len(want), firstDifference(got, want))
				}
				if c.walkedPerKey > 0 && float64(s.walked) > c.walkedPerKey*float64(len(got))+64 {
					t.Errorf("desc=%v: %d keys walked in %d requests to read %d", desc, s.walked, s.requests, len(got))
				}
				t.Logf("desc=%v: %d keys read, %d walked, %d requests", desc, len(got), s.walked, s.requests)
			}
			// Bounded scans, from and to names that are and are not keys.
			for range 20 {
				var from, to string
				if len(c.names) > 0 {
					from = c.names[rng.IntN(len(c.names))]
					to = c.names[rng.IntN(len(c.names))] + "\x00"
					if rng.IntN(2) == 0 {
						from = from[:len(from)/2]
					}
					if from > to {
						from, to = to, from
					}
				}
				if from == to {
					continue
				}
				for _, desc := range []bool{false, true} {
					got := scanAll(t, newRangeServer(c.names), from, to, desc)
					if want := wantNames(c.names, from, to, desc); !slices.Equal(got, want) {
						t.Fatalf("[%q, %q) desc=%v: read %d names, want %d", from, to, desc, len(got), len(want))
					}
				}
			}
		})
	}
}

// A dense bucket read with one range end per page, as scans were before
// the windows, walks many times more keys: the check above would fail.
func TestEtcdScanWithoutWindowsWalksMore(t *testing.T) {
	s := newRangeServer(seqNames(1, 20_001))
	start, end := scanPrefix, "log/events0"
	for limit := int64(16); ; limit = min(pageSize, limit*8) {
		resp, err := s.fetch(&etcdRangeRequest{Key: []byte(start), RangeEnd: []byte(end), Limit: limit})
		if err != nil {
			t.Fatal(err)
		}
		if !resp.More {
			break
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if s.walked < 8*20_000 {
		t.Fatalf("one range end per page walked %d keys to read 20,000: the windows' bound would not tell", s.walked)
	}
}

// A scan stops when fn says so, and passes fn's other errors and fetch's
// on.
func TestEtcdScanStops(t *testing.T) {
	s := newRangeServer(seqNames(1, 5000))
	n := 0
	err := etcdScan(scanPrefix, scanPrefix, "log/events0", false, s.fetch, func(name, _ []byte) error {
		if n++; n == 1500 {
			return errStop
		}
		return nil
	})
	if err != nil || n != 1500 {
		t.Fatalf("stopped after %d keys: %v", n, err)
	}
	boom := errors.New("boom")
	err = etcdScan(scanPrefix, scanPrefix, "log/events0", true, s.fetch, func(name, _ []byte) error { return boom })
	if err != boom {
		t.Fatalf("fn's error: %v", err)
	}
	err = etcdScan(scanPrefix, scanPrefix, "log/events0", false, func(*etcdRangeRequest) (*etcdRangeResponse, error) { return nil, boom }, func(name, _ []byte) error { return nil })
	if err != boom {
		t.Fatalf("fetch's error: %v", err)
	}
}

// A reply that does not answer the request (a forged or broken member's)
// ends the scan with an error: a key before the page or past its range,
// keys out of order or repeated, more than the limit. Going on from such
// a page's last key could send the scan back, or on forever.
func TestEtcdScanRefusesStrayReplies(t *testing.T) {
	for _, c := range []struct {
		name   string
		forge  func(r *etcdRangeRequest, resp *etcdRangeResponse)
		errSub string
	}{
		{"a key before the range", func(r *etcdRangeRequest, resp *etcdRangeResponse) {
			resp.Kvs[len(resp.Kvs)-1].Key = []byte(scanPrefix + "\x00")
		}, "outside the range"},
		{"a key past the range", func(r *etcdRangeRequest, resp *etcdRangeResponse) {
			resp.Kvs[len(resp.Kvs)-1].Key = []byte("log/events0")
		}, "outside the range"},
		{"a key of another bucket", func(r *etcdRangeRequest, resp *etcdRangeResponse) {
			resp.Kvs[0].Key = []byte("log/events")
		}, "outside the range"},
		{"keys out of order", func(r *etcdRangeRequest, resp *etcdRangeResponse) {
			resp.Kvs[0], resp.Kvs[1] = resp.Kvs[1], resp.Kvs[0]
		}, "out of order"},
		{"a key twice", func(r *etcdRangeRequest, resp *etcdRangeResponse) {
			resp.Kvs[1] = resp.Kvs[0]
		}, "out of order"},
		{"more keys than asked for", func(r *etcdRangeRequest, resp *etcdRangeResponse) {
			resp.Kvs = append(resp.Kvs, resp.Kvs[len(resp.Kvs)-1])
		}, "over its limit"},
	} {
		for _, desc := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s desc=%v", c.name, desc), func(t *testing.T) {
				s := newRangeServer(seqNames(1, 5000))
				pages := 0
				fetch := func(r *etcdRangeRequest) (*etcdRangeResponse, error) {
					resp, err := s.fetch(r)
					if pages++; pages == 3 && err == nil && len(resp.Kvs) > 1 {
						c.forge(r, resp)
					}
					return resp, err
				}
				read := 0
				err := etcdScan(scanPrefix, scanPrefix, "log/events0", desc, fetch, func(name, _ []byte) error {
					read++
					return nil
				})
				if err == nil || !strings.Contains(err.Error(), c.errSub) {
					t.Fatalf("after %d pages and %d keys: %v, want an error saying %q", pages, read, err, c.errSub)
				}
			})
		}
	}
}

func firstDifference(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// FuzzEtcdScan: any names, any bounds, either order: a scan reads exactly
// the names in range, in order, and ends.
func FuzzEtcdScan(f *testing.F) {
	f.Add([]byte("a\x00b\x00c"), "", "", false)
	f.Add(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 1), 1<<62), "\x00", "\xff", true)
	f.Add(bytes.Repeat([]byte("x\x00xx\x00"), 200), "x", "xx\x00", false)
	f.Fuzz(func(t *testing.T, data []byte, from, to string, desc bool) {
		names := strings.Split(string(data), "\x00")
		if from >= to && to != "" {
			return
		}
		s := newRangeServer(names)
		got := scanAll(t, s, from, to, desc)
		if want := wantNames(names, from, to, desc); !slices.Equal(got, want) {
			t.Fatalf("read %q, want %q", got, want)
		}
		// Each request reads a key, or widens the next window: at most
		// windowBytes*8/4 empty ones in a row.
		if s.requests > 2*len(got)+2*windowBytes+4 {
			t.Fatalf("%d requests to read %d names", s.requests, len(got))
		}
	})
}
