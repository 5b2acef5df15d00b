package escrow

import (
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"strings"

	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// Ceremony statuses, as the log records them.
const (
	StatusOpen      = store.StatusOpen      // begun, not every share written and verified
	StatusActive    = store.StatusActive    // the volume's recovery path
	StatusAbandoned = store.StatusAbandoned // stopped; its keyslot killed or named for removal
	StatusRetired   = store.StatusRetired   // rotated out; its keyslot killed
)

// Record is a ceremony's content, the one type every copy decodes to: the
// LUKS2 token, a card's certificate and the log's ceremony events
// (docs/FORMAT.md section 8). Everything in it is public.
type Record = store.Record

// RecordCard is one custodian's part in a ceremony.
type RecordCard = store.RecordCard

// idOf is a record's ceremony ID in the type package shares uses.
func idOf(r *Record) shares.CeremonyID { return shares.CeremonyID(r.ID) }

// volumeOf is a record's volume ID in the type package shares uses.
func volumeOf(r *Record) shares.VolumeID { return shares.VolumeID(r.Volume) }

// idText is a ceremony ID as the log and the messages write it.
func idText(id [16]byte) string { return shares.CeremonyID(id).String() }

// sealedOf parses a card's sealed share and checks that it belongs where
// the record puts it: its header names the record's ceremony, volume, k, n
// and the card's index, and it is sealed to the card's key. The store
// decodes the record; these checks need package shares, so every copy goes
// through them here before its shares are used (checkRecord).
func sealedOf(r *Record, c *RecordCard) (*shares.SealedShare, error) {
	s, err := shares.ParseSealedShare(c.Sealed)
	if err != nil {
		return nil, fmt.Errorf("card %d: sealed share: %w", c.Index, err)
	}
	h := s.Header
	if h.Ceremony != idOf(r) || h.Volume != volumeOf(r) || h.Index != c.Index || h.K != r.K || h.N != r.N {
		return nil, fmt.Errorf("card %d: the sealed share names another ceremony, volume, index or quorum", c.Index)
	}
	if s.Recipient != shares.Fingerprint(c.Key) {
		return nil, fmt.Errorf("card %d: the share is sealed to another key than the card's", c.Index)
	}
	return s, nil
}

// checkRecord checks every sealed share of a record (sealedOf).
func checkRecord(r *Record) error {
	for i := range r.Cards {
		if _, err := sealedOf(r, &r.Cards[i]); err != nil {
			return err
		}
	}
	return nil
}

// ceremonyOf is the shares.Ceremony a record describes, with the
// commitments of the cards it has (the others zero).
func ceremonyOf(r *Record) *shares.Ceremony {
	c := &shares.Ceremony{ID: idOf(r), Volume: volumeOf(r), K: r.K, N: r.N, Digest: shares.Digest(r.Digest),
		Commitments: make([]shares.Commitment, r.N), SecretSize: shares.RecoveryKeySize}
	for _, cr := range r.Cards {
		if cr.Index >= 1 && cr.Index <= r.N {
			c.Commitments[cr.Index-1] = shares.Commitment(cr.Commitment)
		}
	}
	return c
}

// frameOf is a copy of the record without its cards: what a provisional
// token holds, and the part of a ceremony that never changes.
func frameOf(r *Record) *Record {
	f := r.Clone()
	f.Cards = nil
	return f
}

// withCard is the record with one card only: what that card's certificate
// carries.
func withCard(r *Record, c RecordCard) *Record {
	f := frameOf(r)
	f.Cards = []RecordCard{c}
	return f
}

// attestationDigest is what a record keeps of a card's attestation: the
// SHA-256 of the slot's attestation certificate followed by the card's
// attestation-signing certificate (docs/FORMAT.md section 8). The
// certificates themselves go into the log.
func attestationDigest(cert, intermediate *x509.Certificate) [32]byte {
	h := sha256.New()
	h.Write(cert.Raw)
	h.Write(intermediate.Raw)
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// who names a card for messages: "card 12345678 (custodian alice)", the
// custodian's name made safe for a terminal.
func who(serial, custodian string) string {
	s := "card " + safeText(serial)
	if custodian != "" {
		s += " (custodian " + safeText(custodian) + ")"
	}
	return s
}

// fingerprintText is a card key's fingerprint as the log writes it.
func fingerprintText(k [32]byte) string { return shares.Fingerprint(k).String() }

// upgraded is a version 1 record as custos writes it in version 2 (rollcall
// and rotate upgrade what they touch): the same ceremony, with each
// custodian's name made to follow the text rule (docs/FORMAT.md section 7;
// version 1 took any name) and, since version 1 recorded no attestation,
// allow_unattested set. A version 1 record with no digest (an enrollment
// that never split its key) cannot be upgraded.
func upgraded(r *Record) (*Record, error) {
	if r.Version >= 2 {
		return r, nil
	}
	if r.Digest == ([32]byte{}) || r.Keyslot < 0 {
		return nil, fmt.Errorf("ceremony %s: a version 1 record without a digest or keyslot cannot be written in version 2", idText(r.ID))
	}
	u := r.Clone()
	u.Version, u.AllowUnattested = 2, true
	for i := range u.Cards {
		u.Cards[i].Custodian = textOf(u.Cards[i].Custodian)
	}
	return u, nil
}

// textOf makes any name follow the text rule: the characters it refuses
// become "?", surrounding spaces go, and it is cut to 64 bytes.
func textOf(s string) string {
	s = strings.TrimSpace(store.ShowText(s))
	if store.CheckText(s) != nil {
		return ""
	}
	return s
}
