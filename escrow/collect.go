package escrow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"custos.dev/custos/cards"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// CardOutcome is what became of one card inserted during a ceremony.
type CardOutcome struct {
	Serial    string
	Reader    string
	Custodian string // "" when the card is not known
	Index     int    // the share index, 0 when the card holds none of ours
	// Err is nil when the card did its part; otherwise it says why not,
	// wrapping ErrNotCustodian, ErrSeenTwice, ErrOtherCeremony,
	// ErrCopiesDisagree (a *DisagreeError), shares.ErrCommitmentMismatch,
	// a shares.Rejection, cards.ErrWrongPIN (a *cards.PINError), or a
	// card error.
	Err error
}

// OK reports whether the card did its part.
func (o CardOutcome) OK() bool { return o.Err == nil }

// choice is one copy's entry for a share index on which copies disagree.
type choice struct {
	card   RecordCard
	copies []string
}

// candidate is one ceremony a recovery may reconstruct: the record it
// follows, the copies behind that record, and the shares gathered for it.
type candidate struct {
	rec     *Record
	sources []string
	// confirmed: two independent copies agree on the ceremony (its
	// frame); cards may then be matched to it without reading their
	// certificates.
	confirmed bool
	// choices lists, for a share index whose copies disagree, each copy's
	// entry: the card's own certificate settles which one to open.
	choices map[int][]choice
	// fromCards: learnt from cards' certificates alone; each card adds
	// its own entry.
	fromCards bool
	cer       *shares.Ceremony
	// need is how many good shares to hold before combining: K, one
	// more after each combination that failed its digest (so that the
	// bad share can be found among them).
	need int
	// dead is why the candidate was given up (its key does not open its
	// keyslot), nil while it is in play.
	dead error
	pool []pooled
}

// pooled is one good share and the card outcome it came from.
type pooled struct {
	share   *shares.Share
	outcome int
}

func (c *candidate) name() string {
	return fmt.Sprintf("ceremony %s (from %s)", idText(c.rec.ID), strings.Join(c.sources, " and "))
}

func newCandidate(rec *Record, sources []string, confirmed bool) *candidate {
	return &candidate{rec: rec, sources: sources, confirmed: confirmed, choices: map[int][]choice{},
		cer: ceremonyOf(rec), need: rec.K}
}

// candidates lists the ceremonies that can recover the volume — complete,
// with their keyslot in use — confirmed ones first, then newest first. A
// ceremony whose token and log disagree about its frame becomes two
// unconfirmed candidates, one per copy; copies that disagree about one card
// leave that card's choices to its certificate. notes say what was set
// aside and why.
func (v *view) candidates() ([]*candidate, []string) {
	var out []*candidate
	var notes []string
	cs := v.claims()
	usable := func(r *Record, src string) bool {
		if !r.Complete() {
			return false
		}
		if !v.h.InUse(r.Keyslot) {
			notes = append(notes, fmt.Sprintf("ceremony %s (%s): its keyslot %d holds no key", idText(r.ID), src, r.Keyslot))
			return false
		}
		return true
	}
	for i := len(cs) - 1; i >= 0; i-- {
		c := cs[i]
		var tr, lr *Record
		if c.token != nil && usable(c.token.tok.Record, c.token.name()) {
			tr = c.token.tok.Record
		}
		if c.log != nil && (c.log.Status == StatusActive || c.log.Status == StatusOpen) && usable(c.log.Record, "log") {
			lr = c.log.Record
		}
		switch {
		case tr != nil && lr != nil && c.frameAgrees():
			cand := newCandidate(tr.Clone(), []string{c.token.name(), "log"}, true)
			for _, d := range c.diffs {
				a, b := tr.Card(d.Index), lr.Card(d.Index)
				cand.choices[d.Index] = []choice{{*a, []string{c.token.name()}}, {*b, []string{"log"}}}
			}
			out = append(out, cand)
			if len(c.diffs) > 0 {
				notes = append(notes, describeDiffs(c)...)
			}
		case tr != nil && lr != nil:
			notes = append(notes, describeDiffs(c)...)
			out = append(out, newCandidate(tr, []string{c.token.name()}, false), newCandidate(lr, []string{"log"}, false))
		case tr != nil:
			out = append(out, newCandidate(tr, []string{c.token.name()}, false))
		case lr != nil:
			out = append(out, newCandidate(lr, []string{"log"}, false))
		}
	}
	slices.SortStableFunc(out, func(a, b *candidate) int {
		switch {
		case a.confirmed && !b.confirmed:
			return -1
		case b.confirmed && !a.confirmed:
			return 1
		}
		return 0
	})
	return out, notes
}

// collector takes cards one at a time and opens the share each holds of one
// of the candidate ceremonies, checking it on its own.
type collector struct {
	env   *Env
	v     *view
	cands []*candidate
	// learn: no token or log told of a usable ceremony; cards'
	// certificates define the candidates.
	learn bool
	// known are the volume's other ceremonies in the log (retired,
	// abandoned) with their status, to name a card holding a share of
	// one of them.
	known map[[16]byte]string
	// only, if set, restricts the collection to one ceremony.
	only *[16]byte
	// readCerts reads every card's certificate (rollcall: to check its
	// anchor), even where two copies would let the card be matched
	// without it.
	readCerts bool
	// upgrade, if set, makes a card whose certificate is of version 1 (or
	// whose anchor failed) write a version 2 certificate with the same
	// share while it proves it opens the share: payload returns the new
	// certificate's content for the card's entry.
	upgrade func(cand *candidate, e RecordCard) ([]byte, error)
	// lastCert is the certificate match read for the card being taken.
	lastCert *certCopy
	// pin, if set, runs fn with the card's PIN in place of withPIN: a
	// one-pass recovery keeps each card's PIN for that card's pass.
	pin func(serial, custodian string, fn func(pin []byte) error) error

	seen     map[string]bool // serials of cards that did their part
	outcomes []CardOutcome
	// problems are disagreements between copies and failed anchors
	// noticed on the way, each naming the copies.
	problems []string
	// anchorErrs are the anchors of certificates that failed their check.
	anchorErrs []error
}

func newCollector(env *Env, v *view, cands []*candidate) *collector {
	c := &collector{env: env, v: v, cands: cands, known: map[[16]byte]string{}, seen: map[string]bool{}}
	for _, s := range v.log {
		c.known[s.Record.ID] = s.Status
	}
	c.learn = len(cands) == 0
	return c
}

// wipe wipes every share collected.
func (c *collector) wipe() {
	for _, cand := range c.cands {
		for _, p := range cand.pool {
			p.share.Wipe()
		}
		cand.pool = nil
	}
}

func (c *collector) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !slices.Contains(c.problems, msg) {
		c.problems = append(c.problems, msg)
		c.env.say("warning: %s", msg)
	}
}

// taken is one share opened and checked.
type taken struct {
	cand  *candidate
	card  RecordCard
	share *shares.Share
}

// take examines one card: which ceremony it speaks for, whether its copies
// agree, then opens its share with the custodian's PIN and checks it
// against its commitment. It records the card's outcome and, when the
// share is good, adds it to its candidate's pool. It does not close the
// card.
func (c *collector) take(card Card) (*taken, CardOutcome) {
	out := CardOutcome{Serial: serialOf(card), Reader: card.Reader()}
	t, err := c.examine(card, &out)
	return t, c.record(out, t, err)
}

// record keeps a card's outcome and, when its share is good, adds the
// share to its candidate's pool.
func (c *collector) record(out CardOutcome, t *taken, err error) CardOutcome {
	out.Err = err
	c.outcomes = append(c.outcomes, out)
	if err == nil {
		c.seen[out.Serial] = true
		t.cand.pool = append(t.cand.pool, pooled{share: t.share, outcome: len(c.outcomes) - 1})
	}
	return out
}

// live are the candidates still in play.
func (c *collector) live() []*candidate {
	var out []*candidate
	for _, cand := range c.cands {
		if cand.dead == nil && (c.only == nil || cand.rec.ID == *c.only) {
			out = append(out, cand)
		}
	}
	return out
}

func (c *collector) examine(card Card, out *CardOutcome) (*taken, error) {
	p, err := c.prepare(card, out)
	if err != nil {
		return nil, err
	}
	var sh *shares.Share
	err = c.withPIN(out.Serial, p.entry.Custodian, func(pin []byte) error {
		var err error
		if p.payload != nil {
			sh, err = card.WriteShare(p.entry.Slot, pin, p.sealed, p.payload)
		} else {
			sh, err = card.OpenShare(p.entry.Slot, pin, p.sealed)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("card %s: open share %d: %w", out.Serial, p.entry.Index, err)
	}
	return c.finish(out.Serial, p, sh)
}

// pending is a card matched to a candidate's entry, its share not yet
// opened.
type pending struct {
	cand   *candidate
	entry  RecordCard
	sealed *shares.SealedShare
	// payload, when set, is the version 2 certificate to write while the
	// card opens its share (rollcall's upgrade).
	payload []byte
}

// prepare finds the ceremony a card speaks for and the sealed share it is
// to open (match), before any PIN is asked.
func (c *collector) prepare(card Card, out *CardOutcome) (*pending, error) {
	serial := out.Serial
	if c.seen[serial] {
		return nil, fmt.Errorf("card %s: %w", serial, ErrSeenTwice)
	}
	cand, entry, err := c.match(card, serial)
	if err != nil {
		return nil, err
	}
	out.Index, out.Custodian = entry.Index, entry.Custodian
	if slices.ContainsFunc(cand.pool, func(p pooled) bool { return p.share.Index == entry.Index }) {
		return nil, fmt.Errorf("card %s: share %d: %w", serial, entry.Index, ErrSeenTwice)
	}
	sealed, err := sealedOf(cand.rec, &entry)
	if err != nil {
		return nil, fmt.Errorf("card %s: %w", serial, err)
	}
	p := &pending{cand: cand, entry: entry, sealed: sealed}
	if cc := c.lastCert; c.upgrade != nil && cc != nil && (cc.rec.Version < 2 || c.anchorFailed(cc)) {
		if p.payload, err = c.upgrade(cand, entry); err != nil {
			return nil, fmt.Errorf("card %s: %w", serial, err)
		}
	}
	// The slot's key must be the one the record names (the attested one,
	// which the share is sealed to) before the custodian is asked for the
	// PIN: a card whose key was replaced is set aside without it.
	if err := card.CheckRecipient(entry.Slot, sealed); err != nil {
		return nil, fmt.Errorf("card %s: share %d: %w", serial, entry.Index, err)
	}
	return p, nil
}

// finish checks a share the card opened against what its entry promised:
// its header, then its commitment.
func (c *collector) finish(serial string, p *pending, sh *shares.Share) (*taken, error) {
	cand, entry := p.cand, p.entry
	hd := sh.Header
	if hd.Ceremony != idOf(cand.rec) || hd.Volume != volumeOf(cand.rec) || hd.Index != entry.Index || hd.K != cand.rec.K || hd.N != cand.rec.N {
		sh.Wipe()
		return nil, fmt.Errorf("card %s: share %d: %w", serial, entry.Index, shares.ErrForeignShare)
	}
	if err := cand.cer.Check(sh); err != nil {
		sh.Wipe()
		return nil, fmt.Errorf("card %s: share %d: %w", serial, entry.Index, err)
	}
	return &taken{cand: cand, card: entry, share: sh}, nil
}

// withPIN runs fn with the card's PIN: c.pin when set, else asked for.
func (c *collector) withPIN(serial, custodian string, fn func(pin []byte) error) error {
	if c.pin != nil {
		return c.pin(serial, custodian, fn)
	}
	return withPIN(c.env, serial, custodian, fn)
}

// match finds the ceremony a card speaks for and the entry of its share.
//
// A card named by exactly one candidate that two copies confirm, with no
// dispute about its entry, is matched without reading its certificate
// (OpenShare still checks the slot key before the PIN). Otherwise the
// card's certificates are read: a card speaks for the ceremony its own
// certificate names, and where the copies disagree about its entry, the
// certificate sides with one of them.
func (c *collector) match(card Card, serial string) (*candidate, RecordCard, error) {
	var byRecord []named
	for _, cand := range c.live() {
		for _, e := range cand.rec.Cards {
			if e.Serial == serial {
				byRecord = append(byRecord, named{cand, e})
			}
		}
	}
	c.lastCert = nil
	if !c.readCerts && len(byRecord) == 1 && byRecord[0].cand.confirmed && byRecord[0].cand.choices[byRecord[0].entry.Index] == nil {
		return byRecord[0].cand, byRecord[0].entry, nil
	}

	certs, err := c.certsOf(card, serial, byRecord)
	if err != nil {
		return nil, RecordCard{}, fmt.Errorf("card %s: read custody slots: %w", serial, err)
	}
	var otherCeremony error
	for _, cc := range certs {
		if cc.err != nil {
			c.note("card %s slot %02x: its certificate is unreadable: %v", serial, cc.slot, cc.err)
			continue
		}
		cand, entry, err := c.speaksFor(cc)
		if err != nil {
			otherCeremony = err
			continue
		}
		if cand != nil {
			c.lastCert = cc
			return cand, entry, nil
		}
	}
	// A ceremony enrolled to a custodian set was sealed without its cards:
	// no certificate names it, and its record is the only word on which
	// share a card holds. The card is matched by that entry (the card
	// checks that the share is sealed to its key before the PIN is sent);
	// what the shares recover is proven by the keyslot it opens, or
	// given up.
	for _, n := range byRecord {
		if n.cand.rec.Set != nil && n.cand.choices[n.entry.Index] == nil {
			return n.cand, n.entry, nil
		}
	}
	if otherCeremony != nil {
		return nil, RecordCard{}, otherCeremony
	}
	// No certificate names a ceremony in play. A card the records name
	// whose certificate is gone (wiped by mistake, never written) can
	// still open the share the agreeing copies hold for it.
	for _, n := range byRecord {
		if n.cand.confirmed && n.cand.choices[n.entry.Index] == nil {
			return n.cand, n.entry, nil
		}
	}
	return nil, RecordCard{}, fmt.Errorf("card %s: %w", serial, ErrNotCustodian)
}

// named is a card as a candidate's record names it.
type named struct {
	cand  *candidate
	entry RecordCard
}

// certCopy is a card's certificate decoded: the record with this card's
// entry alone, and its anchor.
type certCopy struct {
	serial string
	slot   uint8
	rec    *Record
	anchor store.Head
	err    error
}

func (cc *certCopy) name() string {
	return fmt.Sprintf("card %s's certificate", cc.serial)
}

// certsOf reads the card's custos certificates: those of the slots the
// records name for it, else every custody slot's.
func (c *collector) certsOf(card Card, serial string, byRecord []named) ([]*certCopy, error) {
	var out []*certCopy
	seen := map[uint8]bool{}
	for _, n := range byRecord {
		slot := n.entry.Slot
		if seen[slot] {
			continue
		}
		seen[slot] = true
		sc, err := card.ReadShare(slot)
		if errors.Is(err, cards.ErrNoCustodySlot) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c.decodeCert(serial, slot, sc))
	}
	if len(out) > 0 {
		return out, nil
	}
	slots, err := card.Custody()
	if err != nil {
		return nil, err
	}
	for _, s := range slots {
		if s.Cert != nil {
			out = append(out, c.decodeCert(serial, s.Slot, s.Cert))
		}
	}
	return out, nil
}

// decodeCert decodes a slot's certificate and checks its anchor against
// the log.
func (c *collector) decodeCert(serial string, slot uint8, sc *cards.SlotCert) *certCopy {
	cc := &certCopy{serial: serial, slot: slot}
	cc.rec, cc.anchor, cc.err = decodeSlotCert(serial, slot, sc)
	if cc.err != nil || cc.rec.Volume != [16]byte(c.v.vid) {
		return cc
	}
	if c.v.hasLog && c.v.logErr == nil && c.v.logState(cc.rec.ID) != nil && cc.rec.Version >= 2 {
		if err := c.env.Log.CheckAnchor(cc.anchor, cc.rec); err != nil {
			c.anchorErrs = append(c.anchorErrs, fmt.Errorf("%s: %w", cc.name(), err))
			c.note("%s: anchor %s: %v", cc.name(), cc.anchor, err)
		}
	}
	return cc
}

// anchorFailed tells whether a certificate's anchor failed its check.
func (c *collector) anchorFailed(cc *certCopy) bool {
	prefix := cc.name() + ":"
	return slices.ContainsFunc(c.anchorErrs, func(err error) bool { return strings.HasPrefix(err.Error(), prefix) })
}

// decodeSlotCert decodes the custos content of a slot's certificate, of
// either version, into a record holding this card alone.
func decodeSlotCert(serial string, slot uint8, sc *cards.SlotCert) (*Record, store.Head, error) {
	var rec *Record
	var anchor store.Head
	switch {
	case sc.V1 != nil:
		rec = recordOfV1Cert(serial, slot, sc.V1)
	default:
		cp, err := store.ParseCardCopy(sc.Payload)
		if err != nil {
			return nil, anchor, err
		}
		rec, anchor = cp.Record, cp.Anchor
	}
	if len(rec.Cards) != 1 {
		return nil, anchor, fmt.Errorf("the certificate holds %d cards, not one", len(rec.Cards))
	}
	e := rec.Cards[0]
	switch {
	case e.Serial != serial:
		return nil, anchor, fmt.Errorf("the certificate names card %s", safeText(e.Serial))
	case e.Slot != slot:
		return nil, anchor, fmt.Errorf("the certificate names slot %02x", e.Slot)
	case e.Key != [32]byte(sc.Key):
		return nil, anchor, errors.New("the certificate's key is not the one its share is sealed to")
	}
	if err := checkRecord(rec); err != nil {
		return nil, anchor, err
	}
	return rec, anchor, nil
}

// recordOfV1Cert turns a version 1 certificate (custos before the version
// 2 record) into a record with this card alone.
func recordOfV1Cert(serial string, slot uint8, sc *cards.ShareCert) *Record {
	r := &Record{Version: 1, ID: [16]byte(sc.Ceremony), Volume: [16]byte(sc.Volume), K: sc.K, N: sc.N,
		Keyslot: sc.Keyslot, Digest: [32]byte(sc.Digest)}
	e := RecordCard{Index: sc.Index, Serial: serial, Slot: slot, Commitment: [32]byte(sc.Commitment)}
	if sc.Sealed != nil {
		e.Key = [32]byte(sc.Sealed.Recipient)
		e.Sealed, _ = sc.Sealed.MarshalBinary()
	}
	r.Cards = []RecordCard{e}
	return r
}

// differences compares two copies, ignoring what a version 1 copy cannot
// hold (the keyslot's salt, the attestation, the set).
func differences(a, b *Record) []store.Difference {
	ds := store.Compare(a, b)
	if a.Version >= 2 && b.Version >= 2 {
		return ds
	}
	return slices.DeleteFunc(ds, func(d store.Difference) bool {
		switch d.Field {
		case "v", "salt", "attestation", "set", "allow_unattested", "custodian":
			return true
		}
		return false
	})
}

// speaksFor matches a certificate to a candidate: the ceremony it names,
// the variant whose frame it agrees with, and the entry to open. It
// returns nil and no error for a certificate of another volume or of no
// ceremony in play, and ErrOtherCeremony for one of this volume's other
// ceremonies.
func (c *collector) speaksFor(cc *certCopy) (*candidate, RecordCard, error) {
	rec := cc.rec
	if rec.Volume != [16]byte(c.v.vid) {
		return nil, RecordCard{}, nil
	}
	e := rec.Cards[0]
	var sameID []*candidate
	for _, cand := range c.live() {
		if cand.rec.ID == rec.ID {
			sameID = append(sameID, cand)
		}
	}
	if len(sameID) == 0 {
		if st, ok := c.known[rec.ID]; ok && st != StatusActive && st != StatusOpen {
			return nil, RecordCard{}, fmt.Errorf("card %s: %w (%s, %s)", cc.serial, ErrOtherCeremony, idText(rec.ID), st)
		}
		// A ceremony no token or log in play holds — the real one, when
		// a forged token took the real one's place — is learnt from the
		// cards that name it: k of them recover the volume alone.
		given := slices.ContainsFunc(c.cands, func(k *candidate) bool { return k.rec.ID == rec.ID })
		if !given && (c.only == nil || *c.only == rec.ID) && c.v.h.InUse(rec.Keyslot) {
			cand := newCandidate(frameOf(rec), []string{cc.name()}, false)
			cand.fromCards = true
			c.cands = append(c.cands, cand)
			return c.join(cand, cc)
		}
		if c.learn {
			return nil, RecordCard{}, nil
		}
		return nil, RecordCard{}, fmt.Errorf("card %s: %w (%s, %s)", cc.serial, ErrOtherCeremony, idText(rec.ID), "unknown to the token and the log")
	}
	// The variant whose frame the certificate agrees with.
	var cand *candidate
	for _, k := range sameID {
		if !slices.ContainsFunc(differences(rec, frameOf(k.rec)), func(d store.Difference) bool { return d.Index == 0 }) {
			cand = k
			break
		}
	}
	if cand == nil {
		// The certificate disagrees with every copy of its ceremony.
		if c.learn && sameID[0].fromCards {
			nc := newCandidate(frameOf(rec), []string{cc.name()}, false)
			nc.fromCards = true
			c.cands = append(c.cands, nc)
			c.note("ceremony %s: %s disagrees with the other cards about the ceremony; trying both", idText(rec.ID), cc.name())
			return c.join(nc, cc)
		}
		cand = sameID[0]
		c.note("ceremony %s: %s disagrees with %s about the ceremony; following them", idText(rec.ID), cc.name(), strings.Join(cand.sources, " and "))
		if !cand.confirmed {
			cand.sources = append(cand.sources, "not "+cc.name())
		}
	} else if !cand.confirmed && !cand.fromCards {
		cand.confirmed = true
		cand.sources = append(cand.sources, cc.name())
	}
	if cand.fromCards {
		return c.join(cand, cc)
	}
	return c.entryFor(cand, cc, e)
}

// join adds a certificate's entry to a candidate learnt from cards.
func (c *collector) join(cand *candidate, cc *certCopy) (*candidate, RecordCard, error) {
	e := cc.rec.Cards[0]
	if have := cand.rec.Card(e.Index); have != nil {
		if have.Serial != e.Serial || have.Key != e.Key {
			return nil, RecordCard{}, &DisagreeError{Ceremony: idText(cand.rec.ID), Index: e.Index, Field: "card",
				A: []string{cc.name()}, B: []string{"card " + have.Serial + "'s certificate"}}
		}
		return cand, *have, nil
	}
	cand.rec.Cards = append(cand.rec.Cards, e)
	slices.SortFunc(cand.rec.Cards, func(a, b RecordCard) int { return a.Index - b.Index })
	cand.cer = ceremonyOf(cand.rec)
	return cand, e, nil
}

// entryFor chooses the entry to open for a card whose certificate names
// the candidate's ceremony: the one the most copies agree on.
func (c *collector) entryFor(cand *candidate, cc *certCopy, e RecordCard) (*candidate, RecordCard, error) {
	same := func(a RecordCard) bool {
		return !slices.ContainsFunc(differences(withCard(cand.rec, a), withCard(cand.rec, e)), func(d store.Difference) bool { return d.Index > 0 })
	}
	if ch := cand.choices[e.Index]; ch != nil {
		for _, x := range ch {
			if same(x.card) {
				var others []string
				for _, y := range ch {
					if !same(y.card) {
						others = append(others, y.copies...)
					}
				}
				c.note("ceremony %s: card %d's entry: %s and %s agree, %s differs; following the two", idText(cand.rec.ID), e.Index,
					strings.Join(x.copies, ", "), cc.name(), strings.Join(others, ", "))
				return cand, x.card, nil
			}
		}
		c.note("ceremony %s: card %d's entry differs in every copy (%s, %s)", idText(cand.rec.ID), e.Index, copiesOf(ch), cc.name())
		return nil, RecordCard{}, &DisagreeError{Ceremony: idText(cand.rec.ID), Index: e.Index, Field: "card", A: []string{cc.name()}, B: cand.sources}
	}
	have := cand.rec.Card(e.Index)
	if have == nil {
		return nil, RecordCard{}, fmt.Errorf("card %s: %w", cc.serial, ErrNotCustodian)
	}
	if have.Serial != e.Serial || have.Key != e.Key {
		return nil, RecordCard{}, &DisagreeError{Ceremony: idText(cand.rec.ID), Index: e.Index, Field: "card",
			A: []string{cc.name()}, B: cand.sources}
	}
	if !same(*have) {
		c.note("ceremony %s: %s differs from %s about card %d's entry; following them", idText(cand.rec.ID), cc.name(), strings.Join(cand.sources, " and "), e.Index)
	}
	return cand, *have, nil
}

func copiesOf(ch []choice) string {
	var out []string
	for _, x := range ch {
		out = append(out, x.copies...)
	}
	return strings.Join(out, ", ")
}

// ready returns a candidate with enough good shares to combine, or nil.
func (c *collector) ready() *candidate {
	for _, cand := range c.live() {
		if len(cand.pool) >= cand.need {
			return cand
		}
	}
	return nil
}

// best returns the largest number of good shares of one ceremony and the
// number it needs.
func (c *collector) best() (good, need int) {
	for _, cand := range c.live() {
		g := len(cand.pool)
		if need == 0 || g > good || (g == good && cand.need < need) {
			good, need = g, cand.need
		}
	}
	return good, need
}

// combine reconstructs a ready candidate's secret. Shares Combine sets
// aside are recorded as their cards' outcomes and dropped from the pool.
// When the shares do not reproduce the ceremony's digest, no share can be
// blamed yet: the candidate waits for one more card, and the next
// combination names the share that does not fit. A nil secret with no
// error means: ask for more cards.
func (c *collector) combine(cand *candidate) ([]byte, error) {
	shs := make([]*shares.Share, len(cand.pool))
	for i, p := range cand.pool {
		shs[i] = p.share
	}
	secret, rejected, err := cand.cer.Combine(shs)
	var qe *shares.QuorumError
	switch {
	case errors.Is(err, shares.ErrDigestMismatch):
		cand.need = len(cand.pool) + 1
		c.env.say("the %d shares of ceremony %s do not combine to its key: one is bad; insert one more card to find it", len(cand.pool), idText(cand.rec.ID))
		return nil, nil
	case err != nil && !errors.As(err, &qe):
		return nil, fmt.Errorf("combine shares of ceremony %s: %w: %w", idText(cand.rec.ID), ErrVerification, err)
	}
	bad := map[int]bool{}
	for _, r := range rejected {
		bad[r.Position] = true
		pos := cand.pool[r.Position].outcome
		c.outcomes[pos].Err = fmt.Errorf("card %s: %w", c.outcomes[pos].Serial, r)
		delete(c.seen, c.outcomes[pos].Serial)
		c.env.say("%s: share %d set aside: %v", who(c.outcomes[pos].Serial, c.outcomes[pos].Custodian), r.Index, r.Err)
	}
	var keep []pooled
	for i, p := range cand.pool {
		if bad[i] {
			p.share.Wipe()
		} else {
			keep = append(keep, p)
		}
	}
	cand.pool = keep
	return secret, nil
}

// drop gives a candidate up: its recovered key did not open its keyslot.
func (c *collector) drop(cand *candidate, why error) {
	cand.dead = why
	for _, p := range cand.pool {
		p.share.Wipe()
	}
	cand.pool = nil
	c.note("%s: %v: its copies are suspect", cand.name(), why)
}

// stuck is the error for a collection with no candidate left to try (and
// nothing to learn from cards): every candidate was given up, or none was
// there. nil while one is in play.
func (c *collector) stuck() error {
	if len(c.live()) > 0 || c.learn {
		return nil
	}
	if err := c.givenUp(); err != nil {
		return err
	}
	return c.quorumError(errors.New("no ceremony is left to try"))
}

// next asks for the next card and takes it.
func (c *collector) next(ctx context.Context) error {
	good, need := c.best()
	msg := "insert a custodian's card"
	if need > 0 {
		msg = fmt.Sprintf("insert a custodian's card (%d of %d good shares)", good, need)
	}
	card, err := waitCard(ctx, c.env, msg)
	if err != nil {
		return c.quorumError(err)
	}
	t, out := c.take(card)
	card.Close()
	c.report(t, out)
	if fatal(ctx, out.Err) {
		// No PIN could be read (input ended, terminal gone): asking
		// for another card would only wait out the timeout.
		return out.Err
	}
	return nil
}

// report tells the operator what became of one card.
func (c *collector) report(t *taken, out CardOutcome) {
	w := who(out.Serial, out.Custodian)
	if out.Err != nil {
		c.env.say("%s: set aside: %s", w, describe(out.Err))
		return
	}
	c.env.say("%s: share %d matches its commitment", w, t.card.Index)
}

// describe writes an outcome's error without repeating the card's serial.
func describe(err error) string {
	s := err.Error()
	if i := strings.Index(s, ": "); i > 0 && strings.HasPrefix(s, "card ") {
		return s[i+2:]
	}
	return s
}

// givenUp is the error for a collection whose every candidate was given
// up because its recovered key opened no keyslot: the quorum was reached,
// what failed is the verification (exit 4). It is nil when no candidate
// was given up.
func (c *collector) givenUp() error {
	var dead []error
	for _, cand := range c.cands {
		if cand.dead != nil {
			dead = append(dead, fmt.Errorf("%s: %w", cand.name(), cand.dead))
		}
	}
	if len(dead) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrNoCeremonyLeft, errors.Join(dead...))
}

// quorumError is the error for running out of cards (or time) before K
// good shares.
func (c *collector) quorumError(cause error) error {
	good, need := c.best()
	err := fmt.Errorf("%w: %d of %d good shares: %w", ErrQuorum, good, need, cause)
	if need == 0 {
		err = fmt.Errorf("%w: no custodian card of this volume was inserted: %w", ErrQuorum, cause)
	}
	var dead []string
	for _, cand := range c.cands {
		if cand.dead != nil {
			dead = append(dead, fmt.Sprintf("%s: %v", cand.name(), cand.dead))
		}
	}
	if len(dead) > 0 {
		err = fmt.Errorf("%w (given up: %s)", err, strings.Join(dead, "; "))
	}
	return err
}

func serialOf(c Card) string { return strconv.FormatUint(uint64(c.Serial()), 10) }
