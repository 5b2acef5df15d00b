package vcard

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// CA is the virtual attestation CA: it signs each virtual card's
// attestation certificate, as Yubico's PIV CA signs a YubiKey's. It is
// never Yubico's, so a verifier that trusts only Yubico rejects every
// virtual card.
type CA struct {
	dir  string
	key  *ecdsa.PrivateKey
	root *x509.Certificate
}

// Files of a CA directory.
const (
	caKeyFile  = "ca-key.pem"
	caCertFile = "ca.pem"
)

// caCommonName names the root certificate; it says what it is.
const caCommonName = "custos virtual PIV attestation CA (test only, not Yubico)"

// notAfterForever is RFC 5280 section 4.1.2.5's "no well-defined
// expiration date".
var notAfterForever = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// OpenCA loads the virtual attestation CA kept in dir, creating dir and a
// new CA (key 0600, root certificate 0644) when dir holds none.
func OpenCA(dir string) (*CA, error) {
	ca, err := loadCA(dir)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return ca, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: caCommonName, Organization: []string{"custos"}},
		NotBefore:             time.Now().Add(-time.Hour).UTC(),
		NotAfter:              notAfterForever,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	// The key first: a directory with a certificate but no key is a CA
	// nobody can use, one with a key but no certificate is recreated.
	if err := writeFileAtomic(filepath.Join(dir, caKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	certPath := filepath.Join(dir, caCertFile)
	if err := writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	if err := os.Chmod(certPath, 0o644); err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	return loadCA(dir)
}

func loadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, caCertFile))
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, caKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("load ca %s: not pem", dir)
	}
	root, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load ca %s: %w", dir, err)
	}
	key, err := parseECKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load ca %s: %w", dir, err)
	}
	if !key.PublicKey.Equal(root.PublicKey) {
		return nil, fmt.Errorf("load ca %s: key does not match certificate", dir)
	}
	return &CA{dir: dir, key: key, root: root}, nil
}

// Root is the CA's self-signed root certificate: the attestation root to
// trust for virtual cards (piv.Verifier{Roots: ...}).
func (ca *CA) Root() *x509.Certificate { return ca.root }

// RootPath is the file holding Root, PEM encoded.
func (ca *CA) RootPath() string { return filepath.Join(ca.dir, caCertFile) }

// Pool is a certificate pool holding only Root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.root)
	return p
}

// issueAttestationKey makes a card's attestation key (slot F9) and its
// certificate, signed by the CA.
func (ca *CA) issueAttestationKey(serial uint32) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("custos virtual PIV attestation, serial %d", serial), Organization: []string{"custos"}},
		NotBefore:             time.Now().Add(-time.Hour).UTC(),
		NotAfter:              notAfterForever,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	return key, der, nil
}

// Yubico's attestation extensions,
// https://developers.yubico.com/PIV/Introduction/PIV_attestation.html.
var (
	oidFirmware   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 41482, 3, 3}
	oidSerial     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 41482, 3, 7}
	oidPolicy     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 41482, 3, 8}
	oidFormFactor = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 41482, 3, 9}
)

// formFactorUSBAKeychain is the form factor the card reports.
const formFactorUSBAKeychain = 0x01

// attestSlot is ATTEST: a certificate for the key in slot, signed by the
// card's attestation key. The subject follows the YubiKey's
// "YubiKey PIV Attestation <slot>" so that verifiers find the slot; the
// issuer chain ends at the virtual CA.
func (st *state) attestSlot(slot byte) ([]byte, error) {
	k := st.Keys[slot]
	obj := st.Objects[tagAttestCert]
	if k == nil || obj == nil {
		return nil, errors.New("no key or attestation certificate")
	}
	ts, err := parseTLVs(obj)
	if err != nil {
		return nil, err
	}
	der, ok := findTLV(ts, 0x70)
	if !ok {
		return nil, errors.New("attestation object holds no certificate")
	}
	issuer, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	serial, err := asn1.Marshal(int64(st.Serial))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: fmt.Sprintf("YubiKey PIV Attestation %02x", slot)},
		NotBefore:    issuer.NotBefore,
		NotAfter:     issuer.NotAfter,
		ExtraExtensions: []pkix.Extension{
			{Id: oidFirmware, Value: st.version[:]},
			{Id: oidSerial, Value: serial},
			{Id: oidPolicy, Value: []byte{k.PINPolicy, k.TouchPolicy}},
			{Id: oidFormFactor, Value: []byte{formFactorUSBAKeychain}},
		},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, issuer, &k.priv.PublicKey, st.attest)
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}
