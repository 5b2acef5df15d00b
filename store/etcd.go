package store

import (
	"math/rand/v2"
	"strings"
	"time"
)

// EtcdScheme starts a log name that names an etcd cluster.
const EtcdScheme = "etcd://"

// IsEtcd reports whether dsn names an etcd cluster rather than a file.
func IsEtcd(dsn string) bool { return strings.HasPrefix(dsn, EtcdScheme) }

// backoff waits a little before attempt+1, more after each lost race, with
// jitter so that appenders that lost together do not collide again.
func backoff(attempt int) {
	d := time.Duration(1<<min(attempt, 6)) * time.Millisecond
	time.Sleep(d/2 + rand.N(d))
}

func openEtcdLog(dsn string, opts *Options, now func() time.Time) (*Log, error) {
	return nil, ErrUnavailable
}
