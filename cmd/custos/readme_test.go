package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// The README's prompt and exit-code tables are generated from the
// definitions --help and the man page use (custos gen-readme): this test
// fails when they drift apart. To refresh README.md, replace each block
// with what "go run ./cmd/custos gen-readme" prints.
func TestREADMEIsGenerated(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	app := newApp(strings.NewReader(""), &out, &out)
	if err := app.Run([]string{"custos", "gen-readme"}); err != nil {
		t.Fatal(err)
	}
	blocks := strings.SplitAfter(out.String(), readmeEnd+"\n")
	if len(blocks) != 3 || blocks[2] != "" {
		t.Fatalf("gen-readme printed %d blocks:\n%s", len(blocks)-1, out.String())
	}
	for _, want := range blocks[:2] {
		want = strings.TrimSuffix(want, "\n")
		begin := want[:strings.Index(want, "\n")]
		i := bytes.Index(readme, []byte(begin))
		if i < 0 {
			t.Errorf("README.md has no block %q", begin)
			continue
		}
		j := bytes.Index(readme[i:], []byte(readmeEnd))
		if j < 0 {
			t.Errorf("README.md's block %q has no end", begin)
			continue
		}
		if got := string(readme[i : i+j+len(readmeEnd)]); got != want {
			t.Errorf("README.md's block %q differs from gen-readme's:\n%s\nwant:\n%s", begin, got, want)
		}
	}
}
