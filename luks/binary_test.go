package luks

import (
	"os"
	"path/filepath"
	"testing"

	"custos.dev/custos/internal/realtest"
)

// TestBinaryPrefersSystem: a cryptsetup earlier in PATH (here a script that
// would receive the keys) is not the one run while the system's exists.
func TestBinaryPrefersSystem(t *testing.T) {
	var system string
	for _, p := range systemCryptsetup {
		if _, err := os.Stat(p); err == nil {
			system = p
			break
		}
	}
	if system == "" {
		realtest.Missing(t, "cryptsetup in /usr/sbin or /sbin")
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "cryptsetup")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\ncat /dev/fd/3 >/tmp/stolen\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	got, err := (&Volume{Path: "x.img"}).binary()
	if err != nil {
		t.Fatal(err)
	}
	if got != system {
		t.Errorf("binary() = %q, want the system's %q before the one in PATH", got, system)
	}
	if got, _ := (&Volume{Path: "x.img", Cryptsetup: fake}).binary(); got != fake {
		t.Errorf("binary() with Cryptsetup set = %q, want %q", got, fake)
	}
}
