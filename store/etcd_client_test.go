//go:build !custos_noetcdclient

// The tests in this file use etcd's own client, go.etcd.io/etcd/client/v3,
// to reach behind custos's back (a foreign key, a byte flipped, an event
// deleted) and to clean up each test's prefix. The build tag
// custos_noetcdclient leaves them out, with etcdwire_test.go: scripts/test
// and scripts/fuzz build the store's fuzz targets with it, as coverage
// instrumentation of etcd's client, gRPC and protobuf (75,000 of the
// binary's 128,000 counters) made each of their inputs cost the fuzzing
// engine twice as much: it copies every counter, as JSON, per input. Every test runs in the build without the tag.

package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"custos.dev/custos/internal/realtest"
)

func init() { deleteEtcdPrefix = deleteEtcdPrefixWithClient }

func etcdClient(t testing.TB, eps []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// deleteEtcdPrefixWithClient removes the keys under prefix 10,000 at a
// time: one delete of a 100,000-event log outlasted etcd's request timeout
// on a busy machine.
func deleteEtcdPrefixWithClient(t testing.TB, eps []string, prefix string) {
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
