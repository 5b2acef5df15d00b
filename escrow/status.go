package escrow

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// StatusReport is what Status found.
type StatusReport struct {
	Device      string
	UUID        string
	LUKSVersion int
	// Ceremony is the volume's current ceremony, nil when none.
	Ceremony *Record
	// Source is where it was read: "token", "log" or "token+log".
	Source string
	// KeyslotInUse tells whether the ceremony's keyslot holds a key.
	KeyslotInUse bool
	// Cards are the ceremony's cards with their last rollcall.
	Cards []CardStatus
	// Live counts the shares not known to be lost (no failed last
	// rollcall); Margin is Live - K: how many more cards may be lost
	// before the quorum is.
	Live, Margin int
	// Unfinished is an interrupted enroll or rotate, nil when none.
	Unfinished *Unfinished
	// Problems lists what is wrong: copies that disagree, a missing
	// token or keyslot, and so on. Empty when all is well.
	Problems []string
}

// CardStatus is one card of a ceremony with its last rollcall.
type CardStatus struct {
	CardRef
	// LastRollcall is when the card last answered a rollcall for this
	// ceremony (zero if never); LastOK whether that rollcall succeeded.
	LastRollcall time.Time
	LastOK       bool
	// Reason is why the last rollcall failed.
	Reason string
}

// Unfinished is a ceremony interrupted before its end.
type Unfinished struct {
	Ceremony string
	Kind     string // "enroll" or "rotate"
	// Step describes how far it got.
	Step string
	// Command is the command that finishes or undoes it.
	Command string
}

// Status reports the volume's ceremony, k and n, each card's last
// rollcall, the live shares against the threshold, and any unfinished
// ceremony with the command that finishes it. It needs no card and no
// secret.
func Status(ctx context.Context, env *Env) (*StatusReport, error) {
	if err := env.need("status", true, false, false, false); err != nil {
		return nil, err
	}
	v, err := look(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	rep := &StatusReport{Device: env.Device, UUID: v.vid.String(), LUKSVersion: v.h.Version}
	if v.logErr != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("the ceremony log is unreadable: %v", v.logErr))
	}
	for _, t := range v.tokens {
		if t.err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("token %d is unreadable: %v", t.id, t.err))
		}
	}

	// The current ceremony: the log's active one, else the newest token.
	cur := v.activeLog()
	var tok *tokenEntry
	if cur != nil {
		rep.Source = "log"
		tok = v.tokenOf(cur.ID)
		if tok != nil {
			rep.Source = "token+log"
			c := &candidate{rec: tok.rec, disputed: map[int]error{}}
			if err := compare(c, cur); err != nil {
				rep.Problems = append(rep.Problems, err.Error())
			}
			for i := 1; i <= cur.N; i++ {
				if d := c.disputed[i]; d != nil {
					rep.Problems = append(rep.Problems, d.Error())
				}
			}
		} else if v.h.Version == 2 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("ceremony %s has no token in the luks2 header (recovery needs the log or the cards)", cur.ID))
		}
	} else {
		for i := range v.tokens {
			if t := &v.tokens[i]; t.rec != nil && (tok == nil || t.rec.Replaces == tok.rec.ID.String()) {
				tok = t
			}
		}
		if tok != nil {
			cur, rep.Source = tok.rec, "token"
			if env.Log != nil && v.logRecord(cur.ID) == nil {
				rep.Problems = append(rep.Problems, fmt.Sprintf("ceremony %s is in the token but not in this log", cur.ID))
			}
		}
	}
	for _, t := range v.tokens {
		if t.rec != nil && cur != nil && t.rec.ID != cur.ID && t.rec.ID.String() != "" {
			if o := v.openRecord(); o == nil || o.ID != t.rec.ID {
				rep.Problems = append(rep.Problems, fmt.Sprintf("token %d holds ceremony %s, which is not the current one", t.id, t.rec.ID))
			}
		}
	}

	if cur != nil {
		rep.Ceremony = cur
		rep.KeyslotInUse = v.h.InUse(cur.Keyslot)
		if !rep.KeyslotInUse {
			rep.Problems = append(rep.Problems, fmt.Sprintf("keyslot %d of ceremony %s holds no key: its shares recover nothing", cur.Keyslot, cur.ID))
		}
		last := map[string]store.Rollcall{}
		when := map[string]time.Time{}
		if env.Log != nil && v.logRecord(cur.ID) != nil {
			err := env.Log.Events(cur.ID.String(), func(ev store.Event) error {
				if ev.Type != store.TypeRollcall {
					return nil
				}
				var rc store.Rollcall
				if err := decodeJSON(ev.Body, &rc); err != nil {
					return err
				}
				last[rc.Serial], when[rc.Serial] = rc, ev.Time
				return nil
			})
			if err != nil {
				rep.Problems = append(rep.Problems, fmt.Sprintf("reading rollcalls: %v", err))
			}
		}
		for _, c := range cur.Cards {
			cs := CardStatus{CardRef: c}
			if rc, ok := last[c.Serial]; ok {
				cs.LastRollcall, cs.LastOK, cs.Reason = when[c.Serial], rc.OK, rc.Reason
			}
			if cs.LastRollcall.IsZero() || cs.LastOK {
				rep.Live++
			}
			rep.Cards = append(rep.Cards, cs)
		}
		if !rep.KeyslotInUse {
			rep.Live = 0
		}
		rep.Margin = rep.Live - cur.K
		if rep.Margin < 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("only %d live shares for a quorum of %d: the volume cannot be recovered from its cards", rep.Live, cur.K))
		}
	}

	if o := v.openRecord(); o != nil {
		rep.Unfinished = unfinished(env, v, o)
	}
	return rep, nil
}

// unfinished describes an open ceremony and the command that deals with it.
func unfinished(env *Env, v *view, o *Record) *Unfinished {
	u := &Unfinished{Ceremony: o.ID.String(), Kind: "enroll"}
	if o.Replaces != "" {
		u.Kind = "rotate"
	}
	var steps []string
	switch {
	case o.Keyslot < 0 || !v.h.InUse(o.Keyslot):
		steps = append(steps, fmt.Sprintf("recovery keyslot %d not added", o.Keyslot))
	default:
		steps = append(steps, fmt.Sprintf("recovery keyslot %d added", o.Keyslot))
	}
	steps = append(steps, fmt.Sprintf("%d of %d shares written and verified", len(o.Cards), o.N))
	complete := o.Complete() && v.h.InUse(o.Keyslot)
	if complete && v.tokenOf(o.ID) != nil {
		steps = append(steps, "token written")
	}
	if u.Kind == "rotate" {
		if old := v.logRecord(mustID(o.Replaces)); old != nil && complete {
			if v.h.InUse(old.Keyslot) {
				steps = append(steps, fmt.Sprintf("old keyslot %d not yet killed", old.Keyslot))
			} else {
				steps = append(steps, fmt.Sprintf("old keyslot %d killed", old.Keyslot))
			}
		}
	}
	if complete {
		steps = append(steps, "a rerun finishes it")
	} else {
		steps = append(steps, "a rerun undoes it and starts again")
	}
	u.Step = strings.Join(steps, ", ")
	u.Command = fmt.Sprintf("custos %s %s", u.Kind, env.device())
	return u
}

// mustID parses a ceremony ID from the log, the zero ID when it does not
// parse (the log validated it on the way in).
func mustID(s string) shares.CeremonyID {
	id, _ := shares.ParseCeremonyID(s)
	return id
}

// decodeJSON decodes an event body.
func decodeJSON(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode log event: %w", err)
	}
	return nil
}
