package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"custos.dev/custos/cards"
	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/internal/realtest"
)

// TestCardStatusShowsTries: card status shows the PIN's and PUK's tries
// left (the help promises them), as text and JSON, after a wrong PIN too;
// before firmware 5.3 the PUK's count is unknown and says so.
func TestCardStatusShowsTries(t *testing.T) {
	realtest.LockReaders(t)
	ca, err := vcard.OpenCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		version string
		puk     string
	}{{"5.7.1", "3"}, {"5.2.7", "unknown"}} {
		vc, err := vcard.NewCard(vcard.Config{Serial: 7000001, Version: tc.version, CA: ca, StatePath: filepath.Join(t.TempDir(), "card.json")})
		if err != nil {
			t.Fatal(err)
		}
		in, err := vc.Insert(context.Background(), vcard.Port0)
		if err != nil {
			t.Fatal(err)
		}
		status := func() (string, cardView) {
			t.Helper()
			out, errOut, code := runCLI(t, "", "card", "status", "--reader", in.Reader())
			if code != 0 {
				t.Fatalf("card status: exit %d\n%s", code, errOut)
			}
			jout, errOut, code := runCLI(t, "", "--json", "card", "status", "--reader", in.Reader())
			if code != 0 {
				t.Fatalf("card status --json: exit %d\n%s", code, errOut)
			}
			var v cardView
			if err := json.Unmarshal([]byte(jout), &v); err != nil {
				t.Fatalf("card status --json: %v\n%s", err, jout)
			}
			return out, v
		}
		out, v := status()
		if !strings.Contains(out, "pin tries 3\n") || !strings.Contains(out, "puk tries "+tc.puk+"\n") {
			t.Errorf("%s: card status does not show the tries:\n%s", tc.version, out)
		}
		if v.PINTries == nil || *v.PINTries != 3 || (tc.puk == "3") != (v.PUKTries != nil) {
			t.Errorf("%s: card status --json = %+v", tc.version, v)
		}
		c, err := cards.Open(in.Reader())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.VerifyPIN([]byte("999999")); err == nil {
			t.Fatal("a wrong PIN verified")
		}
		c.Close()
		if out, _ := status(); !strings.Contains(out, "pin tries 2\n") {
			t.Errorf("%s: card status after a wrong PIN:\n%s", tc.version, out)
		}
		if err := in.Remove(); err != nil {
			t.Fatal(err)
		}
	}
}
