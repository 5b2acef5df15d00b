package cards

import (
	"errors"
	"sync"

	"custos.dev/custos/internal/pcsc"
	"github.com/ebfe/scard"
)

// spare is one PC/SC context kept between uses. Establishing a context
// and releasing it cost a connection to pcscd and three round trips
// (about 140 µs of custos's processor time, most of it the Go runtime
// taking its processor back around each blocking C call), and a ceremony
// made two a card: one to wait for the card, one to talk to it. A wait
// that found what it waited for, and a link closed without error, leave
// their context here; the next wait or link takes it instead of
// establishing one. A context has one owner at a time: takeSpare hands it
// over, putSpare takes it back.
var spare struct {
	mu  sync.Mutex
	ctx *pcsc.Context
}

// takeSpare returns the spare context and forgets it, or nil.
func takeSpare() *pcsc.Context {
	spare.mu.Lock()
	defer spare.mu.Unlock()
	c := spare.ctx
	spare.ctx = nil
	return c
}

// putSpare keeps c as the spare context, releasing the one it replaces.
func putSpare(c *pcsc.Context) {
	spare.mu.Lock()
	old := spare.ctx
	spare.ctx = c
	spare.mu.Unlock()
	if old != nil {
		old.Release()
	}
}

// deadContext reports whether err, the first call's on a spare context,
// may say the context is gone (pcscd restarted since it was established,
// or it was released: pcsc-lite then answers invalid handle, or no
// service or a communication error on its socket): the call is then made
// again on a new context, so that it fails or succeeds as it would have on
// one. Any other error is what a new context would have met too.
func deadContext(err error) bool {
	return errors.Is(err, scard.ErrInvalidHandle) || errors.Is(err, scard.ErrNoService) ||
		errors.Is(err, scard.ErrServiceStopped) || errors.Is(err, scard.ErrCommError)
}

// listContext returns a context and the readers pcscd lists on it (none
// is an empty list): the spare context when there is one and it answers,
// else a new one.
func listContext() (*pcsc.Context, []string, error) {
	list := func(c *pcsc.Context) ([]string, error) {
		names, err := c.ListReaders()
		if errors.Is(err, scard.ErrNoReadersAvailable) {
			return nil, nil
		}
		return names, err
	}
	if c := takeSpare(); c != nil {
		names, err := list(c)
		if err == nil || !deadContext(err) {
			if err != nil {
				c.Release()
				return nil, nil, err
			}
			return c, names, nil
		}
		c.Release()
	}
	c, err := pcsc.EstablishContext()
	if err != nil {
		return nil, nil, err
	}
	names, err := list(c)
	if err != nil {
		c.Release()
		return nil, nil, err
	}
	return c, names, nil
}
