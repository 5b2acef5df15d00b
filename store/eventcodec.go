package store

import (
	"crypto/sha256"
	"time"
	"unicode/utf8"
)

// This file reads an event's record (docs/FORMAT.md section 11) without
// reflection: one pass over the bytes that accepts exactly the records
// decodeRecordJSON accepts — the canonical encoding/json form — and
// nothing else. A record it does not accept goes to decodeRecordJSON,
// which says why; FuzzEventDecoders checks that the two agree.

// rawEvent is a record read in place: its byte members are slices of the
// record.
type rawEvent struct {
	seq      uint64
	time     clock  // read; when() makes it a time.Time
	actor    []byte // the JSON string's bytes, escapes and all
	actorEsc bool   // actor holds an escape
	typ      []byte
	ceremony []byte // nil: no ceremony member
	body     []byte
	prev     Hash
}

// parseRecordFast reads rec in the canonical form; ok false when it is not
// exactly that form.
func parseRecordFast(rec []byte, ev *rawEvent) bool {
	if len(rec) > maxRecordLen {
		return false
	}
	p := recParser{b: rec}
	if !p.lit(`{"seq":`) {
		return false
	}
	var ok bool
	if ev.seq, ok = p.seq(); !ok {
		return false
	}
	if !p.lit(`,"time":"`) {
		return false
	}
	if ev.time, ok = p.time(); !ok {
		return false
	}
	if !p.lit(`","actor":"`) {
		return false
	}
	if ev.actor, ev.actorEsc, ok = p.jsonString(); !ok {
		return false
	}
	if !p.lit(`,"type":"`) {
		return false
	}
	start := p.i
	for p.i < len(p.b) && p.b[p.i] != '"' {
		p.i++
	}
	ev.typ = p.b[start:p.i]
	if !validType(string(ev.typ)) || !p.lit(`"`) {
		return false
	}
	ev.ceremony = nil
	if p.lit(`,"ceremony":"`) {
		start := p.i
		for p.i < len(p.b) && p.b[p.i] != '"' {
			p.i++
		}
		ev.ceremony = p.b[start:p.i]
		if !validID(string(ev.ceremony)) || !p.lit(`"`) {
			return false
		}
	}
	if !p.lit(`,"body":`) {
		return false
	}
	start = p.i
	if !p.peek('{') || !p.value(1) { // depth 1: inside the record's object
		return false
	}
	ev.body = p.b[start:p.i]
	if len(ev.body) > maxBodyLen || !p.lit(`,"prev":"`) {
		return false
	}
	if p.i+len(Hash{})*2+2 != len(p.b) || p.b[len(p.b)-2] != '"' || p.b[len(p.b)-1] != '}' {
		return false
	}
	if !decodeLowerHex(ev.prev[:], p.b[p.i:p.i+64]) {
		return false
	}
	// The actor's text rule (checkFields): valid UTF-8 without control
	// characters, 1 to maxActorLen bytes once unescaped.
	if !ev.actorEsc && plainASCII(ev.actor) {
		return len(ev.actor) > 0 && len(ev.actor) <= maxActorLen
	}
	return checkText("actor", ev.actorString(), maxActorLen) == nil
}

// plainASCII reports whether b holds only printable ASCII (no control
// character, which checkText refuses).
func plainASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// hexNibble maps each lowercase hex digit to its value, anything else to
// 0xff.
var hexNibble = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c - 'a' + 10)
	}
	return t
}()

// decodeLowerHex decodes src, 2*len(dst) lowercase hex digits, into dst.
func decodeLowerHex(dst, src []byte) bool {
	if len(src) != 2*len(dst) {
		return false
	}
	var bad byte
	for i := range dst {
		hi, lo := hexNibble[src[2*i]], hexNibble[src[2*i+1]]
		bad |= hi | lo
		dst[i] = hi<<4 | lo
	}
	return bad&0xf0 == 0
}

// actorString returns the actor's value.
func (ev *rawEvent) actorString() string {
	if !ev.actorEsc {
		return string(ev.actor)
	}
	s, _ := unescapeCanonical(ev.actor)
	return s
}

// event returns the Event, its byte members copied; hash is the record's
// SHA-256.
func (ev *rawEvent) event(hash Hash) Event {
	e := Event{
		Seq:   ev.seq,
		Time:  ev.time.when(),
		Actor: ev.actorString(),
		Type:  string(ev.typ),
		Body:  append([]byte(nil), ev.body...),
		Prev:  ev.prev,
		Hash:  hash,
	}
	if ev.ceremony != nil {
		e.Ceremony = string(ev.ceremony)
	}
	return e
}

// decodeRecord parses one event record (a line of the JSON Lines export).
// It accepts only the canonical encoding that encodeRecord writes, so that
// every reader of a record sees the same event. The returned event's Hash is
// the SHA-256 of rec. The result shares no memory with rec.
func decodeRecord(rec []byte) (Event, error) {
	var raw rawEvent
	if parseRecordFast(rec, &raw) {
		return raw.event(sha256.Sum256(rec)), nil
	}
	return decodeRecordJSON(rec)
}

type recParser struct {
	b []byte
	i int
}

func (p *recParser) peek(c byte) bool { return p.i < len(p.b) && p.b[p.i] == c }

func (p *recParser) lit(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// seq reads a canonical decimal uint64 other than 0.
func (p *recParser) seq() (uint64, bool) {
	start := p.i
	var v uint64
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		d := uint64(p.b[p.i] - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
		p.i++
	}
	n := p.i - start
	if n == 0 || p.b[start] == '0' {
		return 0, false // empty, 0, or a leading zero
	}
	return v, true
}

// clock is a time as a record writes it, its fields checked.
type clock struct {
	year, month, day, hour, minute, sec, nsec int
}

// when returns the time (UTC).
func (c clock) when() time.Time {
	return time.Date(c.year, time.Month(c.month), c.day, c.hour, c.minute, c.sec, c.nsec, time.UTC)
}

// daysIn is the number of days of month m (1-12) of year y.
func daysIn(m, y int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// time reads what time.RFC3339Nano writes for a UTC time:
// YYYY-MM-DDTHH:MM:SS[.F]Z, F 1 to 9 digits without a trailing zero.
func (p *recParser) time() (clock, bool) {
	b := p.b[p.i:]
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return clock{}, false
	}
	bad := false
	num := func(s []byte) int {
		v := 0
		for _, c := range s {
			bad = bad || c < '0' || c > '9'
			v = v*10 + int(c-'0')
		}
		return v
	}
	c := clock{year: num(b[0:4]), month: num(b[5:7]), day: num(b[8:10]), hour: num(b[11:13]), minute: num(b[14:16]), sec: num(b[17:19])}
	if bad {
		return clock{}, false
	}
	n := 19
	if b[n] == '.' {
		n++
		digits := 0
		for n < len(b) && b[n] >= '0' && b[n] <= '9' {
			if digits == 9 {
				return clock{}, false
			}
			c.nsec = c.nsec*10 + int(b[n]-'0')
			digits++
			n++
		}
		if digits == 0 || b[n-1] == '0' {
			return clock{}, false
		}
		for i := digits; i < 9; i++ {
			c.nsec *= 10
		}
	}
	if n >= len(b) || b[n] != 'Z' {
		return clock{}, false
	}
	if c.month < 1 || c.month > 12 || c.day < 1 || c.day > daysIn(c.month, c.year) || c.hour > 23 || c.minute > 59 || c.sec > 59 {
		return clock{}, false // a day beyond the month's among them
	}
	p.i += n + 1
	return c, true
}

// jsonString reads a string as encoding/json writes it with HTML escaping
// (the opening quote already read): raw bytes other than '"', '\\', '<',
// '>', '&', controls and U+2028/U+2029, or exactly the escapes
// encoding/json uses for those. It returns the bytes between the quotes.
func (p *recParser) jsonString() ([]byte, bool, bool) {
	start := p.i
	esc := false
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if !utf8.Valid(s) {
				return nil, false, false
			}
			return s, esc, true
		case c == '\\':
			n := canonicalEscape(p.b[p.i:])
			if n == 0 {
				return nil, false, false
			}
			esc = true
			p.i += n
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			return nil, false, false
		case c == 0xE2 && p.i+2 < len(p.b) && p.b[p.i+1] == 0x80 && p.b[p.i+2]&^1 == 0xA8:
			return nil, false, false
		default:
			p.i++
		}
	}
	return nil, false, false
}

// canonicalEscape returns the length of the escape at the start of b when
// it is one encoding/json writes (with HTML escaping), 0 otherwise.
func canonicalEscape(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	switch b[1] {
	case '"', '\\', 'b', 'f', 'n', 'r', 't':
		return 2
	case 'u':
		if len(b) < 6 {
			return 0
		}
		switch string(b[2:6]) {
		case "003c", "003e", "0026", "2028", "2029":
			return 6
		}
		if b[2] == '0' && b[3] == '0' && (b[4] == '0' || b[4] == '1') && isLowerHex(b[5]) {
			// \u00XX for the controls without a short escape.
			switch hexVal(b[4])<<4 | hexVal(b[5]) {
			case '\b', '\f', '\n', '\r', '\t':
				return 0
			}
			if b[4] == '0' || b[4] == '1' {
				return 6
			}
		}
	}
	return 0
}

func isLowerHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

func hexVal(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}

// unescapeCanonical returns the value of a string's bytes holding only
// canonical escapes.
func unescapeCanonical(s []byte) (string, bool) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		n := canonicalEscape(s[i:])
		if n == 0 {
			return "", false
		}
		switch s[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			var v rune
			for _, h := range s[i+2 : i+6] {
				v = v<<4 | rune(hexVal(h))
			}
			out = utf8.AppendRune(out, v)
		default:
			out = append(out, s[i+1])
		}
		i += n
	}
	return string(out), true
}

// maxNesting is encoding/json's limit on nested arrays and objects.
const maxNesting = 10000

// value reads one JSON value in compact form as encoding/json's compact
// with HTML escaping leaves it: no whitespace outside strings, no '<',
// '>', '&' or U+2028/U+2029 anywhere. Strings may hold any escape and any
// other byte from 0x20 on (invalid UTF-8 included, as encoding/json's
// scanner allows). depth is the nesting of the value's container.
func (p *recParser) value(depth int) bool {
	if p.i >= len(p.b) {
		return false
	}
	switch c := p.b[p.i]; {
	case c == '{':
		if depth+1 > maxNesting {
			return false
		}
		p.i++
		if p.peek('}') {
			p.i++
			return true
		}
		for {
			if !p.peek('"') {
				return false
			}
			p.i++
			if !p.bodyString() || !p.lit(":") || !p.value(depth+1) {
				return false
			}
			if p.peek(',') {
				p.i++
				continue
			}
			return p.lit("}")
		}
	case c == '[':
		if depth+1 > maxNesting {
			return false
		}
		p.i++
		if p.peek(']') {
			p.i++
			return true
		}
		for {
			if !p.value(depth + 1) {
				return false
			}
			if p.peek(',') {
				p.i++
				continue
			}
			return p.lit("]")
		}
	case c == '"':
		p.i++
		return p.bodyString()
	case c == 't':
		return p.lit("true")
	case c == 'f':
		return p.lit("false")
	case c == 'n':
		return p.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return false
}

// plainByte marks the bytes a string in a body holds as they are: not
// '"', '\\', a control, '<', '>', '&' or 0xE2 (which may start U+2028 or
// U+2029, looked at closely).
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' && c != 0xE2
	}
	return t
}()

// bodyString reads the rest of a string inside a body (the opening quote
// read).
func (p *recParser) bodyString() bool {
	for p.i < len(p.b) {
		// The common run of plain bytes, eight at a time.
		b, i := p.b, p.i
		for i+8 <= len(b) && plainByte[b[i]] && plainByte[b[i+1]] && plainByte[b[i+2]] && plainByte[b[i+3]] &&
			plainByte[b[i+4]] && plainByte[b[i+5]] && plainByte[b[i+6]] && plainByte[b[i+7]] {
			i += 8
		}
		for i < len(b) && plainByte[b[i]] {
			i++
		}
		p.i = i
		if p.i >= len(p.b) {
			return false
		}
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return true
		case c == '\\':
			if p.i+1 >= len(p.b) {
				return false
			}
			switch p.b[p.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				if p.i+6 > len(p.b) {
					return false
				}
				for _, h := range p.b[p.i+2 : p.i+6] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return false
					}
				}
				p.i += 6
			default:
				return false
			}
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			return false
		case c == 0xE2 && p.i+2 < len(p.b) && p.b[p.i+1] == 0x80 && p.b[p.i+2]&^1 == 0xA8:
			return false
		default:
			p.i++
		}
	}
	return false
}

// number reads a JSON number.
func (p *recParser) number() bool {
	if p.peek('-') {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	switch {
	case p.peek('0'):
		p.i++
	case p.i < len(p.b) && p.b[p.i] >= '1' && p.b[p.i] <= '9':
		digits()
	default:
		return false
	}
	if p.peek('.') {
		p.i++
		if digits() == 0 {
			return false
		}
	}
	if p.peek('e') || p.peek('E') {
		p.i++
		if p.peek('+') || p.peek('-') {
			p.i++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}
