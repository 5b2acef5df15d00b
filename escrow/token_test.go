package escrow

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseToken feeds the token parser arbitrary bytes: the LUKS2 header
// is untrusted. It must never panic, and whatever it accepts must be a
// complete record that encodes back to a token it accepts again.
func FuzzParseToken(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "token", "*.json"))
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"type":"custos"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := parseToken(b)
		if err != nil {
			return
		}
		if !rec.Complete() {
			t.Fatal("accepted an incomplete ceremony")
		}
		again, err := encodeToken(rec)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := parseToken(again); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
	})
}

func TestParseTokenVector(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "token", "valid-2-of-3.json"))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := parseToken(b)
	if err != nil {
		t.Fatalf("parse the vector: %v", err)
	}
	if rec.K != 2 || rec.N != 3 || rec.Keyslot != 1 || len(rec.Cards) != 3 || rec.Anchor.Seq == 0 {
		t.Fatalf("record %+v", rec)
	}
	for _, bad := range []struct{ from, to string }{
		{`"custos_version":1`, `"custos_version":2`},
		{`"k":2`, `"k":1`},
		{`"k":2`, `"k":4`},
		{`"status":"active"`, `"status":"open"`},
		{`"index":1`, `"index":2`},
		{`"type":"custos"`, `"type":"systemd-tpm2"`},
		{`"keyslot":1`, `"keyslot":32`},
		{`"slot":"82"`, `"slot":"9a"`},
		{`{`, `{"extra":1,`},
	} {
		mod := strings.Replace(string(b), bad.from, bad.to, 1)
		if mod == string(b) {
			t.Fatalf("vector lacks %s", bad.from)
		}
		if _, err := parseToken([]byte(mod)); err == nil {
			t.Errorf("%s -> %s accepted", bad.from, bad.to)
		}
	}
}

// A token that does not parse is reported, and recovery goes on from the
// log.
func TestRecoverUnreadableToken(t *testing.T) {
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	r.vol.editToken(t, func(tj *tokenJSON) { tj.Cards[0].Sealed = "!!!" })
	rr, err := r.recover("x", 0, 1)
	if err != nil || rr.Source != "log" {
		t.Fatalf("recover: %v %+v", err, rr)
	}
	if !strings.Contains(r.p.transcript(), "warning: token 0 is unreadable") {
		t.Fatalf("not reported:\n%s", r.p.transcript())
	}
	st, _ := Status(context.Background(), r.env)
	if len(st.Problems) == 0 {
		t.Fatal("status reports no problem")
	}
}

// TestWriteTokenVector regenerates testdata/token/valid-2-of-3.json when
// ESCROW_WRITE_VECTORS=1.
func TestWriteTokenVector(t *testing.T) {
	if os.Getenv("ESCROW_WRITE_VECTORS") != "1" {
		t.Skip("set ESCROW_WRITE_VECTORS=1 to regenerate the token vector")
	}
	r := newRig(t, 2, 3)
	r.enroll(2, 3)
	h, _ := r.vol.Inspect(context.Background())
	os.MkdirAll(filepath.Join("testdata", "token"), 0o755)
	if err := os.WriteFile(filepath.Join("testdata", "token", "valid-2-of-3.json"), h.Tokens[0].JSON, 0o644); err != nil {
		t.Fatal(err)
	}
}
