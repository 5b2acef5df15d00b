package store

import "fmt"

// TokenType is the LUKS2 token type of custos (docs/FORMAT.md section 10).
const TokenType = "custos"

// Token is a LUKS2 token of type custos as read (docs/FORMAT.md section
// 10, or the appendix for version 1).
type Token struct {
	// Keyslots are the keyslots the token is bound to: the record's
	// keyslot, or none once cryptsetup killed it.
	Keyslots []int
	// Record is the ceremony: no cards while it is open, all N once it is
	// complete. Record.Version is 1 for a version 1 token.
	Record *Record
	// Anchor is the log's head when the token was written; zero when a
	// version 1 token has none.
	Anchor Head
}

// CardCopy is the metadata a card's certificate carries in its extension
// (docs/FORMAT.md section 12): the record with this card alone, and the
// log's head just before the card's share was written.
type CardCopy struct {
	Record *Record
	Anchor Head
}

var (
	tokenMembers    = []string{"type", "keyslots", "record", "anchor"}
	cardCopyMembers = []string{"record", "anchor"}
	eventMembers    = []string{"status", "record"}
)

// EncodeToken returns the LUKS2 token of docs/FORMAT.md section 10 for
// rec, bound to rec.Keyslot and anchored at anchor. rec holds no cards
// (the ceremony is open) or all N. Errors are *FormatError.
func EncodeToken(rec *Record, anchor Head) ([]byte, error) {
	if rec == nil {
		return nil, &FormatError{Copy: CopyToken, Path: "record", Problem: "no record"}
	}
	return encodeToken(rec, anchor, []int{rec.Keyslot})
}

// encodeToken writes a token bound to keyslots: none, or the record's.
func encodeToken(rec *Record, anchor Head, keyslots []int) ([]byte, error) {
	if err := rec.check(CopyToken, "record"); err != nil {
		return nil, err
	}
	if len(rec.Cards) != 0 && len(rec.Cards) != rec.N {
		return nil, &FormatError{Copy: CopyToken, Path: "record.cards", Problem: tokenCardsProblem(rec)}
	}
	if anchor.Seq == 0 {
		return nil, &FormatError{Copy: CopyToken, Path: "anchor", Problem: "no anchor"}
	}
	var w writer
	w.b = make([]byte, 0, rec.size()+160)
	w.raw(`{"type":"custos","keyslots":[`)
	for i, k := range keyslots {
		if i > 0 {
			w.byte(',')
		}
		w.byte('"')
		w.uint(uint64(k))
		w.byte('"')
	}
	w.raw(`],"record":`)
	rec.write(&w)
	w.raw(`,"anchor":"`)
	w.raw(anchor.String())
	w.raw(`"}`)
	return w.b, nil
}

func tokenCardsProblem(rec *Record) string {
	return fmt.Sprintf("%d cards, want none (open) or all %d", len(rec.Cards), rec.N)
}

// ParseToken reads a LUKS2 token of type custos: version 2 (docs/FORMAT.md
// section 10), compact or indented as cryptsetup luksDump prints it (the
// whitespace outside strings is removed first), or version 1 (the
// appendix), which has a member custos_version. Both are read strictly:
// duplicate, unknown or case-variant members, trailing data,
// non-canonical base64 or hex, invalid UTF-8 and null are rejected. Errors
// are *FormatError naming the member, e.g. "record.cards[0].sealed".
func ParseToken(b []byte) (*Token, error) {
	if len(b) > maxCopySize {
		return nil, &FormatError{Copy: CopyToken, Problem: fmt.Sprintf("%d bytes, more than %d", len(b), maxCopySize)}
	}
	r := reader{b: stripWhitespace(b), copy: CopyToken}
	if err := r.start(""); err != nil {
		return nil, err
	}
	var t *Token
	var err error
	if topLevelHas(r.b, "custos_version") {
		r.v1 = true
		t, err = r.tokenV1()
	} else {
		t, err = r.token()
	}
	if err != nil {
		return nil, err
	}
	if err := r.end(""); err != nil {
		return nil, err
	}
	return t, nil
}

func (r *reader) token() (*Token, error) {
	var o object
	if err := o.open(r, "", tokenMembers, 1<<0|1<<1|1<<2|1<<3); err != nil {
		return nil, err
	}
	t := &Token{}
	for {
		j, err := o.next()
		if err != nil {
			return nil, err
		}
		if j < 0 {
			return t, nil
		}
		var p string
		switch j {
		case 0:
			_, p = r.lit(TokenType)
		case 1:
			if t.Keyslots, err = r.keyslots("keyslots"); err != nil {
				return nil, err
			}
		case 2:
			if t.Record, err = r.record("record"); err != nil {
				return nil, err
			}
			rec := t.Record
			if len(t.Keyslots) == 1 && t.Keyslots[0] != rec.Keyslot {
				return nil, r.fail("record.keyslot", fmt.Sprintf("keyslot %d, but the token is bound to keyslot %d", rec.Keyslot, t.Keyslots[0]))
			}
			if len(rec.Cards) != 0 && len(rec.Cards) != rec.N {
				return nil, r.fail("record.cards", tokenCardsProblem(rec))
			}
		case 3:
			var s []byte
			if s, p = r.str(); p == "" {
				t.Anchor, p = anchorProblem(s)
			}
		}
		if p != "" {
			return nil, o.failMember(p)
		}
	}
}

// keyslots reads a token's keyslots: [] or one keyslot number as a
// decimal string.
func (r *reader) keyslots(path string) ([]int, error) {
	var a array
	if err := a.open(r, path); err != nil {
		return nil, err
	}
	ks := []int{}
	for {
		more, err := a.next()
		if err != nil {
			return nil, err
		}
		if !more {
			return ks, nil
		}
		at := elem(path, a.n-1)
		if a.n > 1 && !r.v1 {
			return nil, r.fail(at, "more than one keyslot")
		}
		s, p := r.str()
		if p == "" {
			var v int
			v, p = decimalIn(s, 0, MaxKeyslot)
			ks = append(ks, v)
		}
		if p != "" {
			return nil, r.fail(at, p)
		}
	}
}

// decimalIn reads a canonical decimal number held in a string.
func decimalIn(s []byte, lo, hi uint64) (int, string) {
	v, p := decimal(s)
	if p != "" {
		return 0, p
	}
	if v < lo || v > hi {
		return 0, fmt.Sprintf("%d out of range %d-%d", v, lo, hi)
	}
	return int(v), ""
}

func decimal(s []byte) (uint64, string) {
	if len(s) == 0 {
		return 0, "empty number"
	}
	var v uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, "not a decimal number"
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, "out of range"
		}
		v = v*10 + d
	}
	if s[0] == '0' && len(s) > 1 {
		return 0, "leading zero"
	}
	return v, ""
}

// ParseAnchor reads an anchor (docs/FORMAT.md section 9) strictly:
// "SEQ:HASH", SEQ decimal from 1 without leading zeros, HASH 64 lower-case
// hex digits. ParseHead is the lenient reader of an anchor typed from
// paper. Errors are *FormatError.
func ParseAnchor(s string) (Head, error) {
	h, p := anchorProblem([]byte(s))
	if p != "" {
		return Head{}, &FormatError{Copy: CopyAnchor, Problem: p}
	}
	return h, nil
}

func anchorProblem(s []byte) (Head, string) {
	var h Head
	i := 0
	for i < len(s) && s[i] != ':' {
		i++
	}
	if i == len(s) {
		return h, "anchor without ':'"
	}
	seq, p := decimal(s[:i])
	if p != "" {
		return h, "anchor event number: " + p
	}
	if seq == 0 {
		return h, "anchor event number 0"
	}
	if p := hexDecode(h.Hash[:], s[i+1:]); p != "" {
		return h, "anchor hash: " + p
	}
	h.Seq = seq
	return h, ""
}

// EncodeCardCopy returns the JSON a card's certificate carries in its
// extension (docs/FORMAT.md section 12): rec, which holds exactly one card,
// and the anchor. Errors are *FormatError.
func EncodeCardCopy(rec *Record, anchor Head) ([]byte, error) {
	if err := rec.check(CopyCertificate, "record"); err != nil {
		return nil, err
	}
	if len(rec.Cards) != 1 {
		return nil, &FormatError{Copy: CopyCertificate, Path: "record.cards", Problem: cardCopyProblem(rec)}
	}
	if anchor.Seq == 0 {
		return nil, &FormatError{Copy: CopyCertificate, Path: "anchor", Problem: "no anchor"}
	}
	var w writer
	w.b = make([]byte, 0, rec.size()+100)
	w.raw(`{"record":`)
	rec.write(&w)
	w.raw(`,"anchor":"`)
	w.raw(anchor.String())
	w.raw(`"}`)
	return w.b, nil
}

func cardCopyProblem(rec *Record) string {
	return fmt.Sprintf("%d cards, want exactly one", len(rec.Cards))
}

// ParseCardCopy reads a certificate extension's JSON (docs/FORMAT.md
// section 12) strictly. Errors are *FormatError.
func ParseCardCopy(b []byte) (*CardCopy, error) {
	r := reader{b: b, copy: CopyCertificate}
	if err := r.start(""); err != nil {
		return nil, err
	}
	var o object
	if err := o.open(&r, "", cardCopyMembers, 1<<0|1<<1); err != nil {
		return nil, err
	}
	c := &CardCopy{}
	for {
		j, err := o.next()
		if err != nil {
			return nil, err
		}
		if j < 0 {
			break
		}
		var p string
		switch j {
		case 0:
			if c.Record, err = r.record("record"); err != nil {
				return nil, err
			}
			if len(c.Record.Cards) != 1 {
				return nil, r.fail("record.cards", cardCopyProblem(c.Record))
			}
		case 1:
			var s []byte
			if s, p = r.str(); p == "" {
				c.Anchor, p = anchorProblem(s)
			}
		}
		if p != "" {
			return nil, o.failMember(p)
		}
	}
	if err := r.end(""); err != nil {
		return nil, err
	}
	return c, nil
}

// encodeCeremonyBody returns a ceremony event's body (docs/FORMAT.md
// section 11): {"status":S,"record":R}.
func encodeCeremonyBody(status string, rec *Record) ([]byte, error) {
	if !validStatus(status) {
		return nil, &FormatError{Copy: CopyEvent, Path: "status", Problem: fmt.Sprintf("%q is not a status", clipText(status))}
	}
	if err := rec.check(CopyEvent, "record"); err != nil {
		return nil, err
	}
	var w writer
	w.b = make([]byte, 0, rec.size()+40)
	w.raw(`{"status":"`)
	w.raw(status)
	w.raw(`","record":`)
	rec.write(&w)
	w.byte('}')
	return w.b, nil
}

// ParseCeremonyEvent reads the body of a ceremony event: version 2
// ({"status":S,"record":R}) or the version 1 record of older logs (body
// beginning {"id":). It returns the status and the record (Version 1 for a
// version 1 body). Errors are *FormatError naming the event copy.
func ParseCeremonyEvent(ev Event) (status string, rec *Record, err error) {
	if ev.Type != TypeCeremony {
		return "", nil, &FormatError{Copy: CopyEvent, Problem: fmt.Sprintf("event type %q is not %q", clipText(ev.Type), TypeCeremony)}
	}
	return parseCeremonyBody(ev.Body)
}

func parseCeremonyBody(b []byte) (string, *Record, error) {
	if isV1Body(b) {
		return parseV1Body(b)
	}
	r := reader{b: b, copy: CopyEvent}
	if err := r.start(""); err != nil {
		return "", nil, err
	}
	var o object
	if err := o.open(&r, "", eventMembers, 1<<0|1<<1); err != nil {
		return "", nil, err
	}
	var status string
	var rec *Record
	for {
		j, err := o.next()
		if err != nil {
			return "", nil, err
		}
		if j < 0 {
			break
		}
		var p string
		switch j {
		case 0:
			status, p = r.lit(StatusOpen, StatusActive, StatusAbandoned, StatusRetired)
		case 1:
			if rec, err = r.record("record"); err != nil {
				return "", nil, err
			}
		}
		if p != "" {
			return "", nil, o.failMember(p)
		}
	}
	if err := r.end(""); err != nil {
		return "", nil, err
	}
	return status, rec, nil
}

// isV1Body tells a version 1 ceremony body, the version 1 record itself.
func isV1Body(b []byte) bool { return len(b) >= 6 && string(b[:6]) == `{"id":` }

// stripWhitespace removes JSON whitespace outside strings (a token as
// luksDump prints it). It returns b itself when there is none.
func stripWhitespace(b []byte) []byte {
	in := false
	var out []byte
	for i := 0; i < len(b); i++ {
		c := b[i]
		if in {
			switch c {
			case '\\':
				if out != nil {
					out = append(out, c)
				}
				i++
				if i < len(b) {
					c = b[i]
				} else {
					continue
				}
			case '"':
				in = false
			}
		} else {
			switch c {
			case ' ', '\t', '\n', '\r':
				if out == nil {
					out = append(make([]byte, 0, len(b)), b[:i]...)
				}
				continue
			case '"':
				in = true
			}
		}
		if out != nil {
			out = append(out, c)
		}
	}
	if out == nil {
		return b
	}
	return out
}

// topLevelHas reports whether the outermost object of b has a member of
// this name (escape-free), skipping nested values. Malformed input gives
// false; the strict reader then says what is wrong with it.
func topLevelHas(b []byte, name string) bool {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		case '"':
			j := i + 1
			for j < len(b) && b[j] != '"' {
				if b[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(b) {
				return false
			}
			if depth == 1 && j+1 < len(b) && b[j+1] == ':' && string(b[i+1:j]) == name {
				return true
			}
			i = j
		}
	}
	return false
}
