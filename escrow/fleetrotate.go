package escrow

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// RotateSetOptions are the operator's choices for RotateSet.
type RotateSetOptions struct {
	// Set names the custodian set.
	Set string
	// Old is the serial of the card that leaves the set, New that of the
	// card that takes its place (its slot NewSlot, 0 as set create
	// chooses; its custodian NewCustodian, "" from the log's registry).
	Old, New     string
	NewSlot      uint8
	NewCustodian string
	// Volumes are the volumes to move to the set's new version.
	Volumes []FleetVolume
}

// RotatedVolume is one volume's outcome in a fleet rotation.
type RotatedVolume struct {
	Device string
	// Result is what Rotate reports for it; nil when nothing was rotated.
	Result *RotateResult
	// Already: the volume's ceremony was on the set's new version before
	// this run (an earlier, interrupted run rotated it).
	Already bool
	// Err is why the volume is not on the new version; nil when it is.
	Err error
}

// RotateSetResult is what RotateSet did.
type RotateSetResult struct {
	// Set is the set's new version, the one every volume was moved to.
	Set         *Set
	Fingerprint [32]byte
	// SetResumed: the new version was logged by an earlier run, which
	// this one finishes.
	SetResumed bool
	// NewCard is the new card's outcome (nil when SetResumed).
	NewCard *CardOutcome
	Volumes []RotatedVolume
	// Cards are the cards of the pass, in the order inserted.
	Cards []PassCard
}

// RotateSet replaces a card across the fleet: the card New takes Old's
// place in a new version of the set (New inserted first: attested and
// proven as set create proves a card; the version logged before any volume
// is touched), then one pass of k cards of the old version recovers each
// listed volume's key, which proves its keyslot; then each volume is
// rotated as Rotate rotates it, with its new shares sealed to the new
// version's keys (no card present): a new recovery key and keyslot, its
// salt logged, open token, every share sealed and checked and logged,
// complete token, the old keyslot killed on proof, the old token removed,
// old → new logged. Each step is logged before the next and has its
// failpoint. A rerun after a crash finishes: the set's new version is
// found in the log and kept, a volume already moved is left alone, and an
// interrupted volume is finished (its complete token and the log agreeing)
// or undone and rotated again, exactly as Rotate does; the pass then
// serves either ceremony. A volume that fails is named, the others go on
// (a *FleetError). Old's shares of the retired ceremonies open nothing
// once their keyslots are killed.
func RotateSet(ctx context.Context, env *Env, opts RotateSetOptions) (*RotateSetResult, error) {
	if err := env.need("rotate", false, true, true, true); err != nil {
		return nil, err
	}
	if err := checkDevices("rotate", opts.Volumes); err != nil {
		return nil, err
	}
	if opts.Old == "" || opts.New == "" || opts.Old == opts.New {
		return nil, fmt.Errorf("rotate: %w: --replace OLD=NEW names two different cards", ErrUsage)
	}
	if opts.NewCustodian != "" {
		if err := checkNames([]string{opts.NewCustodian}, 1); err != nil {
			return nil, fmt.Errorf("rotate: %w", err)
		}
	}
	cur, err := lookupSet(env, opts.Set, 0)
	if err != nil {
		return nil, fmt.Errorf("rotate: %w", err)
	}
	res := &RotateSetResult{}
	target, err := replaceInSet(ctx, env, cur, opts, res)
	if err != nil {
		return res, err
	}
	res.Set, res.Fingerprint = target.Set, target.Fingerprint
	sealer, err := newSetSealer(env, target)
	if err != nil {
		return res, fmt.Errorf("rotate: %w", err)
	}
	onTarget := func(r *Record) bool {
		return r != nil && r.Set != nil && *r.Set == *sealer.ref
	}

	type item struct {
		env  *Env
		v    *view
		pv   *passVolume
		open *Record // the interrupted rotation to finish or undo
		plan string  // "rotate", "undo", "finish", "done"
		rv   *RotatedVolume
	}
	res.Volumes = make([]RotatedVolume, len(opts.Volumes))
	var items []*item
	var pass []*passVolume
	for i, fv := range opts.Volumes {
		rv := &res.Volumes[i]
		rv.Device = fv.Device
		if fv.Err != nil || fv.Volume == nil {
			rv.Err = fv.Err
			if fv.Err == nil {
				rv.Err = fmt.Errorf("%w: no volume", ErrUsage)
			}
			continue
		}
		sub := volumeEnv(env, fv)
		it := &item{env: sub, rv: rv, plan: "rotate"}
		v, err := look(ctx, sub)
		if err == nil && v.logErr != nil {
			err = v.logErr
		}
		if err != nil {
			rv.Err = fmt.Errorf("rotate: %w", err)
			continue
		}
		it.v = v
		var only *[16]byte
		if o := v.openLog(); o != nil {
			switch {
			case o.Record.Replaces == ([16]byte{}):
				rv.Err = fmt.Errorf("rotate: %w", &UnfinishedError{Kind: "enrollment", Ceremony: idText(o.Record.ID)})
				continue
			case v.logState(o.Record.Replaces) == nil:
				rv.Err = fmt.Errorf("rotate: rotation %s replaces %s, which the log does not hold", idText(o.Record.ID), idText(o.Record.Replaces))
				continue
			case finishable(v, o.Record):
				it.plan, it.open = "finish", o.Record
				id := o.Record.ID
				only = &id
			default:
				it.plan, it.open = "undo", o.Record
				id := o.Record.Replaces
				only = &id
			}
		} else {
			c := v.current()
			switch {
			case c == nil:
				rv.Err = fmt.Errorf("rotate: %w", ErrNoCeremony)
				continue
			case onTarget(c.rec):
				it.plan, rv.Already = "done", true
				rv.Result = &RotateResult{New: c.rec}
				sub.say("%s: already on set %s version %d", sub.device(), target.Set.Name, target.Set.Version)
				continue
			case c.rec.Set == nil || c.rec.Set.Name != opts.Set:
				rv.Err = fmt.Errorf("rotate: %w %s: its ceremony %s is not", ErrNotEnrolledToSet, opts.Set, idText(c.rec.ID))
				continue
			}
		}
		sub.say("%s:", sub.device())
		it.pv = &passVolume{env: sub, v: v, ul: newUnlocker(sub, v, only, testKey(ctx, sub))}
		items = append(items, it)
		pass = append(pass, it.pv)
	}
	if len(pass) > 0 {
		env.say("one pass of k cards of set %s for %d volumes: each custodian inserts their card once and types the pin once", opts.Set, len(pass))
		res.Cards = runPass(ctx, env, pass, func(*passVolume) error { return nil })
	}
	defer func() {
		for _, it := range items {
			it.pv.ul.close()
			if it.pv.done {
				shares.Wipe(it.pv.ul.u.key)
			}
		}
	}()

	for _, it := range items {
		rv := it.rv
		rr := &RotateResult{}
		rv.Result = rr
		u := it.pv.ul.u
		rr.Cards, rr.Problems = u.outcomes, append([]string(nil), u.problems...)
		if it.pv.err != nil {
			rv.Err = fmt.Errorf("rotate: authorise: %w", it.pv.err)
			continue
		}
		err := rotateOne(ctx, it.env, it.v, it.plan, it.open, &authority{key: u.key, slot: u.slot, rec: u.rec}, sealer, onTarget, rr, opts.Set)
		if crashed(err) {
			return res, err
		}
		rv.Err = err
		if err != nil {
			it.env.say("%s: not rotated: %v", it.env.device(), err)
		}
	}
	var failed []VolumeError
	for _, rv := range res.Volumes {
		if rv.Err != nil {
			failed = append(failed, VolumeError{Device: rv.Device, Err: rv.Err})
		}
	}
	return res, fleetError("rotate", len(opts.Volumes), failed)
}

// rotateOne moves one volume to the set's new version, with the key the
// pass proved: finishing or undoing an interrupted rotation first.
func rotateOne(ctx context.Context, env *Env, v *view, plan string, open *Record, auth *authority, sealer *setSealer, onTarget func(*Record) bool, res *RotateResult, set string) error {
	old := auth.rec
	switch plan {
	case "undo":
		env.say("%s: undoing unfinished rotation %s", env.device(), idText(open.ID))
		if err := undo(ctx, env, v, open, auth.slot, auth.key, nil, "interrupted rotation"); err != nil {
			return fmt.Errorf("rotate: undo %s: %w", idText(open.ID), err)
		}
		res.Resumed = "undone"
	case "finish":
		st := v.logState(open.Replaces)
		env.say("%s: finishing rotation %s: every new share was sealed and checked", env.device(), idText(open.ID))
		if err := finishRotate(ctx, env, v, st.Record, open, &finishAuth{key: auth.key, slot: auth.slot, operator: -1}, RotateOptions{}, res); err != nil {
			return err
		}
		res.Resumed = "finished"
		if onTarget(open) {
			return nil
		}
		old = open
	}
	if old == nil || old.Set == nil || old.Set.Name != set {
		return fmt.Errorf("rotate: %w %s: the ceremony its cards recover is not", ErrNotEnrolledToSet, set)
	}
	if onTarget(old) {
		return nil
	}
	nv, err := look(ctx, env)
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if nv.logState(old.ID) == nil {
		// The ceremony the recovered key proves, which this log does not
		// hold: record it, as Rotate does, so that the new one can name
		// it in replaces.
		if _, err := put(env, StatusActive, old); err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
		if nv, err = look(ctx, env); err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
	}
	n := len(sealer.set.Cards)
	k := old.K
	if k > n {
		return fmt.Errorf("rotate: %w: the volume's quorum %d is more than the set's %d cards", ErrUsage, k, n)
	}
	auth = &authority{key: auth.key, slot: auth.slot, rec: old}
	return rotate(ctx, env, nv, old, k, n, auth, RotateOptions{}, res, sealer)
}

// replaceInSet is the set's version with New in Old's place: made now
// (New inserted, attested and proven, the version logged), or found in
// the log when an earlier run made it.
func replaceInSet(ctx context.Context, env *Env, cur *store.SetState, opts RotateSetOptions, res *RotateSetResult) (*store.SetState, error) {
	s := cur.Set
	has := func(s *Set, serial string) int {
		return slices.IndexFunc(s.Cards, func(c SetCard) bool { return c.Serial == serial })
	}
	oi, ni := has(s, opts.Old), has(s, opts.New)
	switch {
	case oi < 0 && ni >= 0 && s.Version > 1:
		prev, err := env.Log.SetVersion(s.Name, s.Version-1)
		if err == nil && has(prev.Set, opts.Old) == ni && has(prev.Set, opts.New) < 0 {
			res.SetResumed = true
			env.say("set %s version %d already has card %s in the place of %s: going on with its volumes", s.Name, s.Version, opts.New, opts.Old)
			return cur, nil
		}
		return nil, fmt.Errorf("rotate: %w: card %s is in set %s version %d already, and card %s is not", ErrUsage, opts.New, s.Name, s.Version, opts.Old)
	case oi < 0:
		return nil, fmt.Errorf("rotate: card %s: %w %s (version %d)", opts.Old, ErrNotInSet, s.Name, s.Version)
	case ni >= 0:
		return nil, fmt.Errorf("rotate: %w: card %s is in set %s already", ErrUsage, opts.New, s.Name)
	}
	name := opts.NewCustodian
	if name == "" {
		name = custodianOf(env, opts.New)
	}
	env.say("set %s version %d: card %s takes the place of card %s", s.Name, s.Version+1, opts.New, opts.Old)
	var sc *SetCard
	for sc == nil {
		card, err := waitCard(ctx, env, "insert the new card "+who(opts.New, name))
		if err != nil {
			return nil, fmt.Errorf("rotate: the new card %s: %w", opts.New, err)
		}
		serial := serialOf(card)
		out := CardOutcome{Serial: serial, Reader: card.Reader(), Custodian: name}
		if serial != opts.New {
			out.Err = fmt.Errorf("card %s: not the new card %s: %w %s", serial, opts.New, ErrNotInSet, s.Name)
		} else {
			sc, out.Err = proveSetCard(env, card, SetCardSpec{Serial: opts.New, Slot: opts.NewSlot}, name, s.AllowUnattested)
		}
		card.Close()
		res.NewCard = &out
		if out.Err != nil {
			if fatal(ctx, out.Err) {
				return nil, fmt.Errorf("rotate: %w", out.Err)
			}
			env.say("%s: set aside: %s", who(serial, name), describe(out.Err))
			sc = nil
		}
	}
	next := s.Clone()
	next.Version++
	next.Previous = cur.Fingerprint
	next.Cards[oi] = *sc
	if _, err := next.Encode(); err != nil {
		return nil, fmt.Errorf("rotate: %w", err)
	}
	_, err := env.Log.Update(func(tx *store.Tx) error {
		_, err := tx.PutSet(env.actor(), next)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rotate: log set %s version %d: %w", next.Name, next.Version, err)
	}
	if err := step(fpSetReplaced); err != nil {
		return nil, err
	}
	st, err := env.Log.Set(next.Name)
	if err != nil {
		return nil, fmt.Errorf("rotate: %w", err)
	}
	if st.Set.Version != next.Version {
		return nil, errors.New("rotate: the log's newest version of the set is not the one just logged")
	}
	env.say("set %s version %d logged: fingerprint %s", next.Name, next.Version, FingerprintGroups(st.Fingerprint))
	return &st, nil
}
