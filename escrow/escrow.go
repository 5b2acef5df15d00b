package escrow

import (
	"context"
	"crypto/x509"

	"custos.dev/custos/cards"
	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// Volume is the LUKS volume a ceremony works on; *luks.Volume implements
// it (see that package for what each method promises). The mutating
// methods take the header the caller read for this step and give back the
// header after the change, so that one ceremony step costs one header
// read.
type Volume interface {
	// Inspect reads the header: version, UUID, keyslots, tokens.
	Inspect(ctx context.Context) (*luks.Header, error)
	// AddKeyslot adds newKey in a new keyslot authorised by auth and
	// returns the keyslot (number and salt) with the header after the
	// change.
	AddKeyslot(ctx context.Context, h *luks.Header, auth, newKey []byte, opts luks.AddOptions) (luks.Keyslot, *luks.Header, error)
	// TestKey checks that key opens keyslot slot (luks.ErrWrongKey if not).
	TestKey(ctx context.Context, key []byte, slot int) error
	// FindKeyslot returns the keyslot key opens (luks.ErrWrongKey if none).
	FindKeyslot(ctx context.Context, key []byte) (int, error)
	// KillKeyslot wipes keyslot slot; auth must open keyslot keep.
	KillKeyslot(ctx context.Context, h *luks.Header, slot, keep int, auth []byte) (*luks.Header, error)
	// ImportToken writes a new token bound to keyslot and returns its ID.
	ImportToken(ctx context.Context, h *luks.Header, tok []byte, keyslot int) (int, *luks.Header, error)
	// ReplaceToken overwrites token id with tok bound to keyslot.
	ReplaceToken(ctx context.Context, h *luks.Header, id int, tok []byte, keyslot int) (*luks.Header, error)
	// RemoveToken removes token id.
	RemoveToken(ctx context.Context, h *luks.Header, id int) (*luks.Header, error)
}

// Card is one custodian's PIV card, open for the length of one step of a
// ceremony. *cards.Card implements it; see that package for what each
// method promises. A wrong PIN is a *cards.PINError.
type Card interface {
	// Serial is the card's serial number (0 when the card does not tell).
	Serial() uint32
	// Reader is the name of the reader the card is in.
	Reader() string
	// Custody lists the retired slots that hold a key, with the custos
	// certificate each one carries, if any.
	Custody() ([]cards.SlotInfo, error)
	// ReadShare reads the custos certificate in slot.
	ReadShare(slot uint8) (*cards.SlotCert, error)
	// CheckRecipient checks, without the PIN, that slot's key is the
	// share's recipient (cards.ErrWrongCard if not): asked before the
	// custodian is asked for the PIN.
	CheckRecipient(slot uint8, sealed *shares.SealedShare) error
	// OpenShare opens a share sealed to slot's key, on the card, after
	// checking that the slot's key is the share's recipient.
	OpenShare(slot uint8, pin []byte, sealed *shares.SealedShare) (*shares.Share, error)
	// WriteShare verifies the PIN once, opens sealed on the card (proving
	// the slot key opens it), writes a certificate for the slot key
	// carrying payload and reads it back; it returns the opened share.
	WriteShare(slot uint8, pin []byte, sealed *shares.SealedShare, payload []byte) (*shares.Share, error)
	// Attest returns the slot key's attestation, verified against roots.
	Attest(slot uint8, roots *x509.CertPool) (*cards.Attestation, error)
	// Init makes the card a custody card (card init).
	Init(opts cards.InitOptions) (*cards.Custody, error)
	// WipeShare puts a new key over slot and clears its certificate.
	WipeShare(slot uint8, pin []byte) error
	// Close releases the card.
	Close() error
}

var _ Volume = (*luks.Volume)(nil)

var _ Card = (*cards.Card)(nil)

// CardSource hands over custodians' cards as they are inserted, from one
// reader or several. ReaderSource is the real one.
type CardSource interface {
	// Next waits for a card that was not handed over before and is still
	// in its reader — a card newly inserted, or one already present in
	// another reader — opens it and returns it. A card handed over and
	// closed is offered again only once it has been removed and inserted
	// anew. Next returns ctx.Err() when ctx ends first.
	Next(ctx context.Context) (Card, error)
}

// Prompter talks to the operator and the custodians.
type Prompter interface {
	// Secret asks for a PIN, a passphrase or a key, without echo, and
	// returns it without its line ending. The caller wipes it. prompt is
	// lowercase, without a trailing colon, e.g. "pin for card 12345678
	// (custodian alice)".
	Secret(prompt string) ([]byte, error)
	// Say reports progress, e.g. "insert card 2 of 5 (custodian alice)".
	// Messages are lowercase and never carry a secret.
	Say(msg string)
}

// Log is the part of the ceremony log the ceremonies use. *store.Log
// implements it.
type Log interface {
	// Head returns the log's head, the anchor written into tokens and
	// certificates.
	Head() (store.Head, error)
	// Ceremony returns a ceremony as it stands (store.ErrNotFound if
	// unknown).
	Ceremony(id string) (store.CeremonyState, error)
	// VolumeCeremonies returns a volume's ceremonies, oldest first.
	VolumeCeremonies(uuid string) ([]store.CeremonyState, error)
	// CheckAnchor checks an anchor read from a copy of rec.
	CheckAnchor(a store.Head, rec *store.Record) error
	// Card returns a card's record (store.ErrNotFound if unknown).
	Card(serial string) (store.CardRecord, error)
	// Events calls fn for each event of ceremony in order ("" for all).
	Events(ceremony string, fn func(store.Event) error) error
	// Update runs fn in one write transaction, after checking the tail.
	Update(fn func(*store.Tx) error) (store.Head, error)
	// Set returns a custodian set's newest version, SetVersion one
	// version (store.ErrNotFound if the log holds none).
	Set(name string) (store.SetState, error)
	SetVersion(name string, version int) (store.SetState, error)
	// Sets returns the newest version of every set.
	Sets() ([]store.SetState, error)
	// SetCeremonies returns the ceremonies enrolled to a set.
	SetCeremonies(name string) ([]store.CeremonyState, error)
	// SetRollcalls returns each card's latest set rollcall, by serial.
	SetRollcalls(name string) (map[string]store.SetRollcallState, error)
}

var _ Log = (*store.Log)(nil)

// Env is what a ceremony works with. Volume and Prompt are always needed;
// Cards for every ceremony that asks for cards; Log for all but Recover
// (which logs when it has one).
type Env struct {
	// Volume is the LUKS volume.
	Volume Volume
	// Device is the volume as the operator named it on the command line;
	// it appears in messages and in the command Status suggests.
	Device string
	// Cards hands over the custodians' cards.
	Cards CardSource
	// Log is the ceremony log, or nil.
	Log Log
	// Prompt asks for secrets and reports progress.
	Prompt Prompter
	// Actor names who runs the ceremony, for the log; "" means "custos".
	Actor string
	// PBKDF is used for keyslots of keys a person chose (the passphrase
	// Recover adds); nil keeps cryptsetup's defaults. Tests pass cheap
	// settings; production should not.
	PBKDF *luks.PBKDF
	// RecoveryPBKDF, if not nil, replaces luks.MinimalPBKDF for recovery
	// keyslots. Production leaves it nil.
	RecoveryPBKDF *luks.PBKDF
	// Roots are attestation roots trusted besides Yubico's (the virtual
	// card's CA for a rehearsal); nil trusts Yubico's alone.
	Roots *x509.CertPool
}
