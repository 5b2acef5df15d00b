package luks

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"testing"
	"unicode/utf8"
)

// checkTokenValuesDecoder is checkTokenValues as it was, on
// encoding/json's Decoder: the reference the scanner is held to.
func checkTokenValuesDecoder(tok []byte) error {
	d := json.NewDecoder(bytes.NewReader(tok))
	d.UseNumber()
	type level struct {
		names    map[string]bool
		wantName bool
	}
	var stack []*level
	for {
		t, err := d.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		if n := len(stack); n > 0 && stack[n-1].wantName && t != json.Delim('}') {
			name, _ := t.(string)
			if stack[n-1].names[name] {
				return fmt.Errorf("token has member %q twice in one object", clip(name))
			}
			stack[n-1].names[name] = true
			stack[n-1].wantName = false
			continue
		}
		switch t := t.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, &level{names: map[string]bool{}, wantName: true})
				continue
			case '[':
				stack = append(stack, &level{})
				continue
			}
			stack = stack[:len(stack)-1]
		case json.Number:
			if !plainIntRE.MatchString(string(t)) {
				return fmt.Errorf("token has number %s: only integers are written unchanged", clip(string(t)))
			}
			if _, err := strconv.ParseInt(string(t), 10, 64); err != nil {
				return fmt.Errorf("token has number %s out of range", clip(string(t)))
			}
		}
		if n := len(stack); n > 0 && stack[n-1].names != nil {
			stack[n-1].wantName = true
		}
	}
}

var plainIntRE = regexp.MustCompile(`^(0|-?[1-9][0-9]*)$`)

// checkedLikeCallers says whether text meets what both callers of
// checkTokenValues check first: a JSON object, UTF-8, compact, no
// backslash.
func checkedLikeCallers(text []byte) bool {
	var compact bytes.Buffer
	return len(text) > 0 && text[0] == '{' && utf8.Valid(text) && json.Compact(&compact, text) == nil &&
		bytes.Equal(compact.Bytes(), text) && bytes.IndexByte(text, '\\') < 0
}

var tokenValueCases = []string{
	`{}`,
	`{"a":1,"b":[1,2,{"a":1}],"c":{"a":{"a":[]}}}`,
	`{"a":1,"a":2}`,
	`{"a":{"b":1},"c":{"b":1}}`,
	`{"a":[{"b":1,"b":1}]}`,
	`{"a":-0}`,
	`{"a":0}`,
	`{"a":-12}`,
	`{"a":1.0}`,
	`{"a":1e3}`,
	`{"a":9223372036854775807}`,
	`{"a":9223372036854775808}`,
	`{"a":-9223372036854775808}`,
	`{"a":-9223372036854775809}`,
	`{"a":true,"b":false,"c":null,"d":"x:y,\"z"}`,
	`{"é":1,"e":2,"é":3}`,
	`{"a":[[],[[]],{}],"b":"","":""}`,
	`{"":1,"":2}`,
	`{"a":"}","b":"]","c":",","d":":"}`,
}

func TestCheckTokenValuesAsDecoder(t *testing.T) {
	for _, c := range tokenValueCases {
		text := []byte(c)
		if !checkedLikeCallers(text) {
			continue // (the one with an escape)
		}
		got, want := checkTokenValues(text), checkTokenValuesDecoder(text)
		if (got == nil) != (want == nil) {
			t.Errorf("%s: scanner %v, decoder %v", c, got, want)
		}
	}
	// The refusals that matter, by name.
	for c, want := range map[string]string{
		`{"a":1,"a":2}`:             `member "a" twice`,
		`{"a":[{"b":1,"b":1}]}`:     `member "b" twice`,
		`{"a":-0}`:                  "only integers",
		`{"a":1.0}`:                 "only integers",
		`{"a":9223372036854775808}`: "out of range",
	} {
		if err := checkTokenValues([]byte(c)); err == nil || !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("%s: %v, want an error saying %q", c, err, want)
		}
	}
}

// FuzzCheckTokenValues holds the scanner to the Decoder it replaced on
// every text its callers would pass it.
func FuzzCheckTokenValues(f *testing.F) {
	for _, c := range tokenValueCases {
		f.Add([]byte(c))
	}
	f.Add(readTestdata(f, "token.json"))
	f.Add(readTestdata(f, "luks2-metadata.json"))
	f.Fuzz(func(t *testing.T, text []byte) {
		if !checkedLikeCallers(text) {
			return
		}
		got, want := checkTokenValues(text), checkTokenValuesDecoder(text)
		if (got == nil) != (want == nil) {
			t.Fatalf("%q: scanner %v, decoder %v", text, got, want)
		}
	})
}
