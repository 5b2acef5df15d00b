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
	// stay empty. Names follow docs/FORMAT.md section 7's text rule.
	Custodians []string
	// AuthKey is an existing passphrase or key file of the volume; nil
	// asks for it through the Prompter. Enroll does not wipe it.
	AuthKey []byte
	// AllowUnattested accepts cards that cannot prove with an attestation
	// that their key was made on a genuine card. The choice is recorded
	// in the ceremony and shown as a weakness.
	AllowUnattested bool
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
	// Already: enrolling to a custodian set (EnrollSet), the volume's
	// ceremony in force is enrolled to that set already; nothing was done.
	Already bool
	// Attestations are the cards' attestations as the log's chains tell
	// them, by share (once the ceremony is complete).
	Attestations []CardAttestation
}

// Enroll puts a new recovery key for the volume in the hands of N
// custodians: it authorises with an existing key, makes the recovery key
// and splits it, adds its keyslot and records the keyslot's salt, writes a
// token for the open ceremony (LUKS2), and for each card in turn attests
// the slot key, seals the share to it, writes the certificate, and has the
// card open it with the custodian's PIN; only then it writes the complete
// token and marks the ceremony active. A failure before the end kills the
// new keyslot again; a crash leaves what Status explains and a rerun
// finishes or undoes.
func Enroll(ctx context.Context, env *Env, opts EnrollOptions) (*EnrollResult, error) {
	res, err := enrollVolume(ctx, env, opts)
	if err == nil && res != nil && res.Ceremony != nil {
		res.Attestations = attestationsOf(env, res.Ceremony)
	}
	return res, err
}

func enrollVolume(ctx context.Context, env *Env, opts EnrollOptions) (*EnrollResult, error) {
	if err := env.need("enroll", true, true, true, true); err != nil {
		return nil, err
	}
	if err := checkKN(opts.K, opts.N); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := checkNames(opts.Custodians, opts.N); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	p, res, err := prepareEnroll(ctx, env, opts, nil)
	if p == nil {
		return res, err
	}
	defer p.release()
	return p.res, enroll(ctx, env, p.v, opts, p.auth, p.authSlot, p.res)
}

// enrollPrep is a volume ready to be enrolled anew: its view, the
// authorising key and the keyslot it opens, and the result so far (an
// unfinished enrollment undone first).
type enrollPrep struct {
	v        *view
	auth     []byte
	authSlot int
	res      *EnrollResult
	prompted bool // auth was asked for: wiped by release
}

func (p *enrollPrep) release() {
	if p != nil && p.prompted {
		shares.Wipe(p.auth)
	}
}

// prepareEnroll is what Enroll does before it enrolls anew: it reads the
// copies, refuses a volume enrolled already (or, enrolling to a set with
// sealer, reports one enrolled to that set done), authorises, and
// finishes an unfinished enrollment (then it returns no prep) or undoes
// it. A nil prep comes with the result or the error to report.
func prepareEnroll(ctx context.Context, env *Env, opts EnrollOptions, sealer *setSealer) (*enrollPrep, *EnrollResult, error) {
	v, err := look(ctx, env)
	if err != nil {
		return nil, nil, fmt.Errorf("enroll: %w", err)
	}
	if v.logErr != nil {
		return nil, nil, fmt.Errorf("enroll: %w", v.logErr)
	}
	if sealer != nil && v.h.Version != 2 {
		return nil, nil, fmt.Errorf("enroll: %w: a luks%d header holds no token, and no card would carry the ceremony", ErrNeedsToken, v.h.Version)
	}
	cur := v.current()
	enrolled := func() error {
		return fmt.Errorf("enroll: %w: ceremony %s (%d of %d)", ErrAlreadyEnrolled, idText(cur.rec.ID), cur.rec.K, cur.rec.N)
	}
	open := v.openLog()
	if sealer != nil && cur != nil && open == nil && cur.rec.Set != nil && cur.rec.Set.Name == sealer.set.Name {
		// A rerun of a fleet enrollment meets the volumes it did.
		env.say("%s is enrolled to set %s already (ceremony %s)", env.device(), cur.rec.Set.Name, idText(cur.rec.ID))
		return nil, &EnrollResult{Ceremony: cur.rec, TokenID: -1, Already: true}, nil
	}
	if cur != nil && (open == nil || open.Record.Replaces != ([16]byte{})) {
		return nil, nil, enrolled()
	}
	if open != nil && open.Record.Replaces != ([16]byte{}) {
		return nil, nil, fmt.Errorf("enroll: %w", &UnfinishedError{Kind: "rotation", Ceremony: idText(open.Record.ID)})
	}

	auth, prompted := opts.AuthKey, false
	if auth == nil {
		if auth, err = env.Prompt.Secret("passphrase of an existing keyslot of " + env.device()); err != nil {
			return nil, nil, fmt.Errorf("enroll: %w", &promptError{err})
		}
		prompted = true
	}
	release := func() {
		if prompted {
			shares.Wipe(auth)
		}
	}
	authSlot, err := env.Volume.FindKeyslot(ctx, auth)
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("enroll: %w: %w", ErrAuthorise, err)
	}

	res := &EnrollResult{TokenID: -1}
	if open != nil {
		// Beside an active ceremony an open enrollment is never finished
		// (two would be active); it is undone, so that rotate, which
		// refuses while it stands, can go on.
		if cur == nil && finishable(v, open.Record) {
			env.say("finishing enrollment %s: every share was written and verified", idText(open.Record.ID))
			res.Resumed = "finished"
			release()
			return nil, res, finishEnroll(ctx, env, v, open.Record, res)
		}
		env.say("undoing unfinished enrollment %s", idText(open.Record.ID))
		if err := undo(ctx, env, v, open.Record, authSlot, auth, nil, "interrupted enrollment"); err != nil {
			release()
			return nil, nil, fmt.Errorf("enroll: undo %s: %w", idText(open.Record.ID), err)
		}
		res.Resumed = "undone"
		if cur != nil {
			release()
			return nil, res, enrolled()
		}
		if v, err = look(ctx, env); err != nil {
			release()
			return nil, nil, fmt.Errorf("enroll: %w", err)
		}
	}
	return &enrollPrep{v: v, auth: auth, authSlot: authSlot, res: res, prompted: prompted}, nil, nil
}

// checkNames checks the custodians' names given for a new ceremony.
func checkNames(names []string, n int) error {
	if len(names) > n {
		return fmt.Errorf("%w: %d custodians named for n=%d", ErrUsage, len(names), n)
	}
	for _, name := range names {
		if name == "" {
			continue
		}
		if err := store.CheckText(name); err != nil {
			return fmt.Errorf("%w: custodian %q: %v", ErrUsage, safeText(name), err)
		}
	}
	return nil
}

// finishable tells whether an open ceremony can be taken to its end: every
// share was written and verified, and two copies — the complete token and
// the log — agree on all of it, with its keyslot still the one recorded.
// A log alone saying so proves nothing: finishing marks the ceremony
// active and, for a rotation, kills the old keyslot.
func finishable(v *view, rec *Record) bool {
	c := v.claimOf(rec.ID)
	if c == nil || !c.agrees() || c.token.anchorErr != nil || !rec.Complete() || !c.token.tok.Record.Complete() {
		return false
	}
	ks := v.h.Keyslot(rec.Keyslot)
	return ks != nil && rec.Salt != "" && ks.Salt == rec.Salt
}

func enroll(ctx context.Context, env *Env, v *view, opts EnrollOptions, auth []byte, authSlot int, res *EnrollResult) (err error) {
	free := v.h.FreeKeyslots()
	if len(free) == 0 {
		return fmt.Errorf("enroll: %w", luks.ErrNoFreeKeyslot)
	}
	secret, err := shares.NewRecoveryKey()
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	defer shares.Wipe(secret)
	key := shares.EncodeRecoveryKey(secret)
	defer shares.Wipe(key)
	id := shares.NewCeremonyID()
	cer, shs, err := shares.Split(id, v.vid, secret, opts.K, opts.N)
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	defer func() {
		for _, s := range shs {
			s.Wipe()
		}
	}()
	rec := &Record{Version: 2, ID: [16]byte(id), Volume: [16]byte(v.vid), K: opts.K, N: opts.N, Keyslot: free[0],
		Digest: [32]byte(cer.Digest), AllowUnattested: opts.AllowUnattested}
	res.Ceremony = rec
	if _, err := put(env, StatusOpen, rec); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	if err := step(fpEnrollBegun); err != nil {
		return err
	}
	env.say("enrollment %s: %d of %d, recovery keyslot %d", idText(rec.ID), rec.K, rec.N, rec.Keyslot)

	added := false
	defer func() {
		if err == nil || crashed(err) {
			return
		}
		env.say("enrollment failed: undoing it")
		if !added {
			if _, uerr := put(env, StatusAbandoned, rec); uerr != nil {
				err = fmt.Errorf("%w (and marking it abandoned failed: %v)", err, uerr)
			}
			return
		}
		nv, ierr := look(ctx, env)
		if ierr != nil {
			err = undoFailed("enroll", err, ierr)
			return
		}
		if uerr := undo(ctx, env, nv, rec, authSlot, auth, key, "failed enrollment"); uerr != nil {
			err = undoFailed("enroll", err, uerr)
		}
	}()
	if err := addRecoveryKeyslot(ctx, env, v, rec, auth, authSlot, key); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	added = true
	if err := step(fpEnrollKeyslot); err != nil {
		return err
	}
	if err := writeOpenToken(ctx, env, v, rec); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	if err := step(fpEnrollOpenToken); err != nil {
		return err
	}
	ns := &newShares{rec: rec, cer: cer, shares: shs, names: opts.Custodians, fp: fpEnrollCard}
	if err := ns.writeAll(ctx, env); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	// Every share is written and verified; from here on a rerun finishes.
	added = false
	return finishEnroll(ctx, env, v, rec, res)
}

// addRecoveryKeyslot adds rec's keyslot with the recovery key and records
// its salt — the keyslot's identity — in the log at once. v.h becomes the
// header after the change.
func addRecoveryKeyslot(ctx context.Context, env *Env, v *view, rec *Record, auth []byte, authSlot int, key []byte) error {
	ks, h, err := env.Volume.AddKeyslot(ctx, v.h, auth, key, env.recoveryOptions(rec.Keyslot, authSlot))
	if err != nil {
		return err
	}
	v.h = h
	if ks.ID != rec.Keyslot || ks.Salt == "" {
		return fmt.Errorf("keyslot %d: not found with a salt after adding it", rec.Keyslot)
	}
	rec.Salt = ks.Salt
	_, err = put(env, StatusOpen, rec)
	return err
}

// writeOpenToken writes the open ceremony's token into a LUKS2 header: the
// record without cards, anchored in the log. It is the second copy that
// lets a rerun after a crash prove the keyslot custos added is its own.
func writeOpenToken(ctx context.Context, env *Env, v *view, rec *Record) error {
	if v.h.Version != 2 {
		return nil
	}
	_, err := writeToken(ctx, env, v, frameOf(rec))
	if errors.Is(err, luks.ErrTokenTooLarge) {
		env.say("warning: no room in the luks2 header for the ceremony's token: it lives in the log and on the cards")
		return nil
	}
	return err
}

// writeToken writes rec's token, anchored at the log's head, replacing the
// token the header already holds for the ceremony, and returns its ID.
// v.h becomes the header after the change.
func writeToken(ctx context.Context, env *Env, v *view, rec *Record) (int, error) {
	head, err := env.Log.Head()
	if err != nil {
		return -1, fmt.Errorf("read log head: %w", err)
	}
	tok, err := store.EncodeToken(rec, head)
	if err != nil {
		return -1, err
	}
	for _, t := range v.h.Tokens {
		if t.Type != luks.TokenType {
			continue
		}
		if old, err := store.ParseToken(t.JSON); err == nil && old.Record.ID == rec.ID {
			h, err := env.Volume.ReplaceToken(ctx, v.h, t.ID, tok, rec.Keyslot)
			if err != nil {
				return -1, err
			}
			v.h = h
			return t.ID, nil
		}
	}
	id, h, err := env.Volume.ImportToken(ctx, v.h, tok, rec.Keyslot)
	if err != nil {
		return -1, err
	}
	v.h = h
	return id, nil
}

// finishEnroll writes the complete ceremony's token (LUKS2) and marks the
// ceremony active.
func finishEnroll(ctx context.Context, env *Env, v *view, rec *Record, res *EnrollResult) error {
	res.Ceremony = rec
	if v.h.Version == 2 {
		id, err := writeToken(ctx, env, v, rec)
		switch {
		case errors.Is(err, luks.ErrTokenTooLarge) && rec.Set != nil:
			return fmt.Errorf("enroll: %w: %w", ErrNeedsToken, err)
		case errors.Is(err, luks.ErrTokenTooLarge):
			env.say("warning: the ceremony does not fit in the luks2 header: no token; it lives in the log and on the cards")
		case err != nil:
			return &StepError{Op: "enroll", Done: StepSharesWritten, Err: err}
		default:
			res.TokenID = id
		}
	} else {
		env.say("luks1 volume: no token; the ceremony lives in the log and on the cards")
	}
	if err := step(fpEnrollToken); err != nil {
		return err
	}
	h, err := put(env, StatusActive, rec)
	if err != nil {
		return &StepError{Op: "enroll", Done: StepSharesWritten, Err: err}
	}
	res.Anchor = h
	if err := step(fpEnrollLogged); err != nil {
		return err
	}
	env.say("enrollment %s done: any %d of the %d cards recover %s (log head %s)", idText(rec.ID), rec.K, rec.N, env.device(), h)
	return nil
}

// undo rolls an unfinished ceremony back: it kills its keyslot when that
// is proven the ceremony's (mayKill: own, the ceremony's recovery key
// while this process still holds it, or the open token and the log
// agreeing on keyslot and salt), removes its token and marks it abandoned.
// A keyslot it cannot prove is left in place and named: after a crash it
// may hold a key someone added since, and one forged copy could name any
// keyslot.
func undo(ctx context.Context, env *Env, v *view, rec *Record, keep int, auth, own []byte, what string) error {
	if _, err := killRecovery(ctx, env, v, rec, keep, auth, own, what); err != nil {
		return err
	}
	if t := v.tokenOf(rec.ID); t != nil && v.h.Version == 2 {
		h, err := env.Volume.RemoveToken(ctx, v.h, t.id)
		if err != nil {
			return err
		}
		v.h = h
	}
	if _, err := put(env, StatusAbandoned, rec); err != nil {
		return err
	}
	return nil
}

func undoFailed(op string, err, uerr error) error {
	return &UndoError{Op: op, Err: err, UndoErr: uerr}
}
