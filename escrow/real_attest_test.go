package escrow

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"custos.dev/custos/cards"
	"custos.dev/custos/cards/vcard"
)

// TestRealSlotKeyReplaced: after an enrollment through the real stack, a
// custodian's slot key is replaced by another tool (a key generated anew,
// then an imported one). The record names the attested key, so recover
// and rollcall set the card aside before its custodian is asked for the
// PIN, and the card is sent no VERIFY; the other cards recover.
func TestRealSlotKeyReplaced(t *testing.T) {
	r := newRealRig(t, 2, 3)
	rec := r.enroll(2, 3).Ceremony
	// Every card of the ceremony attested, and the log alone says so.
	for _, c := range rec.Cards {
		if c.Attestation == ([32]byte{}) {
			t.Fatalf("card %s recorded without attestation", c.Serial)
		}
	}
	if rep, err := VerifyAttestations(r.env); err != nil || rep.Cards != 3 || len(rep.Chains) != 6 {
		t.Fatalf("VerifyAttestations = %+v, %v", rep, err)
	}
	slot := rec.Cards[0].Slot
	for _, imported := range []bool{false, true} {
		if _, err := r.cards[0].PutKey(slot, vcard.PINPolicyAlways, vcard.TouchPolicyNever, imported); err != nil {
			t.Fatal(err)
		}
		verifies := r.cards[0].Counts().Instructions[0x20]

		r.reset()
		r.p.prompts = nil
		r.readers.insert(r.cards[0], r.cards[1], r.cards[2])
		r.p.answer(r.pins[1], r.pins[2])
		rr, err := Recover(r.ctx(), r.env, RecoverOptions{NewKey: []byte(fmt.Sprintf("after replacement %v", imported))})
		if err != nil || len(rr.Cards) != 3 || !errors.Is(rr.Cards[0].Err, cards.ErrWrongCard) || !rr.Cards[1].OK() || !rr.Cards[2].OK() {
			t.Fatalf("imported %v: recover: %v %+v\n%s", imported, err, rr, r.p.transcript())
		}
		r.opens(fmt.Sprintf("after replacement %v", imported))

		r.reset()
		r.readers.insert(r.cards[0], r.cards[1], r.cards[2])
		r.p.answer(r.pins[1], r.pins[2])
		rc, err := Rollcall(r.ctx(), r.env, RollcallOptions{})
		if rc == nil || len(rc.Cards) != 3 || !errors.Is(rc.Cards[0].Err, cards.ErrWrongCard) || !rc.Cards[1].OK() || !rc.Cards[2].OK() {
			t.Fatalf("imported %v: rollcall: %v %+v\n%s", imported, err, rc, r.p.transcript())
		}
		if slices.ContainsFunc(r.p.prompts, func(p string) bool { return strings.Contains(p, "card 5000") }) {
			t.Errorf("imported %v: the custodian of the card whose key was replaced was asked for the PIN: %q", imported, r.p.prompts)
		}
		if n := r.cards[0].Counts().Instructions[0x20] - verifies; n != 0 {
			t.Errorf("imported %v: the card whose key was replaced was sent %d VERIFY", imported, n)
		}
	}
	st, err := Status(r.ctx(), r.env)
	if err != nil || st.Cards[0].LastRollcall.IsZero() || st.Cards[0].LastOK || st.Live != 2 {
		t.Fatalf("status after the failed rollcall: %v %+v", err, st)
	}
}

// TestRealFirmwareMatrix runs a ceremony through escrow on virtual cards
// of each firmware custos meets: card init, enroll 2-of-4 and two
// recoveries, one by the two cards without GET METADATA (4.3.7, a YubiKey
// 4; 5.2.7, 3DES management key), one by the others (5.4.3; 5.7.1, AES-192
// by default). A YubiKey FIPS 4.4.4 is refused at card init. The APDUs
// each card receives at each step are counted (vcard's Counts) and
// logged: the figures of card init, enroll and recover per card; one PIN
// verification per card at enroll and at recover.
func TestRealFirmwareMatrix(t *testing.T) {
	r := newRealRig(t, 2, 0)
	versions := []string{"4.3.7", "5.2.7", "5.4.3", "5.7.1"}
	initAPDUs := map[int]uint64{}
	for i, v := range versions {
		r.addCardVersion(uint32(5100+i), fmt.Sprintf("%06d", 135790+i), v)
		initAPDUs[i] = r.cards[i].Counts().APDUs
	}
	counts := func() []vcard.Counts {
		out := make([]vcard.Counts, len(r.cards))
		for i, c := range r.cards {
			out[i] = c.Counts()
		}
		return out
	}
	before := counts()
	res := r.enroll(2, 4)
	enrolled := counts()
	for i := range versions {
		if res.Attestations[i].Summary == "" || !strings.Contains(res.Attestations[i].Summary, "firmware "+versions[i]) {
			t.Errorf("card %d: attestation %+v", i, res.Attestations[i])
		}
	}

	r.reset()
	rr, err := r.recover("by the older firmware", 0, 1)
	if err != nil || !rr.Cards[0].OK() || !rr.Cards[1].OK() {
		t.Fatalf("recover by 4.3.7 and 5.2.7: %v %+v\n%s", err, rr, r.p.transcript())
	}
	r.opens("by the older firmware")
	recovered := counts()
	r.reset()
	rr, err = r.recover("by the newer firmware", 2, 3)
	if err != nil || !rr.Cards[0].OK() || !rr.Cards[1].OK() {
		t.Fatalf("recover by 5.4.3 and 5.7.1: %v %+v\n%s", err, rr, r.p.transcript())
	}
	r.opens("by the newer firmware")
	recovered2 := counts()

	for i, v := range versions {
		after := recovered
		from := enrolled
		if i >= 2 {
			after, from = recovered2, recovered
		}
		enrollN := enrolled[i].APDUs - before[i].APDUs
		enrollVerify := enrolled[i].Instructions[0x20] - before[i].Instructions[0x20]
		recoverN := after[i].APDUs - from[i].APDUs
		recoverVerify := after[i].Instructions[0x20] - from[i].Instructions[0x20]
		t.Logf("firmware %s: card init %d APDUs, enroll %d APDUs (%d VERIFY), recover %d APDUs (%d VERIFY)",
			v, initAPDUs[i], enrollN, enrollVerify, recoverN, recoverVerify)
		if enrollVerify != 1 || recoverVerify != 1 {
			t.Errorf("firmware %s: %d VERIFY at enroll, %d at recover; want 1 and 1", v, enrollVerify, recoverVerify)
		}
	}
	// The floor of issue 12 holds through escrow on firmware 5.3 and
	// later: SELECT, GET SERIAL, GET METADATA, VERIFY, GENERAL
	// AUTHENTICATE.
	// card init takes 27 (the cards package's own count: InitCard adds
	// nothing).
	for _, i := range []int{2, 3} {
		if n := recovered2[i].APDUs - recovered[i].APDUs; n != 5 {
			t.Errorf("firmware %s: recover sent %d APDUs, want 5", versions[i], n)
		}
		if initAPDUs[i] != 27 {
			t.Errorf("firmware %s: card init sent %d APDUs, want 27", versions[i], initAPDUs[i])
		}
	}

	// A YubiKey FIPS 4.4.4 never becomes a custody card.
	weak, err := vcard.NewCard(vcard.Config{Serial: 5199, Version: "4.4.4", CA: virtualCA(t)})
	if err != nil {
		t.Fatal(err)
	}
	r.readers.insert(weak)
	card, err := r.readers.Next(r.ctx())
	if err != nil {
		t.Fatal(err)
	}
	defer card.Close()
	r.p.answer("975310", "975310", "13579135", "13579135")
	if _, err := InitCard(r.ctx(), r.env, card, InitCardOptions{Custodian: "weak", Roots: virtualCA(t).Pool()}); !errors.Is(err, cards.ErrWeakFirmware) {
		t.Fatalf("card init on firmware 4.4.4 = %v, want ErrWeakFirmware", err)
	}
	if _, err := r.log.Card("5199"); err == nil {
		t.Error("the refused card was registered in the log")
	}
}
