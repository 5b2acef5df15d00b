// Package cards is the only part of custos that talks to smartcards: PIV
// cards (YubiKey 5, or any card with the same PIV applet) in PC/SC readers.
// It speaks PIV through github.com/go-piv/piv-go/v2/piv and watches readers
// through github.com/ebfe/scard.
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
// a certificate for that key that carries the sealed share and the ceremony
// metadata in a non-critical extension (ShareCert).
//
//	c, err := cards.Open(reader) // exclusive, as piv-go connects
//	defer c.Close()
//	custody, err := c.Init(cards.InitOptions{PIN: pin, PUK: puk, Roots: extra})
//	err = c.WriteShare(custody.Slot, &cards.ShareCert{...})
//	sc, err := c.ReadShare(custody.Slot)
//	share, err := c.OpenShare(custody.Slot, pin, sc.Sealed)
//
// Init reads the PIN, PUK and management-key state with GET METADATA (never
// by trying a PIN), refuses YubiKey FIPS firmware 4.4.2 and 4.4.4, generates
// the key, verifies its attestation (Yubico's roots, as piv-go bundles them,
// plus InitOptions.Roots), then sets a random management key that it stores
// PIN-protected on the card (nobody needs to know it) and the custodian's
// PIN and PUK. WriteShare needs only the PIN: VerifyPIN reads the management
// key back from the card. WipeShare generates a new key over the slot and
// replaces the certificate by one for the new key that carries no share.
//
// # The share certificate
//
// The certificate in a custody slot is an ordinary X.509 certificate for the
// slot's key (yubico-piv-tool -a read-certificate shows it), signed by an
// ephemeral P-256 key that is dropped at once: the signature only makes it
// well-formed; trust comes from the commitments and the anchor, not from the
// issuer. Its non-critical extension 2.25.1981978833 holds
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
// that is not its own; the ECDH happens on the card.
//
// # Errors
//
// Every error a custodian can act on wraps one of the sentinels in
// errors.go, or is a *PINError (wrong PIN, with the retries left). Each
// message says what to do; every operation can simply be repeated.
//
// # Caveats
//
// piv-go takes PINs as strings, which Go cannot wipe: the PIN given as
// []byte is wiped by the caller, but piv-go's copy lives until the garbage
// collector reuses it.
//
// piv-go holds the card exclusively while a Card is open: close it as soon
// as the custodian's step is done, or other programs (and other Cards) get
// ErrCardBusy.
//
// The certificate extension's OID is 2.25.1981978833, a UUID OID (ITU-T
// X.667) from the UUIDs below 2^31: Go's crypto/x509 (and so piv-go) refuses
// a certificate with an OID arc of 2^31 or more, so a full random 128-bit
// UUID arc would make the card's certificate unreadable. 31 random bits are
// plenty for a private extension that is only ever read next to custos's
// own certificate subject.
//
// Reading the PIN, PUK and management-key state needs GET METADATA
// (firmware 5.3 and later), which piv-go does not expose: Init closes
// piv-go's connection, asks over one of its own, and reopens. On older
// firmware Init trusts InitOptions.CurrentPIN and CurrentPUK instead.
//
// Init generates the key before it verifies the attestation (there is no
// attestation without a key): a card refused for its attestation keeps an
// unused key in one retired slot, and its PIN, PUK and management key as
// they were.
//
// Telling a pulled card from a busy one needs the PC/SC return code, which
// piv-go keeps in an unexported field: pcscCode reads it by reflection
// (TestMapErrorPivGo catches a piv-go upgrade that breaks this). After an
// unexplained transport error the reader is watched for up to a second, so
// that a card pcscd has not yet seen leave is still reported as removed.
//
// WaitInserted, WaitNewCard and WaitRemoved poll SCardGetStatusChange with a
// one-second timeout and retry while pcscd is not answering, until the
// context ends. WaitNewCard tells a card's stays in a reader apart by
// pcsc-lite's count of the reader's insertions and removals, so a card
// swapped out and back in is new even when nobody watched the reader
// meanwhile.
package cards
