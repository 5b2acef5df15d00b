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
	// AllowUnattested: see EnrollOptions.
	AllowUnattested bool
}

// RotateResult is what Rotate did.
type RotateResult struct {
	Old, New *Record
	// OldKilled tells whether the old recovery keyslot was killed.
	OldKilled bool
	// Wiped are the old cards whose retired share was destroyed; ToWipe
	// the ones still to wipe (absent, or their wipe failed).
	Wiped, ToWipe []RecordCard
	// Anchor is the log head after the rotation.
	Anchor store.Head
	// Resumed says what Rotate did with an unfinished rotation it found:
	// "" (none), "finished" or "undone" (then it rotated anew).
	Resumed string
	// Attestations are the new cards' attestations as the log's chains
	// tell them, by share (once the new ceremony is recorded).
	Attestations []CardAttestation
	// Cards are the outcomes of the old cards that authorised it.
	Cards []CardOutcome
	// Problems are disagreements between copies noticed on the way.
	Problems []string
	// LogSuspect says the log's record of the retired ceremony differs from
	// the one its recovered key proved (named in Problems): the log, not
	// the volume, is what to check next.
	LogSuspect bool
}

// authority is a key that opens a keyslot, for adding and killing
// keyslots.
type authority struct {
	key  []byte
	slot int
	// rec is the ceremony whose recovery key this is (gathered from its
	// cards), nil for an operator's key.
	rec *Record
}

func (a *authority) release() {
	if a != nil && a.rec != nil {
		shares.Wipe(a.key)
	}
}

// Rotate replaces the volume's recovery key: it obtains authority (K cards
// of the current ceremony, whose recovered key proves its keyslot, or
// AuthKey, in which case the token and the log must agree on the current
// ceremony), makes a new key and keyslot, seals new shares to the new card
// set and verifies each on its card; only then it writes the new token,
// kills the old keyslot (on proof: the old recovery key opens it, or the
// token and the log agree on its keyslot and salt), removes the old token,
// logs old → new and wipes the old shares on the cards presented.
// Interrupted at any step, a rerun finishes or undoes it; the volume
// always opens with the operator's key and with the old or the new
// recovery key.
func Rotate(ctx context.Context, env *Env, opts RotateOptions) (*RotateResult, error) {
	res, err := rotateVolume(ctx, env, opts)
	if res != nil && res.New != nil && res.Anchor != (store.Head{}) {
		res.Attestations = attestationsOf(env, res.New)
	}
	return res, err
}

func rotateVolume(ctx context.Context, env *Env, opts RotateOptions) (*RotateResult, error) {
	if err := env.need("rotate", true, true, true, true); err != nil {
		return nil, err
	}
	if opts.K != 0 || opts.N != 0 {
		if err := checkKN(opts.K, opts.N); err != nil {
			return nil, fmt.Errorf("rotate: %w", err)
		}
	}
	if err := checkNames(opts.Custodians, 255); err != nil {
		return nil, fmt.Errorf("rotate: %w", err)
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

	if open := v.openLog(); open != nil {
		o := open.Record
		if o.Replaces == ([16]byte{}) {
			return nil, fmt.Errorf("rotate: %w", &UnfinishedError{Kind: "enrollment", Ceremony: idText(o.ID)})
		}
		old := v.logState(o.Replaces)
		if old == nil {
			return nil, fmt.Errorf("rotate: rotation %s replaces %s, which the log does not hold", idText(o.ID), idText(o.Replaces))
		}
		if finishable(v, o) {
			env.say("finishing rotation %s: every new share was written and verified", idText(o.ID))
			res.Resumed = "finished"
			return res, finishRotate(ctx, env, v, old.Record, o, nil, opts, res)
		}
		env.say("undoing unfinished rotation %s", idText(o.ID))
		// Only the ceremony the rotation replaces may authorise its undo:
		// the rotation's own key would protect its keyslot from the kill
		// and then be taken for the ceremony to replace.
		if auth, err = authorise(ctx, env, v, opts.AuthKey, res, &o.Replaces); err != nil {
			return res, fmt.Errorf("rotate: undo %s: %w", idText(o.ID), err)
		}
		if err := undo(ctx, env, v, o, auth.slot, auth.key, nil, "interrupted rotation"); err != nil {
			return res, fmt.Errorf("rotate: undo %s: %w", idText(o.ID), err)
		}
		res.Resumed = "undone"
		if v, err = look(ctx, env); err != nil {
			return res, fmt.Errorf("rotate: %w", err)
		}
	}

	if auth == nil {
		if auth, err = authorise(ctx, env, v, opts.AuthKey, res, nil); err != nil {
			return res, fmt.Errorf("rotate: %w", err)
		}
	}
	old, err := oldCeremony(env, v, auth)
	if err != nil {
		return res, fmt.Errorf("rotate: %w", err)
	}
	if auth.rec == nil {
		// Authorised by an operator's key, the old keyslot can only be
		// killed on the copies' word: make sure now that they suffice,
		// rather than leave the revoked shares alive after the rotation.
		kv, err := mayKill(ctx, env, v, old, []int{auth.slot}, nil)
		if err != nil {
			return res, fmt.Errorf("rotate: %w", err)
		}
		if !kv.ok && !kv.free {
			return res, fmt.Errorf("rotate: %w: the old recovery keyslot %d could not be killed afterwards: %s", ErrUnconfirmed, old.Keyslot, kv.why)
		}
	}
	if v.logState(old.ID) == nil {
		// The ceremony the recovered key proves, which this log does not
		// hold (its file was lost): record it, so that the new ceremony
		// can name the one it replaces. The key that opened its keyslot
		// is the proof; the token alone would not be.
		if _, err := put(env, StatusActive, old); err != nil {
			return res, fmt.Errorf("rotate: %w", err)
		}
		if v, err = look(ctx, env); err != nil {
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
	return res, rotate(ctx, env, v, old, k, n, auth, opts, res, nil)
}

// authorise obtains a key that opens a keyslot: key (the operator's), or
// the recovery key of the current ceremony (only, when given) from K of
// its cards.
func authorise(ctx context.Context, env *Env, v *view, key []byte, res *RotateResult, only *[16]byte) (*authority, error) {
	if key != nil {
		slot, err := env.Volume.FindKeyslot(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrAuthorise, err)
		}
		return &authority{key: key, slot: slot}, nil
	}
	if only != nil {
		env.say("authorise with the cards of ceremony %s", idText(*only))
	} else {
		env.say("authorise with the cards of the current ceremony")
	}
	u, err := unlock(ctx, env, v, only, testKey(ctx, env))
	if u != nil {
		res.Cards = u.outcomes
		res.Problems = append(res.Problems, u.problems...)
	}
	if err != nil {
		return nil, fmt.Errorf("authorise: %w", err)
	}
	return &authority{key: u.key, slot: u.slot, rec: u.rec}, nil
}

// oldCeremony is the ceremony a rotation replaces: the one whose recovery
// key authorised it, or — authorised by an operator's key — the current
// ceremony on which the token and the log agree. One copy alone does not
// decide which keyslot a rotation kills.
func oldCeremony(env *Env, v *view, auth *authority) (*Record, error) {
	if auth.rec != nil {
		return auth.rec, nil
	}
	cur := v.current()
	if cur == nil {
		return nil, ErrNoCeremony
	}
	if !cur.confirmed {
		return nil, fmt.Errorf("%w: ceremony %s is not confirmed by two copies: %s", ErrUnconfirmed, idText(cur.rec.ID), cur.why)
	}
	if cur.rec.Keyslot == auth.slot {
		return nil, &RecoveryKeyGivenError{Keyslot: auth.slot}
	}
	return cur.rec, nil
}

// rotate replaces old by a new ceremony of k of n; with sealer, its shares
// are sealed to a custodian set's keys, no card present (RotateSet).
func rotate(ctx context.Context, env *Env, v *view, old *Record, k, n int, auth *authority, opts RotateOptions, res *RotateResult, sealer *setSealer) (err error) {
	free := v.h.FreeKeyslots()
	if len(free) == 0 {
		return fmt.Errorf("rotate: %w", luks.ErrNoFreeKeyslot)
	}
	secret, err := shares.NewRecoveryKey()
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	defer shares.Wipe(secret)
	key := shares.EncodeRecoveryKey(secret)
	defer shares.Wipe(key)
	id := shares.NewCeremonyID()
	cer, shs, err := shares.Split(id, v.vid, secret, k, n)
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	defer func() {
		for _, s := range shs {
			s.Wipe()
		}
	}()
	rec := &Record{Version: 2, ID: [16]byte(id), Volume: [16]byte(v.vid), K: k, N: n, Keyslot: free[0],
		Digest: [32]byte(cer.Digest), Replaces: old.ID, AllowUnattested: opts.AllowUnattested}
	if sealer != nil {
		rec.Set, rec.AllowUnattested = sealer.ref, sealer.set.AllowUnattested
	}
	res.Old, res.New = old, rec
	if _, err := put(env, StatusOpen, rec); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if err := step(fpRotateBegun); err != nil {
		return err
	}
	env.say("rotation %s: %d of %d replaces %s, recovery keyslot %d", idText(rec.ID), k, n, idText(old.ID), rec.Keyslot)

	rollback := true
	defer func() {
		if err == nil || crashed(err) || !rollback {
			return
		}
		env.say("rotation failed: undoing it; the old ceremony stays in force")
		nv, ierr := look(ctx, env)
		if ierr != nil {
			err = undoFailed("rotate", err, ierr)
			return
		}
		if uerr := undo(ctx, env, nv, rec, auth.slot, auth.key, key, "failed rotation"); uerr != nil {
			err = undoFailed("rotate", err, uerr)
		}
	}()
	if err := addRecoveryKeyslot(ctx, env, v, rec, auth.key, auth.slot, key); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if err := step(fpRotateKeyslot); err != nil {
		return err
	}
	if err := writeOpenToken(ctx, env, v, rec); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if err := step(fpRotateOpenToken); err != nil {
		return err
	}
	if sealer != nil {
		if err := sealer.seal(env, rec, cer, shs); err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
		if err := step(fpRotateSealed); err != nil {
			return err
		}
	} else {
		keep := map[string]uint8{}
		for _, c := range old.Cards {
			keep[c.Serial] = c.Slot
		}
		ns := &newShares{rec: rec, cer: cer, shares: shs, names: opts.Custodians, slots: keep, fp: fpRotateCard}
		if err := ns.writeAll(ctx, env); err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
	}
	// Every new share is verified: from here on, forward only.
	rollback = false
	operator := -1
	if auth.rec == nil {
		operator = auth.slot
	}
	var oldKey []byte
	if auth.rec != nil && auth.rec.ID == old.ID {
		oldKey = auth.key
	}
	return finishRotate(ctx, env, v, old, rec, &finishAuth{key: key, slot: rec.Keyslot, oldKey: oldKey, operator: operator}, opts, res)
}

// finishAuth is what finishRotate kills the old keyslot with: a key that
// opens keyslot slot (the new recovery key), the old recovery key when this
// process gathered it (the proof of the old keyslot), and the operator's
// keyslot, which is never killed.
type finishAuth struct {
	key      []byte
	slot     int
	oldKey   []byte
	operator int
}

// finishRotate takes a rotation whose new shares are all verified to its
// end: new token, old keyslot killed (when proven), old token removed, log
// old → new, old cards wiped. Each step is skipped when already done, so
// a rerun after a crash picks up where it stopped. fa may be nil: the key
// to kill the old keyslot with is then obtained from opts.AuthKey or K new
// cards.
func finishRotate(ctx context.Context, env *Env, v *view, old, rec *Record, fa *finishAuth, opts RotateOptions, res *RotateResult) error {
	res.Old, res.New = old, rec
	fail := func(err error) error {
		return &StepError{Op: "rotate", Done: StepSharesVerified, Err: err}
	}
	if v.h.Version == 2 {
		if t := v.tokenOf(rec.ID); t == nil || !t.tok.Record.Complete() || len(store.Compare(t.tok.Record, rec)) != 0 {
			_, err := writeToken(ctx, env, v, rec)
			switch {
			case errors.Is(err, luks.ErrTokenTooLarge) && rec.Set != nil:
				return fail(fmt.Errorf("%w: %w", ErrNeedsToken, err))
			case errors.Is(err, luks.ErrTokenTooLarge):
				env.say("warning: the ceremony does not fit in the luks2 header: no token; it lives in the log and on the cards")
			case err != nil:
				return fail(err)
			}
		}
	}
	if err := step(fpRotateToken); err != nil {
		return err
	}
	nv, err := lookAt(env, v.h)
	if err != nil {
		return fail(err)
	}
	v = nv
	var keptErr error
	if kv, err := mayKill(ctx, env, v, old, protectOf(fa), ownOf(fa)); err != nil {
		return fail(err)
	} else if kv.free && v.h.InUse(old.Keyslot) {
		env.say("%s: left alone", kv.why)
	} else if !kv.free {
		if !kv.ok {
			keptErr = &KeptKeyslotError{Keyslot: old.Keyslot, Ceremony: idText(old.ID), Why: kv.why}
			env.say("%v", keptErr)
		} else {
			if fa == nil {
				if fa, err = finishKey(ctx, env, v, rec, opts, res); err != nil {
					return fail(err)
				}
				defer shares.Wipe(fa.key)
				if fa.slot == old.Keyslot {
					return fail(fmt.Errorf("the key given opens only the old recovery keyslot %d: give another, or use the new cards", old.Keyslot))
				}
			}
			h, err := env.Volume.KillKeyslot(ctx, v.h, old.Keyslot, fa.slot, fa.key)
			if err != nil {
				return fail(err)
			}
			v.h = h
			res.OldKilled = true
			env.say("killed the old recovery keyslot %d (%s)", old.Keyslot, kv.why)
		}
	}
	if err := step(fpRotateOldKilled); err != nil {
		return err
	}
	if t := v.tokenOf(old.ID); t != nil && v.h.Version == 2 {
		h, err := env.Volume.RemoveToken(ctx, v.h, t.id)
		if err != nil {
			return fail(err)
		}
		v.h = h
	}
	if err := step(fpRotateOldTokenRm); err != nil {
		return err
	}
	var differs []store.Difference
	head, err := env.Log.Update(func(tx *store.Tx) error {
		retire := old
		if st, err := tx.Ceremony(idText(old.ID)); err == nil {
			// The log's record of the old ceremony may differ from the one
			// its recovered key proved (a forged log): the log takes the
			// status change on its own record, which it would refuse to
			// see changed.
			if differs = store.Compare(st.Record, old); len(differs) > 0 {
				retire = st.Record
			}
		}
		if _, err := tx.PutCeremony(env.actor(), StatusRetired, retire); err != nil {
			return err
		}
		_, err := tx.PutCeremony(env.actor(), StatusActive, rec)
		return err
	})
	if err != nil {
		return fail(fmt.Errorf("log the rotation: %w", err))
	}
	if len(differs) > 0 {
		msg := fmt.Sprintf("the log's record of the retired ceremony %s differs from the one its recovered key proved (%v): the log is suspect",
			idText(old.ID), differs)
		res.Problems = append(res.Problems, msg)
		res.LogSuspect = true
		env.say("warning: %s", msg)
	}
	res.Anchor = head
	if err := step(fpRotateLogged); err != nil {
		return err
	}
	env.say("rotation %s done: %s retired, any %d of the %d new cards recover %s", idText(rec.ID), idText(old.ID), rec.K, rec.N, env.device())
	if err := wipeOld(ctx, env, old, rec, opts, res); err != nil {
		return err
	}
	return keptErr
}

func protectOf(fa *finishAuth) []int {
	if fa == nil || fa.operator < 0 {
		return nil
	}
	return []int{fa.operator}
}

func ownOf(fa *finishAuth) []byte {
	if fa == nil {
		return nil
	}
	return fa.oldKey
}

// finishKey obtains, for a rotation finished by a rerun, a key that opens
// a keyslot other than the old one: the operator's key, or the new
// ceremony's recovery key from K new cards.
func finishKey(ctx context.Context, env *Env, v *view, rec *Record, opts RotateOptions, res *RotateResult) (*finishAuth, error) {
	if opts.AuthKey != nil {
		slot, err := env.Volume.FindKeyslot(ctx, opts.AuthKey)
		if err != nil {
			return nil, err
		}
		key := append([]byte(nil), opts.AuthKey...)
		return &finishAuth{key: key, slot: slot, operator: slot}, nil
	}
	env.say("to kill the old keyslot, the new recovery key is needed: insert the new cards")
	id := rec.ID
	u, err := unlock(ctx, env, v, &id, testKey(ctx, env))
	if u != nil {
		res.Problems = append(res.Problems, u.problems...)
	}
	if err != nil {
		return nil, err
	}
	return &finishAuth{key: u.key, slot: u.slot, operator: -1}, nil
}

// wipeOld destroys the retired shares on the old cards that left the
// custodian set, as they are presented; the others are listed in ToWipe.
// Cards kept in the new set already carry the new share over the old one.
// A card is wiped only when its own certificate names the retired
// ceremony with the key the log records for it: the log alone never
// decides to destroy a card's key.
func wipeOld(ctx context.Context, env *Env, old, rec *Record, opts RotateOptions, res *RotateResult) error {
	kept := map[string]bool{}
	for _, c := range rec.Cards {
		kept[c.Serial] = true
	}
	todo := map[string]RecordCard{}
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
		err = wipeCard(env, card, old, ref)
		card.Close()
		if err != nil {
			if fatal(ctx, err) {
				return err
			}
			env.say("%s: %v", who(serial, ref.Custodian), err)
			continue
		}
		delete(todo, serial)
		res.Wiped = append(res.Wiped, ref)
		body, _ := json.Marshal(struct {
			Serial string `json:"serial"`
			Slot   string `json:"slot"`
		}{serial, slotText(ref.Slot)})
		if _, err := note(env, idText(old.ID), "rotate.wiped", body); err != nil {
			return err
		}
		env.say("%s: retired share wiped", who(serial, ref.Custodian))
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
		env.say("%d old cards still hold a retired share (worthless once its keyslot is killed); wipe them when they turn up", len(res.ToWipe))
	}
	return nil
}

// wipeCard puts a new key over the old card's custody slot when the card's
// own certificate there names the retired ceremony and the key the log
// records; a slot whose key is already another is left alone.
func wipeCard(env *Env, card Card, old *Record, ref RecordCard) error {
	sc, err := card.ReadShare(ref.Slot)
	if err != nil {
		return fmt.Errorf("read its certificate: %w", err)
	}
	rec, _, err := decodeSlotCert(ref.Serial, ref.Slot, sc)
	if err != nil {
		return fmt.Errorf("its certificate: %w", err)
	}
	if rec.ID != old.ID || rec.Cards[0].Key != ref.Key {
		return fmt.Errorf("its certificate names ceremony %s, not the retired %s: left alone", idText(rec.ID), idText(old.ID))
	}
	return withPIN(env, ref.Serial, ref.Custodian, func(pin []byte) error { return card.WipeShare(ref.Slot, pin) })
}
