package escrow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"custos.dev/custos/cards"
	"custos.dev/custos/store"
)

// RollcallOptions tune Rollcall.
type RollcallOptions struct {
	// Cards is how many cards to check before stopping; 0 means all N.
	Cards int
}

// RollcallResult is what Rollcall found.
type RollcallResult struct {
	Ceremony *Record
	// Cards are the outcomes of the cards inserted, in order.
	Cards []CardOutcome
	// Missing are the ceremony's cards not presented.
	Missing []RecordCard
	// Upgraded lists what was rewritten in the version 2 format: "token
	// 0", "card 12345678's certificate".
	Upgraded []string
	// Problems are disagreements between copies and failed anchors.
	Problems []string
	// Anchor is the log head after the results were logged.
	Anchor store.Head
}

// Rollcall has each custodian in turn prove that their card still opens
// its share and that the share matches its commitment. Nothing is
// combined. Each card's certificate is read and its anchor checked against
// the log; a version 1 certificate (or one whose anchor fails) is rewritten
// in the version 2 format while the card proves its share, and so is a
// version 1 token the log confirms. Each card's result is logged.
//
// Rollcall stops when every card (or opts.Cards of them) answered or ctx
// ends; cards not presented are listed in Missing. A card whose share
// fails its check, or an anchor that fails, makes the error
// ErrVerification (after every card was heard); cards not presented are
// no error once at least one card answered.
func Rollcall(ctx context.Context, env *Env, opts RollcallOptions) (*RollcallResult, error) {
	if err := env.need("rollcall", true, true, true, true); err != nil {
		return nil, err
	}
	v, err := look(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("rollcall: %w", err)
	}
	if v.logErr != nil {
		return nil, fmt.Errorf("rollcall: %w", v.logErr)
	}
	cur := v.current()
	if cur == nil {
		// A token whose anchor fails may be why the log shows no current
		// ceremony (rolled back to before it was complete): that is the
		// verdict, not "enroll first".
		var anchorErrs []error
		for _, t := range v.tokens {
			if t.anchorErr != nil {
				anchorErrs = append(anchorErrs, fmt.Errorf("%s: %w", t.name(), t.anchorErr))
			}
		}
		if len(anchorErrs) > 0 {
			return nil, fmt.Errorf("rollcall: %w: %w", ErrNoCeremony, anchorsError(anchorErrs))
		}
		return nil, fmt.Errorf("rollcall: %w", ErrNoCeremony)
	}
	rec := cur.rec
	res := &RollcallResult{Ceremony: rec}
	if !cur.confirmed {
		res.Problems = append(res.Problems, fmt.Sprintf("ceremony %s: %s", idText(rec.ID), cur.why))
		env.say("warning: ceremony %s is not confirmed by two copies: %s", idText(rec.ID), cur.why)
	}
	var anchorErrs []error
	if t := cur.claim.token; t != nil && t.anchorErr != nil {
		anchorErrs = append(anchorErrs, fmt.Errorf("%s: %w", t.name(), t.anchorErr))
		res.Problems = append(res.Problems, fmt.Sprintf("%s: its anchor fails against the log: %v", t.name(), t.anchorErr))
	}
	inLog := v.logState(rec.ID) != nil

	want := opts.Cards
	if want <= 0 || want > rec.N {
		want = rec.N
	}
	cand := newCandidate(rec, cur.claim.copies(), cur.confirmed)
	col := newCollector(env, v, []*candidate{cand})
	col.only, col.readCerts = &rec.ID, true
	if inLog && cur.confirmed {
		col.upgrade = func(cand *candidate, e RecordCard) ([]byte, error) {
			up, err := upgraded(withCard(cand.rec, e))
			if err != nil {
				return nil, err
			}
			head, err := env.Log.Head()
			if err != nil {
				return nil, err
			}
			return store.EncodeCardCopy(up, head)
		}
	}
	defer col.wipe()
	answered := map[int]bool{}
	failed := 0
	var results []store.Rollcall
	env.say("rollcall of ceremony %s: %d cards", idText(rec.ID), want)
	for len(answered) < want {
		card, err := waitCard(ctx, env, fmt.Sprintf("insert the next card (%d of %d answered)", len(answered), want))
		if err != nil {
			if len(answered) == 0 || !errors.Is(err, ctx.Err()) {
				res.Cards, res.Missing = col.outcomes, missing(rec, answered)
				return res, fmt.Errorf("rollcall: %w", err)
			}
			break
		}
		t, out := col.take(card)
		card.Close()
		col.report(t, out)
		col.wipe() // nothing is combined: each share is dropped once checked
		if t != nil && col.lastCert != nil && col.upgrade != nil && (col.lastCert.rec.Version < 2 || col.anchorFailed(col.lastCert)) {
			res.Upgraded = append(res.Upgraded, col.lastCert.name())
		}
		var pe *cards.PINError
		if out.Index == 0 || errors.Is(out.Err, ErrSeenTwice) || errors.As(out.Err, &pe) || fatal(ctx, out.Err) {
			// Not one of this ceremony's cards, heard already, or a
			// wrong PIN: the card may come again.
			if fatal(ctx, out.Err) {
				res.Cards, res.Missing = col.outcomes, missing(rec, answered)
				return res, fmt.Errorf("rollcall: %w", out.Err)
			}
			continue
		}
		ref := rec.Card(out.Index)
		rc := store.Rollcall{Ceremony: idText(rec.ID), Serial: ref.Serial, Fingerprint: fingerprintText(ref.Key), OK: out.OK()}
		if !out.OK() {
			rc.Reason = safeText(describe(out.Err))
			if failedCheck(out.Err) {
				failed++
			}
		}
		results = append(results, rc)
		answered[out.Index] = true
	}
	res.Cards, res.Missing = col.outcomes, missing(rec, answered)
	res.Problems = append(res.Problems, col.problems...)
	anchorErrs = append(anchorErrs, col.anchorErrs...)

	if t := cur.claim.token; t != nil && cur.confirmed && inLog && t.tok.Record.Version < 2 && v.h.Version == 2 {
		up, err := upgraded(rec)
		if ks := v.h.Keyslot(rec.Keyslot); err == nil && rec.Salt != "" && (!v1Vouches(t, rec.Keyslot) || ks == nil || ks.Salt != rec.Salt) {
			// The version 2 token would carry the log's salt: one copy's
			// word would then look like two, and prove a keyslot to kill.
			err = fmt.Errorf("the log's salt for keyslot %d is not the keyslot's, or the token is no longer bound to it", rec.Keyslot)
		}
		if err == nil {
			_, err = writeToken(ctx, env, v, up)
		}
		if err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("upgrading %s: %v", t.name(), err))
		} else {
			res.Upgraded = append(res.Upgraded, t.name())
		}
	}

	if !inLog {
		res.Problems = append(res.Problems, fmt.Sprintf("ceremony %s is not in this log: the rollcall is not logged", idText(rec.ID)))
		env.say("warning: ceremony %s is not in this log (only %s holds it): the rollcall is not logged", idText(rec.ID), cur.claim.token.name())
	} else {
		body, _ := json.Marshal(struct {
			Answered int `json:"answered"`
			Missing  int `json:"missing"`
			Failed   int `json:"failed"`
		}{len(answered), len(res.Missing), failed})
		h, err := env.Log.Update(func(tx *store.Tx) error {
			for _, rc := range results {
				if _, err := tx.RecordRollcall(env.actor(), rc); err != nil {
					return err
				}
			}
			_, err := tx.Append(store.Event{Actor: env.actor(), Type: "rollcall.done", Ceremony: idText(rec.ID), Body: body})
			return err
		})
		if err != nil {
			return res, fmt.Errorf("rollcall: %w", err)
		}
		res.Anchor = h
	}
	switch {
	case failed > 0:
		return res, fmt.Errorf("rollcall: %w", &FailedCardsError{Failed: failed})
	case len(anchorErrs) > 0:
		return res, fmt.Errorf("rollcall: %w", anchorsError(anchorErrs))
	}
	return res, nil
}

func missing(rec *Record, answered map[int]bool) []RecordCard {
	var out []RecordCard
	for _, c := range rec.Cards {
		if !answered[c.Index] {
			out = append(out, c)
		}
	}
	return out
}
