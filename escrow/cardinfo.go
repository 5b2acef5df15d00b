package escrow

import (
	"fmt"

	"custos.dev/custos/store"
)

// SlotReport is one custody slot of a card, as its certificate tells it.
type SlotReport struct {
	Slot        uint8
	Fingerprint string
	// Ceremony, Volume, Index, K and N are what the slot's certificate
	// names; empty when it holds no custos share.
	Ceremony, Volume string
	Index, K, N      int
	// Version is the certificate's format version (1 or 2), 0 when none.
	Version int
	// Anchor is the certificate's anchor (zero for version 1, which has
	// none with an event number).
	Anchor store.Head
	// AnchorProblem says why the anchor fails against the log; "" when
	// it is good or there is no log holding the ceremony to check it
	// against (AnchorChecked says which).
	AnchorProblem string
	AnchorChecked bool
	// Problem says why the certificate does not decode.
	Problem string
}

// DescribeCard lists a card's custody slots with what each certificate
// names, and checks each version 2 anchor against the log when env.Log
// holds its ceremony. It asks for no PIN and writes nothing.
func DescribeCard(env *Env, card Card) ([]SlotReport, error) {
	slots, err := card.Custody()
	if err != nil {
		return nil, err
	}
	serial := serialOf(card)
	var out []SlotReport
	for _, s := range slots {
		sr := SlotReport{Slot: s.Slot, Fingerprint: s.Fingerprint.String()}
		if s.Cert != nil {
			rec, anchor, err := decodeSlotCert(serial, s.Slot, s.Cert)
			if err != nil {
				sr.Problem = safeText(err.Error())
			} else {
				e := rec.Cards[0]
				sr.Ceremony, sr.Volume, sr.Index, sr.K, sr.N = rec.IDString(), rec.VolumeString(), e.Index, rec.K, rec.N
				sr.Version, sr.Anchor = rec.Version, anchor
				if env != nil && env.Log != nil && rec.Version >= 2 {
					if st, err := env.Log.Ceremony(rec.IDString()); err == nil {
						sr.AnchorChecked = true
						// The anchor covers the log up to the card's
						// writing, not its own entry: compare that with
						// the log's record.
						err := env.Log.CheckAnchor(anchor, rec)
						if err == nil {
							if d := differences(rec, st.Record); len(d) > 0 {
								err = fmt.Errorf("the certificate's %s differs from the log's record", d[0])
							}
						}
						if err != nil {
							sr.AnchorProblem = safeText(fmt.Sprint(err))
						}
					}
				}
			}
		}
		out = append(out, sr)
	}
	return out, nil
}
