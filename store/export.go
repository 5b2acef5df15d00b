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

	bolt "go.etcd.io/bbolt"
)

// ExportJSONL writes events as JSON Lines: the whole log if ceremony is "",
// else the events of that ceremony. Each line is an event's record exactly
// as stored and hashed, so the SHA-256 of a line (without its newline) is
// the event's hash, and the "prev" of each line of a whole-log export is the
// hash of the line before. Every event's stored hash is checked on the way;
// an altered event stops the export with a *ChainError.
func (l *Log) ExportJSONL(w io.Writer, ceremony string) error {
	bw := bufio.NewWriter(w)
	err := l.view(func(btx *bolt.Tx) error {
		return walkEventsRaw(btx, ceremony, func(rec []byte) error {
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
func walkEventsRaw(btx *bolt.Tx, ceremony string, fn func(rec []byte) error) error {
	events := btx.Bucket(bucketEvents)
	return walkEvents(btx, ceremony, func(ev Event) error {
		v := events.Get(seqKey(ev.Seq))
		return fn(append([]byte{}, v[len(Hash{}):]...))
	})
}

// Transcript writes one ceremony as plain text fit to print and sign: the
// volume, k and n, each card by serial and key fingerprint with its
// custodian, each step with its time, the head hash after the ceremony's
// last event (the anchor), and signature lines for each custodian and for
// witnesses.
func (l *Log) Transcript(w io.Writer, ceremony string) error {
	var rec CeremonyRecord
	var events []Event
	var logHead Head
	err := l.view(func(btx *bolt.Tx) error {
		if err := readJSON(btx, bucketCeremonies, ceremony, "ceremony", &rec); err != nil {
			return err
		}
		var ok bool
		if logHead, ok = decodeHead(btx.Bucket(bucketMeta).Get(keyHead)); !ok {
			return &ChainError{Problem: "head record is missing or malformed", Err: ErrBrokenChain}
		}
		return walkEvents(btx, ceremony, func(ev Event) error {
			events = append(events, ev)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("transcript: %w", err)
	}
	var b bytes.Buffer
	writeTranscript(&b, l.path, rec, events, logHead)
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("transcript: %w", err)
	}
	return nil
}

const transcriptWidth = 78

func writeTranscript(b *bytes.Buffer, path string, rec CeremonyRecord, events []Event, logHead Head) {
	rule := strings.Repeat("=", transcriptWidth) + "\n"
	section := func(title string) { fmt.Fprintf(b, "\n%s\n%s\n", title, strings.Repeat("-", len(title))) }

	b.WriteString(rule)
	b.WriteString("CUSTOS KEY CEREMONY TRANSCRIPT\n")
	b.WriteString(rule)
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Ceremony\t%s\n", rec.ID)
	fmt.Fprintf(tw, "Volume (LUKS UUID)\t%s\n", rec.VolumeUUID)
	fmt.Fprintf(tw, "Quorum\t%d of %d custodians (k=%d, n=%d)\n", rec.K, rec.N, rec.K, rec.N)
	if rec.Keyslot >= 0 {
		fmt.Fprintf(tw, "Recovery keyslot\t%d\n", rec.Keyslot)
	} else {
		fmt.Fprintf(tw, "Recovery keyslot\tnot yet added\n")
	}
	fmt.Fprintf(tw, "Status\t%s\n", rec.Status)
	if rec.Replaces != "" {
		fmt.Fprintf(tw, "Replaces\t%s\n", rec.Replaces)
	}
	if rec.ReplacedBy != "" {
		fmt.Fprintf(tw, "Replaced by\t%s\n", rec.ReplacedBy)
	}
	if len(rec.Digest) > 0 {
	}
	fmt.Fprintf(tw, "Log file\t%s\n", path)
	tw.Flush()
	if len(rec.Digest) > 0 {
		field(b, 0, 20, "Digest", groups(hex.EncodeToString(rec.Digest)))
	}

	section("Cards")
	if len(rec.Cards) == 0 {
		b.WriteString("(none recorded)\n")
	}
	for _, c := range rec.Cards {
		slot := c.Slot
		if slot == "" {
			slot = "-"
		}
		fmt.Fprintf(b, "Share %d of %d: %s\n", c.Index, rec.N, c.Custodian)
		field(b, 2, 21, "Card serial", c.Serial+" (slot "+slot+")")
		field(b, 2, 21, "Key fingerprint", groups(c.Fingerprint))
		if len(c.Commitment) > 0 {
			field(b, 2, 21, "Share commitment", groups(hex.EncodeToString(c.Commitment)))
		}
	}

	section("Steps (times in UTC)")
	for _, ev := range events {
		fmt.Fprintf(b, "%5d  %s  %s\n", ev.Seq, ev.Time.UTC().Format(time.DateTime), ev.Actor)
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
	for _, c := range rec.Cards {
		fmt.Fprintf(b, "  %s (card %s, share %d)\n\n", c.Custodian, c.Serial, c.Index)
		b.WriteString("  Signature ______________________________  Date ______________\n\n")
	}
	b.WriteString("Witnesses\n\n")
	for range 3 {
		b.WriteString("  Name _________________________________\n\n")
		b.WriteString("  Signature ______________________________  Date ______________\n\n")
	}
	b.WriteString(rule)
}

// describe says in a few words what an event did.
func describe(ev Event) string {
	switch ev.Type {
	case TypeCeremony:
		var rec CeremonyRecord
		if json.Unmarshal(ev.Body, &rec) == nil {
			return fmt.Sprintf("ceremony %s: %d of %d cards, keyslot %d", rec.Status, len(rec.Cards), rec.N, rec.Keyslot)
		}
	case TypeCard:
		var reg CardRegistration
		if json.Unmarshal(ev.Body, &reg) == nil {
			return fmt.Sprintf("card %s registered to %s, slot %s", reg.Serial, reg.Custodian, reg.Slot)
		}
	case TypeRollcall:
		var rc Rollcall
		if json.Unmarshal(ev.Body, &rc) == nil {
			if rc.OK {
				return fmt.Sprintf("rollcall: card %s opened its share", rc.Serial)
			}
			return fmt.Sprintf("rollcall: card %s failed: %s", rc.Serial, rc.Reason)
		}
	}
	if string(ev.Body) == "{}" {
		return ev.Type
	}
	return ev.Type + " " + string(ev.Body)
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
