package escrow

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"custos.dev/custos/cards"
	"custos.dev/custos/shares"
)

// promptError is a failure to read a secret: it stops a ceremony instead
// of asking for another card.
type promptError struct{ err error }

func (e *promptError) Error() string { return "read secret: " + e.err.Error() }
func (e *promptError) Unwrap() error { return e.err }

// fatal tells a failure that stops the ceremony from one that another card
// (or the same card again) may overcome.
func fatal(ctx context.Context, err error) bool {
	var pe *promptError
	return ctx.Err() != nil || errors.As(err, &pe) || crashed(err)
}

// newShares is a split being written to cards.
type newShares struct {
	rec    *Record
	cer    *shares.Ceremony
	shares []*shares.Share
	names  []string
	// slots are the custody slots to reuse, by serial: a rotation seals
	// to the same key of a card it keeps.
	slots map[string]uint8
	fp    string // failpoint after each card
}

// writeAll writes the shares not yet written, card by card, logging each
// card as soon as its share is verified. A card that fails is set aside
// and another asked for.
func (ns *newShares) writeAll(ctx context.Context, env *Env) error {
	for i := len(ns.rec.Cards) + 1; i <= ns.rec.N; i++ {
		name := ""
		if i <= len(ns.names) {
			name = ns.names[i-1]
		}
		for {
			msg := fmt.Sprintf("insert card %d of %d", i, ns.rec.N)
			if name != "" {
				msg += " (custodian " + name + ")"
			}
			card, err := waitCard(ctx, env, msg)
			if err != nil {
				return err
			}
			ref, err := ns.writeOne(env, card, i, name)
			card.Close()
			if err == nil {
				ns.rec.Cards = append(ns.rec.Cards, *ref)
				if _, err := put(env, ns.rec); err != nil {
					return err
				}
				env.say("card %s: share %d of %d written, read back and opened", ref.Serial, i, ns.rec.N)
				if err := step(ns.fp); err != nil {
					return err
				}
				break
			}
			if fatal(ctx, err) {
				return err
			}
			env.say("%s: insert another card", err)
		}
	}
	return nil
}

// writeOne seals share i to the card, writes it, reads it back and opens
// it with the custodian's PIN.
func (ns *newShares) writeOne(env *Env, card Card, i int, name string) (*CardRef, error) {
	serial := serialOf(card)
	for _, c := range ns.rec.Cards {
		if c.Serial == serial {
			return nil, fmt.Errorf("card %s already holds share %d of this ceremony: %w", serial, c.Index, ErrSeenTwice)
		}
	}
	slots, err := card.Custody()
	if err != nil {
		return nil, fmt.Errorf("card %s: read custody slots: %w", serial, err)
	}
	si, err := ns.pickSlot(serial, slots)
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = custodianOf(env, serial)
	}
	pub, err := slotKey(si)
	if err != nil {
		return nil, fmt.Errorf("card %s slot %02x: %w", serial, si.Slot, err)
	}
	sh := ns.shares[i-1]
	sealed, err := shares.Seal(sh, pub)
	if err != nil {
		return nil, fmt.Errorf("card %s: seal share %d: %w", serial, i, err)
	}
	head, err := env.Log.Head()
	if err != nil {
		return nil, fmt.Errorf("read log head: %w", err)
	}
	sc := &cards.ShareCert{Ceremony: ns.rec.ID, Volume: ns.rec.Volume, K: ns.rec.K, N: ns.rec.N, Index: i,
		Keyslot: ns.rec.Keyslot, Digest: ns.cer.Digest, Commitment: ns.cer.Commitments[i-1],
		Anchor: head.Hash, Sealed: sealed}
	err = withPIN(env, serial, name, func(pin []byte) error {
		if err := card.VerifyPIN(pin); err != nil {
			return err
		}
		if err := card.WriteShare(si.Slot, sc); err != nil {
			return err
		}
		back, err := card.ReadShare(si.Slot)
		if err != nil {
			return err
		}
		if back.Ceremony != sc.Ceremony || back.Volume != sc.Volume || back.K != sc.K || back.N != sc.N ||
			back.Index != sc.Index || back.Keyslot != sc.Keyslot || back.Digest != sc.Digest ||
			back.Commitment != sc.Commitment || back.Anchor != sc.Anchor || !sealedEqual(back.Sealed, sealed) {
			return ErrReadBack
		}
		opened, err := card.OpenShare(si.Slot, pin, back.Sealed)
		if err != nil {
			return err
		}
		defer opened.Wipe()
		if opened.Header != sh.Header || !bytes.Equal(opened.Value, sh.Value) || ns.cer.Check(opened) != nil {
			return ErrReadBack
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("card %s: share %d: %w", serial, i, err)
	}
	return &CardRef{Index: i, Serial: serial, Slot: si.Slot, Fingerprint: si.Fingerprint, Custodian: name,
		Commitment: ns.cer.Commitments[i-1], Sealed: sealed}, nil
}

// pickSlot chooses the custody slot for a new share: the slot a rotation
// keeps, else a slot with no share, else one holding a stale share of this
// same volume.
func (ns *newShares) pickSlot(serial string, slots []cards.SlotInfo) (cards.SlotInfo, error) {
	if s, ok := ns.slots[serial]; ok {
		for _, si := range slots {
			if si.Slot == s {
				return si, nil
			}
		}
		return cards.SlotInfo{}, fmt.Errorf("card %s: custody slot %02x of the old ceremony is gone: %w", serial, s, ErrNoFreeSlot)
	}
	for _, si := range slots {
		if si.Share == nil {
			return si, nil
		}
	}
	for _, si := range slots {
		if si.Share.Volume == ns.rec.Volume {
			return si, nil
		}
	}
	if len(slots) == 0 {
		return cards.SlotInfo{}, withHint(fmt.Errorf("card %s: %w: it holds no custody key", serial, ErrNoFreeSlot), "run custos card init on it first")
	}
	return cards.SlotInfo{}, withHint(fmt.Errorf("card %s: %w: every custody slot holds a share of another volume", serial, ErrNoFreeSlot),
		"run custos card init --slot on it to make another custody key")
}

// custodianOf is the custodian the log's card registry names for a card,
// or "".
func custodianOf(env *Env, serial string) string {
	if env.Log == nil {
		return ""
	}
	cr, err := env.Log.Card(serial)
	if err != nil {
		return ""
	}
	return cr.Custodian
}
