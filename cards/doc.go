// Package cards is the only part of custos that talks to smartcards: PIV
// cards (YubiKey 5, or any card with the same PIV applet) in PC/SC readers.
// It sends its own command APDUs (apdu.go, piv.go: each command cites NIST
// SP 800-73-4 Part 2 or Yubico's PIV extensions) and watches readers
// through custos's own binding of pcsc-lite (internal/pcsc; its errors and
// reader states are github.com/ebfe/scard's types), and uses
// github.com/go-piv/piv-go/v2/piv only to verify attestations.
//
// # Readers
//
//	readers, err := cards.Readers(ctx)         // what is in each reader
//	reader, err := cards.WaitInserted(ctx, nil) // block until a card is in
//	err = cards.WaitRemoved(ctx, reader)        // block until it is out
//	in, err := cards.WaitNewCard(ctx, nil, seen) // a card not among those seen
//
// # A custody card
//
// A custodian's card holds a P-256 key in a retired key-management slot
// (82–95), generated on the card, and, in the same slot's certificate object,
// a certificate for that key that carries the ceremony's record with this
// card's sealed share in a non-critical extension (the payload, opaque to
// this package).
//
//	c, err := cards.Open(reader) // exclusive; cards.OpenTimeout for another deadline
//	defer c.Close()
//	custody, err := c.Init(cards.InitOptions{PIN: pin, PUK: puk, Roots: extra})
//	att, err := c.Attest(custody.Slot, extra)    // before each seal
//	share, err := c.WriteShare(custody.Slot, pin, sealed, payload)
//	sc, err := c.ReadShare(custody.Slot)         // sc.Payload (sc.V1 for a version 1 card)
//	share, err = c.OpenShare(custody.Slot, pin, sealed)
//
// Init reads the PIN, PUK and management-key state with GET METADATA (never
// by trying a PIN), refuses YubiKey FIPS firmware 4.4.2 and 4.4.4, generates
// the key, verifies its attestation (Yubico's roots, as piv-go bundles them,
// plus InitOptions.Roots), writes a certificate for the key (no share yet)
// and counts the slot in the Key History object, then sets a random
// management key that it stores PIN-protected on the card (nobody needs to
// know it) and the custodian's PIN and PUK. WriteShare and WipeShare need
// only the PIN: the management key is read back from the card. WipeShare
// generates a new key over the slot and replaces the certificate by one for
// the new key that carries no share.
//
// Attest reads and verifies a slot key's attestation at any time (custos
// attests at every seal, not only at card init); VerifyAttestation verifies
// one again from the bytes a log recorded. A card that cannot attest (a key
// imported rather than generated on it, or a PIV card without Yubico's
// ATTEST) gives ErrNoAttestation; an attestation that does not verify,
// ErrAttestation.
//
// # The share certificate
//
// The certificate in a custody slot is an ordinary X.509 certificate for the
// slot's key (yubico-piv-tool -a read-certificate shows it), signed by an
// ephemeral P-256 key that is dropped at once: the signature only makes it
// well-formed; trust comes from the commitments and the anchor, not from the
// issuer. Its non-critical extension 2.25.1981978833 holds the payload
// WriteShare is given: the JSON of docs/FORMAT.md section 12 (the ceremony
// record with this card alone, and the log's anchor), which this package
// only bounds (it begins with '{', 4096 bytes at most) and compares on
// read-back; package escrow decodes it. Cards written by custos before the
// version 2 record carry instead, and ReadShare still decodes as
// SlotCert.V1,
//
//	ShareCert ::= SEQUENCE {
//	    version     INTEGER (1),
//	    keyslot     INTEGER (0..31),
//	    digest      OCTET STRING (SIZE (32)),
//	    commitment  OCTET STRING (SIZE (32)),
//	    anchor      OCTET STRING (SIZE (32)),
//	    sealed      OCTET STRING  -- docs/FORMAT.md's sealed share
//	}
//
// in DER; the decoder refuses any other encoding. Vectors are in
// testdata/sharecert.
//
// OpenShare checks that the slot's key is the one the share was sealed to
// before it sends the PIN, so a card is never asked for its PIN for a share
// that is not its own; the ECDH happens on the card. CheckRecipient makes
// the same check alone, so that a caller can set a card aside before it
// asks the custodian for the PIN: a Card keeps the slot keys it read (its
// connection is exclusive, so only it changes them until Close), and
// OpenShare or WriteShare after CheckRecipient or Custody do not ask the
// card again.
//
// # Every PIV client sees the key
//
// A custody card is an ordinary PIV card to other software, as if set up
// with yubico-piv-tool or ykman:
//
//   - the slot's certificate object always holds a certificate for the
//     slot's key (Init writes one, WriteShare and WipeShare replace it);
//   - the Key History object (5FC10C, SP 800-73-4 Part 1 section 3.3.2)
//     counts the slot among keysWithOnCardCerts: OpenSC's PIV driver and
//     other PKCS#11 middleware read retired slots 82 to 82+n-1 only, so
//     without it the key is invisible to them. Init and WipeShare keep it
//     right; other counts and the off-card URL are kept;
//   - Yubico's admin data (5FFF00) carries the flag 02, "management key
//     stored in the protected data (5FC109, 88 { 89 key })", exactly as
//     ykman's "piv access change-management-key --protect" and
//     libykpiv's ykpiv_util_set_protected_mgm write it, so that they read
//     the key with the PIN instead of asking for it.
//
// The tests prove it through pcscd: yubico-piv-tool -a status shows the
// slot; OpenSC's pkcs15-tool and pkcs11-tool (opensc-pkcs11.so) and Yubico's
// ykcs11 list the key and derive an ECDH with it that equals the card's own
// through piv-go.
//
// # The commands, and why each is sent
//
// Opening a share when the caller holds the sealed share and its recipient
// (from a LUKS2 token) takes five commands:
//
//	Open       SELECT            the PIV application (SP 800-73-4 Part 2 3.1.1); a card without it is ErrNotPIV
//	           GET SERIAL        which card this is (Yubico, 5.0+): the custodian and record it belongs to, asked before any PIN
//	OpenShare  GET METADATA      the slot's public key (Yubico, 5.3+), so that the PIN is never sent to a card for a share sealed to another key
//	           VERIFY            the custodian's PIN (3.2.1)
//	           GENERAL AUTHENTICATE  the ECDH with the slot key (3.2.4, Appendix A.5), right after VERIFY as PIN policy "always" needs
//
// Nothing else: no GET VERSION (Open does not need the firmware version;
// Version reads it when asked, Init before anything else), no certificate
// (the token carries the sealed share). Reading the share from the card
// instead (ReadShare) adds GET DATA of the slot's certificate object and
// its GET RESPONSE pieces (six commands for a custos certificate carrying
// a version 2 record, about 1.3 KB).
//
// On older firmware the card itself says what it lacks: GET SERIAL answers
// 6D00 on a YubiKey 4, whose serial Open then reads from the YubiKey OTP
// application (SELECT it, its command 01 10, SELECT PIV again), as
// yubico-piv-tool does; GET METADATA answers 6D00 before 5.3 (once per
// Card), and the slot key is then checked with ATTEST (4.3+), the cheapest
// check that is honest: the attestation is signed by the card for the key
// in the slot, while the certificate object could hold any key. It costs
// the attestation certificate's GET RESPONSE pieces (about three commands).
//
// One custodian's step of an enrollment, WriteShare, sends one VERIFY:
//
//	GET METADATA          the slot key is the share's recipient, before the PIN
//	VERIFY                the PIN, once
//	GENERAL AUTHENTICATE  open the share on the card: the key opens it, or nothing is written
//	GET DATA 5FC109       the PIN-protected management key (the PIN is still verified)
//	GET METADATA 9B       the management key's algorithm (5.3+; 3DES before)
//	GENERAL AUTHENTICATE ×2  mutual authentication with the management key (3.2.4, Appendix A.2)
//	PUT DATA (chained)    the certificate carrying the share (3.3.1), six pieces
//	GET DATA, GET RESPONSE ×5  read it back, byte for byte
//
// The order is forced by a YubiKey's PIN policies: a key with policy
// "always" answers only the command right after a successful VERIFY (any
// command between them, management-key authentication included, spends
// the verification for that key), while the PIN stays verified for the
// protected data and "once" keys until the card is reset or PIV selected
// again. So the ECDH comes first, the management key after. A card that
// ended the PIN's verification with the "always" key's use (no YubiKey
// does) would answer GET DATA 5FC109 with 6982: WriteShare then verifies
// the same PIN once more, which cannot be wrong, rather than fail.
//
// Init sends, on firmware 5.7: SELECT, GET SERIAL (Open); GET VERSION; GET
// METADATA of the PIN, PUK and management key; GET METADATA of each slot
// until a free one; two GENERAL AUTHENTICATE (the factory management key);
// GENERATE; ATTEST and GET DATA 5FFF01 (the attestation certificate), with
// their GET RESPONSE pieces; PUT DATA and GET DATA of the slot's
// certificate; GET DATA and PUT DATA of the Key History; PUT DATA of the
// protected data; GET DATA and PUT DATA of the admin data; SET MANAGEMENT
// KEY; CHANGE REFERENCE DATA of the PIN and of the PUK.
//
// Attest sends ATTEST and GET DATA 5FFF01, with their GET RESPONSE pieces:
// five commands for a YubiKey's (and the virtual card's) certificates. A
// card that does not know ATTEST answers the first, and is sent nothing
// else.
//
// # Errors
//
// Every error a custodian can act on wraps one of the sentinels in
// errors.go, or is a *PINError (wrong PIN, with the retries left), a
// *TimeoutError (a card that did not answer in time) or a *ResponseError
// (an answer no PIV card gives). Each message says what to do; every
// operation can simply be repeated. Status words and PC/SC codes get their
// meaning in one function, mapError.
//
// # A card cannot hang or exhaust custos
//
// Each operation (Open, and each method of Card) has a deadline,
// DefaultTimeout unless OpenTimeout says otherwise, that covers every
// command it sends, each PC/SC call (connect, transmit) included. An answer
// is bounded: at most 256 data bytes to a command (short APDUs), at most
// 4096 bytes and 17 GET RESPONSE commands for one answer however the card
// chains it; anything else is a *ResponseError at once. A card that does
// not answer in time gives a *TimeoutError naming its reader, and the Card
// is unusable afterwards (every method returns the same error; Close
// returns at once).
//
// # Caveats
//
// pcscd cannot be made to give up on a card. pcsc-lite's client library
// waits for pcscd's answer to SCardTransmit with poll(2) and no timeout,
// and SCardCancel cancels only SCardGetStatusChange; pcscd, for its part,
// waits on the reader's driver, which for a card that never answers (vpcd)
// or keeps asking for more time (T=1 waiting-time extensions on a CCID
// reader) waits until the card is removed. So on a timeout custos returns,
// and leaves one goroutine in the PC/SC call; when the card is removed the
// call returns, the goroutine releases the connection, and ends. It
// resets the card only when pcscd says (SCardStatus) that the card it
// connected to is still in the reader: pcscd resets whatever card the
// reader holds, and by then the next custodian's card may be in it.
// Meanwhile the reader is blocked for every program, the card's context
// holds libpcsclite's lock for that context only (each Card has its own),
// and other readers work.
//
// The PIN given as []byte is wiped by the caller; the command carrying it
// is wiped once sent. The card's answers holding the management key are
// wiped after use.
//
// Close resets the card (SCARD_RESET_CARD) when a PIN was verified or the
// management key used on the Card, so that the next program to connect
// does not find it unlocked.
//
// Readers lists the serial of cards of firmware 5 and later only (GET
// SERIAL over a shared connection): reading a YubiKey 4's serial means
// selecting its OTP application, which would disturb another program's PIV
// session.
//
// On firmware before 5.3, which has no GET METADATA, Init takes a slot as
// used when ATTEST shows a generated key, when its certificate object
// exists, or when the Key History counts it: a key imported by another tool
// into a slot with no certificate and not in the history looks free and
// would be overwritten. Init on such firmware verifies the current PIN to
// look for a stored management key (the card cannot say whether its
// management key is the factory one).
//
// The certificate extension's OID is 2.25.1981978833, a UUID OID (ITU-T
// X.667) from the UUIDs below 2^31: Go's crypto/x509 refuses a certificate
// with an OID arc of 2^31 or more, so a full random 128-bit UUID arc would
// make the card's certificate unreadable. 31 random bits are plenty for a
// private extension that is only ever read next to custos's own certificate
// subject.
//
// Init generates the key before it verifies the attestation (there is no
// attestation without a key): a card refused for its attestation keeps an
// unused key in one retired slot, and its PIN, PUK and management key as
// they were.
//
// After an unexplained PC/SC error the reader is watched for up to a
// second, so that a card pcscd has not yet seen leave is still reported as
// removed.
//
// WaitInserted, WaitNewCard, WaitNewCardIn and WaitRemoved block in one
// SCardGetStatusChange until a reader's state changes (a minute at most
// per call), so a wait costs no processor time while nothing happens; the
// context's end cancels the call (SCardCancel). They retry while pcscd is
// not answering, until the context ends. WaitNewCard tells a card's stays in a reader apart by
// pcsc-lite's count of the reader's insertions and removals, so a card
// swapped out and back in is new even when nobody watched the reader
// meanwhile.
//
// Each wait and each Card has a PC/SC context of its own while it runs. A
// wait that found what it waited for, and a Card closed without error,
// leave their context to the next wait or Card instead of releasing it,
// so that a ceremony establishes one context rather than two a card; a
// context left over that pcscd no longer knows (it restarted meanwhile)
// is dropped for a new one at its first call.
package cards
