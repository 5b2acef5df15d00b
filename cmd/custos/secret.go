package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockdown protects the secrets this process will hold: no core dumps, no
// ptrace by other users' processes, and memory locked so that secrets are not
// swapped out. Locking memory is best effort (it needs CAP_IPC_LOCK or a
// high RLIMIT_MEMLOCK); what could not be done is returned as notes for
// --debug, never as a failure.
func lockdown() (notes []string) {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		notes = append(notes, fmt.Sprintf("prctl PR_SET_DUMPABLE: %v", err))
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		notes = append(notes, fmt.Sprintf("setrlimit RLIMIT_CORE: %v", err))
	}
	if raceEnabled {
		// The race detector maps terabytes of shadow memory; locking it
		// all would exhaust the machine.
		return append(notes, "memory not locked: race detector build")
	}
	// EPERM (no CAP_IPC_LOCK) and ENOMEM (RLIMIT_MEMLOCK too low) are the
	// usual answers for an unprivileged user; no answer is fatal.
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE); err != nil {
		notes = append(notes, fmt.Sprintf("memory not locked: mlockall: %v", err))
	}
	return notes
}

// wipe overwrites a secret held in b.
func wipe(b []byte) {
	clear(b)
}

// maxKeyFile is cryptsetup's default limit on a key file (--keyfile-size).
const maxKeyFile = 8 << 20

// readKeyFile reads a key file as cryptsetup does: the whole file, every
// byte of it (a trailing newline is part of the key), and "-" for standard
// input. The caller wipes the result.
func readKeyFile(in *input, path string) ([]byte, error) {
	if path == "-" {
		if in.tty {
			return nil, &cliError{code: exitUsage, err: errors.New("--key-file -: standard input is a terminal"),
				hint: "give the key file's path, or pipe the key in"}
		}
		k, err := in.readAll(maxKeyFile)
		in.keyFileTookAll = true
		if err != nil {
			return nil, err
		}
		if len(k) == 0 {
			return nil, errors.New("key file on standard input is empty")
		}
		return k, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open key file: %w", err)
	}
	defer f.Close()
	k, err := (&input{r: f}).readAll(maxKeyFile)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if len(k) == 0 {
		return nil, fmt.Errorf("key file %s is empty", path)
	}
	return k, nil
}
