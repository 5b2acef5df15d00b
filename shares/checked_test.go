package shares

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"testing"
)

// SealChecked's result opens with the recipient's private key to the
// share sealed, as Seal's does; a recipient off the curve is refused.
func TestSealChecked(t *testing.T) {
	secret := make([]byte, 32)
	rand.Read(secret)
	_, shs, err := Split(NewCeremonyID(), VolumeID{1}, secret, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range shs {
		sealed, err := SealChecked(sh, r.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		back, err := Open(sealed, r.PublicKey(), func(e *ecdh.PublicKey) ([]byte, error) { return r.ECDH(e) })
		if err != nil {
			t.Fatal(err)
		}
		if back.Header != sh.Header || !bytes.Equal(back.Value, sh.Value) {
			t.Fatalf("share %d opens to another share", sh.Index)
		}
	}
	x, _ := ecdh.X25519().GenerateKey(rand.Reader)
	if _, err := SealChecked(shs[0], x.PublicKey()); err == nil {
		t.Fatal("sealed to an X25519 key")
	}
	bad := *shs[0]
	bad.Index = 0
	if _, err := SealChecked(&bad, r.PublicKey()); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("share 0: %v", err)
	}
}
