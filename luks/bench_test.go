package luks

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// The benchmarks set against each operation a bare cryptsetup run doing
// the same, on the same kind of volume (LUKS2, cheap pbkdf2), in the same
// run: BenchmarkX against BenchmarkCryptsetupY. Each package benchmark
// also reports its cryptsetup runs per operation (runs/op), counted in one
// extra, untimed operation through the counting wrapper of runs_test.go.

// killRaw wipes keyslot slot with cryptsetup directly, outside the timer
// (batch mode without a key: no PBKDF).
func killRaw(b testing.TB, v *Volume, slot int) {
	b.Helper()
	cryptsetup(b, v, nil, "luksKillSlot", "--batch-mode", v.Path, strconv.Itoa(slot))
}

// benchOp is one operation to time: setup, untimed, brings the volume to
// the state the operation starts from and returns the header a ceremony
// step would have read; op is timed.
type benchOp struct {
	setup func(b *testing.B, v *Volume) *Header
	op    func(b *testing.B, v *Volume, h *Header)
}

func (o benchOp) run(b *testing.B, v *Volume) {
	c := countRuns(b, v)
	h := o.setup(b, c.v)
	c.take(b)
	o.op(b, c.v, h)
	runs := len(c.take(b))
	for b.Loop() {
		b.StopTimer()
		h := o.setup(b, v)
		b.StartTimer()
		o.op(b, v, h)
	}
	b.ReportMetric(float64(runs), "runs/op")
}

// bare times a bare cryptsetup run, setup untimed.
func bare(b *testing.B, v *Volume, setup func(), run func()) {
	for b.Loop() {
		b.StopTimer()
		setup()
		b.StartTimer()
		run()
	}
	b.ReportMetric(1, "runs/op")
}

// freeSlot kills keyslot slot if it is in use and returns the header.
func freeSlot(b *testing.B, v *Volume, slot int) *Header {
	h := inspect(b, v)
	if h.InUse(slot) {
		killRaw(b, v, slot)
		h = inspect(b, v)
	}
	return h
}

// BenchmarkAddKeyslot is AddKeyslot on the header of the step: luksAddKey,
// then the header read after. Compare with BenchmarkCryptsetupLuksAddKey.
func BenchmarkAddKeyslot(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	benchOp{
		setup: func(b *testing.B, v *Volume) *Header { return freeSlot(b, v, 1) },
		op: func(b *testing.B, v *Volume, h *Header) {
			if _, _, err := v.AddKeyslot(context.Background(), h, keyA, keyB, AddOptions{PBKDF: cheap}); err != nil {
				b.Fatal(err)
			}
		},
	}.run(b, v)
}

// BenchmarkCryptsetupLuksAddKey is one bare cryptsetup luksAddKey with the
// same settings and the keys on the same kind of pipes (addRaw).
func BenchmarkCryptsetupLuksAddKey(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	bare(b, v, func() { freeSlot(b, v, 1) }, func() { addRaw(b, v, keyA, keyB) })
}

// BenchmarkInspect is one header read. Compare with
// BenchmarkCryptsetupLuksDumpJSON, the one cryptsetup run a LUKS2 header
// read needs at the least.
func BenchmarkInspect(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	benchOp{
		setup: func(b *testing.B, v *Volume) *Header { return nil },
		op: func(b *testing.B, v *Volume, _ *Header) {
			if _, err := v.Inspect(context.Background()); err != nil {
				b.Fatal(err)
			}
		},
	}.run(b, v)
}

// runPiped runs cryptsetup directly with inputs on descriptors 3, 4, ...
func runPiped(b testing.TB, v *Volume, inputs [][]byte, args ...string) {
	b.Helper()
	cmd := exec.Command(v.Cryptsetup, args...)
	cmd.Env = childEnv
	var ws []*os.File
	for range inputs {
		r, w, _ := os.Pipe()
		cmd.ExtraFiles = append(cmd.ExtraFiles, r)
		ws = append(ws, w)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	for _, r := range cmd.ExtraFiles {
		r.Close()
	}
	for i, w := range ws {
		go func() { w.Write(inputs[i]); w.Close() }()
	}
	if err := cmd.Wait(); err != nil {
		b.Fatalf("cryptsetup %v: %v: %s", args, err, stderr.Bytes())
	}
}

func BenchmarkCryptsetupLuksDumpJSON(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	bare(b, v, func() {}, func() { runPiped(b, v, nil, "luksDump", "--dump-json-metadata", v.Path) })
}

// BenchmarkKillKeyslot is KillKeyslot on the header of the step: TestKey
// on the keyslot kept, luksKillSlot, the header read after. Compare with
// BenchmarkCryptsetupLuksKillSlot, which checks the key itself.
func BenchmarkKillKeyslot(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	benchOp{
		setup: func(b *testing.B, v *Volume) *Header {
			if h := inspect(b, v); !h.InUse(1) {
				addRaw(b, v, keyA, keyB)
			}
			return inspect(b, v)
		},
		op: func(b *testing.B, v *Volume, h *Header) {
			if _, err := v.KillKeyslot(context.Background(), h, 1, 0, keyA); err != nil {
				b.Fatal(err)
			}
		},
	}.run(b, v)
}

func BenchmarkCryptsetupLuksKillSlot(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	bare(b, v, func() { addRaw(b, v, keyA, keyB) }, func() {
		runPiped(b, v, [][]byte{keyA}, "luksKillSlot", "--batch-mode", "--key-file=/dev/fd/3", v.Path, "1")
	})
}

var benchToken = []byte(`{"type":"custos","keyslots":["0"],"record":{"v":2},"anchor":"1:00"}`)

// BenchmarkImportToken is ImportToken on the header of the step: one token
// import. Compare with BenchmarkCryptsetupTokenImport.
func BenchmarkImportToken(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	benchOp{
		setup: func(b *testing.B, v *Volume) *Header {
			h := inspect(b, v)
			if h.Token(0) != nil {
				cryptsetup(b, v, nil, "token", "remove", "--token-id=0", v.Path)
				h = inspect(b, v)
			}
			return h
		},
		op: func(b *testing.B, v *Volume, h *Header) {
			if _, _, err := v.ImportToken(context.Background(), h, benchToken, 0); err != nil {
				b.Fatal(err)
			}
		},
	}.run(b, v)
}

func BenchmarkCryptsetupTokenImport(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	bare(b, v, func() {
		if inspect(b, v).Token(0) != nil {
			cryptsetup(b, v, nil, "token", "remove", "--token-id=0", v.Path)
		}
	}, func() {
		runPiped(b, v, [][]byte{benchToken}, "token", "import", "--json-file=/dev/fd/3", "--token-id=0", v.Path)
	})
}

// recoverStep is what escrow's recover does with the volume once the key
// is gathered: read the header, add a keyslot with the recovered key,
// which is tested on the ceremony's keyslot only.
func recoverStep(b *testing.B, v *Volume, key []byte, keyslot int) {
	ctx := context.Background()
	h, err := v.Inspect(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := v.AddKeyslot(ctx, h, key, keyB, AddOptions{PBKDF: cheap, AuthSlot: &keyslot}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRecoverStep: compare with BenchmarkCryptsetupLuksAddKey.
func BenchmarkRecoverStep(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	benchOp{
		setup: func(b *testing.B, v *Volume) *Header { freeSlot(b, v, 1); return nil },
		op:    func(b *testing.B, v *Volume, _ *Header) { recoverStep(b, v, keyA, 0) },
	}.run(b, v)
}

// BenchmarkRecoverStepCostlyKeyslot0 is the recover step where keyslot 0
// holds a person's passphrase behind a costlier PBKDF (pbkdf2, 200000
// iterations, standing in for argon2id at 2 s) and the recovery key is in
// keyslot 1: a run that tries the key on every keyslot in turn pays
// keyslot 0's PBKDF first, as the bare luksAddKey of
// BenchmarkCryptsetupLuksAddKeyCostlyKeyslot0 does.
func BenchmarkRecoverStepCostlyKeyslot0(b *testing.B) {
	v := format(b, 2, keyC, 200_000)
	addRaw(b, v, keyC, keyA)
	benchOp{
		setup: func(b *testing.B, v *Volume) *Header { freeSlot(b, v, 2); return nil },
		op:    func(b *testing.B, v *Volume, _ *Header) { recoverStep(b, v, keyA, 1) },
	}.run(b, v)
}

func BenchmarkCryptsetupLuksAddKeyCostlyKeyslot0(b *testing.B) {
	v := format(b, 2, keyC, 200_000)
	addRaw(b, v, keyC, keyA)
	bare(b, v, func() { freeSlot(b, v, 2) }, func() { addRaw(b, v, keyA, keyB) })
}
