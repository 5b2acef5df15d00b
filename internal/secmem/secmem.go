package secmem

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

var pageSize = os.Getpagesize()

// The system calls that tests watch: unmap checks that the pages are wiped
// before they go back to the kernel.
var (
	mlock = unix.Mlock
	unmap = unix.Munmap
)

// Buf is a secret's buffer: Len bytes in use at the start of a mapping of
// Cap bytes (whole pages) that belongs to it alone. The zero Buf and a nil
// *Buf are empty and freed.
type Buf struct {
	mem     []byte // the whole mapping; nil once freed
	n       int    // bytes in use
	lockErr error  // why mem is not locked; nil when it is
}

// New returns a buffer of n zero bytes, in pages of its own (at least one,
// so New(0) is an empty buffer with a page of room). The pages are locked
// when the kernel allows it; when it refuses, the buffer is returned all
// the same and LockErr says why. An error means no pages could be mapped.
func New(n int) (*Buf, error) {
	if n < 0 {
		return nil, fmt.Errorf("secret buffer of %d bytes", n)
	}
	mem, lockErr, err := mapPages(n)
	if err != nil {
		return nil, err
	}
	return &Buf{mem: mem, n: n, lockErr: lockErr}, nil
}

// mapPages maps enough private anonymous pages for n bytes, keeps them out
// of core dumps and forked children, and tries to lock them.
func mapPages(n int) (mem []byte, lockErr, err error) {
	size := (max(n, 1) + pageSize - 1) / pageSize * pageSize
	mem, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, nil, fmt.Errorf("map %d bytes for a secret: %w", size, err)
	}
	for _, advice := range []struct {
		name string
		v    int
	}{{"MADV_DONTDUMP", unix.MADV_DONTDUMP}, {"MADV_DONTFORK", unix.MADV_DONTFORK}} {
		if err := unix.Madvise(mem, advice.v); err != nil {
			unmap(mem)
			return nil, nil, fmt.Errorf("madvise %s: %w", advice.name, err)
		}
	}
	if err := mlock(mem); err != nil {
		lockErr = &LockError{Size: size, Limit: memlockLimit(), Err: err}
	}
	return mem, lockErr, nil
}

func memlockLimit() uint64 {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl) != nil {
		return 0
	}
	return rl.Cur
}

// Bytes returns the secret: the Len bytes in use, a view of the pages (its
// capacity ends at Len, so an append copies to the heap rather than past
// the secret). It is valid until the buffer grows or is freed.
func (b *Buf) Bytes() []byte {
	if b == nil || b.mem == nil {
		return nil
	}
	return b.mem[:b.n:b.n]
}

// Len is the number of bytes in use.
func (b *Buf) Len() int {
	if b == nil {
		return 0
	}
	return b.n
}

// Cap is the size of the mapping: Len plus the room left before it grows.
func (b *Buf) Cap() int {
	if b == nil {
		return 0
	}
	return len(b.mem)
}

// Locked reports whether the buffer's pages are locked in RAM.
func (b *Buf) Locked() bool { return b != nil && b.mem != nil && b.lockErr == nil }

// LockErr says why the pages are not locked (a *LockError); nil when they
// are, or when the buffer is freed.
func (b *Buf) LockErr() error {
	if b == nil || b.mem == nil {
		return nil
	}
	return b.lockErr
}

// Truncate keeps the first n bytes and wipes the rest. n beyond Len is
// Len.
func (b *Buf) Truncate(n int) {
	if b == nil || b.mem == nil || n >= b.n {
		return
	}
	clear(b.mem[max(n, 0):b.n])
	b.n = max(n, 0)
}

// Wipe zeroes the whole mapping and leaves the buffer empty, ready for
// reuse.
func (b *Buf) Wipe() {
	if b == nil || b.mem == nil {
		return
	}
	clear(b.mem)
	b.n = 0
}

// Free wipes the pages and returns them to the kernel (munmap, which also
// unlocks them). It is safe to call more than once, and on nil.
func (b *Buf) Free() {
	if b == nil || b.mem == nil {
		return
	}
	clear(b.mem)
	// munmap of a mapping we made fails only for a bad address or length,
	// which would be a bug here; the pages are wiped either way.
	unmap(b.mem)
	b.mem, b.n, b.lockErr = nil, 0, nil
}

// Grow makes room for at least k more bytes without another move. When the
// mapping is too small it is moved to a new one (at least twice as large):
// the bytes are copied, the old pages wiped and unmapped.
func (b *Buf) Grow(k int) error {
	if b == nil || b.mem == nil {
		return ErrFreed
	}
	if k < 0 {
		return fmt.Errorf("grow a secret buffer by %d bytes", k)
	}
	if len(b.mem)-b.n >= k {
		return nil
	}
	mem, lockErr, err := mapPages(max(b.n+k, 2*len(b.mem)))
	if err != nil {
		return err
	}
	copy(mem, b.mem[:b.n])
	clear(b.mem)
	unmap(b.mem)
	b.mem, b.lockErr = mem, lockErr
	return nil
}

// AppendByte adds c at the end, growing the buffer when it is full.
func (b *Buf) AppendByte(c byte) error {
	if err := b.Grow(1); err != nil {
		return err
	}
	b.mem[b.n] = c
	b.n++
	return nil
}

// ReadLine appends to b the next line of r, without its line ending ("\n"
// or "\r\n"). It reads one byte at a time, straight into the pages, so it
// never takes anything from r past the newline and leaves no copy in a
// read-ahead buffer. It returns nil after a newline, and io.EOF when r
// ended first (what was read, a last line without a newline, stays in b).
// A line of more than limit bytes wipes b and returns ErrTooLong, having
// read limit+1 bytes of it. Other errors come from r; b keeps what was read
// and the caller wipes it.
func (b *Buf) ReadLine(r io.Reader, limit int) error {
	if b == nil || b.mem == nil {
		return ErrFreed
	}
	start := b.n
	for {
		if err := b.Grow(1); err != nil {
			return err
		}
		k, err := r.Read(b.mem[b.n : b.n+1])
		if k == 1 {
			if b.mem[b.n] == '\n' {
				b.mem[b.n] = 0
				if b.n > start && b.mem[b.n-1] == '\r' {
					b.Truncate(b.n - 1)
				}
				return nil
			}
			b.n++
			if b.n-start > limit {
				b.Truncate(0)
				return ErrTooLong
			}
			continue
		}
		if err != nil {
			return err
		}
	}
}

// ReadAll appends all of r to b, to its end, reading straight into the
// pages. More than limit bytes wipe b and return ErrTooLong, having read at
// most limit+1 bytes. Other errors come from r; b keeps what was read and
// the caller wipes it. Grow first when the size is known, to save moves.
func (b *Buf) ReadAll(r io.Reader, limit int) error {
	if b == nil || b.mem == nil {
		return ErrFreed
	}
	start := b.n
	for {
		if err := b.Grow(1); err != nil {
			return err
		}
		room := b.mem[b.n:]
		if left := limit + 1 - (b.n - start); len(room) > left {
			room = room[:left]
		}
		k, err := r.Read(room)
		b.n += k
		if b.n-start > limit {
			b.Truncate(0)
			return ErrTooLong
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
