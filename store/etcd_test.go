package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"custos.dev/custos/internal/realtest"
)

// The store's tests run on bbolt, and again on etcd: TestSuiteOnEtcd runs
// this test binary once more with backendEnv=etcd, where openTest makes
// each log under its own prefix of the cluster named by CUSTOS_ETCD and
// the tests of the bbolt file itself (boltOnly) skip.
const backendEnv = "CUSTOS_STORE_BACKEND"

func onEtcd() bool { return os.Getenv(backendEnv) == "etcd" }

// boltOnly skips a test of the bbolt file itself on the etcd run.
func boltOnly(t testing.TB) {
	t.Helper()
	if onEtcd() {
		t.Skip("a test of the bbolt file; its etcd counterparts are in etcd_test.go")
	}
}

var etcdPrefixes atomic.Int64

// etcdTestDSN names a fresh, empty prefix of the test cluster and removes
// its keys when the test ends.
func etcdTestDSN(t testing.TB) string {
	t.Helper()
	eps := realtest.Etcd(t)
	prefix := fmt.Sprintf("custos-test/%d-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9, etcdPrefixes.Add(1))
	t.Cleanup(func() { deleteEtcdPrefix(t, eps, prefix) })
	return EtcdScheme + strings.Join(eps, ",") + "/" + prefix
}

func etcdClient(t testing.TB, eps []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// deleteEtcdPrefix removes the keys under prefix 10,000 at a time: one
// delete of a 100,000-event log outlasted etcd's request timeout on a
// busy machine.
func deleteEtcdPrefix(t testing.TB, eps []string, prefix string) {
	cli := etcdClient(t, eps)
	defer cli.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(10_000))
		if err == nil && len(resp.Kvs) > 0 {
			last := resp.Kvs[len(resp.Kvs)-1].Key
			_, err = cli.Delete(ctx, string(resp.Kvs[0].Key), clientv3.WithRange(string(last)+"\x00"))
		}
		cancel()
		if err != nil {
			t.Errorf("cleanup: delete %s: %v", prefix, err)
			return
		}
		if len(resp.Kvs) == 0 {
			return
		}
	}
}

// TestSuiteOnEtcd runs every test of the package again with the logs on
// the etcd cluster.
func TestSuiteOnEtcd(t *testing.T) {
	if onEtcd() {
		t.Skip("already on etcd")
	}
	realtest.Etcd(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^Test", "-test.skip=^TestSuiteOnEtcd$|^TestEtcd|^TestParseEtcd|^TestCopyBothWays$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), backendEnv+"=etcd")
	out, err := cmd.CombinedOutput()
	passed := bytes.Count(out, []byte("--- PASS"))
	skipped := bytes.Count(out, []byte("--- SKIP"))
	if err != nil {
		t.Fatalf("the store's tests on etcd failed: %v\n%s", err, out)
	}
	if passed < 20 {
		t.Fatalf("only %d tests passed on etcd:\n%s", passed, out)
	}
	t.Logf("on etcd: %d passed, %d skipped (tests of the bbolt file)", passed, skipped)
}

func openEtcdTest(t *testing.T) *Log {
	t.Helper()
	l, err := open(etcdTestDSN(t), nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkConsistent(t, l) })
	return l
}

// A prefix that holds keys without custos's marker is refused, and left
// as it was.
func TestEtcdRefusesForeignPrefix(t *testing.T) {
	eps := realtest.Etcd(t)
	dsn := etcdTestDSN(t)
	_, prefix, _ := ParseEtcd(dsn)
	cli := etcdClient(t, eps)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, prefix+"/config/x", "something else"); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dsn, nil)
	if !errors.Is(err, ErrNotLog) || !strings.Contains(err.Error(), "written by something else") {
		t.Fatalf("open a foreign prefix: %v, want ErrNotLog saying so", err)
	}
	resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the foreign prefix changed: %v, %v", resp, err)
	}
	// A newer schema is refused too.
	dsn2 := etcdTestDSN(t)
	l, err := Open(dsn2, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	_, prefix2, _ := ParseEtcd(dsn2)
	if _, err := cli.Put(ctx, prefix2+"/meta/schema", string(encodeVersion(schemaVersion+1))); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dsn2, nil); !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("open a newer schema: %v, want ErrNewerSchema", err)
	}
}

// Two logs opened on the same empty prefix at once make one log.
func TestEtcdCreateRace(t *testing.T) {
	dsn := etcdTestDSN(t)
	errs := make(chan error, 4)
	heads := make(chan Head, 4)
	for range 4 {
		go func() {
			l, err := Open(dsn, nil)
			if err != nil {
				errs <- err
				return
			}
			defer l.Close()
			h, err := l.Head()
			heads <- h
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(heads)
	for h := range heads {
		if h.Seq != 1 {
			t.Errorf("head %v after racing creations, want the one log.created", h)
		}
	}
	l, _ := Open(dsn, nil)
	t.Cleanup(func() { checkConsistent(t, l) })
}

// Tampering with the keys in etcd behind custos's back is found as on a
// file: an altered event, a deleted one, an index entry.
func TestEtcdTamper(t *testing.T) {
	eps := realtest.Etcd(t)
	for _, c := range []struct {
		name   string
		tamper func(cli *clientv3.Client, prefix string) error
		want   error
	}{
		{"flip a byte of event 5", func(cli *clientv3.Client, p string) error {
			k := p + "/events/" + string(seqKey(5))
			resp, err := cli.Get(context.Background(), k)
			if err != nil {
				return err
			}
			v := append([]byte{}, resp.Kvs[0].Value...)
			v[len(v)/2] ^= 1
			_, err = cli.Put(context.Background(), k, string(v))
			return err
		}, ErrBrokenChain},
		{"delete event 3", func(cli *clientv3.Client, p string) error {
			_, err := cli.Delete(context.Background(), p+"/events/"+string(seqKey(3)))
			return err
		}, ErrBrokenChain},
		{"add a card", func(cli *clientv3.Client, p string) error {
			_, err := cli.Put(context.Background(), p+"/cards/666", `{"serial":"666"}`)
			return err
		}, ErrIndex},
	} {
		t.Run(c.name, func(t *testing.T) {
			dsn := etcdTestDSN(t)
			_, prefix, _ := ParseEtcd(dsn)
			l, err := open(dsn, nil, testClock())
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			fillCeremony(t, l, sampleCeremony("c1", "vol-1", 2, 3))
			cli := etcdClient(t, eps)
			defer cli.Close()
			if err := c.tamper(cli, prefix); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Verify(); !errors.Is(err, c.want) {
				t.Fatalf("Verify: %v, want %v", err, c.want)
			}
		})
	}
}

// A log on a cluster nobody answers on fails within the timeout, saying so.
func TestEtcdNoMemberAnswers(t *testing.T) {
	start := time.Now()
	_, err := Open("etcd://127.0.0.1:1,127.0.0.1:2/x", &Options{Timeout: time.Second})
	var ue *UnavailableError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no member answers") {
		t.Fatalf("open with no member: %v, want an UnavailableError saying no member answers", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("gave up after %v with a 1s timeout", d)
	}
}

func TestParseEtcd(t *testing.T) {
	eps, prefix, err := ParseEtcd("etcd://a:1,b:2/fleet/one")
	if err != nil || strings.Join(eps, ",") != "a:1,b:2" || prefix != "fleet/one" {
		t.Errorf("ParseEtcd = %v %q %v", eps, prefix, err)
	}
	if _, prefix, _ := ParseEtcd("etcd://a:1"); prefix != DefaultEtcdPrefix {
		t.Errorf("default prefix %q", prefix)
	}
	for _, bad := range []string{"etcd://", "etcd://a", "etcd://a:1/x y", "/var/x.db"} {
		if _, _, err := ParseEtcd(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseEtcd(%q): %v, want ErrInvalid", bad, err)
		}
	}
}

// Copy moves a log of 100,000 events from a file to etcd and back: the
// same events byte for byte, every anchor good on each copy, the indexes
// rebuilt and verified; a destination that exists is refused. Under -race
// the log holds 12,000 events (still three of the copy's transactions on
// a file, and some hundred on etcd); scripts/test runs it once more
// without -race, at 100,000.
func TestCopyBothWays(t *testing.T) {
	realtest.Etcd(t)
	total := 100_000
	if raceDetector {
		total = 12_000
	}
	round := total / 10
	dir := t.TempDir()
	src, err := open(filepath.Join(dir, "src.db"), nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var anchors []Head
	for i := 0; i < 10; i++ {
		rec := sampleCeremony(fmt.Sprintf("copy-%d", i), fmt.Sprintf("vol-%d", i), 2, 3)
		anchors = append(anchors, fillCeremony(t, src, rec))
		n := round - 9 // a ceremony's 9 events and the rest; log.created is the first
		if i == 0 {
			n--
		}
		if err := fillBatched(src, n); err != nil {
			t.Fatal(err)
		}
	}
	head, _ := src.Head()
	if head.Seq != uint64(total) {
		t.Fatalf("source has %d events", head.Seq)
	}
	anchors = append(anchors, head)
	var want bytes.Buffer
	if err := src.ExportJSONL(&want, ""); err != nil {
		t.Fatal(err)
	}
	check := func(name string, l *Log) {
		t.Helper()
		rep, err := l.Verify(anchors...)
		if err != nil || rep.Anchors != len(anchors) || rep.Head != head {
			t.Fatalf("%s: verify %+v, %v", name, rep, err)
		}
		var got bytes.Buffer
		if err := l.ExportJSONL(&got, ""); err != nil || !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("%s: the events differ from the source's (%v)", name, err)
		}
		rec := complete(sampleCeremony("copy-3", "vol-3", 2, 3))
		if err := l.CheckAnchor(anchors[3], rec); err != nil {
			t.Fatalf("%s: anchor of a ceremony: %v", name, err)
		}
	}
	start := time.Now()
	dsn := etcdTestDSN(t)
	rep, err := Copy(src, dsn, nil)
	if err != nil || rep.Head != head {
		t.Fatalf("copy to etcd: %+v, %v", rep, err)
	}
	toEtcd := time.Since(start)
	onEtcd, err := Open(dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer onEtcd.Close()
	check("etcd", onEtcd)
	start = time.Now()
	back := filepath.Join(dir, "back.db")
	if _, err := Copy(onEtcd, back, nil); err != nil {
		t.Fatalf("copy back: %v", err)
	}
	toFile := time.Since(start)
	l, err := Open(back, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	check("file", l)
	t.Logf("%d events: to etcd %v, back to a file %v", total, toEtcd.Round(time.Millisecond), toFile.Round(time.Millisecond))
	// Existing destinations are refused and left alone.
	if _, err := Copy(src, back, nil); !errors.Is(err, fs.ErrExist) {
		t.Errorf("copy onto an existing file: %v, want fs.ErrExist", err)
	}
	if _, err := Copy(src, dsn, nil); !errors.Is(err, fs.ErrExist) {
		t.Errorf("copy onto a log on etcd: %v, want fs.ErrExist", err)
	}
	if h, _ := onEtcd.Head(); h != head {
		t.Errorf("the refused copy changed the destination: %v", h)
	}
}

// A copy to etcd starts each transaction from what the one before
// committed (etcdChain), without reading the head and the tail back: an
// appender that writes in between makes the next commit fail on the head,
// the copy reads the log again, finds it does not follow, and stops,
// deleting what it wrote; an event altered in between, without the head,
// is found by the verification that ends the copy.
func TestEtcdCopySeesOtherWriters(t *testing.T) {
	realtest.Etcd(t)
	src, err := open(filepath.Join(t.TempDir(), "src.db"), nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for i := 0; i < 5; i++ {
		fillCeremony(t, src, sampleCeremony(fmt.Sprintf("chain-%d", i), fmt.Sprintf("vol-%d", i), 2, 3))
		if err := fillBatched(src, 400); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, dsn string)
		want  error
	}{
		{"an appender", func(t *testing.T, dsn string) {
			l, err := Open(dsn, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if _, err := l.Append(Event{Actor: "intruder", Type: "test.step", Body: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}, ErrBrokenChain},
		{"an event altered", func(t *testing.T, dsn string) {
			eps, prefix, err := ParseEtcd(dsn)
			if err != nil {
				t.Fatal(err)
			}
			cli := etcdClient(t, eps)
			defer cli.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			key := prefix + "/" + string(bucketEvents) + "/" + string(seqKey(2))
			resp, err := cli.Get(ctx, key)
			if err != nil || len(resp.Kvs) != 1 {
				t.Fatalf("event 2 on etcd: %v, %v", resp, err)
			}
			v := bytes.Clone(resp.Kvs[0].Value)
			v[len(v)-3] ^= 1
			if _, err := cli.Put(ctx, key, string(v)); err != nil {
				t.Fatal(err)
			}
		}, ErrBrokenChain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := etcdTestDSN(t)
			begun, busy := 0, false
			failpoint = func(name string) error {
				if name == fpUpdateBegin && !busy {
					if begun++; begun == 4 {
						busy = true
						tc.write(t, dsn)
						busy = false
					}
				}
				return nil
			}
			defer func() { failpoint = nil }()
			_, err := Copy(src, dsn, nil)
			failpoint = nil
			if !errors.Is(err, tc.want) {
				t.Fatalf("copy with %s writing in between: %v, want %v", tc.name, err, tc.want)
			}
			if begun < 4 {
				t.Fatalf("the copy began %d transactions, want the other writer to come in before the fourth", begun)
			}
			if _, err := Open(dsn, &Options{NoCreate: true}); !errors.Is(err, ErrNotFound) {
				t.Fatalf("after the failed copy: open %v, want ErrNotFound (nothing left)", err)
			}
		})
	}
}
