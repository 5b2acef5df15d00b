package luks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv is the whole environment of every cryptsetup child: C messages
// (classify matches them) and a PATH for the helpers it may exec. Nothing
// of the caller's environment is passed on.
var childEnv = []string{"LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}

// cancelGrace is how long a cancelled cryptsetup gets after SIGTERM (which
// it handles: it stops the PBKDF and wipes its buffers) before SIGKILL.
const cancelGrace = 5 * time.Second

// maxStderr bounds the stderr kept in a CryptsetupError.
const maxStderr = 512

// firstInputFD is the descriptor number of the first input pipe in the
// child: 0, 1 and 2 are stdin, stdout and stderr, and exec.Cmd.ExtraFiles
// continue from 3.
const firstInputFD = 3

// fdPath names the child's inherited descriptor n; cryptsetup opens it as a
// key file and reads it to EOF.
func fdPath(n int) string { return fmt.Sprintf("/dev/fd/%d", n) }

// run is one cryptsetup invocation.
type run struct {
	op     string   // the cryptsetup action, first argument
	args   []string // options and operands after op
	inputs [][]byte // written to pipes on descriptors 3, 4, ... (keys, token JSON)
	write  bool     // the action writes the header: check write access first
	target string   // the file the action works on, for errors and probes (default v.Path)
}

// systemCryptsetup are where Debian and most distributions install
// cryptsetup, looked at before PATH: a directory early in a root shell's
// PATH (a user's ~/bin, a writable /usr/local/sbin) must not decide which
// program gets the volume's keys.
var systemCryptsetup = []string{"/usr/sbin/cryptsetup", "/sbin/cryptsetup"}

// binary returns the cryptsetup program to run.
func (v *Volume) binary() (string, error) {
	if v.Cryptsetup != "" {
		return v.Cryptsetup, nil
	}
	for _, p := range systemCryptsetup {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath("cryptsetup"); err == nil {
		return p, nil
	}
	return "", errors.New("cryptsetup not found in /usr/sbin, /sbin or PATH: install cryptsetup-bin")
}

// preflight checks that the target exists and can be opened as the action
// needs, so that a missing file or a permission problem gets its own error
// instead of cryptsetup's "does not exist or access denied".
func preflight(path string, write bool) error {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.ETXTBSY) {
			return fmt.Errorf("%w: %w", ErrPermission, err)
		}
		if errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("%w: %w", ErrBusy, err)
		}
		return fmt.Errorf("open volume: %w", err)
	}
	return f.Close()
}

// exec runs cryptsetup and returns its stdout. Inputs are written to pipes
// that the child inherits; the parent closes its copy of each read end
// right after the start, so the pipes reach no other process.
func (v *Volume) exec(ctx context.Context, r run) ([]byte, error) {
	if r.target == "" {
		r.target = v.Path
	}
	if err := preflight(r.target, r.write); err != nil {
		return nil, err
	}
	bin, err := v.binary()
	if err != nil {
		return nil, err
	}

	cmd := exec.CommandContext(ctx, bin, append([]string{r.op}, r.args...)...)
	cmd.Env = childEnv
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = cancelGrace
	stdout, stderr := newOutput("stdout"), newOutput("stderr")
	defer stdout.close()
	defer stderr.close()
	cmd.Stdout, cmd.Stderr = stdout.w, stderr.w

	readers := make([]*os.File, 0, len(r.inputs))
	writers := make([]*os.File, 0, len(r.inputs))
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	for range r.inputs {
		pr, pw, err := os.Pipe()
		if err != nil {
			closeAll(readers)
			closeAll(writers)
			return nil, fmt.Errorf("make pipe: %w", err)
		}
		readers = append(readers, pr)
		writers = append(writers, pw)
	}
	cmd.ExtraFiles = readers

	if err := cmd.Start(); err != nil {
		closeAll(readers)
		closeAll(writers)
		return nil, fmt.Errorf("start cryptsetup: %w", err)
	}
	closeAll(readers)

	// Each input is written by its own goroutine: a child that reads them
	// in another order, or not at all, must not deadlock the parent. A
	// child that exits without reading makes the write fail with EPIPE,
	// which is not an error here: its exit status says what happened.
	var wg sync.WaitGroup
	for i, in := range r.inputs {
		wg.Add(1)
		go func(w *os.File, in []byte) {
			defer wg.Done()
			defer w.Close()
			_, _ = io.Copy(w, bytes.NewReader(in))
		}(writers[i], in)
	}
	waitErr := cmd.Wait()
	wg.Wait()

	if waitErr == nil {
		return stdout.bytes()
	}
	if ctx.Err() != nil {
		if locked(r.target) {
			return nil, fmt.Errorf("cryptsetup %s %s: %w (%w)", r.op, r.target, ErrBusy, ctx.Err())
		}
		return nil, fmt.Errorf("cryptsetup %s %s: %w", r.op, r.target, ctx.Err())
	}
	code := -1
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		code = ee.ExitCode()
	} else {
		return nil, fmt.Errorf("cryptsetup %s %s: %w", r.op, r.target, waitErr)
	}
	// With --verbose, cryptsetup reports some failures ("Command failed
	// with code -2 (no permission or bad passphrase).") on stdout only.
	errText, _ := stderr.bytes()
	outText, _ := stdout.bytes()
	msg := sanitize(append(errText, outText...), r.inputs)
	return nil, &CryptsetupError{
		Op:       r.op,
		Path:     r.target,
		ExitCode: code,
		Stderr:   msg,
		Err:      classify(code, msg, probeHeader(r.target), r.write, r.target),
	}
}

// output is where one of cryptsetup's output streams goes: an anonymous
// memory file (memfd_create(2)) the child writes to directly and the
// parent reads once the child has exited, or, where the kernel offers no
// memory file, a buffer filled through a pipe by a goroutine of os/exec.
// cryptsetup writes no secret to either stream.
type output struct {
	w    io.Writer
	file *os.File      // the memory file, or nil
	buf  *bytes.Buffer // the buffer when there is no memory file
}

// memfdCreate is unix.MemfdCreate; tests take it away.
var memfdCreate = unix.MemfdCreate

func newOutput(name string) *output {
	fd, err := memfdCreate("cryptsetup "+name, unix.MFD_CLOEXEC)
	if err != nil {
		b := new(bytes.Buffer)
		return &output{w: b, buf: b}
	}
	f := os.NewFile(uintptr(fd), "cryptsetup "+name)
	return &output{w: f, file: f}
}

// bytes is what the child wrote, once it has exited.
func (o *output) bytes() ([]byte, error) {
	if o.file == nil {
		return o.buf.Bytes(), nil
	}
	if _, err := o.file.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("read cryptsetup's output: %w", err)
	}
	b, err := io.ReadAll(o.file)
	if err != nil {
		return nil, fmt.Errorf("read cryptsetup's output: %w", err)
	}
	return b, nil
}

func (o *output) close() {
	if o.file != nil {
		o.file.Close()
	}
}

// classify maps cryptsetup's exit code and stderr to a sentinel error, or
// nil. It is the one place that knows cryptsetup's messages (LC_ALL=C,
// cryptsetup 2.x) and exit codes (cryptsetup(8), RETURN CODES: 1 wrong
// parameters, 2 no permission (bad passphrase), 3 out of memory, 4 wrong
// device specified, 5 device already exists or device is busy).
//
// hdr is what the target's first bytes say about a LUKS header; it tells a
// damaged header from no header, and LUKS1 from LUKS2, where cryptsetup's
// messages do not.
func classify(code int, stderr string, hdr headerProbe, write bool, path string) error {
	has := func(s ...string) bool {
		for _, x := range s {
			if strings.Contains(stderr, x) {
				return true
			}
		}
		return false
	}
	switch {
	case has(": unknown option"):
		return errUnknownOption
	case strings.HasPrefix(stderr, "Usage:"):
		return nil // wrong parameters: a bug here, not a state of the volume
	case has("No key available with this passphrase", "bad passphrase"):
		return ErrWrongKey
	case has("All key slots full", "No free keyslot", "Not enough space in header keyslot area",
		"No space for new keyslot"):
		return ErrNoFreeKeyslot
	case has("Failed to get token") || has("Token") && has("is not in use"):
		return ErrTokenNotFound
	case has("Token") && has("in use"):
		return nil // the caller checks token IDs before writing
	case has("please select another one", "active, purge first"):
		return ErrKeyslotInUse
	case has("No usable keyslot is available", "Key slot is invalid") || has("is not active") && !has("Device"):
		return ErrKeyslotInactive
	case has("is not a valid LUKS2 device") && hdr.version == 1:
		return ErrNoTokens
	case has("is not a valid LUKS", "is too small", "Unsupported LUKS version",
		"Requested header backup file", "does not contain compatible LUKS header",
		"checksum", "Checksum"):
		if strings.Contains(stderr, "already exists") {
			return fs.ErrExist
		}
		if hdr.magic {
			return ErrDamagedHeader
		}
		return ErrNotLUKS
	case has("permission denied", "Permission denied", "Operation not permitted", "Read-only file system"):
		return ErrPermission
	case has("does not exist or access denied"):
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return fs.ErrNotExist
		}
		return ErrPermission
	case has("Failed to acquire", "Cannot open locked device", "lock resource", "is still in use",
		"already mapped or mounted", "blocked for exclusive open", "device in use", "Device or resource busy") || code == 5:
		return ErrBusy
	case has("IO error while encrypting keyslot", "Error during update of LUKS header"):
		// cryptsetup opened the volume read-only and could not write it.
		if write && preflight(path, true) != nil {
			return ErrPermission
		}
	}
	return nil
}

// sanitize keeps cryptsetup's stderr short and printable, on one line, with
// every input the run was given blanked out. cryptsetup does not echo keys;
// this is belt and braces, since the text ends up in error messages. A
// long text keeps its start and its end, where cryptsetup puts the reason
// after a usage text.
func sanitize(b []byte, inputs [][]byte) string {
	b = bytes.Clone(b)
	for _, in := range inputs {
		if len(in) >= 4 {
			b = bytes.ReplaceAll(b, in, []byte("[redacted]"))
		}
	}
	var sb strings.Builder
	space := false
	for _, c := range b {
		switch {
		case c == '\n' || c == '\r' || c == '\t' || c == ' ':
			space = sb.Len() > 0
			continue
		case c < 0x20 || c > 0x7e:
			c = '?'
		}
		if space {
			sb.WriteByte(' ')
			space = false
		}
		sb.WriteByte(c)
	}
	s := sb.String()
	if len(s) > maxStderr {
		s = s[:maxStderr/2] + "..." + s[len(s)-maxStderr/2:]
	}
	return s
}

// locked reports whether another process holds cryptsetup's metadata lock on
// path: for a regular file the file itself, for a block device
// /run/cryptsetup/L_major:minor (cryptsetup lib/utils_device_locking.c).
func locked(path string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false
	}
	lockPath := path
	if fi.Mode()&fs.ModeDevice != 0 {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return false
		}
		lockPath = fmt.Sprintf("/run/cryptsetup/L_%d:%d", unixMajor(st.Rdev), unixMinor(st.Rdev))
	}
	f, err := os.Open(lockPath)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

func unixMajor(dev uint64) uint64 { return ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xfffff000) }
func unixMinor(dev uint64) uint64 { return (dev & 0xff) | ((dev >> 12) & 0xffffff00) }
