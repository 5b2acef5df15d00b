package escrow

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"custos.dev/custos/internal/realtest"
	"custos.dev/custos/store"
)

// The ceremony tests run on a bbolt log, and again on the etcd cluster of
// scripts/etcd.sh: TestCeremoniesOnEtcd runs this test binary once more with
// backendEnv=etcd, where every rig's log lives under its own prefix of the
// cluster. Tests that forge, roll back or remove the bbolt file itself skip
// there (boltOnly); their attacks on an etcd log are store's etcd tests.
const backendEnv = "CUSTOS_ESCROW_BACKEND"

func onEtcd() bool { return os.Getenv(backendEnv) == "etcd" }

// boltOnly skips a test that works on the bbolt file itself on the etcd run.
func (r *rig) boltOnly() {
	r.t.Helper()
	if onEtcd() {
		r.t.Skip("works on the bbolt file itself")
	}
}

// etcdCeremonies are the ceremony tests the etcd run repeats: every
// ceremony, each crash step with its rerun, the refusals that must leave the
// log as it was, the attacks that forge the token or a card, and the
// fleet's.
var etcdCeremonies = []string{
	"TestEnrollThenRecover", "TestEnrollLUKS1ThenRecoverFromLog", "TestEnrollRefusals",
	"TestEnrollReplacesFailingCard", "TestEnrollFailureLeavesVolumeAsItWas", "TestEnrollFailedAddKeyslot",
	"TestEnrollCrashAtEachStep", "TestRotateCrashAtEachStep", "TestKeyAddedAfterCrashIsNeverKilled",
	"TestRotate", "TestRotateWithKeyAndNewQuorum", "TestRotateRefusals", "TestRotateFailureKeepsOldCeremony",
	"TestRecoverFromCardsAlone", "TestRecoverCardOutcomes", "TestRecoverKeyslotChanged",
	"TestRollcall", "TestStatus",
	"TestAttackForgedTokenReplacesTheCeremony", "TestAttackBadCustodianCardsOnly", "TestAttackTokenBoundElsewhere",
	// The fleet: custodian sets, enroll without cards, one pass over many
	// volumes, the set's rollcall, a card replaced across the fleet with
	// a crash at each step, the chains found in the set's event.
	"TestSetCreate", "TestSetImportExport", "TestEnrollSet", "TestEnrollSetBatches", "TestEnrollSetCrash",
	"TestRecoverMany", "TestRollcallSetAndStatus", "TestRotateSet", "TestRotateSetCrashAtEachStep", "TestSetAttestations",
}

var etcdPrefixes atomic.Int64

// etcdTestDSN names a fresh, empty prefix of the test cluster and removes
// its keys when the test ends.
func etcdTestDSN(t testing.TB) string {
	t.Helper()
	eps := realtest.Etcd(t)
	prefix := fmt.Sprintf("custos-escrow-test/%d-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9, etcdPrefixes.Add(1))
	t.Cleanup(func() {
		cli := etcdClient(t, eps)
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.Delete(ctx, prefix+"/", clientv3.WithPrefix()); err != nil {
			t.Errorf("cleanup: delete %s: %v", prefix, err)
		}
	})
	return store.EtcdScheme + strings.Join(eps, ",") + "/" + prefix
}

func etcdClient(t testing.TB, eps []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// etcdDump is every key and value under the log's prefix, for the scan for
// secrets.
func etcdDump(t testing.TB, dsn string) []byte {
	t.Helper()
	rest := strings.TrimPrefix(dsn, store.EtcdScheme)
	eps, prefix, _ := strings.Cut(rest, "/")
	cli := etcdClient(t, strings.Split(eps, ","))
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("dump %s: %v", prefix, err)
	}
	var b bytes.Buffer
	for _, kv := range resp.Kvs {
		b.Write(kv.Key)
		b.WriteByte('\n')
		b.Write(kv.Value)
		b.WriteByte('\n')
	}
	if b.Len() == 0 {
		t.Fatalf("the log under %s holds nothing", prefix)
	}
	return b.Bytes()
}

// TestCeremoniesOnEtcd runs the ceremony tests again with each log on the
// etcd cluster: the same ceremonies, crash steps and reruns, the same scan
// of the database for secrets.
func TestCeremoniesOnEtcd(t *testing.T) {
	if onEtcd() {
		t.Skip("this is the etcd run")
	}
	realtest.Etcd(t)
	if testing.Short() {
		t.Skip("the etcd run takes a while")
	}
	run := "^(" + strings.Join(etcdCeremonies, "|") + ")$"
	cmd := exec.Command(os.Args[0], "-test.run", run, "-test.count=1", "-test.v", "-test.timeout=15m")
	cmd.Env = append(os.Environ(), backendEnv+"=etcd")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the ceremony tests on etcd: %v\n%s", err, out)
	}
	passed := regexp.MustCompile(`(?m)^--- PASS: (\w+)`).FindAllSubmatch(out, -1)
	skipped := regexp.MustCompile(`(?m)^--- SKIP: (\w+)`).FindAllSubmatch(out, -1)
	got := map[string]bool{}
	for _, m := range passed {
		got[string(m[1])] = true
	}
	for _, name := range etcdCeremonies {
		if !got[name] {
			t.Errorf("%s did not pass on etcd", name)
		}
	}
	for _, m := range skipped {
		t.Errorf("%s skipped on etcd: the list holds only tests that run there", m[1])
	}
	t.Logf("%d ceremony tests passed with their logs on etcd", len(passed))
}
