package store

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"
)

// ExportJSONL writes events as JSON Lines: the whole log if ceremony is "",
// else the events of that ceremony. Each line is an event's record exactly
// as stored and hashed, so the SHA-256 of a line (without its newline) is
// the event's hash, and the "prev" of each line of a whole-log export is the
// hash of the line before. Every event's stored hash is checked on the way;
// an altered event stops the export with a *ChainError.
func (l *Log) ExportJSONL(w io.Writer, ceremony string) error {
	bw := bufio.NewWriter(w)
	err := l.view(func(r kvRead) error {
		return walkEventsRaw(r, ceremony, func(rec []byte) error {
			if _, err := bw.Write(rec); err != nil {
				return err
			}
			return bw.WriteByte('\n')
		})
	})
	if err != nil {
		return fmt.Errorf("export ceremony log: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("export ceremony log: %w", err)
	}
	return nil
}

// walkEventsRaw is walkEvents handing over the record bytes (a copy).
func walkEventsRaw(r kvRead, ceremony string, fn func(rec []byte) error) error {
	if ceremony == "" {
		// The whole log: the records as the scan reads them.
		return r.scan(bucketEvents, nil, nil, func(k, v []byte) error {
			seq, ok := keySeq(k)
			if !ok {
				return &ChainError{Problem: fmt.Sprintf("event key %x is not an event number", k), Err: ErrBrokenChain}
			}
			if _, err := decodeStored(seq, v); err != nil {
				return &ChainError{Seq: seq, Problem: err.Error(), Err: ErrBrokenChain}
			}
			return fn(append([]byte{}, v[len(Hash{}):]...))
		})
	}
	return walkEvents(r, ceremony, func(ev Event) error {
		v, err := r.get(bucketEvents, seqKey(ev.Seq))
		if err != nil {
			return err
		}
		return fn(append([]byte{}, v[len(Hash{}):]...))
	})
}

// Transcript writes one ceremony as plain text fit to print and sign: the
// volume, k and n, each card by serial and key fingerprint with its
// custodian, each step with its time, the head hash after the ceremony's
// last event (the anchor), and signature lines for each custodian and for
// witnesses. Names from the log pass through the filter of
// docs/FORMAT.md section 13 (ShowText) on the way.
func (l *Log) Transcript(w io.Writer, ceremony string) error {
	var st CeremonyState
	var events []Event
	var logHead Head
	err := l.view(func(r kvRead) error {
		var err error
		if st, err = readCeremony(r, ceremony); err != nil {
			return err
		}
		if logHead, err = readHead(r); err != nil {
			return err
		}
		return walkEvents(r, ceremony, func(ev Event) error {
			events = append(events, ev)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("transcript: %w", err)
	}
	var b bytes.Buffer
	writeTranscript(&b, l.path, st, events, logHead)
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("transcript: %w", err)
	}
	return nil
}

const transcriptWidth = 78

func writeTranscript(b *bytes.Buffer, path string, st CeremonyState, events []Event, logHead Head) {
	rec := st.Record
	rule := strings.Repeat("=", transcriptWidth) + "\n"
	section := func(title string) { fmt.Fprintf(b, "\n%s\n%s\n", title, strings.Repeat("-", len(title))) }
	custodian := func(c *RecordCard) string {
		if c.Custodian == "" {
			return "(custodian not recorded)"
		}
		return ShowText(c.Custodian)
	}

	b.WriteString(rule)
	b.WriteString("CUSTOS KEY CEREMONY TRANSCRIPT\n")
	b.WriteString(rule)
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Ceremony\t%s\n", rec.IDString())
	fmt.Fprintf(tw, "Volume (LUKS UUID)\t%s\n", rec.VolumeString())
	fmt.Fprintf(tw, "Quorum\t%d of %d custodians (k=%d, n=%d)\n", rec.K, rec.N, rec.K, rec.N)
	if rec.Keyslot >= 0 {
		fmt.Fprintf(tw, "Recovery keyslot\t%d\n", rec.Keyslot)
	} else {
		fmt.Fprintf(tw, "Recovery keyslot\tnot yet added\n")
	}
	fmt.Fprintf(tw, "Status\t%s\n", st.Status)
	if r := rec.ReplacesString(); r != "" {
		fmt.Fprintf(tw, "Replaces\t%s\n", r)
	}
	if st.ReplacedBy != "" {
		fmt.Fprintf(tw, "Replaced by\t%s\n", st.ReplacedBy)
	}
	if rec.Set != nil {
		fmt.Fprintf(tw, "Custodian set\t%s version %d\n", rec.Set.Name, rec.Set.Version)
	}
	if rec.AllowUnattested {
		fmt.Fprintf(tw, "Attestation\tnot required (--allow-unattested or a version 1 record)\n")
	}
	fmt.Fprintf(tw, "Record version\t%d\n", rec.Version)
	fmt.Fprintf(tw, "Log file\t%s\n", path)
	tw.Flush()
	if rec.Salt != "" {
		field(b, 0, 20, "Keyslot salt", groups(rec.Salt))
	}
	if rec.Digest != ([32]byte{}) {
		field(b, 0, 20, "Digest", groups(hex.EncodeToString(rec.Digest[:])))
	}
	if rec.Set != nil {
		field(b, 0, 20, "Set fingerprint", groups(hex.EncodeToString(rec.Set.Fingerprint[:])))
	}

	section("Cards")
	if len(rec.Cards) == 0 {
		b.WriteString("(none recorded)\n")
	}
	for i := range rec.Cards {
		c := &rec.Cards[i]
		fmt.Fprintf(b, "Share %d of %d: %s\n", c.Index, rec.N, custodian(c))
		field(b, 2, 21, "Card serial", fmt.Sprintf("%s (slot %02x)", c.Serial, c.Slot))
		field(b, 2, 21, "Key fingerprint", groups(hex.EncodeToString(c.Key[:])))
		if c.Attestation != ([32]byte{}) {
			field(b, 2, 21, "Attestation", groups(hex.EncodeToString(c.Attestation[:])))
		}
		if c.Commitment != ([32]byte{}) {
			field(b, 2, 21, "Share commitment", groups(hex.EncodeToString(c.Commitment[:])))
		}
	}

	section("Steps (times in UTC)")
	for _, ev := range events {
		fmt.Fprintf(b, "%5d  %s  %s\n", ev.Seq, ev.Time.UTC().Format(time.DateTime), ShowText(ev.Actor))
		for _, line := range wrap(describe(ev), transcriptWidth-7) {
			fmt.Fprintf(b, "       %s\n", line)
		}
	}

	section("Anchor")
	if n := len(events); n > 0 {
		last := events[n-1]
		fmt.Fprintf(b, "Head of the log after this ceremony's last step (event %d):\n\n", last.Seq)
		fmt.Fprintf(b, "    %s\n\n", last.Head())
		fmt.Fprintf(b, "read aloud in groups:\n\n    %s\n", groups(last.Hash.String()))
		b.WriteString("\nThe same anchor is kept in the volume's LUKS2 token and on each card;\n" +
			"any one copy lets an auditor check that the log still holds this\n" +
			"ceremony as printed here.\n")
	}
	fmt.Fprintf(b, "\nLog head when this transcript was printed (event %d):\n    %s\n", logHead.Seq, logHead.Hash)

	section("Signatures")
	b.WriteString("By signing, each person confirms the steps above took place as printed.\n\n")
	b.WriteString("Custodians\n\n")
	for i := range rec.Cards {
		c := &rec.Cards[i]
		fmt.Fprintf(b, "  %s (card %s, share %d)\n\n", custodian(c), c.Serial, c.Index)
		b.WriteString("  Signature ______________________________  Date ______________\n\n")
	}
	b.WriteString("Witnesses\n\n")
	for range 3 {
		b.WriteString("  Name _________________________________\n\n")
		b.WriteString("  Signature ______________________________  Date ______________\n\n")
	}
	b.WriteString(rule)
}

// describe says in a few words what an event did. Text from the event
// passes through ShowText's character filter.
func describe(ev Event) string {
	switch ev.Type {
	case TypeCeremony:
		if status, rec, err := parseCeremonyBody(ev.Body); err == nil {
			s := fmt.Sprintf("ceremony %s: %d of %d cards", status, len(rec.Cards), rec.N)
			if rec.Keyslot >= 0 {
				s += fmt.Sprintf(", keyslot %d", rec.Keyslot)
			}
			if rec.Salt != "" {
				s += " (salt recorded)"
			}
			return s
		}
	case TypeCard:
		var reg CardRegistration
		if json.Unmarshal(ev.Body, &reg) == nil {
			return fmt.Sprintf("card %s registered to %s, slot %s", ShowText(reg.Serial), ShowText(reg.Custodian), ShowText(reg.Slot))
		}
	case TypeRollcall:
		var rc Rollcall
		if json.Unmarshal(ev.Body, &rc) == nil {
			if rc.OK {
				return fmt.Sprintf("rollcall: card %s opened its share", ShowText(rc.Serial))
			}
			return fmt.Sprintf("rollcall: card %s failed: %s", ShowText(rc.Serial), ShowText(rc.Reason))
		}
	}
	if string(ev.Body) == "{}" {
		return ev.Type
	}
	return ev.Type + " " + filterRunes(string(ev.Body), printableRune)
}

// ShowText is the filter of docs/FORMAT.md section 13, for a name or
// label from any copy on its way to a terminal or a transcript: every
// character outside section 7's text rule, and every byte of invalid
// UTF-8, becomes '?'; text longer than 64 bytes is cut and ends in "...".
func ShowText(s string) string {
	s = filterRunes(s, textRune)
	if len(s) > maxText {
		cut := maxText - 3
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// printableRune allows what a JSON body may show: a space or any
// character in L, M, N, P or S (no control, format or separator
// characters).
func printableRune(c rune) bool {
	return c == ' ' || unicode.In(c, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S)
}

// filterRunes replaces every character allow refuses, and every byte of
// invalid UTF-8, with '?'.
func filterRunes(s string, allow func(rune) bool) string {
	ok := true
	for _, c := range s {
		if c == utf8.RuneError || !allow(c) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); {
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size <= 1 || !allow(c) {
			sb.WriteByte('?')
		} else {
			sb.WriteString(s[i : i+size])
		}
		i += size
	}
	return sb.String()
}

// field writes a label at column margin and a value at column indent,
// wrapping the value under itself.
func field(b *bytes.Buffer, margin, indent int, label, value string) {
	lines := wrap(value, transcriptWidth-indent)
	fmt.Fprintf(b, "%s%-*s%s\n", strings.Repeat(" ", margin), indent-margin, label, lines[0])
	for _, l := range lines[1:] {
		fmt.Fprintf(b, "%s%s\n", strings.Repeat(" ", indent), l)
	}
}

// wrap breaks s at spaces into lines of at most width bytes, cutting words
// longer than that.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		for len(w) > width {
			if line != "" {
				lines = append(lines, line)
				line = ""
			}
			lines = append(lines, w[:width])
			w = w[width:]
		}
		switch {
		case line == "":
			line = w
		case len(line)+1+len(w) <= width:
			line += " " + w
		default:
			lines = append(lines, line)
			line = w
		}
	}
	if line != "" || len(lines) == 0 {
		lines = append(lines, line)
	}
	return lines
}

// groups splits a long hex string into groups of eight for reading aloud.
func groups(s string) string {
	if len(s) <= 16 {
		return s
	}
	var parts []string
	for len(s) > 8 {
		parts = append(parts, s[:8])
		s = s[8:]
	}
	return strings.Join(append(parts, s), " ")
}
