// Package realtest decides what a test does when a real part it needs
// (pcscd, cryptsetup, a PIV client) is missing.
//
// Run by hand, such a test skips with a message that names the part. Under
// scripts/test, which sets CUSTOS_REQUIRE_REAL=1, it fails instead: CI must
// never pass by skipping the real stack.
//
// # Readers
//
// A test that puts virtual cards into vpcd readers takes LockReaders first.
// By hand that is the pair of readers of the machine's pcscd, one test at a
// time machine-wide. Under scripts/test, a pool of private pcscds, each with
// a pair of its own (CUSTOS_READER_POOL), lets test processes run side by
// side: each process is bound, at its first LockReaders, to a pool member
// no other process has claimed, and the processes it starts inherit it
// (Bound, Readers.Env).
package realtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Required reports whether scripts/test asked for the real stack.
func Required() bool { return os.Getenv("CUSTOS_REQUIRE_REAL") == "1" }

// Missing ends the test: a failure under scripts/test, a skip otherwise.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf("real part missing under CUSTOS_REQUIRE_REAL=1: "+format, args...)
	}
	t.Skipf("skipping: "+format+" (run scripts/test to set it up)", args...)
}

// Binary returns the path of a program the test needs, or ends the test
// through Missing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s not found in PATH", name)
	}
	return p
}

// GoCommand returns the path of the go command, for a test that checks
// what a build links: GOROOT's (go test sets it), else the one in PATH; or
// it ends the test through Missing.
func GoCommand(t testing.TB) string {
	t.Helper()
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return Binary(t, "go")
}

// PCSCDSocket is where pcsc-lite's daemon listens on Debian.
const PCSCDSocket = "/run/pcscd/pcscd.comm"

// PCSCD ends the test through Missing unless the pcscd of the readers this
// process uses (Bound) is listening.
func PCSCD(t testing.TB) {
	t.Helper()
	sock := Bound().Socket
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		Missing(t, "pcscd is not running (no socket at %s)", sock)
	}
}

// ReadersLock is the file whose flock serialises every test, in any package
// or process, that puts a card into the two vpcd readers of the machine's
// pcscd (scripts take it with flock(1) too).
const ReadersLock = "/tmp/custos-vpcd-readers.lock"

// LockReaders takes the lock on the vpcd readers this process uses (Bound)
// for the rest of the test: go test runs packages in parallel, and two
// tests inserting cards into the same reader would see each other's cards.
// It also ends the test through PCSCD when that pcscd is not running.
func LockReaders(t testing.TB) {
	t.Helper()
	PCSCD(t)
	unlock, err := Bound().Lock()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock)
}

// EtcdEnv names the etcd cluster the tests use: its client endpoints,
// comma-separated (scripts/etcd.sh sets it; HOST:PORT each).
const EtcdEnv = "CUSTOS_ETCD"

// Etcd returns the endpoints of the test cluster, or ends the test through
// Missing when none is given.
func Etcd(t testing.TB) []string {
	t.Helper()
	v := os.Getenv(EtcdEnv)
	if v == "" {
		Missing(t, "no etcd cluster (%s is not set; scripts/etcd.sh starts one)", EtcdEnv)
	}
	return strings.Split(v, ",")
}
