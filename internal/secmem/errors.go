package secmem

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrTooLong means the input held more bytes than the limit given to
// ReadLine or ReadAll. The buffer is wiped and empty.
var ErrTooLong = errors.New("longer than the limit")

// ErrFreed means the buffer was used after Free.
var ErrFreed = errors.New("secret buffer already freed")

// LockError says why a buffer's pages are not locked: the kernel refused
// mlock (Err is the errno: EPERM without CAP_IPC_LOCK, ENOMEM or EAGAIN past
// RLIMIT_MEMLOCK). Limit is RLIMIT_MEMLOCK's soft value in bytes at the
// time (unix.RLIM_INFINITY: unlimited).
type LockError struct {
	Size  int // bytes asked to lock (whole pages)
	Limit uint64
	Err   error
}

func (e *LockError) Error() string {
	limit := "unlimited"
	if e.Limit != unix.RLIM_INFINITY {
		limit = fmt.Sprintf("%d KiB", e.Limit>>10)
	}
	return fmt.Sprintf("mlock %d bytes: %v (RLIMIT_MEMLOCK %s)", e.Size, e.Err, limit)
}

func (e *LockError) Unwrap() error { return e.Err }
