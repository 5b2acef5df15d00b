package escrow

import (
	"context"
	"fmt"

	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
)

// RecoverManyOptions are the operator's choices for RecoverMany.
type RecoverManyOptions struct {
	// Volumes are the volumes to recover.
	Volumes []FleetVolume
	// NewKey is the passphrase or key file of the keyslot added to every
	// volume; nil asks for a passphrase twice, once for all (when the
	// first volume's key is proven). Not wiped.
	NewKey []byte
}

// RecoveredVolume is one volume's outcome in a one-pass recovery.
type RecoveredVolume struct {
	Device string
	// Result is what a single-volume Recover reports (the cards' outcomes
	// for this volume, the copies followed, the keyslot added); nil when
	// the volume could not be read.
	Result *RecoverResult
	// Err is why the volume was not recovered (or, with a keyslot added,
	// what failed its check afterwards); nil when all is well.
	Err error
}

// OK tells whether the volume opens with the new key.
func (r RecoveredVolume) OK() bool { return r.Result != nil && r.Result.NewKeyslot >= 0 }

// RecoverManyResult is what RecoverMany did.
type RecoverManyResult struct {
	Volumes []RecoveredVolume
	// Cards are the cards of the pass, in the order inserted.
	Cards []PassCard
}

// RecoverMany recovers many volumes in one pass of the custodians' cards:
// each custodian inserts their card once and types the PIN once; the card
// opens its share of every listed volume in that pass (the PIN kept in
// locked memory for that card's pass only, wiped before the next card).
// For each volume the trust rule of Recover applies, through the same
// view, candidates and collector: the ceremony followed is the one the
// copies confirm and the cards' certificates name, and the recovered key
// proves itself on its keyslot, where the new keyslot is added with the
// operator's one new key (asked for once). Each volume's outcome is
// reported; a volume whose shares fail does not stop the others, and the
// error is then a *FleetError. The recovery keys were combined on this
// machine: rotate them afterwards.
func RecoverMany(ctx context.Context, env *Env, opts RecoverManyOptions) (*RecoverManyResult, error) {
	if err := env.need("recover", false, true, false, true); err != nil {
		return nil, err
	}
	if err := checkDevices("recover", opts.Volumes); err != nil {
		return nil, err
	}
	res := &RecoverManyResult{Volumes: make([]RecoveredVolume, len(opts.Volumes))}
	newKey := opts.NewKey
	defer func() {
		if opts.NewKey == nil && newKey != nil {
			shares.Wipe(newKey)
		}
	}()
	var vols []*passVolume
	index := map[*passVolume]int{}
	added := map[*passVolume]luks.Keyslot{}
	for i, fv := range opts.Volumes {
		res.Volumes[i].Device = fv.Device
		if fv.Err != nil || fv.Volume == nil {
			res.Volumes[i].Err = fv.Err
			if fv.Err == nil {
				res.Volumes[i].Err = fmt.Errorf("%w: no volume", ErrUsage)
			}
			continue
		}
		sub := volumeEnv(env, fv)
		v, err := look(ctx, sub)
		if err != nil {
			res.Volumes[i].Err = fmt.Errorf("recover: %w", err)
			continue
		}
		if v.logErr != nil {
			sub.say("warning: %s: the ceremony log is unreadable (%v): using the token and the cards", sub.device(), v.logErr)
		}
		pv := &passVolume{env: sub, v: v}
		// The recovered key's first use adds the new keyslot, authorised
		// on the keyslot its copies name: one PBKDF run proves the key
		// and adds the keyslot, as Recover does.
		use := func(key []byte, slot int) error {
			if newKey == nil {
				var err error
				if newKey, err = askTwice(env.Prompt, "new passphrase for the recovered volumes"); err != nil {
					return &promptError{err}
				}
			}
			ks, h, err := sub.Volume.AddKeyslot(ctx, pv.v.h, key, newKey, luks.AddOptions{PBKDF: env.PBKDF, AuthSlot: &slot})
			if err != nil {
				return err
			}
			added[pv], pv.v.h = ks, h
			return nil
		}
		sub.say("%s:", sub.device())
		pv.ul = newUnlocker(sub, v, nil, use)
		index[pv] = i
		vols = append(vols, pv)
	}
	env.say("one pass of the cards for %d volumes: each custodian inserts their card once and types the pin once", len(vols))
	proven := func(pv *passVolume) error {
		u := pv.ul.u
		defer shares.Wipe(u.key)
		r := &RecoverResult{Ceremony: u.rec, Source: u.source, Keyslot: u.slot, NewKeyslot: added[pv].ID}
		res.Volumes[index[pv]].Result = r
		pv.env.say("%s: the recovery key opens keyslot %d; added keyslot %d with the new key", pv.env.device(), u.slot, r.NewKeyslot)
		return nil
	}
	res.Cards = runPass(ctx, env, vols, proven)

	var failed []VolumeError
	for _, pv := range vols {
		pv.ul.close()
		i := index[pv]
		rv := &res.Volumes[i]
		u := pv.ul.u
		if rv.Result == nil {
			rv.Result = &RecoverResult{NewKeyslot: -1, Keyslot: -1}
		}
		rv.Result.Cards, rv.Result.Problems = u.outcomes, u.problems
		if pv.err != nil {
			rv.Err = fmt.Errorf("recover: %w", pv.err)
			continue
		}
		if pv.env.Log != nil && pv.v.logErr == nil {
			h, err := logRecovery(pv.env, u, rv.Result)
			if err != nil {
				rv.Err = &StepError{Op: "recover", Done: StepKeyslotAdded, Keyslot: rv.Result.NewKeyslot, Err: err}
				continue
			}
			rv.Result.Anchor = h
		}
		if len(u.anchors) > 0 {
			rv.Err = &StepError{Op: "recover", Done: StepKeyslotAdded, Keyslot: rv.Result.NewKeyslot, Err: anchorsError(u.anchors)}
		}
	}
	for _, rv := range res.Volumes {
		if rv.Err != nil {
			failed = append(failed, VolumeError{Device: rv.Device, Err: rv.Err})
		}
	}
	return res, fleetError("recover", len(opts.Volumes), failed)
}
