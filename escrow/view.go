package escrow

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

func sortCards(cs []CardRef) {
	slices.SortFunc(cs, func(a, b CardRef) int { return a.Index - b.Index })
}

// tokenEntry is one "custos" token of the volume.
type tokenEntry struct {
	id  int
	rec *Record // nil when the token does not parse
	err error
}

// view is what the volume and the log say about the volume's ceremonies.
type view struct {
	h      *luks.Header
	vid    shares.VolumeID
	tokens []tokenEntry
	log    []*Record // the volume's ceremonies in the log, oldest first
	logErr error     // the log could not be read (nil without a log)
}

// look reads the header, its custos tokens and the log's ceremonies of the
// volume.
func look(ctx context.Context, env *Env) (*view, error) {
	h, err := env.Volume.Inspect(ctx)
	if err != nil {
		return nil, err
	}
	v := &view{h: h}
	if v.vid, err = volumeID(h); err != nil {
		return nil, err
	}
	for _, t := range h.Tokens {
		if t.Type != luks.TokenType {
			continue
		}
		rec, err := parseToken(t.JSON)
		if err == nil && rec.Volume != v.vid {
			rec, err = nil, fmt.Errorf("token: names volume %s, not this one (%s)", rec.Volume, v.vid)
		}
		// A token bound to no keyslot is one whose keyslot was killed
		// (cryptsetup drops the binding); bound to another, it lies.
		if err == nil && len(t.Keyslots) > 0 && !slices.Contains(t.Keyslots, rec.Keyslot) {
			rec, err = nil, fmt.Errorf("token: bound to keyslots %v, but names keyslot %d", t.Keyslots, rec.Keyslot)
		}
		v.tokens = append(v.tokens, tokenEntry{id: t.ID, rec: rec, err: err})
	}
	if env.Log != nil {
		v.log, v.logErr = logCeremonies(env.Log, v.vid.String())
	}
	return v, nil
}

// logCeremonies returns a volume's ceremonies from the log, oldest first.
func logCeremonies(l Log, uuid string) ([]*Record, error) {
	vr, err := l.Volume(uuid)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	var out []*Record
	for _, id := range vr.History {
		sr, err := l.Ceremony(id)
		if err != nil {
			return nil, fmt.Errorf("read log: ceremony %s: %w", id, err)
		}
		r, err := fromStore(sr)
		if err != nil {
			return nil, fmt.Errorf("read log: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

// logRecord returns the log's record of a ceremony, or nil.
func (v *view) logRecord(id shares.CeremonyID) *Record {
	for _, r := range v.log {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// tokenOf returns the token of a ceremony, or nil.
func (v *view) tokenOf(id shares.CeremonyID) *tokenEntry {
	for i := range v.tokens {
		if v.tokens[i].rec != nil && v.tokens[i].rec.ID == id {
			return &v.tokens[i]
		}
	}
	return nil
}

// openRecord returns the log's unfinished ceremony of the volume, or nil.
func (v *view) openRecord() *Record {
	for i := len(v.log) - 1; i >= 0; i-- {
		if v.log[i].Status == StatusOpen {
			return v.log[i]
		}
	}
	return nil
}

// activeLog returns the log's newest active ceremony, or nil.
func (v *view) activeLog() *Record {
	for i := len(v.log) - 1; i >= 0; i-- {
		if v.log[i].Status == StatusActive {
			return v.log[i]
		}
	}
	return nil
}

// candidate is one ceremony that can recover the volume, as the token and
// the log tell it.
type candidate struct {
	rec      *Record
	sources  []string      // "token", "log"
	disputed map[int]error // share index -> *DisagreeError between token and log
	cer      *shares.Ceremony
}

// candidates lists the complete ceremonies whose keyslot is in use, newest
// first (a rotation's new ceremony before the one it replaces). A ceremony
// whose token and log copies disagree as a whole is an error; copies that
// disagree about one share mark that share disputed.
func (v *view) candidates() ([]*candidate, []string, error) {
	var out []*candidate
	var notes []string
	add := func(r *Record, src string) *candidate {
		c := &candidate{rec: r, sources: []string{src}, disputed: map[int]error{}}
		out = append(out, c)
		return c
	}
	for _, t := range v.tokens {
		if t.err != nil {
			notes = append(notes, fmt.Sprintf("token %d is unreadable: %v", t.id, t.err))
			continue
		}
		add(t.rec, "token")
	}
	for _, r := range v.log {
		usable := r.Status == StatusActive || (r.Status == StatusOpen && r.Complete())
		if !usable {
			continue
		}
		if i := slices.IndexFunc(out, func(c *candidate) bool { return c.rec.ID == r.ID }); i >= 0 {
			if err := compare(out[i], r); err != nil {
				return nil, notes, err
			}
			out[i].sources = append(out[i].sources, "log")
			continue
		}
		add(r, "log")
	}
	var keep []*candidate
	for _, c := range out {
		if !c.rec.Complete() {
			continue
		}
		if !v.h.InUse(c.rec.Keyslot) {
			notes = append(notes, fmt.Sprintf("ceremony %s: its keyslot %d holds no key", c.rec.ID, c.rec.Keyslot))
			continue
		}
		c.cer = ceremonyOf(c.rec)
		keep = append(keep, c)
	}
	// Newest first: a ceremony before the one it replaces.
	slices.SortStableFunc(keep, func(a, b *candidate) int {
		switch {
		case a.rec.Replaces == b.rec.ID.String():
			return -1
		case b.rec.Replaces == a.rec.ID.String():
			return 1
		}
		return 0
	})
	return keep, notes, nil
}

// compare checks the log's copy r against the token's copy in c: a
// ceremony-wide difference is an error; a difference about one share marks
// it disputed.
func compare(c *candidate, r *Record) error {
	t := c.rec
	whole := func(field string) error {
		return &DisagreeError{Ceremony: t.ID.String(), Field: field, A: []string{"token"}, B: []string{"log"}}
	}
	switch {
	case t.Volume != r.Volume:
		return whole("volume")
	case t.K != r.K:
		return whole("k")
	case t.N != r.N:
		return whole("n")
	case t.Keyslot != r.Keyslot:
		return whole("keyslot")
	case t.Digest != r.Digest:
		return whole("digest")
	}
	for i := 1; i <= t.N; i++ {
		a, b := t.Card(i), r.Card(i)
		field := ""
		switch {
		case a == nil || b == nil:
			field = "card"
		case a.Serial != b.Serial || a.Fingerprint != b.Fingerprint || a.Slot != b.Slot:
			field = "card"
		case a.Commitment != b.Commitment:
			field = "commitment"
		case !sealedEqual(a.Sealed, b.Sealed):
			field = "sealed share"
		}
		if field != "" {
			c.disputed[i] = &DisagreeError{Ceremony: t.ID.String(), Index: i, Field: field, A: []string{"token"}, B: []string{"log"}}
		}
	}
	return nil
}
