// Package realtest decides what a test does when a real part it needs
// (pcscd, cryptsetup, a PIV client) is missing.
//
// Run by hand, such a test skips with a message that names the part. Under
// scripts/test, which sets CUSTOS_REQUIRE_REAL=1, it fails instead: CI must
// never pass by skipping the real stack.
package realtest

import (
	"os"
	"os/exec"
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

// PCSCDSocket is where pcsc-lite's daemon listens on Debian.
const PCSCDSocket = "/run/pcscd/pcscd.comm"

// PCSCD ends the test through Missing unless a pcscd is listening.
func PCSCD(t testing.TB) {
	t.Helper()
	if fi, err := os.Stat(PCSCDSocket); err != nil || fi.Mode()&os.ModeSocket == 0 {
		Missing(t, "pcscd is not running (no socket at %s)", PCSCDSocket)
	}
}
