package luks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// TokenType is the LUKS2 token type custos writes. This package writes,
// replaces and removes tokens of this type only; it reads any.
const TokenType = "custos"

// prepareToken checks that tok is a JSON object of type TokenType and binds
// it to keyslot: its "keyslots" member becomes [keyslot], so that
// cryptsetup writes token and binding in one header update.
func prepareToken(tok []byte, keyslot int) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(tok, &obj); err != nil || obj == nil {
		return nil, errors.New("token is not a json object")
	}
	var typ string
	if err := json.Unmarshal(obj["type"], &typ); err != nil || typ != TokenType {
		return nil, fmt.Errorf("token type must be %q", TokenType)
	}
	ks, _ := json.Marshal([]string{strconv.Itoa(keyslot)})
	obj["keyslots"] = ks
	return json.Marshal(obj)
}

// tooLarge tells a token that does not fit the LUKS2 JSON area from other
// import failures, which cryptsetup reports alike ("Failed to import token
// from file."). The size is estimated: cryptsetup's encoder escapes a
// little more than Go's, so only a clear overflow is reported.
func tooLarge(h *Header, tok []byte) bool {
	return h.jsonSize > 0 && h.jsonUsed+len(tok) > h.jsonSize
}

// ImportToken writes tok, a JSON object whose "type" is TokenType, as a new
// LUKS2 token bound to keyslot (which must be in use), and returns its ID.
// Any "keyslots" member of tok is replaced by [keyslot]. The JSON reaches
// cryptsetup through a pipe (--json-file=/dev/fd/3), like keys do. LUKS1
// gives ErrNoTokens.
//
// If writing the token fails right after its keyslot was added, the caller
// can undo the keyslot with KillKeyslot.
func (v *Volume) ImportToken(ctx context.Context, tok []byte, keyslot int) (int, error) {
	h, err := v.tokenHeader(ctx)
	if err != nil {
		return -1, fmt.Errorf("import token: %w", err)
	}
	if err := checkSlot(h, keyslot); err != nil {
		return -1, fmt.Errorf("import token: %w", err)
	}
	if !h.InUse(keyslot) {
		return -1, fmt.Errorf("import token: keyslot %d: %w", keyslot, ErrKeyslotInactive)
	}
	body, err := prepareToken(tok, keyslot)
	if err != nil {
		return -1, fmt.Errorf("import token: %w", err)
	}
	id := -1
	for i := range LUKS2Tokens {
		if h.Token(i) == nil {
			id = i
			break
		}
	}
	if id < 0 {
		return -1, fmt.Errorf("import token: all %d token ids are in use", LUKS2Tokens)
	}
	if err := v.importToken(ctx, h, id, body, false); err != nil {
		return -1, err
	}
	return id, nil
}

// ReplaceToken overwrites token id, which must be a TokenType token, with
// tok bound to keyslot, in one header update (cryptsetup token import
// --token-replace). A token of another type gives ErrForeignToken.
func (v *Volume) ReplaceToken(ctx context.Context, id int, tok []byte, keyslot int) error {
	h, err := v.tokenHeader(ctx)
	if err != nil {
		return fmt.Errorf("replace token %d: %w", id, err)
	}
	if err := ownToken(h, id); err != nil {
		return fmt.Errorf("replace token %d: %w", id, err)
	}
	if err := checkSlot(h, keyslot); err != nil {
		return fmt.Errorf("replace token %d: %w", id, err)
	}
	if !h.InUse(keyslot) {
		return fmt.Errorf("replace token %d: keyslot %d: %w", id, keyslot, ErrKeyslotInactive)
	}
	body, err := prepareToken(tok, keyslot)
	if err != nil {
		return fmt.Errorf("replace token %d: %w", id, err)
	}
	return v.importToken(ctx, h, id, body, true)
}

func (v *Volume) importToken(ctx context.Context, h *Header, id int, body []byte, replace bool) error {
	args := []string{"import", "--json-file=" + fdPath(firstInputFD), "--token-id=" + strconv.Itoa(id)}
	if replace {
		args = append(args, "--token-replace")
	}
	args = append(args, v.Path)
	_, err := v.exec(ctx, run{op: "token", args: args, inputs: [][]byte{body}, write: true})
	if err != nil {
		var ce *CryptsetupError
		if errors.As(err, &ce) && ce.Err == nil && tooLarge(h, body) {
			ce.Err = ErrTokenTooLarge
		}
		return fmt.Errorf("write token %d: %w", id, err)
	}
	return nil
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

// Tokens lists the tokens of type typ ("" for all), in ascending order of
// ID. LUKS1 gives ErrNoTokens.
func (v *Volume) Tokens(ctx context.Context, typ string) ([]Token, error) {
	h, err := v.tokenHeader(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	toks := slices.DeleteFunc(h.Tokens, func(t Token) bool { return typ != "" && t.Type != typ })
	return toks, nil
}

// RemoveToken removes token id, which must be a TokenType token.
func (v *Volume) RemoveToken(ctx context.Context, id int) error {
	h, err := v.tokenHeader(ctx)
	if err != nil {
		return fmt.Errorf("remove token %d: %w", id, err)
	}
	if err := ownToken(h, id); err != nil {
		return fmt.Errorf("remove token %d: %w", id, err)
	}
	_, err = v.exec(ctx, run{op: "token", args: []string{"remove", "--token-id=" + strconv.Itoa(id), v.Path}, write: true})
	if err != nil {
		return fmt.Errorf("remove token %d: %w", id, err)
	}
	return nil
}

// tokenHeader inspects the volume and refuses LUKS1.
func (v *Volume) tokenHeader(ctx context.Context) (*Header, error) {
	h, err := v.Inspect(ctx)
	if err != nil {
		return nil, err
	}
	if h.Version != 2 {
		return nil, ErrNoTokens
	}
	return h, nil
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
