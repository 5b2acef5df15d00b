package luks

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// killRaw wipes keyslot slot with cryptsetup directly, outside the timer.
func killRaw(b *testing.B, v *Volume, slot int) {
	b.Helper()
	cryptsetup(b, v, keyA, "luksKillSlot", "--batch-mode", "--key-file=-", v.Path, strconv.Itoa(slot))
}

// BenchmarkAddKeyslot is AddKeyslot with cheap pbkdf2 on LUKS2: the header
// read before, luksAddKey, the header read after. Compare with
// BenchmarkCryptsetupLuksAddKey for the package's overhead.
func BenchmarkAddKeyslot(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	ctx := context.Background()
	for b.Loop() {
		slot, err := v.AddKeyslot(ctx, keyA, keyB, AddOptions{PBKDF: cheap})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		killRaw(b, v, slot)
		b.StartTimer()
	}
}

// BenchmarkCryptsetupLuksAddKey is one bare cryptsetup luksAddKey with the
// same settings and the keys on the same kind of pipes (addRaw).
func BenchmarkCryptsetupLuksAddKey(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	for b.Loop() {
		addRaw(b, v, keyA, keyB)
		b.StopTimer()
		killRaw(b, v, 1)
		b.StartTimer()
	}
}

// BenchmarkInspect is one header read. Compare with
// BenchmarkCryptsetupLuksDumpJSON, the one cryptsetup run a LUKS2 header
// read needs at the least.
func BenchmarkInspect(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	ctx := context.Background()
	for b.Loop() {
		if _, err := v.Inspect(ctx); err != nil {
			b.Fatal(err)
		}
	}
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
	for b.Loop() {
		runPiped(b, v, nil, "luksDump", "--dump-json-metadata", v.Path)
	}
}

func BenchmarkKillKeyslot(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		addRaw(b, v, keyA, keyB)
		b.StartTimer()
		if err := v.KillKeyslot(ctx, 1, 0, keyA); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCryptsetupLuksKillSlot(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	for b.Loop() {
		b.StopTimer()
		addRaw(b, v, keyA, keyB)
		b.StartTimer()
		runPiped(b, v, [][]byte{keyA}, "luksKillSlot", "--batch-mode", "--key-file=/dev/fd/3", v.Path, "1")
	}
}

var benchToken = []byte(`{"type":"custos","keyslots":["0"],"record":{"v":2},"anchor":"1:00"}`)

func BenchmarkImportToken(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	ctx := context.Background()
	for b.Loop() {
		id, err := v.ImportToken(ctx, benchToken, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cryptsetup(b, v, nil, "token", "remove", "--token-id="+strconv.Itoa(id), v.Path)
		b.StartTimer()
	}
}

func BenchmarkCryptsetupTokenImport(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	for b.Loop() {
		runPiped(b, v, [][]byte{benchToken}, "token", "import", "--json-file=/dev/fd/3", "--token-id=0", v.Path)
		b.StopTimer()
		cryptsetup(b, v, nil, "token", "remove", "--token-id=0", v.Path)
		b.StartTimer()
	}
}

// BenchmarkRecoverStep is what escrow's recover does with the volume once
// the key is gathered: read the header, test the key, add a keyslot.
func BenchmarkRecoverStep(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	ctx := context.Background()
	for b.Loop() {
		if _, err := v.Inspect(ctx); err != nil {
			b.Fatal(err)
		}
		if err := v.TestKey(ctx, keyA, 0); err != nil {
			b.Fatal(err)
		}
		slot, err := v.AddKeyslot(ctx, keyA, keyB, AddOptions{PBKDF: cheap})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		killRaw(b, v, slot)
		b.StartTimer()
	}
}

// BenchmarkRecoverStepCostlyKeyslot0 is the recover step where keyslot 0
// holds a person's passphrase behind a costlier PBKDF (pbkdf2, 200000
// iterations, standing in for argon2id at 2 s) and the recovery key is in
// keyslot 1: every run that tries the key on all keyslots pays keyslot 0's
// PBKDF first.
func BenchmarkRecoverStepCostlyKeyslot0(b *testing.B) {
	v := format(b, 2, keyC, 200_000)
	addRaw(b, v, keyC, keyA)
	ctx := context.Background()
	for b.Loop() {
		if _, err := v.Inspect(ctx); err != nil {
			b.Fatal(err)
		}
		if err := v.TestKey(ctx, keyA, 1); err != nil {
			b.Fatal(err)
		}
		slot, err := v.AddKeyslot(ctx, keyA, keyB, AddOptions{PBKDF: cheap})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		killRaw(b, v, slot)
		b.StartTimer()
	}
}

func BenchmarkCryptsetupLuksAddKeyCostlyKeyslot0(b *testing.B) {
	v := format(b, 2, keyC, 200_000)
	addRaw(b, v, keyC, keyA)
	for b.Loop() {
		addRaw(b, v, keyA, keyB)
		b.StopTimer()
		killRaw(b, v, 2)
		b.StartTimer()
	}
}
