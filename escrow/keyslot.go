package escrow

import (
	"context"
	"errors"
	"fmt"

	"custos.dev/custos/luks"
)

// slotState is what a ceremony's remembered keyslot number holds now.
type slotState int

const (
	slotFree    slotState = iota // no key under the number
	slotOwn                      // the ceremony's own keyslot, proven
	slotUnknown                  // a key, but custos cannot prove it is the ceremony's
	slotOther                    // a key that is not the ceremony's: another salt
)

// ownership says whether keyslot rec.Keyslot of h is still the one custos
// added for rec. Proof is the recorded salt (Record.KeyslotSalt) matching
// the keyslot's, or else key, the ceremony's recovery key while the
// process that made it still holds it, opening the keyslot. A keyslot
// number alone proves nothing: after a crash an operator may have added a
// key of their own, and cryptsetup puts it in the first free keyslot.
func ownership(ctx context.Context, env *Env, h *luks.Header, rec *Record, key []byte) (slotState, error) {
	ks := h.Keyslot(rec.Keyslot)
	if rec.Keyslot < 0 || ks == nil {
		return slotFree, nil
	}
	if rec.KeyslotSalt != "" {
		if ks.Salt == rec.KeyslotSalt {
			return slotOwn, nil
		}
		return slotOther, nil
	}
	if key != nil {
		err := env.Volume.TestKey(ctx, key, rec.Keyslot)
		switch {
		case err == nil:
			return slotOwn, nil
		case errors.Is(err, luks.ErrWrongKey):
			return slotOther, nil
		default:
			return slotUnknown, err
		}
	}
	return slotUnknown, nil
}

// recordSalt reads back the salt of the keyslot just added for rec and
// logs it, so that a rerun after a crash can tell that keyslot from a key
// added later under the same number.
func recordSalt(ctx context.Context, env *Env, rec *Record) error {
	h, err := env.Volume.Inspect(ctx)
	if err != nil {
		return err
	}
	ks := h.Keyslot(rec.Keyslot)
	if ks == nil || ks.Salt == "" {
		return fmt.Errorf("keyslot %d: no salt to record after adding it", rec.Keyslot)
	}
	rec.KeyslotSalt = ks.Salt
	if _, err := put(env, rec); err != nil {
		return err
	}
	return nil
}

// sayLeft tells the operator about a keyslot custos leaves in place because
// it cannot prove it is the ceremony's.
func sayLeft(env *Env, st slotState, rec *Record) {
	what := "interrupted enrollment"
	if rec.Replaces != "" {
		what = "interrupted rotation"
	}
	switch st {
	case slotUnknown:
		env.say("keyslot %d may be left over from %s %s, but custos never recorded it as its own, so it is left in place; if it is not yours, remove it with cryptsetup luksKillSlot %s %d",
			rec.Keyslot, what, rec.ID, env.device(), rec.Keyslot)
	case slotOther:
		env.say("keyslot %d no longer holds the key of %s %s (another key was added under its number): left in place", rec.Keyslot, what, rec.ID)
	}
}
