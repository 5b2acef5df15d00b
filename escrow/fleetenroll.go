package escrow

import (
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"errors"
	"fmt"

	"custos.dev/custos/luks"

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
	if err := s.entries(rec, cer, shs); err != nil {
		return err
	}
	_, err := put(env, StatusOpen, rec)
	return err
}

// entries is seal without the logging.
func (s *setSealer) entries(rec *Record, cer *shares.Ceremony, shs []*shares.Share) error {
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
	return nil
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
	res := &EnrollSetResult{Set: st.Set, Fingerprint: st.Fingerprint, K: k, Volumes: make([]VolumeResult, len(opts.Volumes))}
	env.say("enrolling %d volumes to set %s version %d: %d of its %d cards, none of them present", len(opts.Volumes), st.Set.Name, st.Set.Version, k, n)
	var failed []VolumeError
	for from := 0; from < len(opts.Volumes); from += enrollBatch {
		to := min(from+enrollBatch, len(opts.Volumes))
		var batch []*freshVolume
		for i := from; i < to; i++ {
			fv := opts.Volumes[i]
			vr := &res.Volumes[i]
			*vr = VolumeResult{Device: fv.Device, TokenID: -1}
			if fv.Err != nil || fv.Volume == nil {
				vr.Err = fv.Err
				if vr.Err == nil {
					vr.Err = fmt.Errorf("%w: no volume", ErrUsage)
				}
				continue
			}
			sub := volumeEnv(env, fv)
			p, er, err := prepareEnroll(ctx, sub, EnrollOptions{K: k, N: n, AuthKey: fv.AuthKey}, sealer)
			switch {
			case crashed(err):
				return res, err
			case p == nil:
				if er != nil {
					vr.Ceremony, vr.TokenID, vr.Anchor, vr.Resumed, vr.Already = er.Ceremony, er.TokenID, er.Anchor, er.Resumed, er.Already
				}
				vr.Err = err
			default:
				batch = append(batch, &freshVolume{env: sub, prep: p, vr: vr})
			}
		}
		if err := enrollFresh(ctx, env, batch, sealer, k, n); err != nil {
			return res, err // a crash (failpoint): nothing rolled back
		}
		for i := from; i < to; i++ {
			vr := &res.Volumes[i]
			if vr.Err != nil {
				failed = append(failed, VolumeError{Device: vr.Device, Err: vr.Err})
				env.say("%s: not enrolled: %v", vr.Device, vr.Err)
				if fatal(ctx, vr.Err) {
					// No passphrase could be read, or ctx ended: the
					// rest would fail alike.
					for j := to; j < len(opts.Volumes); j++ {
						res.Volumes[j] = VolumeResult{Device: opts.Volumes[j].Device, TokenID: -1, Err: vr.Err}
						failed = append(failed, VolumeError{Device: opts.Volumes[j].Device, Err: vr.Err})
					}
					return res, fleetError("enroll", len(opts.Volumes), failed)
				}
			}
			if opts.Progress != nil {
				opts.Progress(i+1, len(opts.Volumes), vr.Device)
			}
		}
	}
	return res, fleetError("enroll", len(opts.Volumes), failed)
}

// enrollBatch is how many volumes a fleet enrollment takes through each
// step together: each step of each volume is still logged before the
// next, but the log's durable writes are shared by the batch (four per
// batch, not four per volume), and the recovery keys of one batch only
// are held at once.
const enrollBatch = 32

// freshVolume is a volume of a batch being enrolled anew.
type freshVolume struct {
	env  *Env
	prep *enrollPrep
	vr   *VolumeResult
	rec  *Record
	cer  *shares.Ceremony
	shs  []*shares.Share
	// secret and key are the recovery key; added: its keyslot is in the
	// header; done: the ceremony is active.
	secret, key []byte
	added, done bool
}

func (f *freshVolume) live() bool { return f.vr.Err == nil }

func (f *freshVolume) fail(err error) {
	if f.vr.Err == nil {
		f.vr.Err = err
	}
}

func (f *freshVolume) wipe() {
	shares.Wipe(f.secret)
	shares.Wipe(f.key)
	for _, s := range f.shs {
		s.Wipe()
	}
	f.prep.release()
}

// enrollFresh enrolls a batch of volumes to a set, each through Enroll's
// steps in Enroll's order — open record logged, keyslot added and its
// salt logged, open token, every share sealed and checked and logged,
// complete token, active — the log's writes of one step made for the
// whole batch in one transaction. A volume that fails a step is rolled
// back as Enroll rolls back (its keyslot killed with its own key, its
// token removed, its ceremony abandoned) and the others go on. It
// returns only a crash (a failpoint), which leaves everything as it is.
func enrollFresh(ctx context.Context, env *Env, batch []*freshVolume, sealer *setSealer, k, n int) (err error) {
	if len(batch) == 0 {
		return nil
	}
	defer func() {
		for _, f := range batch {
			if err == nil && !f.live() && !f.done {
				rollbackFresh(ctx, f)
			}
			f.wipe()
		}
	}()
	for _, f := range batch {
		free := f.prep.v.h.FreeKeyslots()
		if len(free) == 0 {
			f.fail(fmt.Errorf("enroll: %w", luks.ErrNoFreeKeyslot))
			continue
		}
		if f.secret, err = shares.NewRecoveryKey(); err != nil {
			f.fail(fmt.Errorf("enroll: %w", err))
			continue
		}
		f.key = shares.EncodeRecoveryKey(f.secret)
		id := shares.NewCeremonyID()
		cer, shs, err := shares.Split(id, f.prep.v.vid, f.secret, k, n)
		if err != nil {
			f.fail(fmt.Errorf("enroll: %w", err))
			continue
		}
		f.cer, f.shs = cer, shs
		f.rec = &Record{Version: 2, ID: [16]byte(id), Volume: [16]byte(f.prep.v.vid), K: k, N: n, Keyslot: free[0],
			Digest: [32]byte(cer.Digest), Set: sealer.ref, AllowUnattested: sealer.set.AllowUnattested}
		f.prep.res.Ceremony, f.vr.Ceremony = f.rec, f.rec
	}
	steps := func(name string) error {
		for _, f := range batch {
			if f.live() {
				if err := step(name); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if _, err := logBatch(env, batch, StatusOpen); err != nil {
		return err
	}
	if err := steps(fpEnrollBegun); err != nil {
		return err
	}
	for _, f := range batch {
		if !f.live() {
			continue
		}
		f.env.say("enrollment %s of %s: %d of %d, recovery keyslot %d", idText(f.rec.ID), f.env.device(), k, n, f.rec.Keyslot)
		v := f.prep.v
		ks, h, err := f.env.Volume.AddKeyslot(ctx, v.h, f.prep.auth, f.key, f.env.recoveryOptions(f.rec.Keyslot, f.prep.authSlot))
		if err != nil {
			f.fail(fmt.Errorf("enroll: %w", err))
			continue
		}
		v.h, f.added = h, true
		if ks.ID != f.rec.Keyslot || ks.Salt == "" {
			f.fail(fmt.Errorf("enroll: keyslot %d: not found with a salt after adding it", f.rec.Keyslot))
			continue
		}
		f.rec.Salt = ks.Salt
	}
	if _, err := logBatch(env, batch, StatusOpen); err != nil {
		return err
	}
	if err := steps(fpEnrollKeyslot); err != nil {
		return err
	}
	for _, f := range batch {
		if f.live() {
			if err := writeOpenToken(ctx, f.env, f.prep.v, f.rec); err != nil {
				f.fail(fmt.Errorf("enroll: %w", err))
			}
		}
	}
	if err := steps(fpEnrollOpenToken); err != nil {
		return err
	}
	for _, f := range batch {
		if f.live() {
			if err := sealer.entries(f.rec, f.cer, f.shs); err != nil {
				f.fail(fmt.Errorf("enroll: %w", err))
			}
		}
	}
	if _, err := logBatch(env, batch, StatusOpen); err != nil {
		return err
	}
	if err := steps(fpEnrollSealed); err != nil {
		return err
	}
	for _, f := range batch {
		if !f.live() {
			continue
		}
		id, err := writeToken(ctx, f.env, f.prep.v, f.rec)
		if errors.Is(err, luks.ErrTokenTooLarge) {
			err = fmt.Errorf("%w: %w", ErrNeedsToken, err)
		}
		if err != nil {
			f.fail(fmt.Errorf("enroll: %w", err))
			continue
		}
		f.vr.TokenID = id
	}
	if err := steps(fpEnrollToken); err != nil {
		return err
	}
	head, err := logBatch(env, batch, StatusActive)
	if err != nil {
		return err
	}
	for _, f := range batch {
		if f.live() {
			f.done = true
			f.vr.Anchor, f.vr.Resumed = head, f.prep.res.Resumed
			f.env.say("enrollment %s done: any %d of the %d cards of set %s recover %s", idText(f.rec.ID), k, n, sealer.set.Name, f.env.device())
		}
	}
	return steps(fpEnrollLogged)
}

// logBatch records each live volume's ceremony with status in one
// transaction. When the log refuses the batch, each is tried alone, so
// that the refusal is the volume's that caused it. It returns a crash
// only.
func logBatch(env *Env, batch []*freshVolume, status string) (store.Head, error) {
	var live []*freshVolume
	for _, f := range batch {
		if f.live() {
			live = append(live, f)
		}
	}
	if len(live) == 0 {
		return store.Head{}, nil
	}
	head, err := env.Log.Update(func(tx *store.Tx) error {
		for _, f := range live {
			if _, err := tx.PutCeremony(env.actor(), status, f.rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		return head, nil
	}
	for _, f := range live {
		h, err := put(f.env, status, f.rec)
		if err != nil {
			f.fail(fmt.Errorf("enroll: %w", err))
			continue
		}
		head = h
	}
	return head, nil
}

// rollbackFresh undoes a volume of a batch that failed, as enroll's
// rollback does: a keyslot it added is killed with the recovery key this
// process holds (mayKill's proof), its token removed, the ceremony marked
// abandoned.
func rollbackFresh(ctx context.Context, f *freshVolume) {
	env, rec, err := f.env, f.rec, f.vr.Err
	if rec == nil {
		return
	}
	env.say("enrollment of %s failed: undoing it", env.device())
	if !f.added {
		if _, uerr := put(env, StatusAbandoned, rec); uerr != nil {
			f.vr.Err = fmt.Errorf("%w (and marking it abandoned failed: %v)", err, uerr)
		}
		return
	}
	nv, ierr := look(ctx, env)
	if ierr != nil {
		f.vr.Err = undoFailed("enroll", err, ierr)
		return
	}
	if uerr := undo(ctx, env, nv, rec, f.prep.authSlot, f.prep.auth, f.key, "failed enrollment"); uerr != nil {
		f.vr.Err = undoFailed("enroll", err, uerr)
	}
}
