package luks

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// counter is a Volume whose Cryptsetup is a shell wrapper that appends the
// arguments of every run to a log, then execs the real binary with the
// same descriptors: it counts the cryptsetup processes an operation
// starts, as strace -f -e execve would.
type counter struct {
	v   *Volume
	log string
}

func countRuns(t testing.TB, v *Volume) *counter {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "runs")
	script := filepath.Join(dir, "cryptsetup")
	body := "#!/bin/sh\nprintf '%s\\n' \"$*\" >>'" + log + "'\nexec '" + v.Cryptsetup + "' \"$@\"\n"
	if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	return &counter{v: &Volume{Path: v.Path, Cryptsetup: script}, log: log}
}

// take returns the runs logged since the last take, each as its action
// (with the subcommand for token and the option for a JSON dump).
func (c *counter) take(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(c.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	os.Remove(c.log)
	var runs []string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		name := f[0]
		switch {
		case name == "token":
			name += " " + f[1]
		case name == "luksDump" && strings.Contains(line, "--dump-json-metadata"):
			name += " --dump-json-metadata"
		}
		runs = append(runs, name)
	}
	return runs
}

// TestCryptsetupRuns pins the cryptsetup runs of each operation.
func TestCryptsetupRuns(t *testing.T) {
	versions(t, func(t *testing.T, version int) {
		ctx := testCtx(t)
		v := format(t, version, keyA, 1000)
		c := countRuns(t, v)
		cv := c.v
		// One header read is one cryptsetup run for LUKS1, none for a
		// LUKS2 header whose two copies are twins in cryptsetup's form
		// (the case at hand: cryptsetup wrote them).
		dump := []string{"luksDump"}
		if version == 2 {
			dump = nil
		}
		reread := dump
		cat := func(parts ...[]string) []string {
			var all []string
			for _, p := range parts {
				all = append(all, p...)
			}
			return all
		}
		want := func(op string, runs ...string) {
			t.Helper()
			if got := c.take(t); !slices.Equal(got, runs) {
				t.Errorf("luks%d %s: cryptsetup runs %q, want %q", version, op, got, runs)
			}
		}

		h, err := cv.Inspect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want("Inspect", dump...)
		// A change takes the step's header and reads it once after.
		k, h, err := cv.AddKeyslot(ctx, h, keyA, keyB, AddOptions{PBKDF: cheap})
		if err != nil {
			t.Fatal(err)
		}
		want("AddKeyslot", cat([]string{"luksAddKey"}, reread)...)
		slot := k.ID
		if err := cv.TestKey(ctx, keyB, slot); err != nil {
			t.Fatal(err)
		}
		want("TestKey", "open")
		if _, err := cv.FindKeyslot(ctx, keyB); err != nil {
			t.Fatal(err)
		}
		want("FindKeyslot", "open")
		if version == 2 {
			// Token changes: cryptsetup's own output and success tell
			// what changed, so no header is read.
			tok := []byte(`{"type":"custos","keyslots":["` + strconv.Itoa(slot) + `"]}`)
			id, h2, err := cv.ImportToken(ctx, h, tok, slot)
			if err != nil {
				t.Fatal(err)
			}
			want("ImportToken", "token import")
			if h2, err = cv.ReplaceToken(ctx, h2, id, tok, slot); err != nil {
				t.Fatal(err)
			}
			want("ReplaceToken", "token import")
			if h2, err = cv.RemoveToken(ctx, h2, id); err != nil {
				t.Fatal(err)
			}
			want("RemoveToken", "token remove")
			sameHeader(t, v, h2)
			c.take(t)
		}
		// The key is tested on the keyslot kept, once; luksKillSlot does
		// not test it again.
		if h, err = cv.KillKeyslot(ctx, h, slot, 0, keyA); err != nil {
			t.Fatal(err)
		}
		want("KillKeyslot", cat([]string{"open", "luksKillSlot"}, reread)...)

		// escrow's recover, once the key is gathered: read the header,
		// add a keyslot with the key, tested on its keyslot by luksAddKey
		// itself.
		if h, err = cv.Inspect(ctx); err != nil {
			t.Fatal(err)
		}
		if _, _, err := cv.AddKeyslot(ctx, h, keyA, keyB, AddOptions{PBKDF: cheap, AuthSlot: new(0)}); err != nil {
			t.Fatal(err)
		}
		want("recover step", cat(dump, []string{"luksAddKey"}, reread)...)

		if version == 2 {
			// A LUKS2 header whose secondary copy is damaged is read by
			// cryptsetup: the keyslots and tokens from its dump (which
			// repairs the copy), the version and UUID from the primary.
			size := hdrSize(t, v.Path)
			patch(t, v.Path, size+diskBinLen+2, []byte{'X'})
			if _, err := cv.Inspect(ctx); err != nil {
				t.Fatal(err)
			}
			want("Inspect, secondary damaged", "luksDump --dump-json-metadata")
			if _, err := cv.Inspect(ctx); err != nil {
				t.Fatal(err)
			}
			want("Inspect, secondary repaired")
		}
	})
}
