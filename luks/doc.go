// Package luks is the only code of custos that touches a LUKS header. It
// runs the cryptsetup binary (cryptsetup 2.x) on a LUKS1 or LUKS2 volume —
// a block device or an image file — and never activates it: nothing here
// needs device-mapper.
//
// # Usage
//
//	v, err := luks.Open("/dev/sda2")
//	h, err := v.Inspect(ctx)            // version, UUID, keyslots, tokens
//
//	// Enroll a recovery key, authorised by an existing passphrase. Each
//	// change takes the header the step read and returns the one after.
//	keep, err := v.FindKeyslot(ctx, passphrase)
//	k, h, err := v.AddKeyslot(ctx, h, passphrase, recoveryKey,
//		luks.AddOptions{MinimalPBKDF: true, AuthSlot: &keep})
//	// k.ID is the new keyslot, k.Salt its identity.
//
//	// Record the ceremony in a LUKS2 token bound to that keyslot:
//	// {"type":"custos","keyslots":["<k.ID>"],...}, written as given.
//	id, h, err := v.ImportToken(ctx, h, tokenJSON, k.ID)
//	if err != nil {
//		// Undo the keyslot, as systemd-cryptenroll does.
//		v.KillKeyslot(ctx, h, k.ID, keep, passphrase)
//	}
//	h, err = v.ReplaceToken(ctx, h, id, newTokenJSON, k.ID)
//	tok := h.Token(id)                   // tok.JSON: the bytes written
//	h, err = v.RemoveToken(ctx, h, id)
//
//	// Recover: add a passphrase with a recovered key, tested once, on
//	// the ceremony's keyslot.
//	h, err = v.Inspect(ctx)
//	k, h, err = v.AddKeyslot(ctx, h, recoveryKey, newPassphrase,
//		luks.AddOptions{AuthSlot: &recoveryKeyslot})
//
//	// Retire an old keyslot: name the keyslot that stays and a key that
//	// opens it; it is tested before anything is wiped.
//	h, err = v.KillKeyslot(ctx, h, oldSlot, k.ID, newPassphrase)
//
//	// A safety copy around a change.
//	err = v.BackupHeader(ctx, "/root/sda2.header")
//	err = v.RestoreHeader(ctx, "/root/sda2.header")
//
// # Header reads
//
// A ceremony step reads the header once, and every change takes that
// header, decides on it, and returns the header after: AddKeyslot and
// KillKeyslot from one re-read, the token changes from what cryptsetup's
// success and output tell, without a read. TestKey and FindKeyslot never
// read the header; Tokens is Inspect.
//
// A LUKS1 header read is one cryptsetup run (luksDump). A LUKS2 header is
// read without cryptsetup when that is sure to give what cryptsetup's
// luksDump --dump-json-metadata would: both copies' SHA-256 checksums hold
// over their binary header and JSON area, the copies are twins (the same
// sequence ID, UUID and JSON area: one header update, so cryptsetup, which
// follows the copy with the higher sequence ID and repairs the other, reads
// this JSON area and repairs nothing), and the JSON text is in the form
// cryptsetup's JSON library writes and writes back unchanged (compact UTF-8,
// no backslash escape, no member twice, integers only, NUL bytes after it),
// with the top-level objects, json_size and keyslots area cryptsetup checks
// for, and metadata of a plain volume with every member known and every
// reference resolved. Its bytes are then the very bytes cryptsetup would
// parse and print (indented), and the one parser of this package reads them
// either way; the tests read every header both ways and compare. Anything
// else (a damaged or stale copy, an escape in a token, LUKS1) goes to
// cryptsetup as before: luksDump --dump-json-metadata, plus luksDump first
// when the primary's checksum fails. The checksum is no seal (anyone who can
// write the header can recompute it): a header read either way is untrusted
// input, as before. Between the caller's read and the change another process
// may change the header: cryptsetup's metadata lock serialises the writes,
// not a read and a later write. What a change finds afterwards that it did
// not do is reported as ErrHeaderChanged, with the change made. The header a
// token change returns is the caller's with that change: it shows nothing
// another process did meanwhile.
//
// A Volume holds no state beyond its fields; its methods may run from
// several goroutines, and cryptsetup's metadata lock serialises their
// header writes. Every method takes a context; cancelling it stops
// cryptsetup (SIGTERM, then SIGKILL after a grace period). cryptsetup waits for the volume's
// metadata lock without a time limit, so the context is also how long to
// wait for another process: a context that ends while another process
// holds the lock gives an error matching both ErrBusy and the context's
// error.
//
// # Keys
//
// Keys are byte slices and may hold any bytes, newlines and NULs included.
// They reach cryptsetup only through pipes on inherited descriptors
// (exec.Cmd.ExtraFiles; --key-file=/dev/fd/3, the new key as /dev/fd/4),
// which cryptsetup reads to EOF: never argv, the environment, or a file on
// disk. The child's environment is LC_ALL=C and a fixed PATH, nothing of
// the caller's. The package does not copy keys; wiping them after use is
// the caller's job. Token JSON travels the same way (--json-file=/dev/fd/3).
//
// Production keeps cryptsetup's PBKDF defaults. AddOptions.PBKDF sets
// others (tests use cheap ones); AddOptions.MinimalPBKDF is for 256-bit
// random recovery keys only, for the reasons given on it.
//
// # Errors
//
// Failures of cryptsetup come back as *CryptsetupError, carrying the action,
// the exit code and cryptsetup's sanitised message, and wrapping one of the
// sentinel errors when the failure maps to one: ErrWrongKey,
// ErrNoFreeKeyslot, ErrKeyslotInUse, ErrKeyslotInactive, ErrBusy,
// ErrPermission, ErrNotLUKS, ErrDamagedHeader, ErrNoTokens,
// ErrTokenNotFound, ErrTokenTooLarge. Refusals decided here (ErrLastKeyslot,
// ErrAuthorisingKeyslot, ErrBoundToForeignToken, ErrForeignToken,
// ErrForeignBackup, ...) and ErrHeaderChanged wrap the sentinel directly. A
// missing volume matches fs.ErrNotExist.
//
// # Caveats
//
//   - LUKS1 has no tokens: the token methods return ErrNoTokens, and callers
//     fall back to the ceremony log and the cards.
//   - A damaged LUKS2 primary header is read from the secondary copy, and
//     cryptsetup rewrites the primary from it as a side effect of reading
//     (a damaged secondary too, from the primary).
//   - A LUKS2 header is read without cryptsetup only when its metadata is
//     a plain volume's exactly as cryptsetup writes it (keyslots of type
//     luks2 with raw areas inside the keyslots area, one crypt segment
//     after it, pbkdf2 digests, tokens of existing keyslots, no
//     requirements, no member this package does not know): a volume in
//     online re-encryption, a detached header or a later cryptsetup's
//     new field costs a cryptsetup run, and whatever cryptsetup refuses
//     is refused by cryptsetup.
//     When both copies are damaged, or a LUKS1 header is, the error is
//     ErrDamagedHeader: only a header backup can help then.
//   - A header backup plus any passphrase that opened a keyslot when the
//     backup was taken opens the volume's data for good, even after that
//     keyslot is killed on the volume. Destroy backups once done, or guard
//     them like the keys themselves. RestoreHeader brings killed keyslots
//     back and drops keyslots added since.
//   - With pbkdf2 keyslots (all of LUKS1, MinimalPBKDF, the test settings),
//     a key and the same key followed by NUL bytes are the same key: HMAC
//     pads short keys with zeros. Recovery keys encoded as text never end
//     in NUL.
//   - A key passed here matches a passphrase typed at a prompt only if the
//     bytes are the same: the trailing newline of a typed line is not part
//     of the key.
//   - The token methods write tokens of type TokenType only; tokens of other
//     programs (systemd-tpm2, clevis, ...) are listed but never changed.
//     A token is written as the caller encoded it, byte for byte, and
//     reads back the same (Token.JSON is the stored object without the
//     whitespace cryptsetup's dump adds): ImportToken and ReplaceToken
//     check, and never rewrite, its "type" and its "keyslots" member,
//     which binds it to its keyslot in the same header update (rather
//     than cryptsetup's --key-slot, a second update), and refuse text that
//     cryptsetup's JSON library would re-encode (whitespace, escapes,
//     duplicate members, numbers other than integers).
//   - A LUKS2 header's JSON area is fixed at format time (12 KiB of JSON by
//     default); a token that does not fit gives ErrTokenTooLarge.
//   - KillKeyslot checks the key against the keyslot to keep, then runs
//     luksKillSlot in batch mode, without the key; another process could
//     change the header in between. It re-reads the header afterwards and
//     reports any difference (ErrHeaderChanged). It never kills the
//     keyslot the authorising key opens (ErrAuthorisingKeyslot) nor one
//     bound to another program's token (ErrBoundToForeignToken).
//   - The cryptsetup run is /usr/sbin/cryptsetup or /sbin/cryptsetup, and
//     one found in PATH only when neither exists. AddOptions.AuthSlot uses
//     luksAddKey --new-key-slot (cryptsetup 2.6); older versions get the
//     key tested with TestKey first.
//   - Permission problems are detected by opening the volume before running
//     cryptsetup, which reports them unclearly or not at all.
package luks
