package shares

import (
	"crypto/ecdh"
	"crypto/rand"
	"testing"
)

// BenchmarkSplitSeal8: one enrolment's cryptography for n = 8 (k = 5):
// split a recovery key and seal each share to its card's key.
func BenchmarkSplitSeal8(b *testing.B) {
	keys := make([]*ecdh.PublicKey, 8)
	for i := range keys {
		k, _ := ecdh.P256().GenerateKey(rand.Reader)
		keys[i] = k.PublicKey()
	}
	secret, _ := NewRecoveryKey()
	var vol VolumeID
	b.ReportAllocs()
	for b.Loop() {
		_, sh, err := Split(NewCeremonyID(), vol, secret, 5, 8)
		if err != nil {
			b.Fatal(err)
		}
		for i, s := range sh {
			if _, err := Seal(s, keys[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkOpenCombine5: one recovery's cryptography for k = 5: open five
// sealed shares (the ECDH done in software here, on the card in real use)
// and combine them.
func BenchmarkOpenCombine5(b *testing.B) {
	secret, _ := NewRecoveryKey()
	var vol VolumeID
	c, sh, _ := Split(NewCeremonyID(), vol, secret, 5, 8)
	privs := make([]*ecdh.PrivateKey, 5)
	sealed := make([]*SealedShare, 5)
	for i := range sealed {
		privs[i], _ = ecdh.P256().GenerateKey(rand.Reader)
		sealed[i], _ = Seal(sh[i], privs[i].PublicKey())
	}
	b.ReportAllocs()
	for b.Loop() {
		opened := make([]*Share, 5)
		for i, s := range sealed {
			o, err := Open(s, privs[i].PublicKey(), privs[i].ECDH)
			if err != nil {
				b.Fatal(err)
			}
			opened[i] = o
		}
		if _, _, err := c.Combine(opened); err != nil {
			b.Fatal(err)
		}
	}
}
