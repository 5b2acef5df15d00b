package escrow

import (
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"fmt"

	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// setSealer seals a ceremony's shares to a custodian set's keys, no card
// present.
type setSealer struct {
	set  *Set
	ref  *store.SetRef
	keys []*ecdh.PublicKey
}

// newSetSealer checks a set where its shares are about to be sealed (every
// attestation again, verifySet) and parses its keys.
func newSetSealer(env *Env, st *store.SetState) (*setSealer, error) {
	if err := verifySet(env, st.Set); err != nil {
		return nil, err
	}
	keys, err := setKeys(st.Set)
	if err != nil {
		return nil, err
	}
	return &setSealer{set: st.Set, keys: keys,
		ref: &store.SetRef{Name: st.Set.Name, Version: st.Set.Version, Fingerprint: st.Fingerprint}}, nil
}

// seal seals share i to the set's card i (shares.SealChecked: each sealed
// share proven to open, by the other side of its key agreement, to its
// share), puts the entries into rec with their attestation digests,
// checks them as any copy of a record is checked before use (sealedOf),
// checks every share against its commitment and k of them against the
// digest, and logs the ceremony with every entry in one event. It is what
// a card's read-back is to an enrollment with cards present: the cards'
// keys themselves were proven when the set took them in (and each set
// rollcall proves them again).
func (s *setSealer) seal(env *Env, rec *Record, cer *shares.Ceremony, shs []*shares.Share) error {
	if len(shs) != len(s.set.Cards) || rec.N != len(shs) {
		return fmt.Errorf("%d shares for the %d cards of set %s", len(shs), len(s.set.Cards), s.set.Name)
	}
	rec.Cards = rec.Cards[:0]
	for i, c := range s.set.Cards {
		sealed, err := shares.SealChecked(shs[i], s.keys[i])
		if err != nil {
			return fmt.Errorf("card %s: %w", c.Serial, err)
		}
		b, err := sealed.MarshalBinary()
		if err != nil {
			return err
		}
		e := RecordCard{Index: i + 1, Serial: c.Serial, Slot: c.Slot, Custodian: c.Custodian, Key: c.Key,
			Commitment: [32]byte(cer.Commitments[i]), Sealed: b}
		if c.Attestation != nil {
			e.Attestation = sha256.Sum256(c.Attestation)
		}
		rec.Cards = append(rec.Cards, e)
	}
	if err := checkRecord(rec); err != nil {
		return err
	}
	for _, sh := range shs {
		if err := cer.Check(sh); err != nil {
			return fmt.Errorf("share %d: %w", sh.Index, err)
		}
	}
	secret, _, err := cer.Combine(shs[:rec.K])
	if err != nil {
		return fmt.Errorf("the shares do not combine to the key: %w", err)
	}
	shares.Wipe(secret)
	_, err = put(env, StatusOpen, rec)
	return err
}

// EnrollSetOptions are the operator's choices for EnrollSet.
type EnrollSetOptions struct {
	// Set names the custodian set; its newest version is used.
	Set string
	// K is the threshold; 0 takes the set's default.
	K int
	// Volumes are the volumes to enroll.
	Volumes []FleetVolume
	// Progress, if set, hears after each volume: how many are done, of
	// how many, and the one just done.
	Progress func(done, total int, device string)
}

// VolumeResult is one volume's outcome in a fleet enrollment.
type VolumeResult struct {
	Device string
	// Ceremony is the volume's enrolled ceremony; nil when it failed
	// before one was begun.
	Ceremony *Record
	TokenID  int
	Anchor   store.Head
	// Resumed: "" , "finished" or "undone", as EnrollResult says.
	Resumed string
	// Already: the volume was enrolled to the set before this run.
	Already bool
	// Err is why the volume is not enrolled; nil when it is.
	Err error
}

// OK tells whether the volume is enrolled.
func (r VolumeResult) OK() bool { return r.Err == nil }

// EnrollSetResult is what EnrollSet did.
type EnrollSetResult struct {
	Set         *Set
	Fingerprint [32]byte
	K           int
	Volumes     []VolumeResult
}

// EnrollSet enrolls many volumes to a custodian set with no card present:
// sealing a share needs only the card's public key, which the set holds
// with its attestation (checked again here, once). Each volume goes
// through the steps of Enroll, logged in the same order — open record,
// keyslot added and its salt logged, open token, then every share sealed
// to the set's keys and logged at once, complete token, active — and its
// record names the set. A volume that fails is rolled back as Enroll rolls
// back (its new keyslot killed, its ceremony abandoned), named in the
// result, and the others go on; the error is then a *FleetError. A volume
// with an unfinished enrollment is finished or undone first, as Enroll
// does. Each volume needs a LUKS2 header: its token is the ceremony's
// copy that no card carries.
func EnrollSet(ctx context.Context, env *Env, opts EnrollSetOptions) (*EnrollSetResult, error) {
	if err := env.need("enroll", false, false, true, true); err != nil {
		return nil, err
	}
	if err := checkDevices("enroll", opts.Volumes); err != nil {
		return nil, err
	}
	st, err := lookupSet(env, opts.Set, 0)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	n := len(st.Set.Cards)
	k := opts.K
	if k == 0 {
		k = st.Set.K
	}
	if err := checkKN(k, n); err != nil {
		return nil, fmt.Errorf("enroll: set %s has %d cards: %w", st.Set.Name, n, err)
	}
	sealer, err := newSetSealer(env, st)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	res := &EnrollSetResult{Set: st.Set, Fingerprint: st.Fingerprint, K: k}
	env.say("enrolling %d volumes to set %s version %d: %d of its %d cards, none of them present", len(opts.Volumes), st.Set.Name, st.Set.Version, k, n)
	var failed []VolumeError
	for i, fv := range opts.Volumes {
		vr := VolumeResult{Device: fv.Device, TokenID: -1}
		if fv.Err != nil || fv.Volume == nil {
			vr.Err = fv.Err
			if vr.Err == nil {
				vr.Err = fmt.Errorf("%w: no volume", ErrUsage)
			}
		} else {
			sub := volumeEnv(env, fv)
			er, err := enrollOne(ctx, sub, EnrollOptions{K: k, N: n, AuthKey: fv.AuthKey}, sealer)
			if er != nil {
				vr.Ceremony, vr.TokenID, vr.Anchor, vr.Resumed, vr.Already = er.Ceremony, er.TokenID, er.Anchor, er.Resumed, er.Already
			}
			vr.Err = err
			if crashed(err) {
				return res, err
			}
		}
		if vr.Err != nil {
			failed = append(failed, VolumeError{Device: fv.Device, Err: vr.Err})
			env.say("%s: not enrolled: %v", fv.Device, vr.Err)
			if fatal(ctx, vr.Err) {
				// No passphrase could be read, or ctx ended: the rest
				// would fail alike.
				res.Volumes = append(res.Volumes, vr)
				for _, rest := range opts.Volumes[i+1:] {
					res.Volumes = append(res.Volumes, VolumeResult{Device: rest.Device, TokenID: -1, Err: vr.Err})
					failed = append(failed, VolumeError{Device: rest.Device, Err: vr.Err})
				}
				return res, fleetError("enroll", len(opts.Volumes), failed)
			}
		}
		res.Volumes = append(res.Volumes, vr)
		if opts.Progress != nil {
			opts.Progress(i+1, len(opts.Volumes), fv.Device)
		}
	}
	return res, fleetError("enroll", len(opts.Volumes), failed)
}
