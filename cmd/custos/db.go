package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/urfave/cli/v2"

	"custos.dev/custos/store"
)

// Where the ceremony log lives: --db names a file or an etcd cluster
// (etcd://HOST:PORT[,HOST:PORT...][/PREFIX]); --etcd-cacert, --etcd-cert
// and --etcd-key give TLS to the cluster. The same settings may come from
// a config file (--config, default /etc/custos/config.json), a JSON object
// with the members below, all optional; a flag given on the command line
// wins over the file:
//
//	{"db": "etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/custos",
//	 "etcd_cacert": "/etc/custos/etcd-ca.pem",
//	 "etcd_cert": "/etc/custos/etcd-client.pem",
//	 "etcd_key": "/etc/custos/etcd-client-key.pem"}

// defaultConfig is read when --config is not given; it may be absent.
const defaultConfig = "/etc/custos/config.json"

// fileConfig is the config file's content.
type fileConfig struct {
	DB         string `json:"db,omitempty"`
	EtcdCACert string `json:"etcd_cacert,omitempty"`
	EtcdCert   string `json:"etcd_cert,omitempty"`
	EtcdKey    string `json:"etcd_key,omitempty"`
}

// dbFlags are the global flags of db.go, added to the app's flags.
func dbFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "read --db and the etcd TLS files from the JSON `FILE` (default " + defaultConfig + " when present)", TakesFile: true},
		&cli.StringFlag{Name: "etcd-cacert", Usage: "PEM `FILE` of the CA that signed the etcd members' certificates", TakesFile: true},
		&cli.StringFlag{Name: "etcd-cert", Usage: "PEM `FILE` of this client's certificate for etcd", TakesFile: true},
		&cli.StringFlag{Name: "etcd-key", Usage: "PEM `FILE` of this client's key for etcd", TakesFile: true},
	}
}

// readConfig reads the config file: the one --config names (which must
// exist), else defaultConfig if it exists.
func readConfig(c *cli.Context) (fileConfig, error) {
	var cfg fileConfig
	path, explicit := c.String("config"), true
	if path == "" {
		path, explicit = defaultConfig, false
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return cfg, nil
	}
	if err != nil {
		return cfg, &cliError{code: exitUsage, err: fmt.Errorf("config: %w", err), hint: "give an existing JSON file with --config"}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, &cliError{code: exitUsage, err: fmt.Errorf("config %s: %w", path, err),
			hint: `want a JSON object with "db", "etcd_cacert", "etcd_cert", "etcd_key"`}
	}
	return cfg, nil
}

// logTarget says which log the command uses and how to reach it.
func logTarget(c *cli.Context) (string, *store.Options, error) {
	cfg, err := readConfig(c)
	if err != nil {
		return "", nil, err
	}
	pick := func(flag, fromFile, def string) string {
		switch {
		case isSet(c, flag):
			return c.String(flag)
		case fromFile != "":
			return fromFile
		}
		return def
	}
	dsn := pick("db", cfg.DB, defaultDB)
	opts := &store.Options{
		Timeout:    store.DefaultTimeout,
		EtcdCACert: pick("etcd-cacert", cfg.EtcdCACert, ""),
		EtcdCert:   pick("etcd-cert", cfg.EtcdCert, ""),
		EtcdKey:    pick("etcd-key", cfg.EtcdKey, ""),
	}
	if store.IsEtcd(dsn) {
		if _, _, err := store.ParseEtcd(dsn); err != nil {
			return "", nil, usageErrorf(c, "--db %q: %v", dsn, err)
		}
	} else if opts.EtcdCACert != "" || opts.EtcdCert != "" || opts.EtcdKey != "" {
		return "", nil, usageErrorf(c, "--etcd-cacert, --etcd-cert and --etcd-key are for a log on etcd, and --db names a file")
	}
	return dsn, opts, nil
}

// isSet reports whether a global flag was given on the command line, at
// any level of the command.
func isSet(c *cli.Context, name string) bool {
	for _, x := range c.Lineage() {
		if x.IsSet(name) {
			return true
		}
	}
	return false
}

// openTarget opens a log named on the command line (log copy's SRC): it
// must exist.
func openTarget(dsn string, opts *store.Options) (*store.Log, error) {
	o := *opts
	o.NoCreate = true
	l, err := store.Open(dsn, &o)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &cliError{code: exitError, err: err, hint: "give the path or etcd://... of an existing ceremony log"}
	}
	return l, err
}

// classifyEtcd maps the etcd backend's errors to a hint.
func classifyEtcd(err error) (int, string, bool) {
	switch {
	case errors.Is(err, store.ErrUnavailable):
		return exitError, "nothing was written; when the cluster answers again (or with --timeout raised), repeat the command", true
	case errors.Is(err, store.ErrContention):
		return exitError, "nothing was written; many custos are writing to the log at once: repeat the command", true
	}
	return 0, "", false
}
