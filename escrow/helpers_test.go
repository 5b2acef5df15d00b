package escrow

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// crashAt makes the nth call of the failpoint name stop the ceremony, as a
// kill -9 there would.
func crashAt(t *testing.T, name string, nth int) {
	t.Helper()
	hits := 0
	failpoint = func(n string) error {
		if n == name {
			hits++
			if hits == nth {
				return fmt.Errorf("crash at %s #%d", n, nth)
			}
		}
		return nil
	}
	t.Cleanup(func() { failpoint = nil })
}

// reset forgets the cards and answers still queued.
func (r *rig) reset() {
	r.src.mu.Lock()
	r.src.queue = nil
	r.src.mu.Unlock()
	r.p.mu.Lock()
	r.p.answers = nil
	r.p.mu.Unlock()
}

func (r *rig) header() *luks.Header {
	r.t.Helper()
	h, err := r.vol.Inspect(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return h
}

// opensWithOperatorKey checks that the operator's key still opens the
// volume.
func (r *rig) opensWithOperatorKey() {
	r.t.Helper()
	if _, err := r.vol.FindKeyslot(context.Background(), []byte(operatorKey)); err != nil {
		r.t.Fatalf("the operator's key no longer opens the volume: %v\n%s", err, r.p.transcript())
	}
}

// ownKey is a key the operator adds with plain cryptsetup luksAddKey: it
// lands in the first free keyslot.
const ownKey = "the operator's own key"

// addKey adds key as luksAddKey would (first free keyslot), authorised by
// the operator's key, and returns its keyslot.
func (r *rig) addKey(key string) int {
	r.t.Helper()
	slot, err := r.vol.addKeyslot([]byte(operatorKey), []byte(key), luks.AddOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return slot
}

// opensWith checks that key still opens keyslot slot.
func (r *rig) opensWith(key string, slot int) {
	r.t.Helper()
	if err := r.vol.TestKey(context.Background(), []byte(key), slot); err != nil {
		r.t.Fatalf("%q in keyslot %d no longer opens the volume: %v\n%s", key, slot, err, r.p.transcript())
	}
}

// opensNothing checks that key opens no keyslot.
func (r *rig) opensNothing(what string, key []byte) {
	r.t.Helper()
	if s, err := r.vol.FindKeyslot(context.Background(), key); err == nil {
		r.t.Fatalf("%s still opens keyslot %d\n%s", what, s, r.p.transcript())
	}
}

// noSecrets checks that neither a recovery key, nor a PIN, nor a
// passphrase appears in what custos said or asked, in a token or in the
// log file.
func (r *rig) noSecrets(extra ...string) {
	r.t.Helper()
	secrets := append([]string{operatorKey}, extra...)
	for i := range r.cards {
		secrets = append(secrets, r.pin(i))
	}
	r.vol.mu.Lock()
	for _, k := range r.vol.slots {
		secrets = append(secrets, string(k))
	}
	var tokens strings.Builder
	for _, tk := range r.vol.tokens {
		tokens.Write(tk.JSON)
	}
	r.vol.mu.Unlock()
	var db []byte
	if onEtcd() {
		db = etcdDump(r.t, r.dsn)
	} else {
		var err error
		if db, err = os.ReadFile(r.dbPath); err != nil {
			r.t.Fatal(err)
		}
	}
	said := r.p.transcript()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(said, s) || strings.Contains(tokens.String(), s) || strings.Contains(string(db), s) {
			r.t.Errorf("secret %q leaked", s)
		}
	}
}

// rotateRun rotates a 2-of-3 ceremony on cards 0,1,2 to cards 1,2,3,
// authorised by cards 0 and 1 (unless opts.AuthKey), then offers card 0
// for wiping.
func (r *rig) rotateRun(opts RotateOptions) (*RotateResult, error) {
	if opts.AuthKey == nil {
		r.insert(0, 1)
	}
	r.insert(1, 2, 3)
	r.insert(0)
	if opts.WipeWait == 0 {
		opts.WipeWait = time.Second
	}
	return Rotate(context.Background(), r.env, opts)
}

// status runs Status and fails the test on an error.
func (r *rig) status() *StatusReport {
	r.t.Helper()
	st, err := Status(context.Background(), r.env)
	if err != nil {
		r.t.Fatalf("status: %v\n%+v", err, st)
	}
	return st
}

// logState returns the log's state of a ceremony.
func (r *rig) logState(id [16]byte) store.CeremonyState {
	r.t.Helper()
	st, err := r.log.Ceremony(idText(id))
	if err != nil {
		r.t.Fatalf("log: ceremony %s: %v", idText(id), err)
	}
	return st
}

// editToken decodes the custos token of a ceremony, lets fn change its
// record and anchor, and writes it back re-encoded, bound as it was: what
// someone holding the disk can do.
func (r *rig) editToken(id [16]byte, fn func(tok *store.Token)) {
	r.t.Helper()
	r.vol.mu.Lock()
	defer r.vol.mu.Unlock()
	for tid, tk := range r.vol.tokens {
		if tk.Type != luks.TokenType {
			continue
		}
		tok, err := store.ParseToken(tk.JSON)
		if err != nil || tok.Record.ID != id {
			continue
		}
		fn(tok)
		raw, err := store.EncodeToken(tok.Record, tok.Anchor)
		if err != nil {
			r.t.Fatalf("re-encode token: %v", err)
		}
		keyslots := tk.Keyslots
		if len(keyslots) == 0 {
			raw = []byte(strings.Replace(string(raw), fmt.Sprintf(`"keyslots":["%d"]`, tok.Record.Keyslot), `"keyslots":[]`, 1))
		} else {
			keyslots = []int{tok.Record.Keyslot}
		}
		r.vol.tokens[tid] = luks.Token{ID: tid, Type: luks.TokenType, Keyslots: keyslots, JSON: raw}
		return
	}
	r.t.Fatalf("no token of ceremony %s", idText(id))
}

// plantToken writes a custos token for rec into the first free token ID,
// bound to rec's keyslot, anchored at anchor (or the log's head): what
// someone holding the disk can do.
func (r *rig) plantToken(rec *Record, anchor store.Head) int {
	r.t.Helper()
	if anchor.Seq == 0 {
		var err error
		if anchor, err = r.log.Head(); err != nil {
			r.t.Fatal(err)
		}
	}
	raw, err := store.EncodeToken(rec, anchor)
	if err != nil {
		r.t.Fatalf("encode token: %v", err)
	}
	r.vol.mu.Lock()
	defer r.vol.mu.Unlock()
	for id := range luks.LUKS2Tokens {
		if _, used := r.vol.tokens[id]; !used {
			r.vol.tokens[id] = luks.Token{ID: id, Type: luks.TokenType, Keyslots: []int{rec.Keyslot}, JSON: raw}
			return id
		}
	}
	r.t.Fatal("no token id free")
	return -1
}

// removeTokens removes every custos token.
func (r *rig) removeTokens() {
	r.vol.mu.Lock()
	defer r.vol.mu.Unlock()
	for id, tk := range r.vol.tokens {
		if tk.Type == luks.TokenType {
			delete(r.vol.tokens, id)
		}
	}
}

// custosTokens counts the custos tokens in the header.
func (r *rig) custosTokens() int {
	n := 0
	for _, tk := range r.header().Tokens {
		if tk.Type == luks.TokenType {
			n++
		}
	}
	return n
}

// junkShares makes a split of a junk secret for a forged ceremony rec (its
// ID, volume, k, n already set) and seals share i to the key of card
// cards[i-1]: a forger needs only the cards' public keys. It fills rec's
// digest and cards, reusing the real entries' serials, slots, custodians,
// keys and attestations from like.
func (r *rig) junkShares(rec *Record, like *Record) {
	r.t.Helper()
	secret := make([]byte, shares.RecoveryKeySize)
	for i := range secret {
		secret[i] = byte(i + 1)
	}
	cer, shs, err := shares.Split(shares.CeremonyID(rec.ID), shares.VolumeID(rec.Volume), secret, rec.K, rec.N)
	if err != nil {
		r.t.Fatal(err)
	}
	rec.Digest = [32]byte(cer.Digest)
	rec.Cards = nil
	for i := 1; i <= rec.N; i++ {
		real := like.Card(i)
		card := r.cardOf(real.Serial)
		pub, _ := card.slots[real.Slot].priv.PublicKey.ECDH()
		sealed, err := shares.Seal(shs[i-1], pub)
		if err != nil {
			r.t.Fatal(err)
		}
		b, _ := sealed.MarshalBinary()
		e := *real
		e.Commitment, e.Sealed = [32]byte(cer.Commitments[i-1]), b
		rec.Cards = append(rec.Cards, e)
	}
}

// cardOf returns the fake card with a serial.
func (r *rig) cardOf(serial string) *fakeCard {
	r.t.Helper()
	for _, c := range r.cards {
		if serialText(c.serial) == serial {
			return c
		}
	}
	r.t.Fatalf("no card %s", serial)
	return nil
}

func serialText(s uint32) string { return fmt.Sprint(s) }

// forgedWire is an event's record as docs/FORMAT.md section 11 defines it.
type forgedWire struct {
	Seq      uint64          `json:"seq"`
	Time     string          `json:"time"`
	Actor    string          `json:"actor"`
	Type     string          `json:"type"`
	Ceremony string          `json:"ceremony,omitempty"`
	Body     json.RawMessage `json:"body"`
	Prev     string          `json:"prev"`
}

// forgedEntry is the store's index entry of a ceremony (bucket
// "ceremonies", schema 3), as store/ceremony.go keeps it.
type forgedEntry struct {
	Status    string          `json:"status"`
	Volume    string          `json:"volume"`
	Replaces  string          `json:"replaces,omitempty"`
	First     uint64          `json:"first"`
	Last      uint64          `json:"last"`
	Replacers []string        `json:"replacers,omitempty"`
	Body      json.RawMessage `json:"body"`
}

// forgeCeremony appends, as whoever can write the log's file would, one
// well-chained ceremony event recording rec with status — bypassing the
// store's rules — and updates the index buckets the way the store keeps
// them, so that every reader of the log sees it. It returns the new head.
func (r *rig) forgeCeremony(status string, rec *Record) store.Head {
	r.t.Helper()
	return r.forgeBody(status, rec, forgeRecord(r.t, status, rec))
}

// forgeV1Salt appends to the log's file a copy of the latest (version 1)
// ceremony event of rec's ceremony with its keyslot salt replaced by
// rec.Salt.
func (r *rig) forgeV1Salt(rec *Record) store.Head {
	r.t.Helper()
	st := r.logState(rec.ID)
	var body []byte
	if err := r.log.Events(rec.IDString(), func(ev store.Event) error {
		if ev.Seq == st.Last {
			body = ev.Body
		}
		return nil
	}); err != nil || body == nil {
		r.t.Fatalf("latest event of %s: %v", rec.IDString(), err)
	}
	forged := strings.Replace(string(body), `"keyslot_salt":"`+st.Record.Salt+`"`, `"keyslot_salt":"`+rec.Salt+`"`, 1)
	if forged == string(body) {
		r.t.Fatal("no keyslot_salt in the version 1 body")
	}
	return r.forgeBody(st.Status, rec, json.RawMessage(forged))
}

// forgeBody appends a ceremony event with this body for rec (whose ID,
// volume, replaces and cards the indexes take), bypassing the store.
func (r *rig) forgeBody(status string, rec *Record, body json.RawMessage) store.Head {
	r.t.Helper()
	r.boltOnly()
	if err := r.log.Close(); err != nil {
		r.t.Fatal(err)
	}
	h := forgeFile(r.t, r.dbPath, status, rec, body)
	r.openLog()
	return h
}

// forgeRecord is the body of a ceremony event recording rec with status.
func forgeRecord(t testing.TB, status string, rec *Record) json.RawMessage {
	t.Helper()
	enc, err := rec.Encode()
	if err != nil {
		t.Fatalf("encode forged record: %v", err)
	}
	return json.RawMessage(`{"status":"` + status + `","record":` + string(enc) + `}`)
}

// forgeFile appends the event to the closed log file at path, chained to
// its head, and updates the index buckets as store keeps them.
func forgeFile(t testing.TB, path, status string, rec *Record, body json.RawMessage) store.Head {
	t.Helper()
	id := rec.IDString()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var head store.Head
	err = db.Update(func(btx *bolt.Tx) error {
		meta, events := btx.Bucket([]byte("meta")), btx.Bucket([]byte("events"))
		hv := meta.Get([]byte("head"))
		seq := binary.BigEndian.Uint64(hv[:8]) + 1
		w := forgedWire{Seq: seq, Time: time.Now().UTC().Format(time.RFC3339Nano), Actor: "custos", Type: store.TypeCeremony,
			Ceremony: id, Body: body, Prev: hex.EncodeToString(hv[8:40])}
		raw, err := json.Marshal(w)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(raw)
		key := binary.BigEndian.AppendUint64(nil, seq)
		if err := events.Put(key, append(sum[:], raw...)); err != nil {
			return err
		}
		if err := meta.Put([]byte("head"), append(binary.BigEndian.AppendUint64(nil, seq), sum[:]...)); err != nil {
			return err
		}
		head = store.Head{Seq: seq, Hash: sum}
		if err := btx.Bucket([]byte("ceremony-events")).Put(append(append([]byte(id), 0), key...), []byte{}); err != nil {
			return err
		}
		cers := btx.Bucket([]byte("ceremonies"))
		var e forgedEntry
		if old := cers.Get([]byte(id)); old != nil {
			if err := json.Unmarshal(old, &e); err != nil {
				return err
			}
		} else {
			e.First = seq
		}
		e.Status, e.Volume, e.Replaces, e.Last, e.Body = status, rec.VolumeString(), rec.ReplacesString(), seq, body
		if err := putJSON(cers, id, e); err != nil {
			return err
		}
		if rp := rec.ReplacesString(); rp != "" {
			var p forgedEntry
			if err := json.Unmarshal(cers.Get([]byte(rp)), &p); err != nil {
				return err
			}
			if !slices.Contains(p.Replacers, id) {
				p.Replacers = append(p.Replacers, id)
				if err := putJSON(cers, rp, p); err != nil {
					return err
				}
			}
		}
		vols := btx.Bucket([]byte("volumes"))
		var vol store.VolumeRecord
		if raw := vols.Get([]byte(rec.VolumeString())); raw != nil {
			if err := json.Unmarshal(raw, &vol); err != nil {
				return err
			}
		}
		vol.UUID = rec.VolumeString()
		if !slices.Contains(vol.History, id) {
			vol.History = append(vol.History, id)
		}
		vol.Current = ""
		for i := len(vol.History) - 1; i >= 0; i-- {
			var c forgedEntry
			if err := json.Unmarshal(cers.Get([]byte(vol.History[i])), &c); err != nil {
				return err
			}
			if c.Status == store.StatusActive {
				vol.Current = vol.History[i]
				break
			}
		}
		if err := putJSON(vols, vol.UUID, vol); err != nil {
			return err
		}
		cards, fps := btx.Bucket([]byte("cards")), btx.Bucket([]byte("fingerprints"))
		for _, c := range rec.Cards {
			var cr store.CardRecord
			if raw := cards.Get([]byte(c.Serial)); raw != nil {
				if err := json.Unmarshal(raw, &cr); err != nil {
					return err
				}
			}
			fp := hex.EncodeToString(c.Key[:])
			cr.Serial = c.Serial
			if cr.Custodian == "" {
				cr.Custodian = c.Custodian
			}
			if !slices.ContainsFunc(cr.Keys, func(k store.CardKey) bool { return k.Fingerprint == fp }) {
				cr.Keys = append(cr.Keys, store.CardKey{Slot: slotText(c.Slot), Fingerprint: fp})
			}
			if !slices.Contains(cr.Ceremonies, id) {
				cr.Ceremonies = append(cr.Ceremonies, id)
			}
			if err := putJSON(cards, c.Serial, cr); err != nil {
				return err
			}
			if err := fps.Put([]byte(fp), []byte(c.Serial)); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("forge the log: %v", err)
	}
	return head
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), raw)
}

// snapshotLog copies the log's file, to roll the log back to it later.
func (r *rig) snapshotLog() []byte {
	r.t.Helper()
	r.boltOnly()
	if err := r.log.Close(); err != nil {
		r.t.Fatal(err)
	}
	b, err := os.ReadFile(r.dbPath)
	if err != nil {
		r.t.Fatal(err)
	}
	r.openLog()
	return b
}

// replaceLog puts b (a snapshot) in place of the log's file.
func (r *rig) replaceLog(b []byte) {
	r.t.Helper()
	r.boltOnly()
	if err := r.log.Close(); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(r.dbPath, b, 0o600); err != nil {
		r.t.Fatal(err)
	}
	r.openLog()
}

// freshLog replaces the log by a new, empty one.
func (r *rig) freshLog() {
	r.t.Helper()
	r.boltOnly()
	if err := r.log.Close(); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Remove(r.dbPath); err != nil {
		r.t.Fatal(err)
	}
	r.openLog()
}

// clean checks that text holds no character that could move a terminal's
// cursor, change its colours or reorder what it shows.
func clean(t *testing.T, what, text string) {
	t.Helper()
	if bad := unclean(text); bad != "" {
		t.Fatalf("%s carries %s", what, bad)
	}
}

// unclean describes the first character of text (lines apart) that a
// terminal would act on, "" when there is none.
func unclean(text string) string {
	for i, c := range text {
		if c == '\n' {
			continue
		}
		if unicode.IsControl(c) || unicode.Is(unicode.Cf, c) || unicode.In(c, unicode.Zl, unicode.Zp) || c == utf8.RuneError {
			return fmt.Sprintf("%U at byte %d: %q", c, i, text)
		}
	}
	return ""
}

// killedNothing checks that no keyslot was killed since the count n.
func (r *rig) killedNothing(n int) {
	r.t.Helper()
	r.vol.mu.Lock()
	defer r.vol.mu.Unlock()
	if len(r.vol.killed) != n {
		r.t.Fatalf("keyslots killed: %v\n%s", r.vol.killed[n:], r.p.transcript())
	}
}

func (r *rig) killCount() int {
	r.vol.mu.Lock()
	defer r.vol.mu.Unlock()
	return len(r.vol.killed)
}

// String summarises a status report for a test's failure message.
func (st *StatusReport) String() string {
	if st == nil {
		return "<nil>"
	}
	id := "none"
	if st.Ceremony != nil {
		id = idText(st.Ceremony.ID)
	}
	return fmt.Sprintf("ceremony %s from %q confirmed %v keyslot in use %v live %d margin %d unfinished %+v problems %q notes %q",
		id, st.Source, st.Confirmed, st.KeyslotInUse, st.Live, st.Margin, st.Unfinished, st.Problems, st.Notes)
}

// quorumFailed: err is a quorum not reached (exit 3 on the command line).
func quorumFailed(err error) bool {
	var qe *shares.QuorumError
	return !errors.Is(err, ErrUsage) && (errors.Is(err, ErrQuorum) || errors.As(err, &qe))
}

// plainFailures: every volume of a fleet failed with a plain error (exit
// 1 on the command line): no usage error, quorum or failed verification.
func plainFailures(fe *FleetError) bool {
	for _, f := range fe.Failed {
		if f.Err == nil || errors.Is(f.Err, ErrUsage) || quorumFailed(f.Err) || failedCheck(f.Err) {
			return false
		}
	}
	return true
}

// isUnfinished: err is an unfinished ceremony of that kind.
func isUnfinished(err error, kind string) bool {
	var ue *UnfinishedError
	return errors.As(err, &ue) && ue.Kind == kind
}

// isSetRule: err is a set version the log's rules refuse (an earlier
// version is missing, ...).
func isSetRule(err error) bool {
	var se *store.SetRuleError
	return errors.As(err, &se)
}
