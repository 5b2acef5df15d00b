package escrow

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"custos.dev/custos/cards"
	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// The fleet through the real stack: pcscd with the vpcd readers, virtual
// cards, cryptsetup on image files, the bbolt log.

// Instructions counted on the virtual cards (SP 800-73-4 Part 2 section
// 3; Yubico's extensions).
const (
	insVerifyPIN   = 0x20
	insGenAuth     = 0x87
	insGetData     = 0xcb
	insGetMetadata = 0xf7
)

// addCardPolicy is addCard with a PIN policy.
func (r *realRig) addCardPolicy(serial uint32, pin, policy string) {
	r.t.Helper()
	vc, err := vcard.NewCard(vcard.Config{Serial: serial, CA: virtualCA(r.t), StatePath: filepath.Join(r.t.TempDir(), "card.json")})
	if err != nil {
		r.t.Fatal(err)
	}
	r.cards = append(r.cards, vc)
	r.pins = append(r.pins, pin)
	r.readers.insert(vc)
	card, err := r.readers.Next(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	defer card.Close()
	r.p.answer(pin, pin, "13579135", "13579135")
	if _, err := InitCard(context.Background(), r.env, card, InitCardOptions{Custodian: fmt.Sprintf("custodian-%d", serial), PINPolicy: policy, Roots: virtualCA(r.t).Pool()}); err != nil {
		r.t.Fatalf("card init: %v", err)
	}
}

// noCards is a card source that must not be used.
type noCards struct{ t testing.TB }

func (n noCards) Next(ctx context.Context) (Card, error) {
	n.t.Error("a card was asked for")
	return nil, errNoMoreCards
}

func counts(cs []*vcard.Card) []vcard.Counts {
	out := make([]vcard.Counts, len(cs))
	for i, c := range cs {
		out[i] = c.Counts()
	}
	return out
}

// TestRealFleet is issue 13's "done when" through the real stack: a set of
// 5 cards is created; 20 LUKS2 images are enrolled 3 of 5 with no card
// inserted (no card receives a command, no card is asked for); one pass
// of 3 cards recovers all 20, each opening with the new key, with the
// APDUs each card took per volume counted; a card is replaced across 5
// volumes, after which the old card's shares of them open nothing.
func TestRealFleet(t *testing.T) {
	r := newRealRig(t, 2, 4)
	r.addCardPolicy(5004, "246804", "once") // card 4: PIN policy once
	r.addCardPolicy(5005, "246805", "always")
	// The set: cards 0-4.
	r.insert(0, 1, 2, 3, 4)
	var specs []SetCardSpec
	for _, c := range r.cards[:5] {
		specs = append(specs, SetCardSpec{Serial: fmt.Sprint(c.Serial())})
	}
	set, err := CreateSet(r.ctx(), r.env, SetCreateOptions{Name: "dc1", Cards: specs, K: 3})
	if err != nil {
		t.Fatalf("set create: %v\n%s", err, r.p.transcript())
	}
	// Its file verifies on another machine (another log), attestations
	// and all, against the virtual CA.
	_, file, err := ExportSet(r.env, "dc1", 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := store.Open(filepath.Join(t.TempDir(), "other.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := ImportSet(r.ctx(), &Env{Log: other, Prompt: r.p, Roots: r.env.Roots}, file, FingerprintGroups(set.Fingerprint)); err != nil {
		t.Fatalf("import: %v", err)
	}
	// Without the virtual CA among the roots, its attestations do not
	// verify: refused, naming the first card.
	third, err := store.Open(filepath.Join(t.TempDir(), "third.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if _, err := ImportSet(r.ctx(), &Env{Log: third, Prompt: r.p}, file, FingerprintGroups(set.Fingerprint)); !errors.Is(err, ErrUnattested) || !errors.Is(err, cards.ErrAttestation) {
		t.Fatalf("import without the roots: %v", err)
	}

	// 20 images enrolled, no card present.
	const nvol = 20
	var fleet []FleetVolume
	var vols []*luks.Volume
	for i := range nvol {
		v := formatImage(t, 2, []byte(operatorKey))
		vols = append(vols, v)
		fleet = append(fleet, FleetVolume{Device: fmt.Sprintf("vol%02d.img", i), Volume: v, AuthKey: []byte(operatorKey)})
	}
	before := counts(r.cards)
	cardsEnv := *r.env
	cardsEnv.Cards = noCards{t}
	enr, err := EnrollSet(r.ctx(), &cardsEnv, EnrollSetOptions{Set: "dc1", Volumes: fleet})
	if err != nil {
		t.Fatalf("enroll --set: %v\n%s", err, r.p.transcript())
	}
	after := counts(r.cards)
	for i := range r.cards {
		if after[i] != before[i] {
			t.Fatalf("card %d received %d commands during the enrollment", i, after[i].APDUs-before[i].APDUs)
		}
	}
	for i, vr := range enr.Volumes {
		if !vr.OK() || vr.TokenID < 0 || vr.Ceremony.K != 3 || vr.Ceremony.N != 5 {
			t.Fatalf("volume %d: %+v", i, vr)
		}
	}

	// One pass of cards 1, 4, 2 recovers all 20.
	r.reset()
	r.insert(1, 4, 2)
	before = counts(r.cards)
	rec, err := RecoverMany(r.ctx(), r.env, RecoverManyOptions{Volumes: fleet, NewKey: []byte("fleet recovered")})
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, r.p.transcript())
	}
	after = counts(r.cards)
	for i, rv := range rec.Volumes {
		if !rv.OK() || rv.Result.Source != "token 0+log" {
			t.Fatalf("volume %d: %+v %v", i, rv.Result, rv.Err)
		}
		if s, err := vols[i].FindKeyslot(r.ctx(), []byte("fleet recovered")); err != nil || s != rv.Result.NewKeyslot {
			t.Fatalf("volume %d: the new key: %d %v", i, s, err)
		}
	}
	for _, i := range []int{1, 4, 2} {
		d := after[i].APDUs - before[i].APDUs
		ins := func(b byte) uint64 { return after[i].Instructions[b] - before[i].Instructions[b] }
		wantVerify := uint64(nvol)
		if i == 4 {
			wantVerify = 1 // policy once: verified for the whole pass
		}
		if ins(insGenAuth) != nvol || ins(insVerifyPIN) != wantVerify || ins(insGetMetadata) != 1 || ins(insGetData) != 0 {
			t.Errorf("card %d: %d GENERAL AUTHENTICATE, %d VERIFY, %d GET METADATA, %d GET DATA; want %d, %d, 1, 0",
				i, ins(insGenAuth), ins(insVerifyPIN), ins(insGetMetadata), ins(insGetData), nvol, wantVerify)
		}
		t.Logf("card %d (pin policy %s): %d APDUs for %d volumes: %.2f per volume", i, map[bool]string{true: "once", false: "always"}[i == 4], d, nvol, float64(d)/nvol)
	}
	if len(r.p.prompts) == 0 {
		t.Fatal("no prompts")
	}

	// Card 0 is replaced by card 5 across 5 volumes; cards 1, 2, 3
	// authorise.
	r.reset()
	r.p.prompts = nil
	r.insert(5, 1, 2, 3)
	rot, err := RotateSet(r.ctx(), r.env, RotateSetOptions{Set: "dc1", Old: "5000", New: "5005", Volumes: fleet[:5]})
	if err != nil {
		t.Fatalf("rotate --set: %v\n%s", err, r.p.transcript())
	}
	if len(r.p.prompts) != 4 {
		t.Fatalf("prompts %q: want one pin per card", r.p.prompts)
	}
	for i, rv := range rot.Volumes {
		if rv.Err != nil || !rv.Result.OldKilled || rv.Result.New.Set.Version != 2 {
			t.Fatalf("volume %d: %+v %v", i, rv.Result, rv.Err)
		}
		if h, _ := vols[i].Inspect(r.ctx()); h.InUse(rv.Result.Old.Keyslot) {
			t.Fatalf("volume %d: the old keyslot %d lives", i, rv.Result.Old.Keyslot)
		}
	}
	// The old card's shares of those volumes, with two others', combine
	// to keys that open nothing.
	r.reset()
	r.insert(0, 1, 2)
	var olds []*Record
	for _, rv := range rot.Volumes {
		olds = append(olds, rv.Result.Old)
	}
	keys := r.openAndCombine(olds, 0, 1, 2)
	for i, key := range keys {
		if s, err := vols[i].FindKeyslot(r.ctx(), key); err == nil {
			t.Fatalf("volume %d: the retired shares of card 5000 still open keyslot %d", i, s)
		}
		shares.Wipe(key)
	}
	// The new set's cards recover them.
	r.reset()
	r.insert(5, 3, 2)
	rec, err = RecoverMany(r.ctx(), r.env, RecoverManyOptions{Volumes: fleet[:5], NewKey: []byte("after the replacement")})
	if err != nil {
		t.Fatalf("recover with the new set: %v\n%s", err, r.p.transcript())
	}
	// And the set's rollcall hears every card of version 2.
	r.reset()
	r.insert(5, 1, 2, 3, 4)
	if _, err := RollcallSet(r.ctx(), r.env, SetRollcallOptions{Set: "dc1"}); err != nil {
		t.Fatalf("rollcall --set: %v\n%s", err, r.p.transcript())
	}
	rep, err := SetStatus(r.ctx(), r.env, "dc1")
	if err != nil || len(rep.Volumes) != nvol || len(rep.Problems) != 0 {
		t.Fatalf("set status: %v %+v", err, rep)
	}
}

// openAndCombine has each card (by position, as inserted) open its share
// of each record through the real readers, and combines each record's
// shares: what anyone holding the cards and PINs can do.
func (r *realRig) openAndCombine(recs []*Record, idx ...int) [][]byte {
	r.t.Helper()
	got := make([][]*shares.Share, len(recs))
	for _, i := range idx {
		card, err := r.readers.Next(r.ctx())
		if err != nil {
			r.t.Fatal(err)
		}
		serial := serialOf(card)
		for j, rec := range recs {
			for _, e := range rec.Cards {
				if e.Serial != serial {
					continue
				}
				sealed, err := shares.ParseSealedShare(e.Sealed)
				if err != nil {
					r.t.Fatal(err)
				}
				sh, err := card.OpenShare(e.Slot, []byte(r.pins[i]), sealed)
				if err != nil {
					r.t.Fatalf("card %s: %v", serial, err)
				}
				got[j] = append(got[j], sh)
			}
		}
		card.Close()
	}
	var out [][]byte
	for j, rec := range recs {
		secret, _, err := ceremonyOf(rec).Combine(got[j])
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, shares.EncodeRecoveryKey(secret))
	}
	return out
}
