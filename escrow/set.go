package escrow

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/cards"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// Set is a custodian set (docs/FORMAT.md section 14): a team's cards with
// their attested keys, registered once so that volumes can be enrolled to
// them without the cards present.
type Set = store.Set

// SetCard is one card of a set.
type SetCard = store.SetCard

// SetCardSpec names a card of a set to create: its serial and, when the
// card holds several custody keys, the slot of the one to use (0: the one
// the log's registry names for the card, or its only one).
type SetCardSpec struct {
	Serial string
	Slot   uint8
}

// SetCreateOptions are the operator's choices for CreateSet.
type SetCreateOptions struct {
	// Name is the set's name: 1-64 of a-z 0-9 . _ -, starting with a
	// letter or digit.
	Name string
	// Cards are the set's cards, in this order (2 to 255).
	Cards []SetCardSpec
	// K is the set's default threshold, 2 <= K <= len(Cards).
	K int
	// Custodians names each card's holder, in the order of Cards; a
	// missing or empty name comes from the log's card registry.
	Custodians []string
	// AllowUnattested accepts cards that cannot attest their key; the
	// set records it.
	AllowUnattested bool
}

// SetResult is a set as a ceremony left it in the log.
type SetResult struct {
	Set         *Set
	Fingerprint [32]byte
	// Anchor is the log head after the set was recorded (zero when the
	// log held it already).
	Anchor store.Head
	// Cards are the outcomes of the cards inserted, in order.
	Cards []CardOutcome
	// Imported is false when ImportSet found the set in the log already.
	Imported bool
}

// CreateSet is the card ceremony that registers a custodian set: each
// custodian inserts their initialised card (in any order) and types the
// PIN once; custos attests the slot's key against Yubico's roots and
// env.Roots (refusing as enroll does) and has the card prove possession by
// opening a fresh challenge sealed to that key. A card not in the set is
// set aside, unasked. With every card proven, the set — name, version 1,
// the cards with serials, slots, attested public keys and custodians, the
// default k — is logged; its fingerprint is what the set file is checked
// against on another machine.
func CreateSet(ctx context.Context, env *Env, opts SetCreateOptions) (*SetResult, error) {
	if err := env.need("set create", false, true, true, true); err != nil {
		return nil, err
	}
	if err := checkSetOptions(opts); err != nil {
		return nil, fmt.Errorf("set create: %w", err)
	}
	if st, err := env.Log.Set(opts.Name); err == nil {
		return nil, fmt.Errorf("set create: %w: %s (version %d)", ErrSetExists, opts.Name, st.Set.Version)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("set create: %w", err)
	}
	s := &Set{Name: opts.Name, Version: 1, K: opts.K, AllowUnattested: opts.AllowUnattested, Cards: make([]SetCard, len(opts.Cards))}
	res := &SetResult{Set: s}
	proven := map[string]bool{}
	env.say("custodian set %s: %d cards, %d of them by default", opts.Name, len(opts.Cards), opts.K)
	for len(proven) < len(opts.Cards) {
		card, err := waitCard(ctx, env, fmt.Sprintf("insert a card of the set (%d of %d proven)", len(proven), len(opts.Cards)))
		if err != nil {
			var missing []string
			for _, c := range opts.Cards {
				if !proven[c.Serial] {
					missing = append(missing, c.Serial)
				}
			}
			return res, fmt.Errorf("set create: %w", &MissingCardsError{Serials: missing, Err: err})
		}
		serial := serialOf(card)
		out := CardOutcome{Serial: serial, Reader: card.Reader()}
		i := slices.IndexFunc(opts.Cards, func(c SetCardSpec) bool { return c.Serial == serial })
		switch {
		case i < 0:
			out.Err = fmt.Errorf("card %s: %w %s", serial, ErrNotInSet, opts.Name)
		case proven[serial]:
			out.Err = fmt.Errorf("card %s: %w", serial, ErrSeenTwice)
		default:
			name := ""
			if i < len(opts.Custodians) {
				name = opts.Custodians[i]
			}
			if name == "" {
				name = custodianOf(env, serial)
			}
			out.Custodian, out.Index = name, i+1
			var sc *SetCard
			sc, out.Err = proveSetCard(env, card, opts.Cards[i], name, opts.AllowUnattested)
			if out.Err == nil {
				s.Cards[i] = *sc
				proven[serial] = true
			}
		}
		card.Close()
		res.Cards = append(res.Cards, out)
		if out.Err != nil {
			if fatal(ctx, out.Err) {
				return res, fmt.Errorf("set create: %w", out.Err)
			}
			env.say("%s: set aside: %s", who(serial, out.Custodian), describe(out.Err))
			continue
		}
		env.say("%s: key in slot %02x attested, and the card opened its challenge", who(serial, out.Custodian), s.Cards[i].Slot)
	}
	fp, err := s.Fingerprint()
	if err != nil {
		return res, fmt.Errorf("set create: %w", err)
	}
	head, err := env.Log.Update(func(tx *store.Tx) error {
		_, err := tx.PutSet(env.actor(), s)
		return err
	})
	if err != nil {
		return res, fmt.Errorf("set create: log the set: %w", err)
	}
	res.Fingerprint, res.Anchor, res.Imported = fp, head, true
	env.say("custodian set %s version 1 logged: fingerprint %s", s.Name, FingerprintGroups(fp))
	return res, nil
}

func checkSetOptions(opts SetCreateOptions) error {
	if err := store.CheckSetName(opts.Name); err != nil {
		return fmt.Errorf("%w: set name %q: %v", ErrUsage, safeText(opts.Name), err)
	}
	n := len(opts.Cards)
	if n < store.MinSetCards || n > store.MaxSetCards {
		return fmt.Errorf("%w: %d cards: a set has %d to %d", ErrUsage, n, store.MinSetCards, store.MaxSetCards)
	}
	if opts.K < 2 || opts.K > n {
		return fmt.Errorf("%w: k=%d for %d cards: want 2 <= k <= %d", ErrUsage, opts.K, n, n)
	}
	seen := map[string]bool{}
	for _, c := range opts.Cards {
		if v, err := strconv.ParseUint(c.Serial, 10, 32); err != nil || v == 0 || strconv.FormatUint(v, 10) != c.Serial {
			return fmt.Errorf("%w: card serial %q: want a decimal number from 1 to 4294967295", ErrUsage, safeText(c.Serial))
		}
		if seen[c.Serial] {
			return fmt.Errorf("%w: card %s named twice", ErrUsage, c.Serial)
		}
		seen[c.Serial] = true
		if c.Slot != 0 && (c.Slot < store.MinSlot || c.Slot > store.MaxSlot) {
			return fmt.Errorf("%w: card %s slot %02x: want 82 to 95", ErrUsage, c.Serial, c.Slot)
		}
	}
	if err := checkNames(opts.Custodians, n); err != nil {
		return err
	}
	return nil
}

// proveSetCard takes a card into a set: the custody key to use, its
// attestation (as enroll refuses: not genuine, or a PIN policy that lets
// the key be used without the PIN, unless allowUnattested and the card
// cannot attest at all), and possession proven by opening a challenge
// sealed to that key with the custodian's PIN.
func proveSetCard(env *Env, card Card, spec SetCardSpec, custodian string, allowUnattested bool) (*SetCard, error) {
	serial := serialOf(card)
	slots, err := card.Custody()
	if err != nil {
		return nil, fmt.Errorf("card %s: read custody slots: %w", serial, err)
	}
	si, err := setSlot(env, serial, spec.Slot, slots)
	if err != nil {
		return nil, err
	}
	att, err := attest(env, card, si, allowUnattested)
	if err != nil {
		return nil, fmt.Errorf("card %s slot %02x: %w", serial, si.Slot, err)
	}
	der, err := x509.MarshalPKIXPublicKey(si.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("card %s slot %02x: %w", serial, si.Slot, err)
	}
	pub, err := si.PublicKey.ECDH()
	if err != nil {
		return nil, fmt.Errorf("card %s slot %02x: %w", serial, si.Slot, err)
	}
	if err := challenge(env, card, si.Slot, pub, serial, custodian); err != nil {
		return nil, err
	}
	sc := &SetCard{Serial: serial, Slot: si.Slot, Custodian: custodian, Key: sha256.Sum256(der), PublicKey: der}
	if att != nil {
		sc.Attestation = append(append([]byte(nil), att.Cert.Raw...), att.Intermediate.Raw...)
	}
	return sc, nil
}

// setSlot chooses a card's custody key for a set: the slot named, else the
// one the log's registry records for the card (its latest key that the
// card still holds), else the card's only one.
func setSlot(env *Env, serial string, want uint8, slots []cards.SlotInfo) (cards.SlotInfo, error) {
	if want != 0 {
		for _, si := range slots {
			if si.Slot == want {
				return si, nil
			}
		}
		return cards.SlotInfo{}, fmt.Errorf("card %s: slot %02x holds no custody key: %w", serial, want, cards.ErrNoCustodySlot)
	}
	if env.Log != nil {
		if cr, err := env.Log.Card(serial); err == nil {
			for i := len(cr.Keys) - 1; i >= 0; i-- {
				for _, si := range slots {
					if si.Fingerprint.String() == cr.Keys[i].Fingerprint {
						return si, nil
					}
				}
			}
		}
	}
	switch len(slots) {
	case 0:
		return cards.SlotInfo{}, fmt.Errorf("card %s: %w", serial, ErrNoCustodyKey)
	case 1:
		return slots[0], nil
	}
	return cards.SlotInfo{}, &SlotsError{Serial: serial, Keys: len(slots)}
}

// challenge has the card prove, with the custodian's PIN, that it holds
// the private half of pub in slot: a share of a throwaway 2-of-2 split of
// fresh random bytes is sealed to pub as any share is, and the card must
// open it to that very share (one PIN verification, one key agreement).
func challenge(env *Env, card Card, slot uint8, pub *ecdh.PublicKey, serial, custodian string) error {
	secret := make([]byte, shares.RecoveryKeySize)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	defer shares.Wipe(secret)
	var vid shares.VolumeID
	rand.Read(vid[:])
	cer, shs, err := shares.Split(shares.NewCeremonyID(), vid, secret, 2, 2)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range shs {
			s.Wipe()
		}
	}()
	sealed, err := shares.Seal(shs[0], pub)
	if err != nil {
		return err
	}
	err = withPIN(env, serial, custodian, func(pin []byte) error {
		sh, err := card.OpenShare(slot, pin, sealed)
		if err != nil {
			return err
		}
		defer sh.Wipe()
		if sh.Header != shs[0].Header || !bytes.Equal(sh.Value, shs[0].Value) || cer.Check(sh) != nil {
			return fmt.Errorf("%w: the card opened its challenge to something else", ErrVerification)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("card %s: prove the key in slot %02x: %w", serial, slot, err)
	}
	return nil
}

// verifySet checks, where custos takes a set in (import) or seals to it
// (enroll, rotate), what the set file cannot say alone: each card's
// attestation verifies against Yubico's roots and env.Roots and attests
// that card's public key, in that slot, on the card with that serial, with
// a PIN policy of once or always. A card without attestation passes only
// when the set allows it, with a warning.
func verifySet(env *Env, s *Set) error {
	for i := range s.Cards {
		c := &s.Cards[i]
		if c.Attestation == nil {
			if !s.AllowUnattested {
				return fmt.Errorf("set %s: card %s: %w: no attestation", s.Name, c.Serial, ErrUnattested)
			}
			env.say("warning: set %s: card %s has no attestation: accepted only because the set allows unattested cards", s.Name, c.Serial)
			continue
		}
		att, err := cards.VerifyAttestation(c.Attestation, env.Roots)
		if err != nil {
			return &SetAttestationError{Set: s.Name, Serial: c.Serial, Err: err}
		}
		var problem string
		switch {
		case att.Fingerprint != shares.Fingerprint(c.Key):
			problem = "the attested key is not the card's public key in the set"
		case att.Slot != c.Slot:
			problem = fmt.Sprintf("the attestation is for slot %02x, not %02x", att.Slot, c.Slot)
		case strconv.FormatUint(uint64(att.Serial), 10) != c.Serial:
			problem = fmt.Sprintf("the attestation names card %d", att.Serial)
		case att.PINPolicy != piv.PINPolicyOnce && att.PINPolicy != piv.PINPolicyAlways:
			problem = "the key's pin policy lets it be used without the pin"
		}
		if problem != "" {
			return fmt.Errorf("set %s: card %s: %w: %s", s.Name, c.Serial, ErrUnattested, problem)
		}
	}
	return nil
}

// setKeys parses the set's public keys for sealing.
func setKeys(s *Set) ([]*ecdh.PublicKey, error) {
	out := make([]*ecdh.PublicKey, len(s.Cards))
	for i, c := range s.Cards {
		pub, err := x509.ParsePKIXPublicKey(c.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("set %s: card %s: %w", s.Name, c.Serial, err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("set %s: card %s: not a P-256 key", s.Name, c.Serial)
		}
		if out[i], err = ec.ECDH(); err != nil {
			return nil, fmt.Errorf("set %s: card %s: %w", s.Name, c.Serial, err)
		}
	}
	return out, nil
}

// ImportSet takes in a set file made by set export on another machine:
// refused unless its fingerprint is the one given (compared with the
// set's transcript, out of band) and every card's attestation verifies
// (verifySet). A set the log holds already is not logged again; another
// set of the same name and version is refused, and so is a version whose
// previous versions the log does not hold (import them first, in order).
func ImportSet(ctx context.Context, env *Env, file []byte, fingerprint string) (*SetResult, error) {
	if err := env.need("set import", false, false, true, false); err != nil {
		return nil, err
	}
	want, err := ParseFingerprint(fingerprint)
	if err != nil {
		return nil, fmt.Errorf("set import: %w", err)
	}
	s, err := store.ParseSetFile(file)
	if err != nil {
		return nil, fmt.Errorf("set import: %w: %w", ErrSetFile, err)
	}
	body, _ := s.Encode()
	got := sha256.Sum256(body)
	if got != want {
		return nil, fmt.Errorf("set import: %w", &FingerprintError{Set: s.Name, Version: s.Version, Got: got, Want: want})
	}
	if err := verifySet(env, s); err != nil {
		return nil, fmt.Errorf("set import: %w", err)
	}
	res := &SetResult{Set: s, Fingerprint: got}
	if st, err := env.Log.SetVersion(s.Name, s.Version); err == nil {
		if st.Fingerprint == got {
			env.say("set %s version %d is in the log already", s.Name, s.Version)
			return res, nil
		}
		return nil, fmt.Errorf("set import: %w: the log holds another version %d of set %s (fingerprint %s)",
			ErrVerification, s.Version, s.Name, FingerprintGroups(st.Fingerprint))
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("set import: %w", err)
	}
	head, err := env.Log.Update(func(tx *store.Tx) error {
		_, err := tx.PutSet(env.actor(), s)
		return err
	})
	var se *store.SetRuleError
	if errors.As(err, &se) {
		return nil, fmt.Errorf("set import: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("set import: %w", err)
	}
	res.Anchor, res.Imported = head, true
	env.say("set %s version %d imported: fingerprint %s", s.Name, s.Version, FingerprintGroups(got))
	return res, nil
}

// ExportSet returns a set's file (version 0: the newest) and its state.
func ExportSet(env *Env, name string, version int) (*store.SetState, []byte, error) {
	if err := env.need("set export", false, false, true, false); err != nil {
		return nil, nil, err
	}
	st, err := lookupSet(env, name, version)
	if err != nil {
		return nil, nil, fmt.Errorf("set export: %w", err)
	}
	b, err := st.Set.EncodeFile()
	if err != nil {
		return nil, nil, fmt.Errorf("set export: %w", err)
	}
	return st, b, nil
}

// lookupSet reads a set from the log: version 0 is the newest.
func lookupSet(env *Env, name string, version int) (*store.SetState, error) {
	var st store.SetState
	var err error
	if version == 0 {
		st, err = env.Log.Set(name)
	} else {
		st, err = env.Log.SetVersion(name, version)
	}
	if errors.Is(err, store.ErrNotFound) {
		what := "set " + safeText(name)
		if version != 0 {
			what += " version " + strconv.Itoa(version)
		}
		return nil, fmt.Errorf("%w: %s", ErrNoSet, what)
	}
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// ParseFingerprint reads a set's fingerprint: 64 hex digits, in either
// case, with spaces, dashes or colons anywhere (it is read aloud and
// compared in groups of four).
func ParseFingerprint(s string) ([32]byte, error) {
	var fp [32]byte
	digits := strings.Map(func(r rune) rune {
		switch r {
		case ' ', '-', ':', '\t':
			return -1
		}
		return r
	}, strings.ToLower(s))
	if len(digits) != 64 {
		return fp, fmt.Errorf("%w: fingerprint %q: want 64 hex digits", ErrUsage, safeText(s))
	}
	if _, err := hex.Decode(fp[:], []byte(digits)); err != nil {
		return fp, fmt.Errorf("%w: fingerprint %q: not hex", ErrUsage, safeText(s))
	}
	return fp, nil
}

// FingerprintGroups writes a fingerprint in groups of four hex digits, as
// people compare it.
func FingerprintGroups(fp [32]byte) string {
	h := hex.EncodeToString(fp[:])
	var b strings.Builder
	for i := 0; i < len(h); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(h[i : i+4])
	}
	return b.String()
}

// SetRollcallOptions tune RollcallSet.
type SetRollcallOptions struct {
	Set string
	// Cards is how many cards to hear before stopping; 0 means all.
	Cards int
}

// SetRollcallResult is what RollcallSet found.
type SetRollcallResult struct {
	Set         *Set
	Fingerprint [32]byte
	Cards       []CardOutcome
	// Missing are the set's cards not presented.
	Missing []SetCard
	Anchor  store.Head
}

// RollcallSet has each card of a set prove, in one pass and without
// touching any volume, that it still answers to the key the set holds for
// it: its slot holds that key, and it opens a fresh challenge sealed to it
// with the custodian's PIN. Each card's result is logged (a set rollcall),
// and status counts a card that failed as lost for every volume enrolled
// to the set. It stops when every card (or opts.Cards) answered or ctx
// ends; a card that failed makes the error ErrVerification.
func RollcallSet(ctx context.Context, env *Env, opts SetRollcallOptions) (*SetRollcallResult, error) {
	if err := env.need("rollcall", false, true, true, true); err != nil {
		return nil, err
	}
	st, err := lookupSet(env, opts.Set, 0)
	if err != nil {
		return nil, fmt.Errorf("rollcall: %w", err)
	}
	s := st.Set
	res := &SetRollcallResult{Set: s, Fingerprint: st.Fingerprint}
	keys, err := setKeys(s)
	if err != nil {
		return res, fmt.Errorf("rollcall: %w", err)
	}
	want := opts.Cards
	if want <= 0 || want > len(s.Cards) {
		want = len(s.Cards)
	}
	answered := map[string]bool{}
	var results []store.SetRollcall
	failed := 0
	env.say("rollcall of set %s version %d: %d cards", s.Name, s.Version, want)
	for len(answered) < want {
		card, err := waitCard(ctx, env, fmt.Sprintf("insert the next card of the set (%d of %d answered)", len(answered), want))
		if err != nil {
			if len(answered) == 0 || !errors.Is(err, ctx.Err()) {
				res.Missing = missingSetCards(s, answered)
				return res, fmt.Errorf("rollcall: %w", err)
			}
			break
		}
		serial := serialOf(card)
		out := CardOutcome{Serial: serial, Reader: card.Reader()}
		i := slices.IndexFunc(s.Cards, func(c SetCard) bool { return c.Serial == serial })
		switch {
		case i < 0:
			out.Err = fmt.Errorf("card %s: %w %s", serial, ErrNotInSet, s.Name)
		case answered[serial]:
			out.Err = fmt.Errorf("card %s: %w", serial, ErrSeenTwice)
		default:
			c := s.Cards[i]
			out.Index, out.Custodian = i+1, c.Custodian
			out.Err = challenge(env, card, c.Slot, keys[i], serial, c.Custodian)
		}
		card.Close()
		res.Cards = append(res.Cards, out)
		var pe *cards.PINError
		if i < 0 || errors.Is(out.Err, ErrSeenTwice) || errors.As(out.Err, &pe) || fatal(ctx, out.Err) {
			if fatal(ctx, out.Err) {
				res.Missing = missingSetCards(s, answered)
				return res, fmt.Errorf("rollcall: %w", out.Err)
			}
			if out.Err != nil {
				env.say("%s: set aside: %s", who(serial, out.Custodian), describe(out.Err))
			}
			continue
		}
		c := s.Cards[i]
		rc := store.SetRollcall{Set: s.Name, Version: s.Version, Serial: serial, Fingerprint: hex.EncodeToString(c.Key[:]), OK: out.OK()}
		if !out.OK() {
			rc.Reason = safeText(describe(out.Err))
			failed++
			env.say("%s: FAILED: %s", who(serial, c.Custodian), describe(out.Err))
		} else {
			env.say("%s: answers to its key", who(serial, c.Custodian))
		}
		results = append(results, rc)
		answered[serial] = true
	}
	res.Missing = missingSetCards(s, answered)
	head, err := env.Log.Update(func(tx *store.Tx) error {
		for _, rc := range results {
			if _, err := tx.RecordSetRollcall(env.actor(), rc); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("rollcall: %w", err)
	}
	res.Anchor = head
	if failed > 0 {
		return res, fmt.Errorf("rollcall: %w", &FailedCardsError{Failed: failed, Set: s.Name})
	}
	return res, nil
}

func missingSetCards(s *Set, answered map[string]bool) []SetCard {
	var out []SetCard
	for _, c := range s.Cards {
		if !answered[c.Serial] {
			out = append(out, c)
		}
	}
	return out
}
