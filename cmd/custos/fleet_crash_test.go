package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// The fleet through the command line and the real stack (a custos built
// with its failpoints, pcscd with vpcd, virtual cards, cryptsetup on
// LUKS2 images, the bbolt log): a set made with custos set create, its
// file taken to another log with custos set import, three images enrolled
// with custos enroll --set and one key file per image, and then custos
// rotate --set killed with SIGKILL at each of its steps: after each kill
// every image opens with the operator's key and keeps a recovery path, and
// a rerun of the same command finishes — every image on the set's new
// version, the replaced card's keyslots killed — after which one pass of
// the new set's cards recovers all three.

var (
	fleetSerials = []uint32{2001, 2002, 2003, 2004, 2005, 2006}
	fleetImages  = []string{"a.img", "b.img", "c.img"}
)

// fleetCase is one directory of images, log and card states.
type fleetCase struct {
	rig   *crashRig
	dir   string
	cards map[uint32]*vcard.Card
	nkeys int
}

func (c *fleetCase) db() string             { return filepath.Join(c.dir, "custos.db") }
func (c *fleetCase) img(name string) string { return filepath.Join(c.dir, name) }
func (c *fleetCase) keys() string           { return filepath.Join(c.dir, "keys") }
func (c *fleetCase) cardPath(s uint32) string {
	return filepath.Join(c.dir, "cards", strconv.FormatUint(uint64(s), 10)+".json")
}

func (c *fleetCase) images() []string {
	var out []string
	for _, n := range fleetImages {
		out = append(out, c.img(n))
	}
	return out
}

// copy copies the images, key files, log and card states into dir.
func (c *fleetCase) copy(dir string) *fleetCase {
	t := c.rig.t
	t.Helper()
	for _, d := range []string{"cards", "keys"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	n := &fleetCase{rig: c.rig, dir: dir, cards: map[uint32]*vcard.Card{}}
	copyFile(t, c.db(), n.db())
	for _, name := range fleetImages {
		copyFile(t, c.img(name), n.img(name))
		copyFile(t, filepath.Join(c.keys(), name), filepath.Join(n.keys(), name))
	}
	for _, s := range fleetSerials {
		copyFile(t, c.cardPath(s), n.cardPath(s))
		card, err := vcard.LoadCard(n.cardPath(s))
		if err != nil {
			t.Fatal(err)
		}
		n.cards[s] = card
	}
	return n
}

// run runs custos as crashCase.run does, on this case's log and cards.
func (c *fleetCase) run(spec runSpec, args ...string) runResult {
	t := c.rig.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
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
		var cs []*vcard.Card
		for _, s := range spec.deck {
			cs = append(cs, c.cards[s])
		}
		deck = &custodians.Deck{Port: vcard.Port0, Cards: cs}
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
		t.Fatalf("custos %s: still running after 4m\n%s", strings.Join(args, " "), stderr.String())
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

func pins(n int) string {
	var ls []string
	for range n {
		ls = append(ls, crashPIN)
	}
	return lines(ls...)
}

// rotateSet replaces card 2001 by card 2006 across the three images;
// cards 2002, 2003 and 2004 authorise.
func (c *fleetCase) rotateSet(spec runSpec, withNew bool) runResult {
	spec.stdin = pins(4)
	spec.deck = []uint32{2002, 2003, 2004}
	if withNew {
		spec.deck = append([]uint32{2006}, spec.deck...)
	}
	return c.run(spec, append([]string{"rotate", "--set", "dc1", "--replace", "2001=2006", "--custodian", "frank"}, c.images()...)...)
}

type fleetStatus struct {
	Ceremony *struct {
		ID  string `json:"id"`
		Set *struct {
			Name    string `json:"name"`
			Version int    `json:"version"`
		} `json:"set"`
		Keyslot int `json:"keyslot"`
	} `json:"ceremony"`
	KeyslotInUse bool `json:"keyslot_in_use"`
	Margin       int  `json:"margin"`
	Unfinished   *struct {
		Kind    string `json:"kind"`
		Command string `json:"command"`
	} `json:"unfinished"`
	Problems []string `json:"problems"`
}

func (c *fleetCase) status(img string) fleetStatus {
	t := c.rig.t
	t.Helper()
	res := c.run(runSpec{}, "status", img)
	if res.code != 0 && res.code != 4 {
		t.Fatalf("status %s: exit %d\n%s", img, res.code, res.stderr)
	}
	var st fleetStatus
	res.decode(t, &st)
	return st
}

func (c *fleetCase) opens(img, key string) {
	t := c.rig.t
	t.Helper()
	out, err := exec.Command(c.rig.cryptsetup, "open", "--test-passphrase", "--key-file", key, img).CombinedOutput()
	if err != nil {
		t.Fatalf("%s does not open %s: %v: %s", filepath.Base(key), filepath.Base(img), err, out)
	}
}

func (c *fleetCase) keyslots(img string) int {
	t := c.rig.t
	t.Helper()
	out, err := exec.Command(c.rig.cryptsetup, "luksDump", "--dump-json-metadata", img).Output()
	if err != nil {
		t.Fatalf("luksDump: %v", err)
	}
	var md struct {
		Keyslots map[string]json.RawMessage `json:"keyslots"`
	}
	if err := json.Unmarshal(out, &md); err != nil {
		t.Fatal(err)
	}
	return len(md.Keyslots)
}

// recoverAll recovers the three images in one pass of the cards given,
// onto a new key file, and checks that it opens each.
func (c *fleetCase) recoverAll(deck []uint32) {
	t := c.rig.t
	t.Helper()
	c.nkeys++
	key := filepath.Join(c.dir, fmt.Sprintf("new-%d.key", c.nkeys))
	if err := os.WriteFile(key, []byte(fmt.Sprintf("fleet key %d\n", c.nkeys)), 0o600); err != nil {
		t.Fatal(err)
	}
	res := c.run(runSpec{stdin: pins(len(deck)), deck: deck}, append([]string{"recover", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--new-key-file", key}, c.images()...)...)
	res.mustSucceed(t, "recover")
	var out struct {
		Volumes []struct {
			Device string `json:"device"`
			OK     bool   `json:"ok"`
		} `json:"volumes"`
		Cards []struct {
			Opened int `json:"opened"`
		} `json:"cards"`
	}
	res.decode(t, &out)
	if len(out.Volumes) != len(fleetImages) {
		t.Fatalf("recover: %s", res.stdout)
	}
	// The keys were combined on this machine: the operator is told to
	// rotate the volumes, on stderr.
	if want := fmt.Sprintf("%d volumes open with the new key", len(fleetImages)); !strings.Contains(res.stderr, want) || !strings.Contains(res.stderr, "rotate them") {
		t.Fatalf("recover: no advice to rotate on stderr:\n%s", res.stderr)
	}
	for _, img := range c.images() {
		c.opens(img, key)
	}
}

// newFleetBaseline builds custos with its failpoints, takes the readers,
// initialises six cards, creates set dc1 of cards 2001-2005 (3 of 5),
// checks its file on a second log, and enrolls the three images to it
// with a key file each.
func newFleetBaseline(t *testing.T) *fleetCase {
	t.Helper()
	cs := realtest.Binary(t, "cryptsetup")
	realtest.PCSCD(t)
	bin := buildFailpointCustos(t)
	realtest.LockReaders(t)
	base := t.TempDir()
	r := &crashRig{t: t, bin: bin, cryptsetup: cs, opKey: filepath.Join(base, "operator.key")}
	if err := os.WriteFile(r.opKey, []byte("operator-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := vcard.OpenCA(filepath.Join(base, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	r.roots = ca.RootPath()
	b := &fleetCase{rig: r, dir: filepath.Join(base, "base"), cards: map[uint32]*vcard.Card{}}
	for _, d := range []string{"cards", "keys"} {
		if err := os.MkdirAll(filepath.Join(b.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for i, name := range fleetImages {
		// Each image has a key file of its own, named after it.
		key := filepath.Join(b.keys(), name)
		if err := os.WriteFile(key, []byte(fmt.Sprintf("operator key of image %d\n", i)), 0o600); err != nil {
			t.Fatal(err)
		}
		(&crashRig{t: t, cryptsetup: cs, opKey: key}).format(b.img(name))
	}
	for _, s := range fleetSerials {
		c, err := vcard.NewCard(vcard.Config{Serial: s, CA: ca, StatePath: b.cardPath(s)})
		if err != nil {
			t.Fatal(err)
		}
		b.cards[s] = c
	}
	for i, s := range fleetSerials {
		res := b.run(runSpec{stdin: lines(crashPIN, crashPIN, crashPUK, crashPUK), deck: []uint32{s}, first: true},
			"card", "init", "--custodian", []string{"alice", "bob", "carol", "dave", "erin", "frank"}[i])
		res.mustSucceed(t, "card init")
	}

	// set create: a stranger (2006) is set aside unasked; each card once.
	res := b.run(runSpec{stdin: pins(5), deck: []uint32{2006, 2001, 2002, 2003, 2004, 2005}},
		"set", "create", "--card", "2001", "--card", "2002", "--card", "2003", "--card", "2004", "--card", "2005", "-k", "3", "dc1")
	res.mustSucceed(t, "set create")
	var set struct {
		Name        string `json:"name"`
		Version     int    `json:"version"`
		Fingerprint string `json:"fingerprint"`
		Cards       []struct {
			Serial   string `json:"serial"`
			Attested bool   `json:"attested"`
		} `json:"cards"`
	}
	res.decode(t, &set)
	if set.Version != 1 || len(set.Cards) != 5 || !set.Cards[4].Attested || !strings.Contains(res.stderr, "card 2006: set aside") {
		t.Fatalf("set create: %s\n%s", res.stdout, res.stderr)
	}

	// The set file on another log: refused with a changed byte or a wrong
	// fingerprint, taken with the right one.
	exp := b.run(runSpec{}, "set", "export", "dc1")
	exp.mustSucceed(t, "set export")
	var ev struct {
		File string `json:"file"`
	}
	exp.decode(t, &ev)
	file := filepath.Join(base, "dc1.set")
	if err := os.WriteFile(file, []byte(ev.File), 0o600); err != nil {
		t.Fatal(err)
	}
	other := &fleetCase{rig: r, dir: filepath.Join(base, "other")}
	os.MkdirAll(other.dir, 0o700)
	changed := filepath.Join(base, "changed.set")
	os.WriteFile(changed, bytes.Replace([]byte(ev.File), []byte(`"k":3`), []byte(`"k":2`), 1), 0o600)
	if res := other.run(runSpec{}, "set", "import", "--fingerprint", set.Fingerprint, changed); res.code != 4 || !strings.Contains(res.stderr, "fingerprint") {
		t.Fatalf("import of a changed file: exit %d\n%s", res.code, res.stderr)
	}
	if res := other.run(runSpec{}, "set", "import", "--fingerprint", strings.Repeat("0", 64), file); res.code != 4 {
		t.Fatalf("import with a wrong fingerprint: exit %d\n%s", res.code, res.stderr)
	}
	if res := other.run(runSpec{}, "set", "import", "--fingerprint", set.Fingerprint, file); res.code != 0 {
		t.Fatalf("import: exit %d\n%s", res.code, res.stderr)
	}

	// enroll --set: one key file per image from the directory; a file
	// that is not LUKS among them fails alone, named.
	notLUKS := filepath.Join(b.dir, "notluks.img")
	os.WriteFile(notLUKS, make([]byte, 1<<20), 0o600)
	os.WriteFile(filepath.Join(b.keys(), "notluks.img"), []byte("x"), 0o600)
	res = b.run(runSpec{}, append([]string{"enroll", "--set", "dc1", "--key-file", b.keys()}, append(b.images(), notLUKS)...)...)
	if res.code != 1 {
		t.Fatalf("enroll --set with a file that is not luks: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	var enr struct {
		Volumes []struct {
			Device string `json:"device"`
			OK     bool   `json:"ok"`
			Error  string `json:"error"`
		} `json:"volumes"`
		Failed []string `json:"failed"`
	}
	res.decode(t, &enr)
	if len(enr.Volumes) != 4 || !enr.Volumes[0].OK || !enr.Volumes[2].OK || enr.Volumes[3].OK || len(enr.Failed) != 1 || enr.Failed[0] != notLUKS {
		t.Fatalf("enroll --set: %s", res.stdout)
	}
	os.Remove(notLUKS)
	for _, img := range b.images() {
		st := b.status(img)
		if st.Ceremony == nil || st.Ceremony.Set == nil || st.Ceremony.Set.Version != 1 || st.Margin != 2 || st.Unfinished != nil {
			t.Fatalf("status %s after enroll --set: %+v", img, st)
		}
	}
	// status --set: three volumes, margin 2 each.
	res = b.run(runSpec{}, "status", "--set", "dc1")
	res.mustSucceed(t, "status --set")
	var ss struct {
		Volumes []struct {
			Margin int `json:"margin"`
		} `json:"volumes"`
	}
	res.decode(t, &ss)
	if len(ss.Volumes) != 3 || ss.Volumes[0].Margin != 2 {
		t.Fatalf("status --set: %s", res.stdout)
	}
	return b
}

func TestFleetKillAtEachStep(t *testing.T) {
	b := newFleetBaseline(t)
	base := filepath.Dir(b.dir)
	for n, tc := range []struct {
		fp  string
		hit int
	}{
		{"rotate.set-logged", 1},
		{"rotate.begun", 2},
		{"rotate.keyslot-added", 2},
		{"rotate.open-token-written", 2},
		{"rotate.sealed", 2},
		{"rotate.token-written", 2},
		{"rotate.old-killed", 2},
		{"rotate.old-token-removed", 2},
		{"rotate.logged", 2},
	} {
		name := fmt.Sprintf("%s#%d", tc.fp, tc.hit)
		t.Run(name, func(t *testing.T) {
			c := b.copy(filepath.Join(base, fmt.Sprintf("case%02d", n)))
			c.rig = &crashRig{t: t, bin: b.rig.bin, cryptsetup: b.rig.cryptsetup, opKey: b.rig.opKey, roots: b.rig.roots}
			start := time.Now()
			killed := c.rotateSet(runSpec{failpoint: tc.fp, hit: tc.hit}, true)
			killed.mustBeKilled(t, tc.fp, tc.hit)
			for i, img := range c.images() {
				c.opens(img, filepath.Join(c.keys(), fleetImages[i]))
				st := c.status(img)
				if !st.KeyslotInUse && st.Unfinished == nil {
					t.Fatalf("%s: no recovery path after the kill: %+v", fleetImages[i], st)
				}
			}
			rerun := c.rotateSet(runSpec{}, false)
			rerun.mustSucceed(t, "rerun rotate --set")
			var out struct {
				SetResumed bool `json:"set_resumed"`
				Set        struct {
					Version int `json:"version"`
				} `json:"set"`
				Volumes []struct {
					OK      bool   `json:"ok"`
					Already bool   `json:"already"`
					Resumed string `json:"resumed"`
				} `json:"volumes"`
			}
			rerun.decode(t, &out)
			if !out.SetResumed || out.Set.Version != 2 || len(out.Volumes) != 3 {
				t.Fatalf("rerun: %s", rerun.stdout)
			}
			if tc.fp != "rotate.set-logged" && !out.Volumes[0].Already {
				t.Fatalf("rerun rotated the first image again: %s", rerun.stdout)
			}
			for i, img := range c.images() {
				c.opens(img, filepath.Join(c.keys(), fleetImages[i]))
				st := c.status(img)
				if st.Unfinished != nil || len(st.Problems) != 0 || st.Ceremony == nil || st.Ceremony.Set == nil || st.Ceremony.Set.Version != 2 || st.Margin != 2 {
					t.Fatalf("%s after the rerun: %+v", fleetImages[i], st)
				}
				want := 2
				if i == 1 && tc.fp == "rotate.keyslot-added" {
					// Added, then killed before the open token: only the
					// log names it, so it is left in place, named.
					want = 3
				}
				if got := c.keyslots(img); got != want {
					t.Fatalf("%s: %d keyslots after the rerun, want %d", fleetImages[i], got, want)
				}
			}
			// One pass of the new set's cards, the new card among them.
			c.recoverAll([]uint32{2006, 2003, 2005})
			t.Logf("%s: %s", name, time.Since(start).Round(time.Millisecond))
		})
	}
}
