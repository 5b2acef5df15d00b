package luks

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// child is what the watcher saw of one cryptsetup process.
type child struct {
	pid     int
	cmdline []byte
	environ []byte
	fds     map[int]string // descriptor -> readlink target, for 3 and 4
}

// watcher polls /proc for children of this test process whose executable
// is cryptsetup, and records their command line, environment and input
// descriptors.
type watcher struct {
	bin  string
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen map[int]*child
}

func watch(t *testing.T, bin string) *watcher {
	t.Helper()
	real, err := filepath.EvalSymlinks(bin)
	if err != nil {
		t.Fatal(err)
	}
	w := &watcher{bin: real, stop: make(chan struct{}), done: make(chan struct{}), seen: map[int]*child{}}
	go w.loop()
	t.Cleanup(w.halt)
	return w
}

func (w *watcher) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *watcher) loop() {
	defer close(w.done)
	me := os.Getpid()
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			w.mu.Lock()
			_, known := w.seen[pid]
			w.mu.Unlock()
			if known || parentOf(pid) != me {
				continue
			}
			// Between fork and exec the child still runs this test binary;
			// it is recorded once exe is cryptsetup.
			if exe, _ := os.Readlink("/proc/" + e.Name() + "/exe"); exe != w.bin {
				continue
			}
			c := &child{pid: pid, fds: map[int]string{}}
			c.cmdline, _ = os.ReadFile("/proc/" + e.Name() + "/cmdline")
			c.environ, _ = os.ReadFile("/proc/" + e.Name() + "/environ")
			for _, fd := range []int{3, 4} {
				if l, err := os.Readlink("/proc/" + e.Name() + "/fd/" + strconv.Itoa(fd)); err == nil {
					c.fds[fd] = l
				}
			}
			if len(c.cmdline) == 0 || len(c.environ) == 0 {
				continue // exited while being read: a zombie shows neither
			}
			w.mu.Lock()
			w.seen[pid] = c
			w.mu.Unlock()
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// parentOf reads the parent PID from /proc/pid/stat (proc(5): field 4,
// after the parenthesised command name).
func parentOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return -1
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// children returns what was seen of the children working on path.
func (w *watcher) children(path string) []*child {
	w.mu.Lock()
	defer w.mu.Unlock()
	var cs []*child
	for _, c := range w.seen {
		if bytes.Contains(c.cmdline, []byte(path)) {
			cs = append(cs, c)
		}
	}
	return cs
}

// leaks reports whether any 8-byte window of key occurs in b.
func leaks(b, key []byte) bool {
	for i := 0; i+8 <= len(key); i++ {
		if bytes.Contains(b, key[i:i+8]) {
			return true
		}
	}
	return false
}

func randomKey(t testing.TB) []byte {
	b := make([]byte, 24)
	rand.Read(b)
	return []byte(hex.EncodeToString(b))
}

// TestNoKeysInChildProcesses watches every cryptsetup child while the
// package adds, tests, finds and kills keyslots, and checks that no key is
// in any child's /proc/<pid>/cmdline or environ, and that the keys come in
// on pipes. The keyslots use a costly pbkdf2 so that every child lives long
// enough (a few hundred milliseconds) to be seen.
func TestNoKeysInChildProcesses(t *testing.T) {
	const iterations = 200_000
	auth, newKey := randomKey(t), randomKey(t)
	v := format(t, 2, auth, iterations)
	ctx := testCtx(t)
	w := watch(t, v.Cryptsetup)

	// Positive control: the watcher does see a key put in argv and the
	// environment of a cryptsetup child. (The key is one not on the volume,
	// and the run is a wrong-key test that lasts one pbkdf.)
	control := randomKey(t)
	cmd := exec.Command(v.Cryptsetup, "open", "--test-passphrase", "--key-slot=0", "--key-file=-", v.Path, string(control))
	cmd.Env = append(slices.Clone(childEnv), "CONTROL="+string(control))
	cmd.Stdin = strings.NewReader("not the key")
	if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
		t.Fatalf("control child: %v, want exit 2 (wrong key, after one pbkdf)", err)
	}

	slot, err := addKey(t, v, auth, newKey, AddOptions{PBKDF: &PBKDF{Type: "pbkdf2", Iterations: iterations}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.TestKey(ctx, newKey, slot); err != nil {
		t.Fatal(err)
	}
	if s, err := v.FindKeyslot(ctx, newKey); err != nil || s != slot {
		t.Fatalf("FindKeyslot = %d, %v", s, err)
	}
	third := randomKey(t)
	if _, err := addKey(t, v, newKey, third, AddOptions{PBKDF: cheap, AuthSlot: &slot}); err != nil {
		t.Fatal(err)
	}
	if err := killKey(t, v, 0, slot, newKey); err != nil {
		t.Fatal(err)
	}
	w.halt()

	var sawControl bool
	ops := map[string]int{}
	for _, c := range w.children(v.Path) {
		args := strings.Split(strings.TrimSuffix(string(c.cmdline), "\x00"), "\x00")
		if leaks(c.cmdline, control) && leaks(c.environ, control) {
			sawControl = true
			continue
		}
		op := args[1]
		ops[op]++
		for name, key := range map[string][]byte{"authorising key": auth, "new key": newKey, "third key": third} {
			if leaks(c.cmdline, key) {
				t.Errorf("%s in cmdline of cryptsetup %s (pid %d): %q", name, op, c.pid, c.cmdline)
			}
			if leaks(c.environ, key) {
				t.Errorf("%s in environ of cryptsetup %s (pid %d)", name, op, c.pid)
			}
		}
		if got, want := string(c.environ), strings.Join(childEnv, "\x00")+"\x00"; got != want {
			t.Errorf("environ of cryptsetup %s = %q, want %q", op, got, want)
		}
		inputs := map[string]int{"luksAddKey": 2, "open": 1}[op]
		for fd := 3; fd < 3+inputs; fd++ {
			if !strings.HasPrefix(c.fds[fd], "pipe:") {
				t.Errorf("cryptsetup %s fd %d = %q, want a pipe", op, fd, c.fds[fd])
			}
		}
		// luksKillSlot gets no key at all: KillKeyslot tested it.
		if op == "luksKillSlot" && strings.HasPrefix(c.fds[3], "pipe:") {
			t.Errorf("cryptsetup luksKillSlot was given an input on fd 3")
		}
	}
	if !sawControl {
		t.Fatal("the watcher missed the control child: it would miss leaks too")
	}
	// The long-running children, each doing at least one costly pbkdf:
	// luksAddKey, open (TestKey, FindKeyslot, KillKeyslot's check). The
	// quick luksDump and luksKillSlot children may or may not be caught.
	for op, least := range map[string]int{"luksAddKey": 2, "open": 3} {
		if ops[op] < least {
			t.Errorf("saw %d cryptsetup %s children, want at least %d (saw %v)", ops[op], op, least, ops)
		}
	}
	t.Logf("children seen: %v", ops)
}
