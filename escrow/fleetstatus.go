package escrow

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"custos.dev/custos/store"
)

// SetReport is what SetStatus found: a custodian set, its cards' last set
// rollcalls, and the volumes enrolled to it with their margins.
type SetReport struct {
	Set         *Set
	Fingerprint [32]byte
	Cards       []SetCardStatus
	// Volumes are the ceremonies enrolled to the set (any version) that
	// are in force or unfinished, as the log holds them.
	Volumes  []SetVolumeStatus
	Problems []string
	Notes    []string
}

// SetCardStatus is one card of a set with its last set rollcall.
type SetCardStatus struct {
	SetCard
	LastRollcall time.Time // zero if never
	LastOK       bool
	Reason       string
}

// SetVolumeStatus is one volume enrolled to the set, from the log.
type SetVolumeStatus struct {
	UUID     string
	Ceremony string
	Status   string // active, or open (unfinished)
	// SetVersion is the version its shares are sealed to.
	SetVersion int
	K, N       int
	// Live counts its cards not known to be lost (no failed last
	// rollcall, of the ceremony or of the set); Margin is Live - K: how
	// many more cards may be lost before its quorum is.
	Live, Margin int
}

// SetStatus reports a set and every volume enrolled to it, from the log
// alone (status DEVICE checks a volume's own copies): each volume's k, n,
// live cards and margin, counting a card lost when its last rollcall —
// the ceremony's or the set's, whichever is later — failed. It needs no
// card and writes nothing.
func SetStatus(ctx context.Context, env *Env, name string) (*SetReport, error) {
	if err := env.need("status", false, false, true, false); err != nil {
		return nil, err
	}
	st, err := lookupSet(env, name, 0)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	rep := &SetReport{Set: st.Set, Fingerprint: st.Fingerprint}
	rcs, err := env.Log.SetRollcalls(name)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	for _, c := range st.Set.Cards {
		cs := SetCardStatus{SetCard: c}
		if rc, ok := rcs[c.Serial]; ok && rc.Fingerprint == hex.EncodeToString(c.Key[:]) {
			cs.LastRollcall, cs.LastOK, cs.Reason = rc.Time, rc.OK, rc.Reason
			if !rc.OK {
				rep.Problems = append(rep.Problems, fmt.Sprintf("card %s failed its last set rollcall: %s", c.Serial, safeText(rc.Reason)))
			}
		}
		rep.Cards = append(rep.Cards, cs)
	}
	if st.Set.AllowUnattested {
		rep.Notes = append(rep.Notes, fmt.Sprintf("set %s allows cards without attestation", name))
	}
	cers, err := env.Log.SetCeremonies(name)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	behind := 0
	for _, c := range cers {
		if c.Status != StatusActive && c.Status != StatusOpen {
			continue
		}
		rec := c.Record
		vs := SetVolumeStatus{UUID: rec.VolumeString(), Ceremony: idText(rec.ID), Status: c.Status, SetVersion: rec.Set.Version, K: rec.K, N: rec.N}
		last, when := map[string]store.Rollcall{}, map[string]time.Time{}
		if err := ceremonyRollcalls(env, rec, last, when); err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("volume %s: reading rollcalls: %v", vs.UUID, err))
		}
		mergeSetRollcalls(env, rec, last, when)
		for _, card := range rec.Cards {
			if rc, ok := last[card.Serial]; !ok || rc.OK {
				vs.Live++
			}
		}
		vs.Margin = vs.Live - vs.K
		if c.Status == StatusOpen {
			rep.Notes = append(rep.Notes, fmt.Sprintf("volume %s: ceremony %s is unfinished", vs.UUID, vs.Ceremony))
		} else if vs.Margin < 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("volume %s: only %d live shares for a quorum of %d", vs.UUID, vs.Live, vs.K))
		}
		if c.Status == StatusActive && rec.Set.Version < st.Set.Version {
			behind++
		}
		rep.Volumes = append(rep.Volumes, vs)
	}
	if behind > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d volumes are enrolled to an older version of set %s: rerun the fleet rotation that made version %d with them", behind, name, st.Set.Version))
	}
	return rep, nil
}

// ceremonyRollcalls reads a ceremony's rollcalls from the log: the last
// per card, and when.
func ceremonyRollcalls(env *Env, rec *Record, last map[string]store.Rollcall, when map[string]time.Time) error {
	return env.Log.Events(idText(rec.ID), func(ev store.Event) error {
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
}

// mergeSetRollcalls adds to a ceremony's last rollcalls (by serial) the
// set rollcalls of its set that are later, for the cards whose key the set
// rollcall proved or failed: a card lost in a set rollcall is lost for
// every volume enrolled to the set.
func mergeSetRollcalls(env *Env, rec *Record, last map[string]store.Rollcall, when map[string]time.Time) {
	if rec.Set == nil || env.Log == nil {
		return
	}
	rcs, err := env.Log.SetRollcalls(rec.Set.Name)
	if err != nil {
		return
	}
	for _, c := range rec.Cards {
		s, ok := rcs[c.Serial]
		if !ok || s.Fingerprint != hex.EncodeToString(c.Key[:]) || !s.Time.After(when[c.Serial]) {
			continue
		}
		last[c.Serial] = store.Rollcall{Ceremony: idText(rec.ID), Serial: c.Serial, Fingerprint: s.Fingerprint, OK: s.OK, Reason: s.Reason}
		when[c.Serial] = s.Time
	}
}

// setNotes says, for a volume's ceremony enrolled to a set, which set and
// version, and whether the set has moved on since (SetMovedTo).
func setNotes(env *Env, rec *Record, rep *StatusReport) {
	if rec.Set == nil {
		return
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("enrolled to custodian set %s version %d (fingerprint %s)", rec.Set.Name, rec.Set.Version, FingerprintGroups(rec.Set.Fingerprint)))
	if env.Log == nil {
		return
	}
	if st, err := env.Log.Set(rec.Set.Name); err == nil && st.Set.Version > rec.Set.Version {
		rep.SetMovedTo = st.Set.Version
	}
}
