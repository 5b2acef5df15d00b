package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"custos.dev/custos/cards/vcard"
)

func TestCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	var out, errb bytes.Buffer
	if err := run([]string{"ca", "--dir", dir}, &out, &errb); err != nil {
		t.Fatalf("ca: %v", err)
	}
	path := strings.TrimSpace(out.String())
	if path != filepath.Join(dir, "ca.pem") {
		t.Fatalf("ca printed %q", path)
	}
	first, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run([]string{"ca", "--dir", dir}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if second, _ := os.ReadFile(path); !bytes.Equal(first, second) {
		t.Fatal("a second ca run replaced the existing ca")
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "card.json")
	var out, errb bytes.Buffer
	if err := run([]string{"new", "--state", state, "--serial", "77", "--version", "5.4.3"}, &out, &errb); err != nil {
		t.Fatalf("new: %v", err)
	}
	if !strings.Contains(out.String(), "card 77") {
		t.Errorf("new printed %q", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "vcard-ca", "ca.pem")); err != nil {
		t.Errorf("default ca beside the state file: %v", err)
	}
	c, err := vcard.LoadCard(state)
	if err != nil || c.Serial() != 77 {
		t.Fatalf("LoadCard: %v", err)
	}
	for _, args := range [][]string{
		{"new", "--state", state, "--serial", "78"},                                         // exists
		{"new", "--state", filepath.Join(dir, "b.json"), "--serial", "x"},                   // bad serial
		{"new", "--state", filepath.Join(dir, "c.json"), "--serial", "1", "--version", "5"}, // bad version
		{"new", "--serial", "1"},
		{"insert"},
		{"frobnicate"},
		{},
	} {
		if err := run(args, &out, &errb); err == nil {
			t.Errorf("%q succeeded", args)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "c.json")); !os.IsNotExist(err) {
		t.Errorf("a failed new left a state file: %v", err)
	}
}
