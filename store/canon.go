package store

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// This file is the canonical JSON of docs/FORMAT.md section 7: a strict
// reader that walks the members it expects, in order, and names the path of
// the first byte it cannot accept, and the small writer that produces the
// same form. Neither uses reflection: the reader is on the path of Verify.

// Copies, as FormatError names them.
const (
	CopyRecord      = "record"
	CopyToken       = "token"
	CopyCertificate = "certificate"
	CopyEvent       = "event"
	CopyAnchor      = "anchor"
)

// maxCopySize bounds the bytes a copy's reader accepts (a LUKS2 JSON area
// is at most 4 MiB; a record of 255 cards is under 200 KiB).
const maxCopySize = 4 << 20

// join appends a member name to a path.
func join(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func elem(parent string, i int) string { return parent + "[" + strconv.Itoa(i) + "]" }

// reader walks one copy's bytes.
type reader struct {
	b    []byte
	i    int
	copy string
	// v1 relaxes what the version 1 encodings need: escapes in the
	// custodian, standard base64, null cards in a version 1 event.
	v1 bool
}

func (r *reader) fail(path, problem string) *FormatError {
	return &FormatError{Copy: r.copy, Path: path, Problem: problem}
}

// start refuses a byte order mark and an oversized input.
func (r *reader) start(root string) error {
	if len(r.b) > maxCopySize {
		return r.fail(root, fmt.Sprintf("%d bytes, more than %d", len(r.b), maxCopySize))
	}
	if len(r.b) >= 3 && r.b[0] == 0xef && r.b[1] == 0xbb && r.b[2] == 0xbf {
		return r.fail(root, "byte order mark")
	}
	return nil
}

// end refuses anything after the outermost object.
func (r *reader) end(root string) error {
	if r.i != len(r.b) {
		return r.fail(root, "trailing data")
	}
	return nil
}

// problem describes the byte at r.i when it is not what was wanted.
func (r *reader) problem(want string) string {
	if r.i >= len(r.b) {
		return "unexpected end, want " + want
	}
	c := r.b[r.i]
	switch {
	case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		return "whitespace outside strings"
	case c == 'n' && r.has("null"):
		return "null"
	case c == 'f' && r.has("false"):
		return "false, want " + want
	case c >= 0x20 && c < 0x7f:
		return fmt.Sprintf("unexpected %q, want %s", c, want)
	default:
		return fmt.Sprintf("unexpected byte 0x%02x, want %s", c, want)
	}
}

func (r *reader) has(lit string) bool {
	return len(r.b)-r.i >= len(lit) && string(r.b[r.i:r.i+len(lit)]) == lit
}

func (r *reader) peek(c byte) bool { return r.i < len(r.b) && r.b[r.i] == c }

// object reads an object whose members are listed in order. Members not in
// req are optional. The caller loops on next and reads each value; errors
// of a member's name and value are reported at the member's path.
type object struct {
	r     *reader
	path  string
	names []string
	req   uint64 // bit j: names[j] is required
	seen  uint64
	pos   int // names before pos are read or skipped
	last  int // the member read last, -1 before the first
	// anyOrder accepts the members in any order (version 1 tokens).
	anyOrder bool
}

func (o *object) open(r *reader, path string, names []string, req uint64) error {
	*o = object{r: r, path: path, names: names, req: req, last: -1}
	if !r.peek('{') {
		return r.fail(path, r.problem("an object"))
	}
	r.i++
	return nil
}

// memberPath is the path of names[j].
func (o *object) memberPath(j int) string { return join(o.path, o.names[j]) }

// failMember reports a problem with the member read last.
func (o *object) failMember(problem string) error {
	return o.r.fail(o.memberPath(o.last), problem)
}

// next reads the separator after the previous member and the next member's
// name and colon. It returns the member's index in names, or -1 after the
// closing brace (every required member read).
func (o *object) next() (int, error) {
	r := o.r
	if o.last >= 0 {
		switch {
		case r.peek(','):
			r.i++
		case r.peek('}'):
			r.i++
			return -1, o.close()
		default:
			return 0, o.failMember(r.problem("',' or '}' after the value"))
		}
	} else if r.peek('}') {
		r.i++
		return -1, o.close()
	}
	if !r.peek('"') {
		return 0, r.fail(o.path, r.problem("a member name"))
	}
	r.i++
	start := r.i
	for {
		if r.i >= len(r.b) {
			return 0, r.fail(o.path, "unterminated member name")
		}
		c := r.b[r.i]
		if c == '"' {
			break
		}
		if c == '\\' {
			return 0, r.fail(o.path, "escape in member name")
		}
		r.i++
	}
	name := r.b[start:r.i]
	r.i++
	j := -1
	for k, n := range o.names {
		if string(name) == n {
			j = k
			break
		}
	}
	if j < 0 {
		for k, n := range o.names {
			if equalFoldASCII(name, n) {
				return 0, r.fail(o.memberPath(k), fmt.Sprintf("member %q differs from %q only in case", name, n))
			}
		}
		return 0, r.fail(o.path, fmt.Sprintf("unknown member %q", clipBytes(name)))
	}
	switch {
	case o.seen&(1<<j) != 0:
		return 0, r.fail(o.memberPath(j), "duplicate member")
	case o.anyOrder:
	case j < o.pos:
		return 0, r.fail(o.memberPath(j), "member out of order")
	default:
		for k := o.pos; k < j; k++ {
			if o.req&(1<<k) != 0 {
				return 0, r.fail(o.memberPath(k), "missing")
			}
		}
		o.pos = j + 1
	}
	o.last = j
	o.seen |= 1 << j
	if !r.peek(':') {
		return 0, o.failMember(r.problem("':' after the member name"))
	}
	r.i++
	return j, nil
}

func (o *object) close() error {
	for k := o.pos; k < len(o.names); k++ {
		if o.req&(1<<k) != 0 && o.seen&(1<<k) == 0 {
			return o.r.fail(o.memberPath(k), "missing")
		}
	}
	return nil
}

func (o *object) has(j int) bool { return o.seen&(1<<j) != 0 }

func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func clipBytes(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

// array reads the brackets and separators of an array; errors between
// elements are reported at the element's path.
type array struct {
	r    *reader
	path string
	n    int // elements begun
}

func (a *array) open(r *reader, path string) error {
	*a = array{r: r, path: path}
	if !r.peek('[') {
		return r.fail(path, r.problem("an array"))
	}
	r.i++
	return nil
}

// next reports whether another element follows, reading the separator.
func (a *array) next() (bool, error) {
	r := a.r
	if a.n > 0 {
		switch {
		case r.peek(','):
			r.i++
		case r.peek(']'):
			r.i++
			return false, nil
		default:
			return false, r.fail(elem(a.path, a.n-1), r.problem("',' or ']' after the element"))
		}
	} else if r.peek(']') {
		r.i++
		return false, nil
	}
	a.n++
	return true, nil
}

// Value readers return a problem ("" when the value is good); the caller
// knows the path.

// uint reads a canonical decimal integer.
func (r *reader) uint() (uint64, string) {
	if r.i >= len(r.b) || r.b[r.i] < '0' || r.b[r.i] > '9' {
		if r.peek('-') || r.peek('+') {
			return 0, "signed integer"
		}
		return 0, r.problem("an integer")
	}
	start := r.i
	var v uint64
	over := false
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		d := uint64(r.b[r.i] - '0')
		if v > (1<<64-1-d)/10 {
			over = true
		}
		v = v*10 + d
		r.i++
	}
	if r.b[start] == '0' && r.i-start > 1 {
		return 0, "leading zero"
	}
	if r.i < len(r.b) && (r.b[r.i] == '.' || r.b[r.i] == 'e' || r.b[r.i] == 'E') {
		return 0, "not an integer (fraction or exponent)"
	}
	if over {
		return 0, "out of range"
	}
	return v, ""
}

// intIn reads an integer in [lo, hi].
func (r *reader) intIn(lo, hi uint64) (int, string) {
	v, p := r.uint()
	if p != "" {
		return 0, p
	}
	if v < lo || v > hi {
		return 0, fmt.Sprintf("%d out of range %d-%d", v, lo, hi)
	}
	return int(v), ""
}

// str reads a string without escapes and returns its bytes (a slice of
// the input).
func (r *reader) str() ([]byte, string) {
	if !r.peek('"') {
		return nil, r.problem("a string")
	}
	r.i++
	start := r.i
	for {
		if r.i >= len(r.b) {
			return nil, "unterminated string"
		}
		c := r.b[r.i]
		switch {
		case c == '"':
			s := r.b[start:r.i]
			r.i++
			return s, ""
		case c == '\\':
			return nil, "escape in string"
		case c < 0x20:
			return nil, "control character in string"
		}
		r.i++
	}
}

// lit reads one of the fixed strings allowed.
func (r *reader) lit(allowed ...string) (string, string) {
	s, p := r.str()
	if p != "" {
		return "", p
	}
	for _, a := range allowed {
		if string(s) == a {
			return a, ""
		}
	}
	return "", fmt.Sprintf("%q is not one of %v", clipBytes(s), allowed)
}

// trueLit reads the literal true.
func (r *reader) trueLit() string {
	if r.has("true") {
		r.i += 4
		return ""
	}
	return r.problem("true")
}

// hexInto reads exactly 2*len(dst) lower-case hex digits.
func (r *reader) hexInto(dst []byte) string {
	s, p := r.str()
	if p != "" {
		return p
	}
	return hexDecode(dst, s)
}

func hexDecode(dst, s []byte) string {
	if len(s) != 2*len(dst) {
		return fmt.Sprintf("%d characters, want %d hex digits", len(s), 2*len(dst))
	}
	for i := 0; i < len(s); i += 2 {
		hi, p := hexDigit(s[i])
		if p != "" {
			return p
		}
		lo, p := hexDigit(s[i+1])
		if p != "" {
			return p
		}
		dst[i/2] = hi<<4 | lo
	}
	return ""
}

func hexDigit(c byte) (byte, string) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', ""
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, ""
	case 'A' <= c && c <= 'F':
		return 0, "upper-case hex"
	default:
		return 0, "not hex"
	}
}

// hexString checks a lower-case hex string of an even length in [min, max]
// digits and returns it.
func hexString(s []byte, min, max int) (string, string) {
	if len(s) < min || len(s) > max || len(s)%2 != 0 {
		return "", fmt.Sprintf("%d hex digits, want an even number from %d to %d", len(s), min, max)
	}
	for _, c := range s {
		if _, p := hexDigit(c); p != "" {
			return "", p
		}
	}
	return string(s), ""
}

// b64url reads base64url without padding, the unused bits zero, and
// returns the decoded bytes (a new slice).
func (r *reader) b64url() ([]byte, string) {
	s, p := r.str()
	if p != "" {
		return nil, p
	}
	for _, c := range s {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		case c == '=':
			return nil, "padding in base64url"
		case c == '+' || c == '/':
			return nil, "standard base64, want base64url"
		default:
			return nil, "not base64url"
		}
	}
	out := make([]byte, base64.RawURLEncoding.DecodedLen(len(s)))
	n, err := base64.RawURLEncoding.Strict().Decode(out, s)
	if err != nil {
		return nil, "not canonical base64url"
	}
	return out[:n], ""
}

// b64std reads standard base64 with padding (version 1), canonical: no
// line breaks, the unused bits zero.
func (r *reader) b64std() ([]byte, string) {
	s, p := r.str()
	if p != "" {
		return nil, p
	}
	for _, c := range s {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '+', c == '/', c == '=':
		default:
			return nil, "not base64"
		}
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Strict().Decode(out, s)
	if err != nil {
		return nil, "not canonical base64"
	}
	return out[:n], ""
}

// textProblem applies the text rule of section 7: 1 to max bytes of UTF-8,
// each character a space or in L, M, N, P or S and not " \ < > &, no space
// first or last.
func textProblem(s []byte, max int) string {
	if len(s) == 0 {
		return "empty text"
	}
	if len(s) > max {
		return fmt.Sprintf("text of %d bytes, more than %d", len(s), max)
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return "text begins or ends with a space"
	}
	for i := 0; i < len(s); {
		c, size := utf8.DecodeRune(s[i:])
		if c == utf8.RuneError && size <= 1 {
			return "invalid utf-8"
		}
		if !textRune(c) {
			return fmt.Sprintf("character %U not allowed in text", c)
		}
		i += size
	}
	return ""
}

// textRune is the per-character part of the text rule.
func textRune(c rune) bool {
	switch c {
	case ' ':
		return true
	case '"', '\\', '<', '>', '&':
		return false
	}
	return unicode.In(c, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S)
}

// maxText is the length limit of text members.
const maxText = 64

// writer builds the canonical form.
type writer struct{ b []byte }

func (w *writer) raw(s string)  { w.b = append(w.b, s...) }
func (w *writer) byte(c byte)   { w.b = append(w.b, c) }
func (w *writer) uint(v uint64) { w.b = strconv.AppendUint(w.b, v, 10) }
func (w *writer) str(s string)  { w.b = append(append(append(w.b, '"'), s...), '"') }
func (w *writer) key(sep byte, name string) {
	w.b = append(w.b, sep, '"')
	w.b = append(w.b, name...)
	w.b = append(w.b, '"', ':')
}

func (w *writer) hex(b []byte) {
	const digits = "0123456789abcdef"
	w.b = append(w.b, '"')
	for _, c := range b {
		w.b = append(w.b, digits[c>>4], digits[c&0xf])
	}
	w.b = append(w.b, '"')
}

func (w *writer) b64url(b []byte) {
	w.b = append(w.b, '"')
	w.b = base64.RawURLEncoding.AppendEncode(w.b, b)
	w.b = append(w.b, '"')
}
