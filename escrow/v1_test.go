package escrow

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"custos.dev/custos/luks"
	"custos.dev/custos/store"
)

// The version 1 fixtures of package store: a log written by custos before
// the version 2 record, and LUKS2 tokens of version 1 anchored in it.
type v1Fixture struct {
	volume, ceremony string
	keyslot          int
	salt             string // the keyslot's salt, which the log recorded
	token            string
	n                int
}

var (
	// Volume 1: enrolled, then rotated to ceremony 54caeacf... on keyslot
	// 2; its custodians' names ("Bob & Sons <ops>") break the version 2
	// text rule.
	v1Named = v1Fixture{"1909a27f-3757-317a-6747-457692d94b2a", "54caeacff77b54148725ef2165c37faf", 2,
		"73a6adfceeb1e8de90d42105fbdbd4e6cac07d2eacbd1410574fa3290711aa10", "token-rotated.json", 3}
	// Volume 2: an enrollment undone, then ceremony b7e74885... (2 of 2,
	// custodians unnamed) on keyslot 1.
	v1Unnamed = v1Fixture{"7ffe4243-da58-0239-e45d-6b8d2fa64535", "b7e7488578ded61fa488ac1a8d062f75", 1,
		"00b5ba90fb0444db4040947908a225ac8bcd51a7d8f09ca5815253c3fc509123", "token-unnamed.json", 2}
)

const v1Key = "the version 1 ceremony's recovery key"

// v1Rig is a LUKS2 volume carrying a version 1 ceremony: the fixture log
// (migrated on open), the fixture token bound to the ceremony's keyslot,
// and that keyslot holding a key with the salt the log recorded. The
// keyslots below it hold a colleague's key.
func v1Rig(t *testing.T, f v1Fixture) *rig {
	r := newRig(t, 2, 4)
	b, err := os.ReadFile(filepath.Join("..", "store", "testdata", "v1", "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	r.replaceLog(b)
	tok, err := os.ReadFile(filepath.Join("..", "store", "testdata", "v1", f.token))
	if err != nil {
		t.Fatal(err)
	}
	r.vol.mu.Lock()
	r.vol.uuid = f.volume
	r.vol.mu.Unlock()
	for s := 1; s < f.keyslot; s++ {
		r.addKey(colleagueKey)
	}
	r.vol.mu.Lock()
	r.vol.slots[f.keyslot], r.vol.salts[f.keyslot] = []byte(v1Key), f.salt
	r.vol.mu.Unlock()
	r.vol.setToken(0, luks.TokenType, []int{f.keyslot}, tok)
	return r
}

// newCards queues cards 1.. for a new ceremony of n cards.
func (r *rig) newCards(n int) {
	for i := 1; i <= n; i++ {
		r.insert(i)
	}
}

func TestV1CeremonyStatus(t *testing.T) {
	for _, f := range []v1Fixture{v1Named, v1Unnamed} {
		r := v1Rig(t, f)
		st := r.status()
		if st.Ceremony == nil || idText(st.Ceremony.ID) != f.ceremony || !st.Confirmed || st.Ceremony.Version != 1 || !st.KeyslotInUse {
			t.Fatalf("status %v", st)
		}
		if len(st.Outdated) == 0 {
			t.Fatalf("no copy named as in the version 1 format; notes %q", st.Notes)
		}
	}
}

// A version 1 ceremony rotated with a key file: the token and the log
// agree on it (the token is still bound to its keyslot, which the log
// names with the salt it recorded and the keyslot still has), so the old
// keyslot is killed and the new ceremony is written in version 2.
func TestV1CeremonyRotatedWithKeyFile(t *testing.T) {
	f := v1Unnamed
	r := v1Rig(t, f)
	r.newCards(f.n)
	res, err := Rotate(context.Background(), r.env, RotateOptions{AuthKey: []byte(operatorKey)})
	if err != nil {
		t.Fatalf("rotate: %v\n%s", err, r.p.transcript())
	}
	if !res.OldKilled || r.vol.inUse(f.keyslot) || idText(res.Old.ID) != f.ceremony || res.New.Version != 2 {
		t.Fatalf("result %+v\n%s", res, r.p.transcript())
	}
	_, tok := r.vol.custosToken(t)
	if tok.Record.Version != 2 || tok.Record.ID != res.New.ID || r.custosTokens() != 1 {
		t.Fatalf("token after rotate: %+v", tok.Record)
	}
	st := r.status()
	if !st.Confirmed || len(st.Problems) != 0 || st.Ceremony.ID != res.New.ID {
		t.Fatalf("status %v", st)
	}
}

// The same, but the ceremony's keyslot was killed outside custos
// (cryptsetup unbound the token from it) and the operator added a key of
// their own under its number; whoever can write the log then copies that
// key's salt into the version 1 record. The token holds no salt: its
// binding to the keyslot is all it can say, and it no longer says it. So
// the log alone names the salt, and rotate --key-file never kills the key.
// (TestV1TokenNotUpgradedOnTheLogsWord: nor after a rollcall.)
func TestV1CeremonyKeyslotReusedAndLogForged(t *testing.T) {
	f := v1Unnamed
	r := v1Rig(t, f)
	r.vol.mu.Lock()
	delete(r.vol.slots, f.keyslot)
	delete(r.vol.salts, f.keyslot)
	tk := r.vol.tokens[0]
	tk.Keyslots = nil
	tk.JSON = []byte(strings.Replace(string(tk.JSON), fmt.Sprintf(`"keyslots":["%d"]`, f.keyslot), `"keyslots":[]`, 1))
	r.vol.tokens[0] = tk
	r.vol.mu.Unlock()
	own := r.addKey(ownKey)
	if own != f.keyslot {
		t.Fatalf("own key in keyslot %d", own)
	}
	forged := r.logState(mustID(t, f.ceremony)).Record.Clone()
	forged.Salt = r.header().Keyslot(own).Salt
	r.forgeV1Salt(forged)
	r.newCards(f.n)
	res, err := Rotate(context.Background(), r.env, RotateOptions{AuthKey: []byte(operatorKey)})
	r.opensWith(ownKey, own)
	if res != nil && res.OldKilled || !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "no longer bound to keyslot") {
		t.Fatalf("rotate: %v\n%s", err, r.p.transcript())
	}
}

func mustID(t *testing.T, s string) [16]byte {
	t.Helper()
	id, err := store.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// The laundering the rollcall would do, on a volume whose token is of
// version 1 and whose cards answer: the recovery keyslot was killed
// outside custos, the operator's key took its number, and the log's salt
// was forged to that key's. The rollcall must not write the log's salt
// into a version 2 token (bound to the keyslot, it would be a second copy
// agreeing with the first), and rotate --key-file then kills nothing.
func TestV1TokenNotUpgradedOnTheLogsWord(t *testing.T) {
	r := newRig(t, 2, 4)
	rec := r.enroll(2, 3).Ceremony
	id, _ := r.vol.custosToken(t)
	r.vol.setToken(id, luks.TokenType, []int{rec.Keyslot}, v1Token(rec, "alice"))
	r.vol.mu.Lock()
	delete(r.vol.slots, rec.Keyslot)
	delete(r.vol.salts, rec.Keyslot)
	tk := r.vol.tokens[id]
	tk.Keyslots = nil
	tk.JSON = []byte(strings.Replace(string(tk.JSON), fmt.Sprintf(`"keyslots":["%d"]`, rec.Keyslot), `"keyslots":[]`, 1))
	r.vol.tokens[id] = tk
	r.vol.mu.Unlock()
	own := r.addKey(ownKey)
	if own != rec.Keyslot {
		t.Fatalf("own key in keyslot %d", own)
	}
	forged := rec.Clone()
	forged.Salt = r.header().Keyslot(own).Salt
	r.forgeCeremony(StatusActive, forged)

	r.insert(0, 1, 2)
	res, err := Rollcall(context.Background(), r.env, RollcallOptions{})
	if err != nil || len(res.Upgraded) != 0 || !strings.Contains(strings.Join(res.Problems, "\n"), "upgrading token 0") {
		t.Fatalf("rollcall: %v %+v", err, res)
	}
	if _, tok := r.vol.custosToken(t); tok.Record.Version != 1 {
		t.Fatalf("the token was upgraded with the log's salt")
	}
	r.reset()
	r.insert(1, 2, 3)
	rot, err := Rotate(context.Background(), r.env, RotateOptions{AuthKey: []byte(operatorKey)})
	r.opensWith(ownKey, own)
	if rot != nil && rot.OldKilled || !errors.Is(err, ErrVerification) {
		t.Fatalf("rotate: %v\n%s", err, r.p.transcript())
	}
}
