package escrow

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// The fleet's failpoints, each hit while the second of three volumes is
// worked on (the set's new version is logged once, before any volume).
var fleetCrashes = []crashPoint{
	{fpSetReplaced, 1},
	{fpRotateBegun, 2}, {fpRotateKeyslot, 2}, {fpRotateOpenToken, 2}, {fpRotateSealed, 2},
	{fpRotateToken, 2}, {fpRotateOldKilled, 2}, {fpRotateOldTokenRm, 2}, {fpRotateLogged, 2},
	{fpEnrollSealed, 2},
}

// A crash at each step of a fleet rotation leaves every volume opening
// with the operator's key and with a recovery key (old or new), and a
// rerun of the same command finishes: every volume on the set's new
// version, its old keyslot killed, nothing unfinished, the new cards
// recovering it.
func TestRotateSetCrashAtEachStep(t *testing.T) {
	for _, p := range fleetCrashes {
		if p.name == fpEnrollSealed {
			continue
		}
		t.Run(fmt.Sprintf("%s#%d", p.name, p.nth), func(t *testing.T) {
			r := newFleetRig(t, 6, 3)
			r.createSet(5, 3)
			enrolled := r.enrollSet(0)
			opts := RotateSetOptions{Set: "fleet", Old: "1000", New: "1005", Volumes: r.fleet()}
			crashAt(t, p.name, p.nth)
			r.insert(5, 1, 2, 3)
			_, err := RotateSet(context.Background(), r.env, opts)
			if err == nil || !crashed(err) {
				t.Fatalf("no crash: %v\n%s", err, r.p.transcript())
			}
			failpoint = nil
			for i, v := range r.vols {
				r.rig.vol = v
				r.env.Volume = v
				r.opensWithOperatorKey()
				st := r.status()
				if !st.KeyslotInUse && st.Unfinished == nil {
					t.Fatalf("volume %d: no recovery path after the crash: %+v", i, st)
				}
			}
			// The rerun: the new card only if its version was not
			// logged yet; the pass of the same three cards.
			r.reset()
			r.insert(1, 2, 3)
			res, err := RotateSet(context.Background(), r.env, opts)
			if err != nil {
				t.Fatalf("rerun: %v\n%s", err, r.p.transcript())
			}
			if !res.SetResumed || res.Set.Version != 2 {
				t.Fatalf("rerun: set %+v resumed %v", res.Set, res.SetResumed)
			}
			for i, v := range r.vols {
				r.rig.vol = v
				r.env.Volume = v
				r.opensWithOperatorKey()
				st := r.status()
				if st.Unfinished != nil || len(st.Problems) != 0 || st.Ceremony == nil || st.Ceremony.Set == nil || st.Ceremony.Set.Version != 2 {
					t.Fatalf("volume %d after the rerun: %+v", i, st)
				}
				// After a crash between adding a keyslot and writing the
				// open token, only the log names that keyslot: it is left
				// in place and named, as Rotate leaves it.
				want := 2
				if i == 1 && p.name == fpRotateKeyslot {
					want = 3
					if !strings.Contains(r.p.transcript(), "cryptsetup luksKillSlot /dev/fleet1 ") {
						t.Fatalf("the keyslot left in place is not named\n%s", r.p.transcript())
					}
				}
				if h := r.header(); len(h.Keyslots) != want {
					t.Fatalf("volume %d: keyslots %+v, want %d", i, h.Keyslots, want)
				}
				if v.inUse(enrolled.Volumes[i].Ceremony.Keyslot) && st.Ceremony.Keyslot != enrolled.Volumes[i].Ceremony.Keyslot {
					t.Fatalf("volume %d: the old keyslot %d lives", i, enrolled.Volumes[i].Ceremony.Keyslot)
				}
			}
			// The new set's cards recover the second volume.
			r.reset()
			r.rig.vol = r.vols[1]
			r.env.Volume = r.vols[1]
			r.env.Cards = r.src
			rr, err := r.recover("after the crash", 5, 1, 2)
			if err != nil || rr.Ceremony.Set.Version != 2 {
				t.Fatalf("recover with the new set: %v\n%s", err, r.p.transcript())
			}
		})
	}
}

// A fleet enrollment takes its volumes through each step together (a
// batch): a crash after their shares were sealed and logged, before their
// complete tokens, leaves each open with the log alone holding its
// entries, and the rerun undoes each and enrolls it anew; a crash after
// the complete tokens leaves each finishable, and the rerun finishes it.
func TestEnrollSetCrash(t *testing.T) {
	for _, tc := range []struct {
		p    crashPoint
		want string
	}{
		{crashPoint{fpEnrollSealed, 2}, "undone"},
		{crashPoint{fpEnrollToken, 2}, "finished"},
	} {
		t.Run(tc.p.name, func(t *testing.T) {
			r := newFleetRig(t, 5, 3)
			r.createSet(5, 3)
			crashAt(t, tc.p.name, tc.p.nth)
			_, err := EnrollSet(context.Background(), r.env, EnrollSetOptions{Set: "fleet", Volumes: r.fleet()})
			if !crashed(err) {
				t.Fatalf("no crash: %v", err)
			}
			failpoint = nil
			for _, v := range r.vols {
				r.env.Volume = v
				r.opensWithOperatorKey()
				st := r.status()
				if st.Unfinished == nil || st.Unfinished.Kind != "enroll" || strings.Contains(st.Unfinished.Step, "a rerun finishes it") != (tc.want == "finished") {
					t.Fatalf("status after the crash: %+v", st.Unfinished)
				}
			}
			res, err := EnrollSet(context.Background(), r.env, EnrollSetOptions{Set: "fleet", Volumes: r.fleet()})
			if err != nil {
				t.Fatalf("rerun: %v\n%s", err, r.p.transcript())
			}
			for i, vr := range res.Volumes {
				if vr.Resumed != tc.want || vr.Already {
					t.Fatalf("volume %d: resumed %q, want %q", i, vr.Resumed, tc.want)
				}
			}
			for i, v := range r.vols {
				r.env.Volume = v
				st := r.status()
				if st.Unfinished != nil || len(st.Problems) != 0 || st.Ceremony == nil || st.Ceremony.Set == nil {
					t.Fatalf("volume %d: %+v", i, st)
				}
				if h, _ := v.Inspect(context.Background()); len(h.Keyslots) != 2 {
					t.Fatalf("volume %d: keyslots %+v", i, h.Keyslots)
				}
			}
			// A third run: every volume enrolled already.
			res, err = EnrollSet(context.Background(), r.env, EnrollSetOptions{Set: "fleet", Volumes: r.fleet()})
			if err != nil || !res.Volumes[0].Already || !res.Volumes[2].Already {
				t.Fatalf("third run: %v %+v", err, res.Volumes)
			}
		})
	}
}
