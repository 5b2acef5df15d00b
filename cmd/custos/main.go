// Command custos puts a LUKS volume's recovery key in the hands of a quorum
// of custodians, each holding a PIV smartcard.
//
// Run "custos --help", or read the man page ("custos gen-man | man -l -").
package main

import (
	"os"
)

func main() {
	os.Exit(mainExit())
}

// mainExit is main without os.Exit, registered with testscript.
func mainExit() int {
	tune()
	startupNotes = append(lockdown(), timerSlackNote())
	return run(newApp(os.Stdin, os.Stdout, os.Stderr), os.Args)
}
