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

// SlotCert is the custos content of a slot's certificate: the extension's
// value, which custos reads as the version 2 ceremony record and anchor
// (docs/FORMAT.md section 12), or a version 1 ShareCert decoded. This
// package does not interpret a version 2 payload: package escrow does, with
// the store's record codec.
type SlotCert struct {
	// Payload is the extension's value in version 2 (JSON text); nil for
	// a version 1 certificate.
	Payload []byte
	// V1 is a version 1 certificate's content; nil for version 2.
	V1 *ShareCert
	// Key is the fingerprint of the certificate's public key: the key the
	// certificate was written for (the card's slot key, unless someone
	// wrote another certificate into the slot).
	Key shares.Fingerprint
}

// maxPayload bounds a version 2 payload: a PIV certificate object holds at
// most a few kilobytes on any card.
const maxPayload = 4096

// slotCertOf returns the custos content of cert, nil when cert has no
// custos extension.
func slotCertOf(cert *x509.Certificate) (*SlotCert, error) {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidShareCert) {
			continue
		}
		fp, err := shares.FingerprintOf(cert.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("share certificate: %w", err)
		}
		if len(ext.Value) > 0 && ext.Value[0] == '{' {
			if len(ext.Value) > maxPayload {
				return nil, fmt.Errorf("share certificate: payload of %d bytes, more than %d", len(ext.Value), maxPayload)
			}
			return &SlotCert{Payload: bytes.Clone(ext.Value), Key: fp}, nil
		}
		sc, err := parseShareCert(ext.Value)
		if err != nil {
			return nil, err
		}
		return &SlotCert{V1: sc, Key: fp}, nil
	}
	return nil, nil
}

// noExpiry is RFC 5280 section 4.1.2.5's "no well-defined expiration date".
var noExpiry = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// newSlotCertificate makes a certificate for the slot's public key, signed by
// a fresh ephemeral P-256 key that is dropped at once, carrying payload (the
// version 2 content, for the share sealed) in a non-critical extension, or
// no extension when sealed is nil: a wiped slot.
func newSlotCertificate(pub *ecdsa.PublicKey, sealed *shares.SealedShare, payload []byte) (*x509.Certificate, error) {
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
	if sealed != nil {
		if len(payload) == 0 || payload[0] != '{' || len(payload) > maxPayload {
			return nil, errors.New("share certificate: the payload is not a version 2 record")
		}
		exts = []pkix.Extension{{Id: oidShareCert, Critical: false, Value: payload}}
		cer := sealed.Ceremony.String()
		subject = fmt.Sprintf("custos share %d of %d, ceremony %s", sealed.Index, sealed.N, cer)
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
