package store

import (
	"bufio"
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzEventDecoders: the reader without reflection (parseRecordFast)
// accepts exactly the records the encoding/json reader accepts, and reads
// the same event from them.
func FuzzEventDecoders(f *testing.F) {
	for _, name := range []string{"testdata/events.jsonl", "testdata/fuzz-seeds.jsonl"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, maxRecordLen)
		for sc.Scan() {
			f.Add(append([]byte{}, sc.Bytes()...))
		}
	}
	for _, rec := range decoderEdgeRecords(f) {
		f.Add(rec)
	}
	f.Fuzz(func(t *testing.T, rec []byte) { compareDecoders(t, rec) })
}

func compareDecoders(t *testing.T, rec []byte) {
	t.Helper()
	want, werr := decodeRecordJSON(rec)
	var raw rawEvent
	fast := parseRecordFast(rec, &raw)
	switch {
	case fast && werr != nil:
		t.Fatalf("the fast reader accepts %q, encoding/json refuses it: %v", rec, werr)
	case !fast && werr == nil:
		t.Fatalf("the fast reader refuses %q, encoding/json accepts it", rec)
	case fast:
		got := raw.event(want.Hash)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: fast reader read %+v, encoding/json %+v", rec, got, want)
		}
	}
	// decodeRecord (either path) agrees too.
	ev, err := decodeRecord(rec)
	if (err == nil) != (werr == nil) || err == nil && !reflect.DeepEqual(ev, want) {
		t.Fatalf("decodeRecord %q = %+v, %v; want %+v, %v", rec, ev, err, want, werr)
	}
}

// decoderEdgeRecords are records at the edges of the canonical form: every
// escape of the actor, times, bodies with escapes, numbers, nesting.
func decoderEdgeRecords(t testing.TB) [][]byte {
	good := func(actor, body string, tm time.Time) []byte {
		rec, err := marshalRecord(Event{Seq: 7, Time: tm, Actor: actor, Type: "a.b-c", Ceremony: "c1", Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	t0 := time.Date(2026, 2, 28, 23, 59, 59, 0, time.UTC)
	var out [][]byte
	for _, actor := range []string{"Zoë", `a"b\c`, "<x>&y", "a\u2028b\u2029", "tab\there", "\x7f", "x\u00a0y", "\ufffd"} {
		out = append(out, good(actor, `{}`, t0))
	}
	for _, body := range []string{`{"a":"\u003c\/\n\"x\"é"}`, `{"n":[-0.5e+10,0,1E2,true,false,null,{}]}`, `{"s":"\u2028"}`, `{"dup":1,"dup":2}`, "{\"bad\":\"\xff\"}"} {
		out = append(out, good("op", body, t0))
	}
	for _, tm := range []time.Time{time.Date(2024, 2, 29, 0, 0, 0, 1, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(0, 1, 1, 0, 0, 0, 100, time.UTC)} {
		out = append(out, good("op", `{}`, tm))
	}
	base := string(good("op", `{}`, t0))
	for _, mut := range [][2]string{
		{`"seq":7`, `"seq":07`}, {`"seq":7`, `"seq":0`}, {`"seq":7`, `"seq":18446744073709551616`},
		{`2026-02-28T23:59:59Z`, `2026-02-30T23:59:59Z`}, {`2026-02-28T23:59:59Z`, `2026-02-28T23:59:60Z`},
		{`2026-02-28T23:59:59Z`, `2026-02-28T23:59:59.10Z`}, {`2026-02-28T23:59:59Z`, `2026-02-28T23:59:59.Z`},
		{`2026-02-28T23:59:59Z`, `2026-02-28T23:59:59+00:00`}, {`2026-02-28T23:59:59Z`, `2026-13-28T23:59:59Z`},
		{`2026-02-28T23:59:59Z`, `2023-02-29T23:59:59Z`}, {`2026-02-28T23:59:59Z`, `2100-02-29T23:59:59Z`},
		{`2026-02-28T23:59:59Z`, `2000-02-29T23:59:59Z`}, {`2026-02-28T23:59:59Z`, `2026-04-31T00:00:00Z`},
		{`2026-02-28T23:59:59Z`, `2026-12-31T00:00:00Z`}, {`2026-02-28T23:59:59Z`, `2026-01-32T00:00:00Z`},
		{`2026-02-28T23:59:59Z`, `2026-01-00T00:00:00Z`}, {`2026-02-28T23:59:59Z`, `2026-00-10T00:00:00Z`},
		{`2026-02-28T23:59:59Z`, `2026-06-30T24:00:00Z`}, {`2026-02-28T23:59:59Z`, `2026-06-3aT00:00:00Z`},
		{`"actor":"op"`, `"actor":"o\/p"`}, {`"actor":"op"`, `"actor":"o\u0070"`}, {`"actor":"op"`, `"actor":""`},
		{`"actor":"op"`, `"actor":"o<p"`}, {`"actor":"op"`, `"actor":"\u000a"`}, {`"actor":"op"`, `"actor":"\n"`},
		{`"ceremony":"c1",`, ``}, {`"ceremony":"c1"`, `"ceremony":""`}, {`"type":"a.b-c"`, `"type":"A"`},
		{`"body":{}`, `"body":[]`}, {`"body":{}`, `"body":{ }`}, {`"body":{}`, `"body":{"a":01}`},
		{`"body":{}`, `"body":{"a":"<"}`}, {`"body":{}`, `"body":{"a":"\x"}`}, {`"body":{}`, `"body":{"a":"\u12G4"}`},
		{`"body":{}`, `"body":{"a":1.}`}, {`"body":{}`, `"body":{"a":-}`}, {`"body":{}`, `"body":{"a":tru}`},
		{`"prev":"0000`, `"prev":"000A`}, {`"}`, `"} `}, {`{"seq"`, `{"Seq"`},
	} {
		out = append(out, []byte(strings.Replace(base, mut[0], mut[1], 1)))
	}
	deep := func(n int) []byte {
		return []byte(strings.Replace(base, `"body":{}`, `"body":{"a":`+strings.Repeat("[", n-2)+strings.Repeat("]", n-2)+`}`, 1))
	}
	out = append(out, deep(maxNesting-1), deep(maxNesting), deep(maxNesting+1))
	return out
}

func TestEventDecodersAgree(t *testing.T) {
	for _, rec := range decoderEdgeRecords(t) {
		compareDecoders(t, rec)
	}
}
