package luks

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func tokenField(t testing.TB, tok *Token, name string) any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(tok.JSON, &m); err != nil {
		t.Fatalf("token %d json: %v", tok.ID, err)
	}
	return m[name]
}

// custosToken is a token as escrow writes it: members in the order of
// docs/FORMAT.md section 10 (type, keyslots, record, anchor), not sorted,
// compact.
func custosToken(keyslot int, ceremony string) []byte {
	return []byte(`{"type":"custos","keyslots":["` + strconv.Itoa(keyslot) + `"],` +
		`"record":{"v":2,"id":"` + ceremony + `","volume":"x","k":2,"n":3,"cards":[]},"anchor":"7:ab"}`)
}

func TestTokensRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	v := format(t, 2, keyA, 1000)
	k, _, err := v.AddKeyslot(ctx, inspect(t, v), keyA, keyB, AddOptions{PBKDF: cheap})
	if err != nil {
		t.Fatal(err)
	}
	slot := k.ID

	// Another program's token, written by cryptsetup directly.
	cryptsetup(t, v, []byte(`{"type":"other-tool","keyslots":["0"],"secret-ish":"x"}`),
		"token", "import", "--token-id=0", v.Path)
	h := inspect(t, v)

	tok := custosToken(slot, "c-1")
	id, h, err := v.ImportToken(ctx, h, tok, slot)
	if err != nil {
		t.Fatal(err)
	}
	if id != 1 {
		t.Fatalf("token id = %d, want 1 (the first free)", id)
	}
	sameHeader(t, v, h)
	if got := h.Token(id); got == nil || !bytes.Equal(got.JSON, tok) || got.Type != TokenType || !slices.Equal(got.Keyslots, []int{slot}) {
		t.Fatalf("header after import shows token %+v", got)
	}
	read, err := v.Token(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read.JSON, tok) || !slices.Equal(read.Keyslots, []int{slot}) {
		t.Fatalf("token read back = %s, want %s", read.JSON, tok)
	}

	toks, err := v.Tokens(ctx, TokenType)
	if err != nil || len(toks) != 1 || toks[0].ID != id {
		t.Fatalf("Tokens(custos) = %+v, %v", toks, err)
	}
	all, err := v.Tokens(ctx, "")
	if err != nil || len(all) != 2 || all[0].Type != "other-tool" {
		t.Fatalf("Tokens(all) = %+v, %v", all, err)
	}

	// Replace in one step, rebinding to keyslot 0.
	tok2 := custosToken(0, "c-2")
	if h, err = v.ReplaceToken(ctx, h, id, tok2, 0); err != nil {
		t.Fatal(err)
	}
	sameHeader(t, v, h)
	if read, err = v.Token(ctx, id); err != nil || !bytes.Equal(read.JSON, tok2) || !slices.Equal(read.Keyslots, []int{0}) {
		t.Fatalf("replaced token = %+v, %v", read, err)
	}

	// Another program's token is read but never changed.
	_, err = v.ReplaceToken(ctx, h, 0, custosToken(0, "c-3"), 0)
	wantErr(t, err, ErrForeignToken)
	_, err = v.RemoveToken(ctx, h, 0)
	wantErr(t, err, ErrForeignToken)
	if other, err := v.Token(ctx, 0); err != nil || other.Type != "other-tool" {
		t.Fatalf("foreign token after refusals = %+v, %v", other, err)
	}

	// Refusals on input (for keyslot 1): nothing is written.
	if slot != 1 {
		t.Fatalf("new keyslot %d, want 1", slot)
	}
	for name, in := range map[string]string{
		"not json":          `{`,
		"not an object":     `["type"]`,
		"null":              `null`,
		"empty":             ``,
		"no type":           `{"keyslots":["1"]}`,
		"foreign type":      `{"type":"systemd-tpm2","keyslots":["1"]}`,
		"type not a string": `{"type":1,"keyslots":["1"]}`,
		"no keyslots":       `{"type":"custos"}`,
		"keyslots empty":    `{"type":"custos","keyslots":[]}`,
		"other keyslot":     `{"type":"custos","keyslots":["0"]}`,
		"two keyslots":      `{"type":"custos","keyslots":["1","0"]}`,
		"keyslot a number":  `{"type":"custos","keyslots":[1]}`,
		"keyslot 01":        `{"type":"custos","keyslots":["01"]}`,
		"whitespace":        `{"type": "custos","keyslots":["1"]}`,
		"newline at end":    "{\"type\":\"custos\",\"keyslots\":[\"1\"]}\n",
		"escape":            `{"type":"custos","keyslots":["1"],"a":"\u00e9"}`,
		"escaped quote":     `{"type":"custos","keyslots":["1"],"a":"\""}`,
		"escaped type":      `{"type":"cust\u006fs","keyslots":["1"]}`,
		"duplicate type":    `{"type":"other","type":"custos","keyslots":["1"]}`,
		"duplicate slots":   `{"type":"custos","keyslots":["0"],"keyslots":["1"]}`,
		"duplicate nested":  `{"type":"custos","keyslots":["1"],"r":{"a":1,"b":[{"c":1,"c":2}]}}`,
		"fraction":          `{"type":"custos","keyslots":["1"],"k":2.0}`,
		"exponent":          `{"type":"custos","keyslots":["1"],"k":2e1}`,
		"huge integer":      `{"type":"custos","keyslots":["1"],"k":99999999999999999999}`,
		"minus zero":        `{"type":"custos","keyslots":["1"],"k":-0}`,
		"trailing data":     `{"type":"custos","keyslots":["1"]}{}`,
		"invalid utf-8":     "{\"type\":\"custos\",\"keyslots\":[\"1\"],\"a\":\"\xff\"}",
	} {
		if _, _, err := v.ImportToken(ctx, h, []byte(in), slot); err == nil {
			t.Errorf("ImportToken(%s) succeeded", name)
		}
		if _, err := v.ReplaceToken(ctx, h, id, []byte(in), slot); err == nil {
			t.Errorf("ReplaceToken(%s) succeeded", name)
		}
	}
	sameHeader(t, v, h)
	_, _, err = v.ImportToken(ctx, h, custosToken(7, "c-4"), 7)
	wantErr(t, err, ErrKeyslotInactive)
	_, err = v.ReplaceToken(ctx, h, 9, custosToken(0, "c-4"), 0)
	wantErr(t, err, ErrTokenNotFound)

	// Remove, then it is gone.
	if h, err = v.RemoveToken(ctx, h, id); err != nil {
		t.Fatal(err)
	}
	sameHeader(t, v, h)
	_, err = v.Token(ctx, id)
	wantErr(t, err, ErrTokenNotFound)
	_, err = v.RemoveToken(ctx, h, id)
	wantErr(t, err, ErrTokenNotFound)
	if toks, err := v.Tokens(ctx, TokenType); err != nil || len(toks) != 0 {
		t.Fatalf("Tokens after remove = %+v, %v", toks, err)
	}
}

// TestTokenBytesSurvive: what ImportToken is given is what Inspect and
// Token read back, byte for byte, whatever the order of the members and
// whatever characters the strings hold.
func TestTokenBytesSurvive(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	v := format(t, 2, keyA, 1000)
	h := inspect(t, v)
	for i, tok := range []string{
		string(custosToken(0, "zz")),
		`{"type":"custos","keyslots":["0"],"z":1,"a":{"y":[],"b":{}},"m":[0,-1,9223372036854775807,-9223372036854775808]}`,
		`{"keyslots":["0"],"zeta":"last first","type":"custos"}`,
		`{"type":"custos","keyslots":["0"],"text":"Zoë 中文 😀 a/b <&> ' ` + "\u007f\u0080\u2028\u2029\ufeff" + `"}`,
		`{"type":"custos","keyslots":["0"],"t":true,"f":false,"n":null,"s":"","deep":[[[[{"x":[{}]}]]]]}`,
		`{"type":"custos","keyslots":["0"],"long":"` + strings.Repeat("base64url-_", 400) + `"}`,
	} {
		id, after, err := v.ImportToken(ctx, h, []byte(tok), 0)
		if err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
		fresh := inspect(t, v)
		if got := fresh.Token(id); got == nil || string(got.JSON) != tok {
			t.Fatalf("token %d: Inspect reads %s, wrote %s", i, got.JSON, tok)
		}
		if got, err := v.Token(ctx, id); err != nil || string(got.JSON) != tok {
			t.Fatalf("token %d: Token reads %s, %v; wrote %s", i, got.JSON, err, tok)
		}
		sameHeader(t, v, after)
		if h, err = v.RemoveToken(ctx, after, id); err != nil {
			t.Fatal(err)
		}
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
	k, h, err := v.AddKeyslot(ctx, before, keyA, keyB, AddOptions{PBKDF: cheap, AuthSlot: &keep})
	if err != nil {
		t.Fatal(err)
	}
	big := []byte(`{"type":"custos","keyslots":["` + strconv.Itoa(k.ID) + `"],"shares":"` + strings.Repeat("A", 20000) + `"}`)
	id, after, err := v.ImportToken(ctx, h, big, k.ID)
	wantErr(t, err, ErrTokenTooLarge)
	if id != -1 || after != nil {
		t.Fatalf("failed import returned %d, %+v", id, after)
	}
	var ce *CryptsetupError
	if !asCryptsetupError(err, &ce) || ce.Op != "token" {
		t.Fatalf("error = %v, want a CryptsetupError from token import", err)
	}
	if h, err = v.KillKeyslot(ctx, h, k.ID, keep, keyA); err != nil {
		t.Fatal(err)
	}
	sameHeader(t, v, h)
	if !slices.Equal(slotIDs(h), slotIDs(before)) || len(h.Tokens) != 0 {
		t.Fatalf("after undo: keyslots %v tokens %v, want %v and none", slotIDs(h), h.Tokens, slotIDs(before))
	}
}

// TestTokensLUKS1: LUKS1 has no tokens; the header says so, and no
// cryptsetup runs.
func TestTokensLUKS1(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	v := format(t, 1, keyA, 1000)
	c := countRuns(t, v)
	h := inspect(t, v)
	tok := custosToken(0, "c-1")
	_, _, err := c.v.ImportToken(ctx, h, tok, 0)
	wantErr(t, err, ErrNoTokens)
	_, err = c.v.ReplaceToken(ctx, h, 0, tok, 0)
	wantErr(t, err, ErrNoTokens)
	_, err = c.v.RemoveToken(ctx, h, 0)
	wantErr(t, err, ErrNoTokens)
	if runs := c.take(t); len(runs) != 0 {
		t.Fatalf("token changes on a luks1 header ran cryptsetup: %q", runs)
	}
	_, err = c.v.Tokens(ctx, TokenType)
	wantErr(t, err, ErrNoTokens)
	// Token goes to cryptsetup directly; its refusal maps too.
	_, err = c.v.Token(ctx, 0)
	wantErr(t, err, ErrNoTokens)
	if len(h.Tokens) != 0 {
		t.Fatalf("luks1 header tokens = %v", h.Tokens)
	}
	// A header is required.
	_, _, err = v.ImportToken(ctx, nil, tok, 0)
	if err == nil {
		t.Fatal("ImportToken without a header succeeded")
	}
}

func FuzzCheckToken(f *testing.F) {
	f.Add(custosToken(3, "c-1"), 3)
	f.Add(readTestdata(f, "token.json"), 2)
	f.Add([]byte(`{"type":"custos","keyslots":["0"],"a":{"a":[1,{"a":-0}]}}`), 0)
	f.Fuzz(func(t *testing.T, tok []byte, keyslot int) {
		if checkToken(tok, keyslot) != nil {
			return
		}
		// Accepted: compact JSON without escapes, which parses as a
		// custos token bound to keyslot and reads back as the same bytes.
		var compact bytes.Buffer
		if err := json.Compact(&compact, tok); err != nil || !bytes.Equal(compact.Bytes(), tok) || bytes.IndexByte(tok, '\\') >= 0 {
			t.Fatalf("accepted %q", tok)
		}
		got, err := parseToken(0, tok)
		if err != nil || got.Type != TokenType || !slices.Equal(got.Keyslots, []int{keyslot}) || !bytes.Equal(got.JSON, tok) {
			t.Fatalf("accepted %q, which parses as %+v, %v", tok, got, err)
		}
	})
}
