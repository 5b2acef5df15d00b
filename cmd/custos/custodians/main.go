// Command custodians plays the custodians of a rehearsal (scripts/rehearse):
// it runs a custos command and, each time custos asks for a card, inserts
// the next virtual card of its list into a vpcd reader and takes the last
// one out, as the next custodian in line would (the cards alternate between
// the two readers, so that custos need not wait for pcscd to see a card
// leave before it sees the next). Everything custos says is shown on
// standard error, with the card swaps marked "»". Standard input goes to
// custos untouched: PINs and passphrases one line per prompt.
//
//	custodians [--port 35963] [--first] [--counts] --cards STATE[,STATE...] -- custos ARGS...
//
// With --counts it says at the end, for each card, how many APDUs the card
// received and of which instructions (scripts/bench counts them).
//
// It exits with the command's exit code. For tests and rehearsals on
// virtual cards only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/cmd/custos/internal/custodians"
)

func main() {
	fs := flag.NewFlagSet("custodians", flag.ContinueOnError)
	port := fs.Int("port", vcard.Port0, "vpcd port of the reader the first card goes into")
	first := fs.Bool("first", false, "insert the first card before the command starts")
	counts := fs.Bool("counts", false, "say how many APDUs each card received, at the end")
	list := fs.String("cards", "", "comma-separated state files of the virtual cards, in the order they are inserted")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() == 0 || *list == "" {
		fmt.Fprintln(os.Stderr, "usage: custodians [--port P] [--first] --cards STATE[,STATE...] -- PROGRAM ARGS...")
		os.Exit(2)
	}
	deck := &custodians.Deck{Port: *port}
	for _, p := range strings.Split(*list, ",") {
		c, err := vcard.LoadCard(p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "custodians: %v\n", err)
			os.Exit(1)
		}
		deck.Cards = append(deck.Cards, c)
	}
	ctx := context.Background()
	if *first {
		in, err := deck.Insert(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "custodians: %v\n", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "» card %d inserted into %s\n", in.Card().Serial(), in.Reader())
	}
	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	cmd.Stdin, cmd.Stdout = os.Stdin, os.Stdout
	err := custodians.Run(ctx, cmd, deck, os.Stderr)
	if rerr := deck.Remove(); rerr != nil && err == nil {
		err = rerr
	}
	if *counts {
		for _, c := range deck.Cards {
			n := c.Counts()
			var by []string
			for ins, k := range n.Instructions {
				if k > 0 {
					by = append(by, fmt.Sprintf("%02X:%d", ins, k))
				}
			}
			fmt.Fprintf(os.Stderr, "» apdus: card %d: %d (%s)\n", c.Serial(), n.APDUs, strings.Join(by, " "))
		}
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		os.Exit(ee.ExitCode())
	case err != nil:
		fmt.Fprintf(os.Stderr, "custodians: %v\n", err)
		os.Exit(1)
	}
}
