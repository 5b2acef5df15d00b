package store

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Child processes: the test binary re-executed with childEnv set runs one
// of the modes below instead of the tests.
const (
	childEnv     = "CUSTOS_STORE_CHILD"      // mode
	childPathEnv = "CUSTOS_STORE_CHILD_PATH" // the log
	childCrashAt = "CUSTOS_STORE_CRASH_AT"   // "<failpoint>:<n>": SIGKILL itself the n-th time it is reached
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode, os.Getenv(childPathEnv)))
	}
	crossCheck = crossCheckStream
	code := m.Run()
	if testing.Verbose() {
		fmt.Printf("streaming verifier: %d sound, %d handed to the reference\n", streamVerdicts.ok, streamVerdicts.fallback)
	}
	os.Exit(code)
}

// streamVerdicts counts the streaming verifier's verdicts in this process.
var streamVerdicts struct {
	sync.Mutex
	ok, fallback int
}

// crossCheckStream runs the reference replay after every streaming
// verification in the tests: a log the streaming verifier passes must be
// one the reference passes too, with the same report.
func crossCheckStream(r kvRead, be backend, anchors []Head, rep Report, ok bool) {
	streamVerdicts.Lock()
	defer streamVerdicts.Unlock()
	if !ok {
		streamVerdicts.fallback++
		return
	}
	streamVerdicts.ok++
	ref, err := verifyReference(r, be, anchors)
	if err != nil || ref != rep {
		panic(fmt.Sprintf("the streaming verifier passed a log the reference replay finds %+v, %v (stream: %+v)", ref, err, rep))
	}
}

type openResult struct {
	InUse   bool
	Err     string
	Elapsed time.Duration
}

// installCrash arms the failpoint named in childCrashAt.
func installCrash() {
	if spec := os.Getenv(childCrashAt); spec != "" {
		name, nStr, _ := strings.Cut(spec, ":")
		n, _ := strconv.Atoi(nStr)
		hits := 0
		failpoint = func(fp string) error {
			if fp == name {
				if hits++; hits == n {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
					select {} // never acknowledge anything after this point
				}
			}
			return nil
		}
	}
}

func runChild(mode, path string) int {
	if m, ok := strings.CutPrefix(mode, "verify-"); ok {
		return childVerify(m, path)
	}
	if mode == "etcd-append" {
		return childEtcdAppend(path)
	}
	if n, ok := strings.CutPrefix(mode, "steps-log-"); ok {
		// scripts/bench: the steps log of n events at path, built unless
		// it is there.
		events, err := strconv.Atoi(n)
		if err == nil {
			err = buildStepsLog(path, events)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	switch mode {
	case "open": // try to open, report how it went
		installCrash()
		start := time.Now()
		l, err := Open(path, nil)
		res := openResult{Elapsed: time.Since(start)}
		if err != nil {
			res.Err, res.InUse = err.Error(), errors.Is(err, ErrInUse)
		} else {
			l.Close()
		}
		json.NewEncoder(os.Stdout).Encode(res)
		return 0
	case "append": // append until killed, acknowledging each event on stdout
		l, err := Open(path, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		installCrash() // counts appends from here, not the creation's
		for i := 0; ; i++ {
			h, err := l.Append(Event{Actor: "child", Type: "crash.step", Ceremony: "crash", Body: []byte(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, strings.Repeat("x", i%700)))})
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			fmt.Fprintf(os.Stdout, "ack %s\n", h)
		}
	}
	fmt.Fprintln(os.Stderr, "unknown child mode", mode)
	return 2
}

func child(t *testing.T, mode, path string, env ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childPathEnv+"="+path)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	return cmd
}

func TestSecondProcessGetsInUse(t *testing.T) {
	boltOnly(t)
	l := openTest(t)
	cmd := child(t, "open", l.path)
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	wall := time.Since(start)
	var res openResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("child said %q: %v", out, err)
	}
	if !res.InUse {
		t.Fatalf("second process: %q, want ErrInUse", res.Err)
	}
	if !strings.Contains(res.Err, l.path) || !strings.Contains(res.Err, "another custos holds it") {
		t.Errorf("message %q does not name the file and say another custos holds it", res.Err)
	}
	if res.Elapsed < DefaultTimeout/2 || res.Elapsed > DefaultTimeout+2*time.Second || wall > 10*time.Second {
		t.Errorf("second process gave up after %v (process %v), want about %v", res.Elapsed, wall, DefaultTimeout)
	}
	t.Logf("second process: %q after %v", res.Err, res.Elapsed.Round(time.Millisecond))

	// Released, the file opens in the other process.
	l.Close()
	out, err = child(t, "open", l.path).Output()
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(out, &res)
	if res.Err != "" {
		t.Errorf("after close the other process got %q", res.Err)
	}
}

// readAcks collects the heads a child acknowledged, until its stdout
// closes.
func readAcks(t *testing.T, r io.Reader, onAck func(n int)) []Head {
	var acks []Head
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		s, ok := strings.CutPrefix(sc.Text(), "ack ")
		if !ok {
			t.Errorf("child wrote %q", sc.Text())
			continue
		}
		h, err := ParseHead(s)
		if err != nil {
			t.Errorf("child ack %q: %v", s, err)
			continue
		}
		acks = append(acks, h)
		if onAck != nil {
			onAck(len(acks))
		}
	}
	return acks
}

// checkAfterCrash opens the file, checks it (bbolt and chain), and checks
// that every acknowledged head is in it. It returns the head.
func checkAfterCrash(t *testing.T, path string, acks []Head) Head {
	t.Helper()
	l, err := Open(path, nil)
	if err != nil {
		t.Fatalf("open after crash: %v", err)
	}
	defer l.Close()
	rep, err := l.Verify(acks...)
	if err != nil {
		t.Fatalf("verify after crash (%d acknowledged): %v", len(acks), err)
	}
	if rep.Anchors != len(acks) {
		t.Fatalf("%d of %d acknowledged events found", rep.Anchors, len(acks))
	}
	return rep.Head
}

func TestCrashKill9DuringAppends(t *testing.T) {
	boltOnly(t)
	path := filepath.Join(t.TempDir(), "custos.db")
	var all []Head
	rounds := 4
	for round := 0; round < rounds; round++ {
		cmd := child(t, "append", path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAt := 20 + rand.IntN(200)
		acks := readAcks(t, stdout, func(n int) {
			if n == killAt {
				cmd.Process.Signal(syscall.SIGKILL)
			}
		})
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child ended with %v, want killed by SIGKILL", err)
		}
		all = append(all, acks...)
		head := checkAfterCrash(t, path, all)
		last := all[len(all)-1]
		if head.Seq < last.Seq || head.Seq > last.Seq+1 {
			t.Errorf("round %d: head %d, last acknowledged %d: at most one unacknowledged event may have committed", round, head.Seq, last.Seq)
		}
		t.Logf("round %d: killed after %d acks; head %d", round, len(acks), head.Seq)
	}
	l, _ := Open(path, nil)
	t.Cleanup(func() { checkConsistent(t, l) })
}

func TestCrashAtEachFailpoint(t *testing.T) {
	boltOnly(t)
	for _, fpName := range []string{fpUpdateBegin, fpUpdateTailChecked, fpAppendIndexed, fpAppendEventPut, fpUpdateBeforeCommit, fpUpdateCommitted} {
		t.Run(fpName, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "custos.db")
			const before = 5
			// The 6th append dies at the failpoint.
			cmd := child(t, "append", path, fmt.Sprintf("%s=%s:%d", childCrashAt, fpName, before+1))
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			acks := readAcks(t, stdout, nil)
			cmd.Wait()
			if len(acks) != before {
				t.Fatalf("%d acknowledged, want %d", len(acks), before)
			}
			head := checkAfterCrash(t, path, acks)
			want := acks[before-1].Seq
			if fpName == fpUpdateCommitted {
				want++ // committed before the crash, never acknowledged
			}
			if head.Seq != want {
				t.Errorf("head %d after a crash at %s, want %d", head.Seq, fpName, want)
			}
			l, err := Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, l, 1) // the log takes writes again
			t.Cleanup(func() { checkConsistent(t, l) })
		})
	}
}

func TestCrashWhileCreating(t *testing.T) {
	boltOnly(t)
	for _, fpName := range []string{fpCreateInitialized, fpCreateLinked} {
		t.Run(fpName, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "custos.db")
			cmd := child(t, "open", path, childCrashAt+"="+fpName+":1")
			cmd.Run()
			_, statErr := os.Stat(path)
			if fpName == fpCreateInitialized && statErr == nil {
				t.Errorf("a crash before the link left a file at %s", path)
			}
			if fpName == fpCreateLinked && statErr != nil {
				t.Errorf("a crash after the link left no file: %v", statErr)
			}
			l, err := Open(path, nil)
			if err != nil {
				t.Fatalf("open after a crash while creating: %v", err)
			}
			if h, _ := l.Head(); h.Seq != 1 {
				t.Errorf("head %v, want the log.created event alone", h)
			}
			t.Cleanup(func() { checkConsistent(t, l) })
		})
	}
}
