package realtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Readers is one pcscd and its two vpcd readers, "Virtual PCD 00 00" and
// "Virtual PCD 00 01", as a test process uses them.
type Readers struct {
	// Socket is the pcscd's socket.
	Socket string
	// Port0 is the TCP port on which the card side of "Virtual PCD 00 00"
	// connects; "Virtual PCD 00 01" is on Port0+1.
	Port0 int
	// LockFile is the file whose flock serialises the tests that insert
	// cards into these readers.
	LockFile string
}

// The readers of the machine's pcscd (Debian's vpcd configuration).
var machineReaders = Readers{Socket: PCSCDSocket, Port0: 35963, LockFile: ReadersLock}

// ReaderPoolEnv names the private pcscds scripts/test starts beside the
// machine's (scripts/pcscd.sh, start_reader_pool): SOCKET:PORT0 entries,
// comma-separated, each a pcscd in a mount namespace of its own with two
// vpcd readers on PORT0 and PORT0+1.
const ReaderPoolEnv = "CUSTOS_READER_POOL"

// The variables that point a process, and the processes it starts, at the
// readers it is bound to: libpcsclite's client socket, and the TCP port of
// reader 00 00 for the card side (cards/vcard reads it: VPCDBaseEnv there).
const (
	SocketEnv   = "PCSCLITE_CSOCK_NAME"
	VPCDBaseEnv = "CUSTOS_VPCD_BASE"
)

var bound struct {
	once  sync.Once
	r     Readers
	claim *os.File // held for the life of the process
}

// Bound returns the readers this process uses, chosen at the first call:
// the readers a parent process bound it to (SocketEnv inherited), else a
// member of the reader pool that no other process has claimed (the claim
// is held until the process exits), else the machine's.
//
// # Caveats
//
// libpcsclite reads SocketEnv once, at a process's first PC/SC call: a
// process that talked to pcscd before its first Bound (or LockReaders)
// stays on the machine's pcscd while Bound may name a pool member. Every
// test that uses the readers calls LockReaders before its first PC/SC call.
func Bound() Readers {
	bound.once.Do(func() { bound.r = bind() })
	return bound.r
}

func bind() Readers {
	if sock := os.Getenv(SocketEnv); sock != "" {
		r := Readers{Socket: sock, Port0: machineReaders.Port0, LockFile: filepath.Join(filepath.Dir(sock), "readers.lock")}
		if p, err := strconv.Atoi(os.Getenv(VPCDBaseEnv)); err == nil && p > 0 {
			r.Port0 = p
		}
		return r
	}
	for _, r := range pool() {
		f, err := os.OpenFile(filepath.Join(filepath.Dir(r.Socket), "claim.lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close()
			continue
		}
		bound.claim = f
		os.Setenv(SocketEnv, r.Socket)
		os.Setenv(VPCDBaseEnv, strconv.Itoa(r.Port0))
		return r
	}
	return machineReaders
}

// pool parses ReaderPoolEnv; entries it cannot read are left out.
func pool() []Readers {
	var out []Readers
	for _, e := range strings.Split(os.Getenv(ReaderPoolEnv), ",") {
		sock, port, ok := strings.Cut(strings.TrimSpace(e), ":")
		p, err := strconv.Atoi(port)
		if !ok || err != nil || p <= 0 || !filepath.IsAbs(sock) {
			continue
		}
		out = append(out, Readers{Socket: sock, Port0: p, LockFile: filepath.Join(filepath.Dir(sock), "readers.lock")})
	}
	return out
}

// Env returns the variables a process started with an environment of its
// own (a testscript, a child with cmd.Env set) needs to use the same
// readers: none when the process uses the machine's.
func (r Readers) Env() []string {
	if r == machineReaders {
		return nil
	}
	return []string{SocketEnv + "=" + r.Socket, VPCDBaseEnv + "=" + strconv.Itoa(r.Port0)}
}

// WithoutReaders returns env without the variables of Env: for a child
// that runs a pcscd of its own and must not be pointed at the pool's.
func WithoutReaders(env []string) []string {
	var out []string
	for _, e := range env {
		if strings.HasPrefix(e, SocketEnv+"=") || strings.HasPrefix(e, VPCDBaseEnv+"=") {
			continue
		}
		out = append(out, e)
	}
	return out
}

// Lock waits for the flock on r.LockFile and returns its release: what
// LockReaders does for a caller that is not a test (a testscript's script).
func (r Readers) Lock() (func(), error) {
	f, err := os.OpenFile(r.LockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open readers lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock readers: %w", err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
