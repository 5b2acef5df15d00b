// Command custos puts a LUKS volume's recovery key in the hands of a quorum
// of custodians, each holding a PIV smartcard.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "custos: error: no ceremony commands are built yet")
	return 1
}
