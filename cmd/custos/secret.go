package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"custos.dev/custos/internal/secmem"
)

// lockdown protects the secrets this process will hold: no core dumps and
// no ptrace by other users' processes. Secrets themselves go to pages of
// their own (package secmem), locked when the kernel allows it; lockdown
// tries one such page to say whether it does. What it finds is returned as
// notes for --debug, never as a failure.
//
// The rest of memory is not locked: mlockall would lock the Go runtime's
// whole heap reservation (over 100 MiB resident, 50 ms at every start) to
// protect a few dozen bytes.
func lockdown() (notes []string) {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		notes = append(notes, fmt.Sprintf("prctl PR_SET_DUMPABLE: %v", err))
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		notes = append(notes, fmt.Sprintf("setrlimit RLIMIT_CORE: %v", err))
	}
	b, err := secmem.New(0)
	switch {
	case err != nil:
		notes = append(notes, fmt.Sprintf("secrets not locked: %v", err))
	case !b.Locked():
		notes = append(notes, fmt.Sprintf("secrets not locked: %v; they are still kept out of core dumps and wiped", b.LockErr()))
	default:
		notes = append(notes, "secrets (pins, puks, passphrases, key files) are held in locked pages, out of core dumps; the rest of memory is not locked")
	}
	b.Free()
	return notes
}

// maxKeyFile is cryptsetup's default limit on a key file (--keyfile-size).
const maxKeyFile = 8 << 20

// readKeyFile reads a key file as cryptsetup does: the whole file, every
// byte of it (a trailing newline is part of the key), and "-" for standard
// input. The key goes straight into a secmem buffer; the caller frees it.
func readKeyFile(in *input, path string) (*secmem.Buf, error) {
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
		if k.Len() == 0 {
			k.Free()
			return nil, errors.New("key file on standard input is empty")
		}
		return k, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open key file: %w", err)
	}
	defer f.Close()
	size := 0
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() <= maxKeyFile {
		size = int(fi.Size())
	}
	k, err := secmem.New(0)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	// Room for the whole file and one byte more, to see its end without
	// moving the key.
	if err := k.Grow(size + 1); err != nil {
		k.Free()
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if err := k.ReadAll(f, maxKeyFile); err != nil {
		k.Free()
		if errors.Is(err, secmem.ErrTooLong) {
			return nil, fmt.Errorf("key file %s larger than %d bytes", path, maxKeyFile)
		}
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if k.Len() == 0 {
		k.Free()
		return nil, fmt.Errorf("key file %s is empty", path)
	}
	return k, nil
}

// cpuTimes says, for --debug, the processor time custos used itself and
// in the programs it ran (cryptsetup), so that a benchmark can tell
// custos's own cost from cryptsetup's (scripts/bench).
func cpuTimes() string {
	var self, children unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &self) != nil || unix.Getrusage(unix.RUSAGE_CHILDREN, &children) != nil {
		return "cpu: unknown"
	}
	ms := func(r unix.Rusage) float64 {
		return float64(r.Utime.Sec+r.Stime.Sec)*1e3 + float64(r.Utime.Usec+r.Stime.Usec)/1e3
	}
	return fmt.Sprintf("cpu: custos %.1f ms, the programs it ran %.1f ms", ms(self), ms(children))
}
