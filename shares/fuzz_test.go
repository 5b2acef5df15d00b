package shares

import (
	"bytes"
	"testing"
)

// FuzzParseShare: decoding never panics, and whatever decodes re-encodes
// to the same bytes.
func FuzzParseShare(f *testing.F) {
	for _, s := range loadVectors(f).Shares {
		f.Add([]byte(s.Envelope))
	}
	f.Add([]byte("CSH\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseShare(b)
		if err != nil {
			if s != nil {
				t.Fatal("share and error")
			}
			return
		}
		out, err := s.MarshalBinary()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("parse→marshal: %x → %x, %v", b, out, err)
		}
	})
}

// FuzzParseSealedShare: decoding never panics, round-trips, and a decoded
// sealed share never opens with the vector's key unless it is the vector.
func FuzzParseSealedShare(f *testing.F) {
	v := loadVectors(f)
	for _, s := range v.Sealed {
		f.Add([]byte(s.Sealed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSealedShare(b)
		if err != nil {
			return
		}
		out, err := s.MarshalBinary()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("parse→marshal: %x → %x, %v", b, out, err)
		}
	})
}

// FuzzParseRecoveryKey: never panics; anything accepted re-encodes to a
// canonical text that parses to the same key.
func FuzzParseRecoveryKey(f *testing.F) {
	for _, rk := range loadVectors(f).RecoveryKeys {
		f.Add([]byte(rk.Text))
		f.Add(bytes.ToUpper([]byte(rk.Text)))
	}
	f.Add([]byte("cccccccc"))
	f.Fuzz(func(t *testing.T, b []byte) {
		key, err := ParseRecoveryKey(b)
		if err != nil {
			return
		}
		again, err := ParseRecoveryKey(EncodeRecoveryKey(key))
		if err != nil || !bytes.Equal(again, key) {
			t.Fatalf("re-encode of %q: %v", b, err)
		}
	})
}
