package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
)

// custos enroll: a new ceremony on one volume, its cards present; with
// --set, every device named enrolled to a custodian set with no card
// present (enrollSet, enroll_set.go).

// enrollPrompts are the prompts enroll asks, in order: their one
// definition, from which --help, the man page and the README are made.
var enrollPrompts = []string{
	"without --key-file: the passphrase of an existing keyslot",
	"for each card, in the order inserted: its PIN (a wrong PIN is asked again, at most three tries, never the card's last)",
	"with --set, without --key-file: the passphrase of an existing keyslot, once for every volume (no card, no PIN)",
}

func (e *env) enrollCommand(ds docs) *cli.Command {
	return ds.add(&cli.Command{
		Name:      "enroll",
		Usage:     "split a new recovery key k-of-n over n custody cards and add its keyslot",
		ArgsUsage: "DEVICE...",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "k", Usage: "`K` cards needed to recover"},
			&cli.IntFlag{Name: "n", Usage: "`N` cards, one share each"},
			keyFileFlag(), custodiansFlag(), allowUnattestedFlag(),
			setFlag("enroll the devices to custodian set `NAME`, with no card present (-k defaults to the set's; --key-file may name a directory holding one key file per device, named after it)"),
		},
		Action: e.enroll,
	}, doc{
		examples: []string{
			"custos enroll -k 3 -n 5 --custodian alice --custodian bob --custodian carol --custodian dave --custodian erin /dev/sda2",
			"custos enroll -k 2 -n 3 --key-file /root/volume.key disk.img",
			"custos enroll --set dc1 --key-file /root/keys/ /dev/sda2 /dev/sdb2 /dev/sdc2",
			"custos --json enroll --set dc1 -k 2 --key-file operator.key vol*.img",
		},
		prompts: enrollPrompts,
	})
}

type enrollView struct {
	Ceremony *ceremonyView `json:"ceremony"`
	TokenID  int           `json:"token_id"`
	Anchor   string        `json:"anchor,omitempty"`
	Resumed  string        `json:"resumed,omitempty"`
}

func (v enrollView) writeText(w io.Writer) error {
	if v.Resumed != "" {
		fmt.Fprintf(w, "an unfinished enrollment was %s first\n", v.Resumed)
	}
	v.Ceremony.writeText(w, "enrolled ceremony")
	if v.TokenID >= 0 {
		fmt.Fprintf(w, "  token    %d\n", v.TokenID)
	} else {
		fmt.Fprintf(w, "  token    none (the ceremony lives in the log and on the cards)\n")
	}
	if v.Anchor != "" {
		fmt.Fprintf(w, "  log head %s  (write it down: the anchor for 'custos log verify --anchor')\n", v.Anchor)
	}
	return nil
}

func (e *env) enroll(c *cli.Context) error {
	if c.IsSet("set") {
		return e.enrollSet(c)
	}
	a, err := args(c, 1, 1, "DEVICE")
	if err != nil {
		return err
	}
	k, n := c.Int("k"), c.Int("n")
	if !c.IsSet("k") || !c.IsSet("n") {
		return usageErrorf(c, "enroll needs -k K and -n N")
	}
	if k < 2 || n < k || n > 255 {
		return usageErrorf(c, "-k %d -n %d: need 2 <= k <= n <= 255", k, n)
	}
	names := c.StringSlice("custodian")
	if len(names) > n {
		return usageErrorf(c, "%d custodians named for %d cards", len(names), n)
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
	res, err := escrow.Enroll(c.Context, env, escrow.EnrollOptions{K: k, N: n, Custodians: names, AuthKey: key.Bytes(),
		AllowUnattested: c.Bool("allow-unattested")})
	if err != nil {
		return err
	}
	return e.render(globalsOf(c).json, enrollView{Ceremony: viewRecord(res.Ceremony).withAttestations(res.Attestations), TokenID: res.TokenID,
		Anchor: anchorString(res.Anchor), Resumed: res.Resumed})
}
