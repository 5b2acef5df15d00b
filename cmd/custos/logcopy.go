package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/store"
)

// logCopyCommand is "custos log copy SRC DST".
func (e *env) logCopyCommand(ds docs) *cli.Command {
	return ds.add(&cli.Command{
		Name:      "copy",
		Usage:     "copy a whole ceremony log to a new one, between a file and etcd either way",
		ArgsUsage: "SRC DST",
		Description: "SRC and DST are each a file path or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]; " +
			"SRC is verified first, DST must not exist (an etcd prefix must hold no key); " +
			"every event is copied byte for byte, so every anchor recorded from SRC is good on DST, " +
			"and DST is verified against SRC's head at the end; --etcd-cacert, --etcd-cert and --etcd-key apply to both",
		Action: e.logCopy,
	}, doc{examples: []string{
		"custos log copy /var/lib/custos/custos.db etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/custos",
		"custos --etcd-cacert ca.pem log copy etcd://10.0.0.1:2379/custos /root/custos-backup.db",
	}})
}

// copyResult is what log copy reports.
type copyResult struct {
	Source string `json:"source"`
	Dest   string `json:"destination"`
	Events uint64 `json:"events"`
	Head   string `json:"head"`
}

func (r copyResult) writeText(w io.Writer) error {
	_, err := fmt.Fprintf(w, "copied %d events\nfrom    %s\nto      %s\nhead    %s\n", r.Events, r.Source, r.Dest, r.Head)
	return err
}

func (e *env) logCopy(c *cli.Context) error {
	tuneForLogPass()
	a, err := args(c, 2, 2, "SRC DST")
	if err != nil {
		return err
	}
	_, opts, err := logTarget(c)
	if err != nil {
		return err
	}
	for _, name := range a {
		if store.IsEtcd(name) {
			if _, _, err := store.ParseEtcd(name); err != nil {
				return usageErrorf(c, "%q: %v", name, err)
			}
		}
	}
	src, err := openTarget(a[0], opts)
	if err != nil {
		return err
	}
	defer src.Close()
	rep, err := store.Copy(src, a[1], opts)
	if err != nil {
		return err
	}
	return e.render(globalsOf(c).json, copyResult{Source: src.Path(), Dest: a[1], Events: rep.Events, Head: rep.Head.String()})
}
