package escrow

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"custos.dev/custos/cards"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// AttestationChain is one attestation the log holds (a card event's
// attestation, docs/FORMAT.md section 11, or a custodian set's card's,
// section 14), verified again.
type AttestationChain struct {
	// Seq is the card or set event's number; Ceremony the ceremony a
	// card event was recorded for ("" at card init and for a set).
	Seq      uint64
	Ceremony string
	// Set names the set version whose event holds the chain ("fleet
	// version 2"); "" for a card event.
	Set string
	// Serial, Slot and Fingerprint are the card key the event registers.
	Serial, Slot, Fingerprint string
	// Summary is the verified attestation (issuer, firmware, policies);
	// "" when Problem is set.
	Summary string
	// Problem says why it does not verify, or does not attest the key the
	// event registers; "" when all is well.
	Problem string
}

// AttestationsReport is what VerifyAttestations found.
type AttestationsReport struct {
	// Chains are the log's attestation chains, in log order.
	Chains []AttestationChain
	// Cards counts the ceremony cards (one per ceremony and share) whose
	// record's attestation digest names a chain of the log that verifies
	// for that card key; Unattested those recorded without attestation
	// in a ceremony that allows it.
	Cards, Unattested int
	// Problems names each failure with its card and event.
	Problems []string
}

// VerifyAttestations verifies again, from the log alone, every
// attestation it holds: each card event's chain (the slot's attestation
// certificate and the card's attestation-signing certificate) against
// Yubico's roots and env.Roots, for the serial, slot and key the event
// registers, and each custodian set event's card's chain for the card it
// lists; and each ceremony record's card against them: its
// attestation digest must be the digest of a chain of the log that
// verifies for that card key, and a card without one must belong to a
// ceremony that allows unattested cards. Any failure makes the error
// ErrUnattested (exit 4), after the report is complete.
//
// # Caveats
//
// A chain proves what the card said when it was recorded; it does not
// prove the card still holds the key. recover and rollcall check that
// (the slot's key is the record's before any PIN is sent).
func VerifyAttestations(env *Env) (*AttestationsReport, error) {
	if env == nil || env.Log == nil {
		return nil, fmt.Errorf("verify attestations: %w", ErrNoLog)
	}
	rep := &AttestationsReport{}
	type cardKey struct{ serial, fingerprint string }
	good := map[cardKey]map[[32]byte]bool{}  // verified chains by card key
	bad := map[cardKey]map[[32]byte]string{} // chains that failed, and why
	type seen struct {
		id    [16]byte
		index int
	}
	checked := map[seen]bool{}
	type use struct {
		seq  uint64
		rec  *Record
		card RecordCard
	}
	var uses []use
	// chain verifies one chain recorded for a card key and files it.
	chain := func(ch AttestationChain, der []byte, reg store.CardRegistration) {
		k := cardKey{reg.Serial, reg.Fingerprint}
		a, err := cards.VerifyAttestation(der, env.Roots)
		if err == nil {
			err = attestsRegistration(a, reg)
		}
		if err != nil {
			ch.Problem = safeLine(err.Error())
			rep.Problems = append(rep.Problems, fmt.Sprintf("event %d: card %s key %s: %s", ch.Seq, ch.Serial, shortKey(ch.Fingerprint), ch.Problem))
			if bad[k] == nil {
				bad[k] = map[[32]byte]string{}
			}
			if cert, inter, serr := cards.SplitAttestation(der); serr == nil {
				bad[k][attestationDigest(cert, inter)] = fmt.Sprintf("the chain of event %d does not verify: %s", ch.Seq, ch.Problem)
			}
		} else {
			ch.Summary = summaryOf(a)
			if good[k] == nil {
				good[k] = map[[32]byte]bool{}
			}
			good[k][attestationDigest(a.Cert, a.Intermediate)] = true
		}
		rep.Chains = append(rep.Chains, ch)
	}
	each := func(ev store.Event) error {
		switch ev.Type {
		case store.TypeSet:
			s, err := store.ParseSet(ev.Body)
			if err != nil {
				rep.Problems = append(rep.Problems, fmt.Sprintf("event %d: set does not decode: %s", ev.Seq, safeLine(err.Error())))
				return nil
			}
			for _, c := range s.Cards {
				if c.Attestation == nil {
					continue
				}
				reg := store.CardRegistration{Serial: c.Serial, Slot: slotText(c.Slot), Fingerprint: fingerprintText(c.Key)}
				chain(AttestationChain{Seq: ev.Seq, Set: fmt.Sprintf("%s version %d", SafeText(s.Name), s.Version), Serial: SafeText(reg.Serial),
					Slot: reg.Slot, Fingerprint: reg.Fingerprint}, c.Attestation, reg)
			}
		case store.TypeCard:
			var reg store.CardRegistration
			if err := json.Unmarshal(ev.Body, &reg); err != nil {
				rep.Problems = append(rep.Problems, fmt.Sprintf("event %d: card registration does not decode: %s", ev.Seq, safeLine(err.Error())))
				return nil
			}
			if len(reg.Attestation) == 0 {
				return nil
			}
			chain(AttestationChain{Seq: ev.Seq, Ceremony: ev.Ceremony, Serial: SafeText(reg.Serial), Slot: SafeText(reg.Slot),
				Fingerprint: SafeText(reg.Fingerprint)}, reg.Attestation, reg)
		case store.TypeCeremony:
			_, rec, err := store.ParseCeremonyEvent(ev)
			if err != nil {
				rep.Problems = append(rep.Problems, fmt.Sprintf("event %d: ceremony record does not decode: %s", ev.Seq, safeLine(err.Error())))
				return nil
			}
			for _, c := range rec.Cards {
				s := seen{rec.ID, c.Index}
				if checked[s] {
					continue // the log's frame rules keep an entry as first written
				}
				checked[s] = true
				uses = append(uses, use{ev.Seq, rec, c})
			}
		}
		return nil
	}
	// Only set, card and ceremony events count: a log that can say which
	// events those are without decoding the others (store.Log) is asked
	// for them alone.
	var err error
	if l, ok := env.Log.(interface {
		EventsOfType([]string, func(store.Event) error) error
	}); ok {
		err = l.EventsOfType([]string{store.TypeSet, store.TypeCard, store.TypeCeremony}, each)
	} else {
		err = env.Log.Events("", each)
	}
	if err != nil {
		return rep, fmt.Errorf("verify attestations: %w", err)
	}
	for _, u := range uses {
		c := u.card
		name := fmt.Sprintf("event %d: ceremony %s share %d, %s", u.seq, idText(u.rec.ID), c.Index, who(c.Serial, c.Custodian))
		if c.Attestation == ([32]byte{}) {
			if u.rec.AllowUnattested {
				rep.Unattested++
			} else {
				rep.Problems = append(rep.Problems, name+": recorded without attestation in a ceremony that requires one")
			}
			continue
		}
		k := cardKey{c.Serial, fingerprintText(c.Key)}
		switch {
		case good[k][c.Attestation]:
			rep.Cards++
		case bad[k][c.Attestation] != "":
			rep.Problems = append(rep.Problems, name+": "+bad[k][c.Attestation])
		default:
			rep.Problems = append(rep.Problems, name+": no chain in the log for its attestation digest and key")
		}
	}
	if len(rep.Problems) > 0 {
		return rep, fmt.Errorf("verify attestations: %w: %d problems, the first: %s", ErrUnattested, len(rep.Problems), rep.Problems[0])
	}
	return rep, nil
}

// attestsRegistration checks that a verified attestation is for the card,
// slot and key a card event registers.
func attestsRegistration(a *cards.Attestation, reg store.CardRegistration) error {
	switch {
	case a.Fingerprint.String() != reg.Fingerprint:
		return errors.New("the chain attests another key than the one registered")
	case strconv.FormatUint(uint64(a.Serial), 10) != reg.Serial:
		return fmt.Errorf("the chain names card %d", a.Serial)
	case slotText(a.Slot) != reg.Slot:
		return fmt.Errorf("the chain is for slot %02x", a.Slot)
	}
	return nil
}

func shortKey(fp string) string {
	if len(fp) > 16 {
		return fp[:16]
	}
	return fp
}

// CardAttestation is what the log's chain says of one ceremony card's
// key: the chain recorded when its share was sealed (docs/FORMAT.md
// section 11) whose digest the record names.
type CardAttestation struct {
	Index  int
	Serial string
	// Summary is the attestation verified against Yubico's roots and
	// env.Roots: issuer, firmware, PIN and touch policy. "" when the card
	// is unattested or its chain is missing or fails.
	Summary string
	// Unattested: the record holds no attestation for the card (its
	// ceremony allows unattested cards).
	Unattested bool
	// Problem says why the chain is missing or does not verify.
	Problem string
}

// attestationsOf reads a ceremony's cards' attestations from the chains
// the log recorded for it: its own card events', and, for a ceremony
// enrolled to a custodian set, the chains of the set version its record
// names, when the log holds that version with the fingerprint the record
// names (nil without a log).
func attestationsOf(env *Env, rec *Record) []CardAttestation {
	if rec == nil {
		return nil
	}
	chains := map[[32]byte][]byte{}
	add := func(der []byte) {
		if cert, inter, err := cards.SplitAttestation(der); err == nil {
			chains[attestationDigest(cert, inter)] = der
		}
	}
	var logErr error
	setNote := "" // why the set version's chains are not at hand
	if env.Log != nil {
		logErr = env.Log.Events(idText(rec.ID), func(ev store.Event) error {
			if ev.Type != store.TypeCard {
				return nil
			}
			var reg store.CardRegistration
			if json.Unmarshal(ev.Body, &reg) != nil || len(reg.Attestation) == 0 {
				return nil
			}
			add(reg.Attestation)
			return nil
		})
		if errors.Is(logErr, store.ErrNotFound) {
			logErr = nil
		}
		if rec.Set != nil && logErr == nil {
			st, err := env.Log.SetVersion(rec.Set.Name, rec.Set.Version)
			switch {
			case errors.Is(err, store.ErrNotFound):
				setNote = fmt.Sprintf(" (the log does not hold set %s version %d, which the record names)", SafeText(rec.Set.Name), rec.Set.Version)
			case err != nil:
				logErr = err
			case st.Fingerprint != rec.Set.Fingerprint:
				setNote = fmt.Sprintf(" (the log's set %s version %d is not the one the record names: fingerprint %x, not %x)",
					SafeText(rec.Set.Name), rec.Set.Version, st.Fingerprint[:8], rec.Set.Fingerprint[:8])
			default:
				for _, c := range st.Set.Cards {
					if c.Attestation != nil {
						add(c.Attestation)
					}
				}
			}
		}
	}
	out := make([]CardAttestation, 0, len(rec.Cards))
	for _, c := range rec.Cards {
		ca := CardAttestation{Index: c.Index, Serial: c.Serial}
		switch chain, ok := chains[c.Attestation]; {
		case c.Attestation == ([32]byte{}):
			ca.Unattested = true
		case env.Log == nil:
			ca.Problem = "attested; the chain is in the ceremony log, which is not at hand"
		case logErr != nil:
			ca.Problem = safeLine(fmt.Sprintf("the log's chains are unreadable: %v", logErr))
		case !ok:
			ca.Problem = "the log holds no chain for its attestation digest" + setNote
		default:
			a, err := cards.VerifyAttestation(chain, env.Roots)
			if err == nil && a.Fingerprint != shares.Fingerprint(c.Key) {
				err = errors.New("the chain attests another key")
			}
			if err != nil {
				ca.Problem = safeLine(fmt.Sprintf("its chain in the log does not verify: %v", err))
			} else {
				ca.Summary = summaryOf(a)
			}
		}
		out = append(out, ca)
	}
	return out
}
