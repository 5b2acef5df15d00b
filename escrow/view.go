package escrow

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// The copies of a ceremony, and the rule custos acts on (docs/DESIGN.md,
// "Trust at the point of use"): each copy can be forged by someone — the
// log by whoever can write its file, the token by whoever holds the disk,
// a certificate by its own custodian — so no copy alone decides anything
// that destroys or misleads. A ceremony is *confirmed* when two
// independent copies agree on it (the token and the log, or either with a
// card's certificate); a recovered key that opens a keyslot proves that
// keyslot. Everything else is a claim: shown, tried when nothing better
// exists, never acted on destructively.

// tokenCopy is one "custos" token of the volume's header.
type tokenCopy struct {
	id  int
	tok *store.Token // nil when the token does not decode or belong here
	err error        // why not
	// anchorErr is the token's anchor checked against the log; nil when
	// good or when there is no log to check it against.
	anchorErr error
}

func (t *tokenCopy) name() string { return "token " + strconv.Itoa(t.id) }

// view is what the header, its tokens and the log say about the volume's
// ceremonies, read once at the start of a ceremony step.
type view struct {
	h      *luks.Header
	vid    shares.VolumeID
	tokens []*tokenCopy
	// log are the volume's ceremonies in the log, oldest first; hasLog
	// tells whether there is a log at all, logErr whether it could be
	// read.
	log    []store.CeremonyState
	hasLog bool
	logErr error
}

// look reads the header (once), decodes its custos tokens and reads the
// volume's ceremonies from the log, checking each token's anchor against
// the log.
func look(ctx context.Context, env *Env) (*view, error) {
	h, err := env.Volume.Inspect(ctx)
	if err != nil {
		return nil, err
	}
	return lookAt(env, h)
}

// lookAt is look with a header already read.
func lookAt(env *Env, h *luks.Header) (*view, error) {
	v := &view{h: h}
	var err error
	if v.vid, err = shares.ParseVolumeID(h.UUID); err != nil {
		return nil, fmt.Errorf("volume uuid: %w", err)
	}
	if env.Log != nil {
		v.hasLog = true
		v.log, err = env.Log.VolumeCeremonies(v.vid.String())
		if err != nil {
			v.log, v.logErr = nil, fmt.Errorf("read log: %w", err)
		}
	}
	for _, t := range h.Tokens {
		if t.Type != luks.TokenType {
			continue
		}
		tc := &tokenCopy{id: t.ID}
		tc.tok, tc.err = readToken(v, t)
		if tc.tok != nil && v.hasLog && v.logErr == nil && v.logState(tc.tok.Record.ID) != nil {
			if tc.tok.Record.Version >= 2 || tc.tok.Anchor != (store.Head{}) {
				tc.anchorErr = env.Log.CheckAnchor(tc.tok.Anchor, tc.tok.Record)
			}
		}
		v.tokens = append(v.tokens, tc)
	}
	return v, nil
}

// readToken decodes a header token and checks that it belongs to this
// volume and is bound to the keyslot it names (or to none: cryptsetup
// unbinds a token when its keyslot is killed).
func readToken(v *view, t luks.Token) (*store.Token, error) {
	tok, err := store.ParseToken(t.JSON)
	if err != nil {
		return nil, err
	}
	rec := tok.Record
	if volumeOf(rec) != v.vid {
		return nil, fmt.Errorf("names volume %s, not this one (%s)", volumeOf(rec), v.vid)
	}
	if len(t.Keyslots) > 0 && !slices.Equal(t.Keyslots, []int{rec.Keyslot}) {
		return nil, fmt.Errorf("bound to keyslots %v, but names keyslot %d", t.Keyslots, rec.Keyslot)
	}
	if err := checkRecord(rec); err != nil {
		return nil, err
	}
	return tok, nil
}

// logState returns the log's state of a ceremony, or nil.
func (v *view) logState(id [16]byte) *store.CeremonyState {
	for i := range v.log {
		if v.log[i].Record.ID == id {
			return &v.log[i]
		}
	}
	return nil
}

// tokenOf returns the decoded token of a ceremony, or nil.
func (v *view) tokenOf(id [16]byte) *tokenCopy {
	for _, t := range v.tokens {
		if t.tok != nil && t.tok.Record.ID == id {
			return t
		}
	}
	return nil
}

// claim is one ceremony of the volume as the token and the log tell it.
type claim struct {
	id    [16]byte
	token *tokenCopy           // nil when no token holds it
	log   *store.CeremonyState // nil when the log does not
	// diffs are the differences between the token's and the log's
	// records (both present).
	diffs []store.Difference
}

// frameAgrees tells whether token and log both hold the ceremony and agree
// on everything but individual cards.
func (c *claim) frameAgrees() bool {
	if c.token == nil || c.log == nil {
		return false
	}
	for _, d := range c.diffs {
		if d.Index == 0 {
			return false
		}
	}
	return true
}

// agrees tells whether token and log both hold the ceremony and agree on
// all of it.
func (c *claim) agrees() bool { return c.token != nil && c.log != nil && len(c.diffs) == 0 }

// copies names the copies that hold the claim.
func (c *claim) copies() []string {
	var out []string
	if c.token != nil {
		out = append(out, c.token.name())
	}
	if c.log != nil {
		out = append(out, "log")
	}
	return out
}

// claims lists the ceremonies the token and the log tell of: the log's
// first (oldest first), then those only a token holds.
func (v *view) claims() []*claim {
	var out []*claim
	for i := range v.log {
		s := &v.log[i]
		out = append(out, &claim{id: s.Record.ID, log: s})
	}
	for _, t := range v.tokens {
		if t.tok == nil {
			continue
		}
		id := t.tok.Record.ID
		i := slices.IndexFunc(out, func(c *claim) bool { return c.id == id })
		if i < 0 {
			out = append(out, &claim{id: id, token: t})
			continue
		}
		if out[i].token == nil {
			out[i].token = t
		}
	}
	for _, c := range out {
		if c.token != nil && c.log != nil {
			c.diffs = differences(c.token.tok.Record, c.log.Record)
		}
	}
	return out
}

// claimOf returns the claim of one ceremony, or nil.
func (v *view) claimOf(id [16]byte) *claim {
	for _, c := range v.claims() {
		if c.id == id {
			return c
		}
	}
	return nil
}

// describeDiffs says how a token and the log disagree, copy by copy.
func describeDiffs(c *claim) []string {
	var out []string
	for _, d := range c.diffs {
		what := d.Field
		if d.Index > 0 {
			what = fmt.Sprintf("card %d's %s", d.Index, d.Field)
		}
		out = append(out, fmt.Sprintf("ceremony %s: %s differs between %s and the log", idText(c.id), what, c.token.name()))
	}
	return out
}

// openLog returns the log's unfinished ceremony of the volume, or nil.
func (v *view) openLog() *store.CeremonyState {
	for i := len(v.log) - 1; i >= 0; i-- {
		if v.log[i].Status == StatusOpen {
			return &v.log[i]
		}
	}
	return nil
}

// current is the volume's current ceremony as a confirmed claim: the
// log's newest active ceremony whose token agrees with it (LUKS2), with
// what the copies say when there is none.
type current struct {
	claim *claim
	rec   *Record
	// confirmed: token and log agree on all of it, and the token's
	// anchor is good.
	confirmed bool
	// why names the copies and what is missing when not confirmed.
	why string
}

// current finds the volume's current ceremony. Without a confirmed one, it
// returns the best claim with the reason it is not confirmed, or nil when
// no copy tells of an active ceremony.
func (v *view) current() *current {
	cs := v.claims()
	var best *current
	for i := len(cs) - 1; i >= 0; i-- {
		c := cs[i]
		active := c.log != nil && c.log.Status == StatusActive
		if !active && !(c.log == nil && c.token != nil && c.token.tok.Record.Complete()) {
			continue
		}
		cur := &current{claim: c}
		switch {
		case c.log != nil:
			cur.rec = c.log.Record
		default:
			cur.rec = c.token.tok.Record
		}
		switch {
		case c.agrees() && c.token.anchorErr == nil:
			cur.confirmed = true
			return cur
		case c.agrees():
			cur.why = fmt.Sprintf("%s and the log agree, but the token's anchor fails: %v", c.token.name(), c.token.anchorErr)
		case c.token != nil && c.log != nil:
			cur.why = strings.Join(describeDiffs(c), "; ")
		case c.log != nil && v.h.Version == 2:
			cur.why = "only the log holds it: the luks2 header has no token for it"
		case c.log != nil:
			cur.why = "only the log holds it (a luks1 header has no token)"
		case !v.hasLog:
			cur.why = "only " + c.token.name() + " holds it: there is no ceremony log"
		default:
			cur.why = "only " + c.token.name() + " holds it: the log does not"
		}
		if best == nil {
			best = cur
		}
	}
	return best
}
