package cards

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"custos.dev/custos/internal/pcsc"
	"github.com/ebfe/scard"
)

// Bounds on what a card may answer, so that a counterfeit or broken card
// can make custos neither loop nor allocate without end.
const (
	// shortMax is the most data one response to a short command APDU
	// carries: Ne is at most 256 (ISO/IEC 7816-4:2020 section 5.1).
	shortMax = 256
	// maxResponse bounds one command's response data, GET RESPONSE
	// chaining included. The largest answer custos asks for is a
	// certificate object: a YubiKey stores objects of at most 3052 bytes,
	// and SP 800-73-4 Part 1 (Appendix A) bounds PIV's certificate
	// containers below 2 KB.
	maxResponse = 4096
	// maxGetResponse bounds the GET RESPONSE commands one response may
	// take: enough for maxResponse in 256-byte pieces.
	maxGetResponse = maxResponse/shortMax + 1
)

// DefaultTimeout is how long one operation on a card (one method of Card,
// every command it sends included) may take before custos gives up on the
// card: longer than a YubiKey waits for a touch (15 seconds), far longer
// than any honest card takes for anything custos asks.
const DefaultTimeout = 30 * time.Second

// apdu is one command custos sends: CLA 00, ISO/IEC 7816-4:2020 section 5.1.
type apdu struct {
	ins, p1, p2 byte
	data        []byte
	// le asks for response data: Le 00, up to 256 bytes (case 2 or 4).
	le bool
	// secret is set when data holds a PIN, PUK or key: the encoded
	// command is wiped once sent.
	secret bool
}

// transport sends command APDUs to one card and collects their answers,
// within the deadline of the current operation. It is not safe for
// concurrent use.
type transport struct {
	reader   string
	timeout  time.Duration
	deadline time.Time
	// xfer is one exchange with the card: the PC/SC link's, or a test's.
	xfer func(cmd []byte, deadline time.Time) ([]byte, error)
	// broken is set once the card failed to answer in time: every later
	// command fails with it at once.
	broken error
}

// begin starts an operation: every command until the next begin must be
// answered before now + timeout.
func (t *transport) begin() { t.deadline = time.Now().Add(t.timeout) }

// exchange sends one command APDU and returns the card's answer.
func (t *transport) exchange(cmd []byte) ([]byte, error) {
	if t.broken != nil {
		return nil, t.broken
	}
	if t.deadline.IsZero() {
		t.begin()
	}
	resp, err := t.xfer(cmd, t.deadline)
	if te, hung := err.(*TimeoutError); hung {
		te.Timeout = t.timeout
		t.broken = te
	}
	return resp, err
}

// send sends c, in pieces with command chaining when its data exceeds 255
// bytes (ISO/IEC 7816-4:2020 section 5.4.1), and returns the response data,
// collected with GET RESPONSE (section 11.5.6) while the card answers 61XX.
// A status word other than 9000 is returned as a swError; an answer no
// card should give (too long, too many pieces, no status word) as a
// *ResponseError.
func (t *transport) send(c apdu) ([]byte, error) {
	data := c.data
	for len(data) > 0xff {
		cmd := make([]byte, 0, 5+0xff)
		cmd = append(cmd, 0x10, c.ins, c.p1, c.p2, 0xff)
		cmd = append(cmd, data[:0xff]...)
		data = data[0xff:]
		resp, err := t.exchange(cmd)
		if c.secret {
			clear(cmd)
		}
		if err != nil {
			return nil, err
		}
		if len(resp) != 2 {
			return nil, t.bad("a %d-byte answer to a chained command piece", len(resp))
		}
		if sw := binary.BigEndian.Uint16(resp); sw != swOK {
			return nil, swError(sw)
		}
	}
	cmd := make([]byte, 0, 6+len(data))
	cmd = append(cmd, 0x00, c.ins, c.p1, c.p2)
	if len(data) > 0 {
		cmd = append(cmd, byte(len(data)))
		cmd = append(cmd, data...)
	}
	if c.le {
		cmd = append(cmd, 0x00)
	}
	resp, err := t.exchange(cmd)
	if c.secret {
		clear(cmd)
	}
	if err != nil {
		return nil, err
	}
	return t.collect(resp)
}

// collect gathers a response: the data of resp and of every GET RESPONSE
// the card asks for with 61XX, within maxResponse bytes and maxGetResponse
// commands.
func (t *transport) collect(resp []byte) ([]byte, error) {
	var out []byte
	fail := func(err error) ([]byte, error) {
		clear(out)
		return nil, err
	}
	for n := 0; ; n++ {
		if len(resp) < 2 {
			return fail(&shortAnswer{reader: t.reader, n: len(resp)})
		}
		body := resp[:len(resp)-2]
		if len(body) > shortMax {
			clear(resp)
			return fail(t.bad("%d bytes of data to a short command, which carries at most %d", len(body), shortMax))
		}
		if len(out)+len(body) > maxResponse {
			clear(resp)
			return fail(t.bad("an answer of more than %d bytes", maxResponse))
		}
		sw := binary.BigEndian.Uint16(resp[len(resp)-2:])
		out = append(out, body...)
		clear(resp)
		switch {
		case sw == swOK:
			return out, nil
		case sw&0xff00 == swBytesRemaining:
			if n >= maxGetResponse {
				return fail(t.bad("more than %d GET RESPONSE commands for one answer", maxGetResponse))
			}
			// GET RESPONSE, ISO/IEC 7816-4:2020 section 11.5.6: Le is
			// what the card said remains (00: 256 or more).
			var err error
			if resp, err = t.exchange([]byte{0x00, insGetResponse, 0x00, 0x00, byte(sw)}); err != nil {
				return fail(err)
			}
		default:
			return fail(swError(sw))
		}
	}
}

// shortAnswer is an answer of fewer than two bytes, without a status word.
// vpcd answers so for a card pulled in the middle of a command, so mapError
// asks pcscd whether the card is still there before it blames the card.
type shortAnswer struct {
	reader string
	n      int
}

func (e *shortAnswer) Error() string {
	return fmt.Sprintf("a %d-byte answer, without a status word", e.n)
}

func (t *transport) bad(format string, args ...any) error {
	return &ResponseError{Reader: t.reader, Detail: fmt.Sprintf(format, args...)}
}

// link is the PC/SC connection under a transport, with a context of its
// own: libpcsclite serialises the calls of one context, so a card that
// never answers holds up only its own.
type link struct {
	reader string
	ctx    *pcsc.Context
	card   *pcsc.Card
	// abandoned is set when a call outlived its deadline: the goroutine
	// still in that call releases the link when pcscd returns.
	abandoned   bool
	releaseOnce sync.Once
	released    atomic.Bool // for tests: the link was let go
}

// connect connects to the card in reader, within deadline, on a context
// of the link's own: the spare one a wait left (spare), else a new one.
func connect(reader string, mode scard.ShareMode, deadline time.Time) (*link, error) {
	if ctx := takeSpare(); ctx != nil {
		l, err := connectOn(ctx, reader, mode, deadline)
		if err == nil || !deadContext(err) {
			return l, err
		}
	}
	ctx, err := pcsc.EstablishContext()
	if err != nil {
		return nil, err
	}
	return connectOn(ctx, reader, mode, deadline)
}

// connectOn connects to the card in reader on ctx, within deadline. On an
// error ctx is released (by the call left running, after a timeout).
func connectOn(ctx *pcsc.Context, reader string, mode scard.ShareMode, deadline time.Time) (*link, error) {
	l := &link{reader: reader, ctx: ctx}
	err := l.within(deadline, func() error {
		card, err := ctx.Connect(reader, mode, scard.ProtocolT1|scard.ProtocolT0)
		l.card = card
		return err
	})
	if err != nil {
		if !l.abandoned {
			ctx.Release()
		}
		return nil, err
	}
	return l, nil
}

// within runs f, a call into pcscd, and returns its error, or a
// *TimeoutError once deadline passes first. pcsc-lite cannot cancel a call
// in progress: SCardCancel ends only SCardGetStatusChange, and the client
// library waits for pcscd's answer with poll(2) and no timeout, while
// pcscd waits on the reader's driver, which for a card that keeps asking
// for more time (or a vpcd card that never answers) waits until the card
// is removed. So f is left to finish in its goroutine, which then releases
// the link; the link is not used again.
func (l *link) within(deadline time.Time, f func() error) error {
	if l.abandoned {
		return &TimeoutError{Reader: l.reader}
	}
	left := time.Until(deadline)
	if left <= 0 {
		return &TimeoutError{Reader: l.reader}
	}
	done := make(chan error, 1)
	go func() { done <- f() }()
	timer := time.NewTimer(left)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		l.abandoned = true
		abandoned.Add(1)
		go func() {
			defer abandoned.Done()
			err := <-done
			if hook := testHookBeforeRelease.Load(); hook != nil {
				(*hook)()
			}
			l.release(err)
		}()
		return &TimeoutError{Reader: l.reader}
	}
}

// abandoned counts the links given up at a deadline whose call has not yet
// ended and released them. Such a link's release resets the card, and
// pcscd resets whichever card its reader holds by then: the tests that
// leave a card hanging wait on this before they put a card back.
var abandoned sync.WaitGroup

// testHookBeforeRelease, when set by a test, runs in a given-up call's
// goroutine once the call has ended, before the link is released.
var testHookBeforeRelease atomic.Pointer[func()]

// transmit is one exchange over the link. The answer comes back through a
// channel: a call given up at the deadline must not write into the caller's
// variables later.
func (l *link) transmit(cmd []byte, deadline time.Time) ([]byte, error) {
	answer := make(chan []byte, 1)
	err := l.within(deadline, func() error {
		resp, err := l.card.Transmit(cmd)
		answer <- resp
		return err
	})
	if err != nil {
		return nil, err
	}
	return <-answer, nil
}

// close releases the link unless a call still runs in it (that call's
// goroutine releases it). reset resets the card, which ends its security
// status (PIN verified, management key authenticated) for whoever connects
// next.
func (l *link) close(reset bool) error {
	if l.abandoned {
		return nil
	}
	var err error
	l.releaseOnce.Do(func() {
		disp := scard.LeaveCard
		if reset {
			disp = scard.ResetCard
		}
		if l.card != nil {
			err = l.card.Disconnect(disp)
		}
		if l.ctx != nil {
			if err == nil {
				putSpare(l.ctx) // for the next wait or link
			} else {
				l.ctx.Release()
			}
		}
		l.released.Store(true)
	})
	return err
}

// release is close after an abandoned call, whose error is callErr: the
// card is reset, so that a PIN verified before it is not left usable,
// unless the card has left the reader. pcscd resets whatever card the
// reader holds when the disconnect reaches it, not the one this link
// connected to: a call left hanging ends when its card is pulled, and by
// then the next custodian's card may be in the same reader, its own
// session under way. Such a card is left alone: the card of this link
// is gone and took its session with it.
func (l *link) release(callErr error) {
	l.releaseOnce.Do(func() {
		if l.card != nil {
			l.card.Disconnect(releaseDisposition(callErr, l.card.Status))
		}
		if l.ctx != nil {
			l.ctx.Release()
		}
		l.released.Store(true)
	})
}

// releaseDisposition is how release ends a link: ResetCard, unless the
// call's error or pcscd (status, SCardStatus on the link's handle) says
// that the card the link connected to has left its reader or was reset
// since, when resetting could only reach another card.
func releaseDisposition(callErr error, status func() error) scard.Disposition {
	gone := func(err error) bool {
		return errors.Is(err, scard.ErrRemovedCard) || errors.Is(err, scard.ErrResetCard) ||
			errors.Is(err, scard.ErrNoSmartcard)
	}
	if gone(callErr) || gone(status()) {
		return scard.LeaveCard
	}
	return scard.ResetCard
}
