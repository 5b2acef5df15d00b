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
	// Source is where the ceremony was learnt: "token", "log",
	// "token+log" or "cards".
	Source string
	// NewKeyslot is the keyslot added with the new key.
	NewKeyslot int
	// Cards are the outcomes of the cards inserted, in order.
	Cards []CardOutcome
	// Anchor is the log head after the recovery was logged (zero without
	// a log).
	Anchor store.Head
}

// Recover collects K good shares from the custodians' cards, one card at a
// time (or from several readers), combines them into the recovery key,
// tests it against its keyslot and adds a new keyslot with the operator's
// new key. Each card gets its own outcome; fewer than K good shares before
// ctx ends is ErrQuorum.
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
	cands, notes, err := v.candidates()
	for _, n := range notes {
		env.say("warning: %s", n)
	}
	if err != nil {
		return nil, withHint(fmt.Errorf("recover: %w", err), "the volume's token and the ceremony log disagree: run custos log verify, and custos status %s", env.device())
	}
	col := newCollector(env, v, cands)
	defer col.wipe()
	res := &RecoverResult{NewKeyslot: -1}
	if len(cands) == 0 {
		col.fromCards = true
		res.Source = "cards"
		env.say("no token or log entry tells of this volume's ceremony: learning it from the cards")
	} else {
		for _, c := range cands {
			env.say("ceremony %s (%d of %d) from %s", c.rec.ID, c.rec.K, c.rec.N, strings.Join(c.sources, " and "))
		}
	}
	secret, cand, err := col.gather(ctx)
	res.Cards = col.outcomes
	if err != nil {
		return res, fmt.Errorf("recover: %w", err)
	}
	defer shares.Wipe(secret)
	res.Ceremony = cand.rec
	if res.Source == "" {
		res.Source = strings.Join(cand.sources, "+")
	}
	key := shares.EncodeRecoveryKey(secret)
	defer shares.Wipe(key)
	if err := env.Volume.TestKey(ctx, key, cand.rec.Keyslot); err != nil {
		if errors.Is(err, luks.ErrWrongKey) {
			return res, withHint(fmt.Errorf("recover: keyslot %d: %w", cand.rec.Keyslot, ErrKeyslotMismatch),
				"the keyslot was changed after the ceremony; run custos status %s", env.device())
		}
		return res, fmt.Errorf("recover: %w", err)
	}
	env.say("the recovery key opens keyslot %d", cand.rec.Keyslot)

	newKey := opts.NewKey
	if newKey == nil {
		if newKey, err = askTwice(env.Prompt, "new passphrase for "+env.device()); err != nil {
			return res, fmt.Errorf("recover: %w", err)
		}
		defer shares.Wipe(newKey)
	}
	slot, err := env.Volume.AddKeyslot(ctx, key, newKey, luks.AddOptions{PBKDF: env.PBKDF})
	if err != nil {
		return res, fmt.Errorf("recover: %w", err)
	}
	res.NewKeyslot = slot
	env.say("added keyslot %d with the new key", slot)

	if env.Log != nil {
		h, err := logRecovery(env, v, cand, res)
		if err != nil {
			env.say("warning: the recovery is done but could not be logged: %v", err)
			return res, withHint(fmt.Errorf("recover: keyslot %d added, but %w", slot, err), "the volume opens with the new key; repair the log with custos log verify")
		}
		res.Anchor = h
	}
	return res, nil
}

// logRecovery records a recovery. A ceremony the log does not know (its
// file was lost) is recorded first from the token, when the token had it.
func logRecovery(env *Env, v *view, cand *candidate, res *RecoverResult) (store.Head, error) {
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
	}{Ceremony: cand.rec.ID.String(), Keyslot: res.NewKeyslot, RecoveryKeyslot: cand.rec.Keyslot, Source: res.Source}
	for _, o := range res.Cards {
		if o.OK() {
			body.Cards = append(body.Cards, card{o.Serial, o.Index})
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return store.Head{}, err
	}
	id := cand.rec.ID.String()
	if v.logRecord(cand.rec.ID) == nil && cand.rec.Complete() {
		rec := *cand.rec
		rec.Status = StatusActive
		if r, _ := shares.ParseCeremonyID(rec.Replaces); rec.Replaces != "" && v.logRecord(r) == nil {
			rec.Replaces = "" // the log cannot link to a ceremony it does not know
		}
		if _, err := put(env, &rec); err != nil {
			return store.Head{}, err
		}
	} else if v.logRecord(cand.rec.ID) == nil {
		id = "" // the log cannot hold an incomplete ceremony: log the event alone
	}
	return note(env, id, "recover", b)
}
