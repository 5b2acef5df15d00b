package escrow

import (
	"context"
	"testing"
	"time"
)

// The figures the design promises, counted on the fakes: one PIN
// verification per card at enroll; at recover, when the token and the log
// agree, no certificate read and the recovered key tried on a keyslot
// once; one certificate read and one PIN per card at rollcall.
func TestFigures(t *testing.T) {
	zero := func(r *rig) {
		for _, c := range r.cards {
			c.reads, c.verifies, c.opened = 0, 0, 0
		}
		r.vol.tests = 0
	}
	for _, version := range []int{1, 2} {
		r := newRig(t, version, 6)
		r.enroll(3, 5)
		for i, c := range r.cards[:5] {
			if c.verifies != 1 || c.opened != 1 {
				t.Errorf("luks%d enroll: card %d: %d pin verifications, %d ecdh, want 1 and 1", version, i, c.verifies, c.opened)
			}
		}

		zero(r)
		if _, err := r.recover("new passphrase", 4, 0, 2); err != nil {
			t.Fatal(err)
		}
		// LUKS2: the token and the log agree, no certificate is read.
		// LUKS1: the log alone names the ceremony; the first card's
		// certificate is the second copy, the others are matched on it.
		wantReads := map[int]int{1: 1, 2: 0}[version]
		reads := 0
		for i, c := range r.cards {
			reads += c.reads
			if want := map[bool]int{true: 1}[i == 4 || i == 0 || i == 2]; c.verifies != want || c.opened != want {
				t.Errorf("luks%d recover: card %d: %d pin verifications, %d ecdh, want %d", version, i, c.verifies, c.opened, want)
			}
		}
		if reads != wantReads || r.vol.tests != 1 {
			t.Errorf("luks%d recover: %d certificate reads (want %d), key tried %d times (want 1)", version, reads, wantReads, r.vol.tests)
		}

		zero(r)
		r.reset()
		r.insert(0, 1, 2, 3, 4)
		if _, err := Rollcall(context.Background(), r.env, RollcallOptions{}); err != nil {
			t.Fatal(err)
		}
		for i, c := range r.cards[:5] {
			if c.reads != 1 || c.verifies != 1 || c.opened != 1 {
				t.Errorf("luks%d rollcall: card %d: %d reads, %d pin verifications, %d ecdh, want 1 each", version, i, c.reads, c.verifies, c.opened)
			}
		}
		if r.vol.tests != 0 {
			t.Errorf("luks%d rollcall tried a key %d times", version, r.vol.tests)
		}

		// Rotate 3 of 5 to cards 1-5, authorised by cards 0, 1, 2: each
		// old card one pin to authorise, each new card one to write; the
		// recovered key is tried once to prove it, once more as the
		// authority for the new keyslot, and once to prove the old
		// keyslot before it is killed.
		zero(r)
		r.reset()
		r.insert(0, 1, 2, 1, 2, 3, 4, 5)
		if _, err := Rotate(context.Background(), r.env, RotateOptions{WipeWait: time.Millisecond}); err != nil {
			t.Fatalf("rotate: %v\n%s", err, r.p.transcript())
		}
		for i, c := range r.cards {
			want := map[int]int{0: 1, 1: 2, 2: 2, 3: 1, 4: 1, 5: 1}[i]
			if c.verifies != want {
				t.Errorf("luks%d rotate: card %d: %d pin verifications, want %d", version, i, c.verifies, want)
			}
		}
		// (The third run repeats the first on the same keyslot: it could
		// be spared.)
		if r.vol.tests != 3 {
			t.Errorf("luks%d rotate: key tried %d times, want 3", version, r.vol.tests)
		}
	}
}
