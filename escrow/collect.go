package escrow

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"custos.dev/custos/cards"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// collector takes cards one at a time and opens the share each holds of one
// of the candidate ceremonies, checking it on its own.
type collector struct {
	env   *Env
	vid   shares.VolumeID
	cands []*candidate
	// fromCards: no token or log told of a ceremony; the first card's
	// certificate defines it and each card adds its own commitment.
	fromCards bool
	// known are other ceremonies of the volume (retired, abandoned), to
	// tell a card holding one of their shares.
	known map[shares.CeremonyID]string

	seen     map[string]bool // serials already taken
	pools    map[shares.CeremonyID][]*shares.Share
	indexes  map[shares.CeremonyID]map[int]int // share index -> position in outcomes
	outcomes []CardOutcome
}

func newCollector(env *Env, v *view, cands []*candidate) *collector {
	c := &collector{env: env, vid: v.vid, cands: cands, known: map[shares.CeremonyID]string{},
		seen: map[string]bool{}, pools: map[shares.CeremonyID][]*shares.Share{},
		indexes: map[shares.CeremonyID]map[int]int{}}
	for _, r := range v.log {
		c.known[r.ID] = r.Status
	}
	return c
}

// wipe wipes every share collected.
func (c *collector) wipe() {
	for _, p := range c.pools {
		for _, s := range p {
			s.Wipe()
		}
	}
}

// taken is one share opened and checked.
type taken struct {
	cand  *candidate
	ref   *CardRef
	share *shares.Share // nil when the caller asked not to keep it
}

// take examines one card: which ceremony's share it holds, whether its
// copies agree, then opens the share with the custodian's PIN and checks it
// against its commitment. It records the card's outcome and, when the
// share is good, adds it to its ceremony's pool. It does not close the card.
func (c *collector) take(card Card) (*taken, CardOutcome) {
	out := CardOutcome{Serial: serialOf(card), Reader: card.Reader()}
	t, err := c.examine(card, &out)
	out.Err = err
	c.outcomes = append(c.outcomes, out)
	if err == nil {
		c.seen[out.Serial] = true
		c.pools[t.cand.rec.ID] = append(c.pools[t.cand.rec.ID], t.share)
		if c.indexes[t.cand.rec.ID] == nil {
			c.indexes[t.cand.rec.ID] = map[int]int{}
		}
		c.indexes[t.cand.rec.ID][t.ref.Index] = len(c.outcomes) - 1
	}
	return t, out
}

func (c *collector) examine(card Card, out *CardOutcome) (*taken, error) {
	if c.seen[out.Serial] {
		return nil, fmt.Errorf("card %s: %w", out.Serial, ErrSeenTwice)
	}
	slots, err := c.slotsOf(card, out.Serial)
	if err != nil {
		return nil, fmt.Errorf("card %s: read custody slots: %w", out.Serial, err)
	}
	cand, ref, si := c.match(out.Serial, slots)
	if cand == nil {
		for _, s := range slots {
			if s.Share != nil && s.Share.Volume == c.vid {
				status := c.known[s.Share.Ceremony]
				if status == "" {
					status = "unknown"
				}
				return nil, fmt.Errorf("card %s: %w (%s, %s)", out.Serial, ErrOtherCeremony, s.Share.Ceremony, status)
			}
		}
		return nil, fmt.Errorf("card %s: %w", out.Serial, ErrNotCustodian)
	}
	out.Index, out.Custodian = ref.Index, ref.Custodian
	if _, dup := c.indexes[cand.rec.ID][ref.Index]; dup {
		return nil, fmt.Errorf("card %s: share %d: %w", out.Serial, ref.Index, ErrSeenTwice)
	}
	if d := cand.disputed[ref.Index]; d != nil {
		return nil, d
	}
	if err := c.agree(cand, ref, si, out.Serial); err != nil {
		return nil, err
	}
	var sh *shares.Share
	err = withPIN(c.env, out.Serial, ref.Custodian, func(pin []byte) error {
		var err error
		sh, err = card.OpenShare(si.Slot, pin, ref.Sealed)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("card %s: open share %d: %w", out.Serial, ref.Index, err)
	}
	hd := sh.Header
	if hd.Ceremony != cand.rec.ID || hd.Volume != cand.rec.Volume || hd.Index != ref.Index || hd.K != cand.rec.K || hd.N != cand.rec.N {
		sh.Wipe()
		return nil, fmt.Errorf("card %s: share %d: %w", out.Serial, ref.Index, shares.ErrForeignShare)
	}
	if err := cand.cer.Check(sh); err != nil {
		sh.Wipe()
		return nil, fmt.Errorf("card %s: share %d: %w", out.Serial, ref.Index, err)
	}
	return &taken{cand: cand, ref: ref, share: sh}, nil
}

// slotsOf lists the card's custody slots. For a card the records name (by
// serial) it reads only the certificates of the slots they name: listing
// every slot with its key costs a second on a YubiKey-like card. A
// certificate can only be written for the slot's key and is cleared when
// the key is replaced, so one whose sealed share names the recorded key
// vouches for it (OpenShare checks again before it sends the PIN); without
// such a certificate the slots are listed with their keys.
func (c *collector) slotsOf(card Card, serial string) ([]cards.SlotInfo, error) {
	var out []cards.SlotInfo
	seen := map[uint8]bool{}
	for _, cand := range c.cands {
		for _, ref := range cand.rec.Cards {
			if ref.Serial != serial || seen[ref.Slot] {
				continue
			}
			seen[ref.Slot] = true
			sc, err := card.ReadShare(ref.Slot)
			if errors.Is(err, cards.ErrNoCustodySlot) || (err == nil && (sc.Sealed == nil || sc.Sealed.Recipient != ref.Fingerprint)) {
				// No certificate for the recorded key (wiped, or
				// never written): list the slots, keys included.
				return card.Custody()
			}
			if err != nil {
				return nil, err
			}
			out = append(out, cards.SlotInfo{Slot: ref.Slot, Fingerprint: ref.Fingerprint, Share: sc})
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	return card.Custody()
}

// match finds the candidate ceremony and custody slot of a card: a card of
// a ceremony's record (by key fingerprint and serial), or in fromCards mode
// a slot whose certificate names this volume.
func (c *collector) match(serial string, slots []cards.SlotInfo) (*candidate, *CardRef, cards.SlotInfo) {
	for _, cand := range c.cands {
		for _, s := range slots {
			for i := range cand.rec.Cards {
				ref := &cand.rec.Cards[i]
				if ref.Fingerprint == s.Fingerprint && ref.Serial == serial {
					return cand, ref, s
				}
			}
		}
	}
	if !c.fromCards {
		return nil, nil, cards.SlotInfo{}
	}
	for _, s := range slots {
		sc := s.Share
		if sc == nil || sc.Volume != c.vid || sc.Sealed == nil || sc.Sealed.Recipient != s.Fingerprint {
			continue
		}
		var cand *candidate
		for _, k := range c.cands {
			if k.rec.ID == sc.Ceremony {
				cand = k
			}
		}
		if cand == nil {
			if len(c.cands) > 0 {
				continue // a share of another ceremony than the first card's
			}
			r := &Record{ID: sc.Ceremony, Volume: sc.Volume, K: sc.K, N: sc.N, Keyslot: sc.Keyslot,
				Digest: sc.Digest, Status: StatusActive, Anchor: anchorOf(sc.Anchor)}
			cand = &candidate{rec: r, sources: []string{"card " + serial}, disputed: map[int]error{}}
			c.cands = append(c.cands, cand)
		}
		if cand.rec.Card(sc.Index) != nil {
			// Another card claimed this index: the disagreement is named
			// by agree (different serial or key).
			ref := *cand.rec.Card(sc.Index)
			return cand, &ref, s
		}
		cand.rec.Cards = append(cand.rec.Cards, CardRef{Index: sc.Index, Serial: serial, Slot: s.Slot,
			Fingerprint: s.Fingerprint, Commitment: sc.Commitment, Sealed: sc.Sealed})
		sortCards(cand.rec.Cards)
		cand.cer = ceremonyOf(cand.rec)
		return cand, cand.rec.Card(sc.Index), s
	}
	return nil, nil, cards.SlotInfo{}
}

// agree compares the card's own certificate with the token and log copies
// of its share. A certificate of another ceremony (overwritten by a
// rotation that kept the card) is no copy: the share is opened from the
// token or log copy.
func (c *collector) agree(cand *candidate, ref *CardRef, si cards.SlotInfo, serial string) error {
	sc := si.Share
	if ref.Serial != serial || ref.Fingerprint != si.Fingerprint {
		return &DisagreeError{Ceremony: cand.rec.ID.String(), Index: ref.Index, Field: "card",
			A: []string{"card " + serial}, B: cand.sources}
	}
	if sc == nil || sc.Ceremony != cand.rec.ID {
		return nil
	}
	field := ""
	switch {
	case sc.Volume != cand.rec.Volume:
		field = "volume"
	case sc.K != cand.rec.K:
		field = "k"
	case sc.N != cand.rec.N:
		field = "n"
	case sc.Keyslot != cand.rec.Keyslot:
		field = "keyslot"
	case sc.Digest != cand.rec.Digest:
		field = "digest"
	case sc.Index != ref.Index:
		field = "index"
	case sc.Commitment != ref.Commitment:
		field = "commitment"
	case !sealedEqual(sc.Sealed, ref.Sealed):
		field = "sealed share"
	}
	if field == "" {
		return nil
	}
	return &DisagreeError{Ceremony: cand.rec.ID.String(), Index: ref.Index, Field: field,
		A: []string{"card " + serial}, B: cand.sources}
}

// ready returns a candidate with K good shares, or nil.
func (c *collector) ready() *candidate {
	for _, cand := range c.cands {
		if len(c.pools[cand.rec.ID]) >= cand.rec.K {
			return cand
		}
	}
	return nil
}

// best returns the largest number of good shares of one ceremony and the
// threshold it needs.
func (c *collector) best() (good, need int) {
	need = 0
	for _, cand := range c.cands {
		g := len(c.pools[cand.rec.ID])
		if need == 0 || g > good || (g == good && cand.rec.K < need) {
			good, need = g, cand.rec.K
		}
	}
	return good, need
}

// combine reconstructs a ready candidate's secret. Shares Combine sets aside
// are recorded as their cards' outcomes and dropped from the pool; with
// fewer than K left it returns a nil secret and no error, so that the
// caller asks for more cards.
func (c *collector) combine(cand *candidate) ([]byte, error) {
	pool := c.pools[cand.rec.ID]
	secret, rejected, err := cand.cer.Combine(pool)
	var qe *shares.QuorumError
	if errors.As(err, &qe) || (err == nil && len(rejected) > 0 && secret == nil) {
		var keep []*shares.Share
		bad := map[int]bool{}
		for _, r := range rejected {
			bad[r.Position] = true
			if pos, ok := c.indexes[cand.rec.ID][pool[r.Position].Index]; ok {
				c.outcomes[pos].Err = fmt.Errorf("card %s: %w", c.outcomes[pos].Serial, r)
				delete(c.indexes[cand.rec.ID], pool[r.Position].Index)
			}
		}
		for i, s := range pool {
			if bad[i] {
				s.Wipe()
			} else {
				keep = append(keep, s)
			}
		}
		c.pools[cand.rec.ID] = keep
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("combine shares of ceremony %s: %w: %w", cand.rec.ID, ErrVerification, err)
	}
	return secret, nil
}

// gather asks for cards until one candidate has K good shares and combines
// them, returning the secret and the candidate. label names what the cards
// are for, e.g. "recover".
func (c *collector) gather(ctx context.Context) ([]byte, *candidate, error) {
	for {
		if cand := c.ready(); cand != nil {
			secret, err := c.combine(cand)
			if err != nil {
				return nil, nil, err
			}
			if secret != nil {
				return secret, cand, nil
			}
			continue
		}
		good, need := c.best()
		msg := "insert a custodian's card"
		if need > 0 {
			msg = fmt.Sprintf("insert a custodian's card (%d of %d good shares)", good, need)
		}
		card, err := waitCard(ctx, c.env, msg)
		if err != nil {
			return nil, nil, c.quorumError(err)
		}
		t, out := c.take(card)
		card.Close()
		c.report(t, out)
		if fatal(ctx, out.Err) {
			// No PIN could be read (input ended, terminal gone): asking
			// for another card would only wait out the timeout.
			return nil, nil, out.Err
		}
	}
}

// report tells the operator what became of one card.
func (c *collector) report(t *taken, out CardOutcome) {
	who := "card " + out.Serial
	if out.Custodian != "" {
		who += " (custodian " + out.Custodian + ")"
	}
	if out.Err != nil {
		c.env.say("%s: set aside: %s", who, describe(out.Err))
		return
	}
	c.env.say("%s: share %d matches its commitment", who, t.ref.Index)
}

// describe writes an outcome's error without repeating the card's serial.
func describe(err error) string {
	s := err.Error()
	if i := strings.Index(s, ": "); i > 0 && strings.HasPrefix(s, "card ") {
		return s[i+2:]
	}
	return s
}

// quorumError is the error for running out of cards (or time) before K
// good shares.
func (c *collector) quorumError(cause error) error {
	good, need := c.best()
	err := fmt.Errorf("%w: %d of %d good shares: %w", ErrQuorum, good, need, cause)
	if need == 0 {
		err = fmt.Errorf("%w: no custodian card of this volume was inserted: %w", ErrQuorum, cause)
	}
	return withHint(err, "insert more custodians' cards, or run custos status %s to see who holds them", c.env.device())
}

// anchorOf turns a certificate's anchor (a hash without its event number)
// into a head.
func anchorOf(h [32]byte) store.Head { return store.Head{Hash: h} }
