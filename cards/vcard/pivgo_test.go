package vcard

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/go-piv/piv-go/v2/piv"
)

var slot82, _ = piv.RetiredKeyManagementSlot(0x82)

func TestPivGoIdentity(t *testing.T) {
	_, in, yk := insertedYK(t, 1000001, "")
	cards, err := piv.Cards()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cards, in.Reader()) {
		t.Errorf("piv.Cards() = %q, want it to hold %q", cards, in.Reader())
	}
	serial, err := yk.Serial()
	if err != nil || serial != 1000001 {
		t.Errorf("Serial() = %d, %v; want 1000001", serial, err)
	}
	if v := yk.Version(); v != (piv.Version{Major: 5, Minor: 7, Patch: 1}) {
		t.Errorf("Version() = %+v, want 5.7.1", v)
	}
}

func TestPivGoPIN(t *testing.T) {
	_, _, yk := insertedYK(t, 1000002, "")
	retries := func(want int) {
		t.Helper()
		n, err := yk.Retries()
		if err != nil || n != want {
			t.Fatalf("Retries() = %d, %v; want %d", n, err, want)
		}
	}
	retries(3)
	var ae piv.AuthErr
	if err := yk.VerifyPIN("654321"); !errors.As(err, &ae) || ae.Retries != 2 {
		t.Fatalf("VerifyPIN(wrong) = %v, want AuthErr with 2 retries", err)
	}
	retries(2)
	if err := yk.VerifyPIN(piv.DefaultPIN); err != nil {
		t.Fatalf("VerifyPIN(right): %v", err)
	}
	// Verified: an empty VERIFY answers 9000, which piv-go's Retries
	// reports as an error, as with a YubiKey.
	if _, err := yk.Retries(); err == nil {
		t.Fatal("Retries() after a right PIN succeeded, want the 9000 error")
	}
	if err := yk.VerifyPIN("654321"); !errors.As(err, &ae) || ae.Retries != 2 {
		t.Fatalf("a right PIN did not restore the counter: %v", err)
	}

	if err := yk.SetPIN("000000", "24681357"); !errors.As(err, &ae) || ae.Retries != 1 {
		t.Fatalf("SetPIN(wrong old) = %v, want AuthErr 1", err)
	}
	if err := yk.SetPIN(piv.DefaultPIN, "24681357"); err != nil {
		t.Fatalf("SetPIN: %v", err)
	}
	if err := yk.VerifyPIN(piv.DefaultPIN); err == nil {
		t.Fatal("old PIN still verifies after SetPIN")
	}
	if err := yk.VerifyPIN("24681357"); err != nil {
		t.Fatalf("new PIN: %v", err)
	}
	if err := yk.SetPUK(piv.DefaultPUK, "87654321"); err != nil {
		t.Fatalf("SetPUK: %v", err)
	}
	// Block the PIN, then unblock it with the new PUK.
	for i := 0; i < 3; i++ {
		yk.VerifyPIN("11111111")
	}
	if err := yk.VerifyPIN("24681357"); !errors.As(err, &ae) || ae.Retries != 0 {
		t.Fatalf("VerifyPIN on a blocked PIN = %v, want AuthErr 0", err)
	}
	if err := yk.Unblock(piv.DefaultPUK, "13572468"); !errors.As(err, &ae) || ae.Retries != 2 {
		t.Fatalf("Unblock(old PUK) = %v, want AuthErr 2", err)
	}
	if err := yk.Unblock("87654321", "13572468"); err != nil {
		t.Fatalf("Unblock: %v", err)
	}
	if err := yk.VerifyPIN("13572468"); err != nil {
		t.Fatalf("PIN set by Unblock: %v", err)
	}
	if err := yk.SetPIN("13572468", "123"); err == nil {
		t.Fatal("SetPIN accepted a 3-digit PIN")
	}
}

func TestPivGoManagementKeyAES192(t *testing.T) {
	c, _, yk := insertedYK(t, 1000003, "5.7.1")
	if got, _ := mgmtKeyOf(c); got != algAES192 {
		t.Fatalf("factory management key algorithm on 5.7.1 = %#x, want AES-192", got)
	}
	newKey := bytes.Repeat([]byte{0x42}, 24)
	if err := yk.SetManagementKey(bytes.Repeat([]byte{9}, 24), newKey); err == nil {
		t.Fatal("SetManagementKey with a wrong old key succeeded")
	}
	if err := yk.SetManagementKey(piv.DefaultManagementKey, newKey); err != nil {
		t.Fatalf("SetManagementKey: %v", err)
	}
	if _, err := yk.GenerateKey(piv.DefaultManagementKey, slot82, piv.Key{Algorithm: piv.AlgorithmEC256, PINPolicy: piv.PINPolicyNever, TouchPolicy: piv.TouchPolicyNever}); err == nil {
		t.Fatal("GenerateKey with the old management key succeeded")
	}
	if _, err := yk.GenerateKey(newKey, slot82, piv.Key{Algorithm: piv.AlgorithmEC256, PINPolicy: piv.PINPolicyNever, TouchPolicy: piv.TouchPolicyNever}); err != nil {
		t.Fatalf("GenerateKey with the new management key: %v", err)
	}
	if alg, key := mgmtKeyOf(c); alg != algAES192 || !bytes.Equal(key, newKey) {
		t.Errorf("card holds management key alg %#x", alg)
	}
}

func TestPivGoManagementKey3DES(t *testing.T) {
	c, _, yk := insertedYK(t, 1000004, "5.2.7")
	if got, _ := mgmtKeyOf(c); got != alg3DES {
		t.Fatalf("factory management key algorithm on 5.2.7 = %#x, want 3DES", got)
	}
	newKey := []byte("0123456789abcdefghijklmn")
	if err := yk.SetManagementKey(piv.DefaultManagementKey, newKey); err != nil {
		t.Fatalf("SetManagementKey: %v", err)
	}
	if alg, key := mgmtKeyOf(c); alg != alg3DES || !bytes.Equal(key, newKey) {
		t.Fatalf("card holds management key alg %#x", alg)
	}
	if err := yk.SetMetadata(piv.DefaultManagementKey, &piv.Metadata{}); err == nil {
		t.Fatal("old 3DES key still authenticates")
	}
	if err := yk.SetMetadata(newKey, &piv.Metadata{}); err != nil {
		t.Fatalf("new 3DES key: %v", err)
	}
}

func TestPivGoMetadata(t *testing.T) {
	_, _, yk := insertedYK(t, 1000005, "")
	m, err := yk.Metadata(piv.DefaultPIN)
	if err != nil || m.ManagementKey != nil {
		t.Fatalf("Metadata on a fresh card = %+v, %v; want empty", m, err)
	}
	key := bytes.Repeat([]byte{0x17}, 24)
	if err := yk.SetManagementKey(piv.DefaultManagementKey, key); err != nil {
		t.Fatal(err)
	}
	if err := yk.SetMetadata(key, &piv.Metadata{ManagementKey: &key}); err != nil {
		t.Fatalf("SetMetadata: %v", err)
	}
	if _, err := yk.Metadata("999999"); err == nil {
		t.Fatal("Metadata with a wrong PIN succeeded")
	}
	m, err = yk.Metadata(piv.DefaultPIN)
	if err != nil {
		t.Fatalf("Metadata: %v", err)
	}
	if m.ManagementKey == nil || !bytes.Equal(*m.ManagementKey, key) {
		t.Fatalf("Metadata().ManagementKey = %x, want %x", m.ManagementKey, key)
	}
}

func generate82(t *testing.T, yk *piv.YubiKey, alg piv.Algorithm, pp piv.PINPolicy, tp piv.TouchPolicy) *ecdsa.PublicKey {
	t.Helper()
	pub, err := yk.GenerateKey(piv.DefaultManagementKey, slot82, piv.Key{Algorithm: alg, PINPolicy: pp, TouchPolicy: tp})
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("GenerateKey returned %T", pub)
	}
	return ec
}

func TestPivGoGenerateSharedKey(t *testing.T) {
	for _, tc := range []struct {
		name  string
		alg   piv.Algorithm
		curve ecdh.Curve
	}{
		{"P256", piv.AlgorithmEC256, ecdh.P256()},
		{"P384", piv.AlgorithmEC384, ecdh.P384()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, yk := insertedYK(t, 1000006, "")
			pub := generate82(t, yk, tc.alg, piv.PINPolicyAlways, piv.TouchPolicyNever)
			info, err := yk.KeyInfo(slot82)
			if err != nil {
				t.Fatalf("KeyInfo: %v", err)
			}
			if info.PINPolicy != piv.PINPolicyAlways || info.TouchPolicy != piv.TouchPolicyNever || info.Origin != piv.OriginGenerated || !pub.Equal(info.PublicKey) {
				t.Fatalf("KeyInfo = %+v", info)
			}
			priv, err := yk.PrivateKey(slot82, pub, piv.KeyAuth{PIN: piv.DefaultPIN})
			if err != nil {
				t.Fatalf("PrivateKey: %v", err)
			}
			ecPriv := priv.(*piv.ECDSAPrivateKey)
			for i := 0; i < 2; i++ { // PIN always: piv-go verifies before each use
				peer, err := tc.curve.GenerateKey(rand.Reader)
				if err != nil {
					t.Fatal(err)
				}
				peerPub, _ := ecdsaPublic(peer.PublicKey(), pub.Curve)
				got, err := ecPriv.SharedKey(peerPub)
				if err != nil {
					t.Fatalf("SharedKey: %v", err)
				}
				cardPub, err := pub.ECDH()
				if err != nil {
					t.Fatal(err)
				}
				want, err := peer.ECDH(cardPub)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("card ECDH %x, software ECDH %x", got, want)
				}
			}
			digest := sha256.Sum256([]byte("custos"))
			sig, err := ecPriv.Sign(rand.Reader, digest[:], nil)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if !ecdsa.VerifyASN1(pub, digest[:], sig) {
				t.Fatal("card signature does not verify")
			}
			// Without a VERIFY right before, PIN policy always refuses.
			noPIN, err := yk.PrivateKey(slot82, pub, piv.KeyAuth{PINPolicy: piv.PINPolicyNever})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := noPIN.(*piv.ECDSAPrivateKey).Sign(rand.Reader, digest[:], nil); err == nil || !bytes.Contains([]byte(err.Error()), []byte("6982")) {
				t.Fatalf("Sign without PIN under PIN policy always = %v, want 6982", err)
			}
		})
	}
}

func ecdsaPublic(p *ecdh.PublicKey, curve elliptic.Curve) (*ecdsa.PublicKey, error) {
	return ecdsa.ParseUncompressedPublicKey(curve, p.Bytes())
}

func TestPivGoTouchCounted(t *testing.T) {
	c, _, yk := insertedYK(t, 1000007, "")
	pub := generate82(t, yk, piv.AlgorithmEC256, piv.PINPolicyNever, piv.TouchPolicyAlways)
	priv, err := yk.PrivateKey(slot82, pub, piv.KeyAuth{})
	if err != nil {
		t.Fatal(err)
	}
	before := c.Counts()
	digest := sha256.Sum256([]byte("touch"))
	for i := 0; i < 3; i++ {
		if _, err := priv.(*piv.ECDSAPrivateKey).Sign(rand.Reader, digest[:], nil); err != nil {
			t.Fatal(err)
		}
	}
	after := c.Counts()
	if got := after.Touches - before.Touches; got != 3 {
		t.Errorf("touches = %d, want 3", got)
	}
	if got := after.Instructions[insGeneralAuth] - before.Instructions[insGeneralAuth]; got != 3 {
		t.Errorf("GENERAL AUTHENTICATE count = %d, want 3", got)
	}
	if after.APDUs <= before.APDUs {
		t.Errorf("APDU count did not grow: %d -> %d", before.APDUs, after.APDUs)
	}
}

// bigCert is a self-signed certificate of about size bytes.
func bigCert(t testing.TB, size int) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	filler := make([]byte, size-330)
	rand.Read(filler)
	ext, _ := asn1.Marshal(filler)
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(7),
		Subject:         pkix.Name{CommonName: "custos vcard test"},
		NotBefore:       time.Now().Add(-time.Hour),
		NotAfter:        time.Now().Add(time.Hour),
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: ext}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestPivGoCertificate(t *testing.T) {
	c, in, yk := insertedYK(t, 1000008, "")
	if _, err := yk.Certificate(slot82); !errors.Is(err, piv.ErrNotFound) {
		t.Fatalf("Certificate of an empty slot = %v, want ErrNotFound", err)
	}
	cert := bigCert(t, 2048)
	if len(cert.Raw) < 2000 {
		t.Fatalf("test certificate is only %d bytes", len(cert.Raw))
	}
	if err := yk.SetCertificate(bytes.Repeat([]byte{1}, 24), slot82, cert); err == nil {
		t.Fatal("SetCertificate with a wrong management key succeeded")
	}
	if err := yk.SetCertificate(piv.DefaultManagementKey, slot82, cert); err != nil {
		t.Fatalf("SetCertificate: %v", err)
	}
	got, err := yk.Certificate(slot82)
	if err != nil {
		t.Fatalf("Certificate: %v", err)
	}
	if !bytes.Equal(got.Raw, cert.Raw) {
		t.Fatal("certificate read back differs")
	}
	// Too big for a YubiKey: refused, the old certificate kept.
	if err := yk.SetCertificate(piv.DefaultManagementKey, slot82, bigCert(t, 3200)); err == nil {
		t.Fatal("SetCertificate of a 3.2 KB certificate succeeded")
	}
	yk.Close()

	// Remove and reinsert: the certificate is still there.
	if err := in.Remove(); err != nil {
		t.Fatal(err)
	}
	in2 := insert(t, c, Port0)
	yk2 := openYK(t, in2.Reader())
	got, err = yk2.Certificate(slot82)
	if err != nil || !bytes.Equal(got.Raw, cert.Raw) {
		t.Fatalf("certificate after reinsert: %v", err)
	}
}

func TestPivGoAttest(t *testing.T) {
	_, _, yk := insertedYK(t, 1000009, "")
	if _, err := yk.Attest(slot82); !errors.Is(err, piv.ErrNotFound) {
		t.Fatalf("Attest of an empty slot = %v, want ErrNotFound", err)
	}
	pub := generate82(t, yk, piv.AlgorithmEC256, piv.PINPolicyAlways, piv.TouchPolicyCached)
	slotCert, err := yk.Attest(slot82)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	attCert, err := yk.AttestationCertificate()
	if err != nil {
		t.Fatalf("AttestationCertificate: %v", err)
	}
	v := piv.Verifier{Roots: sharedCA(t).Pool()}
	a, err := v.Verify(attCert, slotCert)
	if err != nil {
		t.Fatalf("Verify with the virtual CA: %v", err)
	}
	if a.Serial != 1000009 || a.Version != (piv.Version{Major: 5, Minor: 7, Patch: 1}) ||
		a.PINPolicy != piv.PINPolicyAlways || a.TouchPolicy != piv.TouchPolicyCached || a.Slot != slot82 {
		t.Errorf("attestation = %+v", a)
	}
	if !pub.Equal(slotCert.PublicKey) {
		t.Error("attested public key differs from the generated one")
	}
	if _, err := piv.Verify(attCert, slotCert); err == nil {
		t.Error("the virtual card's attestation verifies against Yubico's roots")
	}
}

func TestPivGoReset(t *testing.T) {
	_, _, yk := insertedYK(t, 1000010, "")
	generate82(t, yk, piv.AlgorithmEC256, piv.PINPolicyOnce, piv.TouchPolicyNever)
	if err := yk.SetPIN(piv.DefaultPIN, "55555555"); err != nil {
		t.Fatal(err)
	}
	if err := yk.SetRetries(piv.DefaultManagementKey, "55555555", 5, 4); err != nil {
		t.Fatalf("SetRetries: %v", err)
	}
	if n, err := yk.Retries(); err != nil || n != 5 {
		t.Fatalf("Retries after SetRetries = %d, %v; want 5", n, err)
	}
	if err := yk.VerifyPIN(piv.DefaultPIN); err != nil {
		t.Fatalf("SetRetries should reset the PIN to its default: %v", err)
	}
	if err := yk.Reset(); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if _, err := yk.KeyInfo(slot82); !errors.Is(err, piv.ErrNotFound) {
		t.Fatalf("KeyInfo after Reset = %v, want ErrNotFound", err)
	}
	if n, err := yk.Retries(); err != nil || n != 3 {
		t.Fatalf("Retries after Reset = %d, %v; want 3", n, err)
	}
	if err := yk.VerifyPIN(piv.DefaultPIN); err != nil {
		t.Fatalf("default PIN after Reset: %v", err)
	}
	if _, err := yk.AttestationCertificate(); err != nil {
		t.Fatalf("attestation certificate lost by Reset: %v", err)
	}
}
