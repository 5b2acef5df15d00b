package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"custos.dev/custos/internal/realtest"
	"custos.dev/custos/store"
)

// The config file gives --db; a flag on the command line wins over it.
func TestConfigFileNamesTheLog(t *testing.T) {
	dir := t.TempDir()
	db, head := makeLog(t)
	cfg := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfg, []byte(`{"db":`+jsonString(db)+`}`), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runCLI(t, "", "--config", cfg, "--json", "log", "verify")
	var r verifyResult
	if code != exitOK || json.Unmarshal([]byte(stdout), &r) != nil || r.Path != db || r.Head != head.String() {
		t.Fatalf("log verify from the config: exit %d, %s\n%s", code, stdout, stderr)
	}
	other := filepath.Join(dir, "none.db")
	_, stderr, code = runCLI(t, "", "--config", cfg, "--db", other, "log", "verify")
	if code != exitError || !strings.Contains(stderr, "no ceremony log at "+other) {
		t.Errorf("--db over the config: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(other); err == nil {
		t.Errorf("reading a missing log created it")
	}
	// A config that is not what custos reads is a usage error.
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"db":"x","colour":"blue"}`), 0o600)
	if _, stderr, code := runCLI(t, "", "--config", bad, "log", "verify"); code != exitUsage || !strings.Contains(stderr, "colour") {
		t.Errorf("unknown member: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := runCLI(t, "", "--config", filepath.Join(dir, "missing.json"), "log", "verify"); code != exitUsage {
		t.Errorf("missing --config file: exit %d\n%s", code, stderr)
	}
	// TLS files make sense only for etcd.
	if _, stderr, code := runCLI(t, "", "--db", db, "--etcd-cacert", cfg, "log", "verify"); code != exitUsage || !strings.Contains(stderr, "for a log on etcd") {
		t.Errorf("--etcd-cacert with a file: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := runCLI(t, "", "--db", "etcd://nohost", "log", "verify"); code != exitUsage || !strings.Contains(stderr, "HOST:PORT") {
		t.Errorf("bad etcd name: exit %d\n%s", code, stderr)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// log copy moves a log from a file to etcd and back with the same events
// and head; log verify and log show read the copy on etcd as on a file.
func TestLogCopyBetweenBackends(t *testing.T) {
	eps := realtest.Etcd(t)
	db, head := makeLog(t)
	prefix := fmt.Sprintf("custos-cmd-test/%d-%d", os.Getpid(), time.Now().UnixNano())
	dsn := store.EtcdScheme + strings.Join(eps, ",") + "/" + prefix
	stdout, stderr, code := runCLI(t, "", "--json", "log", "copy", db, dsn)
	var r copyResult
	if code != exitOK || json.Unmarshal([]byte(stdout), &r) != nil || r.Head != head.String() || r.Events != head.Seq {
		t.Fatalf("log copy to etcd: exit %d, %s\n%s", code, stdout, stderr)
	}
	// The prefix stays on the test cluster, whose data goes at its end.
	fromFile, _, _ := runCLI(t, "", "--db", db, "--json", "log", "show")
	fromEtcd, stderr, code := runCLI(t, "", "--db", dsn, "--json", "log", "show")
	if code != exitOK || fromEtcd != fromFile {
		t.Fatalf("log show on etcd differs from the file's (exit %d):\n%s\n%s\n%s", code, fromEtcd, fromFile, stderr)
	}
	if _, stderr, code := runCLI(t, "", "--db", dsn, "log", "verify", "--anchor", head.String()); code != exitOK {
		t.Fatalf("log verify on etcd: exit %d\n%s", code, stderr)
	}
	back := filepath.Join(t.TempDir(), "back.db")
	if _, stderr, code := runCLI(t, "", "log", "copy", dsn, back); code != exitOK {
		t.Fatalf("log copy back: exit %d\n%s", code, stderr)
	}
	again, _, _ := runCLI(t, "", "--db", back, "--json", "log", "show")
	if again != fromFile {
		t.Errorf("the log copied back differs")
	}
	// Onto an existing log: refused.
	if _, stderr, code := runCLI(t, "", "log", "copy", db, back); code == exitOK || !strings.Contains(stderr, "exists") {
		t.Errorf("copy onto an existing file: exit %d\n%s", code, stderr)
	}
	// From a log that does not exist: refused, nothing created.
	none := filepath.Join(t.TempDir(), "none.db")
	if _, stderr, code := runCLI(t, "", "log", "copy", none, filepath.Join(t.TempDir(), "x.db")); code != exitError || !strings.Contains(stderr, "no ceremony log") {
		t.Errorf("copy from a missing log: exit %d\n%s", code, stderr)
	}
}

// A cluster that does not answer: a clear error and hint within the
// timeout, nothing written.
func TestLogOnUnreachableEtcd(t *testing.T) {
	_, stderr, code := runCLI(t, "", "--db", "etcd://127.0.0.1:1/x", "log", "verify")
	if code != exitError || !strings.Contains(stderr, "no member answers") || !strings.Contains(stderr, "custos: hint: nothing was written") {
		t.Errorf("unreachable etcd: exit %d\n%s", code, stderr)
	}
	checkStyle(t, stderr)
}
