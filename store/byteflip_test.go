package store

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// flipMasks are the changes tried at each byte: every single bit, all of
// them, and the two that turn one kind of JSON whitespace into another
// (space and line feed, line feed and tab).
var flipMasks = []byte{0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff, 0x2a, 0x03}

// flipLog writes a 2-of-3 enrollment and keeps the copies custos makes of
// it: the complete token (anchored after the last card), card 2's
// certificate extension (anchored after card 1) and the ceremony's events.
type flipLog struct {
	l     *Log
	rec   *Record
	token []byte
	cert  []byte
	lines []string // the whole log's event records
	seq   uint64   // the active record's event
}

func newFlipLog(t *testing.T) *flipLog {
	l := openTest(t)
	c := sampleCeremony("flip", "flip", 2, 3)
	full := complete(c)
	var afterCard1, afterCard3 Head
	var active Event
	_, err := l.Update(func(tx *Tx) error {
		for i, r := range []*Record{c, withSalt(c), withCards(withSalt(c), 1), withCards(withSalt(c), 2), full} {
			ev, err := tx.PutCeremony("operator", StatusOpen, r)
			if err != nil {
				return err
			}
			switch i {
			case 2:
				afterCard1 = ev.Head()
			case 4:
				afterCard3 = ev.Head()
			}
		}
		var err error
		active, err = tx.PutCeremony("operator", StatusActive, full)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 1)
	f := &flipLog{l: l, rec: full, seq: active.Seq}
	if f.token, err = EncodeToken(full, afterCard3); err != nil {
		t.Fatal(err)
	}
	two := full.Clone()
	two.Cards = []RecordCard{*full.Card(2)}
	if f.cert, err = EncodeCardCopy(two, afterCard1); err != nil {
		t.Fatal(err)
	}
	var export bytes.Buffer
	if err := l.ExportJSONL(&export, ""); err != nil {
		t.Fatal(err)
	}
	f.lines = strings.Split(strings.TrimSuffix(export.String(), "\n"), "\n")
	return f
}

// flips calls fn with every single-byte change of b by masks.
func flips(b []byte, masks []byte, fn func(i int, mask byte, changed []byte)) {
	c := bytes.Clone(b)
	for i := range b {
		for _, m := range masks {
			c[i] ^= m
			fn(i, m, c)
			c[i] ^= m
		}
	}
}

// The point of use of a card's copy: its anchor, then its card against
// the log's record of the ceremony as it now stands (docs/FORMAT.md
// section 9: the certificate's anchor comes before its own card).
func (f *flipLog) agreesWithLog(rec *Record) bool {
	st, err := f.l.Ceremony(rec.IDString())
	return err == nil && len(Compare(rec, st.Record)) == 0
}

// TestByteFlipToken: every single-byte change of a real token, compact and
// as luksDump indents it, is rejected by the token's reader (a
// *FormatError naming the token) or by its anchor (an *AnchorError), or it
// reads as exactly the same token.
func TestByteFlipToken(t *testing.T) {
	f := newFlipLog(t)
	want, err := ParseToken(f.token)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.l.CheckAnchor(want.Anchor, want.Record); err != nil {
		t.Fatalf("the genuine token: %v", err)
	}
	// The indented form adds whitespace: its bytes get the masks that turn
	// whitespace into whitespace or into something else.
	for _, form := range []struct {
		name  string
		b     []byte
		masks []byte
	}{{"compact", f.token, flipMasks}, {"indented", []byte(luksDumpIndent(string(f.token))), []byte{0x01, 0x20, 0x2a, 0x03}}} {
		counts := map[string]int{}
		flips(form.b, form.masks, func(i int, m byte, changed []byte) {
			tok, err := ParseToken(changed)
			if err != nil {
				var fe *FormatError
				if !errors.As(err, &fe) || fe.Copy != CopyToken {
					t.Fatalf("%s byte %d ^%#02x: %v is not a token error", form.name, i, m, err)
				}
				counts["rejected by the reader"]++
				return
			}
			if err := f.l.CheckAnchor(tok.Anchor, tok.Record); err != nil {
				if !errors.Is(err, ErrAnchor) {
					t.Fatalf("%s byte %d ^%#02x: %v", form.name, i, m, err)
				}
				counts["rejected by the anchor"]++
				return
			}
			if !reflect.DeepEqual(tok, want) {
				t.Fatalf("%s byte %d ^%#02x: accepted with another value:\n%s", form.name, i, m, changed)
			}
			counts["harmless (the same token)"]++
		})
		t.Logf("token %s, %d bytes, %d changes: %v", form.name, len(form.b), len(form.b)*len(form.masks), counts)
		if form.name == "compact" && counts["harmless (the same token)"] != 0 {
			t.Errorf("a change to the compact token read as the same token")
		}
	}
}

// TestByteFlipCertificate: every single-byte change of a certificate's
// extension is rejected by its reader, its anchor, or its card's
// disagreement with the log's record, or reads as the same copy.
func TestByteFlipCertificate(t *testing.T) {
	f := newFlipLog(t)
	want, err := ParseCardCopy(f.cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.l.CheckAnchor(want.Anchor, want.Record); err != nil || !f.agreesWithLog(want.Record) {
		t.Fatalf("the genuine certificate: %v", err)
	}
	counts := map[string]int{}
	flips(f.cert, flipMasks, func(i int, m byte, changed []byte) {
		cc, err := ParseCardCopy(changed)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Copy != CopyCertificate {
				t.Fatalf("byte %d ^%#02x: %v is not a certificate error", i, m, err)
			}
			counts["rejected by the reader"]++
			return
		}
		if err := f.l.CheckAnchor(cc.Anchor, cc.Record); err != nil {
			counts["rejected by the anchor"]++
			return
		}
		if !f.agreesWithLog(cc.Record) {
			counts["rejected: its card disagrees with the log"]++
			return
		}
		if !reflect.DeepEqual(cc, want) {
			t.Fatalf("byte %d ^%#02x: accepted with another value:\n%s", i, m, changed)
		}
		counts["harmless (the same copy)"]++
	})
	t.Logf("certificate extension, %d bytes, %d changes: %v", len(f.cert), len(f.cert)*len(flipMasks), counts)
	if counts["harmless (the same copy)"] != 0 {
		t.Error("a change to the certificate read as the same copy")
	}
	if counts["rejected: its card disagrees with the log"] == 0 {
		t.Error("no change reached the card's own entry: the test does not test what it says")
	}
}

// TestByteFlipCeremonyEvent: every single-byte change of the active
// ceremony event's record breaks the log at that event: its form, its
// body's form, a rule of the log, or (when the changed event is well
// formed and keeps the rules) its link from the next event, which names
// it.
func TestByteFlipCeremonyEvent(t *testing.T) {
	f := newFlipLog(t)
	lines := make([][]byte, len(f.lines))
	for i, l := range f.lines {
		lines[i] = []byte(l)
	}
	if _, _, err := replayChain(lines); err != nil {
		t.Fatalf("the genuine log: %v", err)
	}
	x := f.seq - 1
	orig := lines[x]
	// The log as it stands before the event, replayed once.
	w0 := newChainWalker(newMemIndexes())
	for _, l := range lines[:x] {
		ev, err := decodeRecord(l)
		if err != nil {
			t.Fatal(err)
		}
		if err := w0.step(ev); err != nil {
			t.Fatal(err)
		}
	}
	next, err := decodeRecord(lines[x+1])
	if err != nil {
		t.Fatal(err)
	}
	// replay steps the changed event and the next one on a copy of w0.
	replay := func(changed []byte) (uint64, error) {
		w := &chainWalker{head: w0.head, ix: newMemIndexes()}
		for b, m := range w0.ix.m {
			for k, v := range m {
				w.ix.m[b][k] = v
			}
		}
		ev, err := decodeRecord(changed)
		if err != nil {
			return f.seq, err
		}
		if err := w.step(ev); err != nil {
			return f.seq, err
		}
		if err := w.step(next); err != nil {
			return f.seq + 1, err
		}
		return 0, nil
	}
	counts := map[string]int{}
	flips(orig, flipMasks, func(i int, m byte, changed []byte) {
		seq, err := replay(changed)
		var fe *FormatError
		var re *RuleError
		switch {
		case err == nil:
			t.Fatalf("byte %d ^%#02x: the log replays", i, m)
		case seq == f.seq && errors.As(err, &fe) && fe.Copy == CopyEvent:
			counts["rejected by the event body's reader"]++
		case seq == f.seq && errors.As(err, &re):
			counts["rejected by a rule of the log ("+re.Rule+")"]++
		case seq == f.seq:
			counts["rejected: not an event record, or not linked to the one before"]++
		case seq == f.seq+1 && strings.Contains(err.Error(), "does not link"):
			counts["rejected: the next event does not link to it"]++
		default:
			t.Fatalf("byte %d ^%#02x: event %d: %v", i, m, seq, err)
		}
	})
	t.Logf("ceremony event %d, %d bytes, %d changes: %v", f.seq, len(orig), len(orig)*len(flipMasks), counts)
}
