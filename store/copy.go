package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// CopyReport says what Copy copied.
type CopyReport struct {
	Events uint64 // events copied, log.created included
	Head   Head   // the head of both logs after the copy
}

// Copy copies the whole log src into a new log named by dst (a file path
// or etcd://..., as Open takes it): every event byte for byte, so each
// event keeps its hash and every anchor recorded from src is good on dst;
// the indexes are built on dst from the events, by the log's rules.
//
// src is verified first (Verify: chain, rules, indexes); a broken src is
// not copied. dst must not exist: a file is refused if present, an etcd
// prefix if it holds any key. A file is built under a temporary name and
// linked into place only once complete and checked, so a failed copy
// leaves nothing at dst; on etcd the events go in transactions of as
// many events as the cluster takes, and a failed copy deletes the prefix
// it began. dst is verified at the end, and must end at src's head: else
// it is removed too (a file) or its prefix deleted (etcd).
func Copy(src *Log, dst string, opts *Options) (CopyReport, error) {
	var rep CopyReport
	srcRep, err := src.Verify()
	if err != nil {
		return rep, fmt.Errorf("copy ceremony log: the source does not verify: %w", err)
	}
	fill := func(tl *Log) error { return copyEvents(src, tl) }
	var out *Log
	if IsEtcd(dst) {
		out, err = createEtcdWith(dst, opts, fill)
	} else {
		out, err = createBoltWith(dst, opts, fill)
	}
	if err != nil {
		return rep, fmt.Errorf("copy ceremony log to %s: %w", dst, err)
	}
	dstRep, err := out.Verify(srcRep.Head)
	if err == nil && dstRep.Head != srcRep.Head {
		err = fmt.Errorf("the copy ends at %s, the source at %s", dstRep.Head, srcRep.Head)
	}
	if err != nil {
		// Something wrote to dst during the copy: what this copy made
		// goes, as it would have had the copy failed before.
		if eb, ok := out.be.(*etcdBackend); ok {
			eb.deletePrefix()
			out.Close()
		} else {
			out.Close()
			os.Remove(dst)
		}
		return rep, fmt.Errorf("copy ceremony log: the copy does not verify: %w", err)
	}
	out.Close()
	return CopyReport{Events: dstRep.Events, Head: dstRep.Head}, nil
}

// A copy commits up to copyBatchBolt events a transaction to a file. On
// etcd a transaction's keys are bounded by the cluster's --max-txn-ops
// (128 by default), its bytes by --max-request-bytes (1.5 MiB by
// default): a copy first tries transactions of up to copyEtcdOpsTry keys
// and, if the cluster refuses one for its number of keys (nothing is
// written then), goes on with etcdDefaultTxnOps; either way a
// transaction takes events until the next one might pass the bound (by
// as many keys as the most any event has written so far) or about half
// of copyBatchBytes.
const (
	copyBatchBolt     = 5000
	copyBatchBytes    = 1 << 20
	copyEtcdOpsTry    = 1024
	etcdDefaultTxnOps = 128
	copyEventKeys     = 16 // what an event may write, until one writes more
)

// copyEvents appends src's events to dst (which has none) as they are.
func copyEvents(src, dst *Log) error {
	var batch [][]byte
	size := 0
	maxOps, margin := copyEtcdOpsTry, copyEventKeys
	// put commits a prefix of recs in one transaction and says how many.
	put := func(recs [][]byte) (int, error) {
		used := 0
		_, err := dst.Update(func(t *Tx) error {
			used = 0
			bytes := 0
			p, onEtcd := t.kv.(interface{ pending() int })
			for _, rec := range recs {
				before := 0
				if onEtcd {
					before = p.pending()
				}
				if err := t.importRecord(rec); err != nil {
					return err
				}
				used++
				bytes += len(rec)
				if onEtcd {
					margin = max(margin, p.pending()-before)
					if p.pending()+margin > maxOps || bytes >= copyBatchBytes/2 {
						break
					}
				}
			}
			return nil
		})
		if errors.Is(err, errTooManyOps) && maxOps > etcdDefaultTxnOps {
			maxOps = etcdDefaultTxnOps // nothing was written: again, smaller
			return 0, nil
		}
		return used, err
	}
	flush := func(all bool) error {
		for len(batch) > 0 {
			n, err := put(batch)
			if err != nil {
				return err
			}
			for _, rec := range batch[:n] {
				size -= len(rec)
			}
			batch = batch[n:]
			if !all && n > 0 {
				break
			}
		}
		if len(batch) == 0 {
			batch = nil
		}
		return nil
	}
	limit := copyBatchBolt
	if eb, ok := dst.be.(*etcdBackend); ok {
		limit = copyEtcdOpsTry
		// Each transaction starts from the one before (etcdChain).
		eb.chain = &etcdChain{}
		defer func() { eb.chain = nil }()
	}
	err := src.view(func(r kvRead) error {
		return walkEventsRaw(r, "", func(rec []byte) error {
			batch = append(batch, rec)
			size += len(rec)
			if len(batch) >= limit || size >= copyBatchBytes {
				return flush(false)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	return flush(true)
}

// importRecord appends an event record made elsewhere, as it is: it must
// be the next event (its number and previous hash), and it goes through
// the log's rules like any other.
func (t *Tx) importRecord(rec []byte) error {
	if t.kv == nil {
		return ErrClosed
	}
	ev, err := decodeRecord(rec)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if ev.Seq != t.head.Seq+1 || ev.Prev != t.head.Hash {
		return &ChainError{Seq: ev.Seq, Problem: fmt.Sprintf("does not follow event %d", t.head.Seq), Err: ErrBrokenChain}
	}
	if err := apply(t.kv, ev); err != nil {
		return &ChainError{Seq: ev.Seq, Problem: fmt.Sprintf("does not apply to the events before it: %v", err), Err: ErrBrokenChain, Cause: err}
	}
	if err := t.kv.put(bucketEvents, seqKey(ev.Seq), storedValue(ev.Hash, rec)); err != nil {
		return err
	}
	if err := t.kv.put(bucketMeta, keyHead, encodeHead(ev.Head())); err != nil {
		return err
	}
	t.head = ev.Head()
	return nil
}

func createBoltWith(path string, opts *Options, fill func(*Log) error) (*Log, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("%s: %w", path, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	timeout := DefaultTimeout
	if opts != nil && opts.Timeout > 0 {
		timeout = opts.Timeout
	}
	l := &Log{path: path, now: time.Now}
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return nil, err
	}
	if err := l.createWith(timeout, fill); err != nil {
		return nil, err
	}
	return Open(path, opts)
}

func createEtcdWith(dsn string, opts *Options, fill func(*Log) error) (*Log, error) {
	l, err := openEtcdEmpty(dsn, opts)
	if err != nil {
		return nil, err
	}
	if err := fill(l); err != nil {
		l.be.(*etcdBackend).deletePrefix()
		l.Close()
		return nil, err
	}
	return l, nil
}
