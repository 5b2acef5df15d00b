package escrow

import (
	"context"
	"strings"
	"testing"
)

func TestStatus(t *testing.T) {
	r := newRig(t, 2, 3)
	st := r.status()
	if st.Ceremony != nil || len(st.Problems) != 0 || st.Unfinished != nil || st.LUKSVersion != 2 || st.UUID != r.vol.uuid {
		t.Fatalf("status of a volume without a ceremony: %v", st)
	}
	rec := r.enroll(2, 3).Ceremony
	st = r.status()
	if !st.Confirmed || st.Source != "token 0+log" || st.Live != 3 || st.Margin != 1 || !st.KeyslotInUse || len(st.Copies) != 2 {
		t.Fatalf("status: %v copies %+v", st, st.Copies)
	}

	// The recovery keyslot's key replaced under its number.
	r.vol.mu.Lock()
	r.vol.salts[rec.Keyslot] = newSalt()
	r.vol.mu.Unlock()
	st = r.status()
	if !strings.Contains(strings.Join(st.Problems, "\n"), "no longer holds the key of ceremony") {
		t.Fatalf("salt changed: %v", st)
	}

	// The recovery keyslot killed: no share recovers anything.
	if _, err := r.vol.KillKeyslot(context.Background(), r.header(), rec.Keyslot, 0, []byte(operatorKey)); err != nil {
		t.Fatal(err)
	}
	st = r.status()
	p := strings.Join(st.Problems, "\n")
	if st.KeyslotInUse || st.Live != 0 || st.Margin != -2 || !strings.Contains(p, "holds no key") || !strings.Contains(p, "cannot be recovered") {
		t.Fatalf("keyslot killed: %v", st)
	}
}

// Status needs no card, no secret and no log, and writes nothing.
func TestStatusWithoutLog(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	head, _ := r.log.Head()
	r.env.Log = nil
	r.env.Cards = nil
	st := r.status()
	if st.Confirmed || st.Source != "token 0" || !strings.Contains(strings.Join(st.Problems, "\n"), "there is no ceremony log") {
		t.Fatalf("status: %v", st)
	}
	if after, _ := r.log.Head(); after != head || len(r.p.prompts) != 3 {
		t.Fatal("status wrote to the log or asked for something")
	}
}
