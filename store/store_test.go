package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestOpenCreatesFileAndDirectoryPrivately(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "custos")
	path := filepath.Join(dir, "custos.db")
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkConsistent(t, l) })
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only custos.db (no temporary file left)", len(entries))
	}
	h, err := l.Head()
	if err != nil || h.Seq != 1 {
		t.Fatalf("head of a new log = %v, %v; want event 1 (log.created)", h, err)
	}
	var first Event
	if err := l.Events("", func(ev Event) error { first = ev; return nil }); err != nil {
		t.Fatal(err)
	}
	if first.Type != TypeCreated || first.Prev != (Hash{}) || first.Hash != h.Hash {
		t.Errorf("first event = %+v", first)
	}
	if l.db.NoSync || l.db.NoFreelistSync || l.db.NoGrowSync {
		t.Error("the log is opened without full syncing")
	}
	if DefaultPath != "/var/lib/custos/custos.db" {
		t.Errorf("DefaultPath = %q", DefaultPath)
	}
}

func TestOpenRefusesNonLogFiles(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	data := bytes.Repeat([]byte("not a database "), 1000)
	if err := os.WriteFile(junk, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(junk, nil); !errors.Is(err, ErrNotLog) || !strings.Contains(err.Error(), junk) {
		t.Errorf("open junk: %v, want ErrNotLog naming the file", err)
	}
	if got, _ := os.ReadFile(junk); !bytes.Equal(got, data) {
		t.Error("open changed a file that is not a log")
	}
	// A bbolt file of something else.
	other := filepath.Join(dir, "other.db")
	db, err := bolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err })
	db.Close()
	checkFileStructureAtCleanup(t, other)
	if _, err := Open(other, nil); !errors.Is(err, ErrNotLog) {
		t.Errorf("open foreign bbolt file: %v, want ErrNotLog", err)
	}
	if _, err := Open(dir, nil); !errors.Is(err, ErrNotLog) {
		t.Errorf("open a directory: %v, want ErrNotLog", err)
	}
}

func TestCeremonyIndexes(t *testing.T) {
	l := openTest(t)
	const vol = "3f6c1c2e-8f0e-4a57-9d4a-0d8b7c5f1e21"
	rec := sampleCeremony("c1", vol, 2, 3)
	head := fillCeremony(t, l, rec)
	if h, _ := l.Head(); h != head {
		t.Fatalf("Update returned head %v, log head %v", head, h)
	}
	got, err := l.Ceremony("c1")
	if err != nil {
		t.Fatal(err)
	}
	want := activate(rec, 1)
	if gj, wj := mustJSON(got), mustJSON(want); !bytes.Equal(gj, wj) {
		t.Errorf("Ceremony = %s\nwant %s", gj, wj)
	}
	vc, err := l.VolumeCeremony(vol)
	if err != nil || vc.ID != "c1" {
		t.Errorf("VolumeCeremony = %v, %v", vc.ID, err)
	}
	for _, c := range rec.Cards {
		card, err := l.Card(c.Serial)
		if err != nil {
			t.Fatal(err)
		}
		if card.Custodian != c.Custodian || len(card.Keys) != 1 || card.Keys[0].Fingerprint != c.Fingerprint || card.Ceremonies[0] != "c1" {
			t.Errorf("Card(%s) = %+v", c.Serial, card)
		}
		byFP, err := l.CardByFingerprint(c.Fingerprint)
		if err != nil || byFP.Serial != c.Serial {
			t.Errorf("CardByFingerprint(%s) = %v, %v", c.Fingerprint, byFP.Serial, err)
		}
	}

	// Rotation: c2 replaces c1; both active for a moment, then c1 retired.
	rec2 := sampleCeremony("c2", vol, 3, 4)
	rec2.Replaces = "c1"
	fillCeremony(t, l, rec2)
	if vc, _ := l.VolumeCeremony(vol); vc.ID != "c2" {
		t.Errorf("after rotation current = %s, want c2", vc.ID)
	}
	retired := want
	retired.Status, retired.ReplacedBy = StatusRetired, "c2"
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("operator", retired); return err }); err != nil {
		t.Fatal(err)
	}
	v, err := l.Volume(vol)
	if err != nil || v.Current != "c2" || strings.Join(v.History, ",") != "c1,c2" {
		t.Errorf("Volume = %+v, %v", v, err)
	}
	// Retiring the current one too leaves no active ceremony.
	r2 := activate(rec2, 1)
	r2.Status = StatusRetired
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("operator", r2); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := l.VolumeCeremony(vol); !errors.Is(err, ErrNotFound) {
		t.Errorf("VolumeCeremony with none active: %v, want ErrNotFound", err)
	}
	for _, lookup := range []func() error{
		func() error { _, err := l.Ceremony("nope"); return err },
		func() error { _, err := l.Volume("nope"); return err },
		func() error { _, err := l.Card("nope"); return err },
		func() error { _, err := l.CardByFingerprint("nope"); return err },
		func() error { return l.Events("nope", func(Event) error { return nil }) },
	} {
		if err := lookup(); !errors.Is(err, ErrNotFound) {
			t.Errorf("lookup of a missing key: %v, want ErrNotFound", err)
		}
	}
}

func TestCardRegistrationAndRollcall(t *testing.T) {
	l := openTest(t)
	rec := sampleCeremony("c1", "vol-1", 2, 2)
	card := rec.Cards[0]
	att := []byte("attestation certificate DER")
	if _, err := l.Update(func(tx *Tx) error {
		_, err := tx.RegisterCard("operator", "", CardRegistration{Serial: card.Serial, Custodian: card.Custodian, Slot: card.Slot, Fingerprint: card.Fingerprint, Attestation: att})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	fillCeremony(t, l, rec)
	c, err := l.Card(card.Serial)
	if err != nil || !bytes.Equal(c.Keys[0].Attestation, att) || !c.LastRollcall.IsZero() {
		t.Fatalf("Card = %+v, %v", c, err)
	}
	// A failed rollcall does not count; a good one sets the time.
	if _, err := l.RecordRollcall("custodian", Rollcall{Ceremony: "c1", Serial: card.Serial, Fingerprint: card.Fingerprint, OK: false, Reason: "wrong pin"}); err != nil {
		t.Fatal(err)
	}
	if c, _ := l.Card(card.Serial); !c.LastRollcall.IsZero() {
		t.Errorf("failed rollcall set LastRollcall %v", c.LastRollcall)
	}
	var evTime Head
	evTime, err = l.RecordRollcall("custodian", Rollcall{Ceremony: "c1", Serial: card.Serial, Fingerprint: card.Fingerprint, OK: true})
	if err != nil {
		t.Fatal(err)
	}
	var last Event
	l.Events("", func(ev Event) error { last = ev; return nil })
	c, _ = l.Card(card.Serial)
	if last.Seq != evTime.Seq || !c.LastRollcall.Equal(last.Time) || c.LastRollcallCeremony != "c1" {
		t.Errorf("after rollcall: card %+v, event %+v", c, last)
	}
	// Re-keying the slot: the old fingerprint no longer finds the card.
	newFP := fp("new key")
	if _, err := l.Update(func(tx *Tx) error {
		_, err := tx.RegisterCard("operator", "", CardRegistration{Serial: card.Serial, Custodian: "New Custodian", Slot: card.Slot, Fingerprint: newFP})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.CardByFingerprint(card.Fingerprint); !errors.Is(err, ErrNotFound) {
		t.Errorf("old fingerprint after re-key: %v, want ErrNotFound", err)
	}
	if c, err := l.CardByFingerprint(newFP); err != nil || c.Custodian != "New Custodian" || len(c.Keys) != 1 {
		t.Errorf("new fingerprint: %+v, %v", c, err)
	}
}

func TestBadInputIsRefusedAndLosesNothing(t *testing.T) {
	l := openTest(t)
	fillCeremony(t, l, sampleCeremony("c1", "vol-1", 2, 3))
	before, _ := l.Head()
	var dump bytes.Buffer
	l.ExportJSONL(&dump, "")

	good := sampleCeremony("c2", "vol-1", 2, 3)
	mod := func(f func(*CeremonyRecord)) CeremonyRecord {
		r := sampleCeremony("c2", "vol-1", 2, 3)
		f(&r)
		return r
	}
	for name, write := range map[string]func(*Tx) error{
		"k below 2": func(tx *Tx) error {
			_, err := tx.PutCeremony("op", mod(func(r *CeremonyRecord) { r.K = 1 }))
			return err
		},
		"k above n": func(tx *Tx) error {
			_, err := tx.PutCeremony("op", mod(func(r *CeremonyRecord) { r.K = 4 }))
			return err
		},
		"n above 255": func(tx *Tx) error {
			_, err := tx.PutCeremony("op", mod(func(r *CeremonyRecord) { r.N = 256 }))
			return err
		},
		"bad id": func(tx *Tx) error {
			_, err := tx.PutCeremony("op", mod(func(r *CeremonyRecord) { r.ID = "a b" }))
			return err
		},
		"unknown status": func(tx *Tx) error {
			_, err := tx.PutCeremony("op", mod(func(r *CeremonyRecord) { r.Status = "done" }))
			return err
		},
		"duplicate index": func(tx *Tx) error {
			_, err := tx.PutCeremony("op", mod(func(r *CeremonyRecord) { r.Cards[1].Index = 1 }))
			return err
		},
		"card twice": func(tx *Tx) error {
			_, err := tx.PutCeremony("op", mod(func(r *CeremonyRecord) { r.Cards[1].Serial = r.Cards[0].Serial }))
			return err
		},
		"active without shares": func(tx *Tx) error {
			_, err := tx.PutCeremony("op", mod(func(r *CeremonyRecord) { r.Status = StatusActive }))
			return err
		},
		"key of another card": func(tx *Tx) error {
			c1, _ := l.Ceremony("c1")
			_, err := tx.PutCeremony("op", mod(func(r *CeremonyRecord) { r.Cards[0].Fingerprint = c1.Cards[1].Fingerprint }))
			return err
		},
		"change k": func(tx *Tx) error {
			r := activate(sampleCeremony("c1", "vol-1", 3, 3), 1)
			_, err := tx.PutCeremony("op", r)
			return err
		},
		"active back to open": func(tx *Tx) error {
			_, err := tx.PutCeremony("op", sampleCeremony("c1", "vol-1", 2, 3))
			return err
		},
		"replaces unknown": func(tx *Tx) error {
			_, err := tx.PutCeremony("op", mod(func(r *CeremonyRecord) { r.Replaces = "nope" }))
			return err
		},
		"empty actor":      func(tx *Tx) error { _, err := tx.PutCeremony("", good); return err },
		"control in actor": func(tx *Tx) error { _, err := tx.PutCeremony("a\x1bb", good); return err },
		"reserved type": func(tx *Tx) error {
			_, err := tx.Append(Event{Actor: "a", Type: TypeCeremony, Body: mustJSON(good)})
			return err
		},
		"log type":        func(tx *Tx) error { _, err := tx.Append(Event{Actor: "a", Type: "log.created"}); return err },
		"bad type":        func(tx *Tx) error { _, err := tx.Append(Event{Actor: "a", Type: "Step One"}); return err },
		"body not object": func(tx *Tx) error { _, err := tx.Append(Event{Actor: "a", Type: "x", Body: []byte(`[1]`)}); return err },
		"body not json":   func(tx *Tx) error { _, err := tx.Append(Event{Actor: "a", Type: "x", Body: []byte(`{`)}); return err },
		"unknown ceremony rollcall": func(tx *Tx) error {
			_, err := tx.RecordRollcall("a", Rollcall{Ceremony: "zz", Serial: "1", Fingerprint: "f", OK: true})
			return err
		},
		"rollcall of a card not in the ceremony": func(tx *Tx) error {
			if _, err := tx.RegisterCard("a", "", CardRegistration{Serial: "999", Custodian: "x", Slot: "82", Fingerprint: "f999"}); err != nil {
				return fmt.Errorf("setup: %v", err) // not ErrInvalid: the check below fails
			}
			_, err := tx.RecordRollcall("a", Rollcall{Ceremony: "c1", Serial: "999", Fingerprint: "f999", OK: true})
			return err
		},
	} {
		_, err := l.Update(func(tx *Tx) error {
			// a valid event first: it must be rolled back with the bad one
			if _, err := tx.Append(Event{Actor: "op", Type: "test.before"}); err != nil {
				return err
			}
			return write(tx)
		})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
		if err != nil && (strings.ToLower(err.Error()[:1]) != err.Error()[:1] || strings.HasSuffix(err.Error(), ".")) {
			t.Errorf("%s: message %q is not lowercase without a trailing period", name, err)
		}
	}
	after, _ := l.Head()
	var dump2 bytes.Buffer
	l.ExportJSONL(&dump2, "")
	if after != before || !bytes.Equal(dump.Bytes(), dump2.Bytes()) {
		t.Errorf("refused writes changed the log: head %v -> %v", before, after)
	}
}

func TestUpdateRollsBackOnError(t *testing.T) {
	l := openTest(t)
	before, _ := l.Head()
	boom := errors.New("card removed")
	var inside *Tx
	_, err := l.Update(func(tx *Tx) error {
		inside = tx
		fillCeremonyTx(t, tx, sampleCeremony("c1", "vol", 2, 2))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update: %v, want the closure's error", err)
	}
	if h, _ := l.Head(); h != before {
		t.Errorf("head moved to %v after a failed update", h)
	}
	if _, err := l.Ceremony("c1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ceremony of a failed update is visible: %v", err)
	}
	if _, err := inside.Append(Event{Actor: "a", Type: "late"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Tx used after Update: %v, want ErrClosed", err)
	}
}

func fillCeremonyTx(t testing.TB, tx *Tx, rec CeremonyRecord) {
	t.Helper()
	if _, err := tx.PutCeremony("op", rec); err != nil {
		t.Fatal(err)
	}
}

func TestFailpointsAbortWithoutLoss(t *testing.T) {
	for _, fpName := range []string{fpUpdateBegin, fpUpdateTailChecked, fpAppendIndexed, fpAppendEventPut, fpUpdateBeforeCommit} {
		t.Run(fpName, func(t *testing.T) {
			l := openTest(t)
			fillCeremony(t, l, sampleCeremony("c1", "vol", 2, 2))
			before, _ := l.Head()
			boom := errors.New("injected")
			failpoint = func(name string) error {
				if name == fpName {
					return boom
				}
				return nil
			}
			defer func() { failpoint = nil }()
			_, err := l.Update(func(tx *Tx) error {
				rec := sampleCeremony("c2", "vol", 2, 2)
				_, err := tx.PutCeremony("op", rec)
				return err
			})
			failpoint = nil
			if !errors.Is(err, boom) {
				t.Fatalf("Update: %v, want the injected error", err)
			}
			if h, _ := l.Head(); h != before {
				t.Errorf("head moved %v -> %v", before, h)
			}
			if _, err := l.Ceremony("c2"); !errors.Is(err, ErrNotFound) {
				t.Errorf("aborted ceremony visible: %v", err)
			}
			// The log still takes writes.
			fillCeremony(t, l, sampleCeremony("c3", "vol", 2, 2))
		})
	}
	t.Run(fpUpdateCommitted, func(t *testing.T) {
		l := openTest(t)
		failpoint = func(name string) error {
			if name == fpUpdateCommitted {
				return errors.New("injected")
			}
			return nil
		}
		defer func() { failpoint = nil }()
		_, err := l.Append(Event{Actor: "a", Type: "x"})
		failpoint = nil
		if err == nil {
			t.Fatal("want the injected error")
		}
		// Committed but not acknowledged: present, and the log is sound.
		if h, _ := l.Head(); h.Seq != 2 {
			t.Errorf("head %v, want event 2 present", h)
		}
	})
}

func TestCreateFailureLeavesNoFile(t *testing.T) {
	for _, fpName := range []string{fpCreateInitialized, fpCreateLinked} {
		t.Run(fpName, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "custos.db")
			failpoint = func(name string) error {
				if name == fpName {
					return errors.New("injected")
				}
				return nil
			}
			_, err := Open(path, nil)
			failpoint = nil
			if err == nil {
				t.Fatal("want the injected error")
			}
			entries, _ := os.ReadDir(dir)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			switch fpName {
			case fpCreateInitialized: // nothing at all
				if len(names) != 0 {
					t.Errorf("left %v", names)
				}
			case fpCreateLinked: // a whole, checked log (the link is the commit point), no temporary
				if len(names) != 1 || names[0] != "custos.db" {
					t.Errorf("left %v", names)
				}
			}
			l, err := Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { checkConsistent(t, l) })
		})
	}
}

func TestParseHead(t *testing.T) {
	l := openTest(t)
	h := appendN(t, l, 3)
	for _, s := range []string{h.String(), strings.ToUpper(h.String()), fmt.Sprintf(" %d:%s ", h.Seq, groups(h.Hash.String()))} {
		got, err := ParseHead(s)
		if err != nil || got != h {
			t.Errorf("ParseHead(%q) = %v, %v; want %v", s, got, err, h)
		}
	}
	for _, s := range []string{"", "4", "0:" + h.Hash.String(), "x:" + h.Hash.String(), "4:abc", "4:" + strings.Repeat("zz", 32)} {
		if _, err := ParseHead(s); err == nil {
			t.Errorf("ParseHead(%q) accepted", s)
		}
	}
	if rep, err := l.Verify(h); err != nil || rep.Anchors != 1 || rep.Head != h || rep.Events != 4 {
		t.Errorf("Verify(head) = %+v, %v", rep, err)
	}
}

func TestEventsRoundTrip(t *testing.T) {
	l := openTest(t)
	var appended []Event
	_, err := l.Update(func(tx *Tx) error {
		for i, body := range []string{`{}`, `{"a":1}`, `{ "spaced" : [1, 2] }`, `{"html":"<b>&</b>"}`} {
			ev, err := tx.Append(Event{Actor: "Zoë", Type: "test.rt", Ceremony: fmt.Sprintf("c%d", i%2), Body: json.RawMessage(body)})
			if err != nil {
				return err
			}
			appended = append(appended, ev)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var read []Event
	l.Events("", func(ev Event) error {
		if ev.Type == "test.rt" {
			read = append(read, ev)
		}
		return nil
	})
	if len(read) != len(appended) {
		t.Fatalf("read %d events, appended %d", len(read), len(appended))
	}
	for i := range read {
		a, r := appended[i], read[i]
		if a.Seq != r.Seq || !a.Time.Equal(r.Time) || a.Hash != r.Hash || a.Prev != r.Prev || !bytes.Equal(a.Body, r.Body) || a.Actor != r.Actor || a.Ceremony != r.Ceremony {
			t.Errorf("event %d: appended %+v, read %+v", i, a, r)
		}
		if r.Time.Location().String() != "UTC" {
			t.Errorf("time %v not UTC", r.Time)
		}
	}
	var c1 []uint64
	l.Events("c1", func(ev Event) error { c1 = append(c1, ev.Seq); return nil })
	if len(c1) != 2 || c1[0] != appended[1].Seq || c1[1] != appended[3].Seq {
		t.Errorf("events of c1 = %v", c1)
	}
}

// TestCeremonyKeyslotSalt: the keyslot salt is kept as given, a record
// without one encodes as records did before the field existed, and a
// malformed salt is refused without writing anything.
func TestCeremonyKeyslotSalt(t *testing.T) {
	l := openTest(t)
	const vol = "3f6c1c2e-8f0e-4a57-9d4a-0d8b7c5f1e21"
	rec := sampleCeremony("c1", vol, 2, 3)
	if b := mustJSON(rec); bytes.Contains(b, []byte("keyslot_salt")) {
		t.Fatalf("a record without a salt encodes with one: %s", b)
	}
	rec.Keyslot, rec.KeyslotSalt = 1, "00ff"+strings.Repeat("ab", 30)
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("operator", rec); return err }); err != nil {
		t.Fatal(err)
	}
	got, err := l.Ceremony("c1")
	if err != nil || got.KeyslotSalt != rec.KeyslotSalt {
		t.Fatalf("Ceremony = %+v, %v; want salt %s", got, err, rec.KeyslotSalt)
	}
	head, _ := l.Head()
	for name, salt := range map[string]string{
		"upper case": "00FF", "odd": "00f", "not hex": "zz", "too long": strings.Repeat("ab", 257),
	} {
		bad := rec
		bad.KeyslotSalt = salt
		if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("operator", bad); return err }); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s salt %q: %v, want ErrInvalid", name, salt, err)
		}
	}
	noSlot := sampleCeremony("c2", vol, 2, 3)
	noSlot.KeyslotSalt = "00ff"
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("operator", noSlot); return err }); !errors.Is(err, ErrInvalid) {
		t.Errorf("salt without a keyslot: %v, want ErrInvalid", err)
	}
	if h, _ := l.Head(); h != head {
		t.Errorf("refused records moved the head from %v to %v", head, h)
	}
	if _, err := l.Verify(); err != nil {
		t.Errorf("Verify: %v", err)
	}
}
