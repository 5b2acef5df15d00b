package shares

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/hashicorp/vault/shamir"
)

// Commitment binds one share: SHA-256 over a domain label, the ceremony ID,
// the share's index and its value (docs/FORMAT.md). It is public.
type Commitment [32]byte

// Digest binds the secret: HMAC-SHA256 keyed by the secret over a domain
// label and the ceremony ID (docs/FORMAT.md). It is public, and tells
// whether a reconstructed secret is the one that was split.
type Digest [32]byte

func (c Commitment) String() string { return hex.EncodeToString(c[:]) }

// MarshalText implements encoding.TextMarshaler (64 hex digits).
func (c Commitment) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (c *Commitment) UnmarshalText(b []byte) error { return unhex32((*[32]byte)(c), b, "commitment") }

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// MarshalText implements encoding.TextMarshaler (64 hex digits).
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Digest) UnmarshalText(b []byte) error { return unhex32((*[32]byte)(d), b, "digest") }

func unhex32(dst *[32]byte, b []byte, what string) error {
	if len(b) != 64 {
		return fmt.Errorf("%s: want 64 hex digits: %w", what, ErrOutOfRange)
	}
	if _, err := hex.Decode(dst[:], b); err != nil {
		return fmt.Errorf("%s: not hex", what)
	}
	return nil
}

const (
	commitmentLabel = "custos share commitment v1\x00"
	digestLabel     = "custos secret digest v1\x00"
)

// Commit computes the commitment of one share.
func Commit(ceremony CeremonyID, index int, value []byte) Commitment {
	h := sha256.New()
	h.Write([]byte(commitmentLabel))
	h.Write(ceremony[:])
	h.Write([]byte{byte(index)})
	h.Write(value)
	var c Commitment
	h.Sum(c[:0])
	return c
}

// DigestOf computes the digest of a secret for a ceremony.
func DigestOf(ceremony CeremonyID, secret []byte) Digest {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(digestLabel))
	m.Write(ceremony[:])
	var d Digest
	m.Sum(d[:0])
	return d
}

// Ceremony is the public record of one split: enough to check each share
// on its own, and the secret after combining, without holding any secret.
// It goes into the LUKS2 token, the cards' certificates and the log.
type Ceremony struct {
	ID          CeremonyID   `json:"id"`
	Volume      VolumeID     `json:"volume"`
	K           int          `json:"k"`
	N           int          `json:"n"`
	Commitments []Commitment `json:"commitments"` // Commitments[i] is share i+1's
	Digest      Digest       `json:"digest"`
	SecretSize  int          `json:"secret_size"`
}

// Split splits secret into n shares, any k of which reconstruct it, for a
// ceremony on a volume. The randomness comes from crypto/rand (through
// hashicorp/vault/shamir). Share i (1-based) is returned at position i-1;
// the caller wipes the shares when done.
func Split(id CeremonyID, volume VolumeID, secret []byte, k, n int) (*Ceremony, []*Share, error) {
	if k < 2 || k > 255 {
		return nil, nil, fmt.Errorf("split: threshold k = %d: want 2..255: %w", k, ErrOutOfRange)
	}
	if n < k || n > 255 {
		return nil, nil, fmt.Errorf("split: count n = %d: want %d..255: %w", n, k, ErrOutOfRange)
	}
	if len(secret) < 1 || len(secret) > maxValueSize-1 {
		return nil, nil, fmt.Errorf("split: secret of %d bytes: want 1..%d: %w", len(secret), maxValueSize-1, ErrOutOfRange)
	}
	parts, err := shamir.Split(secret, n, k)
	if err != nil {
		return nil, nil, fmt.Errorf("split: %w", err)
	}
	c := &Ceremony{ID: id, Volume: volume, K: k, N: n, Digest: DigestOf(id, secret), SecretSize: len(secret)}
	out := make([]*Share, n)
	for i, p := range parts {
		s := &Share{Header: Header{Ceremony: id, Volume: volume, Index: i + 1, K: k, N: n}, Value: p}
		c.Commitments = append(c.Commitments, Commit(id, s.Index, p))
		out[i] = s
	}
	return c, out, nil
}

// Check tells whether one share belongs to this ceremony and matches its
// commitment, without any other share. It is what a rollcall runs.
func (c *Ceremony) Check(s *Share) error {
	if s == nil {
		return fmt.Errorf("no share: %w", ErrTruncated)
	}
	if s.Ceremony != c.ID || s.Volume != c.Volume || s.K != c.K || s.N != c.N {
		return ErrForeignShare
	}
	if s.Index < 1 || s.Index > c.N || len(c.Commitments) != c.N {
		return fmt.Errorf("index %d of %d (%d commitments): %w", s.Index, c.N, len(c.Commitments), ErrOutOfRange)
	}
	if len(s.Value) != c.SecretSize+1 {
		return fmt.Errorf("value of %d bytes, want %d: %w", len(s.Value), c.SecretSize+1, ErrCommitmentMismatch)
	}
	if s.Value[len(s.Value)-1] == 0 {
		return ErrForgedShare
	}
	want := c.Commitments[s.Index-1]
	got := Commit(c.ID, s.Index, s.Value)
	if subtle.ConstantTimeCompare(want[:], got[:]) != 1 {
		return ErrCommitmentMismatch
	}
	return nil
}

// maxSubsets bounds the search for a consistent k-subset when the shares
// that passed their commitments do not all agree (only possible when a
// commitment itself was forged).
const maxSubsets = 1 << 14

// Combine reconstructs the secret from shares. Every share is first checked
// on its own (Check); bad ones — another ceremony, a duplicate index or x
// coordinate, x = 0, bytes not matching their commitment — are set aside
// and named in the returned rejections. With k or more good shares the
// secret is reconstructed and checked against the ceremony's digest; a good
// share that does not lie on the quorum's polynomial is set aside too.
//
// With fewer than k good shares Combine returns a *QuorumError; when no k of
// them reproduce the digest it returns ErrDigestMismatch. It never returns a
// secret that does not match the digest. The caller wipes the secret.
func (c *Ceremony) Combine(shares []*Share) ([]byte, []Rejection, error) {
	var rejected []Rejection
	var good []int // positions in shares
	seenIndex := map[int]bool{}
	for pos, s := range shares {
		idx := 0
		if s != nil {
			idx = s.Index
		}
		if err := c.Check(s); err != nil {
			rejected = append(rejected, Rejection{Position: pos, Index: idx, Err: err})
			continue
		}
		// Two shares that pass their commitments under one index are the
		// same share. Two under different indexes may still share an x
		// coordinate when one of them (and its commitment) is forged; both
		// stay candidates, a subset holding both cannot combine, and the
		// one off the polynomial is set aside below. Rejecting the later
		// one here would let a forger knock out an honest share by copying
		// its x.
		if seenIndex[s.Index] {
			rejected = append(rejected, Rejection{Position: pos, Index: idx, Err: ErrDuplicateShare})
			continue
		}
		seenIndex[s.Index] = true
		good = append(good, pos)
	}
	if len(good) < c.K {
		return nil, rejected, &QuorumError{Good: len(good), Need: c.K, Rejected: rejected}
	}

	subset := make([]int, c.K) // indexes into good
	for i := range subset {
		subset[i] = i
	}
	for try := 0; try < maxSubsets; try++ {
		secret, ok := c.combineChecked(shares, good, subset)
		if ok {
			rejected = c.setAsideOffCurve(shares, good, subset, secret, rejected)
			slices.SortFunc(rejected, func(a, b Rejection) int { return a.Position - b.Position })
			return secret, rejected, nil
		}
		if !nextSubset(subset, len(good)) {
			break
		}
	}
	return nil, rejected, fmt.Errorf("combine %d shares: %w", len(good), ErrDigestMismatch)
}

// combineChecked combines the shares at good[subset[...]] and reports
// whether the result matches the digest; a mismatch is wiped.
func (c *Ceremony) combineChecked(shares []*Share, good, subset []int) ([]byte, bool) {
	parts := make([][]byte, len(subset))
	for i, j := range subset {
		parts[i] = shares[good[j]].Value
	}
	secret, err := shamir.Combine(parts)
	if err != nil {
		return nil, false
	}
	d := DigestOf(c.ID, secret)
	if subtle.ConstantTimeCompare(d[:], c.Digest[:]) != 1 {
		Wipe(secret)
		return nil, false
	}
	return secret, true
}

// setAsideOffCurve checks every good share outside the winning subset by
// swapping it in for one member: a share on the polynomial reproduces the
// secret, any other is set aside.
func (c *Ceremony) setAsideOffCurve(shares []*Share, good, subset []int, secret []byte, rejected []Rejection) []Rejection {
	in := map[int]bool{}
	for _, j := range subset {
		in[j] = true
	}
	for j := range good {
		if in[j] {
			continue
		}
		trial := append([]int{j}, subset[1:]...)
		other, ok := c.combineChecked(shares, good, trial)
		Wipe(other)
		if !ok {
			s := shares[good[j]]
			rejected = append(rejected, Rejection{Position: good[j], Index: s.Index, Err: ErrInconsistentShare})
		}
	}
	return rejected
}

// nextSubset advances subset to the next k-combination of 0..n-1 in
// lexicographic order, and reports false after the last.
func nextSubset(subset []int, n int) bool {
	k := len(subset)
	i := k - 1
	for i >= 0 && subset[i] == n-k+i {
		i--
	}
	if i < 0 {
		return false
	}
	subset[i]++
	for j := i + 1; j < k; j++ {
		subset[j] = subset[j-1] + 1
	}
	return true
}
