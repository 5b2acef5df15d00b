package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/cmd/custos/internal/custodians"
	"custos.dev/custos/internal/realtest"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"custos": func() { os.Exit(mainExit()) },
		// lockdown-probe runs custos's start-up hardening and reports
		// what the kernel says about the process afterwards.
		"lockdown-probe": func() {
			notes := lockdown()
			d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			var rl unix.Rlimit
			unix.Getrlimit(unix.RLIMIT_CORE, &rl)
			fmt.Printf("dumpable %d\ncore %d %d\n", d, rl.Cur, rl.Max)
			status, _ := os.ReadFile("/proc/self/status")
			for _, l := range strings.Split(string(status), "\n") {
				if v, ok := strings.CutPrefix(l, "VmLck:"); ok {
					fmt.Printf("locked %s\n", strings.TrimSpace(v))
				}
			}
			for _, n := range notes {
				fmt.Fprintln(os.Stderr, "note:", n)
			}
			os.Exit(0)
		},
		// unlocked runs its arguments where the kernel refuses mlock, as
		// for an ordinary user with no room under RLIMIT_MEMLOCK: without
		// CAP_IPC_LOCK (dropped from the bounding set, from which root's
		// capabilities are computed at exec; capabilities are per thread,
		// so the drop and the exec happen on one locked thread) and with
		// RLIMIT_MEMLOCK 0.
		"unlocked": func() {
			runtime.LockOSThread()
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_IPC_LOCK, 0, 0, 0); err != nil && !errors.Is(err, unix.EPERM) {
				fmt.Fprintln(os.Stderr, "unlocked: drop CAP_IPC_LOCK:", err)
				os.Exit(1)
			}
			if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{}); err != nil {
				fmt.Fprintln(os.Stderr, "unlocked: RLIMIT_MEMLOCK:", err)
				os.Exit(1)
			}
			if len(os.Args) < 2 {
				fmt.Fprintln(os.Stderr, "usage: unlocked PROGRAM ARGS...")
				os.Exit(2)
			}
			execArgs("unlocked", os.Args[1:])
		},
		// slack NS runs its arguments with a timer slack of NS
		// nanoseconds, which they inherit through exec.
		"slack": func() {
			if len(os.Args) < 3 {
				fmt.Fprintln(os.Stderr, "usage: slack NS PROGRAM ARGS...")
				os.Exit(2)
			}
			ns, err := strconv.ParseUint(os.Args[1], 10, 64)
			if err != nil {
				fmt.Fprintln(os.Stderr, "slack:", err)
				os.Exit(2)
			}
			runtime.LockOSThread()
			if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(ns), 0, 0, 0); err != nil {
				fmt.Fprintln(os.Stderr, "slack: prctl PR_SET_TIMERSLACK:", err)
				os.Exit(1)
			}
			execArgs("slack", os.Args[2:])
		},
		// timerslack prints the timer slack of the thread it runs on, in
		// nanoseconds.
		"timerslack": func() {
			ns, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
			if err != nil {
				fmt.Fprintln(os.Stderr, "timerslack:", err)
				os.Exit(1)
			}
			fmt.Println(ns)
			os.Exit(0)
		},
	})
}

// execArgs runs args[0], looked up in PATH, with args in place of the
// helper command called name (exec). If that fails it says why, as name,
// and exits with status 1.
func execArgs(name string, args []string) {
	prog, err := exec.LookPath(args[0])
	if err == nil {
		err = unix.Exec(prog, args, os.Environ())
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	os.Exit(1)
}

// TestScripts runs the command-line scripts in testdata/script. Besides
// testscript's own commands they have:
//
//	[real:cryptsetup], [real:pcscd], [real:etcd]  conditions; missing fails under scripts/test
//	vcard new|key|noattest ... make virtual cards in $WORK/cards, change their keys (see cmdVcard)
//	run [-exit N] [-stdin FILE] [-cards S1,S2,...] [-first] custos ARGS...
//	                           run custos: its standard input from FILE (one
//	                           line per prompt), the cards inserted one by one
//	                           into the first vpcd reader each time custos
//	                           says "insert ..." (-first: the first card before
//	                           it starts); stdout and stderr kept for the
//	                           stdout/stderr commands; the exit code must be N
//	                           (default 0)
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:       "testdata/script",
		Setup:     setupScript,
		Condition: realCondition,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"vcard": cmdVcard,
			"run":   cmdRun,
		},
	})
}

type scriptState struct {
	locked bool
	ca     *vcard.CA
	cards  map[string]*vcard.Card
}

func setupScript(env *testscript.Env) error {
	env.Values["state"] = &scriptState{cards: map[string]*vcard.Card{}}
	// The etcd cluster of scripts/etcd.sh, and a prefix of it no other
	// script or run uses (left to the cluster, which goes at the end).
	env.Setenv(realtest.EtcdEnv, os.Getenv(realtest.EtcdEnv))
	// The readers this test process is bound to (a pool member of
	// scripts/test, or the machine's): custos in a script talks to their
	// pcscd, and the script's cards go into them.
	for _, kv := range realtest.Bound().Env() {
		k, v, _ := strings.Cut(kv, "=")
		env.Setenv(k, v)
	}
	env.Setenv("ETCD_PREFIX", fmt.Sprintf("custos-script/%d-%d", os.Getpid(), time.Now().UnixNano()))
	env.Setenv("ETCDCTL_API", "3")
	return nil
}

func state(ts *testscript.TestScript) *scriptState { return ts.Value("state").(*scriptState) }

// realCondition is the script condition [real:cryptsetup], [real:pcscd] or
// [real:etcd] (the cluster named by CUSTOS_ETCD, and etcdctl):
// true when the part is there. A missing part is an error under scripts/test
// (CUSTOS_REQUIRE_REAL=1), so that "[!real:pcscd] skip" never passes CI by
// skipping.
func realCondition(cond string) (bool, error) {
	part, ok := strings.CutPrefix(cond, "real:")
	if !ok {
		return false, fmt.Errorf("unknown condition %q", cond)
	}
	there := false
	switch part {
	case "cryptsetup":
		_, err := exec.LookPath("cryptsetup")
		there = err == nil
	case "pcscd":
		fi, err := os.Stat(realtest.PCSCDSocket)
		there = err == nil && fi.Mode()&os.ModeSocket != 0
	case "etcd":
		_, err := exec.LookPath("etcdctl")
		there = err == nil && os.Getenv(realtest.EtcdEnv) != ""
	default:
		return false, fmt.Errorf("unknown real part %q", part)
	}
	if !there && realtest.Required() {
		return false, fmt.Errorf("real part missing under CUSTOS_REQUIRE_REAL=1: %s", part)
	}
	return there, nil
}

// lockReaders takes realtest's machine-wide lock on the vpcd readers for
// the rest of the script (realtest.LockReaders wants a testing.TB, which a
// script's T is not; this is the same flock on the same file).
func lockReaders(ts *testscript.TestScript) {
	st := state(ts)
	if st.locked {
		return
	}
	unlock, err := realtest.Bound().Lock()
	ts.Check(err)
	st.locked = true
	ts.Defer(unlock)
}

// cmdVcard is the script command vcard:
//
//	vcard new [-ca NAME] [-version V] SERIAL...  factory-fresh cards in $WORK/cards; -ca: under
//	                                              another virtual CA in $WORK/NAME, its root in
//	                                              $NAME_ROOTS (upper case), trusted by nobody else
//	vcard key SERIAL SLOT never|imported          put a new key in the slot, as another tool would:
//	                                              generated with PIN policy never, or imported
//	vcard noattest SERIAL                         make the card one of another maker: no ATTEST
func cmdVcard(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: vcard new|key|noattest ...")
	}
	st := state(ts)
	card := func(serial string) *vcard.Card {
		c, ok := st.cards[serial]
		if !ok {
			ts.Fatalf("vcard: no virtual card %s (vcard new %s first)", serial, serial)
		}
		return c
	}
	switch args[0] {
	case "new":
		fs := flag.NewFlagSet("vcard new", flag.ContinueOnError)
		caName := fs.String("ca", "", "another virtual CA")
		version := fs.String("version", "", "firmware version")
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() == 0 {
			ts.Fatalf("usage: vcard new [-ca NAME] [-version V] SERIAL...")
		}
		if st.ca == nil {
			ca, err := vcard.OpenCA(ts.MkAbs("vcard-ca"))
			ts.Check(err)
			st.ca = ca
			ts.Setenv("VCARD_ROOTS", ca.RootPath())
		}
		ca := st.ca
		if *caName != "" {
			other, err := vcard.OpenCA(ts.MkAbs(*caName))
			ts.Check(err)
			ts.Setenv(strings.ToUpper(*caName)+"_ROOTS", other.RootPath())
			ca = other
		}
		ts.Check(os.MkdirAll(ts.MkAbs("cards"), 0o700))
		for _, s := range fs.Args() {
			n, err := strconv.ParseUint(s, 10, 32)
			ts.Check(err)
			c, err := vcard.NewCard(vcard.Config{Serial: uint32(n), Version: *version, CA: ca, StatePath: ts.MkAbs(filepath.Join("cards", s+".json"))})
			ts.Check(err)
			st.cards[s] = c
		}
	case "key":
		if len(args) != 4 {
			ts.Fatalf("usage: vcard key SERIAL SLOT never|imported")
		}
		slot, err := strconv.ParseUint(args[2], 16, 8)
		ts.Check(err)
		switch args[3] {
		case "never":
			_, err = card(args[1]).PutKey(byte(slot), vcard.PINPolicyNever, vcard.TouchPolicyNever, false)
		case "imported":
			_, err = card(args[1]).PutKey(byte(slot), vcard.PINPolicyAlways, vcard.TouchPolicyNever, true)
		default:
			ts.Fatalf("usage: vcard key SERIAL SLOT never|imported")
		}
		ts.Check(err)
	case "noattest":
		for _, s := range args[1:] {
			ts.Check(card(s).SetNoAttestation(true))
		}
	default:
		ts.Fatalf("usage: vcard new|key|noattest ...")
	}
}

func cmdRun(ts *testscript.TestScript, neg bool, args []string) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	want := fs.Int("exit", 0, "expected exit code")
	stdin := fs.String("stdin", "", "file for standard input")
	deckList := fs.String("cards", "", "serials of the cards to insert, in order")
	first := fs.Bool("first", false, "insert the first card before starting")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		ts.Fatalf("usage: run [-exit N] [-stdin FILE] [-cards S1,S2] [-first] PROGRAM ARGS...")
	}
	if neg {
		ts.Fatalf("run: use -exit N instead of !")
	}
	prog := ""
	for _, dir := range filepath.SplitList(ts.Getenv("PATH")) {
		p := filepath.Join(dir, fs.Arg(0))
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			prog = p
			break
		}
	}
	if prog == "" {
		ts.Fatalf("run: %s not in PATH", fs.Arg(0))
	}
	cmd := exec.Command(prog, fs.Args()[1:]...)
	cmd.Dir = ts.MkAbs(".")
	cmd.Env = append(os.Environ(), "PATH="+ts.Getenv("PATH"), "HOME="+ts.Getenv("HOME"), "TMPDIR="+ts.Getenv("TMPDIR"))
	if *stdin != "" {
		f, err := os.Open(ts.MkAbs(*stdin))
		ts.Check(err)
		defer f.Close()
		cmd.Stdin = f
	}
	cmd.Stdout = ts.Stdout()

	var deck *custodians.Deck
	if *deckList != "" {
		lockReaders(ts)
		deck = &custodians.Deck{Port: vcard.Port0}
		for _, s := range strings.Split(*deckList, ",") {
			c, ok := state(ts).cards[s]
			if !ok {
				ts.Fatalf("run: no virtual card %s (vcard new %s first)", s, s)
			}
			deck.Cards = append(deck.Cards, c)
		}
		defer func() { ts.Check(deck.Remove()) }()
		if *first {
			_, err := deck.Insert(context.Background())
			ts.Check(err)
		}
	}
	err := custodians.Run(context.Background(), cmd, deck, ts.Stderr())
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("run: %v", err)
	}
	if code != *want {
		ts.Fatalf("run: %s exited %d, want %d", fs.Arg(0), code, *want)
	}
}
