// Package vcard is a virtual YubiKey 5: a PIV card, in software, that
// plugs into the real PC/SC stack through vsmartcard's vpcd driver, so that
// piv-go, yubico-piv-tool and OpenSC talk to it as to a YubiKey in a USB
// reader. It is a test and rehearsal instrument; custos itself never
// imports it.
//
// # Usage
//
// A test makes a virtual attestation CA once, a card per custodian, and
// inserts cards into the two vpcd readers (pcscd must be running with the
// vpcd driver; take realtest.LockReaders first):
//
//	ca, err := vcard.OpenCA(dir)               // creates it on first use
//	card, err := vcard.NewCard(vcard.Config{
//		Serial:    1001,
//		CA:        ca,
//		StatePath: filepath.Join(dir, "card-1001.json"), // "" for memory only
//	})
//	in, err := card.Insert(ctx, vcard.Port0)   // returns once pcscd sees it
//	yk, err := piv.Open(in.Reader())           // "Virtual PCD 00 00"
//	...
//	yk.Close()
//	next, err := other.Insert(ctx, vcard.Port1) // swap: the next card into the other reader,
//	err = in.Remove()                           // then the old one out (returns once pcscd lost it)
//
// LoadCard reopens a card from its state file. Card.Counts reports the
// APDUs received (in all and by instruction byte) and the touches
// confirmed, so a test can assert how often a card was asked for
// something: take Counts before and after, and subtract. Card.SetTrace
// logs one line per APDU (header, length, status word; never the data).
// Inserted.Done is closed when the card stops serving, for example when
// pcscd goes away.
//
// The command custos-vcard does the same from a shell: "custos-vcard ca",
// "custos-vcard new" and "custos-vcard insert".
//
// # The card
//
// A factory-fresh card has PIN 123456, PUK 12345678 (three retries each)
// and the default management key 010203040506070801...08: AES-192 from
// firmware 5.7, 3DES before. It answers, as a YubiKey 5 does: SELECT, GET
// VERSION, GET SERIAL, GET METADATA, VERIFY, CHANGE REFERENCE DATA, RESET
// RETRY COUNTER, SET PIN RETRIES, RESET, GENERAL AUTHENTICATE (management
// key: 3DES, AES-128/192/256; slot keys: ECDSA and ECDH), SET MANAGEMENT
// KEY, GENERATE and IMPORT (P-256, P-384; PIN and touch policies), GET DATA
// and PUT DATA (command chaining in, GET RESPONSE out, objects up to 3052
// bytes, 5FC109 behind the PIN) and ATTEST. The YubiKey OTP application
// answers SELECT and its serial-number command (01 10), where
// yubico-piv-tool and piv-go read the serial of firmware before 5.
//
// The firmware version decides what exists, as on a YubiKey: GET SERIAL
// from 5.0 (6D00 before), GET METADATA from 5.3 (6D00 before), AES
// management keys from 5.4 (6A80 before), AES-192 as the factory
// management key from 5.7 (3DES before). Attestation and the touch policy
// "cached" need 4.3, the oldest version to use.
//
// PIN policies are a YubiKey's: "once" needs the PIN verified in the
// session; "always" needs the GENERAL AUTHENTICATE to be the command right
// after a successful VERIFY (any command in between, management-key
// authentication or an empty VERIFY included, spends that verification for
// the key), while the PIN stays verified for "once" keys and the protected
// data (SP 800-73-4 Part 1's "PIN Always" access rule; Yubico's account
// in yubico-piv-tool issue 234 and yubikey-manager pull request 83).
//
// # Cards other tools prepared
//
// Card.PutKey puts a key into a slot as whoever holds the management key
// can (yubico-piv-tool -a generate or -a import-key): generated, with any
// PIN and touch policy ("never" included), or imported, which a YubiKey,
// and so the card, refuses to attest (6A80). Config.NoAttestation, or
// Card.SetNoAttestation on a card already made, turns it into a PIV card
// of another maker: ATTEST answers 6D00 and the attestation certificate
// 5FFF01 is absent (6A82). Both are kept in the state file.
//
// # Hostile cards
//
// Card.SetHostile switches a card to a misbehaviour, for tests of what a
// counterfeit or broken card does to a client: ChainForever (61FF with 255
// bytes to every command, GET RESPONSE included), Garbage (65535 random
// bytes, the longest vpcd message) and Silent (no answer at all; pcscd then
// waits, and its client with it, until the card is removed). vpcd's power
// and ATR messages are still answered, so pcscd keeps the card present.
//
// Attestation certificates carry Yubico's extensions (firmware, serial,
// policies, form factor) and chain to the card's attestation key, whose
// certificate is signed by the virtual CA. Trust the CA explicitly
// (CA.Pool, CA.RootPath); a verifier that trusts only Yubico's roots
// rejects every virtual card.
//
// # State
//
// The state file (JSON, 0600) holds the serial, version, PIN and PUK
// (salted hashes) with their counters, the management key, the slot keys
// with their policies, the data objects and the attestation key. It is
// rewritten after every command that changes the card: written to a
// temporary file, fsynced and renamed, so that a kill -9 at any moment
// leaves the old or the new state. A write that fails undoes the command
// and answers 6581.
//
// # Caveats
//
// It is not a secure element: private keys, the management key and the
// attestation key sit in the state file, readable by whoever can read the
// file. Use it for tests and rehearsals only, never for real custody.
//
// Only elliptic-curve keys (P-256, P-384) exist; GENERATE and IMPORT of
// RSA, Ed25519 or X25519 keys answer 6A80. Touch is confirmed at once and
// counted. Besides PIV only the OTP application's serial answers; SELECT
// of the YubiKey management application answers 6A82, so piv-go's
// FormFactor is unavailable.
//
// The per-key attestation certificate keeps the YubiKey's subject
// "YubiKey PIV Attestation <slot>", because verifiers read the slot from
// it; its issuer and root name custos and say "not Yubico".
//
// OpenSC reads a retired slot (82-95) only when the Key History object
// (5FC10C) counts it among keysWithOnCardCerts, as on a real YubiKey; the
// card does not write that object itself (custos's card init does).
//
// yubico-piv-tool 2.2 built against OpenSSL 3 (Debian 12) cannot
// selfsign-certificate or request-certificate with any card: it fails in
// the client before sending a command (Yubico/yubico-piv-tool#388). It also
// knows only 3DES management keys, so use it with a card of firmware
// before 5.7 or with a 3DES key.
//
// Security status (PIN verified, management key authenticated) lasts until
// power off, reset, removal, or the next SELECT of the PIV application.
//
// The vpcd reader accepts one card at a time, and the readers are shared
// by every process on the machine: tests must hold realtest.LockReaders.
//
// pcscd asks a vpcd reader whether a card is in every 400 ms (vpcd has no
// event of its own), so Insert and Remove each return at the first poll
// after the change: up to 400 ms, and a swap within one reader costs two
// polls. Put the next card into the other reader first, and take the old
// one out meanwhile (BenchmarkInsertOpenRemove). Once a card is in, an
// APDU round trip through pcscd costs about 0.15 ms (BenchmarkRoundTrip):
// the card acknowledges vpcd's segments at once (TCP_QUICKACK), since vpcd
// sends each message's length and payload in two writes and would
// otherwise wait out a delayed ACK, 40 ms, on every APDU.
package vcard
