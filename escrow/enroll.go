package escrow

import (
	"context"
	"errors"
	"fmt"

	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// EnrollOptions are the operator's choices for Enroll.
type EnrollOptions struct {
	// K and N: any K of the N cards recover the key (2 ≤ K ≤ N ≤ 255).
	K, N int
	// Custodians names the holder of each card, in the order the cards
	// are inserted; missing names come from the log's card registry, else
	// stay empty.
	Custodians []string
	// AuthKey is an existing passphrase or key file of the volume; nil
	// asks for it through the Prompter. Enroll does not wipe it.
	AuthKey []byte
}

// EnrollResult is what Enroll did.
type EnrollResult struct {
	Ceremony *Record
	// TokenID is the LUKS2 token written, -1 when none (LUKS1, or the
	// header has no room).
	TokenID int
	// Anchor is the log head after the ceremony.
	Anchor store.Head
	// Resumed says what Enroll did with an unfinished enrollment it found
	// first: "" (none), "finished" or "undone" (then it enrolled anew).
	Resumed string
}

// Enroll puts a new recovery key for the volume in the hands of N
// custodians: it authorises with an existing key, makes the recovery key,
// adds its keyslot, splits it, and for each card in turn seals the share to
// the card's key, writes the certificate, reads it back and opens it with
// the custodian's PIN; only then it writes the LUKS2 token and marks the
// ceremony active in the log. A failure before the end kills the new
// keyslot again; a crash leaves what Status explains and a rerun finishes
// or undoes.
func Enroll(ctx context.Context, env *Env, opts EnrollOptions) (*EnrollResult, error) {
	if err := env.need("enroll", true, true, true, true); err != nil {
		return nil, err
	}
	if err := checkKN(opts.K, opts.N); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if len(opts.Custodians) > opts.N {
		return nil, fmt.Errorf("enroll: %w: %d custodians named for n=%d", ErrUsage, len(opts.Custodians), opts.N)
	}
	v, err := look(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if v.logErr != nil {
		return nil, fmt.Errorf("enroll: %w", v.logErr)
	}
	if r := v.activeLog(); r != nil {
		return nil, withHint(fmt.Errorf("enroll: %w: ceremony %s (%d of %d)", ErrAlreadyEnrolled, r.ID, r.K, r.N),
			"run custos rotate %s to replace it", env.device())
	}
	for _, t := range v.tokens {
		if t.rec != nil && v.h.InUse(t.rec.Keyslot) && v.logRecord(t.rec.ID) == nil {
			return nil, withHint(fmt.Errorf("enroll: %w: ceremony %s in token %d (not in this log)", ErrAlreadyEnrolled, t.rec.ID, t.id),
				"use the log it was made with (--db), or run custos rotate %s", env.device())
		}
	}
	open := v.openRecord()
	if open != nil && open.Replaces != "" {
		return nil, withHint(fmt.Errorf("enroll: %w: rotation %s", ErrUnfinished, open.ID), "run custos rotate %s to finish it", env.device())
	}

	auth := opts.AuthKey
	if auth == nil {
		if auth, err = env.Prompt.Secret("passphrase of an existing keyslot of " + env.device()); err != nil {
			return nil, fmt.Errorf("enroll: %w", &promptError{err})
		}
		defer shares.Wipe(auth)
	}
	authSlot, err := env.Volume.FindKeyslot(ctx, auth)
	if err != nil {
		return nil, withHint(fmt.Errorf("enroll: authorise: %w", err), "give a passphrase or key file that opens %s", env.device())
	}

	res := &EnrollResult{TokenID: -1}
	if open != nil {
		st, err := ownership(ctx, env, v.h, open, nil)
		if err != nil {
			return nil, fmt.Errorf("enroll: %w", err)
		}
		if open.Complete() && (st == slotOwn || st == slotUnknown) {
			env.say("finishing enrollment %s: every share was written and verified", open.ID)
			res.Resumed = "finished"
			return res, finishEnroll(ctx, env, v, open, res)
		}
		env.say("undoing unfinished enrollment %s", open.ID)
		if err := undo(ctx, env, v, open, authSlot, auth, nil); err != nil {
			return nil, fmt.Errorf("enroll: undo %s: %w", open.ID, err)
		}
		res.Resumed = "undone"
		if v, err = look(ctx, env); err != nil {
			return nil, fmt.Errorf("enroll: %w", err)
		}
	}
	return res, enroll(ctx, env, v, opts, auth, authSlot, res)
}

func enroll(ctx context.Context, env *Env, v *view, opts EnrollOptions, auth []byte, authSlot int, res *EnrollResult) (err error) {
	free := v.h.FreeKeyslots()
	if len(free) == 0 {
		return fmt.Errorf("enroll: %w", luks.ErrNoFreeKeyslot)
	}
	rec := &Record{ID: shares.NewCeremonyID(), Volume: v.vid, K: opts.K, N: opts.N, Keyslot: free[0], Status: StatusOpen}
	res.Ceremony = rec
	if _, err := put(env, rec); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	if err := step(fpEnrollBegun); err != nil {
		return err
	}
	env.say("enrollment %s: %d of %d, recovery keyslot %d", rec.ID, rec.K, rec.N, rec.Keyslot)

	secret, err := shares.NewRecoveryKey()
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	defer shares.Wipe(secret)
	key := shares.EncodeRecoveryKey(secret)
	defer shares.Wipe(key)
	added := false
	defer func() {
		if err == nil || crashed(err) {
			return
		}
		env.say("enrollment failed: undoing it")
		if !added {
			if _, uerr := put(env, abandoned(rec)); uerr != nil {
				err = fmt.Errorf("%w (and marking it abandoned failed: %v)", err, uerr)
			}
			return
		}
		h, ierr := env.Volume.Inspect(ctx)
		if ierr != nil {
			err = undoFailed(env, err, ierr)
			return
		}
		if uerr := undo(ctx, env, &view{h: h, vid: v.vid}, rec, authSlot, auth, key); uerr != nil {
			err = undoFailed(env, err, uerr)
		}
	}()
	if _, err := env.Volume.AddKeyslot(ctx, auth, key, env.recoveryOptions(rec.Keyslot)); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	added = true
	if err := recordSalt(ctx, env, rec); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	if err := step(fpEnrollKeyslot); err != nil {
		return err
	}
	cer, shs, err := shares.Split(rec.ID, rec.Volume, secret, rec.K, rec.N)
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	defer func() {
		for _, s := range shs {
			s.Wipe()
		}
	}()
	rec.Digest = cer.Digest
	ns := &newShares{rec: rec, cer: cer, shares: shs, names: opts.Custodians, fp: fpEnrollCard}
	if err := ns.writeAll(ctx, env); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	// Every share is written and verified; from here on a rerun finishes.
	added = false
	h, err := env.Volume.Inspect(ctx)
	if err != nil {
		return fmt.Errorf("enroll: shares written; %w", err)
	}
	return finishEnroll(ctx, env, &view{h: h, vid: v.vid}, rec, res)
}

// finishEnroll writes the token of a complete ceremony (when the header
// has none for it) and marks the ceremony active.
func finishEnroll(ctx context.Context, env *Env, v *view, rec *Record, res *EnrollResult) error {
	res.Ceremony = rec
	id, err := writeToken(ctx, env, v, rec)
	res.TokenID = id
	if err != nil {
		return withHint(fmt.Errorf("enroll: every share is written, but %w", err), "rerun custos enroll %s to finish", env.device())
	}
	if err := step(fpEnrollToken); err != nil {
		return err
	}
	rec.Status = StatusActive
	h, err := put(env, rec)
	if err != nil {
		return withHint(fmt.Errorf("enroll: every share is written, but %w", err), "rerun custos enroll %s to finish", env.device())
	}
	res.Anchor = h
	if err := step(fpEnrollLogged); err != nil {
		return err
	}
	env.say("enrollment %s done: any %d of the %d cards recover %s (log head %s)", rec.ID, rec.K, rec.N, env.device(), h)
	return nil
}

// writeToken writes a complete ceremony's token, anchored at the log's
// head, unless the header has it already (or is LUKS1).
func writeToken(ctx context.Context, env *Env, v *view, rec *Record) (int, error) {
	if v.h.Version != 2 {
		env.say("luks1 volume: no token; the ceremony lives in the log and on the cards")
		return -1, nil
	}
	if err := refreshTokens(ctx, env, v); err != nil {
		return -1, err
	}
	if t := v.tokenOf(rec.ID); t != nil {
		return t.id, nil
	}
	head, err := env.Log.Head()
	if err != nil {
		return -1, fmt.Errorf("read log head: %w", err)
	}
	tr := *rec
	tr.Status = StatusActive
	tr.Anchor = head
	tok, err := encodeToken(&tr)
	if err != nil {
		return -1, err
	}
	id, err := env.Volume.ImportToken(ctx, tok, rec.Keyslot)
	if errors.Is(err, luks.ErrTokenTooLarge) {
		env.say("warning: the ceremony does not fit in the luks2 header: no token; it lives in the log and on the cards")
		return -1, nil
	}
	if err != nil {
		return -1, err
	}
	rec.Anchor = head
	return id, nil
}

// refreshTokens re-reads the tokens when the view's header may be stale.
func refreshTokens(ctx context.Context, env *Env, v *view) error {
	nv, err := look(ctx, &Env{Volume: env.Volume})
	if err != nil {
		return err
	}
	v.h, v.tokens = nv.h, nv.tokens
	return nil
}

func abandoned(r *Record) *Record {
	a := *r
	a.Status = StatusAbandoned
	return &a
}

// undo rolls an unfinished ceremony back: it removes its token, kills its
// keyslot (authorised by auth, which opens keep) and marks it abandoned.
// The keyslot is killed only when it is proven the ceremony's (see
// ownership; own is the ceremony's recovery key while this process still
// holds it, else nil); otherwise it is left in place and the operator told,
// for it may hold a key someone added after a crash.
func undo(ctx context.Context, env *Env, v *view, rec *Record, keep int, auth, own []byte) error {
	if v.h.Version == 2 {
		if err := refreshTokens(ctx, env, v); err != nil {
			return err
		}
		if t := v.tokenOf(rec.ID); t != nil {
			if err := env.Volume.RemoveToken(ctx, t.id); err != nil {
				return err
			}
		}
	}
	if rec.Keyslot >= 0 && rec.Keyslot != keep && v.h.InUse(rec.Keyslot) {
		st, err := ownership(ctx, env, v.h, rec, own)
		if err != nil {
			return err
		}
		if st == slotOwn {
			if err := env.Volume.KillKeyslot(ctx, rec.Keyslot, keep, auth); err != nil {
				return err
			}
			env.say("killed keyslot %d of ceremony %s", rec.Keyslot, rec.ID)
		} else {
			sayLeft(env, st, rec)
		}
	}
	if _, err := put(env, abandoned(rec)); err != nil {
		return err
	}
	return nil
}

func undoFailed(env *Env, err, uerr error) error {
	return withHint(fmt.Errorf("%w; undoing it failed too: %v", err, uerr),
		"run custos status %s, then rerun custos enroll %s to undo it", env.device(), env.device())
}
