package luks

import (
	"context"
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

// BenchmarkInspect is one header read (two luksDump runs for LUKS2).
func BenchmarkInspect(b *testing.B) {
	v := format(b, 2, keyA, 1000)
	ctx := context.Background()
	for b.Loop() {
		if _, err := v.Inspect(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
