package secmem

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"custos.dev/custos/internal/realtest"
)

// vmLck is the process's locked memory in KiB, as /proc/self/status says.
func vmLck(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmLck:" {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no VmLck in /proc/self/status")
	return 0
}

// vmFlags returns the VmFlags of the mapping that holds addr, from
// /proc/self/smaps ("dd": not dumped, "lo": locked, "dc": not copied on
// fork), and the mapping's bounds.
func vmFlags(t *testing.T, addr uintptr) (flags map[string]bool, start, end uintptr) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && !strings.HasSuffix(fields[0], ":") {
			s, err1 := strconv.ParseUint(lo, 16, 64)
			e, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				in = uintptr(s) <= addr && addr < uintptr(e)
				if in {
					start, end = uintptr(s), uintptr(e)
				}
				continue
			}
		}
		if in && fields[0] == "VmFlags:" {
			flags = map[string]bool{}
			for _, fl := range fields[1:] {
				flags[fl] = true
			}
			return flags, start, end
		}
	}
	t.Fatalf("no mapping holds %#x in /proc/self/smaps", addr)
	return nil, 0, 0
}

func base(b *Buf) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b.mem))) }

// watchUnmap records, for each mapping returned to the kernel while the
// test runs, its length and whether every byte of it was zero.
type unmapped struct {
	addr  uintptr
	size  int
	wiped bool
}

func watchUnmap(t *testing.T) *[]unmapped {
	t.Helper()
	var seen []unmapped
	real := unmap
	unmap = func(m []byte) error {
		seen = append(seen, unmapped{uintptr(unsafe.Pointer(unsafe.SliceData(m))), len(m), !bytes.ContainsFunc(m, func(r rune) bool { return r != 0 })})
		return real(m)
	}
	t.Cleanup(func() { unmap = real })
	return &seen
}

func TestNewIsLockedNotDumpedAndZero(t *testing.T) {
	before := vmLck(t)
	n := 3*pageSize - 10
	b, err := New(n)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	if !b.Locked() {
		realtest.Missing(t, "the kernel refused to lock 3 pages: %v", b.LockErr())
	}
	if b.LockErr() != nil {
		t.Errorf("locked, yet LockErr %v", b.LockErr())
	}
	if b.Len() != n || len(b.Bytes()) != n || cap(b.Bytes()) != n || b.Cap() != 3*pageSize {
		t.Fatalf("len %d, bytes %d (cap %d), mapping %d; want %d bytes in 3 pages", b.Len(), len(b.Bytes()), cap(b.Bytes()), b.Cap(), n)
	}
	if bytes.ContainsFunc(b.Bytes(), func(r rune) bool { return r != 0 }) {
		t.Error("a new buffer is not zero")
	}
	if grew := vmLck(t) - before; grew < 3*pageSize/1024 {
		t.Errorf("VmLck grew by %d KiB, want at least %d", grew, 3*pageSize/1024)
	}
	flags, start, end := vmFlags(t, base(b))
	for _, f := range []string{"dd", "lo", "dc"} {
		if !flags[f] {
			t.Errorf("mapping %#x-%#x lacks VmFlag %q (has %v)", start, end, f, flags)
		}
	}
	copy(b.Bytes(), "a secret")
	b.Free()
	if got := vmLck(t); got != before {
		t.Errorf("VmLck %d KiB after Free, was %d before New", got, before)
	}
	if b.Bytes() != nil || b.Len() != 0 || b.Locked() {
		t.Error("a freed buffer still shows its pages")
	}
	b.Free() // twice is fine
	var nilBuf *Buf
	nilBuf.Free()
	if nilBuf.Bytes() != nil || nilBuf.Len() != 0 {
		t.Error("a nil buffer is not empty")
	}
	if _, err := New(-1); err == nil {
		t.Error("New(-1) gave a buffer")
	}
}

func TestFreeWipesEveryPageBeforeUnmap(t *testing.T) {
	seen := watchUnmap(t)
	b, err := New(pageSize + 1)
	if err != nil {
		t.Fatal(err)
	}
	addr, size := base(b), b.Cap()
	for i := range b.mem { // the slack past Len too
		b.mem[i] = 0xa5
	}
	b.Free()
	if len(*seen) != 1 || (*seen)[0].addr != addr || (*seen)[0].size != size {
		t.Fatalf("unmapped %+v, want the one mapping at %#x of %d bytes", *seen, addr, size)
	}
	if !(*seen)[0].wiped {
		t.Error("Free returned pages to the kernel before wiping them")
	}
	if err := b.AppendByte('x'); !errors.Is(err, ErrFreed) {
		t.Errorf("append after Free: %v, want ErrFreed", err)
	}
}

func TestGrowMovesAndWipesTheOldPages(t *testing.T) {
	seen := watchUnmap(t)
	b, err := New(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	if b.Len() != 0 || b.Cap() != pageSize {
		t.Fatalf("New(0): len %d cap %d, want 0 and one page", b.Len(), b.Cap())
	}
	old := base(b)
	want := bytes.Repeat([]byte("0123456789abcdef"), pageSize/16+1)
	for _, c := range want {
		if err := b.AppendByte(c); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatal("the bytes changed when the buffer grew")
	}
	if b.Cap() < 2*pageSize {
		t.Errorf("grown to %d bytes, want at least twice a page", b.Cap())
	}
	if len(*seen) != 1 || (*seen)[0].addr != old || !(*seen)[0].wiped {
		t.Errorf("old pages on growth: %+v, want the page at %#x unmapped wiped", *seen, old)
	}
	flags, _, _ := vmFlags(t, base(b))
	if !flags["dd"] {
		t.Error("the grown mapping is dumpable")
	}
	b.Truncate(3)
	if string(b.Bytes()) != "012" || b.mem[3] != 0 || b.mem[len(want)-1] != 0 {
		t.Error("Truncate left bytes past the new length")
	}
	b.Wipe()
	if b.Len() != 0 || bytes.ContainsFunc(b.mem, func(r rune) bool { return r != 0 }) {
		t.Error("Wipe left bytes")
	}
}

// pagesReader hands out its data one Read at a time and records whether
// every slice it was given to fill lay inside the buffer's own pages.
type pagesReader struct {
	data    []byte
	b       *Buf
	outside int
	taken   int
}

func (r *pagesReader) Read(p []byte) (int, error) {
	if len(p) > 0 {
		a := uintptr(unsafe.Pointer(&p[0]))
		if a < base(r.b) || a+uintptr(len(p)) > base(r.b)+uintptr(len(r.b.mem)) {
			r.outside++
		}
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	r.taken += n
	return n, nil
}

func TestReadLineStraightIntoThePages(t *testing.T) {
	b, err := New(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	src := &pagesReader{data: []byte("first\nsecond\r\nthird"), b: b}
	if err := b.ReadLine(src, 64); err != nil || string(b.Bytes()) != "first" {
		t.Fatalf("first line: %q, %v", b.Bytes(), err)
	}
	if src.taken != len("first\n") {
		t.Errorf("read %d bytes for the first line: past its newline", src.taken)
	}
	if b.mem[len("first")] != 0 {
		t.Error("the newline stays in the pages")
	}
	b.Wipe()
	if err := b.ReadLine(src, 64); err != nil || string(b.Bytes()) != "second" {
		t.Fatalf("CRLF line: %q, %v", b.Bytes(), err)
	}
	if b.mem[len("second")] != 0 {
		t.Error("the CR stays in the pages")
	}
	b.Wipe()
	if err := b.ReadLine(src, 64); err != io.EOF || string(b.Bytes()) != "third" {
		t.Fatalf("last line without newline: %q, %v; want it and io.EOF", b.Bytes(), err)
	}
	if src.outside != 0 {
		t.Errorf("%d reads went to memory outside the buffer's pages", src.outside)
	}

	// A line longer than a page grows the buffer; reads follow it.
	b.Wipe()
	long := bytes.Repeat([]byte{'p'}, 2*pageSize)
	src = &pagesReader{data: append(append([]byte{}, long...), '\n'), b: b}
	if err := b.ReadLine(src, 2*pageSize); err != nil || !bytes.Equal(b.Bytes(), long) {
		t.Fatalf("a line of exactly the limit: %d bytes, %v", b.Len(), err)
	}
	if src.outside != 0 {
		t.Errorf("%d reads went outside the pages after growing", src.outside)
	}

	b.Wipe()
	src = &pagesReader{data: bytes.Repeat([]byte{'x'}, 100), b: b}
	if err := b.ReadLine(src, 10); !errors.Is(err, ErrTooLong) {
		t.Fatalf("line over the limit: %v, want ErrTooLong", err)
	}
	if b.Len() != 0 || bytes.ContainsFunc(b.mem, func(r rune) bool { return r != 0 }) {
		t.Error("a refused line left bytes in the buffer")
	}
	if src.taken != 11 {
		t.Errorf("read %d bytes of a refused line, want limit+1 = 11", src.taken)
	}
}

func TestReadAllStraightIntoThePages(t *testing.T) {
	b, err := New(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	data := bytes.Repeat([]byte("key\n"), pageSize) // four pages
	src := &pagesReader{data: data, b: b}
	if err := b.ReadAll(src, len(data)); err != nil || !bytes.Equal(b.Bytes(), data) {
		t.Fatalf("read %d bytes, %v; want all %d", b.Len(), err, len(data))
	}
	if src.outside != 0 {
		t.Errorf("%d reads went to memory outside the buffer's pages", src.outside)
	}

	b.Wipe()
	src = &pagesReader{data: data, b: b}
	if err := b.ReadAll(src, len(data)-1); !errors.Is(err, ErrTooLong) {
		t.Fatalf("over the limit: %v, want ErrTooLong", err)
	}
	if src.taken != len(data) {
		t.Errorf("took %d bytes, want limit+1 = %d", src.taken, len(data))
	}
	if b.Len() != 0 || bytes.ContainsFunc(b.mem, func(r rune) bool { return r != 0 }) {
		t.Error("refused input left bytes in the buffer")
	}

	b.Wipe()
	failing := io.MultiReader(strings.NewReader("ab"), iotestErr{})
	if err := b.ReadAll(failing, 100); err == nil || err.Error() != "disk on fire" {
		t.Errorf("reader error: %v", err)
	}
}

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// TestLockRefused has the kernel refuse mlock, as it does for an
// unprivileged user past RLIMIT_MEMLOCK: this thread gives up
// CAP_IPC_LOCK (capabilities are per thread) and the process's soft limit
// drops. The buffer comes back unlocked but usable, still out of core dumps,
// and LockErr says why.
func TestLockRefused(t *testing.T) {
	runtime.LockOSThread() // never unlocked: the thread ends with the test
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		t.Fatal(err)
	}
	caps[0].Effective &^= 1 << unix.CAP_IPC_LOCK
	if err := unix.Capset(&hdr, &caps[0]); err != nil {
		t.Fatal(err)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		t.Fatal(err)
	}
	saved := rl
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_MEMLOCK, &saved) })

	for _, tc := range []struct {
		limit uint64
		size  int
		errno []error
	}{
		{0, 10, []error{unix.EPERM}},                                        // no lockable memory at all
		{uint64(pageSize), 2 * pageSize, []error{unix.ENOMEM, unix.EAGAIN}}, // past the limit
	} {
		rl.Cur = tc.limit
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
			t.Fatal(err)
		}
		before := vmLck(t)
		b, err := New(tc.size)
		if err != nil {
			t.Fatalf("limit %d: %v; want an unlocked buffer", tc.limit, err)
		}
		if b.Locked() {
			t.Fatalf("limit %d: locked %d bytes without CAP_IPC_LOCK", tc.limit, tc.size)
		}
		var le *LockError
		if !errors.As(b.LockErr(), &le) || le.Size != b.Cap() || le.Limit != tc.limit {
			t.Errorf("limit %d: LockErr %#v", tc.limit, b.LockErr())
		}
		ok := false
		for _, e := range tc.errno {
			ok = ok || errors.Is(b.LockErr(), e)
		}
		if !ok {
			t.Errorf("limit %d: %v, want one of %v", tc.limit, b.LockErr(), tc.errno)
		}
		if !strings.Contains(b.LockErr().Error(), "RLIMIT_MEMLOCK") {
			t.Errorf("LockErr does not name the limit: %v", b.LockErr())
		}
		if got := vmLck(t); got != before {
			t.Errorf("limit %d: VmLck went from %d to %d KiB", tc.limit, before, got)
		}
		flags, _, _ := vmFlags(t, base(b))
		if !flags["dd"] || flags["lo"] {
			t.Errorf("limit %d: unlocked mapping has VmFlags %v, want dd and not lo", tc.limit, flags)
		}
		copy(b.Bytes(), "usable")
		if string(b.Bytes()[:6]) != "usable" {
			t.Error("an unlocked buffer does not hold its bytes")
		}
		b.Free()
	}
}
