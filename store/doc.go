// Package store keeps the ceremony log, a tamper-evident record in one
// bbolt file or an etcd cluster of every custody event of custos (cards registered,
// ceremonies begun, completed, abandoned and rotated, rollcalls), and owns
// the one ceremony record and its codec that the log, the LUKS2 token and
// each card's certificate carry (docs/FORMAT.md sections 7-13).
//
// The log is the record, not a dependency: recovery works from k cards and
// the volume alone. Audits, rollcalls and rotations read it.
//
// # Use
//
// Open the log (DefaultPath, /var/lib/custos/custos.db, when the path is
// empty; etcd://HOST:PORT[,HOST:PORT...][/PREFIX] for a cluster), write
// in closures, and hand the returned head on as the anchor:
//
//	l, err := store.Open(path, nil) // *store.InUseError if another custos holds the file
//	if err != nil { ... }
//	defer l.Close()
//	head, err := l.Update(func(tx *store.Tx) error {
//		if _, err := tx.PutCeremony(operator, store.StatusOpen, rec); err != nil { // rec *store.Record
//			return err
//		}
//		if _, err := tx.Append(store.Event{Actor: custodian, Type: "enroll.share-sealed",
//			Ceremony: rec.IDString(), Body: body}); err != nil {
//			return err
//		}
//		...
//		return nil // returning an error keeps nothing of the closure's writes
//	})
//	tok, err := store.EncodeToken(rec, head) // the LUKS2 token, anchored
//
// Lookups: Ceremony (a CeremonyState: status, record, the ceremony that
// replaces it, its first and latest ceremony events), Volume,
// VolumeCeremonies, VolumeCeremony (the volume's newest active ceremony),
// Card, CardByFingerprint, Events. Audit: Verify(anchors...), CheckAnchor,
// ExportJSONL, Transcript. Copy moves a whole log to a new one, between
// the backends either way.
//
// # Backends
//
// The chain, the indexes and every check are written once, over buckets
// of ordered keys (backend.go); a bbolt file and an etcd cluster hold them.
// On etcd bucket B's key K is PREFIX/B/K (PREFIX "custos" unless the name
// gives one), beside PREFIX/meta/marker ("custos ceremony log"): Open
// creates a log only under a prefix holding no key at all, in one
// transaction conditional on that, and refuses a prefix of keys written
// by something else (ErrNotLog) or of a newer schema. Reads see one
// revision; an Update reads at one revision and commits only if the head
// key's revision is still the one it read, so appenders anywhere make one
// chain; when another appender got there first the closure runs again on
// the new head (at most maxAttempts times, then *ContentionError). A
// cluster that does not answer within Options.Timeout is an
// *UnavailableError (errors.Is ErrUnavailable) saying what was found: no
// member answering, no quorum, a TLS handshake refused.
//
// Every Update first checks the tail of the chain (the head record, the last
// event and its link to the one before) and refuses to write to a broken
// chain with a *ChainError. Verify checks the whole log.
//
// # The ceremony record and its copies
//
// A Record is a ceremony's content (docs/FORMAT.md section 8): its ID, the
// volume, k and n, the recovery keyslot and that keyslot's salt, the
// secret digest, the ceremony it replaces, the custodian set, and a card
// entry per share (serial, slot, custodian, key fingerprint, attestation,
// commitment, sealed share). It has one encoding, the canonical JSON of
// section 7, and three copies carry it:
//
//   - the LUKS2 token (EncodeToken, ParseToken; section 10), with the log's
//     head as anchor;
//   - each card's certificate extension (EncodeCardCopy, ParseCardCopy;
//     section 12), the record with that card alone and an anchor;
//   - the log's ceremony events (PutCeremony; ParseCeremonyEvent reads
//     one), whose body is {"status":S,"record":R} (section 11).
//
// Record.Encode writes only the canonical form and checks every rule of
// section 8 first; the readers accept only that form, so a record that
// reads has exactly one encoding and every reader of the same bytes sees
// the same values. Duplicate, unknown, case-variant and out-of-order
// members, escapes, null, false, signed or non-canonical numbers,
// upper-case hex, non-canonical base64url, invalid UTF-8, names outside
// the text rule and trailing data are all refused with a *FormatError
// naming the copy ("record", "token", "certificate", "event", "anchor")
// and the path of the member at fault ("record.cards[2].sealed"), as
// section 7 says where. A token may also be indented as cryptsetup
// luksDump prints it: the whitespace outside strings is removed first.
// testdata/format/records.json holds the vectors, made and checked by
// TestRecordVectors.
//
// Version 1 copies (the appendix) still read: a token with
// custos_version, and the ceremony events of logs written before schema
// 3. They become a Record with Version 1 (AllowUnattested set, as
// version 1 names no attestation; keyslot -1 and a zero digest possible in
// an event). Encode writes version 2 whatever Version says.
//
// Two copies of a ceremony agree (Compare finds nothing) when their
// frames — the record without its cards — are equal and every card both
// hold is equal; a card only one holds is no difference, nor is a member a
// version 1 copy leaves empty. CheckAnchor says whether a copy's anchor is
// good (section 9): the log holds that event with that hash, and the
// ceremony's latest record at or before it agrees with the copy.
//
// # The log's rules
//
// PutCeremony, and Verify for events written behind custos's back, refuse
// what section 11 says the log refuses, with a *RuleError naming the rule:
// a frame that changes (RuleFrame; a salt may be added once, and a record
// of version 1 may gain in its first version 2 event the keyslot and
// digest it lacked), a salt that changes (RuleSalt), a card changed,
// removed or added before one already written (RuleCards), a status change
// other than open to open, active or abandoned and active to active or
// retired (RuleStatus), an active record without all n cards
// (RuleComplete), a replaces the log does not hold or of another volume
// (RuleReplaces), a first record neither open nor active (RuleFirst), an
// event naming another ceremony than its record (RuleEvent), and a
// version 1 body once the log is at schema 3 (RuleVersion). So a
// ceremony's keyslot and salt never change once recorded.
//
// # Only public data
//
// The API has no field for a secret: a Record holds the sealed shares
// (ciphertext only the custodians' cards can open), the share commitments
// and a digest; cards are named by serial and public-key fingerprint. A
// generic event's Body is the caller's JSON object: it must hold public
// data only (never a recovery key, share, PIN or passphrase).
//
// # Events and indexes
//
// Events are numbered from 1 with no gaps. The types TypeCeremony (body:
// {"status":S,"record":R}, the ceremony as it now stands), TypeCard (a
// CardRegistration) and TypeRollcall (a Rollcall) are written by the typed
// Tx methods and update the indexes: ceremonies by ID (status, first and
// latest event, latest body, the ceremonies that name it in replaces),
// volumes by LUKS UUID (current ceremony and history), cards by serial and
// by key fingerprint (custodian, keys with attestations, ceremonies, last
// successful rollcall). The indexes are derived from the events alone;
// Verify replays the events and compares. "log.created" and "log.migrated"
// are the log's own; any other type (lowercase letters, digits, '.', '-')
// is a step the caller names, such as "enroll.keyslot-added".
//
// Verify streams: one pass over the events, hashing and decoding spread
// over the cores, the rules applied with the cards and the custodian
// sets' versions in memory and a bounded cache of ceremonies (a ceremony out of it is read back through
// the ceremony-events index), and each index compared with what the
// events say through keyed multiset digests (digest.go) while it is read
// in key order. Its memory does not grow with the log. When it finds
// anything, the log is replayed once more the way it always was, with the
// indexes in memory, to name the first problem exactly.
//
// # The hashed encoding (for auditors)
//
// An event's record is one line of JSON, exactly as Go's encoding/json
// writes this object, with the keys in this order and no whitespace
// (docs/FORMAT.md section 11):
//
//	{"seq":N,"time":"T","actor":"A","type":"Y","ceremony":"C","body":B,"prev":"P"}
//
// The fields:
//
//   - seq: the event number, a decimal integer, 1 for the first event.
//   - time: UTC, RFC 3339 with "Z" and with fractional seconds only as
//     long as needed (Go's time.RFC3339Nano), e.g. "2026-03-14T09:26:54.000000589Z".
//   - actor, type: JSON strings; strings use encoding/json's escaping
//     (including \u003c, \u003e and \u0026 for <, > and &).
//   - ceremony: present only when the event belongs to a ceremony: its ID
//     in 32 hex digits.
//   - body: a JSON object, compact ({} when empty). A ceremony body is the
//     canonical form above, which encoding/json leaves as it is; byte
//     strings in other bodies (attestations) are standard base64.
//   - prev: the hash of event seq-1 as 64 lowercase hex digits; 64 zeros
//     for event 1.
//
// The hash of an event is SHA-256 over the record's bytes, nothing added.
// The log's head is "seq:hash" of its last event (Head.String).
//
// ExportJSONL writes each record verbatim on its own line, so an auditor
// can recompute the chain with any SHA-256 tool: the SHA-256 of line i
// (without its newline) must equal the "prev" of line i+1, and that of the
// last line the head. Readers of custos accept only this canonical form:
// a record that re-encodes differently is rejected, so no two readers can
// see different content behind the same hash.
//
// In the bbolt file, bucket "events" maps the event number (8 bytes, big
// endian) to the record's SHA-256 (32 bytes) followed by the record. The
// stored hash lets a single altered event be named; it adds no security
// (an attacker can recompute it, as they can the whole chain, which is why
// anchors exist). Bucket "meta" holds "schema" (4 bytes, big endian) and
// "head" (8-byte event number, 32-byte hash).
//
// # Anchors
//
// A chain that anyone could recompute is evidence only where its head is
// kept out of an attacker's reach. The head returned by Update is written
// into the LUKS2 token, each card's certificate and the printed transcript
// (section 9 says which head each holds). Verify(anchor) says whether the
// log still contains that event with that hash; CheckAnchor also checks
// the copy's record against the log's. A log rolled back to an older copy,
// truncated or rewritten wholesale fails against any one anchor
// (errors.Is ErrAnchor).
//
// # Schema
//
// The file carries a schema version (3). A newer one is refused
// (*SchemaError); an older one is migrated on Open, in one transaction
// that first checks the whole chain, then rebuilds every index from the
// events, and appends a "log.migrated" event, from which on the log takes
// version 2 ceremony bodies only. testdata/v1 holds a log and tokens made
// by custos before schema 3; they open, migrate, verify and read.
//
// # Caveats
//
//   - Without an anchor, Verify cannot tell a log cut back or rewritten
//     wholesale (head record included) from a genuine shorter log: the chain
//     protects the order and content of what is there, anchors protect
//     against losing the end.
//   - store checks a sealed share's length (156 to 410 bytes) and, in a
//     copy, its base64url form, nothing more: whoever uses a record must
//     parse each sealed share and check that its header names the record's
//     id, volume, k, n and the card's index, and that its recipient is the
//     card's key (section 8). The vectors mark those cases layer "use".
//   - A certificate's anchor comes before its own card is logged, so
//     CheckAnchor does not compare that card's entry: compare the card
//     with the log's current record (Compare) where it is used.
//   - Lookups (Ceremony, Volume...) read the indexes, and writes check only
//     the tail of the chain: an event written behind custos's back that
//     breaks a rule, with the indexes rewritten to match, is believed by
//     lookups and refused by nothing but Verify, which replays the events.
//   - Version 1 events that follow one another keep the rules of the custos
//     that wrote them (id, volume, k, n, status). A version 1 record that
//     Encode refuses (keyslot -1, no digest, a custodian outside the text
//     rule, such as "Bob & Sons") cannot be carried on as version 2: such
//     an open ceremony cannot be recorded as abandoned, and such an active
//     one is rotated rather than rewritten (its cards cannot change).
//   - ParseVolume accepts a UUID in upper case (cryptsetup prints a UUID as
//     it was set); records hold and write lower case only, and the volume
//     lookups take either.
//   - The text rule follows Go's Unicode tables (Unicode 15.0.0 with Go
//     1.26); a later Go with newer tables would accept characters assigned
//     since, which an older reader refuses.
//   - Names in a transcript pass through ShowText (section 13), so an actor
//     such as "operator <ops@example.org>" prints as "operator
//     ?ops@example.org?".
//   - One process at a time on a file: bbolt locks it. Open waits
//     Options.Timeout (DefaultTimeout when unset, never unbounded), then
//     returns *InUseError naming the file. On etcd any number of
//     processes on any number of machines write at once.
//   - On etcd an Update's closure may run more than once (another
//     appender won the race, or a member went away and the commit did
//     not happen): it must have no effect outside its Tx that it cannot
//     repeat. A transaction holds at most the cluster's --max-txn-ops keys
//     (128 by default) and --max-request-bytes (1.5 MiB): about a dozen
//     ceremony events of a 5-card ceremony, or a few dozen steps; a larger
//     one is refused with ErrInvalid and nothing is written. Every etcd
//     request gets Options.Timeout; a member that dies mid-write is
//     tolerated within it.
//   - etcd's own history (revisions before its compaction) and its
//     members' data directories hold every value ever written under the
//     prefix: they are the log's copies, with the log's public content only.
//   - Verify on etcd reads each page of events at one revision, so
//     appenders may go on meanwhile; it reads back by key what the cache
//     of ceremonies lost, one request each: on a large fleet it is
//     bounded by the cluster's round trips (see the closing note of issue
//     14 for figures).
//   - etcd walks every key between a range request's ends to count them,
//     whatever its limit, so a scan asks for each page within a window
//     sized by how densely the page before lay (etcdscan.go): the cluster
//     walks each key about twice per scan, where pages up to a bucket's
//     end walked a 100,000-event log's keys fifty times over. Keys that
//     lie unevenly (a gap in a tampered log, names alike in their first
//     24 bytes) cost more requests or walks, never a key missed.
//   - Verify's memory is bounded while the log is sound; one that finds a
//     problem replays the log in memory to name it, and that replay's
//     memory grows with the log (about 1 KiB per event).
//   - On a file Verify reads bbolt's pages itself (boltpages.go), with
//     pread through its own descriptor of the file bbolt has open (the
//     same device and inode as bbolt's mapping), never through the
//     mapping, whose read faults would map 64 KiB around each page and
//     make the resident set follow the file: it walks each bucket's tree,
//     checks the pages as bbolt's Check does with a bitmap of the pages
//     (one bit per 4 KiB page, where Check keeps a map entry per page),
//     and looks keys up the same way. It depends on bbolt's file format
//     (version 2, which bbolt has kept since 2014): a file it cannot read
//     that way goes to the replay, which runs bbolt's Check. Events over
//     the whole log (an export, log verify's check of attestations) reads
//     the events the same way, and goes on through bbolt's cursor from
//     where the pages stop being as bbolt writes them.
//   - Copy refuses a destination that exists (a file; an etcd prefix with
//     any key). A file is linked into place only once complete and
//     checked; on etcd a copy that fails deletes the prefix it began. A
//     copy that does not verify at the end (something else wrote to the
//     destination meanwhile) is removed. On etcd each transaction of a
//     copy starts from what the one before committed, without reading
//     the head and the tail back: another appender makes the next commit
//     fail on the head and the copy stop; a write that leaves the head
//     alone is found by the final verification. A copy tries
//     transactions of up to 1024 keys and goes on with 128 (etcd's
//     default --max-txn-ops) if the cluster refuses them.
//   - Every write is a durable transaction (bbolt's fsync; NoSync is never
//     used), so an acknowledged event survives a crash or power loss; a
//     batch of steps belongs in one Update.
//   - Open does not verify the chain, so a damaged log can still be
//     verified and exported; writes refuse a broken tail, and migrations a
//     broken chain.
//   - A crash while creating a new log can leave a hidden temporary file
//     (".custos.db.new-*") beside it; it is never at the log's path and can
//     be deleted.
//   - The store trusts its caller to put only public data into generic
//     event bodies; it cannot tell a share from any other bytes.
//   - Event times come from the machine's clock and are not checked for
//     order.
//   - The log's path must be a regular file: a symbolic link there is
//     refused rather than followed. A log Open creates is 0600 in a
//     directory it creates 0700; the modes of existing files and
//     directories are left as they are.
//   - Verify reads, hashes and decodes every event and parses each typed
//     body (a ceremony's record, a card's registration, a rollcall): a few
//     microseconds of CPU per event of a fleet log, shared between the
//     cores. Every Update is one durable transaction: on a file an fsync
//     (a millisecond or so on an SSD), on etcd a round trip to the leader
//     and its quorum's fsyncs.
//   - A *Tx is valid only inside the Update
//     closure; everything the log returns is a copy, never bbolt's memory.
package store
