package store

import (
	"bytes"
	"encoding/hex"
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
	boltOnly(t)
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
	boltOnly(t)
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
	vol := volOf("v")
	rec := sampleCeremony("c1", "v", 2, 3)
	head := fillCeremony(t, l, rec)
	if h, _ := l.Head(); h != head {
		t.Fatalf("Update returned head %v, log head %v", head, h)
	}
	got, err := l.Ceremony(idOf("c1"))
	if err != nil {
		t.Fatal(err)
	}
	want := complete(rec)
	if d := Compare(got.Record, want); len(d) != 0 || len(got.Record.Cards) != 3 || got.Status != StatusActive || got.Record.Version != 2 {
		t.Errorf("Ceremony = %s %+v, differs from the record written: %v", got.Status, got.Record, d)
	}
	if got.First != 2 || got.Last != head.Seq || got.ReplacedBy != "" {
		t.Errorf("Ceremony: first %d last %d replaced by %q; want 2, %d, none", got.First, got.Last, got.ReplacedBy, head.Seq)
	}
	vc, err := l.VolumeCeremony(vol)
	if err != nil || vc.Record.IDString() != idOf("c1") {
		t.Errorf("VolumeCeremony = %v, %v", vc.Record, err)
	}
	if vc, err := l.VolumeCeremony(strings.ToUpper(vol)); err != nil || vc.Record.IDString() != idOf("c1") {
		t.Errorf("VolumeCeremony of the upper-case uuid = %v, %v", vc.Record, err)
	}
	for _, c := range want.Cards {
		card, err := l.Card(c.Serial)
		if err != nil {
			t.Fatal(err)
		}
		if card.Custodian != c.Custodian || len(card.Keys) != 1 || card.Keys[0].Fingerprint != hex.EncodeToString(c.Key[:]) ||
			card.Keys[0].Slot != fmt.Sprintf("%02x", c.Slot) || card.Ceremonies[0] != idOf("c1") {
			t.Errorf("Card(%s) = %+v", c.Serial, card)
		}
		byFP, err := l.CardByFingerprint(hex.EncodeToString(c.Key[:]))
		if err != nil || byFP.Serial != c.Serial {
			t.Errorf("CardByFingerprint(%x) = %v, %v", c.Key, byFP.Serial, err)
		}
	}

	// Rotation: c2 replaces c1; both active for a moment, then c1 retired.
	rec2 := sampleCeremony("c2", "v", 3, 4)
	rec2.Keyslot = 2
	rec2.Replaces = rec.ID
	fillCeremony(t, l, rec2)
	if vc, _ := l.VolumeCeremony(vol); vc.Record.IDString() != idOf("c2") {
		t.Errorf("after rotation current = %s, want c2", vc.Record.IDString())
	}
	if st, _ := l.Ceremony(idOf("c1")); st.ReplacedBy != idOf("c2") {
		t.Errorf("c1 replaced by %q, want c2", st.ReplacedBy)
	}
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("operator", StatusRetired, want); return err }); err != nil {
		t.Fatal(err)
	}
	v, err := l.Volume(vol)
	if err != nil || v.Current != idOf("c2") || strings.Join(v.History, ",") != idOf("c1")+","+idOf("c2") {
		t.Errorf("Volume = %+v, %v", v, err)
	}
	all, err := l.VolumeCeremonies(vol)
	if err != nil || len(all) != 2 || all[0].Status != StatusRetired || all[1].Status != StatusActive ||
		all[0].Record.IDString() != idOf("c1") || all[0].ReplacedBy != idOf("c2") || all[1].First <= all[0].First {
		t.Errorf("VolumeCeremonies = %+v, %v", all, err)
	}
	// Retiring the current one too leaves no active ceremony.
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("operator", StatusRetired, complete(rec2)); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := l.VolumeCeremony(vol); !errors.Is(err, ErrNotFound) {
		t.Errorf("VolumeCeremony with none active: %v, want ErrNotFound", err)
	}
	if got, err := l.VolumeCeremonies(volOf("unknown")); got != nil || err != nil {
		t.Errorf("VolumeCeremonies of an unknown volume = %v, %v; want nil, nil", got, err)
	}
	for _, lookup := range []func() error{
		func() error { _, err := l.Ceremony("nope"); return err },
		func() error { _, err := l.Ceremony(idOf("nope")); return err },
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

// An abandoned rotation does not replace anything: ReplacedBy falls back
// to the rotation that did.
func TestReplacedByIgnoresAbandoned(t *testing.T) {
	l := openTest(t)
	old := sampleCeremony("old", "v", 2, 2)
	fillCeremony(t, l, old)
	r1 := sampleCeremony("r1", "v", 2, 2)
	r1.Replaces, r1.Keyslot = old.ID, 2
	r2 := sampleCeremony("r2", "v", 2, 2)
	r2.Replaces, r2.Keyslot = old.ID, 3
	_, err := l.Update(func(tx *Tx) error {
		if _, err := tx.PutCeremony("op", StatusOpen, r1); err != nil {
			return err
		}
		if st, err := tx.Ceremony(idOf("old")); err != nil || st.ReplacedBy != idOf("r1") {
			return fmt.Errorf("inside the transaction: replaced by %q, %v", st.ReplacedBy, err)
		}
		if _, err := tx.PutCeremony("op", StatusOpen, r2); err != nil {
			return err
		}
		_, err := tx.PutCeremony("op", StatusAbandoned, r2)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := l.Ceremony(idOf("old")); st.ReplacedBy != idOf("r1") {
		t.Errorf("replaced by %q, want r1 (r2 was abandoned)", st.ReplacedBy)
	}
}

func TestCardRegistrationAndRollcall(t *testing.T) {
	l := openTest(t)
	rec := sampleCeremony("c1", "v", 2, 2)
	card := testCard(rec, 1)
	cardFP := hex.EncodeToString(card.Key[:])
	att := []byte("attestation certificate DER")
	if _, err := l.Update(func(tx *Tx) error {
		_, err := tx.RegisterCard("operator", "", CardRegistration{Serial: card.Serial, Custodian: card.Custodian, Slot: "82", Fingerprint: cardFP, Attestation: att})
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
	if _, err := l.RecordRollcall("custodian", Rollcall{Ceremony: idOf("c1"), Serial: card.Serial, Fingerprint: cardFP, OK: false, Reason: "wrong pin"}); err != nil {
		t.Fatal(err)
	}
	if c, _ := l.Card(card.Serial); !c.LastRollcall.IsZero() {
		t.Errorf("failed rollcall set LastRollcall %v", c.LastRollcall)
	}
	var evTime Head
	evTime, err = l.RecordRollcall("custodian", Rollcall{Ceremony: idOf("c1"), Serial: card.Serial, Fingerprint: cardFP, OK: true})
	if err != nil {
		t.Fatal(err)
	}
	var last Event
	l.Events("", func(ev Event) error { last = ev; return nil })
	c, _ = l.Card(card.Serial)
	if last.Seq != evTime.Seq || !c.LastRollcall.Equal(last.Time) || c.LastRollcallCeremony != idOf("c1") {
		t.Errorf("after rollcall: card %+v, event %+v", c, last)
	}
	// Re-keying the slot: the old fingerprint no longer finds the card.
	newFP := fp("new key")
	if _, err := l.Update(func(tx *Tx) error {
		_, err := tx.RegisterCard("operator", "", CardRegistration{Serial: card.Serial, Custodian: "New Custodian", Slot: "82", Fingerprint: newFP})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.CardByFingerprint(cardFP); !errors.Is(err, ErrNotFound) {
		t.Errorf("old fingerprint after re-key: %v, want ErrNotFound", err)
	}
	if c, err := l.CardByFingerprint(newFP); err != nil || c.Custodian != "New Custodian" || len(c.Keys) != 1 {
		t.Errorf("new fingerprint: %+v, %v", c, err)
	}
}

func TestBadInputIsRefusedAndLosesNothing(t *testing.T) {
	l := openTest(t)
	c1 := sampleCeremony("c1", "v", 2, 3)
	fillCeremony(t, l, c1)
	before, _ := l.Head()
	var dump bytes.Buffer
	l.ExportJSONL(&dump, "")

	good := sampleCeremony("c2", "v", 2, 3)
	mod := func(f func(*Record)) *Record {
		r := withCards(withSalt(sampleCeremony("c2", "v", 2, 3)), 2)
		f(r)
		return r
	}
	put := func(status string, rec *Record) func(tx *Tx) error {
		return func(tx *Tx) error { _, err := tx.PutCeremony("op", status, rec); return err }
	}
	for name, write := range map[string]func(*Tx) error{
		"k below 2":            put(StatusOpen, mod(func(r *Record) { r.K = 1 })),
		"k above n":            put(StatusOpen, mod(func(r *Record) { r.K = 4 })),
		"n above 255":          put(StatusOpen, mod(func(r *Record) { r.N = 256 })),
		"zero id":              put(StatusOpen, mod(func(r *Record) { r.ID = [16]byte{} })),
		"keyslot 32":           put(StatusOpen, mod(func(r *Record) { r.Keyslot = 32 })),
		"keyslot -1":           put(StatusOpen, mod(func(r *Record) { r.Keyslot = -1 })),
		"no digest":            put(StatusOpen, mod(func(r *Record) { r.Digest = [32]byte{} })),
		"unknown status":       put("done", good),
		"no record":            put(StatusOpen, nil),
		"duplicate index":      put(StatusOpen, mod(func(r *Record) { r.Cards[1].Index = 1 })),
		"card twice":           put(StatusOpen, mod(func(r *Record) { r.Cards[1].Serial = r.Cards[0].Serial })),
		"key twice":            put(StatusOpen, mod(func(r *Record) { r.Cards[1].Key = r.Cards[0].Key })),
		"slot 0x9a":            put(StatusOpen, mod(func(r *Record) { r.Cards[1].Slot = 0x9a })),
		"custodian control":    put(StatusOpen, mod(func(r *Record) { r.Cards[1].Custodian = "a\x1bb" })),
		"custodian bidi":       put(StatusOpen, mod(func(r *Record) { r.Cards[1].Custodian = "a\u202eb" })),
		"short sealed share":   put(StatusOpen, mod(func(r *Record) { r.Cards[1].Sealed = r.Cards[1].Sealed[:100] })),
		"unattested":           put(StatusOpen, mod(func(r *Record) { r.Cards[1].Attestation = [32]byte{} })),
		"active without cards": put(StatusActive, good),
		"key of another card":  put(StatusOpen, mod(func(r *Record) { r.Cards[0].Key = testCard(c1, 2).Key })),
		"change k": put(StatusActive, func() *Record {
			r := complete(c1)
			r.K = 3
			return r
		}()),
		"active back to open": put(StatusOpen, complete(c1)),
		"replaces unknown":    put(StatusOpen, mod(func(r *Record) { r.Replaces = testID("nope") })),
		"replaces itself":     put(StatusOpen, mod(func(r *Record) { r.Replaces = r.ID })),
		"empty actor":         func(tx *Tx) error { _, err := tx.PutCeremony("", StatusOpen, good); return err },
		"control in actor":    func(tx *Tx) error { _, err := tx.PutCeremony("a\x1bb", StatusOpen, good); return err },
		"reserved type": func(tx *Tx) error {
			_, err := tx.Append(Event{Actor: "a", Type: TypeCeremony, Body: []byte(`{}`)})
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
			_, err := tx.RecordRollcall("a", Rollcall{Ceremony: idOf("c1"), Serial: "999", Fingerprint: "f999", OK: true})
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
		if err := fillCeremonyTx(tx, sampleCeremony("c1", "vol", 2, 2)); err != nil {
			t.Fatal(err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update: %v, want the closure's error", err)
	}
	if h, _ := l.Head(); h != before {
		t.Errorf("head moved to %v after a failed update", h)
	}
	if _, err := l.Ceremony(idOf("c1")); !errors.Is(err, ErrNotFound) {
		t.Errorf("ceremony of a failed update is visible: %v", err)
	}
	if _, err := inside.Append(Event{Actor: "a", Type: "late"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Tx used after Update: %v, want ErrClosed", err)
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
				_, err := tx.PutCeremony("op", StatusOpen, sampleCeremony("c2", "vol", 2, 2))
				return err
			})
			failpoint = nil
			if !errors.Is(err, boom) {
				t.Fatalf("Update: %v, want the injected error", err)
			}
			if h, _ := l.Head(); h != before {
				t.Errorf("head moved %v -> %v", before, h)
			}
			if _, err := l.Ceremony(idOf("c2")); !errors.Is(err, ErrNotFound) {
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
	boltOnly(t)
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
