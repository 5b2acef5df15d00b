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
	Missing []CardRef
	// Anchor is the log head after the results were logged.
	Anchor store.Head
}

// Rollcall has each custodian in turn prove that their card still opens
// its share and that the share matches its commitment. Nothing is
// combined. Each card's result is logged. Rollcall stops when every card
// (or opts.Cards of them) answered or ctx ends; cards not presented are
// listed in Missing. A card whose share fails its check makes the error
// ErrVerification (after every card was heard); cards not presented are no
// error once at least one card answered.
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
	cands, notes, err := v.candidates()
	for _, n := range notes {
		env.say("warning: %s", n)
	}
	if err != nil {
		return nil, withHint(fmt.Errorf("rollcall: %w", err), "run custos status %s", env.device())
	}
	if len(cands) == 0 {
		return nil, withHint(fmt.Errorf("rollcall: %w", ErrNoCeremony), "run custos enroll %s first", env.device())
	}
	cand := cands[0]
	rec := cand.rec
	if v.logRecord(rec.ID) == nil {
		// The token's ceremony, not in this log: record it so that
		// the rollcalls can refer to it.
		r := *rec
		r.Status = StatusActive
		if r.Replaces != "" && v.logRecord(mustID(r.Replaces)) == nil {
			r.Replaces = ""
		}
		if _, err := put(env, &r); err != nil {
			return nil, fmt.Errorf("rollcall: %w", err)
		}
	}
	want := opts.Cards
	if want <= 0 || want > rec.N {
		want = rec.N
	}
	col := newCollector(env, v, []*candidate{cand})
	defer col.wipe()
	res := &RollcallResult{Ceremony: rec}
	answered := map[int]bool{}
	failed := 0
	env.say("rollcall of ceremony %s: %d cards", rec.ID, want)
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
		if t != nil && t.share != nil {
			t.share.Wipe()
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
		rc := store.Rollcall{Ceremony: rec.ID.String(), Serial: ref.Serial, Fingerprint: ref.Fingerprint.String(), OK: out.OK()}
		if !out.OK() {
			rc.Reason = describe(out.Err)
			if len(rc.Reason) > 200 {
				rc.Reason = rc.Reason[:200]
			}
			if errors.Is(out.Err, ErrVerification) || ExitCode(out.Err) == ExitVerification {
				failed++
			}
		}
		h, err := env.Log.Update(func(tx *store.Tx) error {
			_, err := tx.RecordRollcall(env.actor(), rc)
			return err
		})
		if err != nil {
			return res, fmt.Errorf("rollcall: log card %s: %w", ref.Serial, err)
		}
		res.Anchor = h
		answered[out.Index] = true
	}
	res.Cards, res.Missing = col.outcomes, missing(rec, answered)
	body, _ := json.Marshal(struct {
		Answered int `json:"answered"`
		Missing  int `json:"missing"`
		Failed   int `json:"failed"`
	}{len(answered), len(res.Missing), failed})
	h, err := note(env, rec.ID.String(), "rollcall.done", body)
	if err != nil {
		return res, fmt.Errorf("rollcall: %w", err)
	}
	res.Anchor = h
	if failed > 0 {
		return res, withHint(fmt.Errorf("rollcall: %w: %d cards failed their check", ErrVerification, failed),
			"rotate the key to a healthy card set: custos rotate %s", env.device())
	}
	return res, nil
}

func missing(rec *Record, answered map[int]bool) []CardRef {
	var out []CardRef
	for _, c := range rec.Cards {
		if !answered[c.Index] {
			out = append(out, c)
		}
	}
	return out
}
