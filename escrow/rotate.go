package escrow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// RotateOptions are the operator's choices for Rotate.
type RotateOptions struct {
	// K and N of the new ceremony; 0 keeps the old ones.
	K, N int
	// Custodians names the holder of each new card, in insertion order.
	Custodians []string
	// AuthKey, if not nil, authorises with an existing passphrase or key
	// file instead of K cards of the old ceremony. Rotate does not wipe
	// it.
	AuthKey []byte
	// WipeWait is how long to wait for each old card that leaves the
	// custodian set to be inserted for wiping; 0 does not wait and lists
	// them in RotateResult.ToWipe.
	WipeWait time.Duration
}

// RotateResult is what Rotate did.
type RotateResult struct {
	Old, New *Record
	// Wiped are the old cards whose retired share was destroyed; ToWipe
	// the ones still to wipe (absent, or their wipe failed).
	Wiped, ToWipe []CardRef
	// Anchor is the log head after the rotation.
	Anchor store.Head
	// Resumed says what Rotate did with an unfinished rotation it found:
	// "" (none), "finished" or "undone" (then it rotated anew).
	Resumed string
}

// authority is a key that opens a keyslot, for adding and killing
// keyslots.
type authority struct {
	key  []byte
	slot int
	own  bool // key was made here and is wiped by release
}

func (a *authority) release() {
	if a != nil && a.own {
		shares.Wipe(a.key)
	}
}

// Rotate replaces the volume's recovery key: it obtains authority (K cards
// of the old ceremony, or AuthKey), makes a new key and keyslot, seals new
// shares to the new card set and verifies each on its card; only then it
// writes the new token, kills the old keyslot, removes the old token, logs
// old → new and wipes the old shares on the cards presented. Interrupted at
// any step, a rerun finishes or undoes it; the volume always opens with the
// old or the new recovery key.
func Rotate(ctx context.Context, env *Env, opts RotateOptions) (*RotateResult, error) {
	if err := env.need("rotate", true, true, true, true); err != nil {
		return nil, err
	}
	if opts.K != 0 || opts.N != 0 {
		if err := checkKN(opts.K, opts.N); err != nil {
			return nil, fmt.Errorf("rotate: %w", err)
		}
	}
	v, err := look(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("rotate: %w", err)
	}
	if v.logErr != nil {
		return nil, fmt.Errorf("rotate: %w", v.logErr)
	}
	res := &RotateResult{}
	var auth *authority
	defer func() { auth.release() }()

	if open := v.openRecord(); open != nil {
		if open.Replaces == "" {
			return nil, withHint(fmt.Errorf("rotate: %w: enrollment %s", ErrUnfinished, open.ID), "run custos enroll %s to finish or undo it", env.device())
		}
		old := v.logRecord(mustID(open.Replaces))
		if old == nil {
			return nil, fmt.Errorf("rotate: rotation %s replaces %s, which the log does not hold", open.ID, open.Replaces)
		}
		st, err := ownership(ctx, env, v.h, open, nil)
		if err != nil {
			return nil, fmt.Errorf("rotate: %w", err)
		}
		if open.Complete() && (st == slotOwn || st == slotUnknown) {
			env.say("finishing rotation %s: every new share was written and verified", open.ID)
			res.Resumed = "finished"
			return res, finishRotate(ctx, env, v, old, open, nil, opts, res)
		}
		env.say("undoing unfinished rotation %s", open.ID)
		if auth, err = authorise(ctx, env, v, old, opts.AuthKey); err != nil {
			return nil, fmt.Errorf("rotate: undo %s: %w", open.ID, err)
		}
		if err := undo(ctx, env, v, open, auth.slot, auth.key, nil); err != nil {
			return nil, fmt.Errorf("rotate: undo %s: %w", open.ID, err)
		}
		res.Resumed = "undone"
		if v, err = look(ctx, env); err != nil {
			return nil, fmt.Errorf("rotate: %w", err)
		}
	}

	old := v.activeLog()
	if old == nil {
		for _, t := range v.tokens {
			if t.rec != nil && v.h.InUse(t.rec.Keyslot) {
				old = t.rec
			}
		}
		if old == nil {
			return nil, withHint(fmt.Errorf("rotate: %w", ErrNoCeremony), "run custos enroll %s first", env.device())
		}
		// The token's ceremony, not in this log: record it first, so
		// that the new ceremony can link to it.
		r := *old
		r.Status = StatusActive
		if r.Replaces != "" && v.logRecord(mustID(r.Replaces)) == nil {
			r.Replaces = ""
		}
		if _, err := put(env, &r); err != nil {
			return nil, fmt.Errorf("rotate: %w", err)
		}
		old = &r
		if v, err = look(ctx, env); err != nil {
			return nil, fmt.Errorf("rotate: %w", err)
		}
	}
	if auth == nil {
		if auth, err = authorise(ctx, env, v, old, opts.AuthKey); err != nil {
			return res, fmt.Errorf("rotate: %w", err)
		}
	}
	k, n := opts.K, opts.N
	if k == 0 {
		k, n = old.K, old.N
	}
	if len(opts.Custodians) > n {
		return res, fmt.Errorf("rotate: %w: %d custodians named for n=%d", ErrUsage, len(opts.Custodians), n)
	}
	return res, rotate(ctx, env, v, old, k, n, auth, opts, res)
}

// authorise obtains a key that opens a keyslot: opts.AuthKey, or the
// recovery key of rec from K of its cards.
func authorise(ctx context.Context, env *Env, v *view, rec *Record, key []byte) (*authority, error) {
	if key != nil {
		slot, err := env.Volume.FindKeyslot(ctx, key)
		if err != nil {
			return nil, withHint(fmt.Errorf("authorise: %w", err), "give a passphrase or key file that opens %s", env.device())
		}
		return &authority{key: key, slot: slot}, nil
	}
	env.say("authorise with %d cards of ceremony %s", rec.K, rec.ID)
	key, slot, err := unlock(ctx, env, v, rec.ID)
	if err != nil {
		return nil, fmt.Errorf("authorise: %w", err)
	}
	return &authority{key: key, slot: slot, own: true}, nil
}

// unlock collects K cards of one ceremony and returns its recovery key
// (tested against its keyslot) and the keyslot.
func unlock(ctx context.Context, env *Env, v *view, id shares.CeremonyID) ([]byte, int, error) {
	cands, notes, err := v.candidates()
	for _, n := range notes {
		env.say("warning: %s", n)
	}
	if err != nil {
		return nil, -1, err
	}
	var cand *candidate
	for _, c := range cands {
		if c.rec.ID == id {
			cand = c
		}
	}
	if cand == nil {
		return nil, -1, fmt.Errorf("ceremony %s cannot open the volume (incomplete, or its keyslot is gone)", id)
	}
	col := newCollector(env, v, []*candidate{cand})
	defer col.wipe()
	secret, _, err := col.gather(ctx)
	if err != nil {
		return nil, -1, err
	}
	key := shares.EncodeRecoveryKey(secret)
	shares.Wipe(secret)
	if err := env.Volume.TestKey(ctx, key, cand.rec.Keyslot); err != nil {
		shares.Wipe(key)
		if errors.Is(err, luks.ErrWrongKey) {
			return nil, -1, fmt.Errorf("keyslot %d: %w", cand.rec.Keyslot, ErrKeyslotMismatch)
		}
		return nil, -1, err
	}
	return key, cand.rec.Keyslot, nil
}

func rotate(ctx context.Context, env *Env, v *view, old *Record, k, n int, auth *authority, opts RotateOptions, res *RotateResult) (err error) {
	free := v.h.FreeKeyslots()
	if len(free) == 0 {
		return fmt.Errorf("rotate: %w", luks.ErrNoFreeKeyslot)
	}
	rec := &Record{ID: shares.NewCeremonyID(), Volume: v.vid, K: k, N: n, Keyslot: free[0], Status: StatusOpen, Replaces: old.ID.String()}
	res.Old, res.New = old, rec
	recs := []*Record{rec}
	if old.KeyslotSalt == "" && auth.own && auth.slot == old.Keyslot {
		// A ceremony from before salts were recorded: its recovery key,
		// just gathered from its cards, opens its keyslot; record that
		// keyslot's salt now, so that finishing the rotation, after a
		// crash too, kills that keyslot and no other.
		if ks := v.h.Keyslot(old.Keyslot); ks != nil && ks.Salt != "" {
			o := *old
			o.KeyslotSalt = ks.Salt
			recs = append(recs, &o)
		}
	}
	if _, err := put(env, recs...); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if len(recs) > 1 {
		*old = *recs[1]
	}
	if err := step(fpRotateBegun); err != nil {
		return err
	}
	env.say("rotation %s: %d of %d replaces %s, recovery keyslot %d", rec.ID, k, n, old.ID, rec.Keyslot)

	secret, err := shares.NewRecoveryKey()
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	defer shares.Wipe(secret)
	key := shares.EncodeRecoveryKey(secret)
	defer shares.Wipe(key)
	rollback := true
	defer func() {
		if err == nil || crashed(err) || !rollback {
			return
		}
		env.say("rotation failed: undoing it; the old ceremony stays in force")
		h, ierr := env.Volume.Inspect(ctx)
		if ierr != nil {
			err = undoFailed(env, err, ierr)
			return
		}
		if uerr := undo(ctx, env, &view{h: h, vid: v.vid}, rec, auth.slot, auth.key, key); uerr != nil {
			err = withHint(fmt.Errorf("%w; undoing it failed too: %v", err, uerr), "run custos status %s, then rerun custos rotate %s", env.device(), env.device())
		}
	}()
	if _, err := env.Volume.AddKeyslot(ctx, auth.key, key, env.recoveryOptions(rec.Keyslot)); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if err := recordSalt(ctx, env, rec); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if err := step(fpRotateKeyslot); err != nil {
		return err
	}
	cer, shs, err := shares.Split(rec.ID, rec.Volume, secret, k, n)
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	defer func() {
		for _, s := range shs {
			s.Wipe()
		}
	}()
	rec.Digest = cer.Digest
	keep := map[string]uint8{}
	for _, c := range old.Cards {
		keep[c.Serial] = c.Slot
	}
	ns := &newShares{rec: rec, cer: cer, shares: shs, names: opts.Custodians, slots: keep, fp: fpRotateCard}
	if err := ns.writeAll(ctx, env); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	// Every new share is verified: from here on, forward only.
	rollback = false
	h, err := env.Volume.Inspect(ctx)
	if err != nil {
		return withHint(fmt.Errorf("rotate: new shares written; %w", err), "rerun custos rotate %s to finish", env.device())
	}
	return finishRotate(ctx, env, &view{h: h, vid: v.vid}, old, rec, &authority{key: key, slot: rec.Keyslot}, opts, res)
}

// finishRotate takes a rotation whose new shares are all verified to its
// end: new token, old keyslot killed, old token removed, log old → new,
// old cards wiped. Each step is skipped when already done, so a rerun after
// a crash picks up where it stopped. auth may be nil: the key to kill the
// old keyslot is then obtained from opts.AuthKey or K new cards.
func finishRotate(ctx context.Context, env *Env, v *view, old, rec *Record, auth *authority, opts RotateOptions, res *RotateResult) error {
	res.Old, res.New = old, rec
	fail := func(err error) error {
		return withHint(fmt.Errorf("rotate: every new share is verified, but %w", err), "rerun custos rotate %s to finish", env.device())
	}
	if _, err := writeToken(ctx, env, v, rec); err != nil {
		return fail(err)
	}
	if err := step(fpRotateToken); err != nil {
		return err
	}
	h, err := env.Volume.Inspect(ctx)
	if err != nil {
		return fail(err)
	}
	v.h = h
	st, err := ownership(ctx, env, h, old, nil)
	if err != nil {
		return fail(err)
	}
	if old.Keyslot == rec.Keyslot {
		st = slotFree
	}
	switch st {
	case slotUnknown:
		env.say("keyslot %d may still hold the old recovery key of %s, but custos never recorded its identity, so it is left in place; if it is not yours, remove it with cryptsetup luksKillSlot %s %d",
			old.Keyslot, old.ID, env.device(), old.Keyslot)
	case slotOther:
		env.say("keyslot %d no longer holds the old recovery key of %s (another key was added under its number): left in place", old.Keyslot, old.ID)
	}
	if st == slotOwn {
		if auth == nil {
			var err error
			if opts.AuthKey != nil {
				if auth, err = authorise(ctx, env, v, rec, opts.AuthKey); err == nil && auth.slot == old.Keyslot {
					err = fmt.Errorf("the key given opens only the old recovery keyslot %d: give another, or use the new cards", old.Keyslot)
				}
			} else {
				env.say("to kill the old keyslot, the new recovery key is needed")
				if err = refreshTokens(ctx, env, v); err == nil {
					auth, err = authorise(ctx, env, v, rec, nil)
				}
			}
			if err != nil {
				return fail(err)
			}
			defer auth.release()
		}
		if err := env.Volume.KillKeyslot(ctx, old.Keyslot, auth.slot, auth.key); err != nil {
			return fail(err)
		}
		env.say("killed the old recovery keyslot %d", old.Keyslot)
	}
	if err := step(fpRotateOldKilled); err != nil {
		return err
	}
	if h.Version == 2 {
		if err := refreshTokens(ctx, env, v); err != nil {
			return fail(err)
		}
		if t := v.tokenOf(old.ID); t != nil {
			if err := env.Volume.RemoveToken(ctx, t.id); err != nil {
				return fail(err)
			}
		}
	}
	if err := step(fpRotateOldTokenRm); err != nil {
		return err
	}
	o, n := *old, *rec
	o.Status, o.ReplacedBy = StatusRetired, rec.ID.String()
	n.Status = StatusActive
	head, err := put(env, &o, &n)
	if err != nil {
		return fail(err)
	}
	*old, *rec = o, n
	res.Anchor = head
	if err := step(fpRotateLogged); err != nil {
		return err
	}
	env.say("rotation %s done: %s retired, any %d of the %d new cards recover %s", rec.ID, old.ID, rec.K, rec.N, env.device())
	return wipeOld(ctx, env, old, rec, opts, res)
}

// wipeOld destroys the retired shares on the old cards that left the
// custodian set, as they are presented; the others are listed in ToWipe.
// Cards kept in the new set already carry the new share over the old one.
func wipeOld(ctx context.Context, env *Env, old, rec *Record, opts RotateOptions, res *RotateResult) error {
	kept := map[string]bool{}
	for _, c := range rec.Cards {
		kept[c.Serial] = true
	}
	todo := map[string]CardRef{}
	for _, c := range old.Cards {
		if !kept[c.Serial] {
			todo[c.Serial] = c
		}
	}
	for len(todo) > 0 && opts.WipeWait > 0 {
		wctx, cancel := context.WithTimeout(ctx, opts.WipeWait)
		card, err := waitCard(wctx, env, fmt.Sprintf("insert an old card to wipe its retired share (%d left), or wait %s to skip", len(todo), opts.WipeWait))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			break
		}
		serial := serialOf(card)
		ref, ok := todo[serial]
		if !ok {
			card.Close()
			env.say("card %s holds no retired share to wipe", serial)
			continue
		}
		err = wipeCard(env, card, ref)
		card.Close()
		if err != nil {
			if fatal(ctx, err) {
				return err
			}
			env.say("card %s: %v", serial, err)
			continue
		}
		delete(todo, serial)
		res.Wiped = append(res.Wiped, ref)
		body, _ := json.Marshal(struct {
			Serial string `json:"serial"`
			Slot   string `json:"slot"`
		}{serial, slotText(ref.Slot)})
		if _, err := note(env, old.ID.String(), "rotate.wiped", body); err != nil {
			return err
		}
		env.say("card %s: retired share wiped", serial)
		if err := step(fpRotateWiped); err != nil {
			return err
		}
	}
	for _, c := range old.Cards {
		if _, ok := todo[c.Serial]; ok {
			res.ToWipe = append(res.ToWipe, c)
		}
	}
	if len(res.ToWipe) > 0 {
		env.say("%d old cards still hold a retired share (worthless: its keyslot is killed); wipe them when they turn up", len(res.ToWipe))
	}
	return nil
}

// wipeCard puts a new key over the old card's custody slot, if it still
// holds the key the retired share was sealed to.
func wipeCard(env *Env, card Card, ref CardRef) error {
	slots, err := card.Custody()
	if err != nil {
		return err
	}
	for _, s := range slots {
		if s.Slot == ref.Slot && s.Fingerprint == ref.Fingerprint {
			return withPIN(env, ref.Serial, ref.Custodian, func(pin []byte) error { return card.WipeShare(s.Slot, pin) })
		}
	}
	return nil // the key is gone already
}
