package main

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// TestTune: one P and GOGC=400 unless the environment says otherwise.
func TestTune(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	gc := debug.SetGCPercent(100)
	t.Cleanup(func() {
		runtime.GOMAXPROCS(procs)
		debug.SetGCPercent(gc)
	})

	t.Setenv("GOMAXPROCS", "")
	t.Setenv("GOGC", "")
	runtime.GOMAXPROCS(2)
	debug.SetGCPercent(100)
	tune()
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("GOMAXPROCS = %d after tune, want 1", n)
	}
	if p := debug.SetGCPercent(100); p != 400 {
		t.Errorf("GOGC = %d after tune, want 400", p)
	}

	t.Setenv("GOMAXPROCS", "2")
	t.Setenv("GOGC", "100")
	runtime.GOMAXPROCS(2)
	debug.SetGCPercent(100)
	tune()
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Errorf("GOMAXPROCS = %d after tune with GOMAXPROCS=2 set, want 2", n)
	}
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GOGC = %d after tune with GOGC=100 set, want 100", p)
	}
}
