package luks

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func tokenJSON(t testing.TB, fields map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tokenField(t testing.TB, tok *Token, name string) any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(tok.JSON, &m); err != nil {
		t.Fatalf("token %d json: %v", tok.ID, err)
	}
	return m[name]
}

func TestTokensRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	v := format(t, 2, keyA, 1000)
	slot, err := addKey(t, v, keyA, keyB, AddOptions{PBKDF: cheap})
	if err != nil {
		t.Fatal(err)
	}

	// Another program's token, written by cryptsetup directly.
	cryptsetup(t, v, []byte(`{"type":"other-tool","keyslots":["0"],"secret-ish":"x"}`),
		"token", "import", "--token-id=0", v.Path)

	// "keyslots" in the input is replaced by the keyslot named.
	id, err := v.ImportToken(ctx, tokenJSON(t, map[string]any{
		"type": TokenType, "ceremony": "c-1", "keyslots": []string{"0"}, "shares": []string{"s1", "s2"},
	}), slot)
	if err != nil {
		t.Fatal(err)
	}
	if id != 1 {
		t.Fatalf("token id = %d, want 1 (the first free)", id)
	}
	tok, err := v.Token(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Type != TokenType || !slices.Equal(tok.Keyslots, []int{slot}) || tokenField(t, tok, "ceremony") != "c-1" ||
		!json.Valid(tok.JSON) || tok.JSON[len(tok.JSON)-1] != '}' {
		t.Fatalf("token read back = %+v (%s)", tok, tok.JSON)
	}

	h := inspect(t, v)
	if len(h.Tokens) != 2 || h.Tokens[0].Type != "other-tool" || h.Tokens[1].ID != id {
		t.Fatalf("header tokens = %+v", h.Tokens)
	}
	toks, err := v.Tokens(ctx, TokenType)
	if err != nil || len(toks) != 1 || toks[0].ID != id {
		t.Fatalf("Tokens(custos) = %+v, %v", toks, err)
	}
	all, err := v.Tokens(ctx, "")
	if err != nil || len(all) != 2 {
		t.Fatalf("Tokens(all) = %+v, %v", all, err)
	}

	// Replace in one step, rebinding to keyslot 0.
	if err := v.ReplaceToken(ctx, id, tokenJSON(t, map[string]any{"type": TokenType, "ceremony": "c-2"}), 0); err != nil {
		t.Fatal(err)
	}
	tok, err = v.Token(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if tokenField(t, tok, "ceremony") != "c-2" || !slices.Equal(tok.Keyslots, []int{0}) || tokenField(t, tok, "shares") != nil {
		t.Fatalf("replaced token = %s", tok.JSON)
	}

	// Another program's token is read but never changed.
	wantErr(t, v.ReplaceToken(ctx, 0, tokenJSON(t, map[string]any{"type": TokenType}), 0), ErrForeignToken)
	wantErr(t, v.RemoveToken(ctx, 0), ErrForeignToken)
	if other, err := v.Token(ctx, 0); err != nil || other.Type != "other-tool" {
		t.Fatalf("foreign token after refusals = %+v, %v", other, err)
	}

	// Refusals on input.
	for name, in := range map[string][]byte{
		"not json":      []byte("{"),
		"not an object": []byte(`["type"]`),
		"null":          []byte(`null`),
		"no type":       []byte(`{"ceremony":"x"}`),
		"foreign type":  []byte(`{"type":"systemd-tpm2"}`),
	} {
		if _, err := v.ImportToken(ctx, in, slot); err == nil {
			t.Errorf("ImportToken(%s) succeeded", name)
		}
	}
	_, err = v.ImportToken(ctx, tokenJSON(t, map[string]any{"type": TokenType}), 7)
	wantErr(t, err, ErrKeyslotInactive)
	wantErr(t, v.ReplaceToken(ctx, 9, tokenJSON(t, map[string]any{"type": TokenType}), 0), ErrTokenNotFound)

	// Remove, then it is gone.
	if err := v.RemoveToken(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, err = v.Token(ctx, id)
	wantErr(t, err, ErrTokenNotFound)
	wantErr(t, v.RemoveToken(ctx, id), ErrTokenNotFound)
	if toks, err := v.Tokens(ctx, TokenType); err != nil || len(toks) != 0 {
		t.Fatalf("Tokens after remove = %+v, %v", toks, err)
	}
}

// TestTokenFailureUndoesKeyslot is the enroll sequence when the token does
// not fit: the keyslot just added is killed again, and the header is as
// before.
func TestTokenFailureUndoesKeyslot(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	v := format(t, 2, keyA, 1000)
	before := inspect(t, v)
	keep, err := v.FindKeyslot(ctx, keyA)
	if err != nil {
		t.Fatal(err)
	}
	slot, err := addKey(t, v, keyA, keyB, AddOptions{PBKDF: cheap})
	if err != nil {
		t.Fatal(err)
	}
	big := tokenJSON(t, map[string]any{"type": TokenType, "shares": strings.Repeat("A", 20000)})
	_, err = v.ImportToken(ctx, big, slot)
	wantErr(t, err, ErrTokenTooLarge)
	var ce *CryptsetupError
	if !asCryptsetupError(err, &ce) || ce.Op != "token" {
		t.Fatalf("error = %v, want a CryptsetupError from token import", err)
	}
	if err := killKey(t, v, slot, keep, keyA); err != nil {
		t.Fatal(err)
	}
	after := inspect(t, v)
	if !slices.Equal(slotIDs(after), slotIDs(before)) || len(after.Tokens) != 0 {
		t.Fatalf("after undo: keyslots %v tokens %v, want %v and none", slotIDs(after), after.Tokens, slotIDs(before))
	}
}

func TestTokensLUKS1(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	v := format(t, 1, keyA, 1000)
	tok := tokenJSON(t, map[string]any{"type": TokenType})
	_, err := v.ImportToken(ctx, tok, 0)
	wantErr(t, err, ErrNoTokens)
	wantErr(t, v.ReplaceToken(ctx, 0, tok, 0), ErrNoTokens)
	wantErr(t, v.RemoveToken(ctx, 0), ErrNoTokens)
	_, err = v.Tokens(ctx, TokenType)
	wantErr(t, err, ErrNoTokens)
	// Token goes to cryptsetup directly; its refusal maps too.
	_, err = v.Token(ctx, 0)
	wantErr(t, err, ErrNoTokens)
	if h := inspect(t, v); len(h.Tokens) != 0 {
		t.Fatalf("luks1 header tokens = %v", h.Tokens)
	}
}
