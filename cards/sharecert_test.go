package cards

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"custos.dev/custos/shares"
)

var updateVectors = flag.Bool("update-vectors", false, "rewrite cards/testdata/sharecert (only on purpose)")

// sealedVector is the sealed share of the shares format vectors
// (testdata/format/vectors.json, "sealed"[0]).
const sealedVector = "43535301101112131415161718191a1b1c1d1e1f6a0e3f6c2b4e4d3a9c1f5e7d8a9b0c1d010203f1d59449b727165de732bf283338122b99628a615918fedc67d878fffcf47da7041f140146bfb1b251f84f4ddbe0d4cdcfd77afd984a9520e35794021f8312bb9eec995a08b1fa7704df3dcc0b50a9665263fb7711f95f9f8a449c5096e47c892b0031aade506355c5aeadef3ef3461343421ebbf74cdda518dbaf9ffa058a1afbe8b48cd7e51dcc2f2e338f13fbaec2fc33f43e"

func vectorShareCert(t testing.TB) *ShareCert {
	t.Helper()
	b, _ := hex.DecodeString(sealedVector)
	sealed, err := shares.ParseSealedShare(b)
	if err != nil {
		t.Fatal(err)
	}
	sc := &ShareCert{Ceremony: sealed.Ceremony, Volume: sealed.Volume, K: sealed.K, N: sealed.N, Index: sealed.Index, Keyslot: 3, Sealed: sealed}
	for i := range 32 {
		sc.Digest[i], sc.Commitment[i], sc.Anchor[i] = byte(i), byte(0x40+i), byte(0x80+i)
	}
	return sc
}

// badVectors are extension values the decoder must refuse, by name.
func badVectors(t testing.TB, good []byte) map[string][]byte {
	t.Helper()
	sc := vectorShareCert(t)
	sealed, _ := sc.Sealed.MarshalBinary()
	enc := func(e shareCertExt) []byte {
		b, err := asn1.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	base := shareCertExt{Version: 1, Keyslot: 3, Digest: sc.Digest[:], Commitment: sc.Commitment[:], Anchor: sc.Anchor[:], Sealed: sealed}
	v2 := base
	v2.Version = 2
	slot32 := base
	slot32.Keyslot = 32
	short := base
	short.Anchor = sc.Anchor[:31]
	badSealed := base
	badSealed.Sealed = sealed[:len(sealed)-1]
	// The same value with a long-form length on the outer SEQUENCE: BER,
	// not DER.
	if good[1] != 0x82 {
		t.Fatalf("vector header %x, want a two-byte length", good[:4])
	}
	long := append([]byte{0x30, 0x83, 0x00, good[2], good[3]}, good[4:]...)
	return map[string][]byte{
		"truncated":    good[:len(good)-1],
		"trailing":     append(append([]byte(nil), good...), 0),
		"version-2":    enc(v2),
		"keyslot-32":   enc(slot32),
		"short-anchor": enc(short),
		"bad-sealed":   enc(badSealed),
		"long-length":  long,
		"empty":        {},
	}
}

// TestShareCertVectors checks the extension's encoding against
// testdata/sharecert: good.der decodes to the vector and back to the same
// bytes, every bad-*.der is refused.
func TestShareCertVectors(t *testing.T) {
	dir := filepath.Join("testdata", "sharecert")
	sc := vectorShareCert(t)
	good, err := marshalShareCert(sc)
	if err != nil {
		t.Fatal(err)
	}
	if *updateVectors {
		os.MkdirAll(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, "good.der"), good, 0o644); err != nil {
			t.Fatal(err)
		}
		for name, b := range badVectors(t, good) {
			if err := os.WriteFile(filepath.Join(dir, "bad-"+name+".der"), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	want, err := os.ReadFile(filepath.Join(dir, "good.der"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(good, want) {
		t.Errorf("marshalShareCert = %x\nwant (good.der) %x", good, want)
	}
	got, err := parseShareCert(want)
	if err != nil {
		t.Fatalf("parseShareCert(good.der): %v", err)
	}
	if !reflect.DeepEqual(got, sc) {
		t.Errorf("parseShareCert(good.der) = %+v\nwant %+v", got, sc)
	}
	bad, _ := filepath.Glob(filepath.Join(dir, "bad-*.der"))
	if len(bad) < len(badVectors(t, good)) {
		t.Fatalf("%d bad vectors in %s, want %d", len(bad), dir, len(badVectors(t, good)))
	}
	for _, f := range bad {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if sc, err := parseShareCert(b); err == nil {
			t.Errorf("%s: decoded to %+v, want an error", f, sc)
		} else if !strings.HasPrefix(err.Error(), "share certificate: ") {
			t.Errorf("%s: error %q does not say what failed", f, err)
		}
	}
}

func TestShareCertRefusesMismatch(t *testing.T) {
	sc := vectorShareCert(t)
	sc.Index = 2 // the sealed share says 1
	if _, err := marshalShareCert(sc); err == nil {
		t.Error("a ShareCert whose index differs from its sealed share's was encoded")
	}
}

// TestSlotCertificate: the certificate carries the version 2 payload in
// the extension, non-critical, for the slot's key, and Go (so piv-go)
// parses it back; a version 1 certificate (good.der's extension) still
// reads, as SlotCert.V1; a payload that is no version 2 record is not
// written.
func TestSlotCertificate(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, _, scs := ceremony(t, &key.PublicKey, &key.PublicKey, &key.PublicKey)
	ts := scs[0]
	cert, err := newSlotCertificate(&key.PublicKey, ts.Sealed, ts.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("the certificate is not for the slot's key")
	}
	n := 0
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidShareCert) {
			n++
			if e.Critical {
				t.Error("the share extension is critical")
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d share extensions, want 1", n)
	}
	got, err := slotCertOf(cert)
	if err != nil || !carries(got, ts) {
		t.Errorf("slotCertOf = %+v, %v", got, err)
	}
	if !strings.Contains(cert.Subject.CommonName, "custos share 1 of 3") {
		t.Errorf("subject %q", cert.Subject.CommonName)
	}
	for name, payload := range map[string][]byte{
		"empty":         nil,
		"not json":      []byte("\x30\x03\x02\x01\x01"),
		"over 4096":     append([]byte("{"), bytes.Repeat([]byte(" "), maxPayload)...),
		"leading space": []byte(` {"record":{}}`),
	} {
		if _, err := newSlotCertificate(&key.PublicKey, ts.Sealed, payload); err == nil {
			t.Errorf("%s: a certificate was made with a payload that is no version 2 record", name)
		}
	}
	wiped, err := newSlotCertificate(&key.PublicKey, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := slotCertOf(wiped); got != nil || err != nil {
		t.Errorf("a wiped slot's certificate carries %+v, %v", got, err)
	}

	// Version 1: the DER extension of good.der, read as V1 with the
	// certificate's key.
	sc := vectorShareCert(t)
	v1 := v1Certificate(t, &key.PublicKey, sc)
	got, err = slotCertOf(v1)
	fp, _ := shares.FingerprintOf(&key.PublicKey)
	if err != nil || got == nil || got.Payload != nil || !reflect.DeepEqual(got.V1, sc) || got.Key != fp {
		t.Errorf("slotCertOf(version 1) = %+v, %v; want V1 %+v", got, err, sc)
	}
	// A damaged version 1 extension is refused, not half read.
	badCert := v1Certificate(t, &key.PublicKey, sc)
	for i, e := range badCert.Extensions {
		if e.Id.Equal(oidShareCert) {
			badCert.Extensions[i].Value = e.Value[:len(e.Value)-1]
		}
	}
	if got, err := slotCertOf(badCert); err == nil {
		t.Errorf("slotCertOf(truncated version 1) = %+v", got)
	}
	// A version 2 payload over 4096 bytes read from a card is refused.
	big := *cert
	big.Extensions = []pkix.Extension{{Id: oidShareCert, Value: append([]byte("{"), bytes.Repeat([]byte(" "), maxPayload)...)}}
	if got, err := slotCertOf(&big); err == nil {
		t.Errorf("slotCertOf(payload over 4096 bytes) = %+v", got)
	}
}

// FuzzParseShareCert: the decoder never panics, and whatever it accepts
// encodes back to the same bytes.
func FuzzParseShareCert(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "sharecert", "*.der"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sc, err := parseShareCert(b)
		if err != nil {
			if sc != nil {
				t.Fatal("a value and an error")
			}
			return
		}
		again, err := marshalShareCert(sc)
		if err != nil {
			t.Fatalf("accepted value does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted %x, encodes to %x", b, again)
		}
	})
}
