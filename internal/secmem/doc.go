// Package secmem holds secrets in memory of their own: each buffer is a
// mapping of whole pages, locked into RAM so that it is never written to
// swap, excluded from core dumps (MADV_DONTDUMP), left out of a forked
// child (MADV_DONTFORK), and wiped before it is returned to the kernel.
//
//	b, err := secmem.New(32)
//	if err != nil {
//		return err
//	}
//	defer b.Free()
//	key := b.Bytes() // 32 zero bytes in locked pages
//
// A secret is read straight into such pages, never through a Go string or
// a read-ahead buffer on the heap:
//
//	b, err := secmem.New(0)
//	...
//	err = b.ReadLine(os.Stdin, 64<<10) // one byte at a time, never past the newline
//	err = b.ReadAll(f, 8<<20)          // the whole of f
//
// # Locking
//
// mlock needs CAP_IPC_LOCK or room under RLIMIT_MEMLOCK (8 MiB by default on
// kernels since 5.16, 64 KiB on older ones and in some containers). When the
// kernel refuses (EPERM, ENOMEM, EAGAIN), New still returns the buffer, in
// pages of its own, excluded from core dumps and wiped when freed, but not
// locked; LockErr says why. A caller reports that (custos under --debug) and
// goes on: an unlocked secret is weaker, not wrong.
//
// # Caveats
//
//   - Each buffer takes at least one page (4 KiB) of locked memory until it
//     is freed. Free a buffer as soon as its secret is no longer needed.
//   - Free must be called: the pages are not Go memory and the garbage
//     collector never releases them.
//   - Bytes is a view of the pages. After Free, or after a call that grows
//     the buffer (AppendByte, ReadLine, ReadAll, Grow past Cap, which move
//     it to a new mapping and wipe and unmap the old one), an earlier Bytes
//     slice points at unmapped memory and using it faults. Any copy a
//     caller makes (string(b.Bytes()), an append past Len, an API that
//     copies its argument) lands on the ordinary heap, outside this
//     package's protection.
//   - A Buf is not safe for concurrent use.
//   - Locking keeps secrets off swap, not from the kernel: root, or any
//     process allowed to ptrace this one, can still read them, and
//     hibernation writes locked pages to disk like any other.
package secmem
