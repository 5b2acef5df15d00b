package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
	"custos.dev/custos/store"
)

// custos rotate: a new recovery key and shares for the volume, possibly
// with a new card set; with --set, the devices enrolled to a custodian set
// rotated to its new version (rotateSet, rotate_set.go).

// rotatePrompts are the prompts rotate asks, in order: their one
// definition, from which --help, the man page and the README are made.
var rotatePrompts = []string{
	"without --key-file: for each old card, in the order inserted: its PIN, until k shares are good",
	"for each new card, in the order inserted: its PIN",
	"with --wipe-wait: for each old card leaving the set, when inserted: its PIN, to wipe its share",
	"with --set: the new card's PIN, to open a challenge sealed to its key (unless an earlier run logged the set's new version)",
	"with --set: for each card of the pass, in the order inserted: its PIN, once for all the volumes, until each volume has k good shares",
}

func (e *env) rotateCommand(ds docs) *cli.Command {
	return ds.add(&cli.Command{
		Name:      "rotate",
		Usage:     "replace the recovery key and its shares, possibly with a new card set",
		ArgsUsage: "DEVICE...",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "k", Usage: "`K` of the new ceremony (default: as before)"},
			&cli.IntFlag{Name: "n", Usage: "`N` of the new ceremony (default: as before)"},
			keyFileFlag(), custodiansFlag(), allowUnattestedFlag(),
			&cli.DurationFlag{Name: "wipe-wait", Usage: "how long to wait for each old card leaving the set to be inserted for wiping (default: do not wait; they are listed)"},
			setFlag("rotate the devices enrolled to custodian set `NAME` to its new version (with --replace)"),
			&cli.StringFlag{Name: "replace", Usage: "with --set: card `OLD=NEW` (serials; NEW:SLOT to name the new card's custody slot) takes OLD's place in the set"},
		},
		Action: e.rotate,
	}, doc{
		examples: []string{
			"custos rotate /dev/sda2",
			"custos rotate -k 2 -n 3 --custodian alice --custodian bob --custodian frank disk.img",
			"custos rotate --set dc1 --replace 5000=5005 --custodian frank /dev/sda2 /dev/sdb2",
		},
		prompts: rotatePrompts,
	})
}

type rotateView struct {
	Old       *ceremonyView `json:"old"`
	New       *ceremonyView `json:"new"`
	OldKilled bool          `json:"old_killed"`
	Problems  []string      `json:"problems"`
	Wiped     []cardRefView `json:"wiped"`
	ToWipe    []cardRefView `json:"to_wipe"`
	Anchor    string        `json:"anchor,omitempty"`
	Resumed   string        `json:"resumed,omitempty"`
}

func (v rotateView) writeText(w io.Writer) error {
	if v.Resumed != "" {
		fmt.Fprintf(w, "an unfinished rotation was %s first\n", v.Resumed)
	}
	v.New.writeText(w, "new ceremony")
	if v.Old != nil {
		if v.OldKilled {
			fmt.Fprintf(w, "replaces ceremony %s (its keyslot %d is killed)\n", v.Old.ID, v.Old.Keyslot)
		} else {
			fmt.Fprintf(w, "replaces ceremony %s (its keyslot %d is NOT killed: see the problem below)\n", v.Old.ID, v.Old.Keyslot)
		}
	}
	for _, p := range v.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	for _, c := range v.Wiped {
		fmt.Fprintf(w, "  wiped     card %s (custodian %s)\n", c.Serial, c.Custodian)
	}
	for _, c := range v.ToWipe {
		fmt.Fprintf(w, "  to wipe   card %s (custodian %s): its retired share opens nothing now, but wipe it when it is at hand\n", c.Serial, c.Custodian)
	}
	if v.Anchor != "" {
		fmt.Fprintf(w, "log head %s\n", v.Anchor)
	}
	return nil
}

func (e *env) rotate(c *cli.Context) error {
	if c.IsSet("set") {
		return e.rotateSet(c)
	}
	a, err := args(c, 1, 1, "DEVICE")
	if err != nil {
		return err
	}
	k, n := c.Int("k"), c.Int("n")
	if c.IsSet("k") != c.IsSet("n") {
		return usageErrorf(c, "give -k and -n together, or neither to keep them")
	}
	if c.IsSet("k") && (k < 2 || n < k || n > 255) {
		return usageErrorf(c, "-k %d -n %d: need 2 <= k <= n <= 255", k, n)
	}
	key, err := e.keyFlag(c, "key-file")
	if err != nil {
		return err
	}
	defer key.Free()
	env, done, err := e.ceremonyEnv(c, a[0], logWrite)
	if err != nil {
		return err
	}
	defer done()
	res, err := escrow.Rotate(c.Context, env, escrow.RotateOptions{K: k, N: n, Custodians: c.StringSlice("custodian"),
		AuthKey: key.Bytes(), WipeWait: c.Duration("wipe-wait"), AllowUnattested: c.Bool("allow-unattested")})
	if res == nil || res.Anchor == (store.Head{}) {
		return err
	}
	v := rotateView{Old: viewRecord(res.Old), New: viewRecord(res.New).withAttestations(res.Attestations), OldKilled: res.OldKilled, Wiped: []cardRefView{}, ToWipe: []cardRefView{},
		Problems: append([]string{}, res.Problems...), Anchor: anchorString(res.Anchor), Resumed: res.Resumed}
	for _, r := range res.Wiped {
		v.Wiped = append(v.Wiped, viewRef(r))
	}
	for _, r := range res.ToWipe {
		v.ToWipe = append(v.ToWipe, viewRef(r))
	}
	if res.LogSuspect {
		e.say("custos: hint: run custos log verify: the log's record of the retired ceremony is not the one its key proved")
	}
	if rerr := e.render(globalsOf(c).json, v); rerr != nil {
		return rerr
	}
	return err
}
