package store

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestLogRules: PutCeremony refuses, naming the rule, each ceremony event
// docs/FORMAT.md section 11 says the log refuses, and keeps nothing of the
// transaction.
func TestLogRules(t *testing.T) {
	l := openTest(t)
	c1 := sampleCeremony("c1", "v", 2, 2) // active, keyslot 1
	fillCeremony(t, l, c1)
	c2 := sampleCeremony("c2", "v", 2, 3) // open with its salt and card 1, keyslot 2
	c2.Keyslot = 2
	open2 := withCards(withSalt(c2), 1)
	c3 := sampleCeremony("c3", "v", 2, 2) // open, no salt yet, keyslot 3
	c3.Keyslot = 3
	ab := sampleCeremony("ab", "w", 2, 2) // abandoned
	other := sampleCeremony("other", "w", 2, 2)
	fillCeremony(t, l, other)
	_, err := l.Update(func(tx *Tx) error {
		for _, p := range []struct {
			status string
			rec    *Record
		}{{StatusOpen, c2}, {StatusOpen, withSalt(c2)}, {StatusOpen, open2}, {StatusOpen, c3}, {StatusOpen, ab}, {StatusAbandoned, ab}} {
			if _, err := tx.PutCeremony("op", p.status, p.rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	a1 := complete(c1)
	mod := func(r *Record, f func(*Record)) *Record {
		r = r.Clone()
		f(r)
		return r
	}
	for _, c := range []struct {
		name, status, rule string
		rec                *Record
	}{
		{"active ceremony moved onto another keyslot, with that keyslot's salt", StatusActive, RuleFrame,
			mod(a1, func(r *Record) { r.Keyslot, r.Salt = open2.Keyslot, open2.Salt })},
		{"keyslot changed", StatusActive, RuleFrame, mod(a1, func(r *Record) { r.Keyslot = 9 })},
		{"keyslot changed before the salt", StatusOpen, RuleFrame, mod(c3, func(r *Record) { r.Keyslot = 9 })},
		{"salt changed", StatusActive, RuleSalt, mod(a1, func(r *Record) { r.Salt = "00" })},
		{"salt removed", StatusOpen, RuleSalt, mod(open2, func(r *Record) { r.Salt = "" })},
		{"volume changed", StatusActive, RuleFrame, mod(a1, func(r *Record) { r.Volume = testVolume("w") })},
		{"n changed", StatusActive, RuleFrame, mod(a1, func(r *Record) { r.N = 3; r.Cards = withCards(r, 3).Cards })},
		{"digest changed", StatusActive, RuleFrame, mod(a1, func(r *Record) { r.Digest[31] ^= 1 })},
		{"replaces added", StatusActive, RuleFrame, mod(a1, func(r *Record) { r.Replaces = other.ID })},
		{"set added", StatusActive, RuleFrame, mod(a1, func(r *Record) { r.Set = &SetRef{Name: "s", Version: 1} })},
		{"allow_unattested added", StatusActive, RuleFrame, mod(a1, func(r *Record) { r.AllowUnattested = true })},
		{"a card's sealed share changed", StatusActive, RuleCards, mod(a1, func(r *Record) {
			r.Cards[1].Sealed = append([]byte(nil), r.Cards[1].Sealed...)
			r.Cards[1].Sealed[140] ^= 1
		})},
		{"a card's custodian changed", StatusOpen, RuleCards, mod(open2, func(r *Record) { r.Cards[0].Custodian = "Mallory" })},
		{"a card's attestation changed", StatusOpen, RuleCards, mod(open2, func(r *Record) { r.Cards[0].Attestation[0] ^= 1 })},
		{"a card removed", StatusRetired, RuleCards, mod(a1, func(r *Record) { r.Cards = r.Cards[:1] })},
		{"a card replaced by another index", StatusOpen, RuleCards, mod(open2, func(r *Record) { r.Cards = []RecordCard{testCard(c2, 2)} })},
		{"active back to open", StatusOpen, RuleStatus, a1},
		{"abandoned reopened", StatusOpen, RuleStatus, ab},
		{"open to retired", StatusRetired, RuleStatus, open2},
		{"active with 1 of 3 cards", StatusActive, RuleComplete, open2},
		{"first record abandoned", StatusAbandoned, RuleFirst, sampleCeremony("new", "v", 2, 2)},
		{"first record retired", StatusRetired, RuleFirst, complete(sampleCeremony("new", "v", 2, 2))},
		{"first record active with no cards", StatusActive, RuleComplete, sampleCeremony("new", "v", 2, 2)},
		{"replaces a ceremony the log does not hold", StatusOpen, RuleReplaces, mod(sampleCeremony("new", "v", 2, 2), func(r *Record) { r.Replaces = testID("nope") })},
		{"replaces a ceremony of another volume", StatusOpen, RuleReplaces, mod(sampleCeremony("new", "v", 2, 2), func(r *Record) { r.Replaces = other.ID })},
	} {
		before, _ := l.Head()
		_, err := l.Update(func(tx *Tx) error {
			if _, err := tx.Append(Event{Actor: "op", Type: "test.before"}); err != nil {
				return err
			}
			_, err := tx.PutCeremony("mallory", c.status, c.rec)
			return err
		})
		var re *RuleError
		if !errors.As(err, &re) || re.Rule != c.rule || !errors.Is(err, ErrInvalid) || re.Ceremony != c.rec.IDString() {
			t.Errorf("%s: %v, want the %s rule", c.name, err, c.rule)
		}
		if after, _ := l.Head(); after != before {
			t.Errorf("%s: the refused transaction moved the head", c.name)
		}
	}
	// What the rules allow: the salt added once, cards added in order,
	// active with all cards, retirement.
	_, err = l.Update(func(tx *Tx) error {
		steps := []struct {
			status string
			rec    *Record
		}{
			{StatusOpen, withSalt(c3)}, {StatusOpen, withCards(withSalt(c3), 1)}, {StatusOpen, withCards(withSalt(c3), 2)},
			{StatusActive, complete(c3)}, {StatusActive, complete(c3)}, {StatusRetired, a1},
			{StatusOpen, withCards(withSalt(c2), 3)}, {StatusAbandoned, withCards(withSalt(c2), 3)},
		}
		for _, s := range steps {
			if _, err := tx.PutCeremony("op", s.status, s.rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The attack of issue 10: one well-chained event that moves the active
// ceremony onto another keyslot, copying that keyslot's salt. PutCeremony
// refuses it; written into the file with bbolt (chained, its stored hash,
// the head and the indexes rewritten), Verify names it.
func TestAttackMoveKeyslot(t *testing.T) {
	boltOnly(t)
	path := filepath.Join(t.TempDir(), "custos.db")
	l, err := open(path, nil, testClock())
	if err != nil {
		t.Fatal(err)
	}
	c1 := sampleCeremony("victim", "v", 2, 2)
	fillCeremony(t, l, c1)
	// A key someone added later, in keyslot 4, whose salt the log knows
	// from another ceremony on the volume that was abandoned.
	spare := sampleCeremony("spare", "v", 2, 2)
	spare.Keyslot = 4
	_, err = l.Update(func(tx *Tx) error {
		if _, err := tx.PutCeremony("op", StatusOpen, withSalt(spare)); err != nil {
			return err
		}
		_, err := tx.PutCeremony("op", StatusAbandoned, withSalt(spare))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	moved := complete(c1)
	moved.Keyslot, moved.Salt = spare.Keyslot, withSalt(spare).Salt
	before, _ := l.Head()
	_, err = l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("mallory", StatusActive, moved); return err })
	if !isRule(err, RuleFrame) || !strings.Contains(err.Error(), "keyslot 1 became 4") {
		t.Fatalf("PutCeremony of the moved record: %v, want the frame rule", err)
	}
	if _, err := l.Verify(); err != nil {
		t.Fatal(err)
	}
	l.Close()

	body, err := encodeCeremonyBody(StatusActive, moved)
	if err != nil {
		t.Fatal(err)
	}
	forged := forgeEvent(t, path, Event{Actor: "mallory", Type: TypeCeremony, Ceremony: moved.IDString(), Body: body})
	if forged.Seq != before.Seq+1 {
		t.Fatalf("forged event %d, head was %d", forged.Seq, before.Seq)
	}
	checkFileStructureAtCleanup(t, path)
	l, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The lookups believe the forged index, as they would any index...
	if st, err := l.Ceremony(moved.IDString()); err != nil || st.Record.Keyslot != 4 {
		t.Fatalf("the forgery did not take: %+v, %v", st, err)
	}
	// ...and Verify replays the events and names the forged one.
	_, err = l.Verify()
	if got := chainErrorSeq(t, err, ErrBrokenChain); got != forged.Seq || !isRule(err, RuleFrame) || !strings.Contains(err.Error(), "keyslot 1 became 4") {
		t.Errorf("Verify: %v, want event %d named with the frame rule", err, forged.Seq)
	}
	// An anchor written before the forgery still checks out, and the
	// token of the forgery's record does not agree with it.
	if err := l.CheckAnchor(before, complete(c1)); err != nil {
		t.Errorf("the victim's own copy: %v", err)
	}
	if err := l.CheckAnchor(before, moved); !errors.Is(err, ErrAnchor) || !strings.Contains(err.Error(), "keyslot, salt") {
		t.Errorf("a copy of the moved record anchored before the forgery: %v", err)
	}
}

func TestCheckAnchor(t *testing.T) {
	l := openTest(t)
	c := sampleCeremony("anchored", "v", 2, 3)
	var afterSalt, afterCard1, afterCard3 Head
	_, err := l.Update(func(tx *Tx) error {
		put := func(status string, r *Record) Head {
			ev, err := tx.PutCeremony("op", status, r)
			if err != nil {
				t.Fatal(err)
			}
			return ev.Head()
		}
		put(StatusOpen, c)
		afterSalt = put(StatusOpen, withSalt(c))
		afterCard1 = put(StatusOpen, withCards(withSalt(c), 1))
		put(StatusOpen, withCards(withSalt(c), 2))
		afterCard3 = put(StatusOpen, complete(c))
		put(StatusActive, complete(c))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 2)
	full := complete(c)
	card := func(i int) *Record {
		r := full.Clone()
		r.Cards = []RecordCard{*full.Card(i)}
		return r
	}
	for _, ok := range []struct {
		name string
		a    Head
		rec  *Record
	}{
		{"open token after the salt", afterSalt, withSalt(c)},
		{"complete token after the last card", afterCard3, full},
		{"certificate of card 1 after the salt", afterSalt, card(1)},
		{"certificate of card 2 after card 1", afterCard1, card(2)},
		{"certificate of card 2 after card 3", afterCard3, card(2)},
	} {
		if err := l.CheckAnchor(ok.a, ok.rec); err != nil {
			t.Errorf("%s: %v", ok.name, err)
		}
	}
	head, _ := l.Head()
	for _, bad := range []struct {
		name, problem string
		a             Head
		rec           *Record
	}{
		{"no anchor", "no anchor", Head{}, full},
		{"beyond the log", "rolled back or truncated", Head{Seq: head.Seq + 1, Hash: head.Hash}, full},
		{"another hash", "rewritten", Head{Seq: afterCard3.Seq, Hash: afterSalt.Hash}, full},
		{"before the ceremony", "holds no record", Head{Seq: 1, Hash: func() Hash {
			var h Head
			l.Events("", func(ev Event) error {
				if ev.Seq == 1 {
					h = ev.Head()
				}
				return nil
			})
			return h.Hash
		}()}, full},
		{"a record without its salt", "salt", afterSalt, c},
		{"a card that differs", "card 1 commitment", afterCard3, func() *Record {
			r := full.Clone()
			r.Cards[0].Commitment[0] ^= 1
			return r
		}()},
		{"another ceremony", "holds no record", afterCard3, complete(sampleCeremony("other", "v", 2, 3))},
	} {
		err := l.CheckAnchor(bad.a, bad.rec)
		var ae *AnchorError
		if !errors.As(err, &ae) || !errors.Is(err, ErrAnchor) || !strings.Contains(err.Error(), bad.problem) || ae.Seq != bad.a.Seq {
			t.Errorf("%s: %v, want an anchor error saying %q", bad.name, err, bad.problem)
		}
	}
	ae := &AnchorError{Copy: "token", Seq: 5, Problem: "x"}
	if ae.Error() != "anchor of the token at event 5: x" {
		t.Errorf("AnchorError message %q", ae)
	}
}
