package store

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// EtcdScheme starts a log name that names an etcd cluster.
const EtcdScheme = "etcd://"

// DefaultEtcdPrefix is the key prefix a log in etcd lives under unless the
// name gives one.
const DefaultEtcdPrefix = "custos"

// etcdMarker is the value of PREFIX/meta/marker: it says the keys under
// PREFIX are a custos ceremony log.
const etcdMarker = "custos ceremony log"

var keyMarker = []byte("marker")

// IsEtcd reports whether dsn names an etcd cluster rather than a file.
func IsEtcd(dsn string) bool { return strings.HasPrefix(dsn, EtcdScheme) }

// ParseEtcd reads etcd://HOST:PORT[,HOST:PORT...][/PREFIX] into its
// endpoints and key prefix (DefaultEtcdPrefix when none is given).
func ParseEtcd(dsn string) (endpoints []string, prefix string, err error) {
	rest, ok := strings.CutPrefix(dsn, EtcdScheme)
	if !ok {
		return nil, "", fmt.Errorf("%w: %q does not start with %s", ErrInvalid, dsn, EtcdScheme)
	}
	hosts, prefix, _ := strings.Cut(rest, "/")
	prefix = strings.Trim(prefix, "/")
	if prefix == "" {
		prefix = DefaultEtcdPrefix
	}
	for _, h := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" || port == "" {
			return nil, "", fmt.Errorf("%w: etcd endpoint %q: want HOST:PORT", ErrInvalid, h)
		}
		endpoints = append(endpoints, h)
	}
	for _, c := range prefix {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/') {
			return nil, "", fmt.Errorf("%w: etcd key prefix %q: want letters, digits, - _ . /", ErrInvalid, prefix)
		}
	}
	return endpoints, prefix, nil
}

// backoff waits a little before attempt+1, more after each lost race, with
// jitter so that appenders that lost together do not collide again.
func backoff(attempt int) {
	d := time.Duration(1<<min(attempt, 6)) * time.Millisecond
	time.Sleep(d/2 + rand.N(d))
}

// UnavailableError says the etcd cluster did not answer within the
// timeout, and what was found about why: members down, no quorum, a
// certificate refused. Nothing was written. It unwraps to ErrUnavailable.
type UnavailableError struct {
	Endpoints []string
	Waited    time.Duration
	Problem   string // what was found
	Err       error  // the client's error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("ceremony log etcd://%s: %s (waited %s): %v", strings.Join(e.Endpoints, ","), e.Problem, e.Waited, e.Err)
}

func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// etcdBackend keeps the log under a key prefix of an etcd cluster: bucket
// B's key K is PREFIX/B/K, byte for byte.
type etcdBackend struct {
	cli       *etcdConn
	endpoints []string
	prefix    string
	timeout   time.Duration
	tls       *tls.Config

	// chain, when set (a copy into a new prefix), lets each update start
	// from what the one before committed instead of reading it back.
	chain *etcdChain
}

// etcdChain is what a run of updates by one writer knows after its last
// commit: the revision it made (the head key's ModRevision since) and the
// head it wrote. An update that starts from it reads at that revision,
// takes the head from it and skips the tail check (checkTail): its commit
// is conditional on the head key as ever, so a write by anyone else in
// between makes it fail (errConflict), and the update after that starts
// afresh. Copy verifies the whole log at the end.
type etcdChain struct {
	ok      bool
	rev     int64
	headVal []byte
	head    Head
}

func (b *etcdBackend) key(bucket, k []byte) string {
	return b.prefix + "/" + string(bucket) + "/" + string(k)
}

func (b *etcdBackend) bucketEnd(bucket []byte) string {
	return b.prefix + "/" + string(bucket) + "0" // '0' follows '/'
}

func (b *etcdBackend) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), b.timeout)
}

// wrap turns the client's error into an UnavailableError that says why.
func (b *etcdBackend) wrap(err error) error {
	if err == nil {
		return nil
	}
	var ue *UnavailableError
	if errors.As(err, &ue) || errors.Is(err, errConflict) || errors.Is(err, ErrInvalid) {
		return err
	}
	if !etcdUnavailable(err) {
		return fmt.Errorf("ceremony log etcd://%s: %w", strings.Join(b.endpoints, ","), err)
	}
	return &UnavailableError{Endpoints: b.endpoints, Waited: b.timeout, Problem: b.diagnose(), Err: err}
}

// diagnose asks each member, briefly, whether it answers and whether it
// knows a leader, and tries a TLS handshake where TLS is used.
func (b *etcdBackend) diagnose() string {
	var mu sync.Mutex
	answering, leaderless, reachable := 0, 0, 0
	probe := max(time.Second, b.timeout/2)
	var certs, speaksTLS []string
	var wg sync.WaitGroup
	for _, ep := range b.endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b.tls != nil {
				d := &net.Dialer{Timeout: time.Second}
				conn, err := tls.DialWithDialer(d, "tcp", ep, b.tls)
				if err == nil {
					err = tlsRefusedAfterHandshake(conn)
					conn.Close()
				}
				if err != nil && !isNetDown(err) {
					mu.Lock()
					certs = append(certs, fmt.Sprintf("%s: %v", ep, err))
					mu.Unlock()
					return
				}
			}
			if conn, err := net.DialTimeout("tcp", ep, time.Second); err == nil {
				conn.Close()
				mu.Lock()
				reachable++
				mu.Unlock()
			}
			ctx, cancel := context.WithTimeout(context.Background(), probe)
			defer cancel()
			leader, err := b.cli.status(ctx, ep)
			if err != nil && b.tls == nil && speaksOnlyTLS(ep) {
				mu.Lock()
				speaksTLS = append(speaksTLS, ep)
				mu.Unlock()
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				answering++
				if leader == 0 {
					leaderless++
				}
			}
		}()
	}
	wg.Wait()
	n := len(b.endpoints)
	switch {
	case len(certs) > 0:
		sort.Strings(certs)
		return "the TLS handshake failed (check --etcd-cacert, --etcd-cert and --etcd-key): " + strings.Join(certs, "; ")
	case len(speaksTLS) > 0:
		sort.Strings(speaksTLS)
		return "the members speak only TLS (" + strings.Join(speaksTLS, ", ") + "): give --etcd-cacert, and --etcd-cert and --etcd-key if they ask for a client certificate"
	case reachable == 0:
		return fmt.Sprintf("no member answers (0 of %d endpoints): start the members or check the endpoints", n)
	case leaderless > 0 || answering < n/2+1:
		return fmt.Sprintf("the cluster has no quorum (%d of %d members reachable, %d answer, %d of them know no leader): bring a majority of the members back, then repeat the command", reachable, n, answering, leaderless)
	default:
		return fmt.Sprintf("%d of %d members answer but the request did not complete: repeat the command, or raise --timeout", answering, n)
	}
}

// tlsRefusedAfterHandshake waits briefly for what a member says after the
// handshake. With TLS 1.3 the client's side of the handshake ends before the
// member has checked the client's certificate: a member that refuses it
// (none given, or one of another CA) says so in an alert on the first read.
// A member that accepted it waits, silent, for the request: the read times
// out, and that is no error.
func tlsRefusedAfterHandshake(conn *tls.Conn) error {
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var one [1]byte
	_, err := conn.Read(one[:])
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if errors.Is(err, io.EOF) {
		return errors.New("the member closed the connection after the handshake (is this client's certificate one it trusts?)")
	}
	return err
}

// speaksOnlyTLS reports whether a member that did not answer plain HTTP
// completes a TLS handshake. The handshake verifies nothing and nothing is
// sent over it: it only tells the operator which flags are missing.
func speaksOnlyTLS(ep string) bool {
	d := &net.Dialer{Timeout: time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", ep, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func isNetDown(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && ne.Op == "dial"
}

func (b *etcdBackend) close() error { return b.cli.close() }

func (b *etcdBackend) check(kvRead) error { return nil }

// view pins a snapshot: the revision of the first read, every read at it.
func (b *etcdBackend) view(fn func(kvRead) error) error {
	kv := &etcdKV{b: b}
	if err := kv.pin(); err != nil {
		return err
	}
	return fn(kv)
}

// update reads at one revision and commits only if the head key is still
// the one read (its ModRevision): appenders on many machines make one
// chain. A lost race is errConflict; Log.Update runs fn again.
func (b *etcdBackend) update(fn func(kvWrite) error) error {
	kv := &etcdKV{b: b, writes: map[string][]byte{}}
	headKey := b.key(bucketMeta, keyHead)
	if c := b.chain; c != nil && c.ok {
		c.ok = false // until this update commits
		kv.rev, kv.headMod, kv.chained = c.rev, c.rev, &c.head
		kv.cache = map[string][]byte{headKey: c.headVal}
	} else if err := kv.pin(); err != nil {
		return err
	}
	if err := fn(kv); err != nil {
		return err
	}
	if len(kv.writes) == 0 {
		return nil
	}
	err := kv.commit(modRevisionIs(headKey, kv.headMod))
	if err == nil && b.chain != nil {
		if h, ok := decodeHead(kv.writes[headKey]); ok && kv.committed > 0 {
			*b.chain = etcdChain{ok: true, rev: kv.committed, headVal: kv.writes[headKey], head: h}
		}
	}
	var ue *UnavailableError
	if errors.As(err, &ue) {
		// The commit's outcome is unknown (a member went away with it):
		// it happened if the head is now the one it wrote.
		ctx, cancel := b.ctx()
		resp, gerr := b.cli.rangeKeys(ctx, &etcdRangeRequest{Key: []byte(headKey)})
		cancel()
		if gerr == nil && len(resp.Kvs) == 1 && bytes.Equal(resp.Kvs[0].Value, kv.writes[headKey]) {
			return nil
		}
	}
	return err
}

// etcdKV reads at a pinned revision through a small cache, and keeps a
// write transaction's writes until the commit.
type etcdKV struct {
	b       *etcdBackend
	rev     int64
	headMod int64
	mu      sync.Mutex
	cache   map[string][]byte // reads, a write transaction only
	writes  map[string][]byte // nil value: delete; nil map: a view

	chained   *Head // the head the chain committed last (etcdChain)
	committed int64 // the revision the commit made
}

// chainedHead is the head of the log as this writer's last commit left
// it, when the update starts from it (etcdChain); Log's update then skips
// the tail check.
func (kv *etcdKV) chainedHead() (Head, bool) {
	if kv.chained == nil {
		return Head{}, false
	}
	return *kv.chained, true
}

func (kv *etcdKV) pin() error {
	ctx, cancel := kv.b.ctx()
	defer cancel()
	resp, err := kv.b.cli.rangeKeys(ctx, &etcdRangeRequest{Key: []byte(kv.b.key(bucketMeta, keyHead))})
	if err != nil {
		return kv.b.wrap(err)
	}
	kv.rev = resp.Revision
	if len(resp.Kvs) == 1 {
		kv.headMod = resp.Kvs[0].ModRevision
		if kv.writes != nil {
			kv.cache = map[string][]byte{kv.b.key(bucketMeta, keyHead): resp.Kvs[0].Value}
		}
	}
	return nil
}

func (kv *etcdKV) get(bucket, key []byte) ([]byte, error) {
	k := kv.b.key(bucket, key)
	if kv.writes != nil {
		if v, ok := kv.writes[k]; ok {
			return v, nil
		}
		if v, ok := kv.cache[k]; ok {
			return v, nil
		}
	}
	ctx, cancel := kv.b.ctx()
	defer cancel()
	resp, err := kv.b.cli.rangeKeys(ctx, &etcdRangeRequest{Key: []byte(k), Revision: kv.rev})
	if err != nil {
		return nil, kv.b.wrap(err)
	}
	var v []byte
	if len(resp.Kvs) == 1 {
		v = resp.Kvs[0].Value
	}
	if kv.writes != nil {
		if kv.cache == nil {
			kv.cache = map[string][]byte{}
		}
		kv.cache[k] = v
	}
	return v, nil
}

func (kv *etcdKV) scan(bucket, from, to []byte, fn func(k, v []byte) error) error {
	return kv.scanDir(bucket, from, to, false, fn)
}

func (kv *etcdKV) scanDesc(bucket, from, to []byte, fn func(k, v []byte) error) error {
	return kv.scanDir(bucket, from, to, true, fn)
}

// scanDir reads the keys of bucket in [from, to) at the transaction's
// revision, in pages within windows (etcdScan).
func (kv *etcdKV) scanDir(bucket, from, to []byte, desc bool, fn func(k, v []byte) error) error {
	if len(kv.writes) > 0 {
		return errors.New("store: scan after a write in an etcd transaction")
	}
	start := kv.b.key(bucket, from)
	end := kv.b.bucketEnd(bucket)
	if to != nil {
		end = kv.b.key(bucket, to)
	}
	return etcdScan(kv.b.key(bucket, nil), start, end, desc, kv.fetch, fn)
}

// fetch reads one page of a scan at the transaction's revision.
func (kv *etcdKV) fetch(r *etcdRangeRequest) (*etcdRangeResponse, error) {
	r.Revision = kv.rev
	ctx, cancel := kv.b.ctx()
	defer cancel()
	resp, err := kv.b.cli.rangeKeys(ctx, r)
	if err != nil {
		return nil, kv.b.wrap(err)
	}
	return resp, nil
}

func (kv *etcdKV) hasBucket([]byte) bool { return true }

func (kv *etcdKV) put(bucket, key, val []byte) error {
	kv.writes[kv.b.key(bucket, key)] = append([]byte{}, val...)
	return nil
}

func (kv *etcdKV) del(bucket, key []byte) error {
	kv.writes[kv.b.key(bucket, key)] = nil
	return nil
}

// errTooManyOps: the cluster refused a transaction for its number of
// keys (its --max-txn-ops); nothing was written.
var errTooManyOps = errors.New("too many keys in one transaction")

// commit writes every pending write in one transaction under cond.
func (kv *etcdKV) commit(cond ...etcdCompare) error {
	keys := make([]string, 0, len(kv.writes))
	for k := range kv.writes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ops := make([]etcdOp, 0, len(keys))
	for _, k := range keys {
		if v := kv.writes[k]; v == nil {
			ops = append(ops, etcdOp{Delete: &etcdDeleteRequest{Key: []byte(k)}})
		} else {
			ops = append(ops, etcdOp{Put: &etcdPutRequest{Key: []byte(k), Value: v}})
		}
	}
	ctx, cancel := kv.b.ctx()
	defer cancel()
	resp, err := kv.b.cli.txn(ctx, cond, ops, false)
	if err != nil {
		var se *etcdServerError
		if errors.As(err, &se) && se.Message == tooManyOpsMessage {
			return fmt.Errorf("%w: %w: etcd refused a transaction of %d keys (raise the cluster's --max-txn-ops, or write fewer events in one Update)", ErrInvalid, errTooManyOps, len(ops))
		}
		if errors.As(err, &se) && (se.Code == grpcInvalidArgument || se.Code == grpcResourceExhausted) {
			return fmt.Errorf("%w: etcd refused a transaction of %d keys: %v (raise the cluster's --max-txn-ops or --max-request-bytes, or write fewer events in one Update)", ErrInvalid, len(ops), err)
		}
		return kv.b.wrap(err)
	}
	if !resp.Succeeded {
		return errConflict
	}
	kv.committed = resp.Revision
	return nil
}

// tlsConfig builds the client's TLS from PEM files; nil when none is given.
func tlsConfig(opts *Options) (*tls.Config, error) {
	if opts == nil || opts.EtcdCACert == "" && opts.EtcdCert == "" && opts.EtcdKey == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.EtcdCACert != "" {
		pem, err := os.ReadFile(opts.EtcdCACert)
		if err != nil {
			return nil, fmt.Errorf("etcd ca certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: etcd ca certificate %s: no PEM certificate", ErrInvalid, opts.EtcdCACert)
		}
		cfg.RootCAs = pool
	}
	if (opts.EtcdCert == "") != (opts.EtcdKey == "") {
		return nil, fmt.Errorf("%w: give both the etcd client certificate and its key, or neither", ErrInvalid)
	}
	if opts.EtcdCert != "" {
		cert, err := tls.LoadX509KeyPair(opts.EtcdCert, opts.EtcdKey)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// openEtcdLog connects, and creates the log under its prefix when the
// prefix holds no key at all: the marker, the schema, the head and the
// log.created event, in one transaction that succeeds only on an empty
// prefix. A prefix holding keys without the marker is refused (ErrNotLog).
func openEtcdLog(dsn string, opts *Options, now func() time.Time) (*Log, error) {
	l, err := dialEtcd(dsn, opts, now)
	if err != nil {
		return nil, err
	}
	if err := l.etcdCheckOrCreate(opts != nil && opts.NoCreate); err != nil {
		l.be.close()
		return nil, err
	}
	return l, nil
}

// openEtcdEmpty makes a log without events under an empty prefix (for
// Copy, which brings the events): marker, schema and an empty head in one
// transaction that succeeds only on an empty prefix.
func openEtcdEmpty(dsn string, opts *Options) (*Log, error) {
	l, err := dialEtcd(dsn, opts, time.Now)
	if err != nil {
		return nil, err
	}
	b := l.be.(*etcdBackend)
	kv := &etcdKV{b: b, writes: map[string][]byte{}}
	err = kv.pin()
	if err == nil {
		kv.writes[b.key(bucketMeta, keyMarker)] = []byte(etcdMarker)
		kv.writes[b.key(bucketMeta, keySchema)] = encodeVersion(schemaVersion)
		kv.writes[b.key(bucketMeta, keyHead)] = encodeHead(Head{})
		err = kv.commit(prefixEmpty(b.prefix + "/"))
	}
	if errors.Is(err, errConflict) {
		err = fmt.Errorf("%w: the prefix %q/ is not empty", fs.ErrExist, b.prefix)
	}
	if err != nil {
		b.close()
		return nil, err
	}
	return l, nil
}

// deletePrefix removes every key of the log (a copy that failed).
func (b *etcdBackend) deletePrefix() error {
	ctx, cancel := b.ctx()
	defer cancel()
	return b.cli.deletePrefix(ctx, b.prefix+"/")
}

// pending is how many keys the transaction would write.
func (kv *etcdKV) pending() int { return len(kv.writes) }

func dialEtcd(dsn string, opts *Options, now func() time.Time) (*Log, error) {
	endpoints, prefix, err := ParseEtcd(dsn)
	if err != nil {
		return nil, err
	}
	timeout := DefaultTimeout
	if opts != nil && opts.Timeout > 0 {
		timeout = opts.Timeout
	}
	tc, err := tlsConfig(opts)
	if err != nil {
		return nil, err
	}
	cli := newEtcdConn(endpoints, tc, 10*time.Second)
	b := &etcdBackend{cli: cli, endpoints: endpoints, prefix: prefix, timeout: timeout, tls: tc}
	name := EtcdScheme + strings.Join(endpoints, ",") + "/" + prefix
	return &Log{be: b, path: name, now: now}, nil
}

func (l *Log) etcdCheckOrCreate(noCreate bool) error {
	b := l.be.(*etcdBackend)
	for attempt := 0; attempt < 3; attempt++ {
		ctx, cancel := b.ctx()
		resp, err := b.cli.txn(ctx, nil, []etcdOp{
			{Range: &etcdRangeRequest{Key: []byte(b.key(bucketMeta, keyMarker))}},
			{Range: &etcdRangeRequest{Key: []byte(b.key(bucketMeta, keySchema))}},
			{Range: &etcdRangeRequest{Key: []byte(b.prefix + "/"), RangeEnd: etcdPrefixEnd(b.prefix + "/"), CountOnly: true}},
		}, true)
		cancel()
		if err == nil && (len(resp.Responses) != 3 || resp.Responses[0].Range == nil || resp.Responses[1].Range == nil || resp.Responses[2].Range == nil) {
			err = &etcdTransportError{Endpoint: strings.Join(b.endpoints, ","), Err: fmt.Errorf("a transaction of three reads answered with %d", len(resp.Responses))}
		}
		if err != nil {
			return fmt.Errorf("open ceremony log %s: %w", l.path, b.wrap(err))
		}
		marker, schema, count := resp.Responses[0].Range, resp.Responses[1].Range, resp.Responses[2].Range.Count
		switch {
		case len(marker.Kvs) == 1 && string(marker.Kvs[0].Value) == etcdMarker:
			if len(schema.Kvs) != 1 || len(schema.Kvs[0].Value) != 4 {
				return fmt.Errorf("open ceremony log %s: %w (no schema version)", l.path, ErrNotLog)
			}
			v := uint32(schema.Kvs[0].Value[0])<<24 | uint32(schema.Kvs[0].Value[1])<<16 | uint32(schema.Kvs[0].Value[2])<<8 | uint32(schema.Kvs[0].Value[3])
			switch {
			case v > schemaVersion:
				return &SchemaError{Path: l.path, Found: v, Supported: schemaVersion}
			case v < schemaVersion:
				return fmt.Errorf("open ceremony log %s: %w (schema %d: custos never wrote that in etcd)", l.path, ErrNotLog, v)
			}
			return nil
		case count > 0:
			return fmt.Errorf("open ceremony log %s: %w: the prefix %q/ holds %d keys written by something else (no custos marker); give another prefix (etcd://HOSTS/PREFIX)", l.path, ErrNotLog, b.prefix, count)
		case noCreate:
			return fmt.Errorf("no ceremony log at %s: %w", l.path, ErrNotFound)
		}
		err = l.etcdCreate()
		if !errors.Is(err, errConflict) {
			return err
		}
		// Someone wrote under the prefix first: look again.
	}
	return fmt.Errorf("open ceremony log %s: %w: the prefix kept changing while custos created its log", l.path, ErrNotLog)
}

func (l *Log) etcdCreate() error {
	b := l.be.(*etcdBackend)
	kv := &etcdKV{b: b, writes: map[string][]byte{}}
	if err := kv.pin(); err != nil {
		return err
	}
	kv.writes[b.key(bucketMeta, keyMarker)] = []byte(etcdMarker)
	kv.writes[b.key(bucketMeta, keySchema)] = encodeVersion(schemaVersion)
	kv.writes[b.key(bucketMeta, keyHead)] = encodeHead(Head{})
	t := &Tx{kv: kv, log: l}
	if _, err := t.append(Event{Actor: "custos", Type: TypeCreated, Body: mustJSON(map[string]uint32{"schema": schemaVersion})}); err != nil {
		return fmt.Errorf("create ceremony log %s: %w", l.path, err)
	}
	return kv.commit(prefixEmpty(b.prefix + "/"))
}

// etcdPrefixKeys is for tests: the keys under the log's prefix.
func (b *etcdBackend) rawKeys() ([]string, error) {
	ctx, cancel := b.ctx()
	defer cancel()
	resp, err := b.cli.rangeKeys(ctx, &etcdRangeRequest{Key: []byte(b.prefix + "/"), RangeEnd: etcdPrefixEnd(b.prefix + "/"), KeysOnly: true})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, string(bytes.TrimPrefix(kv.Key, []byte(b.prefix+"/"))))
	}
	return out, nil
}
