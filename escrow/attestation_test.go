package escrow

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/cards"
	"custos.dev/custos/store"
)

// rewrittenLog is the rig's log as a forger who rewrote it wholesale
// (recomputing every hash, so that its chain verifies) hands it over:
// Events yields the events given.
type rewrittenLog struct {
	Log
	events []store.Event
}

func (l *rewrittenLog) Events(ceremony string, fn func(store.Event) error) error {
	for _, ev := range l.events {
		if ceremony != "" && ev.Ceremony != ceremony {
			continue
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}

func logEvents(t *testing.T, l Log) []store.Event {
	t.Helper()
	var evs []store.Event
	if err := l.Events("", func(ev store.Event) error { evs = append(evs, ev); return nil }); err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestVerifyAttestations re-verifies, from the log alone, the chains an
// enrollment recorded and the records' digests of them; then a log
// rewritten wholesale (its hashes recomputed, so its own chain verifies)
// in each way that matters is caught, naming the card and the event.
func TestVerifyAttestations(t *testing.T) {
	r := newRig(t, 2, 3)
	rec := r.enroll(2, 3).Ceremony
	rep, err := VerifyAttestations(r.env)
	if err != nil || rep.Cards != 3 || len(rep.Chains) != 3 || rep.Unattested != 0 || len(rep.Problems) != 0 {
		t.Fatalf("VerifyAttestations = %+v, %v", rep, err)
	}
	for _, ch := range rep.Chains {
		if ch.Problem != "" || !strings.Contains(ch.Summary, "fake attestation root") || !strings.Contains(ch.Summary, "pin policy always") || ch.Ceremony != rec.IDString() {
			t.Errorf("chain %+v", ch)
		}
	}
	st := r.status()
	for _, c := range st.Cards {
		if c.Attestation.Summary == "" || c.Attestation.Problem != "" || c.Attestation.Unattested {
			t.Errorf("status: card %s attestation %+v", c.Serial, c.Attestation)
		}
	}

	// Yubico's roots alone: every virtual chain fails, by card and event.
	env := *r.env
	env.Roots = nil
	rep, err = VerifyAttestations(&env)
	if !errors.Is(err, ErrUnattested) || !failedCheck(err) || len(rep.Problems) != 6 || rep.Cards != 0 {
		t.Fatalf("without the roots: %+v, %v", rep, err)
	}
	if !strings.Contains(rep.Problems[0], "event ") || !strings.Contains(rep.Problems[0], "card 1000") {
		t.Errorf("problem %q does not name the event and the card", rep.Problems[0])
	}
	if st, _ := Status(context.Background(), &env); len(st.Problems) != 3 || !strings.Contains(st.Problems[0], "attestation") {
		t.Errorf("status without the roots: problems %q", st.Problems)
	}

	events := logEvents(t, r.log)
	var cardEvents, recordEvents []int
	for i, ev := range events {
		switch ev.Type {
		case store.TypeCard:
			cardEvents = append(cardEvents, i)
		case store.TypeCeremony:
			recordEvents = append(recordEvents, i)
		}
	}
	regOf := func(ev store.Event) store.CardRegistration {
		var reg store.CardRegistration
		if err := json.Unmarshal(ev.Body, &reg); err != nil {
			t.Fatal(err)
		}
		return reg
	}
	withReg := func(ev store.Event, reg store.CardRegistration) store.Event {
		b, err := json.Marshal(reg)
		if err != nil {
			t.Fatal(err)
		}
		ev.Body = b
		return ev
	}
	last := recordEvents[len(recordEvents)-1]
	_, active, err := store.ParseCeremonyEvent(events[last])
	if err != nil {
		t.Fatal(err)
	}
	withRecord := func(ev store.Event, rec *Record) store.Event {
		ev.Body = forgeRecord(t, StatusActive, rec)
		return ev
	}
	otherRoot, otherKey := newFakeRoot("a maker nobody trusts")

	for _, tc := range []struct {
		name  string
		forge func([]store.Event) []store.Event
		want  string
	}{
		{"a card's chain replaced by another card's", func(evs []store.Event) []store.Event {
			a, b := regOf(evs[cardEvents[0]]), regOf(evs[cardEvents[1]])
			a.Attestation = b.Attestation
			evs[cardEvents[0]] = withReg(evs[cardEvents[0]], a)
			return evs
		}, "attests another key"},
		{"a record's digest pointing at no chain", func(evs []store.Event) []store.Event {
			f := active.Clone()
			f.Cards[1].Attestation[0] ^= 1
			evs[last] = withRecord(evs[last], f)
			// The earlier records of the ceremony go: the forger kept
			// only the active one.
			out := evs[:0:0]
			for i, ev := range evs {
				if ev.Type == store.TypeCeremony && i != last {
					continue
				}
				out = append(out, ev)
			}
			return out
		}, "card 1001"},
		{"a record's attestations removed in a ceremony that requires them", func(evs []store.Event) []store.Event {
			// store's encoder refuses to write it: the forger writes
			// the JSON by hand.
			evs[last].Body = regexp.MustCompile(`"attestation":"[0-9a-f]{64}",`).ReplaceAll(bytes.Clone(evs[last].Body), nil)
			return evs
		}, "attestation: missing"},
		{"a chain of a maker nobody trusts", func(evs []store.Event) []store.Event {
			a := regOf(evs[cardEvents[2]])
			c := r.cards[2]
			a.Attestation = attestationChainUnder(otherRoot, otherKey, c.serial, 0x82, &c.slots[0x82].priv.PublicKey, piv.PINPolicyAlways)
			evs[cardEvents[2]] = withReg(evs[cardEvents[2]], a)
			// The record names the new chain: only the active record is
			// kept, rewritten.
			cert, inter, err := cards.SplitAttestation(a.Attestation)
			if err != nil {
				t.Fatal(err)
			}
			f := active.Clone()
			f.Cards[2].Attestation = attestationDigest(cert, inter)
			out := evs[:0:0]
			for i, ev := range evs {
				if ev.Type == store.TypeCeremony && i != last {
					continue
				}
				if i == last {
					ev = withRecord(ev, f)
				}
				out = append(out, ev)
			}
			return out
		}, "share 3, card 1002 (custodian carol): the chain of event"},
		{"a chain dropped", func(evs []store.Event) []store.Event {
			return append(evs[:cardEvents[1]:cardEvents[1]], evs[cardEvents[1]+1:]...)
		}, "no chain in the log"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			evs := tc.forge(append([]store.Event(nil), events...))
			env := *r.env
			env.Log = &rewrittenLog{Log: r.log, events: evs}
			rep, err := VerifyAttestations(&env)
			if !errors.Is(err, ErrUnattested) || !failedCheck(err) {
				t.Fatalf("VerifyAttestations = %+v, %v; want ErrUnattested", rep, err)
			}
			if !strings.Contains(strings.Join(rep.Problems, "\n"), tc.want) || !strings.Contains(rep.Problems[0], "event ") {
				t.Errorf("problems %q, want one saying %q, naming the event", rep.Problems, tc.want)
			}
		})
	}
}

// TestAttestationSummaryFiltered: an attestation's issuer is a
// certificate's text, which anyone making a card chooses: what custos shows
// of it carries no character that moves a terminal's cursor or reorders
// what it shows.
func TestAttestationSummaryFiltered(t *testing.T) {
	root, key := newFakeRoot("evil\x1b]0;owned\x07 maker\u202e\n root")
	pool := x509.NewCertPool()
	pool.AddCert(root)
	c := newFakeCard(t, 4242, "pin000")
	if _, err := c.Init(cards.InitOptions{PIN: []byte("pin000")}); err != nil {
		t.Fatal(err)
	}
	a, err := cards.VerifyAttestation(attestationChainUnder(root, key, 4242, 0x82, &c.slots[0x82].priv.PublicKey, piv.PINPolicyAlways), pool)
	if err != nil {
		t.Fatal(err)
	}
	if unclean(a.Issuer) == "" {
		t.Fatal("the test's issuer is clean already")
	}
	s := summaryOf(a)
	if bad := unclean(s); bad != "" || !strings.Contains(s, "maker") || !strings.HasSuffix(s, "; firmware 5.7.1; pin policy always, touch policy never") {
		t.Errorf("summaryOf = %q (%s)", s, bad)
	}
	if bad := unclean(safeLine("x509: \x1b[2J\u2028name")); bad != "" {
		t.Errorf("safeLine left %s", bad)
	}
}
