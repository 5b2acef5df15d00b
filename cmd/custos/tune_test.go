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

// TestTuneForLogPass: a pass over the whole log gets the default
// processors and GOGC back from tune, unless the environment says
// otherwise.
func TestTuneForLogPass(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	gc := debug.SetGCPercent(100)
	t.Cleanup(func() {
		runtime.GOMAXPROCS(procs)
		debug.SetGCPercent(gc)
	})
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)

	t.Setenv("GOMAXPROCS", "")
	t.Setenv("GOGC", "")
	tune()
	tuneForLogPass()
	if n := runtime.GOMAXPROCS(0); n != def {
		t.Errorf("GOMAXPROCS = %d after tuneForLogPass, want the default %d", n, def)
	}
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GOGC = %d after tuneForLogPass, want 100", p)
	}

	t.Setenv("GOMAXPROCS", "1")
	t.Setenv("GOGC", "300")
	runtime.GOMAXPROCS(1)
	debug.SetGCPercent(300)
	tuneForLogPass()
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("GOMAXPROCS = %d after tuneForLogPass with GOMAXPROCS=1 set, want 1", n)
	}
	if p := debug.SetGCPercent(100); p != 300 {
		t.Errorf("GOGC = %d after tuneForLogPass with GOGC=300 set, want 300", p)
	}
}
