package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKillThenKeyAddedThenRerun: after a kill, the operator adds a key of
// their own with plain cryptsetup (it lands in the first free keyslot),
// then reruns the ceremony. The rerun must not take that key away: every
// key the operator holds still opens the volume afterwards.
//
// The steps chosen are those where the log names a keyslot the volume does
// not hold at that moment (reserved but not yet added; killed but not yet
// logged), which a later luksAddKey may fill, and rotate.keyslot-added,
// where the new keyslot exists but no second copy proves it custos's yet.
// What the rerun says depends on what the copies prove:
//   - enroll.begun, rotate.begun: the remembered number holds the operator's
//     key, which only the log names: left in place, named;
//   - rotate.keyslot-added: the new keyslot has no open token beside the log:
//     left in place, named (the operator's key is elsewhere);
//   - rotate.old-killed: the old token and the log agree on the old keyslot's
//     salt, which the operator's key under its number does not have: the old
//     key is proven gone, the rotation finishes, the key is left alone;
//   - rotate.old-token-removed: only the log names the old keyslot now: the
//     rotation finishes, but custos cannot tell the operator's key from the
//     old recovery key and says so (exit 4, the keyslot left in place).
func TestKillThenKeyAddedThenRerun(t *testing.T) {
	r, b0, b1, _ := newCrashBaselines(t)
	base := filepath.Dir(b0.dir)
	for i, tc := range []struct {
		fp   string
		from *crashCase
		// left: the rerun leaves a keyslot in place and names it; code:
		// its exit code.
		left bool
		code int
	}{
		{"enroll.begun", b0, true, 0},
		{"rotate.begun", b1, true, 0},
		{"rotate.keyslot-added", b1, true, 0},
		{"rotate.old-killed", b1, false, 0},
		{"rotate.old-token-removed", b1, true, 4},
	} {
		t.Run(tc.fp, func(t *testing.T) {
			c := tc.from.copy(filepath.Join(base, fmt.Sprintf("keep%02d", i)))
			c.rig = &crashRig{t: t, bin: r.bin, cryptsetup: r.cryptsetup, opKey: r.opKey, roots: r.roots}
			do := c.enroll
			if tc.from == b1 {
				do = c.rotate
			}
			do(runSpec{failpoint: tc.fp, hit: 1}).mustBeKilled(t, tc.fp, 1)

			mine := filepath.Join(c.dir, "mine.key")
			if err := os.WriteFile(mine, []byte("a key the operator added after the crash\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(r.cryptsetup, "luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
				"--key-file", r.opKey, c.img(), mine).CombinedOutput()
			if err != nil {
				t.Fatalf("luksAddKey: %v: %s", err, out)
			}
			c.opens(mine)
			t.Logf("after the kill and luksAddKey: keyslots %s", c.slotNumbers())

			rerun := do(runSpec{})
			if rerun.code != tc.code {
				t.Fatalf("rerun: exit %d, want %d\n%s", rerun.code, tc.code, rerun.stderr)
			}
			for _, l := range strings.Split(rerun.stderr, "\n") {
				if strings.Contains(l, "kill") || strings.Contains(l, "undo") || strings.Contains(l, "finishing") || strings.Contains(l, "left") {
					t.Logf("rerun: %s", l)
				}
			}
			t.Logf("keyslots: %s", c.slotNumbers())
			if left := strings.Contains(rerun.stderr, "left in place"); left != tc.left {
				t.Errorf("rerun said \"left in place\": %v, want %v", left, tc.left)
			}
			c.operatorOpens()
			c.opens(mine)
		})
	}
}

// slotNumbers lists the keyslots in use, for the log.
func (c *crashCase) slotNumbers() string {
	out, _ := exec.Command(c.rig.cryptsetup, "luksDump", "--dump-json-metadata", c.img()).Output()
	var md struct {
		Keyslots map[string]any `json:"keyslots"`
	}
	json.Unmarshal(out, &md)
	var ks []string
	for k := range md.Keyslots {
		ks = append(ks, k)
	}
	return strings.Join(ks, ",")
}
