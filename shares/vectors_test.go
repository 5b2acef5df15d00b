package shares

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

var updateVectors = flag.Bool("update-vectors", false, "rewrite testdata/format/vectors.json from the code (review the diff!)")

const vectorsPath = "../testdata/format/vectors.json"

// hexBytes is []byte as hex in JSON.
type hexBytes []byte

func (h hexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }
func (h *hexBytes) UnmarshalText(b []byte) error {
	v, err := hex.DecodeString(string(b))
	*h = v
	return err
}

// vectors is the shape of testdata/format/vectors.json, described in
// docs/FORMAT.md.
type vectors struct {
	Comment      string          `json:"comment"`
	RecoveryKeys []keyVector     `json:"recovery_keys"`
	Shares       []shareVector   `json:"shares"`
	Digests      []digestVector  `json:"digests"`
	Sealed       []sealedVector  `json:"sealed"`
	Combine      []combineVector `json:"combine"`
}

type keyVector struct {
	Key  hexBytes `json:"key"`
	Text string   `json:"text"`
}

type shareVector struct {
	Ceremony   CeremonyID `json:"ceremony"`
	Volume     VolumeID   `json:"volume"`
	Index      int        `json:"index"`
	K          int        `json:"k"`
	N          int        `json:"n"`
	Value      hexBytes   `json:"value"`
	Envelope   hexBytes   `json:"envelope"`
	Commitment Commitment `json:"commitment"`
}

type digestVector struct {
	Ceremony CeremonyID `json:"ceremony"`
	Secret   hexBytes   `json:"secret"`
	Digest   Digest     `json:"digest"`
}

type sealedVector struct {
	Share              hexBytes    `json:"share_envelope"`
	RecipientPrivate   hexBytes    `json:"recipient_private"`
	RecipientPublic    hexBytes    `json:"recipient_public"`
	RecipientSPKIHash  Fingerprint `json:"recipient_fingerprint"`
	EphemeralPrivate   hexBytes    `json:"ephemeral_private"`
	SharedSecret       hexBytes    `json:"shared_secret"`
	Key                hexBytes    `json:"key"`
	Sealed             hexBytes    `json:"sealed"`
	WrongRecipientPriv hexBytes    `json:"wrong_recipient_private"`
}

type combineVector struct {
	Ceremony Ceremony   `json:"ceremony"`
	Shares   []hexBytes `json:"share_envelopes"`
	Secret   hexBytes   `json:"secret"`
}

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func generateVectors(t *testing.T) *vectors {
	v := &vectors{Comment: "custos format vectors; see docs/FORMAT.md. Regenerate with go test ./shares -run TestFormatVectors -update-vectors, and only on purpose."}
	for _, key := range [][]byte{make([]byte, 32), bytes.Repeat([]byte{0xff}, 32), seq(32, 0)} {
		v.RecoveryKeys = append(v.RecoveryKeys, keyVector{key, string(EncodeRecoveryKey(key))})
	}
	var id CeremonyID
	copy(id[:], seq(16, 0x10))
	vol, _ := ParseVolumeID("6a0e3f6c-2b4e-4d3a-9c1f-5e7d8a9b0c1d")
	secret := seq(32, 0x40)
	c, sh, err := Split(id, vol, secret, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sh {
		env, _ := s.MarshalBinary()
		v.Shares = append(v.Shares, shareVector{s.Ceremony, s.Volume, s.Index, s.K, s.N, s.Value, env, Commit(s.Ceremony, s.Index, s.Value)})
	}
	v.Digests = append(v.Digests, digestVector{id, secret, DigestOf(id, secret)})
	var envs []hexBytes
	for _, s := range sh {
		env, _ := s.MarshalBinary()
		envs = append(envs, env)
	}
	v.Combine = append(v.Combine, combineVector{*c, envs[1:], secret})

	recip, _ := ecdh.P256().NewPrivateKey(seq(32, 0x01))
	eph, _ := ecdh.P256().NewPrivateKey(seq(32, 0x21))
	wrong, _ := ecdh.P256().NewPrivateKey(seq(32, 0x31))
	sealed, err := seal(sh[0], recip.PublicKey(), eph)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := sealed.MarshalBinary()
	shared, _ := eph.ECDH(recip.PublicKey())
	salt := append(eph.PublicKey().Bytes(), recip.PublicKey().Bytes()...)
	key, _ := hkdf.Key(sha256.New, shared, salt, sealInfo, 32)
	fp, _ := FingerprintOf(recip.PublicKey())
	v.Sealed = append(v.Sealed, sealedVector{envs[0], recip.Bytes(), recip.PublicKey().Bytes(), fp, eph.Bytes(), shared, key, sb, wrong.Bytes()})
	return v
}

func loadVectors(t testing.TB) *vectors {
	b, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatalf("read vectors: %v", err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode vectors: %v", err)
	}
	return &v
}

func TestFormatVectors(t *testing.T) {
	if *updateVectors {
		b, err := json.MarshalIndent(generateVectors(t), "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(vectorsPath), 0o755)
		if err := os.WriteFile(vectorsPath, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v := loadVectors(t)
	if len(v.RecoveryKeys) == 0 || len(v.Shares) == 0 || len(v.Sealed) == 0 || len(v.Combine) == 0 || len(v.Digests) == 0 {
		t.Fatal("vectors file is missing sections")
	}
	for _, rk := range v.RecoveryKeys {
		if got := string(EncodeRecoveryKey(rk.Key)); got != rk.Text {
			t.Errorf("encode %x: %s, want %s", rk.Key, got, rk.Text)
		}
		if got, err := ParseRecoveryKey([]byte(rk.Text)); err != nil || !bytes.Equal(got, rk.Key) {
			t.Errorf("parse %s: %v", rk.Text, err)
		}
	}
	for _, s := range v.Shares {
		share := &Share{Header: Header{s.Ceremony, s.Volume, s.Index, s.K, s.N}, Value: s.Value}
		if env, err := share.MarshalBinary(); err != nil || !bytes.Equal(env, s.Envelope) {
			t.Errorf("share %d envelope: %x, %v", s.Index, env, err)
		}
		if p, err := ParseShare(s.Envelope); err != nil || p.Header != share.Header || !bytes.Equal(p.Value, s.Value) {
			t.Errorf("share %d parse: %v", s.Index, err)
		}
		if c := Commit(s.Ceremony, s.Index, s.Value); c != s.Commitment {
			t.Errorf("share %d commitment %s, want %s", s.Index, c, s.Commitment)
		}
	}
	for _, d := range v.Digests {
		if got := DigestOf(d.Ceremony, d.Secret); got != d.Digest {
			t.Errorf("digest %s, want %s", got, d.Digest)
		}
	}
	for _, cv := range v.Combine {
		var in []*Share
		for _, e := range cv.Shares {
			s, err := ParseShare(e)
			if err != nil {
				t.Fatal(err)
			}
			in = append(in, s)
		}
		got, rej, err := cv.Ceremony.Combine(in)
		if err != nil || len(rej) != 0 || !bytes.Equal(got, cv.Secret) {
			t.Errorf("combine vector: %v %v", err, rej)
		}
	}
	for _, sv := range v.Sealed {
		share, _ := ParseShare(sv.Share)
		recip, _ := ecdh.P256().NewPrivateKey(sv.RecipientPrivate)
		eph, _ := ecdh.P256().NewPrivateKey(sv.EphemeralPrivate)
		sealed, err := seal(share, recip.PublicKey(), eph)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := sealed.MarshalBinary(); !bytes.Equal(b, sv.Sealed) {
			t.Errorf("sealed bytes differ:\n got %x\nwant %x", b, []byte(sv.Sealed))
		}
		parsed, err := ParseSealedShare(sv.Sealed)
		if err != nil {
			t.Fatal(err)
		}
		opened, err := Open(parsed, recip.PublicKey(), recip.ECDH)
		if err != nil || !bytes.Equal(opened.Value, share.Value) || opened.Header != share.Header {
			t.Errorf("open vector: %v", err)
		}
		wrong, _ := ecdh.P256().NewPrivateKey(sv.WrongRecipientPriv)
		if _, err := Open(parsed, recip.PublicKey(), wrong.ECDH); err == nil {
			t.Error("vector opened with the wrong private key")
		}
		openFromSpec(t, sv.Sealed, sv.RecipientPrivate, sv.SharedSecret, sv.Key, share.Value, sv.RecipientSPKIHash)
	}
}

// openFromSpec opens a sealed share following docs/FORMAT.md step by step,
// with the standard library alone and none of this package's code, so the
// document stays enough to write a compatible implementation.
func openFromSpec(t *testing.T, sealed, recipientPriv, wantShared, wantKey, wantValue []byte, wantFP Fingerprint) {
	t.Helper()
	if string(sealed[:3]) != "CSS" || sealed[3] != 1 {
		t.Fatal("spec: magic/version")
	}
	header := sealed[4:39] // ceremony, volume, index, k, n
	_ = header
	fp := sealed[39:71]
	ephBytes := sealed[71:136]
	ctLen := int(sealed[136])<<8 | int(sealed[137])
	ct := sealed[138:]
	if len(ct) != ctLen {
		t.Fatalf("spec: ciphertext length %d, have %d", ctLen, len(ct))
	}
	priv, _ := ecdh.P256().NewPrivateKey(recipientPriv)
	spki := sha256.Sum256(append([]byte{
		0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
		0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
	}, priv.PublicKey().Bytes()...))
	if !bytes.Equal(spki[:], fp) || Fingerprint(spki) != wantFP {
		t.Fatal("spec: recipient fingerprint")
	}
	eph, err := ecdh.P256().NewPublicKey(ephBytes)
	if err != nil {
		t.Fatal(err)
	}
	shared, _ := priv.ECDH(eph)
	if !bytes.Equal(shared, wantShared) {
		t.Fatal("spec: shared secret")
	}
	key, _ := hkdf.Key(sha256.New, shared, append(bytes.Clone(ephBytes), priv.PublicKey().Bytes()...), "custos sealed share v1", 32)
	if !bytes.Equal(key, wantKey) {
		t.Fatal("spec: key")
	}
	aead, _ := chacha20poly1305.New(key)
	value, err := aead.Open(nil, make([]byte, 12), ct, sealed[:136])
	if err != nil || !bytes.Equal(value, wantValue) {
		t.Fatalf("spec: decrypt: %v", err)
	}
}
