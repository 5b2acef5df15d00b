package luks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"
)

// TokenType is the LUKS2 token type custos writes. This package writes,
// replaces and removes tokens of this type only; it reads any.
const TokenType = "custos"

// checkToken checks that tok is a token ImportToken and ReplaceToken can
// write unchanged, bound to keyslot:
//
//   - a JSON object in UTF-8, in compact form (no whitespace outside
//     strings), without a backslash escape, a member name used twice in
//     one object, or a number other than a decimal integer in int64
//     range without leading zeros (nor "-0"): text that cryptsetup's JSON
//     library (json-c) parses and
//     writes back as the same bytes (it keeps members in their order and
//     writes strings and integers as they are), so what Inspect reads back
//     is byte for byte what was written;
//   - whose "type" member is TokenType and whose "keyslots" member is
//     exactly [keyslot], as a decimal string.
//
// The members are checked, never rewritten: a token is written as its
// maker encoded it.
func checkToken(tok []byte, keyslot int) error {
	if len(tok) == 0 || tok[0] != '{' || !json.Valid(tok) {
		return errors.New("token is not a json object")
	}
	if !utf8.Valid(tok) {
		return errors.New("token is not utf-8")
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, tok); err != nil || !bytes.Equal(compact.Bytes(), tok) {
		return errors.New("token has whitespace outside strings: write it compact")
	}
	if bytes.IndexByte(tok, '\\') >= 0 {
		return errors.New("token has a backslash escape, which cryptsetup would re-encode")
	}
	if err := checkTokenValues(tok); err != nil {
		return err
	}
	var th tokenHead
	if err := json.Unmarshal(tok, &th); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	if th.Type == nil || *th.Type != TokenType {
		return fmt.Errorf("token type must be %q", TokenType)
	}
	if want := []string{strconv.Itoa(keyslot)}; th.Keyslots == nil || !slices.Equal(*th.Keyslots, want) {
		return fmt.Errorf("token must name keyslot %d in its keyslots member, as [\"%d\"]", keyslot, keyslot)
	}
	return nil
}

// checkTokenValues walks a JSON text and refuses duplicate member names
// and numbers that are not plain integers. The text must be what its
// callers have checked already: valid JSON (json.Compact accepted it),
// UTF-8, compact and without a backslash, so that a string is the bytes
// between two quotes and means exactly those bytes; anything else it
// meets is refused. It reads the text once, byte by byte, where
// encoding/json's Decoder built an error value at the end of every token
// (a third of the time custos spent reading a LUKS2 header itself).
func checkTokenValues(tok []byte) error {
	// One level per open object or array: an object's member names seen
	// so far (nil for an array), and whether a name comes next.
	type level struct {
		names    map[string]bool
		wantName bool
	}
	var stack []level
	for i := 0; i < len(tok); {
		c := tok[i]
		if n := len(stack); n > 0 && stack[n-1].wantName && c != '}' {
			if c != '"' {
				return errors.New("token: a member name is not a string")
			}
			j := bytes.IndexByte(tok[i+1:], '"')
			if j < 0 {
				return errors.New("token: a string does not end")
			}
			name := string(tok[i+1 : i+1+j])
			if stack[n-1].names[name] {
				return fmt.Errorf("token has member %q twice in one object", clip(name))
			}
			stack[n-1].names[name] = true
			stack[n-1].wantName = false
			i += j + 2
			if i >= len(tok) || tok[i] != ':' {
				return errors.New("token: a member name without a value")
			}
			i++
			continue
		}
		switch {
		case c == '{':
			stack = append(stack, level{names: map[string]bool{}, wantName: true})
			i++
			continue
		case c == '[':
			stack = append(stack, level{})
			i++
			continue
		case c == '}' || c == ']':
			if len(stack) == 0 {
				return errors.New("token: a close without an open")
			}
			stack = stack[:len(stack)-1]
			i++
		case c == '"':
			j := bytes.IndexByte(tok[i+1:], '"')
			if j < 0 {
				return errors.New("token: a string does not end")
			}
			i += j + 2
		case c == '-' || c >= '0' && c <= '9':
			j := i + 1
			for j < len(tok) && (tok[j] >= '0' && tok[j] <= '9' || tok[j] == '.' || tok[j] == 'e' || tok[j] == 'E' || tok[j] == '+' || tok[j] == '-') {
				j++
			}
			num := tok[i:j]
			if !plainInt(num) {
				return fmt.Errorf("token has number %s: only integers are written unchanged", clip(string(num)))
			}
			if _, err := strconv.ParseInt(string(num), 10, 64); err != nil {
				return fmt.Errorf("token has number %s out of range", clip(string(num)))
			}
			i = j
		case bytes.HasPrefix(tok[i:], []byte("true")):
			i += 4
		case bytes.HasPrefix(tok[i:], []byte("false")):
			i += 5
		case bytes.HasPrefix(tok[i:], []byte("null")):
			i += 4
		default:
			return fmt.Errorf("token: unexpected byte %q", c)
		}
		// A value is complete: in an object, a name comes next, in an
		// array or object a comma may.
		if i < len(tok) && tok[i] == ',' {
			if len(stack) == 0 {
				return errors.New("token: a comma outside an object or array")
			}
			i++
		}
		if n := len(stack); n > 0 && stack[n-1].names != nil {
			stack[n-1].wantName = true
		}
	}
	if len(stack) != 0 {
		return errors.New("token: an object or array does not end")
	}
	return nil
}

// plainInt reports whether b is an integer as json-c writes it back:
// 0, or digits without a leading zero after an optional minus (no "-0",
// which it would write as "0").
func plainInt(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
		if len(b) > 0 && b[0] == '0' {
			return false
		}
	}
	if len(b) == 0 || b[0] == '0' && len(b) > 1 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// tooLarge tells a token that does not fit the LUKS2 JSON area from other
// import failures, which cryptsetup reports alike ("Failed to import token
// from file."). The size is estimated: cryptsetup's encoder escapes a
// little more than Go's, so only a clear overflow is reported.
func tooLarge(h *Header, tok []byte) bool {
	return h.jsonSize > 0 && h.jsonUsed+len(tok) > h.jsonSize
}

var createdTokenRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?m)^Token ([0-9]+) created\.$`) })

// ImportToken writes tok as a new LUKS2 token and returns its ID and the
// header after. tok must be a JSON object whose "type" is TokenType and
// whose "keyslots" member is [keyslot] (keyslot in use), in the form
// checkToken describes; it is written as given, byte for byte, binding the
// token to its keyslot in the same header update, and Inspect reads it
// back as the same bytes. The JSON reaches cryptsetup through a pipe
// (--json-file=/dev/fd/3), like keys do. LUKS1 gives ErrNoTokens.
//
// h is the header read for this step: the checks are made on it, and
// cryptsetup picks the token ID and says which (token import --verbose),
// so no header is read; the header returned is h with the new token.
//
// If writing the token fails right after its keyslot was added, the caller
// can undo the keyslot with KillKeyslot.
func (v *Volume) ImportToken(ctx context.Context, h *Header, tok []byte, keyslot int) (int, *Header, error) {
	if err := tokenHeader(h); err != nil {
		return -1, nil, fmt.Errorf("import token: %w", err)
	}
	if err := checkSlot(h, keyslot); err != nil {
		return -1, nil, fmt.Errorf("import token: %w", err)
	}
	if !h.InUse(keyslot) {
		return -1, nil, fmt.Errorf("import token: keyslot %d: %w", keyslot, ErrKeyslotInactive)
	}
	if err := checkToken(tok, keyslot); err != nil {
		return -1, nil, fmt.Errorf("import token: %w", err)
	}
	if len(h.Tokens) >= LUKS2Tokens {
		return -1, nil, fmt.Errorf("import token: all %d token ids are in use", LUKS2Tokens)
	}
	out, err := v.exec(ctx, run{op: "token", args: []string{
		"import", "--verbose", "--json-file=" + fdPath(firstInputFD), v.Path,
	}, inputs: [][]byte{tok}, write: true})
	if err != nil {
		return -1, nil, fmt.Errorf("import token: %w", tokenError(h, tok, err))
	}
	m := createdTokenRE().FindSubmatch(out)
	if m == nil {
		return -1, nil, errors.New("import token: cryptsetup did not say which token it created")
	}
	id, err := parseID(string(m[1]), LUKS2Tokens)
	if err != nil || h.Token(id) != nil {
		return -1, nil, fmt.Errorf("import token: cryptsetup created token %s, which the header had", clip(string(m[1])))
	}
	return id, h.withToken(Token{ID: id, Type: TokenType, Keyslots: []int{keyslot}, JSON: bytes.Clone(tok)}), nil
}

// ReplaceToken overwrites token id, which must be a TokenType token in h,
// with tok, bound to keyslot as ImportToken binds it, in one header update
// (cryptsetup token import --token-replace), and returns the header after:
// h with the token replaced, without reading it. A token of another type
// gives ErrForeignToken.
//
// # Caveats
//
//   - The token's type is checked on h: another process could replace it
//     between the caller's read and this write.
func (v *Volume) ReplaceToken(ctx context.Context, h *Header, id int, tok []byte, keyslot int) (*Header, error) {
	if err := tokenHeader(h); err != nil {
		return nil, fmt.Errorf("replace token %d: %w", id, err)
	}
	if err := ownToken(h, id); err != nil {
		return nil, fmt.Errorf("replace token %d: %w", id, err)
	}
	if err := checkSlot(h, keyslot); err != nil {
		return nil, fmt.Errorf("replace token %d: %w", id, err)
	}
	if !h.InUse(keyslot) {
		return nil, fmt.Errorf("replace token %d: keyslot %d: %w", id, keyslot, ErrKeyslotInactive)
	}
	if err := checkToken(tok, keyslot); err != nil {
		return nil, fmt.Errorf("replace token %d: %w", id, err)
	}
	_, err := v.exec(ctx, run{op: "token", args: []string{
		"import", "--json-file=" + fdPath(firstInputFD), "--token-id=" + strconv.Itoa(id), "--token-replace", v.Path,
	}, inputs: [][]byte{tok}, write: true})
	if err != nil {
		return nil, fmt.Errorf("replace token %d: %w", id, tokenError(h, tok, err))
	}
	return h.withToken(Token{ID: id, Type: TokenType, Keyslots: []int{keyslot}, JSON: bytes.Clone(tok)}), nil
}

// tokenError marks a failed token import that the token's size explains.
func tokenError(h *Header, tok []byte, err error) error {
	var ce *CryptsetupError
	if errors.As(err, &ce) && ce.Err == nil && tooLarge(h, tok) {
		ce.Err = ErrTokenTooLarge
	}
	return err
}

// Token reads token id, of any type (cryptsetup token export).
func (v *Volume) Token(ctx context.Context, id int) (*Token, error) {
	if id < 0 || id >= LUKS2Tokens {
		return nil, fmt.Errorf("read token %d: %w", id, ErrTokenNotFound)
	}
	out, err := v.exec(ctx, run{op: "token", args: []string{"export", "--token-id=" + strconv.Itoa(id), v.Path}})
	if err != nil {
		return nil, fmt.Errorf("read token %d: %w", id, err)
	}
	t, err := parseToken(id, out)
	if err != nil {
		return nil, fmt.Errorf("read token %d: %w", id, err)
	}
	return t, nil
}

// Tokens reads the header (Inspect) and lists its tokens of type typ (""
// for all), in ascending order of ID. LUKS1 gives ErrNoTokens. A caller
// that has the header of the step reads Header.Tokens instead.
func (v *Volume) Tokens(ctx context.Context, typ string) ([]Token, error) {
	h, err := v.Inspect(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	if err := tokenHeader(h); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	toks := slices.DeleteFunc(h.Tokens, func(t Token) bool { return typ != "" && t.Type != typ })
	return toks, nil
}

// RemoveToken removes token id, which must be a TokenType token in h, and
// returns the header after: h without the token, without reading it.
func (v *Volume) RemoveToken(ctx context.Context, h *Header, id int) (*Header, error) {
	if err := tokenHeader(h); err != nil {
		return nil, fmt.Errorf("remove token %d: %w", id, err)
	}
	if err := ownToken(h, id); err != nil {
		return nil, fmt.Errorf("remove token %d: %w", id, err)
	}
	_, err := v.exec(ctx, run{op: "token", args: []string{"remove", "--token-id=" + strconv.Itoa(id), v.Path}, write: true})
	if err != nil {
		return nil, fmt.Errorf("remove token %d: %w", id, err)
	}
	return h.withoutToken(id), nil
}

// tokenHeader refuses a header that cannot hold tokens.
func tokenHeader(h *Header) error {
	if err := checkHeader(h); err != nil {
		return err
	}
	if h.Version != 2 {
		return ErrNoTokens
	}
	return nil
}

func ownToken(h *Header, id int) error {
	t := h.Token(id)
	if t == nil {
		return ErrTokenNotFound
	}
	if t.Type != TokenType {
		return fmt.Errorf("%w (type %q)", ErrForeignToken, clip(t.Type))
	}
	return nil
}
