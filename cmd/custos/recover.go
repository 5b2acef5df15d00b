package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/escrow"
	"custos.dev/custos/luks"
)

// custos recover: k custody cards open a new keyslot on the volume; with
// several devices, one pass of the cards for all of them (recoverMany,
// recover_many.go).

// recoverPrompts are the prompts recover asks, in order: their one
// definition, from which --help, the man page and the README are made.
var recoverPrompts = []string{
	"for each card, in the order inserted: its PIN (a card that is not a custodian's is set aside before its PIN is asked)",
	"without --new-key-file: the new passphrase, then the new passphrase again",
	"with several devices: for each card, in the order inserted: its PIN, once for all the volumes",
	"with several devices, without --new-key-file: the new passphrase, then the new passphrase again, once for all the volumes",
}

func (e *env) recoverCommand(ds docs) *cli.Command {
	return ds.add(&cli.Command{
		Name:      "recover",
		Usage:     "collect k custody cards and add a new keyslot to the volume",
		ArgsUsage: "DEVICE...",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "new-key-file", Usage: "add the new keyslot with the key in `F` (whole file; - is standard input) instead of asking for a passphrase", TakesFile: true},
		}, pbkdfFlags()...),
		Action: e.recover,
	}, doc{
		examples: []string{
			"custos recover /dev/sda2",
			"custos recover --new-key-file /root/new.key disk.img",
			`printf '%s\n' "$pin1" "$pin2" "$pin3" | custos recover --new-key-file new.key disk.img`,
			"custos recover --new-key-file /root/new.key /dev/sda2 /dev/sdb2 /dev/sdc2   # one pass of the cards for all three",
		},
		prompts: recoverPrompts,
	})
}

type recoverView struct {
	Ceremony   *ceremonyView `json:"ceremony"`
	Source     string        `json:"source"`
	Keyslot    int           `json:"keyslot"`
	NewKeyslot int           `json:"new_keyslot"`
	Cards      []outcomeView `json:"cards"`
	Problems   []string      `json:"problems"`
	Anchor     string        `json:"anchor,omitempty"`
}

func (v recoverView) writeText(w io.Writer) error {
	v.Ceremony.writeText(w, "recovered with ceremony")
	fmt.Fprintf(w, "  learnt from  %s\n", v.Source)
	writeOutcomes(w, v.Cards)
	for _, p := range v.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	fmt.Fprintf(w, "new keyslot %d opens the volume with the new key\n", v.NewKeyslot)
	if v.Anchor != "" {
		fmt.Fprintf(w, "log head %s\n", v.Anchor)
	}
	return nil
}

func pbkdfFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "pbkdf", Usage: "PBKDF of the new keyslot, as cryptsetup's --pbkdf: pbkdf2, argon2i or argon2id (default: cryptsetup's)"},
		&cli.IntFlag{Name: "pbkdf-force-iterations", Usage: "fix the PBKDF's iterations and skip the benchmark, as cryptsetup's --pbkdf-force-iterations (for tests and rehearsals)"},
		&cli.IntFlag{Name: "pbkdf-memory", Usage: "argon2 memory cost in KiB, as cryptsetup's --pbkdf-memory"},
	}
}

func pbkdfOf(c *cli.Context) (*luks.PBKDF, error) {
	if !c.IsSet("pbkdf") && !c.IsSet("pbkdf-force-iterations") && !c.IsSet("pbkdf-memory") {
		return nil, nil
	}
	p := &luks.PBKDF{Type: c.String("pbkdf"), Iterations: c.Int("pbkdf-force-iterations"), MemoryKiB: c.Int("pbkdf-memory")}
	if p.Type != "" {
		if err := oneOf(c, "pbkdf", p.Type, "pbkdf2", "argon2i", "argon2id"); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (e *env) recover(c *cli.Context) error {
	if c.NArg() > 1 {
		return e.recoverMany(c)
	}
	a, err := args(c, 1, 1, "DEVICE")
	if err != nil {
		return err
	}
	pbkdf, err := pbkdfOf(c)
	if err != nil {
		return err
	}
	key, err := e.keyFlag(c, "new-key-file")
	if err != nil {
		return err
	}
	defer key.Free()
	env, done, err := e.ceremonyEnv(c, a[0], logIfThere)
	if err != nil {
		return err
	}
	defer done()
	env.PBKDF = pbkdf
	res, err := escrow.Recover(c.Context, env, escrow.RecoverOptions{NewKey: key.Bytes()})
	if res != nil && res.NewKeyslot >= 0 {
		// The volume opens with the new key: say so, even when a copy
		// failed its check afterwards (the error follows).
		if rerr := e.render(globalsOf(c).json, recoverView{Ceremony: viewRecord(res.Ceremony), Source: res.Source,
			Keyslot: res.Keyslot, NewKeyslot: res.NewKeyslot, Cards: viewOutcomes(res.Cards),
			Problems: append([]string{}, res.Problems...), Anchor: anchorString(res.Anchor)}); rerr != nil {
			return rerr
		}
		return err
	}
	if res != nil && err != nil {
		// Say what each card did before the error.
		writeOutcomes(e.stderr, viewOutcomes(res.Cards))
	}
	return err
}
