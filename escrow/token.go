package escrow

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// tokenVersion is the version of the token's "custos" members.
const tokenVersion = 1

// maxTokenSize bounds the token JSON parseToken reads (a LUKS2 JSON area
// is at most 4 MiB).
const maxTokenSize = 4 << 20

// tokenJSON is the LUKS2 token of type "custos": the ceremony record, every
// sealed share and commitment, and the log head when it was written. Bytes
// are hex (IDs, digests, fingerprints, commitments) or standard base64
// (sealed shares, the envelope of docs/FORMAT.md).
type tokenJSON struct {
	Type     string      `json:"type"`
	Keyslots []string    `json:"keyslots"`
	Version  int         `json:"custos_version"`
	Ceremony string      `json:"ceremony"`
	Volume   string      `json:"volume"`
	K        int         `json:"k"`
	N        int         `json:"n"`
	Keyslot  int         `json:"keyslot"`
	Digest   string      `json:"digest"`
	Status   string      `json:"status"`
	Replaces string      `json:"replaces,omitempty"`
	Anchor   string      `json:"anchor,omitempty"`
	Cards    []tokenCard `json:"cards"`
}

type tokenCard struct {
	Index       int    `json:"index"`
	Serial      string `json:"serial"`
	Slot        string `json:"slot"`
	Fingerprint string `json:"fingerprint"`
	Custodian   string `json:"custodian,omitempty"`
	Commitment  string `json:"commitment"`
	Sealed      string `json:"sealed"`
}

// encodeToken writes a complete record as a token.
func encodeToken(r *Record) ([]byte, error) {
	if !r.Complete() {
		return nil, errors.New("encode token: ceremony is not complete")
	}
	t := tokenJSON{
		Type: luks.TokenType, Keyslots: []string{strconv.Itoa(r.Keyslot)}, Version: tokenVersion,
		Ceremony: r.ID.String(), Volume: r.Volume.String(), K: r.K, N: r.N, Keyslot: r.Keyslot,
		Digest: hex.EncodeToString(r.Digest[:]), Status: r.Status, Replaces: r.Replaces,
	}
	if r.Anchor != (store.Head{}) {
		t.Anchor = r.Anchor.String()
	}
	for _, c := range r.Cards {
		b, err := c.Sealed.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("encode token: card %d: %w", c.Index, err)
		}
		t.Cards = append(t.Cards, tokenCard{
			Index: c.Index, Serial: c.Serial, Slot: slotText(c.Slot), Fingerprint: c.Fingerprint.String(),
			Custodian: c.Custodian, Commitment: c.Commitment.String(), Sealed: base64.StdEncoding.EncodeToString(b),
		})
	}
	return json.Marshal(t)
}

// parseToken reads a token of type "custos". The bytes are untrusted (the
// header can hold anything): every field is checked, and a token that is
// not a complete, consistent ceremony record is refused.
func parseToken(b []byte) (*Record, error) {
	if len(b) > maxTokenSize {
		return nil, errors.New("token too large")
	}
	var t tokenJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	if dec.More() {
		return nil, errors.New("token: trailing data")
	}
	if t.Type != luks.TokenType {
		return nil, fmt.Errorf("token: type %q is not %q", clip(t.Type), luks.TokenType)
	}
	if t.Version != tokenVersion {
		return nil, fmt.Errorf("token: custos_version %d is not one this custos reads (%d)", t.Version, tokenVersion)
	}
	r := &Record{K: t.K, N: t.N, Keyslot: t.Keyslot, Status: t.Status, Replaces: t.Replaces}
	var err error
	if r.ID, err = shares.ParseCeremonyID(t.Ceremony); err != nil {
		return nil, fmt.Errorf("token: ceremony: %w", err)
	}
	if r.Volume, err = shares.ParseVolumeID(t.Volume); err != nil {
		return nil, fmt.Errorf("token: volume: %w", err)
	}
	if err := checkKN(t.K, t.N); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	if t.Keyslot < 0 || t.Keyslot >= luks.LUKS2Keyslots {
		return nil, fmt.Errorf("token: keyslot %d out of range", t.Keyslot)
	}
	if t.Status != StatusActive {
		return nil, fmt.Errorf("token: status %q", clip(t.Status))
	}
	if t.Replaces != "" {
		if _, err := shares.ParseCeremonyID(t.Replaces); err != nil {
			return nil, fmt.Errorf("token: replaces: %w", err)
		}
	}
	if err := r.Digest.UnmarshalText([]byte(t.Digest)); err != nil {
		return nil, fmt.Errorf("token: digest: %w", err)
	}
	if t.Anchor != "" {
		if r.Anchor, err = store.ParseHead(t.Anchor); err != nil {
			return nil, fmt.Errorf("token: anchor: %w", err)
		}
	}
	if len(t.Cards) != t.N {
		return nil, fmt.Errorf("token: %d cards for n=%d", len(t.Cards), t.N)
	}
	seen := map[int]bool{}
	for _, c := range t.Cards {
		if c.Index < 1 || c.Index > t.N || seen[c.Index] {
			return nil, fmt.Errorf("token: card index %d out of 1-%d or repeated", c.Index, t.N)
		}
		seen[c.Index] = true
		cr := CardRef{Index: c.Index, Serial: c.Serial, Custodian: c.Custodian}
		if c.Serial == "" || len(c.Serial) > 64 {
			return nil, fmt.Errorf("token: card %d: bad serial", c.Index)
		}
		slot, err := strconv.ParseUint(c.Slot, 16, 8)
		if err != nil || slot < 0x82 || slot > 0x95 {
			return nil, fmt.Errorf("token: card %d: slot %q", c.Index, clip(c.Slot))
		}
		cr.Slot = uint8(slot)
		if err := cr.Fingerprint.UnmarshalText([]byte(c.Fingerprint)); err != nil {
			return nil, fmt.Errorf("token: card %d: fingerprint: %w", c.Index, err)
		}
		if err := cr.Commitment.UnmarshalText([]byte(c.Commitment)); err != nil {
			return nil, fmt.Errorf("token: card %d: commitment: %w", c.Index, err)
		}
		raw, err := base64.StdEncoding.DecodeString(c.Sealed)
		if err != nil {
			return nil, fmt.Errorf("token: card %d: sealed share: %w", c.Index, err)
		}
		if cr.Sealed, err = shares.ParseSealedShare(raw); err != nil {
			return nil, fmt.Errorf("token: card %d: sealed share: %w", c.Index, err)
		}
		hd := cr.Sealed.Header
		if hd.Ceremony != r.ID || hd.Volume != r.Volume || hd.Index != c.Index || hd.K != r.K || hd.N != r.N {
			return nil, fmt.Errorf("token: card %d: sealed share's header names another ceremony, index or quorum", c.Index)
		}
		if cr.Sealed.Recipient != cr.Fingerprint {
			return nil, fmt.Errorf("token: card %d: sealed share is sealed to another key than the card's", c.Index)
		}
		r.Cards = append(r.Cards, cr)
	}
	sortCards(r.Cards)
	return r, nil
}

// clip shortens untrusted text for a message.
func clip(s string) string {
	const max = 40
	out := []rune{}
	for _, r := range s {
		if len(out) == max {
			return string(out) + "..."
		}
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}
