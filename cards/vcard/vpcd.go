package vcard

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"custos.dev/custos/internal/pcsc"
	"github.com/ebfe/scard"
)

// The vpcd readers Debian's vsmartcard-vpcd gives pcscd: the card side
// connects to 127.0.0.1 on these ports.
const (
	Port0 = 35963 // reader "Virtual PCD 00 00"
	Port1 = 35964 // reader "Virtual PCD 00 01"
)

// vpcd control messages: a payload of one byte, from vsmartcard's vpcd.h.
const (
	vpcdPowerOff = 0x00
	vpcdPowerOn  = 0x01
	vpcdReset    = 0x02
	vpcdGetATR   = 0x04
)

// insertTimeout bounds Insert's and Remove's wait for pcscd when the
// context has no deadline.
const insertTimeout = 15 * time.Second

// BaseEnv, when set to a port number, moves the two readers: the card side
// of Port0 connects to that port instead and Port1's to the one after it,
// for a process bound to a pcscd of its own whose vpcd readers listen
// there (internal/realtest's reader pool; the reader names stay those of
// Port0 and Port1).
const BaseEnv = "CUSTOS_VPCD_BASE"

// Addr is the TCP address on which the card side of the vpcd reader port
// connects: 127.0.0.1:port, moved by BaseEnv for Port0 and Port1.
func Addr(port int) string {
	if port == Port0 || port == Port1 {
		if base, err := strconv.Atoi(os.Getenv(BaseEnv)); err == nil && base > 0 && base < 65535 {
			port = base + port - Port0
		}
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// ReaderName is the PC/SC name pcscd gives the vpcd reader on port.
func ReaderName(port int) string {
	return fmt.Sprintf("Virtual PCD 00 %02d", port-Port0)
}

// Inserted is a card in a vpcd reader.
type Inserted struct {
	card   *Card
	port   int
	reader string
	conn   net.Conn
	done   chan struct{}
	err    error // why serving stopped; read after done is closed

	powered   chan struct{} // closed at the first message from vpcd
	powerOnce sync.Once

	removeOnce sync.Once
	removeErr  error
}

// Insert puts the card into the vpcd reader on port (Port0 or Port1) and
// returns once pcscd reports the card present, so that piv.Open(Reader())
// works at once. The card serves until Remove, or until pcscd closes the
// connection. A card is in at most one reader at a time.
func (c *Card) Insert(ctx context.Context, port int) (*Inserted, error) {
	return c.InsertInto(ctx, port, ReaderName(port))
}

// InsertInto is Insert into a vpcd reader that pcscd names reader: one
// configured with another FRIENDLYNAME than Debian's "Virtual PCD" (a
// private pcscd of a test, whose reader must be named "Yubico ..." for a
// client that lists only those, as ykcs11 2.2 does).
func (c *Card) InsertInto(ctx context.Context, port int, reader string) (*Inserted, error) {
	c.mu.Lock()
	if c.inserted != nil {
		c.mu.Unlock()
		return nil, ErrInserted
	}
	in := &Inserted{card: c, port: port, reader: reader, done: make(chan struct{}), powered: make(chan struct{})}
	c.inserted = in
	c.mu.Unlock()

	fail := func(err error) (*Inserted, error) {
		c.mu.Lock()
		c.inserted = nil
		c.mu.Unlock()
		return nil, fmt.Errorf("insert card %d into %s: %w", c.Serial(), in.reader, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, insertTimeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", Addr(port))
	if err != nil {
		return fail(fmt.Errorf("%w: %v", ErrNoReader, err))
	}
	in.conn = conn
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true) // Go's default: each answer leaves in one segment
	}
	go in.serve()

	// vpcd accepts one card per reader; a connection it has not taken
	// stays silent. Wait until it powers this card up, then until pcscd
	// lists it.
	select {
	case <-in.powered:
	case <-in.done:
		return fail(fmt.Errorf("%w: vpcd closed the connection: %v", ErrNoReader, in.err))
	case <-ctx.Done():
		in.stop()
		return fail(fmt.Errorf("%w: vpcd did not power the card up (is another card in the reader?)", ErrNoReader))
	}
	if err := waitReader(ctx, in.reader, true); err != nil {
		in.stop()
		return fail(err)
	}
	return in, nil
}

// Reader is the PC/SC name of the reader the card is in.
func (in *Inserted) Reader() string { return in.reader }

// Port is the vpcd port of the reader the card is in.
func (in *Inserted) Port() int { return in.port }

// Card is the inserted card.
func (in *Inserted) Card() *Card { return in.card }

// Remove takes the card out of its reader and returns once pcscd no
// longer reports a card there, so that another card can go in at once.
// Calling it again does nothing.
func (in *Inserted) Remove() error {
	in.removeOnce.Do(func() {
		in.stop()
		ctx, cancel := context.WithTimeout(context.Background(), insertTimeout)
		defer cancel()
		in.removeErr = waitReader(ctx, in.reader, false)
		in.card.mu.Lock()
		in.card.inserted = nil
		in.card.app.powerCycle()
		in.card.mu.Unlock()
	})
	return in.removeErr
}

// Done is closed when the card stops serving: after Remove, or when pcscd
// closed the connection.
func (in *Inserted) Done() <-chan struct{} { return in.done }

func (in *Inserted) stop() {
	in.conn.Close()
	<-in.done
}

// serve answers vpcd: each message is a 2-byte big-endian length and a
// payload; a 1-byte payload is a control message, a longer one a command
// APDU answered by its response APDU. Each answer goes out in one write.
func (in *Inserted) serve() {
	defer close(in.done)
	r := bufio.NewReader(quickAckReader{in.conn})
	var hdr [2]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			in.finish(err)
			return
		}
		in.powerOnce.Do(func() { close(in.powered) })
		msg := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(r, msg); err != nil {
			in.finish(err)
			return
		}
		var out []byte
		switch {
		case len(msg) == 0:
			continue
		case len(msg) == 1:
			switch msg[0] {
			case vpcdPowerOff, vpcdPowerOn, vpcdReset:
				in.card.powerCycle(msg[0] == vpcdReset)
				continue
			case vpcdGetATR:
				out = ATR
			default:
				continue
			}
		default:
			if out = in.card.transmit(msg); out == nil {
				continue // a Silent card: no answer
			}
		}
		frame := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(out)), uint16(len(out)))
		if _, err := in.conn.Write(append(frame, out...)); err != nil {
			in.finish(err)
			return
		}
	}
}

// quickAckReader acknowledges at once every segment it reads from vpcd.
//
// vpcd (virtualsmartcard 0.8, in Debian 12's vsmartcard 3.3; 0.9 sends
// both at once) sends a message in two send() calls, the length and then
// the payload, on a socket with Nagle's algorithm on: the payload leaves
// only once the length is acknowledged. Linux delays that ACK by up to
// 40 ms on a connection it sees as request-response, so every APDU cost
// ~45 ms. TCP_QUICKACK sends the pending ACK at once and leaves
// delayed-ACK mode, but Linux falls back to it after each answer we send:
// so it is set again around every read.
type quickAckReader struct{ conn net.Conn }

func (q quickAckReader) Read(p []byte) (int, error) {
	quickAck(q.conn)
	n, err := q.conn.Read(p)
	if n > 0 {
		quickAck(q.conn)
	}
	return n, err
}

func (in *Inserted) finish(err error) {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		err = nil
	}
	in.err = err
}

// waitReader waits until pcscd reports a card in the reader (present
// true) or none. It blocks in SCardGetStatusChange, so it returns at the
// poll where pcscd sees the change, and asks again shortly when pcscd
// fails (restarting, the reader not yet listed).
func waitReader(ctx context.Context, reader string, present bool) error {
	var last error
	for {
		ok, err := watchReader(ctx, reader, present)
		if ok {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w: %v", ErrNoReader, last)
			}
			state := "present"
			if !present {
				state = "absent"
			}
			return fmt.Errorf("%w: pcscd did not report the card %s in %s", ErrNoReader, state, reader)
		case <-time.After(retryPCSC(err)):
		}
	}
}

// retryPCSC is how long waitReader pauses before watching again: not at
// all after a wait that only timed out, 50 ms after pcscd failed.
func retryPCSC(err error) time.Duration {
	if err == nil {
		return 0
	}
	return 50 * time.Millisecond
}

// watchReader watches every reader pcscd lists until the reader's card
// is present as wanted, or ctx ends (false, nil). It blocks in
// SCardGetStatusChange between changes; ctx's end cancels the call.
func watchReader(ctx context.Context, reader string, present bool) (bool, error) {
	sc, err := pcsc.EstablishContext()
	if err != nil {
		return false, fmt.Errorf("connect to pcscd: %w", err)
	}
	defer sc.Release()
	stop := context.AfterFunc(ctx, func() { sc.Cancel() })
	defer stop()
	readers, err := sc.ListReaders()
	if err != nil {
		return false, fmt.Errorf("list readers: %w", err)
	}
	states := make([]scard.ReaderState, len(readers))
	found := false
	for i, r := range readers {
		states[i] = scard.ReaderState{Reader: r, CurrentState: scard.StateUnaware}
		found = found || strings.EqualFold(r, reader)
	}
	if !found {
		return false, fmt.Errorf("pcscd has no reader %q (readers: %q)", reader, readers)
	}
	var timeout time.Duration // the first call only reads the states
	for {
		err := sc.GetStatusChange(states, timeout)
		if ctx.Err() != nil {
			return false, nil
		}
		if err != nil && !errors.Is(err, scard.ErrTimeout) {
			return false, fmt.Errorf("reader status: %w", err)
		}
		for i := range states {
			st := &states[i]
			if strings.EqualFold(st.Reader, reader) && st.EventState&scard.StatePresent != 0 == present {
				return true, nil
			}
			st.CurrentState = st.EventState &^ scard.StateChanged
		}
		timeout = time.Minute
	}
}
