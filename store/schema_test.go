package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// The log in testdata/v1/log.db was made by custos at main 467e758 (the
// program is testdata/v1/make_fixtures_test.go.txt): schema 2, version 1
// ceremony bodies, two volumes, a rotation, an abandoned enrollment, a
// rollcall. Its tokens are beside it.
const (
	fixtureV1Log     = "testdata/v1/log.db"
	fixtureRetired   = "4cc0823d2f3245673b86962e7bae4572" // volume 1, enrolled then rotated out
	fixtureRotated   = "54caeacff77b54148725ef2165c37faf" // volume 1, replaces the first
	fixtureAbandoned = "c6988e9bfc8055828ae9ce6982b95207" // volume 2, stopped after its first card
	fixtureActive    = "b7e7488578ded61fa488ac1a8d062f75" // volume 2
	fixtureVolume1   = "1909a27f-3757-317a-6747-457692d94b2a"
	fixtureVolume2   = "7ffe4243-da58-0239-e45d-6b8d2fa64535"
	fixtureEvents    = 27
)

// makeV1 copies the fixture log to path, at schema 2 as it was made, or at
// schema 1 as custos of schema 1 kept the same events: the same buckets
// without the ceremony-events index. It returns the fixture's head.
func makeV1(t *testing.T, path string, schema uint32) Head {
	t.Helper()
	data, err := os.ReadFile(fixtureV1Log)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var head Head
	err = db.Update(func(btx *bolt.Tx) error {
		if v, err := readVersion(btx, path); err != nil || v != 2 {
			return fmt.Errorf("fixture at schema %d (%v), want 2", v, err)
		}
		head, _ = decodeHead(btx.Bucket(bucketMeta).Get(keyHead))
		if schema == 1 {
			if err := btx.DeleteBucket(bucketCeremonyEvents); err != nil {
				return err
			}
			return btx.Bucket(bucketMeta).Put(keySchema, encodeVersion(1))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if head.Seq != fixtureEvents {
		t.Fatalf("fixture head %v, want %d events", head, fixtureEvents)
	}
	return head
}

func TestMigrateV1(t *testing.T) {
	boltOnly(t)
	for _, schema := range []uint32{1, 2} {
		t.Run(fmt.Sprintf("schema %d", schema), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "custos.db")
			v1Head := makeV1(t, path, schema)
			l, err := Open(path, nil)
			if err != nil {
				t.Fatalf("open a schema %d log: %v", schema, err)
			}
			t.Cleanup(func() { checkConsistent(t, l) })
			rep, err := l.Verify(v1Head) // the old head is still in the log
			if err != nil {
				t.Fatal(err)
			}
			var last Event
			l.Events("", func(ev Event) error { last = ev; return nil })
			if last.Type != TypeMigrated || string(last.Body) != fmt.Sprintf(`{"from":%d,"to":3}`, schema) || rep.Head.Seq != v1Head.Seq+1 {
				t.Errorf("last event %s %s, head %v", last.Type, last.Body, rep.Head)
			}
			var seqs []uint64
			if err := l.Events(fixtureRetired, func(ev Event) error { seqs = append(seqs, ev.Seq); return nil }); err != nil ||
				fmt.Sprint(seqs) != "[2 3 4 5 6 7 13 15]" {
				t.Errorf("events of the first ceremony after migration: %v, %v", seqs, err)
			}
			l.db.View(func(btx *bolt.Tx) error {
				if v, _ := readVersion(btx, path); v != schemaVersion {
					t.Errorf("schema %d after migration", v)
				}
				return nil
			})
			// A second open does not migrate again.
			l.Close()
			l, _ = Open(path, nil)
			if h, _ := l.Head(); h != rep.Head {
				t.Errorf("reopening moved the head: %v -> %v", rep.Head, h)
			}
		})
	}
}

// TestFixtureLogReads: the log made by the custos of version 1 records
// opens, migrates, verifies, and reads as it was written; its tokens'
// anchors are good; and after the migration it takes version 2 records and
// no more version 1 ones.
func TestFixtureLogReads(t *testing.T) {
	boltOnly(t)
	path := filepath.Join(t.TempDir(), "custos.db")
	v1Head := makeV1(t, path, 2)
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkConsistent(t, l) })
	if _, err := l.Verify(v1Head); err != nil {
		t.Fatal(err)
	}
	// The export holds the version 1 events as they were written.
	var export bytes.Buffer
	if err := l.ExportJSONL(&export, ""); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(export.String(), "\n"), "\n")
	if len(lines) != fixtureEvents+1 || Hash(sha256.Sum256([]byte(lines[fixtureEvents-1]))) != v1Head.Hash ||
		!strings.Contains(lines[1], `"body":{"id":"`+fixtureRetired+`"`) {
		t.Errorf("export of the migrated log: %d lines", len(lines))
	}
	for _, c := range []struct {
		id, status, replacedBy string
		first, last            uint64
		cards                  int
	}{
		{fixtureRetired, StatusRetired, fixtureRotated, 2, 13, 3},
		{fixtureRotated, StatusActive, "", 8, 14, 3},
		{fixtureAbandoned, StatusAbandoned, "", 18, 21, 1},
		{fixtureActive, StatusActive, "", 22, 26, 2},
	} {
		st, err := l.Ceremony(c.id)
		if err != nil {
			t.Fatal(err)
		}
		r := st.Record
		if st.Status != c.status || st.ReplacedBy != c.replacedBy || st.First != c.first || st.Last != c.last ||
			len(r.Cards) != c.cards || r.Version != 1 || r.IDString() != c.id || r.Salt == "" || r.Keyslot < 1 || !r.AllowUnattested {
			t.Errorf("ceremony %s: %s replaced by %q, events %d-%d, %d cards, version %d", c.id, st.Status, st.ReplacedBy, st.First, st.Last, len(r.Cards), r.Version)
		}
	}
	st, _ := l.Ceremony(fixtureRotated)
	if st.Record.ReplacesString() != fixtureRetired || st.Record.Cards[0].Custodian != "Bob & Sons <ops>" || st.Record.Cards[2].Custodian != "" {
		t.Errorf("rotated ceremony: replaces %s, custodians %q %q", st.Record.ReplacesString(), st.Record.Cards[0].Custodian, st.Record.Cards[2].Custodian)
	}
	for vol, want := range map[string][]string{
		fixtureVolume1: {fixtureRetired, fixtureRotated},
		fixtureVolume2: {fixtureAbandoned, fixtureActive},
	} {
		all, err := l.VolumeCeremonies(vol)
		if err != nil || len(all) != 2 || all[0].Record.IDString() != want[0] || all[1].Record.IDString() != want[1] {
			t.Errorf("VolumeCeremonies(%s) = %v, %v", vol, all, err)
		}
		if cur, err := l.VolumeCeremony(vol); err != nil || cur.Record.IDString() != want[1] {
			t.Errorf("VolumeCeremony(%s) = %v, %v", vol, cur.Record, err)
		}
	}
	card, err := l.CardByFingerprint("cd7400df0810c0f480ef48dabd6556c8d4529e70a9d30b46497f771f70f795de")
	if err != nil || card.Serial != "1002" || card.Custodian != "Zoë" || len(card.Ceremonies) != 2 || card.LastRollcallCeremony != fixtureRotated {
		t.Errorf("card 1002: %+v, %v", card, err)
	}
	// The version 1 tokens made with the log: their anchors are good.
	for _, name := range []string{"token-enrolled.json", "token-enrolled-luksdump.json", "token-rotated.json", "token-unnamed.json"} {
		b, err := os.ReadFile("testdata/v1/" + name)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := ParseToken(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := l.CheckAnchor(tok.Anchor, tok.Record); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	var transcript bytes.Buffer
	if err := l.Transcript(&transcript, fixtureRotated); err != nil || !strings.Contains(transcript.String(), "Bob ? Sons ?ops?") /* section 13 filter */ ||
		!strings.Contains(transcript.String(), "Replaces            "+fixtureRetired) {
		t.Errorf("transcript of a version 1 ceremony: %v\n%s", err, transcript.String())
	}

	// Rollcall rewrites the ceremony as version 2: same frame, same cards.
	up := st.Record.Clone()
	up.Version = RecordVersion
	up.Cards[0].Custodian = "Bob and Sons" // the version 1 name breaks the text rule of version 2
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("op", StatusActive, up); return err }); !isRule(err, RuleCards) {
		t.Errorf("a version 2 record that renames a custodian: %v, want the cards rule", err)
	}
	up.Cards[0].Custodian = st.Record.Cards[0].Custodian
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("op", StatusActive, up); return err }); !errors.Is(err, ErrInvalid) {
		t.Errorf("a version 2 record with a custodian outside the text rule: %v", err)
	}
	fixed, _ := l.Ceremony(fixtureActive) // its cards have no custodian names
	up = fixed.Record.Clone()
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("op", StatusActive, up); return err }); err != nil {
		t.Fatalf("version 2 record of a version 1 ceremony: %v", err)
	}
	after, _ := l.Ceremony(fixtureActive)
	if after.Record.Version != 2 || len(Compare(after.Record, fixed.Record)) != 0 || after.First != 22 {
		t.Errorf("after the upgrade: version %d, differences %v", after.Record.Version, Compare(after.Record, fixed.Record))
	}
	moved := up.Clone()
	moved.Keyslot = 5
	if _, err := l.Update(func(tx *Tx) error { _, err := tx.PutCeremony("op", StatusActive, moved); return err }); !isRule(err, RuleFrame) {
		t.Errorf("moving the upgraded ceremony's keyslot: %v, want the frame rule", err)
	}

	// A version 1 body written behind custos's back after the migration
	// is refused by Verify.
	var body []byte
	l.Events(fixtureActive, func(ev Event) error {
		if ev.Type == TypeCeremony && isV1Body(ev.Body) {
			body = ev.Body
		}
		return nil
	})
	l.Close()
	forgedPath := filepath.Join(t.TempDir(), "forged.db")
	copyFile(t, path, forgedPath)
	forged := forgeEvent(t, forgedPath, Event{Actor: "mallory", Type: TypeCeremony, Ceremony: fixtureActive, Body: body})
	lf, err := Open(forgedPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	checkFileStructureAtCleanup(t, forgedPath)
	_, err = lf.Verify()
	if got := chainErrorSeq(t, err, ErrBrokenChain); got != forged.Seq || !strings.Contains(err.Error(), "version 1 record") {
		t.Errorf("Verify of a version 1 body after the migration: %v", err)
	}
}

// isRule reports whether err is a *RuleError of the rule.
func isRule(err error, rule string) bool {
	var re *RuleError
	return errors.As(err, &re) && re.Rule == rule && errors.Is(err, ErrInvalid)
}

func TestMigrationRefusesBrokenChain(t *testing.T) {
	boltOnly(t)
	path := filepath.Join(t.TempDir(), "custos.db")
	makeV1(t, path, 1)
	checkFileStructureAtCleanup(t, path)
	db, _ := bolt.Open(path, 0o600, nil)
	db.Update(func(btx *bolt.Tx) error {
		b := btx.Bucket(bucketEvents)
		v := append([]byte{}, b.Get(seqKey(3))...)
		v[40] ^= 1
		return b.Put(seqKey(3), v)
	})
	db.Close()
	_, err := Open(path, nil)
	if got := chainErrorSeq(t, err, ErrBrokenChain); got != 3 || !strings.Contains(err.Error(), "migrate") {
		t.Errorf("open of a broken v1 log: %v", err)
	}
	db, _ = bolt.Open(path, 0o600, nil)
	defer db.Close()
	db.View(func(btx *bolt.Tx) error {
		if v, _ := readVersion(btx, path); v != 1 {
			t.Errorf("schema %d after a refused migration, want 1", v)
		}
		if btx.Bucket(bucketCeremonyEvents) != nil {
			t.Error("a refused migration left its bucket")
		}
		return nil
	})
}

func TestMigrationCrashKeepsV1(t *testing.T) {
	boltOnly(t)
	path := filepath.Join(t.TempDir(), "custos.db")
	v1Head := makeV1(t, path, 1)
	cmd := child(t, "open", path, childCrashAt+"="+fpMigrateStep+":1")
	cmd.Run()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(btx *bolt.Tx) error {
		if v, _ := readVersion(btx, path); v != 1 {
			t.Errorf("schema %d after a crash mid-migration, want 1", v)
		}
		return nil
	})
	db.Close()
	l, err := Open(path, nil) // migrates now
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Verify(v1Head); err != nil {
		t.Error(err)
	}
	t.Cleanup(func() { checkConsistent(t, l) })
}

func TestNewerSchemaRefused(t *testing.T) {
	boltOnly(t)
	path := filepath.Join(t.TempDir(), "custos.db")
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.db.Update(func(btx *bolt.Tx) error { return btx.Bucket(bucketMeta).Put(keySchema, encodeVersion(schemaVersion+1)) })
	l.Close()
	checkFileStructureAtCleanup(t, path)
	before, _ := readFile(path)
	_, err = Open(path, nil)
	var se *SchemaError
	if !errors.As(err, &se) || !errors.Is(err, ErrNewerSchema) || se.Found != schemaVersion+1 || se.Supported != schemaVersion {
		t.Fatalf("open of a newer log: %v", err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "newer") {
		t.Errorf("message %q", err)
	}
	after, _ := readFile(path)
	if !bytes.Equal(before, after) {
		t.Error("a refused open changed the file")
	}
}

func TestEveryMigrationIsListed(t *testing.T) {
	if len(migrations) != int(schemaVersion)-1 {
		t.Fatalf("%d migrations for schema %d", len(migrations), schemaVersion)
	}
	for i, m := range migrations {
		if m.from != uint32(i+1) || m.run == nil || m.what == "" {
			t.Errorf("migration %d: %+v", i, m)
		}
		if _, ok := layouts[m.from]; !ok {
			t.Errorf("no layout for schema %d", m.from)
		}
	}
	if len(layouts[schemaVersion]) != 2+len(indexBuckets) {
		t.Errorf("layout of schema %d does not hold every index bucket", schemaVersion)
	}
}
