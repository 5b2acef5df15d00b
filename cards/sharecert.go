package cards

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"custos.dev/custos/shares"
)

// oidShareCert identifies the custos share extension: 2.25 followed by the
// integer value of the UUID 00000000-0000-0000-0000-0000762298d1 (ITU-T
// X.667), whose low 31 bits were drawn at random and the rest left zero:
// Go's crypto/x509 (and so piv-go) refuses a certificate with an OID arc of
// 2^31 or more, so a full 128-bit UUID arc would make the card's
// certificate unreadable.
var oidShareCert = asn1.ObjectIdentifier{2, 25, 1981978833}

// shareCertVersion is the version of the extension's layout.
const shareCertVersion = 1

// maxKeyslot is the highest LUKS2 keyslot number (LUKS1 has 0 to 7).
const maxKeyslot = 31

// shareCertExt is the DER layout of the extension's value:
//
//	ShareCert ::= SEQUENCE {
//	    version     INTEGER (1),
//	    keyslot     INTEGER (0..31),  -- the LUKS keyslot of the recovery key
//	    digest      OCTET STRING (SIZE (32)),  -- shares.Digest
//	    commitment  OCTET STRING (SIZE (32)),  -- shares.Commitment of this share
//	    anchor      OCTET STRING (SIZE (32)),  -- the ceremony record's hash
//	    sealed      OCTET STRING  -- the sealed share, docs/FORMAT.md
//	}
//
// The ceremony ID, volume UUID, index, k and n are the sealed share's
// header: they are not repeated, so they cannot disagree.
type shareCertExt struct {
	Version    int
	Keyslot    int
	Digest     []byte
	Commitment []byte
	Anchor     []byte
	Sealed     []byte
}

// marshalShareCert encodes sc as the extension's value.
func marshalShareCert(sc *ShareCert) ([]byte, error) {
	if sc == nil || sc.Sealed == nil {
		return nil, errors.New("share certificate: no sealed share")
	}
	h := sc.Sealed.Header
	if sc.Ceremony != h.Ceremony || sc.Volume != h.Volume || sc.K != h.K || sc.N != h.N || sc.Index != h.Index {
		return nil, errors.New("share certificate: ceremony, volume, index, k or n differ from the sealed share's")
	}
	if sc.Keyslot < 0 || sc.Keyslot > maxKeyslot {
		return nil, fmt.Errorf("share certificate: keyslot %d out of range 0-%d", sc.Keyslot, maxKeyslot)
	}
	sealed, err := sc.Sealed.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("share certificate: %w", err)
	}
	return asn1.Marshal(shareCertExt{
		Version:    shareCertVersion,
		Keyslot:    sc.Keyslot,
		Digest:     sc.Digest[:],
		Commitment: sc.Commitment[:],
		Anchor:     sc.Anchor[:],
		Sealed:     sealed,
	})
}

// parseShareCert decodes the extension's value. It never panics, and
// rejects anything but the exact DER that marshalShareCert writes.
func parseShareCert(b []byte) (*ShareCert, error) {
	var e shareCertExt
	rest, err := asn1.Unmarshal(b, &e)
	if err != nil {
		return nil, fmt.Errorf("share certificate: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("share certificate: trailing bytes")
	}
	if e.Version != shareCertVersion {
		return nil, fmt.Errorf("share certificate: unknown version %d", e.Version)
	}
	if e.Keyslot < 0 || e.Keyslot > maxKeyslot {
		return nil, fmt.Errorf("share certificate: keyslot %d out of range 0-%d", e.Keyslot, maxKeyslot)
	}
	if len(e.Digest) != 32 || len(e.Commitment) != 32 || len(e.Anchor) != 32 {
		return nil, errors.New("share certificate: digest, commitment and anchor must be 32 bytes")
	}
	sealed, err := shares.ParseSealedShare(e.Sealed)
	if err != nil {
		return nil, fmt.Errorf("share certificate: %w", err)
	}
	sc := &ShareCert{
		Ceremony: sealed.Ceremony,
		Volume:   sealed.Volume,
		K:        sealed.K,
		N:        sealed.N,
		Index:    sealed.Index,
		Keyslot:  e.Keyslot,
		Sealed:   sealed,
	}
	copy(sc.Digest[:], e.Digest)
	copy(sc.Commitment[:], e.Commitment)
	copy(sc.Anchor[:], e.Anchor)
	// DER has one encoding per value: anything else was not written by
	// custos and is refused rather than half-trusted.
	again, err := marshalShareCert(sc)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, b) {
		return nil, errors.New("share certificate: not canonical DER")
	}
	return sc, nil
}

// shareCertOf returns the decoded custos extension of cert, nil when cert
// has none.
func shareCertOf(cert *x509.Certificate) (*ShareCert, error) {
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(oidShareCert) {
			return parseShareCert(ext.Value)
		}
	}
	return nil, nil
}

// noExpiry is RFC 5280 section 4.1.2.5's "no well-defined expiration date".
var noExpiry = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// newSlotCertificate makes a certificate for the slot's public key, signed by
// a fresh ephemeral P-256 key that is dropped at once, carrying sc in a
// non-critical extension (or no extension when sc is nil: a wiped slot).
func newSlotCertificate(pub *ecdsa.PublicKey, sc *ShareCert) (*x509.Certificate, error) {
	eph, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	subject, issuer := "custos wiped slot", "custos"
	var exts []pkix.Extension
	if sc != nil {
		v, err := marshalShareCert(sc)
		if err != nil {
			return nil, err
		}
		exts = []pkix.Extension{{Id: oidShareCert, Critical: false, Value: v}}
		cer := uuidString(sc.Ceremony)
		subject = fmt.Sprintf("custos share %d of %d, ceremony %s", sc.Index, sc.N, cer)
		issuer = "custos ceremony " + cer
	}
	now := time.Now().UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:    serial.Add(serial, big.NewInt(1)),
		Subject:         pkix.Name{CommonName: subject},
		NotBefore:       now,
		NotAfter:        noExpiry,
		KeyUsage:        x509.KeyUsageKeyAgreement,
		ExtraExtensions: exts,
	}
	parent := &x509.Certificate{Subject: pkix.Name{CommonName: issuer}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, eph)
	if err != nil {
		return nil, fmt.Errorf("make certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// uuidString formats 16 bytes as a UUID.
func uuidString(id [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:16])
}
