package escrow

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"custos.dev/custos/luks"
)

// killVerdict is whether custos may kill a ceremony's keyslot, and why.
type killVerdict struct {
	ok bool
	// free: the keyslot holds no key (nothing to kill).
	free bool
	// why says what proved it, or why it is left in place.
	why string
}

// mayKill decides whether keyslot rec.Keyslot may be killed as rec's
// recovery keyslot. Never a keyslot the authorising keys open (protect),
// never one that another program's token is bound to (systemd-cryptenroll's
// TPM2 or FIDO2 keyslots, say). Otherwise only on proof: own, a key this
// process holds for rec, opens it; or the volume's token and the log —
// two independent copies — agree on the ceremony's keyslot and salt, and
// the keyslot still has that salt. A keyslot number alone, or one copy
// alone, proves nothing: a key someone added later can sit under the
// number, and a forged log or header can name any keyslot.
func mayKill(ctx context.Context, env *Env, v *view, rec *Record, protect []int, own []byte) (killVerdict, error) {
	slot := rec.Keyslot
	ks := v.h.Keyslot(slot)
	switch {
	case slot < 0 || ks == nil:
		return killVerdict{free: true, why: fmt.Sprintf("keyslot %d holds no key", slot)}, nil
	case slices.Contains(protect, slot):
		return killVerdict{why: fmt.Sprintf("keyslot %d is one the authorising key opens, which custos never kills", slot)}, nil
	}
	for _, t := range v.h.Tokens {
		if t.Type != luks.TokenType && slices.Contains(t.Keyslots, slot) {
			return killVerdict{why: fmt.Sprintf("keyslot %d is bound to token %d of type %q, another program's", slot, t.ID, safeText(t.Type))}, nil
		}
	}
	if own != nil {
		err := env.Volume.TestKey(ctx, own, slot)
		switch {
		case err == nil:
			return killVerdict{ok: true, why: fmt.Sprintf("the recovery key of ceremony %s opens keyslot %d", idText(rec.ID), slot)}, nil
		case !errors.Is(err, luks.ErrWrongKey):
			return killVerdict{}, err
		}
	}
	c := v.claimOf(rec.ID)
	switch {
	case c == nil || c.token == nil || c.log == nil:
		have := "only the log"
		if c != nil && c.log == nil {
			have = "only the token"
		}
		return killVerdict{why: fmt.Sprintf("%s names keyslot %d as ceremony %s's: one copy proves nothing", have, slot, idText(rec.ID))}, nil
	case !c.frameAgrees():
		return killVerdict{why: fmt.Sprintf("the token and the log disagree about ceremony %s", idText(rec.ID))}, nil
	case c.token.anchorErr != nil:
		return killVerdict{why: fmt.Sprintf("%s's anchor fails against the log: %v", c.token.name(), c.token.anchorErr)}, nil
	case !v1Vouches(c.token, slot):
		return killVerdict{why: fmt.Sprintf("%s is of version 1 (it holds no salt) and is no longer bound to keyslot %d: the log alone names the keyslot's salt", c.token.name(), slot)}, nil
	case c.log.Record.Keyslot != slot || c.log.Record.Salt == "":
		return killVerdict{why: fmt.Sprintf("the copies of ceremony %s record no salt for keyslot %d", idText(rec.ID), slot)}, nil
	case ks.Salt != c.log.Record.Salt:
		// Both copies recorded the salt the ceremony's keyslot had: a
		// keyslot with another salt holds another key (a key is added
		// with a fresh salt). The ceremony's key is gone from it.
		return killVerdict{free: true, why: fmt.Sprintf("keyslot %d holds another key now (not the salt both copies recorded): the recovery key of ceremony %s is gone from it", slot, idText(rec.ID))}, nil
	}
	return killVerdict{ok: true, why: fmt.Sprintf("the token and the log agree that keyslot %d, salt %.16s..., is ceremony %s's", slot, ks.Salt, idText(rec.ID))}, nil
}

// killRecovery kills rec's keyslot when mayKill allows it, keeping keep
// (which auth opens) and every keyslot in protect, and says what it did or
// why it did not; v.h becomes the header after the change.
func killRecovery(ctx context.Context, env *Env, v *view, rec *Record, keep int, auth, own []byte, what string, protect ...int) (bool, error) {
	kv, err := mayKill(ctx, env, v, rec, append(protect, keep), own)
	if err != nil {
		return false, err
	}
	if kv.free {
		return false, nil
	}
	if !kv.ok {
		env.say("keyslot %d of %s %s left in place: %s; if it is not yours, remove it with cryptsetup luksKillSlot %s %d",
			rec.Keyslot, what, idText(rec.ID), kv.why, env.device(), rec.Keyslot)
		return false, nil
	}
	h, err := env.Volume.KillKeyslot(ctx, v.h, rec.Keyslot, keep, auth)
	if err != nil {
		return false, err
	}
	v.h = h
	env.say("killed keyslot %d of %s %s (%s)", rec.Keyslot, what, idText(rec.ID), kv.why)
	return true, nil
}

// v1Vouches tells whether a token still speaks for keyslot slot's salt. A
// version 2 token holds the salt itself. A version 1 token holds none: all
// it can say is that it is still bound to the keyslot — cryptsetup unbinds
// a token from a keyslot it kills, so a key added later under the number
// finds it unbound. Without that, the salt the log recorded is one copy's
// word.
func v1Vouches(t *tokenCopy, slot int) bool {
	return t.tok.Record.Version >= 2 || slices.Contains(t.tok.Keyslots, slot)
}
