// Package pcsc is custos's own binding of the PC/SC calls that wait for
// readers and cards (pcsc-lite's winscard API: SCardEstablishContext,
// SCardListReaders, SCardGetStatusChange, SCardCancel), safe to call from
// several goroutines at once, and of those that connect to a card and
// exchange APDUs with it (SCardConnect, SCardBeginTransaction,
// SCardTransmit, SCardDisconnect). Errors are scard.Error values and
// reader states scard.ReaderState, so that callers test them as they
// would github.com/ebfe/scard's.
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
	"sync"
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

// listBuffer is the room ListReaders offers pcsc-lite at first: enough
// for a dozen readers' names, so that one call (one round trip to pcscd)
// lists them; a longer list is asked for again at its size.
var listBuffer = 1024

// ListReaders names the readers pcscd knows (SCardListReaders). None is
// scard.ErrNoReadersAvailable.
func (c *Context) ListReaders() ([]string, error) {
	buf := make([]byte, listBuffer)
	n := C.DWORD(len(buf))
	for {
		r := C.SCardListReaders(c.h, nil, (*C.char)(unsafe.Pointer(&buf[0])), &n)
		if r == C.SCARD_E_INSUFFICIENT_BUFFER && int(n) > len(buf) {
			// A longer list (or readers plugged in meanwhile): pcsc-lite
			// has said its size.
			buf = make([]byte, n)
			continue
		}
		if r != C.SCARD_S_SUCCESS {
			return nil, scard.Error(r)
		}
		break
	}
	if n == 0 {
		return nil, scard.ErrNoReadersAvailable
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

// Card is a connection to the card in one reader (SCardConnect), used by
// one goroutine at a time.
type Card struct {
	h     C.SCARDHANDLE
	proto C.DWORD
}

// Connect connects to the card in reader with the share mode and the
// protocols given (SCardConnect, PC/SC Specification part 5, section
// 3.1.4).
func (c *Context) Connect(reader string, mode scard.ShareMode, protocols scard.Protocol) (*Card, error) {
	name := C.CString(reader)
	defer C.free(unsafe.Pointer(name))
	var h C.SCARDHANDLE
	var active C.DWORD
	if r := C.SCardConnect(c.h, name, C.DWORD(mode), C.DWORD(protocols), &h, &active); r != C.SCARD_S_SUCCESS {
		return nil, scard.Error(r)
	}
	return &Card{h: h, proto: active}, nil
}

// BeginTransaction takes the card for this connection alone until the
// connection ends (SCardBeginTransaction).
func (k *Card) BeginTransaction() error {
	if r := C.SCardBeginTransaction(k.h); r != C.SCARD_S_SUCCESS {
		return scard.Error(r)
	}
	return nil
}

// Status asks pcscd whether the card this connection was made to is
// still in its reader and not reset since (SCardStatus, PC/SC
// Specification part 5, section 3.1.5): nil if so, else the error pcscd
// gives, scard.ErrRemovedCard for a card taken out (another card put in
// since included) or scard.ErrResetCard.
func (k *Card) Status() error {
	var reader [C.MAX_READERNAME]C.char
	readerLen := C.DWORD(len(reader))
	var state, proto C.DWORD
	var atr [C.MAX_ATR_SIZE]C.BYTE
	atrLen := C.DWORD(len(atr))
	if r := C.SCardStatus(k.h, &reader[0], &readerLen, &state, &proto, &atr[0], &atrLen); r != C.SCARD_S_SUCCESS {
		return scard.Error(r)
	}
	return nil
}

// Disconnect ends the connection, leaving, resetting or unpowering the
// card as d says (SCardDisconnect).
func (k *Card) Disconnect(d scard.Disposition) error {
	if r := C.SCardDisconnect(k.h, C.DWORD(d)); r != C.SCARD_S_SUCCESS {
		return scard.Error(r)
	}
	return nil
}

// maxResponse is the largest answer pcsc-lite passes on
// (MAX_BUFFER_SIZE_EXTENDED): an extended APDU's 65,536 bytes, its status
// word and the protocol's bytes.
const maxResponse = C.MAX_BUFFER_SIZE_EXTENDED

// responses holds the buffers SCardTransmit writes answers into, reused
// from one exchange to the next. scard's Transmit allocated a new one of
// 64 KiB for every APDU and returned a slice of it, so that each exchange
// took fresh pages from the system (a recovery's 17 exchanges, 1.1 MB:
// two thirds of all it allocated) and left its answer, an ECDH secret
// among them, in memory never cleared.
var responses = sync.Pool{New: func() any { return new([maxResponse]byte) }}

// Transmit sends one APDU and returns the card's answer, status word
// included (SCardTransmit, PC/SC Specification part 5, section 3.1.5).
// The answer is a copy; the buffer it was received into is cleared.
func (k *Card) Transmit(cmd []byte) ([]byte, error) {
	if len(cmd) == 0 {
		return nil, scard.ErrInvalidParameter
	}
	buf := responses.Get().(*[maxResponse]byte)
	defer responses.Put(buf)
	send := C.SCARD_IO_REQUEST{dwProtocol: k.proto, cbPciLength: C.DWORD(unsafe.Sizeof(C.SCARD_IO_REQUEST{}))}
	var recv C.SCARD_IO_REQUEST
	n := C.DWORD(len(buf))
	r := C.SCardTransmit(k.h, &send, (*C.BYTE)(unsafe.Pointer(&cmd[0])), C.DWORD(len(cmd)), &recv, (*C.BYTE)(unsafe.Pointer(&buf[0])), &n)
	if r != C.SCARD_S_SUCCESS {
		clear(buf[:min(int(n), len(buf))])
		return nil, scard.Error(r)
	}
	m := min(int(n), len(buf))
	out := append([]byte(nil), buf[:m]...)
	clear(buf[:m])
	return out, nil
}
