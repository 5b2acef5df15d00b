package realtest

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestPoolParse(t *testing.T) {
	t.Setenv(ReaderPoolEnv, "/tmp/p/1/pcscd.comm:35973, /tmp/p/2/pcscd.comm:35983,relative/pcscd.comm:1,/tmp/x:,/tmp/y:-4,/tmp/z")
	got := pool()
	want := []Readers{
		{Socket: "/tmp/p/1/pcscd.comm", Port0: 35973, LockFile: "/tmp/p/1/readers.lock"},
		{Socket: "/tmp/p/2/pcscd.comm", Port0: 35983, LockFile: "/tmp/p/2/readers.lock"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pool %+v, want %+v", got, want)
	}
}

func TestReadersEnv(t *testing.T) {
	if env := machineReaders.Env(); env != nil {
		t.Fatalf("the machine's readers need no variables, got %q", env)
	}
	r := Readers{Socket: "/tmp/p/1/pcscd.comm", Port0: 35973, LockFile: "/tmp/p/1/readers.lock"}
	env := r.Env()
	want := []string{"PCSCLITE_CSOCK_NAME=/tmp/p/1/pcscd.comm", "CUSTOS_VPCD_BASE=35973"}
	if !slices.Equal(env, want) {
		t.Fatalf("env %q, want %q", env, want)
	}
	// A child of a bound process stays on its parent's readers.
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	if got := bind(); got != r {
		t.Fatalf("bound %+v from the inherited variables, want %+v", got, r)
	}
	if rest := WithoutReaders(append([]string{"HOME=/root"}, env...)); !slices.Equal(rest, []string{"HOME=/root"}) {
		t.Fatalf("without readers: %q", rest)
	}
}

func TestClaimOnce(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(SocketEnv, "")
	t.Setenv(VPCDBaseEnv, "")
	t.Setenv(ReaderPoolEnv, dir+"/1/pcscd.comm:35973,"+dir+"/2/pcscd.comm:35983")
	for _, d := range []string{"/1", "/2"} {
		mkdir(t, dir+d)
	}
	first := bind()
	if first.Socket != dir+"/1/pcscd.comm" {
		t.Fatalf("first bind %+v, want member 1", first)
	}
	// The claim is per open file: a second claimant in this process
	// (another process, in real use) finds member 1 taken.
	claim := bound.claim
	t.Setenv(SocketEnv, "")
	second := bind()
	if second.Socket != dir+"/2/pcscd.comm" {
		t.Fatalf("second bind %+v, want member 2", second)
	}
	t.Setenv(SocketEnv, "")
	if third := bind(); third != machineReaders {
		t.Fatalf("third bind %+v, want the machine's readers when the pool is claimed", third)
	}
	claim.Close()
	bound.claim.Close()
	bound.claim = nil
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}
