package luks

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"custos.dev/custos/internal/realtest"
)

// damage overwrites n bytes at off with a pattern.
func damage(t testing.TB, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(strings.Repeat("X", n)), off); err != nil {
		t.Fatal(err)
	}
}

// LUKS2 layout with the default 16 KiB metadata (LUKS2 spec, section 2):
// primary binary header at 0, its JSON at 4 KiB; secondary at 16 KiB.
const (
	primaryJSON   = 4096 + 256
	secondaryJSON = 16384 + 4096 + 256
)

func TestNotLUKS(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	bin := realtest.Binary(t, "cryptsetup")
	dir := t.TempDir()
	zeros := filepath.Join(dir, "zeros.img")
	if err := os.WriteFile(zeros, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	v := &Volume{Path: zeros, Cryptsetup: bin}
	_, err := v.Inspect(ctx)
	wantErr(t, err, ErrNotLUKS)
	var ce *CryptsetupError
	if !errors.As(err, &ce) || ce.Op != "luksDump" || !strings.Contains(ce.Stderr, "not a valid LUKS device") {
		t.Fatalf("error = %#v", err)
	}
	wantErr(t, v.TestKey(ctx, keyA, 0), ErrNotLUKS)
	// With a header read elsewhere (a step's stale read), cryptsetup
	// refuses, and the refusal maps.
	stale := inspect(t, format(t, 2, keyA, 1000))
	_, _, err = v.AddKeyslot(ctx, stale, keyA, keyB, AddOptions{PBKDF: cheap})
	wantErr(t, err, ErrNotLUKS)
	_, err = v.KillKeyslot(ctx, &Header{Version: 2, UUID: stale.UUID, Keyslots: []Keyslot{{ID: 0}, {ID: 1}}}, 1, 0, keyA)
	wantErr(t, err, ErrNotLUKS)
	if b, _ := os.ReadFile(zeros); strings.Trim(string(b), "\x00") != "" {
		t.Fatal("a failed operation wrote to the file")
	}

	missing := filepath.Join(dir, "missing.img")
	_, err = Open(missing)
	wantErr(t, err, fs.ErrNotExist)
	_, err = (&Volume{Path: missing, Cryptsetup: bin}).Inspect(ctx)
	wantErr(t, err, fs.ErrNotExist)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not a block device or regular file") {
		t.Fatalf("Open(directory) error = %v", err)
	}
	if v, err := Open(zeros); err != nil || !filepath.IsAbs(v.Path) {
		t.Fatalf("Open(file) = %+v, %v", v, err)
	}
}

func TestDamagedPrimaryLUKS2(t *testing.T) {
	for name, dmg := range map[string]func(t testing.TB, path string){
		"json":  func(t testing.TB, p string) { damage(t, p, primaryJSON, 64) },
		"magic": func(t testing.TB, p string) { damage(t, p, 0, 4096) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			v := format(t, 2, keyA, 1000)
			want := inspect(t, v)
			dmg(t, v.Path)
			if _, err := readDiskHeader(v.Path); !errors.Is(err, errNotVerified) {
				t.Fatalf("damaged primary read as verified: %v", err)
			}

			// cryptsetup reads the secondary copy (luksDump), and repairs
			// the primary from it as it reads; the next read needs no run:
			// the copies are twins again.
			c := countRuns(t, v)
			h, err := c.v.Inspect(ctx)
			if err != nil {
				t.Fatalf("Inspect with damaged primary: %v", err)
			}
			if h.UUID != want.UUID || h.Version != 2 || !slices.Equal(slotIDs(h), slotIDs(want)) {
				t.Fatalf("header from secondary = %+v, want uuid %s", h, want.UUID)
			}
			if runs := c.take(t); !slices.Equal(runs, []string{"luksDump", "luksDump --dump-json-metadata"}) {
				t.Fatalf("runs with a damaged primary: %q", runs)
			}
			if dh, err := readDiskHeader(v.Path); err != nil || dh.uuid != want.UUID {
				t.Fatalf("primary after cryptsetup read the header: %+v, %v", dh, err)
			}
			if h, err := c.v.Inspect(ctx); err != nil || h.UUID != want.UUID {
				t.Fatalf("Inspect after the repair: %+v, %v", h, err)
			}
			if runs := c.take(t); len(runs) != 0 {
				t.Fatalf("runs after the repair: %q", runs)
			}
			if err := v.TestKey(ctx, keyA, 0); err != nil {
				t.Fatal(err)
			}
			slot, err := addKey(t, v, keyA, keyB, AddOptions{PBKDF: cheap})
			if err != nil {
				t.Fatal(err)
			}
			if err := v.TestKey(ctx, keyB, slot); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDamagedHeader(t *testing.T) {
	cases := map[string]struct {
		version int
		damage  func(t testing.TB, path string)
	}{
		"luks2 both copies": {2, func(t testing.TB, p string) {
			damage(t, p, primaryJSON, 64)
			damage(t, p, secondaryJSON, 64)
		}},
		"luks2 truncated": {2, func(t testing.TB, p string) {
			if err := os.Truncate(p, 3000); err != nil {
				t.Fatal(err)
			}
		}},
		"luks1 truncated": {1, func(t testing.TB, p string) {
			if err := os.Truncate(p, 1000); err != nil {
				t.Fatal(err)
			}
		}},
		"luks1 bad version": {1, func(t testing.TB, p string) { damage(t, p, 6, 2) }},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			v := format(t, c.version, keyA, 1000)
			addRaw(t, v, keyA, keyB)
			stale := inspect(t, v) // read before the damage
			c.damage(t, v.Path)
			_, err := v.Inspect(ctx)
			wantErr(t, err, ErrDamagedHeader)
			if !strings.Contains(err.Error(), "damaged") {
				t.Fatalf("message does not say damaged: %v", err)
			}
			wantErr(t, v.TestKey(ctx, keyA, 0), ErrDamagedHeader)
			_, _, err = v.AddKeyslot(ctx, stale, keyA, keyC, AddOptions{PBKDF: cheap})
			wantErr(t, err, ErrDamagedHeader)
			_, err = v.KillKeyslot(ctx, stale, 1, 0, keyA)
			wantErr(t, err, ErrDamagedHeader)
		})
	}
}

// TestPermission makes the image immutable (chattr +i): even root cannot
// open it for writing, so writes fail with ErrPermission while reads work.
func TestPermission(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	chattr := realtest.Binary(t, "chattr")
	v := format(t, 2, keyA, 1000)
	if out, err := exec.Command(chattr, "+i", v.Path).CombinedOutput(); err != nil {
		realtest.Missing(t, "file system of %s does not take chattr +i: %v: %s", v.Path, err, out)
	}
	t.Cleanup(func() { exec.Command(chattr, "-i", v.Path).Run() })

	if _, err := v.Inspect(ctx); err != nil {
		t.Fatalf("Inspect of a read-only volume: %v", err)
	}
	if err := v.TestKey(ctx, keyA, 0); err != nil {
		t.Fatalf("TestKey on a read-only volume: %v", err)
	}
	_, err := addKey(t, v, keyA, keyB, AddOptions{PBKDF: cheap})
	wantErr(t, err, ErrPermission)
	if _, _, err := v.ImportToken(ctx, inspect(t, v), []byte(`{"type":"custos","keyslots":["0"]}`), 0); !errors.Is(err, ErrPermission) {
		t.Fatalf("ImportToken error = %v", err)
	}

	// cryptsetup's own report, when it gets that far, maps the same way.
	err = classify(1, "IO error while encrypting keyslot.", headerProbe{magic: true, version: 2}, true, v.Path)
	wantErr(t, err, ErrPermission)
}

// TestBusy holds cryptsetup's metadata lock (a flock on the image file)
// from the test: cryptsetup waits for it, and the context decides how long.
func TestBusy(t *testing.T) {
	t.Parallel()
	v := format(t, 2, keyA, 1000)
	h := inspect(t, v)
	f, err := os.Open(v.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = v.AddKeyslot(ctx, h, keyA, keyB, AddOptions{PBKDF: cheap})
	wantErr(t, err, ErrBusy)
	wantErr(t, err, context.DeadlineExceeded)
	if d := time.Since(start); d > cancelGrace {
		t.Fatalf("cancelled operation took %v", d)
	}

	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	wantSlots(t, v, 0)
	if _, err := addKey(t, v, keyA, keyB, AddOptions{PBKDF: cheap}); err != nil {
		t.Fatalf("after the lock is released: %v", err)
	}
}

func TestHeaderBackupRestore(t *testing.T) {
	versions(t, func(t *testing.T, version int) {
		ctx := testCtx(t)
		v := format(t, version, keyA, 1000)
		dir := t.TempDir()
		backup := filepath.Join(dir, "header.bak")
		if err := v.BackupHeader(ctx, backup); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(backup)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
			t.Fatalf("backup mode %v size %d, want 0600 and non-empty", fi.Mode().Perm(), fi.Size())
		}
		wantErr(t, v.BackupHeader(ctx, backup), fs.ErrExist)

		// A change, then the restore undoes it.
		slot, err := addKey(t, v, keyA, keyB, AddOptions{PBKDF: cheap})
		if err != nil {
			t.Fatal(err)
		}
		if err := v.RestoreHeader(ctx, backup); err != nil {
			t.Fatal(err)
		}
		wantSlots(t, v, 0)
		wantErr(t, v.TestKey(ctx, keyB, slot), ErrKeyslotInactive)

		// A header destroyed beyond cryptsetup's repair comes back too.
		damage(t, v.Path, 0, 4096)
		if version == 2 {
			damage(t, v.Path, 16384, 4096)
		}
		_, err = v.Inspect(ctx)
		if !errors.Is(err, ErrDamagedHeader) && !errors.Is(err, ErrNotLUKS) {
			t.Fatalf("destroyed header: %v", err)
		}
		if err := v.RestoreHeader(ctx, backup); err != nil {
			t.Fatal(err)
		}
		if err := v.TestKey(ctx, keyA, 0); err != nil {
			t.Fatal(err)
		}

		// Another volume's backup is refused.
		other := format(t, version, keyC, 1000)
		wantErr(t, other.RestoreHeader(ctx, backup), ErrForeignBackup)
		if err := other.TestKey(ctx, keyC, 0); err != nil {
			t.Fatal(err)
		}

		// A failed backup leaves nothing behind.
		zeros := &Volume{Path: filepath.Join(dir, "zeros.img"), Cryptsetup: v.Cryptsetup}
		if err := os.WriteFile(zeros.Path, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		wantErr(t, zeros.BackupHeader(ctx, filepath.Join(dir, "bad.bak")), ErrNotLUKS)
		ents, _ := os.ReadDir(dir)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if strings.Join(names, " ") != "header.bak zeros.img" {
			t.Fatalf("directory after failed backup: %v", names)
		}
	})
}

// TestCryptsetupLookup: with no Cryptsetup set, the system's cryptsetup in
// /usr/sbin or /sbin is run even when a directory earlier in PATH holds
// another program of that name.
func TestCryptsetupLookup(t *testing.T) {
	var system string
	for _, p := range systemCryptsetup {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			system = p
			break
		}
	}
	if system == "" {
		realtest.Missing(t, "no cryptsetup in %v", systemCryptsetup)
	}
	dir := t.TempDir()
	decoy := filepath.Join(dir, "cryptsetup")
	if err := os.WriteFile(decoy, []byte("#!/bin/sh\nexit 99\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	if p, err := exec.LookPath("cryptsetup"); err != nil || p != decoy {
		t.Fatalf("PATH lookup = %q, %v; want the decoy %s first", p, err, decoy)
	}
	got, err := (&Volume{}).binary()
	if err != nil || got != system {
		t.Fatalf("binary() = %q, %v; want %s", got, err, system)
	}
	// An explicit Cryptsetup wins.
	if got, _ := (&Volume{Cryptsetup: decoy}).binary(); got != decoy {
		t.Fatalf("binary() with Cryptsetup set = %q", got)
	}
}
