package cards

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
)

// Data objects custos reads or writes, SP 800-73-4 Part 1 Table 3 and
// Yubico's objects (https://developers.yubico.com/PIV/Introduction/Admin_access.html).
const (
	objKeyHistory  uint32 = 0x5fc10c // SP 800-73-4 Part 1 section 3.3.2
	objPrinted     uint32 = 0x5fc109 // PIN-protected: Yubico keeps its "protected data" here
	objAdminData   uint32 = 0x5fff00 // Yubico's PIV manager ("admin") data
	objAttestation uint32 = 0x5fff01 // Yubico: the attestation key's certificate (slot F9)
)

// retiredCertObject is the certificate object of retired slot 0x82+i:
// 5FC10D to 5FC120, SP 800-73-4 Part 1 Table 3.
func retiredCertObject(slot uint8) uint32 { return 0x5fc10d + uint32(slot-firstRetiredSlot) }

// maxCertSize bounds a certificate custos writes: the largest data object a
// YubiKey 5 stores is 3052 bytes, less the object's own tags.
const maxCertSize = 3000

// certObject is a certificate data object's content, SP 800-73-4 Part 1
// Appendix A (Table 10 and the like): the certificate (70), CertInfo (71;
// 00, not compressed) and an empty error detection code (FE), as
// yubico-piv-tool and piv-go write it.
func certObject(der []byte) []byte {
	b := tlvBytes(0x70, der)
	b = appendTLV(b, 0x71, []byte{0})
	return appendTLV(b, 0xfe, nil)
}

// parseCertObject returns the DER certificate in a certificate object. A
// compressed certificate (CertInfo 01) is refused: custos never writes one,
// and inflating what a card sends is a risk for nothing.
func parseCertObject(b []byte) ([]byte, error) {
	ts, err := parseTLVs(b)
	if err != nil {
		return nil, fmt.Errorf("certificate object: %w", err)
	}
	der, ok := findTLV(ts, 0x70)
	if !ok || len(der) == 0 {
		return nil, errors.New("certificate object: no certificate")
	}
	if info, ok := findTLV(ts, 0x71); ok && (len(info) != 1 || info[0] != 0) {
		return nil, errors.New("certificate object: compressed or unknown certificate encoding")
	}
	for _, t := range ts {
		switch t.tag {
		case 0x70, 0x71, 0xfe:
		default:
			return nil, fmt.Errorf("certificate object: unknown tag %x", t.tag)
		}
	}
	return der, nil
}

// keyHistory is the Key History object, SP 800-73-4 Part 1 section 3.3.2
// and Appendix A Table 19: how many retired key-management keys there are,
// numbered from 82, first those whose certificate is on the card
// (keysWithOnCardCerts), then those whose certificate is off the card
// (keysWithOffCardCerts, found at offCardCertURL). PIV middleware (OpenSC's
// PIV driver among others) reads retired slots 82 to 82+onCard-1 only.
type keyHistory struct {
	onCard, offCard int
	url             []byte // offCardCertURL, at most 118 bytes
}

// maxRetired is the number of retired key-management slots, 82 to 95.
const maxRetired = lastRetiredSlot - firstRetiredSlot + 1

// marshal encodes the object's content: C1, C2, F3 when there is a URL, and
// the empty error detection code FE.
func (h keyHistory) marshal() []byte {
	b := tlvBytes(0xc1, []byte{byte(h.onCard)})
	b = appendTLV(b, 0xc2, []byte{byte(h.offCard)})
	if len(h.url) > 0 {
		b = appendTLV(b, 0xf3, h.url)
	}
	return appendTLV(b, 0xfe, nil)
}

// parseKeyHistory decodes the object's content. Both counts must be there
// (they are mandatory) and add up to at most the 20 retired slots.
func parseKeyHistory(b []byte) (keyHistory, error) {
	ts, err := parseTLVs(b)
	if err != nil {
		return keyHistory{}, fmt.Errorf("key history: %w", err)
	}
	var h keyHistory
	seen := map[uint32]bool{}
	for _, t := range ts {
		if seen[t.tag] {
			return keyHistory{}, fmt.Errorf("key history: tag %x twice", t.tag)
		}
		seen[t.tag] = true
		switch t.tag {
		case 0xc1, 0xc2:
			if len(t.value) != 1 || t.value[0] > maxRetired {
				return keyHistory{}, fmt.Errorf("key history: bad count in tag %x", t.tag)
			}
			if t.tag == 0xc1 {
				h.onCard = int(t.value[0])
			} else {
				h.offCard = int(t.value[0])
			}
		case 0xf3:
			if len(t.value) == 0 || len(t.value) > 118 {
				return keyHistory{}, errors.New("key history: bad offCardCertURL")
			}
			h.url = append([]byte(nil), t.value...)
		case 0xfe:
			if len(t.value) != 0 {
				return keyHistory{}, errors.New("key history: non-empty error detection code")
			}
		default:
			return keyHistory{}, fmt.Errorf("key history: unknown tag %x", t.tag)
		}
	}
	if !seen[0xc1] || !seen[0xc2] {
		return keyHistory{}, errors.New("key history: a key count is missing")
	}
	if h.onCard+h.offCard > maxRetired {
		return keyHistory{}, errors.New("key history: more keys than retired slots")
	}
	return h, nil
}

// covering returns the history that counts slot among the keys with their
// certificate on the card: keysWithOnCardCerts grows to reach it, and the
// rest (the off-card keys, the URL) is kept. ok is false when the slot is
// already counted, or when the off-card keys, numbered after the on-card
// ones, would no longer fit in the retired slots.
func (h keyHistory) covering(slot uint8) (keyHistory, bool) {
	need := int(slot-firstRetiredSlot) + 1
	if h.onCard >= need || need+h.offCard > maxRetired {
		return h, false
	}
	h.onCard = need
	return h, true
}

// pivmanObject is one of the two objects Yubico's tools (yubico-piv-tool's
// libykpiv, ykman) keep: the admin data (5FFF00, outer tag 80) and the
// protected data (5FC109, outer tag 88), each a list of one-byte-tag items
// inside one outer TLV. Items custos does not know are kept in place, as
// libykpiv's _set_metadata_item does.
type pivmanObject struct {
	outer byte
	items []tlv
}

// Items of the admin data (80) and of the protected data (88), from
// yubico-piv-tool's lib/internal.h and ykman's PivmanData.
const (
	adminFlags      = 0x81 // one byte: 0x01 PUK blocked, 0x02 management key stored in the protected data
	adminSalt       = 0x82 // 16 bytes: a management key derived from the PIN (PBKDF2); removed when one is stored
	adminTimestamp  = 0x83 // 4 bytes: when the PIN was last changed
	protectedMgmKey = 0x89 // the management key itself

	flagPUKBlocked   = 0x01
	flagMgmProtected = 0x02
)

func parsePivman(b []byte, outer byte) (*pivmanObject, error) {
	v, err := onlyTLV(b, uint32(outer))
	if err != nil {
		return nil, fmt.Errorf("object %02x: %w", outer, err)
	}
	ts, err := parseTLVs(v)
	if err != nil {
		return nil, fmt.Errorf("object %02x: %w", outer, err)
	}
	seen := map[uint32]bool{}
	for _, t := range ts {
		if t.tag > 0xff {
			return nil, fmt.Errorf("object %02x: item tag %x is not one byte", outer, t.tag)
		}
		if seen[t.tag] {
			return nil, fmt.Errorf("object %02x: item %02x twice", outer, t.tag)
		}
		seen[t.tag] = true
	}
	o := &pivmanObject{outer: outer}
	for _, t := range ts {
		o.items = append(o.items, tlv{t.tag, append([]byte(nil), t.value...)})
	}
	return o, nil
}

func (o *pivmanObject) get(tag byte) ([]byte, bool) { return findTLV(o.items, uint32(tag)) }

// set replaces an item in place, or appends it.
func (o *pivmanObject) set(tag byte, value []byte) {
	for i := range o.items {
		if o.items[i].tag == uint32(tag) {
			o.items[i].value = append([]byte(nil), value...)
			return
		}
	}
	o.items = append(o.items, tlv{uint32(tag), append([]byte(nil), value...)})
}

func (o *pivmanObject) del(tag byte) {
	for i := range o.items {
		if o.items[i].tag == uint32(tag) {
			o.items = append(o.items[:i], o.items[i+1:]...)
			return
		}
	}
}

func (o *pivmanObject) marshal() []byte {
	var v []byte
	for _, t := range o.items {
		v = appendTLV(v, t.tag, t.value)
	}
	return tlvBytes(uint32(o.outer), v)
}

// wipe zeroes every item (the protected data holds the management key).
func (o *pivmanObject) wipe() {
	for _, t := range o.items {
		clear(t.value)
	}
}

// protectedAdmin returns the admin data with the flag saying the management
// key is stored in the protected data, and without a PIN-derived salt, as
// yubico-piv-tool's ykpiv_util_set_protected_mgm and ykman's
// "piv access change-management-key --protect" leave it.
func protectedAdmin(o *pivmanObject) *pivmanObject {
	if o == nil {
		o = &pivmanObject{outer: 0x80}
	}
	var flags byte
	if f, ok := o.get(adminFlags); ok && len(f) == 1 {
		flags = f[0]
	}
	o.set(adminFlags, []byte{flags | flagMgmProtected})
	o.del(adminSalt)
	return o
}

// slotMetadata is what Yubico's GET METADATA tells of a key slot or of the
// PIN, PUK or management key (https://developers.yubico.com/PIV/Introduction/Yubico_extensions.html).
type slotMetadata struct {
	alg                    byte // 01: algorithm
	pinPolicy, touchPolicy byte // 02: policies
	origin                 byte // 03: 1 generated, 2 imported
	point                  []byte
	isDefault, hasDefault  bool // 05: still the factory value
	total, remaining       int  // 06: retries
	hasRetries             bool
}

// parseMetadata decodes GET METADATA's answer. Every item it carries must
// have its documented size; items of a later firmware are skipped.
func parseMetadata(b []byte) (slotMetadata, error) {
	ts, err := parseTLVs(b)
	if err != nil {
		return slotMetadata{}, fmt.Errorf("metadata: %w", err)
	}
	var m slotMetadata
	bad := func(what string) (slotMetadata, error) {
		return slotMetadata{}, fmt.Errorf("metadata: malformed %s", what)
	}
	for _, t := range ts {
		v := t.value
		switch t.tag {
		case 0x01:
			if len(v) != 1 {
				return bad("algorithm")
			}
			m.alg = v[0]
		case 0x02:
			if len(v) != 2 {
				return bad("policies")
			}
			m.pinPolicy, m.touchPolicy = v[0], v[1]
		case 0x03:
			if len(v) != 1 {
				return bad("origin")
			}
			m.origin = v[0]
		case 0x04:
			// The public key, as SP 800-73-4 Part 2 Table 25 encodes it:
			// for an EC key the point in tag 86 (an RSA key has 81
			// and 82 instead, and no point).
			ks, err := parseTLVs(v)
			if err != nil {
				return bad("public key")
			}
			if p, ok := findTLV(ks, 0x86); ok {
				m.point = append([]byte(nil), p...)
			}
		case 0x05:
			if len(v) != 1 {
				return bad("default flag")
			}
			m.isDefault, m.hasDefault = v[0] != 0, true
		case 0x06:
			if len(v) != 2 {
				return bad("retries")
			}
			m.total, m.remaining, m.hasRetries = int(v[0]), int(v[1]), true
		}
	}
	return m, nil
}

// p256Point decodes an uncompressed P-256 point (SEC 1 section 2.3.4), as a
// card returns it after GENERATE and in GET METADATA.
func p256Point(p []byte) (*ecdsa.PublicKey, error) {
	if len(p) != 65 || p[0] != 4 {
		return nil, errors.New("not an uncompressed P-256 point")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), p)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return pub, nil
}

// parseGenerated decodes GENERATE ASYMMETRIC KEY PAIR's answer, SP 800-73-4
// Part 2 section 3.3.2 and Table 25: 7F49 { 86 point } for an EC key.
func parseGenerated(b []byte) (*ecdsa.PublicKey, error) {
	v, err := onlyTLV(b, 0x7f49)
	if err != nil {
		return nil, fmt.Errorf("generated key: %w", err)
	}
	p, err := onlyTLV(v, 0x86)
	if err != nil {
		return nil, fmt.Errorf("generated key: %w", err)
	}
	return p256Point(p)
}

// parseDynAuth decodes GENERAL AUTHENTICATE's answer, SP 800-73-4 Part 2
// section 3.2.4 and Table 7: the dynamic authentication template 7C holding
// exactly one data object, of tag want.
func parseDynAuth(b []byte, want uint32) ([]byte, error) {
	v, err := onlyTLV(b, 0x7c)
	if err != nil {
		return nil, fmt.Errorf("general authenticate: %w", err)
	}
	inner, err := onlyTLV(v, want)
	if err != nil {
		return nil, fmt.Errorf("general authenticate: %w", err)
	}
	return inner, nil
}

// equalHistory compares two key histories.
func (h keyHistory) equal(o keyHistory) bool {
	return h.onCard == o.onCard && h.offCard == o.offCard && bytes.Equal(h.url, o.url)
}
