// Package store keeps the ceremony log: a tamper-evident record, in one
// bbolt file, of every custody event of custos (cards registered,
// ceremonies begun, completed, abandoned and rotated, rollcalls).
//
// The log is the record, not a dependency: recovery works from k cards and
// the volume alone. Audits, rollcalls and rotations read it.
//
// # Use
//
// Open the log (DefaultPath, /var/lib/custos/custos.db, when the path is
// empty), write in closures, and hand the returned head on as the anchor:
//
//	l, err := store.Open(path, nil) // *store.InUseError if another custos holds it
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
//	// head.String() goes into the LUKS2 token, each card's certificate and
//	// the transcript.
//
// Lookups: Ceremony (a CeremonyState: status, record, first and last
// event), Volume, VolumeCeremonies, VolumeCeremony (the volume's newest
// active ceremony), Card, CardByFingerprint, Events. Audit:
// Verify(anchors...), CheckAnchor, ExportJSONL, Transcript.
//
// Every Update first checks the tail of the chain (the head record, the last
// event and its link to the one before) and refuses to write to a broken
// chain with a *ChainError. Verify checks the whole log.
//
// # Only public data
//
// The API has no field for a secret: a Record holds the sealed shares (ciphertext only the custodians' cards can open), the share
// commitments and a digest; cards are named by serial and public-key
// fingerprint. A generic event's Body is the caller's JSON object: it must
// hold public data only (never a recovery key, share, PIN or passphrase).
//
// # Events and indexes
//
// Events are numbered from 1 with no gaps. The types TypeCeremony (body:
// {"status":S,"record":R}, the ceremony as it now stands), TypeCard (a
// CardRegistration) and TypeRollcall (a Rollcall) are written by the typed
// Tx methods and update the indexes: ceremonies by ID, volumes by LUKS UUID
// (current ceremony and history), cards by serial and by key fingerprint
// (custodian, keys with attestations, ceremonies, last successful
// rollcall). The indexes are derived from the events alone; Verify replays
// the events and compares. "log.created" and "log.migrated" are the log's
// own; any other type (lowercase letters, digits, '.', '-') is a step the
// caller names, such as "enroll.keyslot-added".
//
// # The hashed encoding (for auditors)
//
// An event's record is one line of JSON, exactly as Go's encoding/json
// writes this object, with the keys in this order and no whitespace:
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
//   - ceremony: present only when the event belongs to a ceremony.
//   - body: a JSON object, compact ({} when empty); byte strings inside it
//     (sealed shares, commitments, attestations) are standard base64.
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
// kept out of an attacker's reach. After each ceremony, the head returned by
// Update is written into the LUKS2 token, each card's certificate and the
// printed transcript. Verify(anchor) says whether the log still contains
// that event with that hash; a log rolled back to an older copy, truncated
// or rewritten wholesale fails against any one anchor (errors.Is ErrAnchor).
//
// # Schema
//
// The file carries a schema version. A newer one is refused (*SchemaError);
// an older one is migrated on Open, in one transaction that first checks
// the whole chain and then appends a "log.migrated" event.
//
// # Caveats
//
//   - Without an anchor, Verify cannot tell a log cut back or rewritten
//     wholesale (head record included) from a genuine shorter log: the chain
//     protects the order and content of what is there, anchors protect
//     against losing the end.
//   - One process at a time: bbolt locks the file. Open waits
//     Options.Timeout (DefaultTimeout when unset, never unbounded), then
//     returns *InUseError naming the file.
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
//   - Verify reads and decodes every event: expect tens of microseconds per
//     event (a few seconds for 100,000), and one durable transaction per
//     Update (a millisecond or so on an SSD, whatever its fsync costs).
//   - A *Tx is valid only inside the Update
//     closure; everything the log returns is a copy, never bbolt's memory.
package store
