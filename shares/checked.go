package shares

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
)

// SealChecked is Seal followed by the proof that the result opens: the
// ephemeral side of the same key agreement (z = e·R, the z the recipient
// computes as r·E) opens the sealed share again through Open — the
// recipient's fingerprint, the ephemeral key read back, the derived key,
// the associated data and the ciphertext — which must give back the
// share's header and value. It proves, without the
// recipient's private key, that the header, fingerprint, ephemeral key and
// ciphertext are what that key opens to this share: the check a fleet
// enrollment, sealing to the keys of cards that are not present, makes
// before it relies on the shares. A failure is ErrUnsealFailed.
func SealChecked(s *Share, recipient *ecdh.PublicKey) (*SealedShare, error) {
	eph, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("seal share %d: %w", s.Index, err)
	}
	fp, err := sealable(s, recipient)
	if err != nil {
		return nil, err
	}
	// One key agreement serves both sides: e·R is the z the recipient
	// computes as r·E.
	shared, err := eph.ECDH(recipient)
	if err != nil {
		return nil, fmt.Errorf("seal share %d: %w", s.Index, err)
	}
	defer Wipe(shared)
	out, err := sealShared(s, recipient, fp, eph, shared)
	if err != nil {
		return nil, err
	}
	back, err := Open(out, recipient, func(e *ecdh.PublicKey) ([]byte, error) {
		if !e.Equal(eph.PublicKey()) {
			return nil, fmt.Errorf("the sealed share carries another ephemeral key: %w", ErrUnsealFailed)
		}
		return append([]byte(nil), shared...), nil
	})
	if err != nil {
		return nil, fmt.Errorf("check sealed share %d: %w", s.Index, err)
	}
	defer back.Wipe()
	if back.Header != s.Header || subtle.ConstantTimeCompare(back.Value, s.Value) != 1 {
		return nil, fmt.Errorf("check sealed share %d: it opens to another share: %w", s.Index, ErrUnsealFailed)
	}
	return out, nil
}
