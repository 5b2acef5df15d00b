package store

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// etcdConn speaks etcd's v3 API (rpc.proto of go.etcd.io/etcd/api,
// package etcdserverpb) to a cluster: the four unary calls the log makes
// (KV.Range, KV.Txn, KV.DeleteRange, Maintenance.Status), as gRPC over
// HTTP/2 through net/http (cleartext HTTP/2 with prior knowledge, or
// HTTP/2 over TLS with the same TLS configuration), their messages in
// protobuf's wire format written and read here. It replaces etcd's
// clientv3, which linked gRPC, protobuf and zap into every run of custos,
// on a bbolt log too: about 3.5 ms of package initialisation and 1.5 MB of
// allocations before main, and 10 MB of binary.
//
// (etcd's JSON gateway would have spared the protobuf, but etcd 3.4's
// gateway reaches its own member with the member's certificate as a client
// certificate, which a member that asks for client certificates refuses
// unless that certificate is also a client's.)
//
// It sends to one member at a time and moves to the next when a member
// cannot be reached or answers Unavailable. A read goes to the next member
// on any such failure until the context ends; a transaction goes to the
// next member only when its request was never written (a refused
// connection, a failed handshake): once written it may have committed, and
// the caller decides (update reads the head back), as clientv3 does.
type etcdConn struct {
	endpoints []string // HOST:PORT
	scheme    string   // "http://" or "https://"
	hc        *http.Client
	tr        *http.Transport
	cur       atomic.Int32 // the member asked first
	chosen    atomic.Bool  // cur answered the last request (else pick asks them all)
}

func newEtcdConn(endpoints []string, tc *tls.Config, keepAlive time.Duration) *etcdConn {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: keepAlive}
	p := new(http.Protocols)
	scheme := "http://"
	if tc != nil {
		scheme = "https://"
		tc = tc.Clone()
		p.SetHTTP2(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 5 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		Protocols:           p,
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerStream:     4 << 20,
			MaxReceiveBufferPerConnection: 8 << 20,
			SendPingTimeout:               keepAlive,
		},
	}
	return &etcdConn{endpoints: endpoints, scheme: scheme, hc: &http.Client{Transport: tr}, tr: tr}
}

func (c *etcdConn) close() error {
	c.tr.CloseIdleConnections()
	return nil
}

// etcdServerError is a member's refusal: its gRPC status code and message.
type etcdServerError struct {
	Code    int
	Message string
}

func (e *etcdServerError) Error() string {
	return fmt.Sprintf("etcd: %s (code %d)", e.Message, e.Code)
}

// The gRPC status codes the log tells apart.
const (
	grpcInvalidArgument   = 3
	grpcDeadlineExceeded  = 4
	grpcResourceExhausted = 8
	grpcUnavailable       = 14
)

// tooManyOpsMessage is etcd's refusal of a transaction over its
// --max-txn-ops (rpctypes.ErrGRPCTooManyOps).
const tooManyOpsMessage = "etcdserver: too many operations in txn request"

// etcdTransportError says a member could not be asked, or gave no answer
// a member gives (the connection broke, a TLS handshake failed, a reply
// that is not gRPC).
type etcdTransportError struct {
	Endpoint string
	Err      error
}

func (e *etcdTransportError) Error() string { return fmt.Sprintf("etcd %s: %v", e.Endpoint, e.Err) }

func (e *etcdTransportError) Unwrap() error { return e.Err }

// etcdUnavailable reports whether err means the cluster did not answer
// (as opposed to answering no).
func etcdUnavailable(err error) bool {
	var te *etcdTransportError
	var se *etcdServerError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &te):
		return true
	case errors.As(err, &se):
		return se.Code == grpcUnavailable || se.Code == grpcDeadlineExceeded
	}
	return false
}

// maxReply bounds a reply's size (clientv3's MaxCallRecvMsgSize of the
// log before).
const maxReply = 64 << 20

// post makes one unary gRPC call to one member (gRPC over HTTP/2: a
// length-prefixed message, the status in the trailers) and returns the
// reply's message. wrote says whether the request may have reached the
// member: false only when no connection was made and nothing was written.
func (c *etcdConn) post(ctx context.Context, ep, method string, msg []byte) (reply []byte, wrote bool, err error) {
	// The trace's callback runs in the connection's goroutine, which may
	// still be writing when Do has given up.
	var written atomic.Bool
	trace := &httptrace.ClientTrace{WroteHeaders: func() { written.Store(true) }}
	body := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	body = append(body, msg...)
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, c.scheme+ep+method, bytes.NewReader(body))
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	fail := func(err error) ([]byte, bool, error) {
		var op *net.OpError
		wrote := written.Load() || !errors.As(err, &op) || op.Op != "dial"
		if ctx.Err() != nil {
			return nil, wrote, ctx.Err()
		}
		return nil, wrote, &etcdTransportError{Endpoint: ep, Err: err}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+5+1))
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		return fail(fmt.Errorf("not a gRPC answer: %s %s", resp.Proto, resp.Status))
	}
	code := resp.Trailer.Get("Grpc-Status")
	if code == "" {
		code = resp.Header.Get("Grpc-Status") // a reply of trailers only
	}
	if code == "" {
		return fail(errors.New("not a gRPC answer: no grpc-status"))
	}
	if code != "0" {
		n, err := strconv.Atoi(code)
		if err != nil {
			return fail(fmt.Errorf("not a gRPC answer: grpc-status %q", code))
		}
		m := resp.Trailer.Get("Grpc-Message")
		if m == "" {
			m = resp.Header.Get("Grpc-Message")
		}
		if u, err := url.PathUnescape(m); err == nil {
			m = u
		}
		if ctx.Err() != nil {
			return nil, true, ctx.Err()
		}
		return nil, true, &etcdServerError{Code: n, Message: m}
	}
	if len(data) < 5 || data[0] != 0 || int(binary.BigEndian.Uint32(data[1:5])) != len(data)-5 {
		return fail(fmt.Errorf("not a gRPC answer: a reply of %d bytes is not one uncompressed message", len(data)))
	}
	return data[5:], true, nil
}

// call sends msg to the members in turn, from the one that answered
// last. retry says whether a request that was written may go again to
// another member (a read: yes; a transaction: no).
func (c *etcdConn) call(ctx context.Context, method string, msg []byte, retry bool) ([]byte, error) {
	n := int32(len(c.endpoints))
	for attempt := 0; ; attempt++ {
		c.pick(ctx)
		i := c.cur.Load()
		reply, wrote, err := c.post(ctx, c.endpoints[i%n], method, msg)
		if err == nil {
			c.chosen.Store(true)
			return reply, nil
		}
		if etcdUnavailable(err) {
			c.chosen.Store(false)
		}
		if ctx.Err() != nil || !etcdUnavailable(err) || wrote && !retry {
			return nil, err
		}
		c.cur.CompareAndSwap(i, (i+1)%n)
		if attempt%int(n) == int(n)-1 {
			// Every member failed once: wait a little before the next round.
			t := time.NewTimer(time.Duration(min(attempt+1, 10)) * 25 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, err
			case <-t.C:
			}
		}
	}
}

// pick chooses the member to ask, when none has answered yet or the last
// one failed: every member is asked its status at once, and the first to
// answer is asked from then on. gRPC's balancer (clientv3's) sends only
// to members whose connection is ready; HTTP/2 through net/http writes
// the request before the member has said a word, so a member that accepts
// connections but serves nothing yet (one restarting, catching up with
// the others) would hold the request until the timeout. When no member
// answers, cur stays as it was and the request says why.
func (c *etcdConn) pick(ctx context.Context) {
	if c.chosen.Load() || len(c.endpoints) == 1 {
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	answered := make(chan int, len(c.endpoints))
	for i, ep := range c.endpoints {
		go func() {
			if _, err := c.status(pctx, ep); err != nil {
				i = -1
			}
			answered <- i
		}()
	}
	for range c.endpoints {
		select {
		case i := <-answered:
			if i >= 0 {
				c.cur.Store(int32(i))
				c.chosen.Store(true)
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// The messages of rpc.proto the log uses, with only the fields it uses.

type etcdPair struct {
	Key, Value                  []byte
	CreateRevision, ModRevision int64
}

// etcdRangeRequest is a RangeRequest.
type etcdRangeRequest struct {
	Key, RangeEnd       []byte
	Limit, Revision     int64
	Descend             bool // sort_order DESCEND, sort_target KEY
	KeysOnly, CountOnly bool
}

type etcdRangeResponse struct {
	Revision int64 // of the header
	Kvs      []etcdPair
	More     bool
	Count    int64
}

type etcdPutRequest struct{ Key, Value []byte }

type etcdDeleteRequest struct{ Key, RangeEnd []byte }

// etcdOp is a RequestOp: one of the three.
type etcdOp struct {
	Range  *etcdRangeRequest
	Put    *etcdPutRequest
	Delete *etcdDeleteRequest
}

// etcdCompare is one condition of a transaction (Compare, result EQUAL):
// the key's (or, with RangeEnd, every key's in the range) mod revision
// (Mod) or create revision equals Rev.
type etcdCompare struct {
	Key, RangeEnd []byte
	Mod           bool
	Rev           int64
}

type etcdTxnResponse struct {
	Revision  int64
	Succeeded bool
	Responses []etcdOpResponse
}

// etcdOpResponse is a ResponseOp; Range is set for a response_range.
type etcdOpResponse struct{ Range *etcdRangeResponse }

// modRevisionIs: the key was last written at rev.
func modRevisionIs(key string, rev int64) etcdCompare {
	return etcdCompare{Key: []byte(key), Mod: true, Rev: rev}
}

// prefixEmpty: no key starts with prefix (every key's create revision
// is 0).
func prefixEmpty(prefix string) etcdCompare {
	return etcdCompare{Key: []byte(prefix), RangeEnd: etcdPrefixEnd(prefix)}
}

// etcdPrefixEnd is the range end of every key that starts with prefix
// (clientv3.GetPrefixRangeEnd): "\x00", every key from prefix on, when
// prefix has no end.
func etcdPrefixEnd(prefix string) []byte {
	if end := prefixEnd([]byte(prefix)); end != nil {
		return end
	}
	return []byte{0}
}

func (c *etcdConn) rangeKeys(ctx context.Context, r *etcdRangeRequest) (*etcdRangeResponse, error) {
	reply, err := c.call(ctx, "/etcdserverpb.KV/Range", r.marshal(nil), true)
	if err != nil {
		return nil, err
	}
	out := &etcdRangeResponse{}
	if err := out.unmarshal(reply); err != nil {
		return nil, &etcdTransportError{Endpoint: "etcd", Err: fmt.Errorf("RangeResponse: %w", err)}
	}
	return out, nil
}

// txn runs ops if every condition holds. A transaction of reads alone
// may go again to another member.
func (c *etcdConn) txn(ctx context.Context, cond []etcdCompare, ops []etcdOp, readOnly bool) (*etcdTxnResponse, error) {
	var msg []byte
	for _, cmp := range cond {
		msg = pbMessage(msg, 1, cmp.marshal)
	}
	for _, op := range ops {
		msg = pbMessage(msg, 2, op.marshal)
	}
	reply, err := c.call(ctx, "/etcdserverpb.KV/Txn", msg, readOnly)
	if err != nil {
		return nil, err
	}
	out := &etcdTxnResponse{}
	if err := out.unmarshal(reply); err != nil {
		return nil, &etcdTransportError{Endpoint: "etcd", Err: fmt.Errorf("TxnResponse: %w", err)}
	}
	return out, nil
}

func (c *etcdConn) deletePrefix(ctx context.Context, prefix string) error {
	d := etcdDeleteRequest{Key: []byte(prefix), RangeEnd: etcdPrefixEnd(prefix)}
	_, err := c.call(ctx, "/etcdserverpb.KV/DeleteRange", d.marshal(nil), true)
	return err
}

// status asks one member for its view of the cluster: the leader it
// knows (0: none).
func (c *etcdConn) status(ctx context.Context, ep string) (leader uint64, err error) {
	reply, _, err := c.post(ctx, ep, "/etcdserverpb.Maintenance/Status", nil)
	if err != nil {
		return 0, err
	}
	err = pbFields(reply, func(f int, v uint64, _ []byte) error {
		if f == 4 { // StatusResponse.leader
			leader = v
		}
		return nil
	})
	return leader, err
}

// Protobuf's wire format (protobuf.dev/programming-guides/encoding), as
// much as these messages need: varints (wire type 0) and length-delimited
// fields (wire type 2); fields of other types are skipped when read.

func pbVarint(b []byte, field int, v uint64) []byte {
	b = binary.AppendUvarint(b, uint64(field)<<3)
	return binary.AppendUvarint(b, v)
}

func pbBytes(b []byte, field int, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(field)<<3|2)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// pbOptBytes, pbOptVarint and pbOptBool append a proto3 field that is not
// in a oneof: its default (empty, 0, false) is left out, as the generated
// code leaves it out.
func pbOptBytes(b []byte, field int, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return pbBytes(b, field, v)
}

func pbOptVarint(b []byte, field int, v uint64) []byte {
	if v == 0 {
		return b
	}
	return pbVarint(b, field, v)
}

func pbOptBool(b []byte, field int, v bool) []byte {
	if !v {
		return b
	}
	return pbVarint(b, field, 1)
}

// pbMessage appends a message field written by m.
func pbMessage(b []byte, field int, m func([]byte) []byte) []byte {
	return pbBytes(b, field, m(nil))
}

var errProto = errors.New("malformed protobuf")

// pbFields calls fn for each field of msg: its number and, for a varint,
// its value, for a length-delimited field, its bytes.
func pbFields(msg []byte, fn func(field int, v uint64, b []byte) error) error {
	for len(msg) > 0 {
		tag, n := binary.Uvarint(msg)
		if n <= 0 || tag>>3 == 0 || tag>>3 > 1<<29 {
			return errProto
		}
		msg = msg[n:]
		field := int(tag >> 3)
		switch tag & 7 {
		case 0:
			v, n := binary.Uvarint(msg)
			if n <= 0 {
				return errProto
			}
			msg = msg[n:]
			if err := fn(field, v, nil); err != nil {
				return err
			}
		case 2:
			l, n := binary.Uvarint(msg)
			if n <= 0 || l > uint64(len(msg)-n) {
				return errProto
			}
			v := msg[n : n+int(l)]
			msg = msg[n+int(l):]
			if err := fn(field, 0, v); err != nil {
				return err
			}
		case 1:
			if len(msg) < 8 {
				return errProto
			}
			msg = msg[8:]
		case 5:
			if len(msg) < 4 {
				return errProto
			}
			msg = msg[4:]
		default:
			return errProto
		}
	}
	return nil
}

func (r *etcdRangeRequest) marshal(b []byte) []byte {
	b = pbOptBytes(b, 1, r.Key)
	b = pbOptBytes(b, 2, r.RangeEnd)
	b = pbOptVarint(b, 3, uint64(r.Limit))
	b = pbOptVarint(b, 4, uint64(r.Revision))
	if r.Descend {
		b = pbVarint(b, 5, 2) // sort_order DESCEND; sort_target KEY is 0
	}
	b = pbOptBool(b, 8, r.KeysOnly)
	return pbOptBool(b, 9, r.CountOnly)
}

func (p *etcdPutRequest) marshal(b []byte) []byte {
	b = pbOptBytes(b, 1, p.Key)
	return pbOptBytes(b, 2, p.Value)
}

func (d *etcdDeleteRequest) marshal(b []byte) []byte {
	b = pbOptBytes(b, 1, d.Key)
	return pbOptBytes(b, 2, d.RangeEnd)
}

func (op etcdOp) marshal(b []byte) []byte {
	switch {
	case op.Range != nil:
		return pbMessage(b, 1, op.Range.marshal)
	case op.Put != nil:
		return pbMessage(b, 2, op.Put.marshal)
	default:
		return pbMessage(b, 3, op.Delete.marshal)
	}
}

func (c etcdCompare) marshal(b []byte) []byte {
	// result EQUAL is 0 (field 1 left out); target CREATE 1, MOD 2.
	target, field := uint64(1), 5 // create_revision
	if c.Mod {
		target, field = 2, 6 // mod_revision
	}
	b = pbVarint(b, 2, target)
	b = pbOptBytes(b, 3, c.Key)
	// The revision is a member of a oneof: written even when 0.
	b = pbVarint(b, field, uint64(c.Rev))
	return pbOptBytes(b, 64, c.RangeEnd)
}

// headerRevision reads ResponseHeader.revision into rev when the header
// has one (a header given twice is merged, as protobuf does).
func headerRevision(msg []byte, rev *int64) error {
	return pbFields(msg, func(f int, v uint64, _ []byte) error {
		if f == 3 {
			*rev = int64(v)
		}
		return nil
	})
}

func (p *etcdPair) unmarshal(msg []byte) error {
	return pbFields(msg, func(f int, v uint64, b []byte) error {
		switch f {
		case 1:
			p.Key = b
		case 2:
			p.CreateRevision = int64(v)
		case 3:
			p.ModRevision = int64(v)
		case 5:
			p.Value = b
		}
		return nil
	})
}

func (r *etcdRangeResponse) unmarshal(msg []byte) error {
	return pbFields(msg, func(f int, v uint64, b []byte) (err error) {
		switch f {
		case 1:
			err = headerRevision(b, &r.Revision)
		case 2:
			var p etcdPair
			err = p.unmarshal(b)
			r.Kvs = append(r.Kvs, p)
		case 3:
			r.More = v != 0
		case 4:
			r.Count = int64(v)
		}
		return err
	})
}

func (t *etcdTxnResponse) unmarshal(msg []byte) error {
	return pbFields(msg, func(f int, v uint64, b []byte) (err error) {
		switch f {
		case 1:
			err = headerRevision(b, &t.Revision)
		case 2:
			t.Succeeded = v != 0
		case 3:
			var op etcdOpResponse
			err = pbFields(b, func(f int, _ uint64, b []byte) error {
				if f == 1 { // response_range
					op.Range = &etcdRangeResponse{}
					return op.Range.unmarshal(b)
				}
				return nil
			})
			t.Responses = append(t.Responses, op)
		}
		return err
	})
}
