package escrow

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"custos.dev/custos/luks"
)

// ownKey is a key the operator adds to the volume after a crash, with
// plain cryptsetup luksAddKey: it lands in the first free keyslot.
const ownKey = "the operator's own key"

// addOwnKey adds ownKey as luksAddKey would and returns its keyslot.
func (r *rig) addOwnKey() int {
	r.t.Helper()
	slot, err := r.vol.AddKeyslot(context.Background(), []byte(operatorKey), []byte(ownKey), luks.AddOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return slot
}

// opensWithOwnKey checks that the key the operator added still opens its
// keyslot.
func (r *rig) opensWithOwnKey(slot int) {
	r.t.Helper()
	if err := r.vol.TestKey(context.Background(), []byte(ownKey), slot); err != nil {
		r.t.Fatalf("the operator's own key in keyslot %d no longer opens the volume: %v\n%s", slot, err, r.p.transcript())
	}
}

// TestKeyAddedAfterCrash: after a crash, the operator adds a key of their
// own, which lands under a keyslot number the log remembers (reserved for
// the interrupted ceremony, or the old recovery keyslot already killed).
// The rerun must not kill it.
func TestKeyAddedAfterCrash(t *testing.T) {
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("luks%d/%s", version, fpEnrollBegun), func(t *testing.T) {
			r := newRig(t, version, 3)
			crashAt(t, fpEnrollBegun, 1)
			r.insert(0, 1, 2)
			if _, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)}); !crashed(err) {
				t.Fatalf("no crash: %v", err)
			}
			failpoint = nil
			st, _ := Status(context.Background(), r.env)
			reserved := st.Unfinished
			own := r.addOwnKey()
			r.src.queue, r.p.answers = nil, nil
			r.insert(0, 1, 2)
			res, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)})
			if err != nil || res.Resumed != "undone" {
				t.Fatalf("rerun: %v (resumed %q)\n%s", err, res.Resumed, r.p.transcript())
			}
			r.opensWithOwnKey(own)
			if !strings.Contains(r.p.transcript(), fmt.Sprintf("keyslot %d may be left over from interrupted enrollment", own)) {
				t.Fatalf("keyslot %d left without a word (unfinished was %+v):\n%s", own, reserved, r.p.transcript())
			}
			if res.Ceremony.Keyslot == own || !r.vol.inUse(res.Ceremony.Keyslot) {
				t.Fatalf("new ceremony keyslot %d, own key in %d", res.Ceremony.Keyslot, own)
			}
			r.src.queue, r.p.answers = nil, nil
			if _, err := r.recover("recovered", 0, 2); err != nil {
				t.Fatalf("recover after rerun: %v\n%s", err, r.p.transcript())
			}
		})
		for _, fp := range []string{fpRotateBegun, fpRotateOldKilled, fpRotateOldTokenRm} {
			t.Run(fmt.Sprintf("luks%d/%s", version, fp), func(t *testing.T) {
				r := newRig(t, version, 4)
				old := r.enroll(2, 3).Ceremony
				oldKey := r.vol.keyOf(old.Keyslot)
				crashAt(t, fp, 1)
				if _, err := r.rotateRun(RotateOptions{}); !crashed(err) {
					t.Fatalf("no crash: %v", err)
				}
				failpoint = nil
				own := r.addOwnKey()
				r.src.queue, r.p.answers = nil, nil
				finishes := fp != fpRotateBegun
				if !finishes {
					r.insert(0, 1, 1, 2, 3)
				}
				res, err := Rotate(context.Background(), r.env, RotateOptions{})
				if err != nil {
					t.Fatalf("rerun: %v\n%s", err, r.p.transcript())
				}
				if want := map[bool]string{true: "finished", false: "undone"}[finishes]; res.Resumed != want {
					t.Fatalf("resumed %q, want %q", res.Resumed, want)
				}
				r.opensWithOwnKey(own)
				r.opensWithOperatorKey()
				if _, err := r.vol.FindKeyslot(context.Background(), oldKey); err == nil {
					t.Fatal("the old recovery key still opens the volume")
				}
				if finishes && (own != old.Keyslot || !strings.Contains(r.p.transcript(), "no longer holds the old recovery key")) {
					t.Fatalf("own key in %d, old keyslot %d:\n%s", own, old.Keyslot, r.p.transcript())
				}
				if !finishes && !strings.Contains(r.p.transcript(), fmt.Sprintf("keyslot %d may be left over from interrupted rotation", own)) {
					t.Fatalf("keyslot %d left without a word:\n%s", own, r.p.transcript())
				}
				st, _ := Status(context.Background(), r.env)
				if st.Unfinished != nil || st.Ceremony == nil || st.Ceremony.ID != res.New.ID {
					t.Fatalf("status after rerun: %+v", st)
				}
				r.src.queue, r.p.answers = nil, nil
				if _, err := r.recover("recovered", 3, 2); err != nil {
					t.Fatalf("recover after rerun: %v\n%s", err, r.p.transcript())
				}
			})
		}
	}
}

// TestUnrecordedKeyslotIsLeft: a keyslot whose salt the log never got (a
// crash right after adding it) is left in place with a word, not killed;
// one whose salt was recorded is killed on the rerun.
func TestUnrecordedKeyslotIsLeft(t *testing.T) {
	for _, recorded := range []bool{true, false} {
		t.Run(fmt.Sprintf("recorded=%v", recorded), func(t *testing.T) {
			r := newRig(t, 2, 3)
			crashAt(t, fpEnrollKeyslot, 1)
			r.insert(0, 1, 2)
			if _, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)}); !crashed(err) {
				t.Fatalf("no crash: %v", err)
			}
			failpoint = nil
			st, _ := Status(context.Background(), r.env)
			if st.Unfinished == nil {
				t.Fatal("no unfinished ceremony")
			}
			rec := r.openRecord()
			if rec.KeyslotSalt == "" {
				t.Fatal("salt not recorded after adding the keyslot")
			}
			slot, salt := rec.Keyslot, rec.KeyslotSalt
			if !recorded {
				rec.KeyslotSalt = ""
				if _, err := put(r.env, rec); err != nil {
					t.Fatal(err)
				}
			}
			r.src.queue, r.p.answers = nil, nil
			r.insert(0, 1, 2)
			if _, err := Enroll(context.Background(), r.env, EnrollOptions{K: 2, N: 3, AuthKey: []byte(operatorKey)}); err != nil {
				t.Fatalf("rerun: %v\n%s", err, r.p.transcript())
			}
			said := strings.Contains(r.p.transcript(), fmt.Sprintf("keyslot %d may be left over", slot))
			killed := strings.Contains(r.p.transcript(), fmt.Sprintf("killed keyslot %d", slot))
			h, _ := r.vol.Inspect(context.Background())
			kept := h.Keyslot(slot) != nil && h.Keyslot(slot).Salt == salt
			if recorded != killed || recorded == said || kept == recorded {
				t.Fatalf("recorded %v: killed %v, said %v, keyslot %d kept %v\n%s", recorded, killed, said, slot, kept, r.p.transcript())
			}
		})
	}
}

// openRecord returns the open ceremony of the log.
func (r *rig) openRecord() *Record {
	r.t.Helper()
	v, err := look(context.Background(), r.env)
	if err != nil {
		r.t.Fatal(err)
	}
	o := v.openRecord()
	if o == nil {
		r.t.Fatal("no open ceremony in the log")
	}
	return o
}
