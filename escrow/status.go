package escrow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"custos.dev/custos/store"
)

// StatusReport is what Status found.
type StatusReport struct {
	Device      string
	UUID        string
	LUKSVersion int
	// Ceremony is the volume's current ceremony, nil when none.
	Ceremony *Record
	// Source names the copies it was read from, e.g. "token 0+log".
	Source string
	// Confirmed tells whether two independent copies agree on it.
	Confirmed bool
	// Status is the log's status of the ceremony ("active"), "" when the
	// log does not hold it.
	Status string
	// KeyslotInUse tells whether the ceremony's keyslot holds a key.
	KeyslotInUse bool
	// Cards are the ceremony's cards with their last rollcall.
	Cards []CardStatus
	// Live counts the shares not known to be lost (no failed last
	// rollcall); Margin is Live - K: how many more cards may be lost
	// before the quorum is.
	Live, Margin int
	// Copies are the copies of the volume's ceremonies: each token and the
	// log's record of each ceremony, with their state.
	Copies []CopyStatus
	// Unfinished is an interrupted enroll or rotate, nil when none.
	Unfinished *Unfinished
	// Problems lists what is wrong: copies that disagree, a failed
	// anchor, a missing token or keyslot, and so on. Empty when all is
	// well.
	Problems []string
	// Notes are weaknesses that are not problems: cards accepted without
	// attestation, a luks1 header without a token.
	Notes []string
	// Outdated names the copies still in the version 1 format, which a
	// rollcall rewrites in the current one.
	Outdated []string
	// SetMovedTo is the version the log gives the ceremony's custodian set
	// when the set has moved on since the ceremony was enrolled to it (a
	// fleet rotation left this volume out); 0 when it has not, or the
	// ceremony has no set.
	SetMovedTo int
}

// CardStatus is one card of a ceremony with its last rollcall.
type CardStatus struct {
	RecordCard
	// LastRollcall is when the card last answered a rollcall for this
	// ceremony (zero if never); LastOK whether that rollcall succeeded.
	LastRollcall time.Time
	LastOK       bool
	// Reason is why the last rollcall failed.
	Reason string
	// Attestation is what the log's chain says of the card's key.
	Attestation CardAttestation
}

// CopyStatus is one copy of a ceremony.
type CopyStatus struct {
	// Copy names it: "token 0", "log".
	Copy     string
	Ceremony string
	// Version is the format version it is written in.
	Version int
	// Status is the log's status of the ceremony; "" for a token.
	Status string
	// Anchor is the token's anchor, zero for the log.
	Anchor store.Head
	// Problem is what is wrong with it, "" when nothing is.
	Problem string
}

// Unfinished is a ceremony interrupted before its end.
type Unfinished struct {
	Ceremony string
	Kind     string // "enroll" or "rotate"
	// Step describes how far it got.
	Step string
	// Set is the custodian set it enrolls the volume to, "" for none: a
	// rerun of the fleet ceremony, with the set, finishes or undoes it.
	Set string
}

// Status reports the volume's ceremonies as each copy tells them, the
// current ceremony with k and n, each card's last rollcall, the live
// shares against the threshold, and any unfinished ceremony with the
// command that finishes it. It needs no card and no secret, and writes
// nothing. A token whose anchor fails against the log, or a token and a
// log that disagree, makes the error ErrVerification (store.ErrAnchor or
// ErrCopiesDisagree) after the report is complete: the caller shows both.
func Status(ctx context.Context, env *Env) (*StatusReport, error) {
	if err := env.need("status", true, false, false, false); err != nil {
		return nil, err
	}
	v, err := look(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	rep := &StatusReport{Device: env.Device, UUID: v.vid.String(), LUKSVersion: v.h.Version}
	var errs []error
	if v.logErr != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("the ceremony log is unreadable: %v", v.logErr))
	}
	for _, t := range v.tokens {
		cs := CopyStatus{Copy: t.name()}
		switch {
		case t.err != nil:
			cs.Problem = "unreadable: " + t.err.Error()
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s is unreadable: %v", t.name(), t.err))
		default:
			cs.Ceremony, cs.Version, cs.Anchor = idText(t.tok.Record.ID), t.tok.Record.Version, t.tok.Anchor
			if t.anchorErr != nil {
				cs.Problem = "anchor: " + t.anchorErr.Error()
				rep.Problems = append(rep.Problems, fmt.Sprintf("%s: its anchor %s fails against the log: %v", t.name(), t.tok.Anchor, t.anchorErr))
				errs = append(errs, fmt.Errorf("%s: %w", t.name(), t.anchorErr))
			}
			if t.tok.Record.Version < 2 {
				rep.Outdated = append(rep.Outdated, t.name())
			}
		}
		rep.Copies = append(rep.Copies, cs)
	}
	for _, s := range v.log {
		rep.Copies = append(rep.Copies, CopyStatus{Copy: "log", Ceremony: idText(s.Record.ID), Version: s.Record.Version, Status: s.Status})
	}
	for _, c := range v.claims() {
		if c.token != nil && c.log != nil && len(c.diffs) > 0 {
			for _, d := range describeDiffs(c) {
				rep.Problems = append(rep.Problems, d)
			}
			errs = append(errs, &DisagreeError{Ceremony: idText(c.id), Field: c.diffs[0].Field, Index: c.diffs[0].Index,
				A: []string{c.token.name()}, B: []string{"log"}})
		}
	}

	cur := v.current()
	if cur != nil {
		rec := cur.rec
		rep.Ceremony, rep.Confirmed = rec, cur.confirmed
		if cur.claim.log != nil {
			rep.Status = cur.claim.log.Status
		}
		rep.Source = strings.Join(cur.claim.copies(), "+")
		switch {
		case cur.confirmed:
		case v.h.Version == 1 && cur.claim.log != nil && cur.claim.token == nil:
			// A LUKS1 header has no token: the log and the cards are the
			// copies, and status reads no card.
			rep.Notes = append(rep.Notes, fmt.Sprintf("ceremony %s: a luks1 header holds no token, so only the log is read here; recover and rollcall check it against the cards' certificates", idText(rec.ID)))
		default:
			rep.Problems = append(rep.Problems, fmt.Sprintf("ceremony %s is not confirmed by two copies: %s", idText(rec.ID), cur.why))
		}
		if rec.AllowUnattested {
			rep.Notes = append(rep.Notes, fmt.Sprintf("ceremony %s allows cards without attestation: a card's key may not have been made on a genuine card", idText(rec.ID)))
		}
		rep.KeyslotInUse = v.h.InUse(rec.Keyslot)
		if !rep.KeyslotInUse {
			rep.Problems = append(rep.Problems, fmt.Sprintf("keyslot %d of ceremony %s holds no key: its shares recover nothing", rec.Keyslot, idText(rec.ID)))
		} else if ks := v.h.Keyslot(rec.Keyslot); rec.Salt != "" && ks.Salt != rec.Salt {
			rep.Problems = append(rep.Problems, fmt.Sprintf("keyslot %d no longer holds the key of ceremony %s (its salt changed)", rec.Keyslot, idText(rec.ID)))
		}
		rep.Cards, rep.Live = cardStatuses(env, v, rec, &rep.Problems)
		for i, a := range attestationsOf(env, rec) {
			rep.Cards[i].Attestation = a
			switch {
			case a.Unattested:
				rep.Notes = append(rep.Notes, fmt.Sprintf("%s, share %d, is unattested: nothing proves its key was made on a genuine card", who(a.Serial, rec.Cards[i].Custodian), a.Index))
			case a.Problem != "" && env.Log != nil:
				rep.Problems = append(rep.Problems, fmt.Sprintf("%s, share %d: attestation: %s", who(a.Serial, rec.Cards[i].Custodian), a.Index, a.Problem))
			}
		}
		setNotes(env, rec, rep)
		if !rep.KeyslotInUse {
			rep.Live = 0
		}
		rep.Margin = rep.Live - rec.K
		if rep.Margin < 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("only %d live shares for a quorum of %d: the volume cannot be recovered from its cards", rep.Live, rec.K))
		}
	}
	if o := v.openLog(); o != nil {
		rep.Unfinished = unfinished(v, o.Record)
	}
	if len(errs) > 0 {
		return rep, fmt.Errorf("status: %w", errors.Join(errs...))
	}
	return rep, nil
}

// cardStatuses lists a ceremony's cards with their last rollcall from the
// log, and counts the live ones.
func cardStatuses(env *Env, v *view, rec *Record, problems *[]string) ([]CardStatus, int) {
	last := map[string]store.Rollcall{}
	when := map[string]time.Time{}
	if env.Log != nil && v.logState(rec.ID) != nil {
		err := env.Log.Events(idText(rec.ID), func(ev store.Event) error {
			if ev.Type != store.TypeRollcall {
				return nil
			}
			var rc store.Rollcall
			if err := json.Unmarshal(ev.Body, &rc); err != nil {
				return fmt.Errorf("decode log event %d: %w", ev.Seq, err)
			}
			last[rc.Serial], when[rc.Serial] = rc, ev.Time
			return nil
		})
		if err != nil {
			*problems = append(*problems, fmt.Sprintf("reading rollcalls: %v", err))
		}
	}
	mergeSetRollcalls(env, rec, last, when)
	var out []CardStatus
	live := 0
	for _, c := range rec.Cards {
		cs := CardStatus{RecordCard: c}
		if rc, ok := last[c.Serial]; ok {
			cs.LastRollcall, cs.LastOK, cs.Reason = when[c.Serial], rc.OK, rc.Reason
		}
		if cs.LastRollcall.IsZero() || cs.LastOK {
			live++
		}
		out = append(out, cs)
	}
	return out, live
}

// unfinished describes an open ceremony: its kind, how far it got and
// whether a rerun finishes or undoes it.
func unfinished(v *view, o *Record) *Unfinished {
	u := &Unfinished{Ceremony: idText(o.ID), Kind: "enroll"}
	if o.Replaces != ([16]byte{}) {
		u.Kind = "rotate"
	}
	var steps []string
	switch ks := v.h.Keyslot(o.Keyslot); {
	case ks == nil:
		steps = append(steps, fmt.Sprintf("recovery keyslot %d not added", o.Keyslot))
	case o.Salt != "" && ks.Salt != o.Salt:
		steps = append(steps, fmt.Sprintf("keyslot %d holds another key than the one custos added", o.Keyslot))
	default:
		steps = append(steps, fmt.Sprintf("recovery keyslot %d added", o.Keyslot))
	}
	steps = append(steps, fmt.Sprintf("%d of %d shares written and verified", len(o.Cards), o.N))
	if t := v.tokenOf(o.ID); t != nil {
		if t.tok.Record.Complete() {
			steps = append(steps, "token written")
		} else {
			steps = append(steps, "open token written")
		}
	}
	if u.Kind == "rotate" {
		if old := v.logState(o.Replaces); old != nil && o.Complete() {
			if v.h.InUse(old.Record.Keyslot) {
				steps = append(steps, fmt.Sprintf("old keyslot %d not yet killed", old.Record.Keyslot))
			} else {
				steps = append(steps, fmt.Sprintf("old keyslot %d killed", old.Record.Keyslot))
			}
		}
	}
	if finishable(v, o) {
		steps = append(steps, "a rerun finishes it")
	} else {
		steps = append(steps, "a rerun undoes it and starts again")
	}
	u.Step = strings.Join(steps, ", ")
	if o.Set != nil {
		u.Set = o.Set.Name
	}
	return u
}
