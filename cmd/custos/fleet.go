package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"custos.dev/custos/escrow"
	"custos.dev/custos/internal/secmem"
	"custos.dev/custos/luks"
	"custos.dev/custos/store"
)

// What the fleet commands share: the set command group (set.go) and the
// fleet forms of enroll, recover, rotate, rollcall and status
// (enroll_set.go, recover_many.go, rotate_set.go, rollcall_set.go,
// status_set.go), to which each command's action turns when --set is given
// (recover: when several devices are).

// openVolumes opens each device named; one that cannot be opened carries
// its error, for the fleet ceremony to report with the others.
func openVolumes(devices []string) []escrow.FleetVolume {
	out := make([]escrow.FleetVolume, len(devices))
	for i, d := range devices {
		out[i].Device = d
		v, err := luks.Open(d)
		if err != nil {
			out[i].Err = err
			continue
		}
		out[i].Volume = v
	}
	return out
}

// fleetArgs checks the devices of a fleet command: at least one, no flag
// among them, none twice.
func fleetArgs(c *cli.Context) ([]string, error) {
	a, err := args(c, 1, 1<<20, "DEVICE...")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, d := range a {
		if seen[d] {
			return nil, usageErrorf(c, "device %s named twice", d)
		}
		seen[d] = true
	}
	return a, nil
}

// refuseWith refuses flags that do not go with the fleet form.
func refuseWith(c *cli.Context, form string, flags ...string) error {
	for _, f := range flags {
		if c.IsSet(f) {
			dash := "--"
			if len(f) == 1 {
				dash = "-"
			}
			return usageErrorf(c, "%s%s does not go with %s", dash, f, form)
		}
	}
	return nil
}

// progress draws a bar on a terminal (standard error): the volumes done.
// Elsewhere it draws nothing. Talk said meanwhile clears the bar, is
// written, and the bar is drawn again below it.
type progress struct {
	mu          sync.Mutex
	out         io.Writer
	on          bool
	done, total int
	item        string
	drawn       bool
}

func newProgress(w io.Writer, total int) *progress {
	f, ok := w.(*os.File)
	return &progress{out: w, on: ok && term.IsTerminal(int(f.Fd())), total: total}
}

func (p *progress) set(done int, item string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.item = done, item
	p.draw()
}

func (p *progress) draw() {
	if !p.on {
		return
	}
	const width = 30
	n := width * p.done / max(p.total, 1)
	fmt.Fprintf(p.out, "\r\x1b[K[%s%s] %d/%d %s", strings.Repeat("#", n), strings.Repeat(".", width-n), p.done, p.total, escrow.SafeText(p.item))
	p.drawn = true
}

func (p *progress) clear() {
	if p.on && p.drawn {
		fmt.Fprint(p.out, "\r\x1b[K")
		p.drawn = false
	}
}

// finish leaves the bar on its own line.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.on && p.drawn {
		fmt.Fprintln(p.out)
		p.drawn = false
	}
}

// barPrompter is the escrow prompter with a progress bar kept below the
// talk.
type barPrompter struct {
	escrowPrompter
	bar *progress
}

func (b barPrompter) Say(msg string) {
	b.bar.mu.Lock()
	defer b.bar.mu.Unlock()
	b.bar.clear()
	b.escrowPrompter.Say(msg)
	b.bar.draw()
}

// setRefView names a custodian set as a record does.
type setRefView struct {
	Name        string `json:"name"`
	Version     int    `json:"version"`
	Fingerprint string `json:"fingerprint"`
}

func viewSetRef(r *store.SetRef) *setRefView {
	if r == nil {
		return nil
	}
	return &setRefView{Name: r.Name, Version: r.Version, Fingerprint: fmt.Sprintf("%x", r.Fingerprint[:])}
}

// fleetKeys are the operator's key for each volume of a fleet enrollment:
// from --key-file (a directory holding one file per device, named after
// the device's last element, or one key for all), or one passphrase asked
// once. Free releases them.
type fleetKeys struct {
	held []*secmem.Buf
}

func (k *fleetKeys) Free() {
	for _, b := range k.held {
		b.Free()
	}
	k.held = nil
}

// keysFor fills each volume's AuthKey. A volume whose key file is missing
// or unreadable carries that error.
func (e *env) keysFor(c *cli.Context, vols []escrow.FleetVolume) (*fleetKeys, error) {
	keys := &fleetKeys{}
	if !c.IsSet("key-file") {
		p, err := e.prompt.Secret(fmt.Sprintf("passphrase of an existing keyslot of the %d volumes", len(vols)))
		if err != nil {
			return keys, err
		}
		for i := range vols {
			vols[i].AuthKey = p
		}
		return keys, nil
	}
	path := c.String("key-file")
	if path == "" {
		return keys, usageErrorf(c, "--key-file needs a path (a file, a directory of files named after the devices, or - for standard input)")
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		for i := range vols {
			if vols[i].Err != nil {
				continue
			}
			f := filepath.Join(path, filepath.Base(vols[i].Device))
			k, err := readKeyFile(e.stdin, f)
			if err != nil {
				vols[i].Err = fmt.Errorf("key file for %s: %w", vols[i].Device, err)
				continue
			}
			keys.held = append(keys.held, k)
			vols[i].AuthKey = k.Bytes()
		}
		return keys, nil
	}
	k, err := e.keyFlag(c, "key-file")
	if err != nil {
		return keys, err
	}
	keys.held = append(keys.held, k)
	for i := range vols {
		vols[i].AuthKey = k.Bytes()
	}
	return keys, nil
}

// errorText is an error as a view carries it.
func errorText(err error) string {
	if err == nil {
		return ""
	}
	return message(err)
}
