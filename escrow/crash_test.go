package escrow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

type crashPoint struct {
	name string
	nth  int
}

var enrollCrashes = []crashPoint{
	{fpEnrollBegun, 1}, {fpEnrollKeyslot, 1}, {fpEnrollOpenToken, 1}, {fpEnrollCard, 1}, {fpEnrollCard, 3},
	{fpEnrollToken, 1}, {fpEnrollLogged, 1},
}

var rotateCrashes = []crashPoint{
	{fpRotateBegun, 1}, {fpRotateKeyslot, 1}, {fpRotateOpenToken, 1}, {fpRotateCard, 1}, {fpRotateCard, 3},
	{fpRotateToken, 1}, {fpRotateOldKilled, 1}, {fpRotateOldTokenRm, 1}, {fpRotateLogged, 1}, {fpRotateWiped, 1},
}

// TestFailpointsCovered keeps the crash tables in step with the steps.
func TestFailpointsCovered(t *testing.T) {
	for _, fp := range failpoints {
		if !slices.ContainsFunc(enrollCrashes, func(c crashPoint) bool { return c.name == fp }) &&
			!slices.ContainsFunc(rotateCrashes, func(c crashPoint) bool { return c.name == fp }) &&
			!slices.ContainsFunc(fleetCrashes, func(c crashPoint) bool { return c.name == fp }) {
			t.Errorf("failpoint %s has no crash test", fp)
		}
	}
}

// enrollAfterCrash says what a rerun of enroll must do after a crash at p:
// finish it (only when the complete token and the log agree: LUKS2, after
// the token is written), or undo it — killing the interrupted ceremony's
// keyslot only when the open token and the log agree on it, leaving it in
// place otherwise. On LUKS1 there is no token to be the second copy, so a
// crash after the keyslot is added always leaves it in place (the old
// custos killed it on the log's word).
func enrollAfterCrash(version int, p crashPoint) (done, finishes, leftInPlace bool) {
	done = p.name == fpEnrollLogged
	finishes = version == 2 && p.name == fpEnrollToken
	switch {
	case done || finishes || p.name == fpEnrollBegun:
	case version == 1:
		leftInPlace = true
	default:
		leftInPlace = p.name == fpEnrollKeyslot
	}
	return
}

// The old custos also finished an enrollment interrupted after its last
// card; the rule now wants the complete token too, so that is undone.
func TestEnrollCrashAtEachStep(t *testing.T) {
	for _, version := range []int{1, 2} {
		for _, p := range enrollCrashes {
			t.Run(fmt.Sprintf("luks%d/%s#%d", version, p.name, p.nth), func(t *testing.T) {
				done, finishes, leftInPlace := enrollAfterCrash(version, p)
				r := newRig(t, version, 3)
				crashAt(t, p.name, p.nth)
				r.insert(0, 1, 2)
				_, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)})
				if err == nil || !crashed(err) {
					t.Fatalf("no crash: %v", err)
				}
				failpoint = nil
				r.opensWithOperatorKey()
				st := r.status()
				if done != (st.Unfinished == nil) {
					t.Fatalf("status after crash: unfinished %+v", st.Unfinished)
				}
				orphan := -1
				if !done {
					u := st.Unfinished
					if u.Kind != "enroll" || u.Set != "" || strings.Contains(u.Step, "a rerun finishes it") != finishes {
						t.Fatalf("unfinished %+v", u)
					}
					open := r.openRecord()
					if r.vol.inUse(open.Keyslot) {
						orphan = open.Keyslot
					}
					taken := r.src.taken
					r.reset()
					r.insert(0, 1, 2)
					res, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)})
					if err != nil {
						t.Fatalf("rerun: %v\n%s", err, r.p.transcript())
					}
					want := map[bool]string{true: "finished", false: "undone"}[finishes]
					if res.Resumed != want {
						t.Fatalf("resumed %q, want %q\n%s", res.Resumed, want, r.p.transcript())
					}
					if finishes && r.src.taken != taken {
						t.Fatal("finishing asked for cards")
					}
				}
				r.opensWithOperatorKey()
				left := strings.Contains(r.p.transcript(), fmt.Sprintf("cryptsetup luksKillSlot /dev/test %d", orphan))
				if leftInPlace != (orphan >= 0 && r.vol.inUse(orphan) && left) {
					t.Fatalf("keyslot %d of the interrupted enrollment: in use %v, named %v, want left in place %v\n%s",
						orphan, orphan >= 0 && r.vol.inUse(orphan), left, leftInPlace, r.p.transcript())
				}
				want := 2
				if leftInPlace {
					want = 3
				}
				if h := r.header(); len(h.Keyslots) != want {
					t.Fatalf("keyslots after rerun: %+v", h.Keyslots)
				}
				st = r.status()
				if st.Unfinished != nil || len(st.Problems) != 0 {
					t.Fatalf("status after rerun: %+v", st)
				}
				r.reset()
				rr, err := r.recover("recovered", 0, 2)
				if err != nil || rr.Ceremony.ID != st.Ceremony.ID {
					t.Fatalf("recover after rerun: %v\n%s", err, r.p.transcript())
				}
			})
		}
	}
}

// openRecord returns the log's unfinished ceremony of the volume.
func (r *rig) openRecord() *Record {
	r.t.Helper()
	v, err := look(context.Background(), r.env)
	if err != nil {
		r.t.Fatal(err)
	}
	o := v.openLog()
	if o == nil {
		r.t.Fatal("no open ceremony in the log")
	}
	return o.Record
}

// rotateAfterCrash says what a rerun of rotate must do after a crash at p,
// by the same rule as enrollAfterCrash.
//
// stuck marks the window that rule leaves without a way forward: on LUKS1
// a card-authorised rotation kills the old keyslot (its recovered key
// proves it) before the log marks the new ceremony active. A crash there
// leaves the new keyslot as the only recovery path, a rerun may not finish
// (no token to be the second copy) and cannot undo (the old cards open
// nothing any more). TestRotateCrashLUKS1AfterOldKilled checks what stays
// safe there; what a rerun should do is a design question.
func rotateAfterCrash(version int, p crashPoint) (done, finishes, leftInPlace, stuck bool) {
	done = p.name == fpRotateLogged || p.name == fpRotateWiped
	finishes = version == 2 && (p.name == fpRotateToken || p.name == fpRotateOldKilled || p.name == fpRotateOldTokenRm)
	stuck = version == 1 && (p.name == fpRotateOldKilled || p.name == fpRotateOldTokenRm)
	switch {
	case done || finishes || stuck || p.name == fpRotateBegun:
	case version == 1:
		leftInPlace = true
	default:
		leftInPlace = p.name == fpRotateKeyslot
	}
	return
}

func TestRotateCrashAtEachStep(t *testing.T) {
	for _, version := range []int{1, 2} {
		for _, p := range rotateCrashes {
			t.Run(fmt.Sprintf("luks%d/%s#%d", version, p.name, p.nth), func(t *testing.T) {
				done, finishes, leftInPlace, stuck := rotateAfterCrash(version, p)
				if stuck {
					return // TestRotateCrashLUKS1AfterOldKilled
				}
				r := newRig(t, version, 4)
				old := r.enroll(2, 3).Ceremony
				oldKey := r.vol.keyOf(old.Keyslot)
				crashAt(t, p.name, p.nth)
				_, err := r.rotateRun(RotateOptions{})
				if err == nil || !crashed(err) {
					t.Fatalf("no crash: %v", err)
				}
				failpoint = nil
				r.opensWithOperatorKey()
				st := r.status()
				// The old or the new recovery key opens the volume.
				if !r.vol.inUse(old.Keyslot) && (st.Ceremony == nil || !st.KeyslotInUse) && (st.Unfinished == nil || !strings.Contains(st.Unfinished.Step, "recovery keyslot")) {
					t.Fatalf("no recovery keyslot after the crash: %+v", st)
				}
				if done != (st.Unfinished == nil) {
					t.Fatalf("status after crash: %+v", st.Unfinished)
				}
				orphan := -1
				if !done {
					u := st.Unfinished
					if u.Kind != "rotate" || u.Set != "" || strings.Contains(u.Step, "a rerun finishes it") != finishes {
						t.Fatalf("unfinished %+v", u)
					}
					open := r.openRecord()
					if r.vol.inUse(open.Keyslot) {
						orphan = open.Keyslot
					}
					r.reset()
					opts := RotateOptions{}
					switch {
					case finishes && r.vol.inUse(old.Keyslot):
						r.insert(3, 1) // the new cards give the key that kills the old keyslot
					case !finishes:
						r.insert(0, 1, 1, 2, 3, 0) // authorise, undo, rotate anew, wipe
						opts.WipeWait = time.Second
					}
					res, err := Rotate(context.Background(), r.env, opts)
					if err != nil {
						t.Fatalf("rerun: %v\n%s", err, r.p.transcript())
					}
					if want := map[bool]string{true: "finished", false: "undone"}[finishes]; res.Resumed != want {
						t.Fatalf("resumed %q, want %q", res.Resumed, want)
					}
				}
				r.opensWithOperatorKey()
				if r.vol.inUse(old.Keyslot) {
					t.Fatalf("old keyslot survives the finished rotation\n%s", r.p.transcript())
				}
				r.opensNothing("the old recovery key", oldKey)
				left := strings.Contains(r.p.transcript(), fmt.Sprintf("cryptsetup luksKillSlot /dev/test %d", orphan))
				if leftInPlace != (orphan >= 0 && r.vol.inUse(orphan) && left) {
					t.Fatalf("keyslot %d of the interrupted rotation: in use %v, named %v, want left in place %v\n%s",
						orphan, orphan >= 0 && r.vol.inUse(orphan), left, leftInPlace, r.p.transcript())
				}
				st = r.status()
				if st.Unfinished != nil || len(st.Problems) != 0 || st.Ceremony.ID == old.ID {
					t.Fatalf("status after rerun: %+v\n%s", st, r.p.transcript())
				}
				r.reset()
				rr, err := r.recover("recovered", 3, 2)
				if err != nil || rr.Ceremony.ID != st.Ceremony.ID {
					t.Fatalf("recover after rerun: %v\n%s", err, r.p.transcript())
				}
			})
		}
	}
}

// A rotation interrupted after its last new card is undone on the rerun,
// authorised by the cards of the ceremony it replaces — never by its own
// cards, whose key would protect its keyslot from the undo and then be
// taken for the ceremony to replace (the rerun "undid" the rotation,
// left its keyslot, rotated the abandoned ceremony and could not log it).
// The kept cards' certificates already name the rotation; they still
// open the old ceremony's shares, which the token and the log agree on.
func TestRotateUndoAuthorisedByTheOldCards(t *testing.T) {
	r := newRig(t, 2, 4)
	old := r.enroll(2, 3).Ceremony
	oldKey := r.vol.keyOf(old.Keyslot)
	crashAt(t, fpRotateCard, 3)
	if _, err := r.rotateRun(RotateOptions{}); !crashed(err) {
		t.Fatalf("no crash: %v", err)
	}
	failpoint = nil
	rot := r.openRecord()
	r.reset()
	// Card 3 holds a share of the rotation only; cards 1 and 2 hold the
	// rotation's certificate over the old share's key.
	r.src.insert(r.cards[3])
	r.insert(1, 2, 1, 2, 3, 0)
	res, err := Rotate(context.Background(), r.env, RotateOptions{WipeWait: time.Second})
	if err != nil {
		t.Fatalf("rerun: %v\n%s", err, r.p.transcript())
	}
	if res.Resumed != "undone" || res.Old.ID != old.ID || res.New.Replaces != old.ID || !res.OldKilled {
		t.Fatalf("result %+v", res)
	}
	if !errors.Is(res.Cards[0].Err, ErrOtherCeremony) || !res.Cards[1].OK() || !res.Cards[2].OK() {
		t.Fatalf("authorising cards %+v", res.Cards)
	}
	if r.logState(rot.ID).Status != StatusAbandoned || r.vol.inUse(rot.Keyslot) && rot.Keyslot != res.New.Keyslot {
		t.Fatalf("interrupted rotation: %s, keyslot %d in use %v", r.logState(rot.ID).Status, rot.Keyslot, r.vol.inUse(rot.Keyslot))
	}
	if r.logState(old.ID).Status != StatusRetired || r.logState(res.New.ID).Status != StatusActive {
		t.Fatal("log after the rerun")
	}
	r.opensNothing("the old recovery key", oldKey)
	if st := r.status(); st.Unfinished != nil || len(st.Problems) != 0 || st.Ceremony.ID != res.New.ID {
		t.Fatalf("status %v", st)
	}
}

// TestRotateCrashLUKS1AfterOldKilled: the window rotateAfterCrash calls
// stuck. What holds: the operator's key opens, the new recovery keyslot
// is never killed by a rerun, a rerun refuses without changing anything,
// and the new cards recover the volume.
func TestRotateCrashLUKS1AfterOldKilled(t *testing.T) {
	for _, fp := range []string{fpRotateOldKilled, fpRotateOldTokenRm} {
		t.Run(fp, func(t *testing.T) {
			r := newRig(t, 1, 4)
			old := r.enroll(2, 3).Ceremony
			crashAt(t, fp, 1)
			if _, err := r.rotateRun(RotateOptions{}); !crashed(err) {
				t.Fatalf("no crash: %v", err)
			}
			failpoint = nil
			rot := r.openRecord()
			newKey := r.vol.keyOf(rot.Keyslot)
			if r.vol.inUse(old.Keyslot) || len(newKey) == 0 {
				t.Fatal("not the window: the old keyslot is alive or the new one is not")
			}
			st := r.status()
			if st.Unfinished == nil || st.Unfinished.Kind != "rotate" {
				t.Fatalf("status %v", st)
			}
			kills, adds := r.killCount(), r.vol.adds
			for _, cards := range [][]int{{0, 1}, {1, 2}} {
				r.reset()
				r.insert(cards...)
				if _, err := Rotate(context.Background(), r.env, RotateOptions{}); err == nil {
					t.Fatalf("rerun with cards %v went on\n%s", cards, r.p.transcript())
				}
			}
			r.killedNothing(kills)
			if r.vol.adds != adds || r.logState(rot.ID).Status != StatusOpen {
				t.Fatal("a refused rerun changed the volume or the log")
			}
			r.opensWithOperatorKey()
			r.opensWith(string(newKey), rot.Keyslot)
			// The new cards alone (no log) recover it.
			r.reset()
			r.env.Log = nil
			rr, err := r.recover("recovered", 3, 1)
			if err != nil || rr.Ceremony.ID != rot.ID || rr.Keyslot != rot.Keyslot {
				t.Fatalf("recover: %v\n%s", err, r.p.transcript())
			}
		})
	}
}

// TestKeyAddedAfterCrashIsNeverKilled: after a crash at any step, the
// operator adds a key of their own with plain luksAddKey (it lands in the
// first free keyslot, maybe under a number the log remembers: reserved for
// the interrupted ceremony, or the old recovery keyslot already killed).
// Whatever the rerun does, that key and the operator's survive.
func TestKeyAddedAfterCrashIsNeverKilled(t *testing.T) {
	for _, version := range []int{1, 2} {
		for _, p := range enrollCrashes {
			t.Run(fmt.Sprintf("luks%d/%s#%d", version, p.name, p.nth), func(t *testing.T) {
				_, finishes, _ := enrollAfterCrash(version, p)
				r := newRig(t, version, 3)
				crashAt(t, p.name, p.nth)
				r.insert(0, 1, 2)
				if _, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)}); !crashed(err) {
					t.Fatalf("no crash: %v", err)
				}
				failpoint = nil
				var reserved = -1
				if st := r.status(); st.Unfinished != nil {
					reserved = r.openRecord().Keyslot
				}
				own := r.addKey(ownKey)
				r.reset()
				r.insert(0, 1, 2)
				res, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)})
				switch {
				case p.name == fpEnrollLogged:
					if !errors.Is(err, ErrAlreadyEnrolled) {
						t.Fatalf("rerun after the end: %v", err)
					}
				case err != nil:
					t.Fatalf("rerun: %v\n%s", err, r.p.transcript())
				case finishes != (res.Resumed == "finished"):
					t.Fatalf("resumed %q", res.Resumed)
				case own == reserved && !strings.Contains(r.p.transcript(), fmt.Sprintf("cryptsetup luksKillSlot /dev/test %d", own)):
					t.Fatalf("keyslot %d left without a word:\n%s", own, r.p.transcript())
				}
				r.opensWith(ownKey, own)
				r.opensWithOperatorKey()
			})
		}
		for _, p := range rotateCrashes {
			t.Run(fmt.Sprintf("luks%d/%s#%d", version, p.name, p.nth), func(t *testing.T) {
				done, finishes, _, stuck := rotateAfterCrash(version, p)
				r := newRig(t, version, 4)
				old := r.enroll(2, 3).Ceremony
				crashAt(t, p.name, p.nth)
				if _, err := r.rotateRun(RotateOptions{}); !crashed(err) {
					t.Fatalf("no crash: %v", err)
				}
				failpoint = nil
				reserved := -1
				if !done {
					reserved = r.openRecord().Keyslot
				}
				oldFree := !r.vol.inUse(old.Keyslot)
				own := r.addKey(ownKey)
				r.reset()
				opts := RotateOptions{}
				switch {
				case done || finishes && oldFree:
				case finishes:
					r.insert(3, 1)
				case stuck:
					r.insert(0, 1)
				default:
					r.insert(0, 1, 1, 2, 3, 0)
					opts.WipeWait = time.Second
				}
				if done {
					// Nothing to rerun: a new rotation would begin.
					r.opensWith(ownKey, own)
					r.opensWithOperatorKey()
					return
				}
				res, err := Rotate(context.Background(), r.env, opts)
				switch {
				case own == old.Keyslot && finishes && version == 2 && p.name == fpRotateOldKilled:
					// The old keyslot was killed before the crash, and the
					// old token is still there: the token and the log agree
					// on the old keyslot's salt, which the key now under its
					// number does not have. That proves the old recovery key
					// gone: the rotation finishes, and the key is left alone.
					if err != nil || res.Resumed != "finished" || res.OldKilled || r.logState(res.New.ID).Status != StatusActive {
						t.Fatalf("rerun: %v %+v\n%s", err, res, r.p.transcript())
					}
				case own == old.Keyslot && finishes:
					// The old keyslot was killed before the crash; the key
					// now under its number is not proven the old one (only
					// the log names it): it is left, named, and the finished
					// rotation says so (exit 4).
					if !errors.Is(err, ErrUnconfirmed) || res.Resumed != "finished" || !strings.Contains(err.Error(), fmt.Sprintf("keyslot %d", own)) ||
						r.logState(res.New.ID).Status != StatusActive {
						t.Fatalf("rerun: %v %+v\n%s", err, res, r.p.transcript())
					}
				case stuck:
					if err == nil {
						t.Fatal("rerun went on in the luks1 window")
					}
				case err != nil:
					t.Fatalf("rerun: %v\n%s", err, r.p.transcript())
				case finishes != (res.Resumed == "finished"):
					t.Fatalf("resumed %q", res.Resumed)
				case own == reserved && !strings.Contains(r.p.transcript(), fmt.Sprintf("cryptsetup luksKillSlot /dev/test %d", own)):
					t.Fatalf("keyslot %d left without a word:\n%s", own, r.p.transcript())
				}
				r.opensWith(ownKey, own)
				r.opensWithOperatorKey()
			})
		}
	}
}
