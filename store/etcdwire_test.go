//go:build !custos_noetcdclient

package store

import (
	"bytes"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// The messages etcdwire.go writes are read by etcd's own generated code
// (etcdserverpb) as meant, and the replies etcd's code writes are read
// back by etcdwire.go as meant: the wire format is checked against the
// real thing, not against itself.

func TestEtcdWireRequests(t *testing.T) {
	r := &etcdRangeRequest{Key: []byte("p/events/\x00\x01"), RangeEnd: []byte("p/events0"), Limit: 1000, Revision: 1 << 40, Descend: true, KeysOnly: true}
	var got etcdserverpb.RangeRequest
	if err := got.Unmarshal(r.marshal(nil)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Key, r.Key) || !bytes.Equal(got.RangeEnd, r.RangeEnd) || got.Limit != 1000 || got.Revision != 1<<40 ||
		got.SortOrder != etcdserverpb.RangeRequest_DESCEND || got.SortTarget != etcdserverpb.RangeRequest_KEY || !got.KeysOnly || got.CountOnly {
		t.Errorf("range request read by etcd as %+v", &got)
	}

	cond := []etcdCompare{modRevisionIs("p/meta/head", 0), modRevisionIs("p/meta/head", 77), prefixEmpty("p/")}
	ops := []etcdOp{
		{Put: &etcdPutRequest{Key: []byte("p/events/1"), Value: []byte{0, 1, 2}}},
		{Delete: &etcdDeleteRequest{Key: []byte("p/idx/x")}},
		{Range: &etcdRangeRequest{Key: []byte("p/"), RangeEnd: etcdPrefixEnd("p/"), CountOnly: true}},
	}
	var msg []byte
	for _, c := range cond {
		msg = pbMessage(msg, 1, c.marshal)
	}
	for _, op := range ops {
		msg = pbMessage(msg, 2, op.marshal)
	}
	var txn etcdserverpb.TxnRequest
	if err := txn.Unmarshal(msg); err != nil {
		t.Fatal(err)
	}
	if len(txn.Compare) != 3 || len(txn.Success) != 3 || len(txn.Failure) != 0 {
		t.Fatalf("txn read by etcd as %+v", &txn)
	}
	for i, want := range []struct {
		target etcdserverpb.Compare_CompareTarget
		rev    int64
		end    string
	}{{etcdserverpb.Compare_MOD, 0, ""}, {etcdserverpb.Compare_MOD, 77, ""}, {etcdserverpb.Compare_CREATE, 0, "p0"}} {
		c := txn.Compare[i]
		var rev int64
		var set bool
		switch u := c.TargetUnion.(type) {
		case *etcdserverpb.Compare_ModRevision:
			rev, set = u.ModRevision, want.target == etcdserverpb.Compare_MOD
		case *etcdserverpb.Compare_CreateRevision:
			rev, set = u.CreateRevision, want.target == etcdserverpb.Compare_CREATE
		}
		if c.Result != etcdserverpb.Compare_EQUAL || c.Target != want.target || !set || rev != want.rev || string(c.RangeEnd) != want.end {
			t.Errorf("compare %d read by etcd as %+v", i, c)
		}
	}
	if p := txn.Success[0].GetRequestPut(); p == nil || string(p.Key) != "p/events/1" || !bytes.Equal(p.Value, []byte{0, 1, 2}) {
		t.Errorf("put read by etcd as %+v", txn.Success[0])
	}
	if d := txn.Success[1].GetRequestDeleteRange(); d == nil || string(d.Key) != "p/idx/x" || d.RangeEnd != nil {
		t.Errorf("delete read by etcd as %+v", txn.Success[1])
	}
	if g := txn.Success[2].GetRequestRange(); g == nil || string(g.Key) != "p/" || string(g.RangeEnd) != "p0" || !g.CountOnly {
		t.Errorf("range read by etcd as %+v", txn.Success[2])
	}
}

func TestEtcdWireReplies(t *testing.T) {
	rr := &etcdserverpb.RangeResponse{
		Header: &etcdserverpb.ResponseHeader{ClusterId: 9, MemberId: 8, Revision: 1234567, RaftTerm: 3},
		Kvs: []*mvccpb.KeyValue{
			{Key: []byte("p/events/1"), Value: []byte("one"), CreateRevision: 5, ModRevision: 6, Version: 2, Lease: 77},
			{Key: []byte("p/events/2"), Value: nil, CreateRevision: 7, ModRevision: 7, Version: 1},
		},
		More:  true,
		Count: 42,
	}
	b, err := rr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var got etcdRangeResponse
	if err := got.unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if got.Revision != 1234567 || !got.More || got.Count != 42 || len(got.Kvs) != 2 ||
		string(got.Kvs[0].Key) != "p/events/1" || string(got.Kvs[0].Value) != "one" || got.Kvs[0].CreateRevision != 5 || got.Kvs[0].ModRevision != 6 ||
		string(got.Kvs[1].Key) != "p/events/2" || len(got.Kvs[1].Value) != 0 || got.Kvs[1].ModRevision != 7 {
		t.Errorf("range response read as %+v", got)
	}

	tr := &etcdserverpb.TxnResponse{
		Header:    &etcdserverpb.ResponseHeader{Revision: 99},
		Succeeded: true,
		Responses: []*etcdserverpb.ResponseOp{
			{Response: &etcdserverpb.ResponseOp_ResponsePut{ResponsePut: &etcdserverpb.PutResponse{Header: &etcdserverpb.ResponseHeader{Revision: 99}}}},
			{Response: &etcdserverpb.ResponseOp_ResponseRange{ResponseRange: rr}},
		},
	}
	if b, err = tr.Marshal(); err != nil {
		t.Fatal(err)
	}
	var txn etcdTxnResponse
	if err := txn.unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if txn.Revision != 99 || !txn.Succeeded || len(txn.Responses) != 2 || txn.Responses[0].Range != nil ||
		txn.Responses[1].Range == nil || txn.Responses[1].Range.Count != 42 || len(txn.Responses[1].Range.Kvs) != 2 {
		t.Errorf("txn response read as %+v", txn)
	}
	tr.Succeeded = false
	if b, err = tr.Marshal(); err != nil {
		t.Fatal(err)
	}
	txn = etcdTxnResponse{}
	if err := txn.unmarshal(b); err != nil || txn.Succeeded {
		t.Errorf("a failed transaction read as succeeded=%v, %v", txn.Succeeded, err)
	}

	st := &etcdserverpb.StatusResponse{Header: &etcdserverpb.ResponseHeader{Revision: 3}, Version: "3.4.23", DbSize: 1 << 20, Leader: 0xfeedface12345678, RaftIndex: 10}
	if b, err = st.Marshal(); err != nil {
		t.Fatal(err)
	}
	var leader uint64
	if err := pbFields(b, func(f int, v uint64, _ []byte) error {
		if f == 4 {
			leader = v
		}
		return nil
	}); err != nil || leader != 0xfeedface12345678 {
		t.Errorf("status leader read as %x, %v", leader, err)
	}
}

// A member's reply cut short or garbled is an error, never a panic or a
// reply read past its end.
func TestEtcdWireTruncated(t *testing.T) {
	rr := &etcdserverpb.RangeResponse{Header: &etcdserverpb.ResponseHeader{Revision: 5},
		Kvs: []*mvccpb.KeyValue{{Key: []byte("k"), Value: bytes.Repeat([]byte("v"), 300), ModRevision: 5}}, Count: 1}
	b, err := rr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n < len(b); n++ {
		var got etcdRangeResponse
		err := got.unmarshal(b[:n])
		// A cut that falls between two top-level fields is a shorter
		// message: then what was read must be a prefix of the whole.
		if err == nil && (len(got.Kvs) > 0 && len(got.Kvs[0].Value) != 300) {
			t.Errorf("%d of %d bytes read as %+v", n, len(b), got)
		}
	}
}

// FuzzEtcdWire reads arbitrary bytes as a member's replies: no panic, and
// a RangeResponse that reads is read again the same after etcd's own code
// has parsed and written it back.
func FuzzEtcdWire(f *testing.F) {
	rr := &etcdserverpb.RangeResponse{Header: &etcdserverpb.ResponseHeader{Revision: 5},
		Kvs: []*mvccpb.KeyValue{{Key: []byte("k"), Value: []byte("v"), CreateRevision: 2, ModRevision: 5}}, More: true, Count: 1}
	b, _ := rr.Marshal()
	f.Add(b)
	tr := &etcdserverpb.TxnResponse{Header: &etcdserverpb.ResponseHeader{Revision: 6}, Succeeded: true,
		Responses: []*etcdserverpb.ResponseOp{{Response: &etcdserverpb.ResponseOp_ResponseRange{ResponseRange: rr}}}}
	b, _ = tr.Marshal()
	f.Add(b)
	f.Add([]byte{0x0a, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		var txn etcdTxnResponse
		_ = txn.unmarshal(b)
		var got etcdRangeResponse
		if got.unmarshal(b) != nil {
			return
		}
		var theirs etcdserverpb.RangeResponse
		if theirs.Unmarshal(b) != nil {
			return // etcd's code is stricter about wire types of known fields
		}
		again, err := theirs.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var got2 etcdRangeResponse
		if err := got2.unmarshal(again); err != nil {
			t.Fatalf("etcd's own rewrite of a reply that read does not read: %v", err)
		}
		if got.Revision != got2.Revision || got.More != got2.More || got.Count != got2.Count || len(got.Kvs) != len(got2.Kvs) {
			t.Fatalf("read %+v, after etcd's rewrite %+v", got, got2)
		}
		for i := range got.Kvs {
			a, b := got.Kvs[i], got2.Kvs[i]
			if !bytes.Equal(a.Key, b.Key) || !bytes.Equal(a.Value, b.Value) || a.ModRevision != b.ModRevision || a.CreateRevision != b.CreateRevision {
				t.Fatalf("pair %d read %+v, after etcd's rewrite %+v", i, a, b)
			}
		}
	})
}
