package shares

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"testing"

	"github.com/hashicorp/vault/shamir"
)

func testCeremony(t testing.TB, k, n int) (*Ceremony, []*Share, []byte) {
	t.Helper()
	key, err := NewRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	vol, _ := ParseVolumeID("0b5f3f0e-5d7a-4c52-9e55-37a3c2a1f001")
	c, s, err := Split(NewCeremonyID(), vol, key, k, n)
	if err != nil {
		t.Fatal(err)
	}
	return c, s, key
}

func TestSplitCombineEverySubset(t *testing.T) {
	c, all, key := testCeremony(t, 3, 5)
	for mask := 1; mask < 1<<5; mask++ {
		var sub []*Share
		for i := range all {
			if mask&(1<<i) != 0 {
				sub = append(sub, all[i])
			}
		}
		secret, rejected, err := c.Combine(sub)
		if len(sub) < 3 {
			var qe *QuorumError
			if !errors.As(err, &qe) || qe.Good != len(sub) || qe.Need != 3 {
				t.Fatalf("subset %05b: want QuorumError{Good: %d, Need: 3}, got %v", mask, len(sub), err)
			}
			if secret != nil {
				t.Fatalf("subset %05b: a secret from %d shares", mask, len(sub))
			}
			// Vault alone returns a wrong secret without error.
			if len(sub) == 2 {
				parts := [][]byte{sub[0].Value, sub[1].Value}
				wrong, err := shamir.Combine(parts)
				if err != nil || bytes.Equal(wrong, key) {
					t.Fatalf("subset %05b: vault gave %v, err %v", mask, wrong, err)
				}
			}
			continue
		}
		if err != nil || len(rejected) != 0 {
			t.Fatalf("subset %05b: err %v, rejected %v", mask, err, rejected)
		}
		if !bytes.Equal(secret, key) {
			t.Fatalf("subset %05b: wrong secret", mask)
		}
	}
}

func clone(s *Share) *Share {
	c := *s
	c.Value = append([]byte(nil), s.Value...)
	return &c
}

func TestCombineSetsAsideBadShares(t *testing.T) {
	c, all, key := testCeremony(t, 3, 5)
	other, otherShares, _ := testCeremony(t, 3, 5)
	_ = other

	tampered := clone(all[1])
	tampered.Value[7] ^= 0x40
	foreign := otherShares[2]
	dup := clone(all[0])
	zeroX := clone(all[3])
	zeroX.Value[len(zeroX.Value)-1] = 0
	relabelled := clone(all[4])
	relabelled.Index = 2 // the right bytes under another index

	cases := []struct {
		name string
		bad  []*Share
		want []error
	}{
		{"one tampered", []*Share{tampered}, []error{ErrCommitmentMismatch}},
		{"one foreign", []*Share{foreign}, []error{ErrForeignShare}},
		{"one duplicate", []*Share{dup}, []error{ErrDuplicateShare}},
		{"x = 0", []*Share{zeroX}, []error{ErrForgedShare}},
		{"relabelled", []*Share{relabelled}, []error{ErrCommitmentMismatch}},
		{"tampered and foreign", []*Share{tampered, foreign}, []error{ErrCommitmentMismatch, ErrForeignShare}},
		{"duplicate and x = 0", []*Share{dup, zeroX}, []error{ErrDuplicateShare, ErrForgedShare}},
	}
	good := []*Share{all[0], all[2], all[4]}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := append(append([]*Share{}, good...), tc.bad...)
			secret, rejected, err := c.Combine(in)
			if err != nil {
				t.Fatalf("combine: %v", err)
			}
			if !bytes.Equal(secret, key) {
				t.Fatal("wrong secret")
			}
			if len(rejected) != len(tc.bad) {
				t.Fatalf("rejected %v, want %d", rejected, len(tc.bad))
			}
			for i, r := range rejected {
				if r.Position != len(good)+i || !errors.Is(r, tc.want[i]) {
					t.Errorf("rejection %d: %v (position %d), want %v at %d", i, r, r.Position, tc.want[i], len(good)+i)
				}
			}
			// Below the threshold, the same bad shares give a quorum error
			// that counts the good ones.
			_, _, err = c.Combine(append([]*Share{all[0], all[2]}, tc.bad...))
			var qe *QuorumError
			if !errors.As(err, &qe) || qe.Good != 2 || len(qe.Rejected) != len(tc.bad) {
				t.Fatalf("two good plus bad: %v", err)
			}
		})
	}
}

// TestForgeryXZero shows why vault's Combine is never called on unchecked
// shares: two real shares plus one with x = 0 make it return the forger's
// chosen value.
func TestForgeryXZero(t *testing.T) {
	c, all, key := testCeremony(t, 3, 5)
	chosen := bytes.Repeat([]byte{0xAB}, len(key))
	forged := clone(all[2])
	copy(forged.Value, chosen)
	forged.Value[len(forged.Value)-1] = 0

	got, err := shamir.Combine([][]byte{all[0].Value, all[1].Value, forged.Value})
	if err != nil || !bytes.Equal(got, chosen) {
		t.Fatalf("vault no longer falls for x = 0 (got err %v); revisit this test", err)
	}

	secret, _, err := c.Combine([]*Share{all[0], all[1], forged})
	var qe *QuorumError
	if !errors.As(err, &qe) || secret != nil {
		t.Fatalf("combine with forgery: secret %v, err %v", secret != nil, err)
	}
	if len(qe.Rejected) != 1 || !errors.Is(qe.Rejected[0], ErrForgedShare) || qe.Rejected[0].Index != 3 {
		t.Fatalf("rejected %v", qe.Rejected)
	}
	// Forging the commitment too does not help: the digest catches it.
	c2 := *c
	c2.Commitments = append([]Commitment(nil), c.Commitments...)
	forged.Value[len(forged.Value)-1] = 0x99
	c2.Commitments[2] = Commit(c.ID, 3, forged.Value)
	secret, _, err = c2.Combine([]*Share{all[0], all[1], forged})
	if !errors.Is(err, ErrDigestMismatch) || secret != nil {
		t.Fatalf("forged commitment: secret %v, err %v", secret != nil, err)
	}
	// With more good shares, the forged one is found and named, whatever x
	// the forger gives it: a fresh one, or the x of any honest share in the
	// set (vault draws x at random, so a fixed forged x collided with an
	// honest one in about one run in eighty and knocked that share out).
	xOf := func(s *Share) byte { return s.Value[len(s.Value)-1] }
	xs := []byte{xOf(all[0]), xOf(all[1]), xOf(all[3])}
	for x := byte(1); ; x++ {
		if x != xs[0] && x != xs[1] && x != xs[2] && x != xOf(all[2]) {
			xs = append(xs, x)
			break
		}
	}
	for _, x := range xs {
		forged.Value[len(forged.Value)-1] = x
		c2.Commitments[2] = Commit(c.ID, 3, forged.Value)
		secret, rejected, err := c2.Combine([]*Share{all[0], all[1], forged, all[3]})
		if err != nil || !bytes.Equal(secret, key) {
			t.Fatalf("forged commitment among four, x = %d: err %v", x, err)
		}
		if len(rejected) != 1 || rejected[0].Position != 2 || !errors.Is(rejected[0], ErrInconsistentShare) {
			t.Fatalf("forged commitment among four, x = %d: rejected %v", x, rejected)
		}
	}
}

func TestSplitArgumentBounds(t *testing.T) {
	key := make([]byte, 32)
	var id CeremonyID
	var vol VolumeID
	for _, tc := range []struct {
		k, n, size int
		ok         bool
	}{
		{2, 2, 32, true}, {255, 255, 32, true}, {2, 255, 32, true}, {3, 5, 1, true}, {3, 5, 255, true},
		{1, 5, 32, false}, {0, 5, 32, false}, {-1, 5, 32, false}, {256, 256, 32, false},
		{3, 2, 32, false}, {2, 256, 32, false}, {3, 5, 0, false}, {3, 5, 256, false},
	} {
		secret := key
		if tc.size != 32 {
			secret = make([]byte, tc.size)
			if tc.size > 0 {
				secret[0] = 1
			}
		}
		c, s, err := Split(id, vol, secret, tc.k, tc.n)
		if tc.ok != (err == nil) {
			t.Errorf("Split(k=%d, n=%d, %d bytes): err %v", tc.k, tc.n, tc.size, err)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrOutOfRange) {
				t.Errorf("Split(k=%d, n=%d): %v does not wrap ErrOutOfRange", tc.k, tc.n, err)
			}
			continue
		}
		if len(s) != tc.n || len(c.Commitments) != tc.n {
			t.Errorf("Split(k=%d, n=%d): %d shares", tc.k, tc.n, len(s))
		}
		got, _, err := c.Combine(s[len(s)-tc.k:])
		if err != nil || !bytes.Equal(got, secret) {
			t.Errorf("Split(k=%d, n=%d): combine: %v", tc.k, tc.n, err)
		}
	}
}

func TestShareEnvelopeRejects(t *testing.T) {
	_, all, _ := testCeremony(t, 3, 5)
	good, err := all[0].MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseShare(good)
	if err != nil || back.Header != all[0].Header || !bytes.Equal(back.Value, all[0].Value) {
		t.Fatalf("round trip: %v", err)
	}
	for n := 0; n < len(good); n++ {
		if _, err := ParseShare(good[:n]); !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrUnknownFormat) {
			t.Errorf("truncated to %d: %v", n, err)
		}
	}
	if _, err := ParseShare(append(good, 0)); !errors.Is(err, ErrTrailingBytes) {
		t.Errorf("trailing byte: %v", err)
	}
	mutate := func(i int, v byte) []byte {
		b := bytes.Clone(good)
		b[i] = v
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"version 2", mutate(3, 2), ErrUnknownFormat},
		{"version 0", mutate(3, 0), ErrUnknownFormat},
		{"magic", mutate(0, 'X'), ErrUnknownFormat},
		{"index 0", mutate(36, 0), ErrOutOfRange},
		{"index > n", mutate(36, 6), ErrOutOfRange},
		{"k = 1", mutate(37, 1), ErrOutOfRange},
		{"n < k", mutate(38, 2), ErrOutOfRange},
		{"x = 0", mutate(len(good)-1, 0), ErrForgedShare},
		{"length 1", append(mutate(40, 1)[:41:41], 7), ErrOutOfRange},
	} {
		if _, err := ParseShare(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestSealOpen(t *testing.T) {
	_, all, _ := testCeremony(t, 2, 3)
	card, _ := ecdh.P256().GenerateKey(rand.Reader)
	other, _ := ecdh.P256().GenerateKey(rand.Reader)
	agreeWith := func(k *ecdh.PrivateKey) func(*ecdh.PublicKey) ([]byte, error) {
		return func(eph *ecdh.PublicKey) ([]byte, error) { return k.ECDH(eph) }
	}
	sealed, err := Seal(all[1], card.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(sealed, card.PublicKey(), agreeWith(card))
	if err != nil || got.Header != all[1].Header || !bytes.Equal(got.Value, all[1].Value) {
		t.Fatalf("open: %v", err)
	}
	if bytes.Contains(sealed.Ciphertext, all[1].Value[:16]) {
		t.Fatal("share value visible in the ciphertext")
	}

	asked := false
	_, err = Open(sealed, other.PublicKey(), func(*ecdh.PublicKey) ([]byte, error) { asked = true; return nil, nil })
	if !errors.Is(err, ErrWrongRecipient) || asked {
		t.Errorf("other key: err %v, card asked %v", err, asked)
	}
	// A card that claims the right public key but holds another private key.
	if _, err := Open(sealed, card.PublicKey(), agreeWith(other)); !errors.Is(err, ErrUnsealFailed) {
		t.Errorf("wrong private key: %v", err)
	}
	b, _ := sealed.MarshalBinary()
	for i := 0; i < len(b); i++ {
		m := bytes.Clone(b)
		m[i] ^= 0x01
		s, err := ParseSealedShare(m)
		if err != nil {
			continue // rejected while parsing: fine
		}
		if _, err := Open(s, card.PublicKey(), agreeWith(card)); err == nil {
			t.Fatalf("byte %d flipped: sealed share still opens", i)
		}
	}
}

func TestSealedShareRejects(t *testing.T) {
	_, all, _ := testCeremony(t, 2, 3)
	card, _ := ecdh.P256().GenerateKey(rand.Reader)
	sealed, _ := Seal(all[0], card.PublicKey())
	b, err := sealed.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseSealedShare(b)
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := back.MarshalBinary(); !bytes.Equal(b, b2) {
		t.Fatal("parse→marshal differs")
	}
	for n := 0; n < len(b); n++ {
		if _, err := ParseSealedShare(b[:n]); !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrUnknownFormat) {
			t.Errorf("truncated to %d: %v", n, err)
		}
	}
	if _, err := ParseSealedShare(append(b, 0)); !errors.Is(err, ErrTrailingBytes) {
		t.Errorf("trailing: %v", err)
	}
	if shareBytes, _ := all[0].MarshalBinary(); true {
		if _, err := ParseSealedShare(shareBytes); !errors.Is(err, ErrUnknownFormat) {
			t.Errorf("a plain share parsed as sealed: %v", err)
		}
	}
}

func TestRecoveryKeyRoundTrip(t *testing.T) {
	for range 200 {
		key, _ := NewRecoveryKey()
		text := EncodeRecoveryKey(key)
		if len(text) != RecoveryKeyTextSize {
			t.Fatalf("length %d", len(text))
		}
		for _, variant := range [][]byte{
			text,
			bytes.ToUpper(text),
			bytes.ReplaceAll(text, []byte("-"), nil),
			append(append([]byte("  "), text...), '\n'),
			bytes.Replace(text, []byte("-"), nil, 3),
		} {
			got, err := ParseRecoveryKey(variant)
			if err != nil || !bytes.Equal(got, key) {
				t.Fatalf("parse %q: %v", variant, err)
			}
		}
	}
}

func TestRecoveryKeyTypos(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	text := string(EncodeRecoveryKey(key))
	for _, tc := range []struct {
		name   string
		in     string
		offset int
	}{
		{"letter outside the alphabet", text[:5] + "a" + text[6:], 5},
		{"digit", text[:10] + "0" + text[11:], 10},
		{"dash inside a group", text[:3] + "-" + text[3:], 3},
		{"leading dash", "-" + text, 0},
		{"trailing dash", text + "-", 71},
		{"double dash", text[:8] + "-" + text[8:], 9},
		{"one letter short", text[:70], 70},
		{"one letter long", text + "c", 71},
		{"inner space", text[:20] + " " + text[21:], 20},
		{"empty", "", 0},
	} {
		_, err := ParseRecoveryKey([]byte(tc.in))
		var re *RecoveryKeyError
		if !errors.As(err, &re) || re.Offset != tc.offset {
			t.Errorf("%s: got %v, want an error at offset %d", tc.name, err, tc.offset)
		}
	}
}

func TestIDsText(t *testing.T) {
	v, err := ParseVolumeID("0B5F3F0E-5D7A-4C52-9E55-37A3C2A1F001")
	if err != nil || v.String() != "0b5f3f0e-5d7a-4c52-9e55-37a3c2a1f001" {
		t.Fatalf("volume id: %v %v", v, err)
	}
	for _, bad := range []string{"", "0b5f3f0e5d7a4c529e5537a3c2a1f001", "0b5f3f0e-5d7a-4c52-9e55-37a3c2a1f00g", "0b5f3f0e-5d7a-4c52-9e5537a3-c2a1f001"} {
		if _, err := ParseVolumeID(bad); err == nil {
			t.Errorf("ParseVolumeID(%q) accepted", bad)
		}
	}
	id := NewCeremonyID()
	back, err := ParseCeremonyID(id.String())
	if err != nil || back != id {
		t.Fatalf("ceremony id: %v", err)
	}
	if _, err := ParseCeremonyID("xyz"); err == nil {
		t.Error("bad ceremony id accepted")
	}
}

// TestSealUnderCustomRand seals under GODEBUG=cryptocustomrand=1, where
// crypto functions use the reader they are given (Go 1.26 ignores it by
// default): Seal must give crypto/rand.Reader, never nil. It runs itself
// again in a child process, since a GODEBUG setting is read at start.
func TestSealUnderCustomRand(t *testing.T) {
	if os.Getenv("CUSTOS_SEAL_CHILD") == "1" {
		card, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		_, ss, _ := testCeremony(t, 2, 2)
		if _, err := Seal(ss[0], card.PublicKey()); err != nil {
			t.Fatal(err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSealUnderCustomRand$", "-test.count=1")
	cmd.Env = append(os.Environ(), "GODEBUG=cryptocustomrand=1", "CUSTOS_SEAL_CHILD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("Seal under GODEBUG=cryptocustomrand=1: %v\n%s", err, out)
	}
}
