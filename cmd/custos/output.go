package main

import (
	"encoding/json"
	"fmt"
	"io"
)

// texter is a command's result: the same value is written as text, or as
// JSON with --json, so the two never disagree.
type texter interface {
	writeText(w io.Writer) error
}

// render writes v to stdout: JSON when --json is set, else its text form.
func (e *env) render(json_ bool, v texter) error {
	if json_ {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return fmt.Errorf("write json: %w", err)
		}
		return nil
	}
	return v.writeText(e.stdout)
}

// say writes a line of talk (progress, instructions) to stderr. Data never
// goes there and talk never goes to stdout.
func (e *env) say(format string, args ...any) {
	fmt.Fprintf(e.stderr, format+"\n", args...)
}
