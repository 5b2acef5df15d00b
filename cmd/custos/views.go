package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"custos.dev/custos/escrow"
	"custos.dev/custos/store"
)

// The views of a ceremony that several commands show: the record and its
// cards, each card's outcome in a pass. Text and --json come from the same
// structs.

type cardRefView struct {
	Index       int    `json:"index"`
	Serial      string `json:"serial"`
	Slot        string `json:"slot"`
	Custodian   string `json:"custodian"`
	Fingerprint string `json:"fingerprint"`
	// Attestation is what the log's chain says of the card's key (when
	// the command read it): issuer, firmware, policies; "unattested"; or
	// why it does not verify.
	Attestation string `json:"attestation,omitempty"`
}

type ceremonyView struct {
	ID              string        `json:"id"`
	Status          string        `json:"status,omitempty"`
	Version         int           `json:"version"`
	Volume          string        `json:"volume"`
	K               int           `json:"k"`
	N               int           `json:"n"`
	Keyslot         int           `json:"keyslot"`
	Replaces        string        `json:"replaces,omitempty"`
	Set             *setRefView   `json:"set,omitempty"`
	AllowUnattested bool          `json:"allow_unattested,omitempty"`
	Cards           []cardRefView `json:"cards"`
}

func viewRecord(r *escrow.Record) *ceremonyView {
	if r == nil {
		return nil
	}
	v := &ceremonyView{ID: r.IDString(), Version: r.Version, Volume: r.VolumeString(), K: r.K, N: r.N, Keyslot: r.Keyslot,
		Replaces: r.ReplacesString(), Set: viewSetRef(r.Set), AllowUnattested: r.AllowUnattested, Cards: []cardRefView{}}
	for _, cr := range r.Cards {
		v.Cards = append(v.Cards, viewRef(cr))
	}
	return v
}

// viewRef shows a card of a record. Its custodian's name comes from a
// copy someone may have forged: it is filtered before it reaches a
// terminal (docs/FORMAT.md section 13).
func viewRef(cr escrow.RecordCard) cardRefView {
	return cardRefView{Index: cr.Index, Serial: escrow.SafeText(cr.Serial), Slot: fmt.Sprintf("%x", cr.Slot),
		Custodian: escrow.SafeText(cr.Custodian), Fingerprint: hex.EncodeToString(cr.Key[:])}
}

func (v *ceremonyView) writeText(w io.Writer, title string) {
	if v == nil {
		return
	}
	fmt.Fprintf(w, "%s %s\n  volume   %s\n  quorum   %d of %d\n  keyslot  %d\n", title, v.ID, v.Volume, v.K, v.N, v.Keyslot)
	if v.Set != nil {
		fmt.Fprintf(w, "  set      %s version %d\n", v.Set.Name, v.Set.Version)
	}
	if v.AllowUnattested {
		fmt.Fprintf(w, "  weakness cards without attestation are allowed\n")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SHARE\tCARD\tSLOT\tCUSTODIAN\tKEY FINGERPRINT")
	for _, c := range v.Cards {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\n", c.Index, c.Serial, c.Slot, c.Custodian, c.Fingerprint)
	}
	tw.Flush()
	writeAttestations(w, v.Cards)
}

// writeAttestations lists the cards' attestations, when known.
func writeAttestations(w io.Writer, cs []cardRefView) {
	for _, c := range cs {
		if c.Attestation != "" {
			fmt.Fprintf(w, "  attestation of card %s: %s\n", c.Serial, c.Attestation)
		}
	}
}

// withAttestations gives each card its attestation as the log's chain
// tells it.
func (v *ceremonyView) withAttestations(as []escrow.CardAttestation) *ceremonyView {
	if v == nil {
		return nil
	}
	for _, a := range as {
		for i := range v.Cards {
			if v.Cards[i].Index == a.Index {
				v.Cards[i].Attestation = attestationText(a)
			}
		}
	}
	return v
}

// attestationText shows a card's attestation (escrow filters what of it
// comes from a certificate).
func attestationText(a escrow.CardAttestation) string {
	switch {
	case a.Unattested:
		return "unattested (weakness: nothing proves its key was made on a genuine card)"
	case a.Problem != "":
		return "NOT VERIFIED: " + a.Problem
	}
	return a.Summary
}

type outcomeView struct {
	Serial    string `json:"serial"`
	Reader    string `json:"reader"`
	Custodian string `json:"custodian,omitempty"`
	Index     int    `json:"index,omitempty"`
	OK        bool   `json:"ok"`
	Problem   string `json:"problem,omitempty"`
}

func viewOutcomes(os []escrow.CardOutcome) []outcomeView {
	out := []outcomeView{}
	for _, o := range os {
		v := outcomeView{Serial: o.Serial, Reader: o.Reader, Custodian: escrow.SafeText(o.Custodian), Index: o.Index, OK: o.OK()}
		if o.Err != nil {
			v.Problem = message(o.Err)
		}
		out = append(out, v)
	}
	return out
}

func writeOutcomes(w io.Writer, os []outcomeView) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  CARD\tSHARE\tCUSTODIAN\tRESULT")
	for _, o := range os {
		res := "ok"
		if !o.OK {
			res = o.Problem
		}
		idx, who := "-", o.Custodian
		if o.Index > 0 {
			idx = strconv.Itoa(o.Index)
		}
		if who == "" {
			who = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", o.Serial, idx, who, res)
	}
	tw.Flush()
}

func anchorString(h store.Head) string {
	if h == (store.Head{}) {
		return ""
	}
	return h.String()
}
