package store

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"custos.dev/custos/internal/realtest"
)

// The tests of a real cluster: many processes appending at once, a member
// killed during an enrollment, two members stopped. They need the members'
// PIDs and scripts, which scripts/etcd.sh keeps in CUSTOS_ETCD_DIR.

func etcdMember(t *testing.T, i int) (pid int, script string) {
	t.Helper()
	dir := os.Getenv("CUSTOS_ETCD_DIR")
	if dir == "" {
		realtest.Missing(t, "CUSTOS_ETCD_DIR is not set (scripts/etcd.sh sets it with the members' PIDs)")
	}
	b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("m%d.pid", i)))
	if err != nil {
		t.Fatal(err)
	}
	pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid, filepath.Join(dir, fmt.Sprintf("m%d.sh", i))
}

// waitHealthy waits until a log opens on the cluster and takes a write.
func waitHealthy(t *testing.T, dsn string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := Open(dsn, &Options{Timeout: 2 * time.Second})
		if err == nil {
			_, err = l.Head()
			l.Close()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster did not come back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// childEtcdAppend is a process committing its number of transactions to
// the log on etcd: each transaction a new ceremony's open record and a
// step, acknowledged on stdout with the head after it.
func childEtcdAppend(dsn string) int {
	txs, _ := strconv.Atoi(os.Getenv("CUSTOS_STORE_CHILD_TXS"))
	who := os.Getenv("CUSTOS_STORE_CHILD_NAME")
	l, err := Open(dsn, &Options{Timeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer l.Close()
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for i := 0; i < txs; i++ {
		rec := sampleCeremony(fmt.Sprintf("%s/%d", who, i), who, 2, 3)
		h, err := l.Update(func(tx *Tx) error {
			if _, err := tx.PutCeremony(who, StatusOpen, rec); err != nil {
				return err
			}
			_, err := tx.Append(Event{Actor: who, Type: "stress.step", Ceremony: rec.IDString(), Body: []byte(fmt.Sprintf(`{"i":%d}`, i))})
			return err
		})
		if errors.Is(err, ErrContention) {
			fmt.Fprintf(out, "contention\n")
			i--
			continue
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(out, "ack %s\n", h)
	}
	return 0
}

// Eight processes append at once, 4 transactions each, racing for the
// head: one linear chain, every acknowledged event in it once, nothing
// else.
func TestEtcdEightAppenders(t *testing.T) {
	dsn := etcdTestDSN(t)
	l, err := Open(dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const procs, txs = 8, 4
	exe, _ := os.Executable()
	var mu sync.Mutex
	var acks []Head
	contention := 0
	var wg sync.WaitGroup
	for p := range procs {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=etcd-append", childPathEnv+"="+dsn,
			"CUSTOS_STORE_CHILD_TXS="+strconv.Itoa(txs), fmt.Sprintf("CUSTOS_STORE_CHILD_NAME=p%d", p))
		cmd.Stderr = os.Stderr
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if sc.Text() == "contention" {
					mu.Lock()
					contention++
					mu.Unlock()
					continue
				}
				h, err := ParseHead(strings.TrimPrefix(sc.Text(), "ack "))
				if err != nil {
					t.Errorf("child wrote %q", sc.Text())
					continue
				}
				mu.Lock()
				acks = append(acks, h)
				mu.Unlock()
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("appender %d: %v", p, err)
			}
		}()
	}
	wg.Wait()
	rep, err := l.Verify(acks...)
	if err != nil {
		t.Fatalf("verify after %d appenders: %v", procs, err)
	}
	// Each acknowledged transaction wrote two events: the log holds them
	// and log.created, nothing lost, nothing twice.
	if rep.Anchors != len(acks) || rep.Events != uint64(1+2*len(acks)) {
		t.Fatalf("%d events for %d acknowledged transactions (%d anchors found): want %d", rep.Events, len(acks), rep.Anchors, 1+2*len(acks))
	}
	seen := map[uint64]bool{}
	for _, a := range acks {
		if seen[a.Seq] {
			t.Fatalf("two appenders were acknowledged event %d", a.Seq)
		}
		seen[a.Seq] = true
	}
	if len(acks) != procs*txs {
		t.Fatalf("%d transactions acknowledged, want %d", len(acks), procs*txs)
	}
	t.Logf("%d processes: %d transactions, %d events; %d gave up after %d attempts and went again",
		procs, len(acks), rep.Events, contention, maxAttempts)
	t.Cleanup(func() { checkConsistent(t, l) })
}

// enrollSteps is an enrollment as separate transactions, as escrow
// writes it: the open record, its salt, each card, the active record.
func enrollSteps(rec *Record) []func(*Tx) error {
	var steps []func(*Tx) error
	put := func(status string, r *Record) func(*Tx) error {
		return func(tx *Tx) error { _, err := tx.PutCeremony("operator", status, r); return err }
	}
	steps = append(steps, put(StatusOpen, rec), put(StatusOpen, withSalt(rec)))
	for i := 1; i <= rec.N; i++ {
		steps = append(steps, put(StatusOpen, withCards(withSalt(rec), i)))
	}
	return append(steps, put(StatusActive, complete(rec)))
}

// A member killed (SIGKILL) in the middle of an enrollment: the
// enrollment goes on with the two others and completes; the member comes
// back with its data.
func TestEtcdMemberKilledDuringEnrollment(t *testing.T) {
	dsn := etcdTestDSN(t)
	pid, script := etcdMember(t, 0)
	l, err := open(dsn, &Options{Timeout: 5 * time.Second}, testClock())
	if err != nil {
		t.Fatal(err)
	}
	rec := sampleCeremony("killed-member", "v", 2, 5)
	steps := enrollSteps(rec)
	for i, step := range steps {
		if i == 3 {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			t.Logf("killed member 0 (pid %d) before step %d of %d", pid, i+1, len(steps))
		}
		if _, err := l.Update(step); err != nil {
			t.Fatalf("step %d after a member was killed: %v", i+1, err)
		}
	}
	st, err := l.Ceremony(idOf("killed-member"))
	if err != nil || st.Status != StatusActive {
		t.Fatalf("the enrollment did not complete: %+v, %v", st, err)
	}
	waitDead(t, pid)
	restartMember(t, script)
	waitHealthy(t, dsn)
	t.Cleanup(func() { checkConsistent(t, l) })
}

// waitDead waits until the process pid has exited (gone, or a zombie that
// holds no socket any more). The member is not the test's child, so it
// cannot be waited for; restarted before SIGKILL had taken it, the new
// member found its ports still bound ("address already in use") and the
// cluster stayed at two members for the tests after.
func waitDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		// The state follows the command name in parentheses.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("member (pid %d) still alive 10 s after SIGKILL", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func restartMember(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("sh", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait() // the member outlives the test; scripts/etcd.sh stops it by its PID file
}

// Two members stopped: a write fails within the timeout with an error
// that says the cluster has no quorum, and writes nothing; once they are
// back the same enrollment is run again and finishes.
func TestEtcdNoQuorum(t *testing.T) {
	dsn := etcdTestDSN(t)
	p1, _ := etcdMember(t, 1)
	p2, _ := etcdMember(t, 2)
	const timeout = 2 * time.Second
	l, err := open(dsn, &Options{Timeout: timeout}, testClock())
	if err != nil {
		t.Fatal(err)
	}
	rec := sampleCeremony("no-quorum", "v", 2, 3)
	steps := enrollSteps(rec)
	if _, err := l.Update(steps[0]); err != nil {
		t.Fatal(err)
	}
	before, _ := l.Head()
	cont := func() {
		syscall.Kill(p1, syscall.SIGCONT)
		syscall.Kill(p2, syscall.SIGCONT)
	}
	defer cont()
	for _, p := range []int{p1, p2} {
		if err := syscall.Kill(p, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	_, err = l.Update(steps[1])
	took := time.Since(start)
	var ue *UnavailableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "no quorum") {
		t.Fatalf("a write with two members stopped: %v, want an UnavailableError saying there is no quorum", err)
	}
	if took > 3*timeout+3*time.Second {
		t.Errorf("the write gave up after %v with a timeout of %v", took, timeout)
	}
	t.Logf("after %v: %v", took.Round(time.Millisecond), err)
	cont()
	waitHealthy(t, dsn)
	if h, _ := l.Head(); h != before {
		t.Fatalf("the failed write moved the head %v -> %v", before, h)
	}
	for i, step := range steps[1:] {
		if _, err := l.Update(step); err != nil {
			t.Fatalf("rerun step %d: %v", i+2, err)
		}
	}
	if st, err := l.Ceremony(idOf("no-quorum")); err != nil || st.Status != StatusActive {
		t.Fatalf("rerun did not finish: %+v, %v", st, err)
	}
	t.Cleanup(func() { checkConsistent(t, l) })
}
