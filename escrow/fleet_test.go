package escrow

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"strings"
	"testing"

	"custos.dev/custos/cards"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// The fleet on fakes: custodian sets, enrollment to a set without cards,
// one pass of cards over many volumes, the set's rollcall and status, and
// a card replaced across the fleet, each with its refusals.

// fleetRig is a rig with many volumes.
type fleetRig struct {
	*rig
	vols []*fakeVolume
}

func newFleetRig(t *testing.T, ncards, nvols int) *fleetRig {
	r := &fleetRig{rig: newRig(t, 2, ncards)}
	for range nvols {
		r.vols = append(r.vols, newFakeVolume(t, 2, operatorKey))
	}
	return r
}

func (r *fleetRig) fleet(vols ...*fakeVolume) []FleetVolume {
	if len(vols) == 0 {
		vols = r.vols
	}
	var out []FleetVolume
	for i, v := range vols {
		out = append(out, FleetVolume{Device: fmt.Sprintf("/dev/fleet%d", i), Volume: v, AuthKey: []byte(operatorKey)})
	}
	return out
}

func (r *fleetRig) specs(idx ...int) []SetCardSpec {
	var out []SetCardSpec
	for _, i := range idx {
		out = append(out, SetCardSpec{Serial: serialText(r.cards[i].serial)})
	}
	return out
}

// createSet makes set "fleet" of the first n cards, k of them.
func (r *fleetRig) createSet(n, k int) *SetResult {
	r.t.Helper()
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	r.insert(idx...)
	res, err := CreateSet(context.Background(), r.env, SetCreateOptions{Name: "fleet", Cards: r.specs(idx...), K: k,
		Custodians: []string{"alice", "bob", "carol", "dave", "erin"}[:min(n, 5)]})
	if err != nil {
		r.t.Fatalf("set create: %v\n%s", err, r.p.transcript())
	}
	return res
}

func (r *fleetRig) enrollSet(k int, vols ...*fakeVolume) *EnrollSetResult {
	r.t.Helper()
	res, err := EnrollSet(context.Background(), r.env, EnrollSetOptions{Set: "fleet", K: k, Volumes: r.fleet(vols...)})
	if err != nil {
		r.t.Fatalf("enroll --set: %v\n%s", err, r.p.transcript())
	}
	return res
}

// counters sums the fake cards' counters.
func (r *fleetRig) counters() (verifies, opened, reads int) {
	for _, c := range r.cards {
		verifies += c.verifies
		opened += c.opened
		reads += c.reads
	}
	return
}

func (r *fleetRig) zero() {
	for _, c := range r.cards {
		c.verifies, c.opened, c.reads = 0, 0, 0
	}
	for _, v := range r.vols {
		v.adds, v.tests = 0, 0
	}
	r.src.taken = 0
	r.p.prompts = nil
}

func TestSetCreate(t *testing.T) {
	r := newFleetRig(t, 7, 0)
	r.cards[6].attest = attestNoPIN
	// Card 5 is not in the set: set aside before any PIN is asked. Card 1
	// first gets a wrong PIN, then its own. Card 6 cannot be in a set: its
	// key may be used without the PIN.
	r.src.insert(r.cards[5], r.cards[0], r.cards[1])
	r.p.answer(r.pin(0), "000000", r.pin(1))
	r.insert(2, 3)
	r.src.insert(r.cards[6])
	r.p.answer(r.pin(6))
	r.insert(4)
	specs := r.specs(0, 1, 2, 3, 4)
	specs = append(specs[:4], SetCardSpec{Serial: serialText(r.cards[6].serial)}, specs[4])
	// The set has six cards, card 6 among them: it never proves, so the
	// ceremony runs out of cards and logs nothing.
	_, err := CreateSet(context.Background(), r.env, SetCreateOptions{Name: "fleet", Cards: specs, K: 3})
	if err == nil || !strings.Contains(err.Error(), "cards not proven: "+serialText(r.cards[6].serial)) {
		t.Fatalf("set create with a card that cannot prove: %v\n%s", err, r.p.transcript())
	}
	if _, err := r.log.Set("fleet"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed set create logged: %v", err)
	}
	tr := r.p.transcript()
	for _, want := range []string{
		"card 1005: set aside: card is not in the custodian set fleet",
		"wrong pin for card 1001",
		"card 1006: set aside: card attestation: verification failed: the key's pin policy lets it be used without the pin",
	} {
		if !strings.Contains(tr, want) {
			t.Errorf("transcript lacks %q\n%s", want, tr)
		}
	}
	if strings.Contains(tr, "? pin for card 1005") {
		t.Errorf("a pin was asked for a card not in the set\n%s", tr)
	}

	r.reset()
	r.zero()
	res := r.createSet(5, 3)
	s := res.Set
	if s.Version != 1 || s.K != 3 || len(s.Cards) != 5 || s.Cards[1].Custodian != "bob" {
		t.Fatalf("set %+v", s)
	}
	for i, c := range s.Cards {
		si, _ := r.cards[i].Custody()
		if c.Serial != serialText(r.cards[i].serial) || c.Key != [32]byte(si[0].Fingerprint) || c.Attestation == nil {
			t.Errorf("card %d: %+v", i, c)
		}
		if r.cards[i].verifies != 1 || r.cards[i].opened != 1 {
			t.Errorf("card %d: %d pin verifications, %d ecdh; want one each (the challenge)", i, r.cards[i].verifies, r.cards[i].opened)
		}
	}
	if len(r.p.prompts) != 5 {
		t.Errorf("prompts %q: want one pin per card", r.p.prompts)
	}
	st, err := r.log.Set("fleet")
	if err != nil || st.Fingerprint != res.Fingerprint {
		t.Fatalf("logged set: %v", err)
	}
	fp, _ := s.Fingerprint()
	if fp != res.Fingerprint {
		t.Fatal("fingerprint is not the set's")
	}
	// A second set of the same name is refused before any card.
	r.reset()
	taken := r.src.taken
	if _, err := CreateSet(context.Background(), r.env, SetCreateOptions{Name: "fleet", Cards: r.specs(0, 1), K: 2}); !errors.Is(err, ErrSetExists) || r.src.taken != taken {
		t.Fatalf("set create twice: %v", err)
	}
	for _, bad := range []SetCreateOptions{
		{Name: "Fleet", Cards: r.specs(0, 1), K: 2},
		{Name: "x", Cards: r.specs(0), K: 2},
		{Name: "x", Cards: r.specs(0, 1), K: 3},
		{Name: "x", Cards: []SetCardSpec{{Serial: "01"}, {Serial: "2"}}, K: 2},
		{Name: "x", Cards: r.specs(0, 0), K: 2},
	} {
		if _, err := CreateSet(context.Background(), r.env, bad); !errors.Is(err, ErrUsage) {
			t.Errorf("set create %+v: %v", bad, err)
		}
	}
}

func TestSetImportExport(t *testing.T) {
	r := newFleetRig(t, 5, 0)
	res := r.createSet(5, 3)
	st, file, err := ExportSet(r.env, "fleet", 0)
	if err != nil || st.Fingerprint != res.Fingerprint || file[len(file)-1] != '\n' {
		t.Fatalf("export: %v", err)
	}
	fp := FingerprintGroups(res.Fingerprint)

	// Another machine: a log of its own.
	other := newFleetRig(t, 0, 0)
	other.rig.cards = r.cards // the same cards' keys, for the fake verifier
	env := other.env

	changed := bytes.Replace(file, []byte(`"k":3`), []byte(`"k":2`), 1)
	if _, err := ImportSet(context.Background(), env, changed, fp); !failedCheck(err) || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("a set file with a changed byte: %v", err)
	}
	if _, err := ImportSet(context.Background(), env, file, strings.Repeat("ab", 32)); !failedCheck(err) {
		t.Fatalf("a wrong fingerprint: %v", err)
	}
	if _, err := ImportSet(context.Background(), env, file, "12"); !errors.Is(err, ErrUsage) {
		t.Fatalf("a malformed fingerprint: %v", err)
	}
	broken := bytes.Replace(file, []byte(`"custos_set":1`), []byte(`"custos_set": 1`), 1)
	var fe *store.FormatError
	if _, err := ImportSet(context.Background(), env, broken, fp); !errors.As(err, &fe) || fe.Path != "custos_set" {
		t.Fatalf("a malformed set file: %v", err)
	}
	// An attestation that does not verify, in a file whose fingerprint
	// its maker supplies alongside: refused, naming the card.
	forged := res.Set.Clone()
	forged.Cards[2].Attestation = []byte("a chain of nobody's")
	ff, _ := forged.EncodeFile()
	ffp, _ := forged.Fingerprint()
	if _, err := ImportSet(context.Background(), env, ff, FingerprintGroups(ffp)); !errors.Is(err, ErrUnattested) || !strings.Contains(err.Error(), "card 1002") {
		t.Fatalf("a forged attestation: %v", err)
	}
	// An attestation of another card's key.
	swapped := res.Set.Clone()
	swapped.Cards[1].Attestation = res.Set.Cards[0].Attestation
	sf, _ := swapped.EncodeFile()
	sfp, _ := swapped.Fingerprint()
	if _, err := ImportSet(context.Background(), env, sf, FingerprintGroups(sfp)); !errors.Is(err, ErrUnattested) || !strings.Contains(err.Error(), "card 1001") {
		t.Fatalf("another card's attestation: %v", err)
	}
	if _, err := other.log.Set("fleet"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("a refused set was logged")
	}

	got, err := ImportSet(context.Background(), env, file, strings.ToUpper(fp))
	if err != nil || !got.Imported || got.Fingerprint != res.Fingerprint {
		t.Fatalf("import: %v", err)
	}
	again, err := ImportSet(context.Background(), env, file, fp)
	if err != nil || again.Imported {
		t.Fatalf("import again: %v %+v", err, again)
	}
	// Version 2 before version 1 on a third machine: refused with the way
	// forward.
	v2 := res.Set.Clone()
	v2.Version, v2.Previous = 2, res.Fingerprint
	f2, _ := v2.EncodeFile()
	fp2, _ := v2.Fingerprint()
	third := newFleetRig(t, 0, 0)
	third.rig.cards = r.cards
	if _, err := ImportSet(context.Background(), third.env, f2, FingerprintGroups(fp2)); !isSetRule(err) {
		t.Fatalf("version 2 first: %v", err)
	}
}

// A volume that is not LUKS2, one whose keyslot cannot be added, one
// already enrolled and one whose key is wrong fail, named; the others are
// enrolled — and no card was touched.
func TestEnrollSet(t *testing.T) {
	r := newFleetRig(t, 5, 6)
	r.createSet(5, 3)
	r.zero()
	luks1 := newFakeVolume(t, 1, operatorKey)
	failing := r.vols[2]
	failing.failAdd = errors.New("cryptsetup: no space left on device")
	fleet := r.fleet(r.vols...)
	fleet = append(fleet[:3], append([]FleetVolume{{Device: "/dev/luks1", Volume: luks1, AuthKey: []byte(operatorKey)},
		{Device: "/dev/notluks", Err: errors.New("open volume: not a block device or regular file")},
		{Device: "/dev/wrongkey", Volume: newFakeVolume(t, 2, "another key"), AuthKey: []byte(operatorKey)}}, fleet[3:]...)...)
	var progress []string
	res, err := EnrollSet(context.Background(), r.env, EnrollSetOptions{Set: "fleet", Volumes: fleet,
		Progress: func(done, total int, dev string) {
			progress = append(progress, fmt.Sprintf("%d/%d %s", done, total, dev))
		}})
	var fe *FleetError
	if !errors.As(err, &fe) || len(fe.Failed) != 4 || !plainFailures(fe) {
		t.Fatalf("enroll --set: %v", err)
	}
	for i, want := range []string{"/dev/fleet2", "/dev/luks1", "/dev/notluks", "/dev/wrongkey"} {
		if fe.Failed[i].Device != want {
			t.Errorf("failure %d names %s, want %s", i, fe.Failed[i].Device, want)
		}
	}
	if !errors.Is(fe.Failed[1].Err, ErrNeedsToken) {
		t.Errorf("luks1: %v", fe.Failed[1].Err)
	}
	if len(progress) != len(fleet) || progress[len(progress)-1] != fmt.Sprintf("%d/%d /dev/fleet5", len(fleet), len(fleet)) {
		t.Errorf("progress %q", progress)
	}
	if r.src.taken != 0 {
		t.Fatalf("%d cards taken", r.src.taken)
	}
	if v, o, rd := r.counters(); v+o+rd != 0 {
		t.Fatalf("cards touched: %d verifications, %d ecdh, %d reads", v, o, rd)
	}
	for _, p := range r.p.prompts {
		t.Errorf("prompt %q", p)
	}
	ref, _ := res.Set.Ref()
	for i, vr := range res.Volumes {
		fv := fleet[i]
		if !vr.OK() {
			continue
		}
		vol := fv.Volume.(*fakeVolume)
		_, tok := vol.custosToken(t)
		if tok.Record.Set == nil || *tok.Record.Set != *ref || !tok.Record.Complete() || tok.Record.K != 3 || tok.Record.N != 5 {
			t.Fatalf("%s: token record %+v", fv.Device, tok.Record)
		}
		st, err := r.log.Ceremony(tok.Record.IDString())
		if err != nil || st.Status != StatusActive {
			t.Fatalf("%s: log %v %v", fv.Device, st.Status, err)
		}
		for j, c := range tok.Record.Cards {
			if c.Serial != res.Set.Cards[j].Serial || c.Attestation == ([32]byte{}) {
				t.Fatalf("%s: card %d %+v", fv.Device, j, c)
			}
		}
		if h, _ := vol.Inspect(context.Background()); len(h.Keyslots) != 2 {
			t.Fatalf("%s: keyslots %+v", fv.Device, h.Keyslots)
		}
	}
	// The failed volume is as it was: one keyslot, its ceremony abandoned.
	if h, _ := failing.Inspect(context.Background()); len(h.Keyslots) != 1 || len(h.Tokens) != 0 {
		t.Fatalf("failed volume: %+v", h)
	}
	cers, _ := r.log.SetCeremonies("fleet")
	active, abandoned := 0, 0
	for _, c := range cers {
		switch c.Status {
		case StatusActive:
			active++
		case StatusAbandoned:
			abandoned++
		}
	}
	if active != 5 || abandoned != 1 {
		t.Fatalf("set ceremonies: %d active, %d abandoned", active, abandoned)
	}
	// Enrolled again to the set: nothing to do (a rerun meets what it
	// did). A volume enrolled with cards is refused, named.
	again, err := EnrollSet(context.Background(), r.env, EnrollSetOptions{Set: "fleet", Volumes: r.fleet(r.vols[0])})
	if err != nil || !again.Volumes[0].Already {
		t.Fatalf("enroll twice: %v", err)
	}
	r.rig.enroll(2, 3)
	_, err = EnrollSet(context.Background(), r.env, EnrollSetOptions{Set: "fleet", Volumes: []FleetVolume{{Device: "/dev/test", Volume: r.rig.vol, AuthKey: []byte(operatorKey)}}})
	if !errors.Is(err, ErrAlreadyEnrolled) {
		t.Fatalf("enroll a volume enrolled with cards: %v", err)
	}
	// No such set; k out of range.
	if _, err := EnrollSet(context.Background(), r.env, EnrollSetOptions{Set: "nope", Volumes: r.fleet(r.vols[0])}); !errors.Is(err, ErrNoSet) {
		t.Fatalf("no set: %v", err)
	}
	if _, err := EnrollSet(context.Background(), r.env, EnrollSetOptions{Set: "fleet", K: 6, Volumes: r.fleet(r.vols[0])}); !errors.Is(err, ErrUsage) {
		t.Fatalf("k 6: %v", err)
	}
	r.noSecrets()
}

// batchCard is a fake card that opens many shares in one call, as
// *cards.Card does: one PIN verification per share (policy always).
type batchCard struct{ *fakeCard }

func (c batchCard) OpenShares(slot uint8, pin []byte, sealed []*shares.SealedShare) ([]*shares.Share, []error, error) {
	opened := make([]*shares.Share, len(sealed))
	errs := make([]error, len(sealed))
	for i, s := range sealed {
		sh, err := c.fakeCard.OpenShare(slot, pin, s)
		var pe *cards.PINError
		if errors.As(err, &pe) {
			return opened, errs, err
		}
		opened[i], errs[i] = sh, err
	}
	return opened, errs, nil
}

// cardQueue hands over any Card (a batchCard among them).
type cardQueue struct{ queue []Card }

func (q *cardQueue) Next(ctx context.Context) (Card, error) {
	if len(q.queue) == 0 {
		return nil, errNoMoreCards
	}
	c := q.queue[0]
	q.queue = q.queue[1:]
	return c, nil
}

func TestRecoverMany(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(map[bool]string{false: "one by one", true: "batch"}[batch], func(t *testing.T) {
			r := newFleetRig(t, 6, 8)
			r.createSet(5, 3)
			r.enrollSet(0)
			// A ninth volume whose token lost card 0's entry to a forger
			// (the log keeps the real one): card 0 is no custodian of it
			// for this pass; cards 2 and 4 are not enough, and it fails
			// alone. A tenth is not enrolled at all.
			odd := newFakeVolume(t, 2, operatorKey)
			r.enrollSet(0, odd)
			r.rig.vol = odd
			_, tok := odd.custosToken(t)
			r.rig.editToken(tok.Record.ID, func(tk *store.Token) { tk.Record.Cards[0].Sealed[len(tk.Record.Cards[0].Sealed)-1] ^= 1 })
			plain := newFakeVolume(t, 2, operatorKey)
			r.zero()
			r.p.prompts = nil
			q := &cardQueue{}
			for _, i := range []int{5, 0, 2, 4} { // card 5 is not in the set
				var c Card = r.cards[i]
				if batch {
					c = batchCard{r.cards[i]}
				}
				q.queue = append(q.queue, c)
			}
			r.env.Cards = q
			r.p.answer(r.pin(0), r.pin(2), r.pin(4), "fleet-new-passphrase", "fleet-new-passphrase")
			fleet := append(r.fleet(r.vols...), FleetVolume{Device: "/dev/odd", Volume: odd}, FleetVolume{Device: "/dev/plain", Volume: plain})
			res, err := RecoverMany(context.Background(), r.env, RecoverManyOptions{Volumes: fleet})
			var fe *FleetError
			if !errors.As(err, &fe) || len(fe.Failed) != 2 || fe.Failed[0].Device != "/dev/odd" || fe.Failed[1].Device != "/dev/plain" {
				t.Fatalf("recover: %v\n%s", err, r.p.transcript())
			}
			if !errors.Is(fe.Failed[0].Err, ErrQuorum) || !errors.Is(fe.Failed[1].Err, ErrQuorum) {
				t.Fatalf("failures: %v", err)
			}
			for i, v := range r.vols {
				rv := res.Volumes[i]
				if !rv.OK() || rv.Err != nil || rv.Result.Source != "token 0+log" {
					t.Fatalf("volume %d: %+v %v", i, rv.Result, rv.Err)
				}
				if s, err := v.FindKeyslot(context.Background(), []byte("fleet-new-passphrase")); err != nil || s != rv.Result.NewKeyslot {
					t.Fatalf("volume %d: the new key opens %d, %v", i, s, err)
				}
				if st, _ := r.log.Ceremony(rv.Result.Ceremony.IDString()); st.Last == 0 {
					t.Fatal("no log")
				}
			}
			// One pin per card in the set, the new passphrase twice.
			want := []string{"pin for card 1000 (custodian alice)", "pin for card 1002 (custodian carol)", "pin for card 1004 (custodian erin)",
				"new passphrase for the recovered volumes", "repeat new passphrase for the recovered volumes"}
			if strings.Join(r.p.prompts, "|") != strings.Join(want, "|") {
				t.Fatalf("prompts %q, want %q", r.p.prompts, want)
			}
			// Each card opened its share of every volume: 8 + the odd one
			// (cards 2 and 4; card 0's entry is disputed there).
			for _, i := range []int{0, 2, 4} {
				want := 9
				if i == 0 {
					want = 8
				}
				if c := r.cards[i]; c.opened != want || c.verifies != want {
					t.Errorf("card %d: %d ecdh, %d verifications, want %d", i, c.opened, c.verifies, want)
				}
			}
			if len(res.Cards) != 4 || res.Cards[0].Err == nil || res.Cards[1].Opened != 8 || res.Cards[2].Opened != 9 {
				t.Fatalf("pass cards %+v", res.Cards)
			}
			r.noSecrets("fleet-new-passphrase")
		})
	}
}

func TestRollcallSetAndStatus(t *testing.T) {
	r := newFleetRig(t, 5, 3)
	r.createSet(5, 3)
	r.enrollSet(0)
	// Card 3 loses its key (wiped by mistake): its challenge is sealed to
	// a key its slot no longer holds.
	r.cards[3].WipeShare(0x82, []byte(r.pin(3)))
	r.zero()
	r.insert(0, 1, 2, 3, 4)
	res, err := RollcallSet(context.Background(), r.env, SetRollcallOptions{Set: "fleet"})
	if !failedCheck(err) || len(res.Cards) != 5 || !res.Cards[0].OK() || res.Cards[3].OK() || len(res.Missing) != 0 {
		t.Fatalf("rollcall: %v %+v\n%s", err, res, r.p.transcript())
	}
	if !errors.Is(res.Cards[3].Err, cards.ErrWrongCard) {
		t.Fatalf("card 3: %v", res.Cards[3].Err)
	}
	if v, _, _ := r.counters(); v != 4 {
		t.Fatalf("%d pin verifications, want 4 (card 3 refuses before the pin)", v)
	}
	for _, v := range r.vols {
		if v.adds+v.tests != 0 {
			t.Fatal("the rollcall touched a volume")
		}
	}
	rep, err := SetStatus(context.Background(), r.env, "fleet")
	if err != nil || len(rep.Volumes) != 3 || len(rep.Cards) != 5 || rep.Cards[3].LastOK || rep.Cards[0].LastRollcall.IsZero() {
		t.Fatalf("set status: %v %+v", err, rep)
	}
	for _, vs := range rep.Volumes {
		if vs.Live != 4 || vs.Margin != 1 || vs.SetVersion != 1 || vs.Status != StatusActive {
			t.Fatalf("volume %+v", vs)
		}
	}
	// The volume's own status counts the set rollcall too.
	r.env.Volume = r.vols[1]
	st, err := Status(context.Background(), r.env)
	if err != nil || st.Live != 4 || st.Margin != 1 || !strings.Contains(strings.Join(st.Notes, "\n"), "enrolled to custodian set fleet version 1") {
		t.Fatalf("status: %v %+v", err, st)
	}
}

func TestRotateSet(t *testing.T) {
	r := newFleetRig(t, 6, 4)
	r.createSet(5, 3)
	enrolled := r.enrollSet(0)
	oldKeys := map[int][]byte{}
	for i, vr := range enrolled.Volumes {
		oldKeys[i] = r.vols[i].keyOf(vr.Ceremony.Keyslot)
	}
	// Card 5 replaces card 0; cards 1, 2, 3 authorise. A stranger first
	// offers itself as the new card.
	r.zero()
	r.src.insert(r.cards[4])
	r.p.answer()
	r.insert(5, 1, 2, 3)
	res, err := RotateSet(context.Background(), r.env, RotateSetOptions{Set: "fleet", Old: "1000", New: "1005", Volumes: r.fleet(r.vols[:3]...)})
	if err != nil {
		t.Fatalf("rotate --set: %v\n%s", err, r.p.transcript())
	}
	if res.Set.Version != 2 || res.Set.Cards[0].Serial != "1005" || res.SetResumed || !res.NewCard.OK() {
		t.Fatalf("set %+v", res.Set)
	}
	if c := r.cards[4]; c.verifies != 0 {
		t.Fatal("a card that was not the new card was asked for its pin")
	}
	for i, rv := range res.Volumes {
		if rv.Err != nil || !rv.Result.OldKilled || rv.Result.New.Set.Version != 2 || rv.Result.New.Cards[0].Serial != "1005" {
			t.Fatalf("volume %d: %+v %v", i, rv.Result, rv.Err)
		}
		r.rig.vol = r.vols[i]
		r.opensNothing("the old recovery key", oldKeys[i])
		r.opensWithOperatorKey()
		if len(rv.Result.ToWipe) != 1 || rv.Result.ToWipe[0].Serial != "1000" {
			t.Fatalf("to wipe %+v", rv.Result.ToWipe)
		}
	}
	// One pin per card: the new card's proof, then each old card once.
	if len(r.p.prompts) != 4 {
		t.Fatalf("prompts %q", r.p.prompts)
	}
	// The fourth volume stays on version 1: status says so.
	rep, _ := SetStatus(context.Background(), r.env, "fleet")
	if !strings.Contains(strings.Join(rep.Notes, "\n"), "1 volumes are enrolled to an older version") {
		t.Fatalf("set status notes %q", rep.Notes)
	}
	// And the volume's own status names the version the set moved on to;
	// a rotated volume's does not.
	for i, want := range []int{0, 0, 0, 2} {
		r.env.Volume = r.vols[i]
		st, err := Status(context.Background(), r.env)
		if err != nil || st.SetMovedTo != want {
			t.Fatalf("volume %d: status says the set moved to %d, want %d (%v)", i, st.SetMovedTo, want, err)
		}
	}
	// The replaced card's shares of the retired ceremonies open nothing:
	// with two others it combines the old keys, which no keyslot takes.
	for i := range 3 {
		st, _ := r.log.Ceremony(enrolled.Volumes[i].Ceremony.IDString())
		if st.Status != StatusRetired {
			t.Fatalf("volume %d's old ceremony is %s", i, st.Status)
		}
		key := combineWith(t, st.Record, r.cards[0], r.cards[1], r.cards[2])
		r.rig.vol = r.vols[i]
		r.opensNothing("the retired shares of card 1000", key)
	}
	// Rerun: nothing to do; the new card is not asked for again.
	r.reset()
	r.zero()
	res, err = RotateSet(context.Background(), r.env, RotateSetOptions{Set: "fleet", Old: "1000", New: "1005", Volumes: r.fleet(r.vols[:3]...)})
	if err != nil || !res.SetResumed || r.src.taken != 0 {
		t.Fatalf("rerun: %v %+v", err, res)
	}
	for _, rv := range res.Volumes {
		if !rv.Already {
			t.Fatalf("rerun rotated %s again", rv.Device)
		}
	}
	// Refusals: a card not in the set, a volume not enrolled to it.
	if _, err := RotateSet(context.Background(), r.env, RotateSetOptions{Set: "fleet", Old: "999", New: "1000", Volumes: r.fleet(r.vols[3])}); !errors.Is(err, ErrNotInSet) {
		t.Fatalf("old card not in the set: %v", err)
	}
}

// combineWith opens the cards' shares of rec (as the card would for any
// caller with the PIN) and combines them.
func combineWith(t *testing.T, rec *Record, cs ...*fakeCard) []byte {
	t.Helper()
	var shs []*shares.Share
	for _, c := range cs {
		for _, e := range rec.Cards {
			if e.Serial != serialText(c.serial) {
				continue
			}
			sealed, err := shares.ParseSealedShare(e.Sealed)
			if err != nil {
				t.Fatal(err)
			}
			priv, _ := c.slots[e.Slot].priv.ECDH()
			sh, err := shares.Open(sealed, priv.PublicKey(), func(eph *ecdh.PublicKey) ([]byte, error) { return priv.ECDH(eph) })
			if err != nil {
				t.Fatalf("card %d: %v", c.serial, err)
			}
			shs = append(shs, sh)
		}
	}
	secret, _, err := ceremonyOf(rec).Combine(shs)
	if err != nil {
		t.Fatal(err)
	}
	return shares.EncodeRecoveryKey(secret)
}

// More volumes than one batch: every one enrolled, in order, progress
// said for each.
func TestEnrollSetBatches(t *testing.T) {
	r := newFleetRig(t, 5, enrollBatch+9)
	r.createSet(5, 3)
	var done []int
	res, err := EnrollSet(context.Background(), r.env, EnrollSetOptions{Set: "fleet", Volumes: r.fleet(),
		Progress: func(d, total int, _ string) { done = append(done, d) }})
	if err != nil || len(res.Volumes) != enrollBatch+9 {
		t.Fatalf("enroll: %v", err)
	}
	for i, vr := range res.Volumes {
		if !vr.OK() || vr.TokenID < 0 || done[i] != i+1 || vr.Device != fmt.Sprintf("/dev/fleet%d", i) {
			t.Fatalf("volume %d: %+v (progress %v)", i, vr, done)
		}
		_, tok := r.vols[i].custosToken(t)
		if tok.Record.ID != vr.Ceremony.ID {
			t.Fatalf("volume %d's token names another ceremony", i)
		}
	}
}

// otherSetLog is a log whose set versions are not the ones the records
// name: another version with the same name and number, or none.
type otherSetLog struct {
	Log
	other *store.SetState // nil: the log holds no version
}

func (l otherSetLog) SetVersion(name string, version int) (store.SetState, error) {
	if l.other == nil {
		return store.SetState{}, fmt.Errorf("set %q version %d: %w", name, version, store.ErrNotFound)
	}
	return *l.other, nil
}

// A volume enrolled to a set has its cards' attestation chains in the
// set's event, not in card events of its own: status and VerifyAttestations
// find them there, and only in the set version the record names.
func TestSetAttestations(t *testing.T) {
	r := newFleetRig(t, 5, 2)
	r.createSet(5, 3)
	r.enrollSet(0)
	rep, err := VerifyAttestations(r.env)
	if err != nil || rep.Cards != 10 || len(rep.Chains) != 5 || rep.Unattested != 0 || len(rep.Problems) != 0 {
		t.Fatalf("VerifyAttestations = %+v, %v", rep, err)
	}
	for _, ch := range rep.Chains {
		if ch.Set != "fleet version 1" || ch.Ceremony != "" || ch.Problem != "" || !strings.Contains(ch.Summary, "fake attestation root") {
			t.Errorf("chain %+v", ch)
		}
	}
	r.env.Volume = r.vols[0]
	st := r.status()
	if len(st.Problems) != 0 || len(st.Cards) != 5 {
		t.Fatalf("status: %+v", st)
	}
	for _, c := range st.Cards {
		if c.Attestation.Summary == "" || c.Attestation.Problem != "" || c.Attestation.Unattested {
			t.Errorf("status: card %s attestation %+v", c.Serial, c.Attestation)
		}
	}

	// Without the roots the set's chains fail, each by card and event.
	env := *r.env
	env.Roots = nil
	if rep, err := VerifyAttestations(&env); !errors.Is(err, ErrUnattested) || rep.Cards != 0 || len(rep.Problems) != 15 {
		t.Fatalf("without the roots: %+v, %v", rep, err)
	}

	// A log that does not hold the set version the record names, or holds
	// another under its name, holds no chain for the record's digests.
	s, err := r.log.SetVersion("fleet", 1)
	if err != nil {
		t.Fatal(err)
	}
	forged := s
	forged.Set = s.Set.Clone()
	forged.Set.Cards = forged.Set.Cards[:4]
	forged.Fingerprint[0] ^= 1
	for name, l := range map[string]otherSetLog{"no version": {Log: r.log}, "another version": {Log: r.log, other: &forged}} {
		env := *r.env
		env.Log = l
		st, err := Status(context.Background(), &env)
		if err != nil {
			t.Fatalf("%s: status: %v", name, err)
		}
		if len(st.Problems) != 5 {
			t.Fatalf("%s: %d problems, want one per card: %q", name, len(st.Problems), st.Problems)
		}
		for _, p := range st.Problems {
			if !strings.Contains(p, "attestation: the log holds no chain for its attestation digest (the log") {
				t.Errorf("%s: problem %q", name, p)
			}
		}
	}
}
