// Package pcsc is custos's own binding of the PC/SC calls that wait for
// readers and cards (pcsc-lite's winscard API: SCardEstablishContext,
// SCardListReaders, SCardGetStatusChange, SCardCancel), safe to call from
// several goroutines at once. Connecting to a card and exchanging APDUs
// stay with github.com/ebfe/scard and piv-go; errors are scard.Error values
// and reader states scard.ReaderState, so that callers test them as they
// would scard's.
//
// ebfe/scard's own GetStatusChange pins each reader name's C string in a
// package-level map without a lock: two goroutines calling it at once (a
// ceremony waiting for a card in one reader while it waits for another to
// leave, a test's virtual card watching its reader) write that map
// concurrently, and a name replaced in the map may be collected while
// pcscd's client library still reads it. Serialising the calls would make
// every wait a loop of short ones, each waking the process. Here each call
// copies its reader names into C memory of its own, freed when the call
// returns, so a caller can block in one call for as long as it waits:
// waiting costs nothing while nothing changes.
//
// # Caveats
//
//   - A Context may be used by one waiting goroutine at a time (pcsc-lite
//     allows one blocking call per context); Cancel may be called from any
//     goroutine to end that call, which then returns scard.ErrCancelled.
package pcsc

/*
#cgo pkg-config: libpcsclite
#include <stdlib.h>
#include <string.h>
#include <winscard.h>

static LONG custosGetStatusChange(SCARDCONTEXT ctx, DWORD timeout, SCARD_READERSTATE *states, DWORD n) {
	return SCardGetStatusChange(ctx, timeout, states, n);
}
*/
import "C"

import (
	"bytes"
	"time"
	"unsafe"

	"github.com/ebfe/scard"
)

// Context is one PC/SC context (SCardEstablishContext, PC/SC
// Specification part 5, section 3.1.3), with system scope.
type Context struct {
	h C.SCARDCONTEXT
}

// EstablishContext connects to pcscd.
func EstablishContext() (*Context, error) {
	var h C.SCARDCONTEXT
	if r := C.SCardEstablishContext(C.SCARD_SCOPE_SYSTEM, nil, nil, &h); r != C.SCARD_S_SUCCESS {
		return nil, scard.Error(r)
	}
	return &Context{h: h}, nil
}

// Release ends the context (SCardReleaseContext).
func (c *Context) Release() error {
	if r := C.SCardReleaseContext(c.h); r != C.SCARD_S_SUCCESS {
		return scard.Error(r)
	}
	return nil
}

// Cancel ends a GetStatusChange blocked on the context, from any goroutine
// (SCardCancel).
func (c *Context) Cancel() error {
	if r := C.SCardCancel(c.h); r != C.SCARD_S_SUCCESS {
		return scard.Error(r)
	}
	return nil
}

// ListReaders names the readers pcscd knows (SCardListReaders). None is
// scard.ErrNoReadersAvailable.
func (c *Context) ListReaders() ([]string, error) {
	var n C.DWORD
	if r := C.SCardListReaders(c.h, nil, nil, &n); r != C.SCARD_S_SUCCESS {
		return nil, scard.Error(r)
	}
	if n == 0 {
		return nil, scard.ErrNoReadersAvailable
	}
	buf := make([]byte, n)
	if r := C.SCardListReaders(c.h, nil, (*C.char)(unsafe.Pointer(&buf[0])), &n); r != C.SCARD_S_SUCCESS {
		return nil, scard.Error(r)
	}
	// A multi-string: names ended by NUL, the list by an empty name.
	var names []string
	for _, b := range bytes.Split(buf[:min(int(n), len(buf))], []byte{0}) {
		if len(b) == 0 {
			break
		}
		names = append(names, string(b))
	}
	if len(names) == 0 {
		return nil, scard.ErrNoReadersAvailable
	}
	return names, nil
}

// Infinite is the timeout with which GetStatusChange waits until a state
// changes or the call is cancelled, however long that takes.
const Infinite time.Duration = -1

// GetStatusChange blocks until the state of one of the readers differs from
// its CurrentState, or timeout passes (scard.ErrTimeout), or Cancel ends it
// (scard.ErrCancelled) (SCardGetStatusChange, PC/SC Specification part 5,
// section 3.1.3). A negative timeout is Infinite. On success it sets each
// state's EventState and Atr, as scard's does.
func (c *Context) GetStatusChange(states []scard.ReaderState, timeout time.Duration) error {
	if len(states) == 0 {
		return nil
	}
	n := len(states)
	size := C.size_t(unsafe.Sizeof(C.SCARD_READERSTATE{}))
	p := (*C.SCARD_READERSTATE)(C.calloc(C.size_t(n), size))
	if p == nil {
		return scard.ErrNoMemory
	}
	defer C.free(unsafe.Pointer(p))
	cs := unsafe.Slice(p, n)
	for i := range states {
		cs[i].szReader = C.CString(states[i].Reader)
		cs[i].dwCurrentState = C.DWORD(states[i].CurrentState)
	}
	defer func() {
		for i := range cs {
			C.free(unsafe.Pointer(cs[i].szReader))
		}
	}()
	r := C.custosGetStatusChange(c.h, dwTimeout(timeout), p, C.DWORD(n))
	if r != C.SCARD_S_SUCCESS {
		return scard.Error(r)
	}
	for i := range states {
		states[i].EventState = scard.StateFlag(cs[i].dwEventState)
		if k := int(cs[i].cbAtr); k > 0 && k <= len(cs[i].rgbAtr) {
			states[i].Atr = C.GoBytes(unsafe.Pointer(&cs[i].rgbAtr[0]), C.int(k))
		}
	}
	return nil
}

// dwTimeout is timeout in milliseconds, INFINITE for a negative one.
func dwTimeout(timeout time.Duration) C.DWORD {
	const infinite = C.DWORD(C.INFINITE)
	if timeout < 0 {
		return infinite
	}
	ms := timeout.Milliseconds()
	if ms >= int64(infinite) {
		return infinite - 1
	}
	return C.DWORD(ms)
}
