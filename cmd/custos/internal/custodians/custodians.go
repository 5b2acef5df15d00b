// Package custodians plays the custodians of a rehearsal or a test on
// virtual cards: it runs a custos command, shows what custos says, and each
// time custos asks for a card (a message beginning "insert") it takes the
// card out of the reader and puts in the next one of its deck, as the next
// custodian in line would. PINs and passphrases are not its business: the
// command reads them from its own standard input, one line per prompt, in
// the order the README lists.
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

// Deck is a reader and the cards to hand over, in order.
type Deck struct {
	Port  int
	Cards []*vcard.Card

	mu   sync.Mutex
	next int
	in   *vcard.Inserted
}

// Insert puts the next card of the deck into the reader, taking out the one
// there. It returns the card inserted, or nil when the deck is spent (the
// reader is then left empty).
func (d *Deck) Insert(ctx context.Context) (*vcard.Card, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.removeLocked(); err != nil {
		return nil, err
	}
	if d.next >= len(d.Cards) {
		return nil, nil
	}
	c := d.Cards[d.next]
	d.next++
	in, err := c.Insert(context.WithoutCancel(ctx), d.Port)
	if err != nil {
		return nil, fmt.Errorf("insert card %d: %w", c.Serial(), err)
	}
	d.in = in
	return c, nil
}

// Remove takes the card in the reader out, if any.
func (d *Deck) Remove() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.removeLocked()
}

func (d *Deck) removeLocked() error {
	if d.in == nil {
		return nil
	}
	err := d.in.Remove()
	d.in = nil
	return err
}

// Left is how many cards of the deck were not handed over.
func (d *Deck) Left() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.Cards) - d.next
}

// Run starts cmd, whose Stdin and Stdout the caller has set, copies its
// standard error line by line to echo and, on each line that begins with
// "insert", swaps the next card of deck into the reader and tells echo so
// (prefixed with "» "). It returns cmd's result; the card left in the
// reader stays there (call deck.Remove).
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
		c, err := deck.Insert(ctx)
		switch {
		case err != nil:
			swapErr = err
			fmt.Fprintf(echo, "» %v\n", err)
		case c == nil:
			fmt.Fprintf(echo, "» (no card left to insert)\n")
		default:
			fmt.Fprintf(echo, "» card %d inserted into %s\n", c.Serial(), vcard.ReaderName(deck.Port))
		}
	}
	werr := cmd.Wait()
	if werr == nil && swapErr != nil {
		return swapErr
	}
	return errors.Join(werr, sc.Err())
}
