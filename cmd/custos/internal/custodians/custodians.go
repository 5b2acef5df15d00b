// Package custodians plays the custodians of a rehearsal or a test on
// virtual cards: it runs a custos command, shows what custos says, and each
// time custos asks for a card (a message beginning "insert") it takes the
// last card out and puts the next one of its deck into the other reader,
// as the next custodian in line would. PINs and passphrases are not its
// business: the command reads them from its own standard input, one line
// per prompt, in the order the README lists.
package custodians

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"

	"custos.dev/custos/cards/vcard"
)

// Deck is the cards to hand over, in order, and the two vpcd readers they
// go into.
//
// Each swap puts the next card into the reader the last card is not in,
// and takes the last card out in the background: custos sees the next card
// at pcscd's next poll of its reader, instead of first waiting for pcscd
// to see the old card leave (its polls are 400 ms apart) and then for the
// poll after. A reader is reused only once pcscd saw its card leave.
// custos's card source takes a card newly in any reader, so it cannot
// tell the difference, and the order of the cards is the deck's.
type Deck struct {
	// Port is the first card's reader (vcard.Port0 when zero); the swaps
	// alternate between it and the other vpcd reader.
	Port  int
	Cards []*vcard.Card

	mu      sync.Mutex
	next    int
	in      *vcard.Inserted
	leaving *removal // the card before in, on its way out
}

// removal is a card being taken out in the background.
type removal struct {
	in   *vcard.Inserted
	done chan struct{}
	err  error
}

func startRemoval(in *vcard.Inserted) *removal {
	r := &removal{in: in, done: make(chan struct{})}
	go func() {
		r.err = in.Remove()
		close(r.done)
	}()
	return r
}

func (r *removal) wait() error {
	<-r.done
	if r.err != nil {
		return fmt.Errorf("remove card %d: %w", r.in.Card().Serial(), r.err)
	}
	return nil
}

// Insert takes the last card out and puts the next card of the deck into
// the other reader. It returns the card inserted, or nil when the deck is
// spent (the readers are then left empty).
func (d *Deck) Insert(ctx context.Context) (*vcard.Inserted, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.next >= len(d.Cards) {
		return nil, d.removeLocked()
	}
	c := d.Cards[d.next]
	d.next++
	port := d.firstPort()
	var out *removal
	if old := d.in; old != nil {
		d.in = nil
		if old.Card() == c {
			// The same card again: out before it goes back in.
			if err := startRemoval(old).wait(); err != nil {
				return nil, err
			}
			port = old.Port()
		} else {
			out = startRemoval(old)
			port = otherPort(old.Port())
		}
	}
	// The card taken out at the swap before left the reader this one goes
	// into (and it may be this very card).
	err := d.waitLeaving()
	d.leaving = out
	if err != nil {
		return nil, err
	}
	in, err := c.Insert(context.WithoutCancel(ctx), port)
	if err != nil {
		return nil, fmt.Errorf("insert card %d: %w", c.Serial(), err)
	}
	d.in = in
	return in, nil
}

// Remove takes out every card the deck put in, and returns once pcscd has
// seen them leave.
func (d *Deck) Remove() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.removeLocked()
}

func (d *Deck) removeLocked() error {
	var last error
	if d.in != nil {
		last = startRemoval(d.in).wait()
		d.in = nil
	}
	return errors.Join(d.waitLeaving(), last)
}

// waitLeaving waits for the background removal, if any.
func (d *Deck) waitLeaving() error {
	if d.leaving == nil {
		return nil
	}
	r := d.leaving
	d.leaving = nil
	return r.wait()
}

func (d *Deck) firstPort() int {
	if d.Port == 0 {
		return vcard.Port0
	}
	return d.Port
}

func otherPort(port int) int {
	if port == vcard.Port0 {
		return vcard.Port1
	}
	return vcard.Port0
}

// Left is how many cards of the deck were not handed over.
func (d *Deck) Left() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.Cards) - d.next
}

// Run starts cmd, whose Stdin and Stdout the caller has set, copies its
// standard error line by line to echo and, on each line that begins with
// "insert", swaps the next card of deck in and tells echo so (prefixed
// with "» "). It returns cmd's result; the card left in a reader stays
// there (call deck.Remove).
func Run(ctx context.Context, cmd *exec.Cmd, deck *Deck, echo io.Writer) error {
	pr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	var swapErr error
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(echo, line)
		if !strings.HasPrefix(strings.TrimSpace(line), "insert") || deck == nil {
			continue
		}
		in, err := deck.Insert(ctx)
		switch {
		case err != nil:
			swapErr = err
			fmt.Fprintf(echo, "» %v\n", err)
		case in == nil:
			fmt.Fprintf(echo, "» (no card left to insert)\n")
		default:
			fmt.Fprintf(echo, "» card %d inserted into %s\n", in.Card().Serial(), in.Reader())
		}
	}
	werr := cmd.Wait()
	if werr == nil && swapErr != nil {
		return swapErr
	}
	return errors.Join(werr, sc.Err())
}
