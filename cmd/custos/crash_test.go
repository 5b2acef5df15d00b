package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/cmd/custos/internal/custodians"
	"custos.dev/custos/internal/realtest"
)

// TestKillAtEachStep kills a real custos process with SIGKILL at each step
// of enroll and rotate, through the real stack (pcscd with vpcd, virtual
// cards, cryptsetup on a LUKS2 image, the bbolt log), and checks after each
// kill that the operator's key still opens the volume, that custos status
// names what was left unfinished, that the recovery path the design
// promises works, and that a rerun of the same command finishes (or undoes
// and redoes) the job, after which the cards recover the volume.
//
// The custos under test is built with -tags custos_failpoints
// (escrow/failpoint_kill.go), whose CUSTOS_FAILPOINT makes the process kill
// itself at the named step: no deferred cleanup runs, as with kill -9.
func TestKillAtEachStep(t *testing.T) {
	r, b0, b1, oldID := newCrashBaselines(t)
	base := filepath.Dir(b0.dir)
	n := 0
	for _, tc := range []struct {
		fp  string
		hit int
		// recovers: every share is written when the kill comes, so the
		// cards recover the volume already.
		recovers bool
		// complete: the complete token is written too, so that two
		// copies (token and log) agree on all of the ceremony and a
		// rerun finishes it; otherwise a rerun undoes it (a log alone
		// saying "every share is written" proves nothing) and enrolls
		// anew.
		complete bool
	}{
		{"enroll.begun", 1, false, false},
		{"enroll.keyslot-added", 1, false, false},
		{"enroll.open-token-written", 1, false, false},
		{"enroll.card-written", 1, false, false},
		{"enroll.card-written", 2, true, false},
		{"enroll.token-written", 1, true, true},
		{"enroll.logged", 1, true, true},
	} {
		name := fmt.Sprintf("%s#%d", tc.fp, tc.hit)
		t.Run(name, func(t *testing.T) {
			c := b0.copy(filepath.Join(base, fmt.Sprintf("case%02d", n)))
			c.rig = &crashRig{t: t, bin: r.bin, cryptsetup: r.cryptsetup, opKey: r.opKey, roots: r.roots}
			n++
			start := time.Now()
			killed := c.enroll(runSpec{failpoint: tc.fp, hit: tc.hit})
			killed.mustBeKilled(t, tc.fp, tc.hit)
			c.operatorOpens()
			st := c.status()
			var killedID string
			switch {
			case tc.fp == "enroll.logged":
				// The ceremony was marked active before the kill: nothing
				// is unfinished, and a rerun refuses to enroll twice.
				if st.Unfinished != nil || st.Ceremony == nil || st.Ceremony.Status != "active" {
					t.Fatalf("after a kill past the log: status %+v", st)
				}
				killedID = st.Ceremony.ID
			default:
				if st.Unfinished == nil || st.Unfinished.Kind != "enroll" || st.Unfinished.Command == "" {
					t.Fatalf("status names no unfinished enrollment: %+v", st)
				}
				killedID = st.Unfinished.Ceremony
				t.Logf("status: %s: %s", st.Unfinished.Step, st.Unfinished.Command)
			}
			if tc.recovers {
				// Every share is on its card: the cards recover already
				// (on a copy, so that the rerun meets the volume as the
				// kill left it).
				if got := c.scratch().recover([]uint32{1001, 1002}); got != killedID {
					t.Fatalf("recovered with ceremony %s, want the killed one %s", got, killedID)
				}
			}

			rerun := c.enroll(runSpec{})
			if tc.fp == "enroll.logged" {
				if rerun.code == 0 || !strings.Contains(rerun.stderr, "already has an active ceremony") {
					t.Fatalf("rerun after a finished enrollment: exit %d, want the refusal of a second one\n%s", rerun.code, rerun.stderr)
				}
			} else {
				rerun.mustSucceed(t, "rerun enroll")
				var out struct {
					Ceremony struct {
						ID string `json:"id"`
					} `json:"ceremony"`
					Resumed string `json:"resumed"`
				}
				rerun.decode(t, &out)
				want := "undone"
				if tc.complete {
					want = "finished"
				}
				if out.Resumed != want {
					t.Fatalf("rerun: resumed %q, want %q", out.Resumed, want)
				}
				if tc.complete && out.Ceremony.ID != killedID {
					t.Fatalf("rerun finished ceremony %s, want the killed one %s", out.Ceremony.ID, killedID)
				}
				if !tc.complete && out.Ceremony.ID == killedID {
					t.Fatalf("rerun reports the undone ceremony %s as enrolled", killedID)
				}
				killedID = out.Ceremony.ID
			}
			st = c.status()
			c.settled(st, killedID)
			// The operator's keyslot and the recovery keyslot; an undone
			// enrollment leaves its keyslot behind only when a crash
			// came before its open token, the second copy that proves
			// it custos's: it is then named, never killed on the log's
			// word alone.
			wantSlots := 2
			if leftBehind(tc.fp) {
				wantSlots = 3
				if !strings.Contains(rerun.stderr, "left in place") || !strings.Contains(rerun.stderr, "luksKillSlot") {
					t.Fatalf("rerun does not name the keyslot it left:\n%s", rerun.stderr)
				}
			}
			if got := c.keyslots(); got != wantSlots {
				t.Fatalf("%d keyslots in use after the rerun, want %d", got, wantSlots)
			}
			if got := c.recover([]uint32{1001, 1002}); got != killedID {
				t.Fatalf("recovered with ceremony %s, want %s", got, killedID)
			}
			c.operatorOpens()
			t.Logf("%s: %s", name, time.Since(start).Round(time.Millisecond))
		})
	}

	for _, tc := range []struct {
		fp  string
		hit int
		// newPath: every new share is written when the kill comes, so
		// the new ceremony recovers (the kept cards' certificates name
		// it); otherwise only the old one does.
		newPath bool
		// finishes: the new complete token is written too, so a rerun
		// finishes the rotation; otherwise it undoes the new ceremony
		// and rotates anew.
		finishes bool
	}{
		{"rotate.begun", 1, false, false},
		{"rotate.keyslot-added", 1, false, false},
		{"rotate.open-token-written", 1, false, false},
		{"rotate.card-written", 1, false, false},
		{"rotate.card-written", 2, true, false},
		{"rotate.token-written", 1, true, true},
		{"rotate.old-killed", 1, true, true},
		{"rotate.old-token-removed", 1, true, true},
		{"rotate.logged", 1, true, true},
		{"rotate.wiped", 1, true, true},
	} {
		name := fmt.Sprintf("%s#%d", tc.fp, tc.hit)
		t.Run(name, func(t *testing.T) {
			c := b1.copy(filepath.Join(base, fmt.Sprintf("case%02d", n)))
			c.rig = &crashRig{t: t, bin: r.bin, cryptsetup: r.cryptsetup, opKey: r.opKey, roots: r.roots}
			n++
			start := time.Now()
			killed := c.rotate(runSpec{failpoint: tc.fp, hit: tc.hit})
			killed.mustBeKilled(t, tc.fp, tc.hit)
			c.operatorOpens()
			st := c.status()
			logged := tc.fp == "rotate.logged" || tc.fp == "rotate.wiped"
			var newID string
			switch {
			case logged:
				// Logged old → new before the kill: nothing unfinished.
				if st.Unfinished != nil || st.Ceremony == nil || st.Ceremony.Status != "active" || st.Ceremony.ID == oldID {
					t.Fatalf("after a kill past the log: status %+v", st)
				}
				newID = st.Ceremony.ID
			default:
				if st.Unfinished == nil || st.Unfinished.Kind != "rotate" || st.Unfinished.Command == "" {
					t.Fatalf("status names no unfinished rotation: %+v", st)
				}
				newID = st.Unfinished.Ceremony
				t.Logf("status: %s: %s", st.Unfinished.Step, st.Unfinished.Command)
			}
			// The old or the new recovery key works, whichever the design
			// says: the new one as soon as all its shares are verified
			// (recover prefers it), the old one before. On a copy, so
			// that the rerun meets the volume as the kill left it.
			want := oldID
			if tc.newPath {
				want = newID
			}
			if got := c.scratch().recover([]uint32{1002, 1003, 1001}); got != want {
				t.Fatalf("recovered with ceremony %s, want %s (old %s, new %s)", got, want, oldID, newID)
			}

			rerun := c.rotate(runSpec{})
			rerun.mustSucceed(t, "rerun rotate")
			var out struct {
				New struct {
					ID string `json:"id"`
				} `json:"new"`
				Old struct {
					ID string `json:"id"`
				} `json:"old"`
				Resumed string `json:"resumed"`
			}
			rerun.decode(t, &out)
			switch {
			case logged:
				// The rotation was done: the rerun is a rotation of its own.
				if out.Resumed != "" || out.Old.ID != newID {
					t.Fatalf("rerun after a logged rotation: resumed %q, old %s; want a fresh rotation of %s", out.Resumed, out.Old.ID, newID)
				}
			case tc.finishes:
				if out.Resumed != "finished" || out.New.ID != newID || out.Old.ID != oldID {
					t.Fatalf("rerun: resumed %q, %s → %s; want %s → %s finished", out.Resumed, out.Old.ID, out.New.ID, oldID, newID)
				}
			default:
				// The undone ceremony's keyslot was proven its own by
				// the open token and the log agreeing, and killed.
				if out.Resumed != "undone" || out.Old.ID != oldID || out.New.ID == newID {
					t.Fatalf("rerun: resumed %q, %s → %s; want %s undone and %s rotated anew", out.Resumed, out.Old.ID, out.New.ID, newID, oldID)
				}
			}
			st = c.status()
			c.settled(st, out.New.ID)
			// The operator's keyslot and the new recovery keyslot: neither
			// the old nor an undone keyslot is left, but for one whose
			// crash came before its open token (named, not killed).
			wantSlots := 2
			if leftBehind(tc.fp) {
				wantSlots = 3
				if !strings.Contains(rerun.stderr, "left in place") || !strings.Contains(rerun.stderr, "luksKillSlot") {
					t.Fatalf("rerun does not name the keyslot it left:\n%s", rerun.stderr)
				}
			}
			if got := c.keyslots(); got != wantSlots {
				t.Fatalf("%d keyslots in use after the rerun, want %d", got, wantSlots)
			}
			if got := c.recover([]uint32{1002, 1003}); got != out.New.ID {
				t.Fatalf("recovered with ceremony %s, want the new %s", got, out.New.ID)
			}
			c.operatorOpens()
			t.Logf("%s: %s", name, time.Since(start).Round(time.Millisecond))
		})
	}
}

// leftBehind tells the failpoints after which a rerun leaves the
// interrupted ceremony's keyslot in place: added, but not yet proven by a
// second copy (the open token).
func leftBehind(fp string) bool { return fp == "enroll.keyslot-added" || fp == "rotate.keyslot-added" }

// newCrashBaselines builds custos with its failpoints, takes the readers,
// and makes baseline 0 (a LUKS2 image whose keyslot 0 opens with the
// operator's key file, three custody cards initialised into the log) and
// baseline 1 (baseline 0 with a finished 2-of-2 enrollment on alice's and
// bob's cards, whose ceremony is oldID).
func newCrashBaselines(t *testing.T) (r *crashRig, b0, b1 *crashCase, oldID string) {
	t.Helper()
	cs := realtest.Binary(t, "cryptsetup")
	realtest.PCSCD(t)
	bin := buildFailpointCustos(t)
	// Built before the lock, so that other packages use the readers while
	// this one compiles.
	realtest.LockReaders(t)

	base := t.TempDir()
	r = &crashRig{t: t, bin: bin, cryptsetup: cs, opKey: filepath.Join(base, "operator.key")}
	if err := os.WriteFile(r.opKey, []byte("operator-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := vcard.OpenCA(filepath.Join(base, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	r.roots = ca.RootPath()

	b0 = &crashCase{rig: r, dir: filepath.Join(base, "base0")}
	if err := os.MkdirAll(filepath.Join(b0.dir, "cards"), 0o700); err != nil {
		t.Fatal(err)
	}
	r.format(b0.img())
	b0.cards = map[uint32]*vcard.Card{}
	for _, s := range crashSerials {
		c, err := vcard.NewCard(vcard.Config{Serial: s, CA: ca, StatePath: b0.cardPath(s)})
		if err != nil {
			t.Fatal(err)
		}
		b0.cards[s] = c
	}
	for i, s := range crashSerials {
		res := b0.run(runSpec{stdin: lines(crashPIN, crashPIN, crashPUK, crashPUK), deck: []uint32{s}, first: true},
			"card", "init", "--custodian", crashNames[i])
		res.mustSucceed(t, "card init")
	}

	b1 = b0.copy(filepath.Join(base, "base1"))
	var enrolled struct {
		Ceremony struct {
			ID string `json:"id"`
		} `json:"ceremony"`
	}
	res := b1.enroll(runSpec{})
	res.mustSucceed(t, "baseline enroll")
	res.decode(t, &enrolled)
	if enrolled.Ceremony.ID == "" {
		t.Fatalf("baseline enroll named no ceremony: %s", res.stdout)
	}
	return r, b0, b1, enrolled.Ceremony.ID
}

// The custody cards of the crash tests: alice's and bob's hold the first
// enrollment; a rotation moves it to bob's and carol's, wiping alice's.
var (
	crashSerials = []uint32{1001, 1002, 1003}
	crashNames   = []string{"alice", "bob", "carol"}
)

// Every custodian has the same PIN here, so that the PIN lines on standard
// input do not depend on which cards a recovery ends up taking.
const (
	crashPIN = "246802"
	crashPUK = "24680246"
)

func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

// buildFailpointCustos builds custos with the kill failpoints compiled in.
func buildFailpointCustos(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command, to build custos with its failpoints: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "custos")
	cmd := exec.Command(goBin, "build", "-tags", "custos_failpoints", "-o", bin, "custos.dev/custos/cmd/custos")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags custos_failpoints: %v\n%s", err, out)
	}
	return bin
}

// crashRig is what every case shares: the binaries, the operator's key
// file and the virtual CA's root.
type crashRig struct {
	t          *testing.T
	bin        string
	cryptsetup string
	opKey      string
	roots      string
}

// format makes a LUKS2 image with cheap PBKDF whose keyslot 0 opens with
// the operator's key file.
func (r *crashRig) format(img string) {
	r.t.Helper()
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		r.t.Fatal(err)
	}
	out, err := exec.Command(r.cryptsetup, "luksFormat", "--type", "luks2", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--batch-mode", img, "--key-file="+r.opKey).CombinedOutput()
	if err != nil {
		r.t.Fatalf("luksFormat: %v: %s", err, out)
	}
}

// crashCase is one directory of image, log and card states.
type crashCase struct {
	rig      *crashRig
	dir      string
	cards    map[uint32]*vcard.Card
	nkeys    int // new key files made by recover
	nscratch int // scratch copies made
}

func (c *crashCase) img() string { return filepath.Join(c.dir, "disk.img") }
func (c *crashCase) db() string  { return filepath.Join(c.dir, "custos.db") }
func (c *crashCase) cardPath(s uint32) string {
	return filepath.Join(c.dir, "cards", strconv.FormatUint(uint64(s), 10)+".json")
}
func (c *crashCase) newKeyPath(i int) string {
	return filepath.Join(c.dir, fmt.Sprintf("new-%d.key", i))
}
func (c *crashCase) deck(ss []uint32) []*vcard.Card {
	var d []*vcard.Card
	for _, s := range ss {
		d = append(d, c.cards[s])
	}
	return d
}

// copy copies the image, the log and the card states into dir and loads
// the cards from the copies.
func (c *crashCase) copy(dir string) *crashCase {
	t := c.rig.t
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "cards"), 0o700); err != nil {
		t.Fatal(err)
	}
	n := &crashCase{rig: c.rig, dir: dir, cards: map[uint32]*vcard.Card{}}
	copyFile(t, c.img(), n.img())
	copyFile(t, c.db(), n.db())
	for _, s := range crashSerials {
		copyFile(t, c.cardPath(s), n.cardPath(s))
		card, err := vcard.LoadCard(n.cardPath(s))
		if err != nil {
			t.Fatal(err)
		}
		n.cards[s] = card
	}
	return n
}

// scratch is a copy of the case, for a recovery that must not change
// what the rerun meets.
func (c *crashCase) scratch() *crashCase {
	c.nscratch++
	return c.copy(fmt.Sprintf("%s-scratch%d", c.dir, c.nscratch))
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// runSpec is one run of custos.
type runSpec struct {
	failpoint string // CUSTOS_FAILPOINT, "" for none
	hit       int    // CUSTOS_FAILPOINT_HIT, 0 for the default
	stdin     string
	deck      []uint32 // cards swapped in on each "insert ..."
	first     bool     // the first card in before custos starts
}

type runResult struct {
	stdout, stderr string
	code           int  // exit status; -1 when killed by a signal
	killed         bool // died of SIGKILL
}

// run runs custos with the case's log, the virtual CA's root and JSON
// output, swapping cards as custos asks.
func (c *crashCase) run(spec runSpec, args ...string) runResult {
	t := c.rig.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	all := append([]string{"--db", c.db(), "--json", "--timeout", "30s", "--attestation-roots", c.rig.roots}, args...)
	cmd := exec.CommandContext(ctx, c.rig.bin, all...)
	cmd.Dir = c.dir
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "CUSTOS_FAILPOINT") {
			env = append(env, e)
		}
	}
	if spec.failpoint != "" {
		env = append(env, "CUSTOS_FAILPOINT="+spec.failpoint)
		if spec.hit > 0 {
			env = append(env, "CUSTOS_FAILPOINT_HIT="+strconv.Itoa(spec.hit))
		}
	}
	cmd.Env = env
	cmd.Stdin = strings.NewReader(spec.stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout

	var deck *custodians.Deck
	if len(spec.deck) > 0 {
		deck = &custodians.Deck{Port: vcard.Port0, Cards: c.deck(spec.deck)}
		if spec.first {
			if _, err := deck.Insert(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	err := custodians.Run(ctx, cmd, deck, &stderr)
	if deck != nil {
		if rerr := deck.Remove(); rerr != nil {
			t.Fatalf("remove card: %v", rerr)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("custos %s: still running after %s\n%s", strings.Join(args, " "), 3*time.Minute, stderr.String())
	}
	res := runResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			res.killed = true
		}
	default:
		t.Fatalf("custos %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return res
}

func (r runResult) mustSucceed(t *testing.T, what string) {
	t.Helper()
	if r.code != 0 || r.killed {
		t.Fatalf("%s: exit %d (killed %v)\nstdout:\n%s\nstderr:\n%s", what, r.code, r.killed, r.stdout, r.stderr)
	}
}

func (r runResult) mustBeKilled(t *testing.T, fp string, hit int) {
	t.Helper()
	if !r.killed {
		t.Fatalf("custos was not killed at %s: exit %d\nstdout:\n%s\nstderr:\n%s", fp, r.code, r.stdout, r.stderr)
	}
	if want := fmt.Sprintf("failpoint %s (hit %d): kill -9", fp, hit); !strings.Contains(r.stderr, want) {
		t.Fatalf("custos died of SIGKILL, but not at its failpoint (no %q)\n%s", want, r.stderr)
	}
	if r.stdout != "" {
		t.Fatalf("a killed custos wrote a result: %s", r.stdout)
	}
}

func (r runResult) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("decode %q: %v", r.stdout, err)
	}
}

// enroll runs a 2-of-2 enrollment on alice's and bob's cards, authorised
// by the operator's key file.
func (c *crashCase) enroll(spec runSpec) runResult {
	spec.stdin = lines(crashPIN, crashPIN, crashPIN, crashPIN)
	spec.deck = []uint32{1001, 1002}
	return c.run(spec, "enroll", "-k", "2", "-n", "2", "--key-file", c.rig.opKey,
		"--custodian", "alice", "--custodian", "bob", c.img())
}

// rotate rotates to 2-of-2 on bob's and carol's cards, authorised by the
// operator's key file, and wipes alice's retired share when her card is
// inserted after theirs.
func (c *crashCase) rotate(spec runSpec) runResult {
	spec.stdin = lines(crashPIN, crashPIN, crashPIN, crashPIN, crashPIN, crashPIN)
	spec.deck = []uint32{1002, 1003, 1001}
	return c.run(spec, "rotate", "-k", "2", "-n", "2", "--key-file", c.rig.opKey, "--wipe-wait", "20s",
		"--custodian", "bob", "--custodian", "carol", c.img())
}

// recover recovers the volume with the cards given, in order, onto a new
// key file, checks that the key file opens the volume, and returns the
// ceremony recovered with.
func (c *crashCase) recover(deck []uint32) string {
	t := c.rig.t
	t.Helper()
	c.nkeys++
	key := c.newKeyPath(c.nkeys)
	if err := os.WriteFile(key, []byte(fmt.Sprintf("new key %d of %s\n", c.nkeys, c.dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdin []string
	for range deck {
		stdin = append(stdin, crashPIN)
	}
	res := c.run(runSpec{stdin: lines(stdin...), deck: deck}, "recover", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--new-key-file", key, c.img())
	res.mustSucceed(t, "recover")
	var out struct {
		Ceremony struct {
			ID string `json:"id"`
		} `json:"ceremony"`
		NewKeyslot int `json:"new_keyslot"`
	}
	res.decode(t, &out)
	c.opens(key)
	return out.Ceremony.ID
}

// operatorOpens checks that the operator's key file still opens the volume.
func (c *crashCase) operatorOpens() {
	c.rig.t.Helper()
	c.opens(c.rig.opKey)
}

func (c *crashCase) opens(key string) {
	t := c.rig.t
	t.Helper()
	out, err := exec.Command(c.rig.cryptsetup, "open", "--test-passphrase", "--key-file", key, c.img()).CombinedOutput()
	if err != nil {
		t.Fatalf("%s does not open the volume: %v: %s", filepath.Base(key), err, out)
	}
}

// keyslots counts the keyslots in use.
func (c *crashCase) keyslots() int {
	t := c.rig.t
	t.Helper()
	out, err := exec.Command(c.rig.cryptsetup, "luksDump", "--dump-json-metadata", c.img()).Output()
	if err != nil {
		t.Fatalf("luksDump: %v", err)
	}
	var md struct {
		Keyslots map[string]json.RawMessage `json:"keyslots"`
	}
	if err := json.Unmarshal(out, &md); err != nil {
		t.Fatalf("luksDump: %v", err)
	}
	return len(md.Keyslots)
}

type crashStatus struct {
	Ceremony *struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	} `json:"ceremony"`
	KeyslotInUse bool `json:"keyslot_in_use"`
	Margin       int  `json:"margin"`
	Unfinished   *struct {
		Ceremony string `json:"ceremony"`
		Kind     string `json:"kind"`
		Step     string `json:"step"`
		Command  string `json:"command"`
	} `json:"unfinished"`
	Problems []string `json:"problems"`
}

func (c *crashCase) status() crashStatus {
	t := c.rig.t
	t.Helper()
	res := c.run(runSpec{}, "status", c.img())
	res.mustSucceed(t, "status")
	var st crashStatus
	res.decode(t, &st)
	return st
}

// settled checks that status shows ceremony id in force, nothing
// unfinished and no problem.
func (c *crashCase) settled(st crashStatus, id string) {
	t := c.rig.t
	t.Helper()
	if st.Unfinished != nil {
		t.Fatalf("after the rerun, still unfinished: %+v", *st.Unfinished)
	}
	if st.Ceremony == nil || st.Ceremony.ID != id || st.Ceremony.Status != "active" || !st.KeyslotInUse || st.Margin != 0 {
		t.Fatalf("after the rerun: status %+v, want ceremony %s active with its keyslot and margin 0", st, id)
	}
	if len(st.Problems) > 0 {
		t.Fatalf("after the rerun, status reports problems: %q", st.Problems)
	}
}

func (s crashStatus) String() string {
	b, err := json.Marshal(s)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
