// Command custos-vcard drives virtual YubiKey PIV cards (package
// custos.dev/custos/cards/vcard) for tests and rehearsals:
//
//	custos-vcard ca --dir DIR
//	custos-vcard new --state FILE --serial N [--version 5.7.1] [--ca DIR]
//	custos-vcard insert --state FILE [--port 35963] [--reader NAME] [--trace]
//
// "ca" creates (or reuses) the virtual attestation CA in DIR and prints the
// path of its root certificate. "new" makes a factory-fresh card; without
// --ca it uses the CA in vcard-ca beside the state file. "insert" puts the
// card into the vpcd reader on the port and serves it until interrupted
// (SIGINT or SIGTERM), which removes it. It waits for pcscd to list the
// card in the reader "Virtual PCD 00 NN" (Debian's vpcd name), or in NAME
// for a vpcd configured with another FRIENDLYNAME (a private pcscd whose
// reader must say "Yubico" for ykcs11 2.2).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"custos.dev/custos/cards/vcard"
)

const usage = `usage:
  custos-vcard ca --dir DIR
  custos-vcard new --state FILE --serial N [--version 5.7.1] [--ca DIR]
  custos-vcard insert --state FILE [--port 35963] [--reader NAME] [--trace]
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "custos-vcard: %v\n", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command")
	}
	fs := flag.NewFlagSet("custos-vcard "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	switch args[0] {
	case "ca":
		dir := fs.String("dir", "", "directory of the virtual attestation ca")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *dir == "" || fs.NArg() != 0 {
			return errors.New("ca: need --dir and no arguments")
		}
		ca, err := vcard.OpenCA(*dir)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, ca.RootPath())
		return nil
	case "new":
		state := fs.String("state", "", "state file to create")
		serial := fs.String("serial", "", "serial number")
		version := fs.String("version", vcard.DefaultVersion, "firmware version")
		caDir := fs.String("ca", "", "directory of the virtual attestation ca (default: vcard-ca beside the state file)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *state == "" || *serial == "" || fs.NArg() != 0 {
			return errors.New("new: need --state and --serial")
		}
		n, err := strconv.ParseUint(*serial, 10, 32)
		if err != nil {
			return fmt.Errorf("new: serial %q is not a number up to 4294967295", *serial)
		}
		if *caDir == "" {
			*caDir = filepath.Join(filepath.Dir(*state), "vcard-ca")
		}
		ca, err := vcard.OpenCA(*caDir)
		if err != nil {
			return err
		}
		card, err := vcard.NewCard(vcard.Config{Serial: uint32(n), Version: *version, CA: ca, StatePath: *state})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "card %d: %s (attestation root %s)\n", card.Serial(), *state, ca.RootPath())
		return nil
	case "insert":
		state := fs.String("state", "", "state file of the card")
		port := fs.Int("port", vcard.Port0, "vpcd port (35963 or 35964)")
		reader := fs.String("reader", "", "the pcsc name of the vpcd reader (default: Virtual PCD 00 NN for the port)")
		trace := fs.Bool("trace", false, "log each apdu header and status word to stderr")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *state == "" || fs.NArg() != 0 {
			return errors.New("insert: need --state")
		}
		card, err := vcard.LoadCard(*state)
		if err != nil {
			return err
		}
		if *trace {
			card.SetTrace(stderr)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if *reader == "" {
			*reader = vcard.ReaderName(*port)
		}
		in, err := card.InsertInto(ctx, *port, *reader)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "card %d inserted in %s\n", card.Serial(), in.Reader())
		select {
		case <-ctx.Done():
		case <-in.Done():
		}
		if err := in.Remove(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "card %d removed\n", card.Serial())
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
