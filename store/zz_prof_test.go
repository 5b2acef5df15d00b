package store

import (
	"os"
	"testing"
	"time"
)

func TestZZProf(t *testing.T) {
	path := os.Getenv("ZZ_PATH")
	if path == "" {
		t.Skip()
	}
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.view(func(r kvRead) error {
		st := time.Now()
		v := newStreamVerifier(r)
		t.Log("walk", v.walk(), time.Since(st))
		st = time.Now()
		t.Log("stored", v.checkStored(), time.Since(st))
		st = time.Now()
		t.Log("check", l.be.check(r), time.Since(st))
		return nil
	})
}
