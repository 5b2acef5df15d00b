package escrow

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"custos.dev/custos/luks"
	"custos.dev/custos/store"
)

// The benchmarks run the ceremonies on the real stack with cheap PBKDF
// settings (pbkdf2, 1000 iterations), beside one bare cryptsetup luksAddKey
// with the same settings on a copy of the same image: the ratio is
// custos's cost over the floor cryptsetup sets. Card insertions are
// scripted, so no human time is counted; the virtual cards' APDUs through
// pcscd are.
//
//	go test ./escrow -run '^$' -bench . -benchtime 3x
//
// On the 2-CPU development machine (virtual cards, -benchtime 2x): Enroll
// n=5 15.1 s, Recover k=3 2.0 s, bare luksAddKey 38 ms: recover costs
// about 54 bare luksAddKeys, nearly all of it the cards.

// BenchmarkRealEnroll5 enrolls 3-of-5 on a fresh copy of an image, with a
// fresh log each time.
func BenchmarkRealEnroll5(b *testing.B) {
	r := newRealRig(b, 2, 5)
	master := r.vol.Path
	dir := b.TempDir()
	for b.Loop() {
		b.StopTimer()
		r.vol = &luks.Volume{Path: copyFile(b, master, dir), Cryptsetup: r.vol.Cryptsetup}
		r.env.Volume = r.vol
		r.log.Close()
		r.dbPath = filepath.Join(dir, "bench.db")
		os.Remove(r.dbPath)
		l, err := store.Open(r.dbPath, nil)
		if err != nil {
			b.Fatal(err)
		}
		r.log, r.env.Log = l, l
		b.StartTimer()
		r.enroll(3, 5)
		b.StopTimer()
		os.Remove(r.vol.Path)
		b.StartTimer()
	}
}

// BenchmarkRealRecover3 recovers a 3-of-5 ceremony with 3 cards on a fresh
// copy of the enrolled image: combine, prove the key, add a keyslot for
// the new passphrase, log it.
func BenchmarkRealRecover3(b *testing.B) {
	r := newRealRig(b, 2, 5)
	r.enroll(3, 5)
	master := r.vol.Path
	dir := b.TempDir()
	for b.Loop() {
		b.StopTimer()
		r.vol = &luks.Volume{Path: copyFile(b, master, dir), Cryptsetup: r.vol.Cryptsetup}
		r.env.Volume = r.vol
		b.StartTimer()
		if _, err := r.recover("bench passphrase", 0, 2, 4); err != nil {
			b.Fatalf("recover: %v", err)
		}
		b.StopTimer()
		os.Remove(r.vol.Path)
		b.StartTimer()
	}
}

// BenchmarkBareLuksAddKey is the floor: one cryptsetup luksAddKey with the
// same PBKDF settings as the recovered keyslot, on a copy of the same kind
// of image.
func BenchmarkBareLuksAddKey(b *testing.B) {
	master := formatImage(b, 2, []byte(operatorKey))
	dir := b.TempDir()
	for b.Loop() {
		b.StopTimer()
		v := &luks.Volume{Path: copyFile(b, master.Path, dir), Cryptsetup: master.Cryptsetup}
		b.StartTimer()
		bareAddKey(b, v, []byte(operatorKey), []byte("bench passphrase"), cheapPBKDF)
		b.StopTimer()
		os.Remove(v.Path)
		b.StartTimer()
	}
}

// bareAddKey runs cryptsetup luksAddKey with both keys on pipes.
func bareAddKey(b testing.TB, v *luks.Volume, auth, newKey []byte, p *luks.PBKDF) {
	b.Helper()
	ar, aw, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	nr, nw, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(v.Cryptsetup, "luksAddKey", "--batch-mode", "--pbkdf="+p.Type, "--hash="+p.Hash,
		"--pbkdf-force-iterations=1000", "--key-file=/dev/fd/3", v.Path, "/dev/fd/4")
	cmd.ExtraFiles = []*os.File{ar, nr}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	ar.Close()
	nr.Close()
	aw.Write(auth)
	aw.Close()
	nw.Write(newKey)
	nw.Close()
	if err := cmd.Wait(); err != nil {
		b.Fatalf("luksAddKey: %v: %s", err, stderr.Bytes())
	}
}
