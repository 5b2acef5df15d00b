package escrow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// RecoverOptions are the operator's choices for Recover.
type RecoverOptions struct {
	// NewKey is the passphrase or key file for the new keyslot; nil asks
	// for a passphrase twice through the Prompter. Recover does not wipe
	// it.
	NewKey []byte
}

// RecoverResult is what Recover did.
type RecoverResult struct {
	Ceremony *Record
	// Source names the copies the ceremony was followed from, e.g.
	// "token 0+log", "log+card 12345678's certificate", "cards".
	Source string
	// Keyslot is the recovery keyslot the recovered key opened.
	Keyslot int
	// NewKeyslot is the keyslot added with the new key.
	NewKeyslot int
	// Cards are the outcomes of the cards inserted, in order.
	Cards []CardOutcome
	// Problems are the disagreements between copies and the failed
	// anchors noticed on the way, each naming the copies.
	Problems []string
	// Anchor is the log head after the recovery was logged (zero without
	// a log).
	Anchor store.Head
}

// unlocked is a recovery key gathered from cards and proven: it opens
// keyslot slot.
type unlocked struct {
	key      []byte
	slot     int
	rec      *Record
	source   string
	outcomes []CardOutcome
	problems []string
	anchors  []error
}

// unlock collects cards until one candidate ceremony (only, when given)
// reconstructs a recovery key that opens a keyslot, and returns it. The
// ceremony to recover is chosen by what the copies confirm and what each
// card's certificate names; the recovered key settles it. use makes the
// key's first use on the keyslot its copies name (testing it, or adding the
// operator's new keyslot with it — either way one PBKDF run) and must
// wrap luks.ErrWrongKey when the key does not open that keyslot: the
// keyslot it does open (if any) is then used and the copies named as
// suspect, else the candidate is given up and the others are tried with
// more cards.
func unlock(ctx context.Context, env *Env, v *view, only *[16]byte, use func(key []byte, slot int) error) (*unlocked, error) {
	ul := newUnlocker(env, v, only, use)
	defer ul.close()
	for {
		done, err := ul.settle(ctx)
		if err != nil || done {
			return ul.u, err
		}
		if err := ul.col.stuck(); err != nil {
			return ul.u, err
		}
		if err := ul.col.next(ctx); err != nil {
			return ul.u, err
		}
	}
}

// unlocker is unlock taken apart, so that a one-pass recovery can drive
// one per volume with the same cards: newUnlocker reads the candidates,
// the cards are taken (col.take, or col.prepare and col.finish), settle
// combines what is ready and proves it, close hands over the outcomes.
type unlocker struct {
	env *Env
	v   *view
	col *collector
	use func(key []byte, slot int) error
	u   *unlocked
}

func newUnlocker(env *Env, v *view, only *[16]byte, use func(key []byte, slot int) error) *unlocker {
	cands, notes := v.candidates()
	u := &unlocked{problems: notes}
	for _, n := range notes {
		env.say("warning: %s", n)
	}
	for _, t := range v.tokens {
		if t.err != nil {
			u.problems = append(u.problems, fmt.Sprintf("%s is unreadable: %v", t.name(), t.err))
			env.say("warning: %s is unreadable: %v", t.name(), t.err)
		}
		if t.anchorErr != nil {
			u.anchors = append(u.anchors, fmt.Errorf("%s: %w", t.name(), t.anchorErr))
			u.problems = append(u.problems, fmt.Sprintf("%s: its anchor fails against the log: %v", t.name(), t.anchorErr))
			env.say("warning: %s: its anchor fails against the log: %v", t.name(), t.anchorErr)
		}
	}
	if only != nil {
		var keep []*candidate
		for _, c := range cands {
			if c.rec.ID == *only {
				keep = append(keep, c)
			}
		}
		cands = keep
	}
	col := newCollector(env, v, cands)
	col.only = only
	if len(cands) == 0 {
		env.say("no token or log entry tells of a usable ceremony of this volume: learning it from the cards")
	} else {
		for _, c := range cands {
			state := "unconfirmed"
			if c.confirmed {
				state = "confirmed"
			}
			env.say("ceremony %s (%d of %d) from %s, %s", idText(c.rec.ID), c.rec.K, c.rec.N, strings.Join(c.sources, " and "), state)
		}
	}
	return &unlocker{env: env, v: v, col: col, use: use, u: u}
}

// close hands the collection's outcomes, problems and anchors to the
// result and wipes every share collected.
func (ul *unlocker) close() {
	ul.u.outcomes = ul.col.outcomes
	ul.u.problems = append(ul.u.problems, ul.col.problems...)
	ul.u.anchors = append(ul.u.anchors, ul.col.anchorErrs...)
	ul.col.wipe()
}

// settle combines each candidate that holds enough good shares and makes
// the recovered key's first use (ul.use) on its keyslot, until one key is
// proven (true) or no candidate is ready (false: more cards are needed).
// A key that opens no keyslot gives its candidate up.
func (ul *unlocker) settle(ctx context.Context) (bool, error) {
	for {
		cand := ul.col.ready()
		if cand == nil {
			return false, nil
		}
		secret, err := ul.col.combine(cand)
		if err != nil {
			return false, err
		}
		if secret == nil {
			continue
		}
		key := shares.EncodeRecoveryKey(secret)
		shares.Wipe(secret)
		slot, err := proveKey(ctx, ul.env, key, cand.rec.Keyslot, ul.use)
		if err != nil {
			shares.Wipe(key)
			if errors.Is(err, ErrKeyslotMismatch) {
				ul.col.drop(cand, err)
				continue
			}
			return false, err
		}
		if slot != cand.rec.Keyslot {
			ul.col.note("%s names keyslot %d, but its recovered key opens keyslot %d: the copies are suspect; following the key", cand.name(), cand.rec.Keyslot, slot)
		}
		u := ul.u
		u.key, u.slot, u.rec = key, slot, cand.rec
		u.source = strings.Join(cand.sources, "+")
		if cand.fromCards {
			u.source = "cards"
		}
		return true, nil
	}
}

// testKey is the use of a recovered key that only proves it.
func testKey(ctx context.Context, env *Env) func(key []byte, slot int) error {
	return func(key []byte, slot int) error { return env.Volume.TestKey(ctx, key, slot) }
}

// proveKey makes a recovered key's first use on the keyslot its copies
// name and, when it does not open it, finds the keyslot it opens and uses
// the key there.
func proveKey(ctx context.Context, env *Env, key []byte, slot int, use func(key []byte, slot int) error) (int, error) {
	err := use(key, slot)
	if err == nil {
		return slot, nil
	}
	if !errors.Is(err, luks.ErrWrongKey) && !errors.Is(err, luks.ErrKeyslotInactive) {
		return -1, err
	}
	found, ferr := env.Volume.FindKeyslot(ctx, key)
	switch {
	case errors.Is(ferr, luks.ErrWrongKey):
		return -1, fmt.Errorf("keyslot %d: %w", slot, ErrKeyslotMismatch)
	case ferr != nil:
		return -1, ferr
	}
	if err := use(key, found); err != nil {
		return -1, err
	}
	return found, nil
}

// Recover collects K good shares from the custodians' cards, one card at a
// time (or from several readers), combines them into the recovery key,
// proves it on its keyslot and adds a new keyslot with the operator's new
// key. Each card gets its own outcome; fewer than K good shares before ctx
// ends is ErrQuorum. An anchor that failed against the log (the token's,
// or a card's) makes the result an error wrapping store.ErrAnchor after the
// new keyslot is added: the volume opens, and the copies need a look.
func Recover(ctx context.Context, env *Env, opts RecoverOptions) (*RecoverResult, error) {
	if err := env.need("recover", true, true, false, true); err != nil {
		return nil, err
	}
	v, err := look(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	if v.logErr != nil {
		env.say("warning: the ceremony log is unreadable (%v): using the token and the cards", v.logErr)
	}
	res := &RecoverResult{NewKeyslot: -1, Keyslot: -1}
	newKey := opts.NewKey
	var added luks.Keyslot
	// The recovered key's first use adds the operator's new keyslot,
	// authorised on the keyslot its copies name: one PBKDF run proves the
	// key and adds the keyslot.
	add := func(key []byte, slot int) error {
		if newKey == nil {
			var err error
			if newKey, err = askTwice(env.Prompt, "new passphrase for "+env.device()); err != nil {
				return err
			}
		}
		ks, h, err := env.Volume.AddKeyslot(ctx, v.h, key, newKey, luks.AddOptions{PBKDF: env.PBKDF, AuthSlot: &slot})
		if err != nil {
			return err
		}
		added, v.h = ks, h
		return nil
	}
	u, err := unlock(ctx, env, v, nil, add)
	if opts.NewKey == nil && newKey != nil {
		defer shares.Wipe(newKey)
	}
	res.Cards, res.Problems = u.outcomes, u.problems
	if err != nil {
		return res, fmt.Errorf("recover: %w", err)
	}
	defer shares.Wipe(u.key)
	res.Ceremony, res.Source, res.Keyslot = u.rec, u.source, u.slot
	slot := added.ID
	res.NewKeyslot = slot
	env.say("the recovery key opens keyslot %d; added keyslot %d with the new key", u.slot, slot)

	if env.Log != nil && v.logErr == nil {
		h, err := logRecovery(env, u, res)
		if err != nil {
			env.say("warning: the recovery is done but could not be logged: %v", err)
			return res, &StepError{Op: "recover", Done: StepKeyslotAdded, Keyslot: slot, Err: err}
		}
		res.Anchor = h
	}
	if len(u.anchors) > 0 {
		return res, &StepError{Op: "recover", Done: StepKeyslotAdded, Keyslot: slot, Err: anchorsError(u.anchors)}
	}
	return res, nil
}

// logRecovery records a recovery as one event. The ceremony is named in
// the body; the event belongs to the ceremony in the log only when the
// log holds it — a recovery never copies a ceremony into the log from the
// token, which would make one copy look like two.
func logRecovery(env *Env, u *unlocked, res *RecoverResult) (store.Head, error) {
	type card struct {
		Serial string `json:"serial"`
		Index  int    `json:"index"`
	}
	body := struct {
		Ceremony        string `json:"ceremony"`
		Keyslot         int    `json:"keyslot"`
		RecoveryKeyslot int    `json:"recovery_keyslot"`
		Source          string `json:"source"`
		Cards           []card `json:"cards"`
	}{Ceremony: idText(u.rec.ID), Keyslot: res.NewKeyslot, RecoveryKeyslot: u.slot, Source: u.source}
	for _, o := range res.Cards {
		if o.OK() {
			body.Cards = append(body.Cards, card{o.Serial, o.Index})
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return store.Head{}, err
	}
	id := idText(u.rec.ID)
	if _, err := env.Log.Ceremony(id); err != nil {
		id = ""
	}
	return note(env, id, "recover", b)
}
