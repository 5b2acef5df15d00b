package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// deleteEtcdPrefix removes a test's keys from the cluster when it ends,
// with etcd's own client (etcd_client_test.go). A build with the tag
// custos_noetcdclient, made to run fuzz targets, has none.
var deleteEtcdPrefix func(t testing.TB, eps []string, prefix string)

// etcdTestDSN names a fresh, empty prefix of the test cluster and removes
// its keys when the test ends.
func etcdTestDSN(t testing.TB) string {
	t.Helper()
	if deleteEtcdPrefix == nil {
		t.Fatal("built with the tag custos_noetcdclient: no etcd client to clean the cluster up with; run the tests on etcd without it")
	}
	eps := realtest.Etcd(t)
	prefix := fmt.Sprintf("custos-test/%d-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9, etcdPrefixes.Add(1))
	t.Cleanup(func() { deleteEtcdPrefix(t, eps, prefix) })
	return EtcdScheme + strings.Join(eps, ",") + "/" + prefix
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

// The fuzz targets' build (scripts/go.sh's fuzztags) links none of etcd's
// own Go packages: their coverage counters, copied by the fuzzing engine
// for every input, made the store's fuzz targets twice as slow.
func TestFuzzBuildLeavesOutEtcd(t *testing.T) {
	sh, err := os.ReadFile("../scripts/go.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^fuzztags=([a-z0-9_,]+)$`).FindSubmatch(sh)
	if m == nil {
		t.Fatal("scripts/go.sh sets no fuzztags")
	}
	gobin := realtest.GoCommand(t)
	deps := func(tags string) string {
		cmd := exec.Command(gobin, "list", "-deps", "-test", "-tags="+tags, ".")
		cmd.Env = append(os.Environ(), "GOFLAGS=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list -tags=%s: %v\n%s", tags, err, out)
		}
		return string(out)
	}
	full, light := deps(""), deps(string(m[1]))
	for _, pkg := range []string{"go.etcd.io/etcd/client/v3", "go.etcd.io/etcd/api/v3/etcdserverpb", "google.golang.org/grpc"} {
		if !strings.Contains(full, "\n"+pkg+"\n") {
			t.Fatalf("the store's tests do not link %s: the check would pass on anything", pkg)
		}
		if strings.Contains(light, "\n"+pkg+"\n") {
			t.Errorf("the store's tests built with -tags=%s link %s", m[1], pkg)
		}
	}
	if !strings.Contains(light, "\ngo.etcd.io/bbolt\n") {
		t.Fatalf("go list -tags=%s lists no bbolt: the check would pass on anything:\n%s", m[1], light)
	}
}

// On the cluster, a scan of a 10,000-event log's events walks each key
// about twice (the first page walks them all, the windows the rest once
// and a quarter): the sum of the replies' counts, which is what etcd
// walks to answer. Pages asked for up to the bucket's end, as scans were
// before the windows, walk them about seven times over (73,544).
func TestEtcdScanWalksEachKeyTwice(t *testing.T) {
	realtest.Etcd(t)
	src, err := open(filepath.Join(t.TempDir(), "src.db"), nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	const events = 10_000
	if err := fillBatched(src, events-1); err != nil {
		t.Fatal(err)
	}
	dsn := etcdTestDSN(t)
	if _, err := Copy(src, dsn, nil); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b := l.be.(*etcdBackend)
	err = b.view(func(r kvRead) error {
		kv := r.(*etcdKV)
		prefix := b.key(bucketEvents, nil)
		for _, desc := range []bool{false, true} {
			var walked, requests int64
			read := 0
			counted := func(r *etcdRangeRequest) (*etcdRangeResponse, error) {
				resp, err := kv.fetch(r)
				if err == nil {
					walked += resp.Count
					requests++
				}
				return resp, err
			}
			err := etcdScan(prefix, prefix, b.bucketEnd(bucketEvents), desc, counted, func(name, _ []byte) error {
				read++
				return nil
			})
			if err != nil {
				return err
			}
			t.Logf("desc=%v: %d events read in %d requests, %d keys walked", desc, read, requests, walked)
			if read != events || walked > 5*events/2 {
				t.Errorf("desc=%v: %d events read, %d keys walked: want %d, at most %d", desc, read, walked, events, 5*events/2)
			}
		}
		// The same pages, each up to the bucket's end.
		var walked int64
		start := prefix
		for limit := int64(16); ; limit = min(pageSize, limit*8) {
			resp, err := kv.fetch(&etcdRangeRequest{Key: []byte(start), RangeEnd: []byte(b.bucketEnd(bucketEvents)), Limit: limit})
			if err != nil {
				return err
			}
			walked += resp.Count
			if !resp.More {
				break
			}
			start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
		t.Logf("without windows: %d keys walked", walked)
		if walked < 5*events {
			t.Errorf("without windows only %d keys walked: the bound above would not tell", walked)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
