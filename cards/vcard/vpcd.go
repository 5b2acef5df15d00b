package vcard

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
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
	conn, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return fail(fmt.Errorf("%w: %v", ErrNoReader, err))
	}
	in.conn = conn
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
// APDU answered by its response APDU.
func (in *Inserted) serve() {
	defer close(in.done)
	r := bufio.NewReader(in.conn)
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
				in.card.powerCycle()
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

func (in *Inserted) finish(err error) {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		err = nil
	}
	in.err = err
}

// waitReader polls pcscd until the reader reports a card (present true)
// or none.
func waitReader(ctx context.Context, reader string, present bool) error {
	var last error
	for {
		ok, err := readerHasCard(reader)
		if err == nil && ok == present {
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
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func readerHasCard(reader string) (bool, error) {
	ctx, err := scard.EstablishContext()
	if err != nil {
		return false, fmt.Errorf("connect to pcscd: %w", err)
	}
	defer ctx.Release()
	readers, err := ctx.ListReaders()
	if err != nil {
		return false, fmt.Errorf("list readers: %w", err)
	}
	found := false
	for _, r := range readers {
		if strings.EqualFold(r, reader) {
			found = true
		}
	}
	if !found {
		return false, fmt.Errorf("pcscd has no reader %q (readers: %q)", reader, readers)
	}
	rs := []scard.ReaderState{{Reader: reader, CurrentState: scard.StateUnaware}}
	if err := pcsc.GetStatusChange(ctx, rs, 0); err != nil && !errors.Is(err, scard.ErrTimeout) {
		return false, fmt.Errorf("reader status: %w", err)
	}
	return rs[0].EventState&scard.StatePresent != 0, nil
}
