package escrow

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/cards"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
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
// card (its attestation and the ceremony record with its entry) as soon as
// its share is verified. A card that fails is set aside and another asked
// for. When no other card comes, the error says so and, when a card was
// set aside for a check that failed (its attestation, its read-back),
// wraps that refusal too: the ceremony stopped because a verification
// failed (exit 4), not merely for want of a card.
func (ns *newShares) writeAll(ctx context.Context, env *Env) error {
	var refused error
	for i := len(ns.rec.Cards) + 1; i <= ns.rec.N; i++ {
		name := ""
		if i <= len(ns.names) {
			name = ns.names[i-1]
		}
		for {
			msg := fmt.Sprintf("insert card %d of %d", i, ns.rec.N)
			if name != "" {
				msg += " (custodian " + safeText(name) + ")"
			}
			card, err := waitCard(ctx, env, msg)
			if err != nil {
				if refused != nil {
					return fmt.Errorf("%w; a card was set aside before: %w", err, refused)
				}
				return err
			}
			entry, att, err := ns.writeOne(env, card, i, name)
			card.Close()
			if err == nil {
				ns.rec.Cards = append(ns.rec.Cards, *entry)
				if err := logCard(env, ns.rec, entry, att); err != nil {
					return err
				}
				env.say("%s: share %d of %d written, read back and opened", who(entry.Serial, entry.Custodian), i, ns.rec.N)
				if err := step(ns.fp); err != nil {
					return err
				}
				break
			}
			if fatal(ctx, err) {
				return err
			}
			if errors.Is(err, ErrVerification) {
				refused = err
			}
			env.say("%s: insert another card", err)
		}
	}
	return nil
}

// logCard records, in one transaction, the card's attestation (the
// certificates, so that anyone can verify them again from the log) and
// the ceremony with the card's entry.
func logCard(env *Env, rec *Record, entry *RecordCard, att *cards.Attestation) error {
	_, err := env.Log.Update(func(tx *store.Tx) error {
		if att != nil {
			reg := store.CardRegistration{Serial: entry.Serial, Custodian: entry.Custodian, Slot: slotText(entry.Slot),
				Fingerprint: shares.Fingerprint(entry.Key).String()}
			reg.Attestation = append(append(reg.Attestation, att.Cert.Raw...), att.Intermediate.Raw...)
			if reg.Custodian == "" {
				reg.Custodian = unnamed
			}
			if _, err := tx.RegisterCard(env.actor(), idText(rec.ID), reg); err != nil {
				return err
			}
		}
		_, err := tx.PutCeremony(env.actor(), StatusOpen, rec)
		return err
	})
	if err != nil {
		return fmt.Errorf("log card %s: %w", entry.Serial, err)
	}
	return nil
}

// writeOne seals share i to the card's attested key, writes it with the
// ceremony's record into the slot's certificate and, with one PIN
// verification, has the card open it and reads it back.
func (ns *newShares) writeOne(env *Env, card Card, i int, name string) (*RecordCard, *cards.Attestation, error) {
	serial := serialOf(card)
	for _, c := range ns.rec.Cards {
		if c.Serial == serial {
			return nil, nil, fmt.Errorf("card %s already holds share %d of this ceremony: %w", serial, c.Index, ErrSeenTwice)
		}
	}
	slots, err := card.Custody()
	if err != nil {
		return nil, nil, fmt.Errorf("card %s: read custody slots: %w", serial, err)
	}
	si, err := ns.pickSlot(serial, slots)
	if err != nil {
		return nil, nil, err
	}
	if name == "" {
		name = custodianOf(env, serial)
	}
	att, err := attest(env, card, si, ns.rec.AllowUnattested)
	if err != nil {
		return nil, nil, fmt.Errorf("card %s slot %02x: %w", serial, si.Slot, err)
	}
	pub, err := si.PublicKey.ECDH()
	if err != nil {
		return nil, nil, fmt.Errorf("card %s slot %02x: %w", serial, si.Slot, err)
	}
	sh := ns.shares[i-1]
	sealed, err := shares.Seal(sh, pub)
	if err != nil {
		return nil, nil, fmt.Errorf("card %s: seal share %d: %w", serial, i, err)
	}
	sealedBytes, err := sealed.MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	entry := &RecordCard{Index: i, Serial: serial, Slot: si.Slot, Custodian: name, Key: [32]byte(si.Fingerprint),
		Commitment: [32]byte(ns.cer.Commitments[i-1]), Sealed: sealedBytes}
	if att != nil {
		entry.Attestation = attestationDigest(att.Cert, att.Intermediate)
	}
	head, err := env.Log.Head()
	if err != nil {
		return nil, nil, fmt.Errorf("read log head: %w", err)
	}
	payload, err := store.EncodeCardCopy(withCard(ns.rec, *entry), head)
	if err != nil {
		return nil, nil, fmt.Errorf("card %s: %w", serial, err)
	}
	err = withPIN(env, serial, name, func(pin []byte) error {
		opened, err := card.WriteShare(si.Slot, pin, sealed, payload)
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
		return nil, nil, fmt.Errorf("card %s: share %d: %w", serial, i, err)
	}
	return entry, att, nil
}

// attest checks that the slot's key was generated on a genuine card, with
// a PIN policy that makes the PIN needed to open a share: the card's
// attestation of the slot, verified against Yubico's roots and env.Roots.
// With allowUnattested (the ceremony's explicit policy) a card that cannot
// attest is accepted with a warning; a failed check is never accepted.
func attest(env *Env, card Card, si cards.SlotInfo, allowUnattested bool) (*cards.Attestation, error) {
	att, err := card.Attest(si.Slot, env.Roots)
	if err != nil {
		if allowUnattested && errors.Is(err, cards.ErrNoAttestation) {
			env.say("warning: card %d slot %02x has no attestation: accepted only because the ceremony allows unattested cards", card.Serial(), si.Slot)
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %w", ErrUnattested, err)
	}
	switch {
	case att.Fingerprint != si.Fingerprint:
		return nil, fmt.Errorf("%w: the attested key is not the slot's key", ErrUnattested)
	case att.PINPolicy != piv.PINPolicyOnce && att.PINPolicy != piv.PINPolicyAlways:
		return nil, fmt.Errorf("%w: the key's pin policy lets it be used without the pin", ErrUnattested)
	}
	return att, nil
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
		if si.Cert == nil {
			return si, nil
		}
	}
	for _, si := range slots {
		if rec, _, err := decodeSlotCert(serial, si.Slot, si.Cert); err == nil && rec.Volume == ns.rec.Volume {
			return si, nil
		}
	}
	if len(slots) == 0 {
		return cards.SlotInfo{}, fmt.Errorf("card %s: %w", serial, ErrNoCustodyKey)
	}
	return cards.SlotInfo{}, fmt.Errorf("card %s: %w", serial, ErrSlotsFull)
}

// custodianOf is the custodian the log's card registry names for a card,
// or "" (also when the registry's name would not be valid in a record).
func custodianOf(env *Env, serial string) string {
	if env.Log == nil {
		return ""
	}
	cr, err := env.Log.Card(serial)
	if err != nil || cr.Custodian == unnamed || store.CheckText(cr.Custodian) != nil {
		return ""
	}
	return cr.Custodian
}

// unnamed stands in the log's registry for a card enrolled without a
// custodian's name (the registry wants one); it is no name to carry into
// a ceremony.
const unnamed = "unnamed"
