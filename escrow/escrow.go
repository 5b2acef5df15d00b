package escrow

import (
	"context"

	"custos.dev/custos/cards"
	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// Volume is the LUKS volume a ceremony works on. *luks.Volume implements
// it; see that package for what each method promises.
type Volume interface {
	// Inspect reads the header: version, UUID, keyslots, tokens.
	Inspect(ctx context.Context) (*luks.Header, error)
	// AddKeyslot adds newKey in a new keyslot authorised by auth.
	AddKeyslot(ctx context.Context, auth, newKey []byte, opts luks.AddOptions) (int, error)
	// TestKey checks that key opens keyslot slot (luks.ErrWrongKey if not).
	TestKey(ctx context.Context, key []byte, slot int) error
	// FindKeyslot returns the keyslot key opens (luks.ErrWrongKey if none).
	FindKeyslot(ctx context.Context, key []byte) (int, error)
	// KillKeyslot wipes keyslot slot; auth must open keyslot keep.
	KillKeyslot(ctx context.Context, slot, keep int, auth []byte) error
	// Tokens lists the tokens of type typ; luks.ErrNoTokens for LUKS1.
	Tokens(ctx context.Context, typ string) ([]luks.Token, error)
	// ImportToken writes a new token bound to keyslot and returns its ID.
	ImportToken(ctx context.Context, tok []byte, keyslot int) (int, error)
	// ReplaceToken overwrites token id with tok bound to keyslot.
	ReplaceToken(ctx context.Context, id int, tok []byte, keyslot int) error
	// RemoveToken removes token id.
	RemoveToken(ctx context.Context, id int) error
}

var _ Volume = (*luks.Volume)(nil)

// Card is one custodian's PIV card, open for the length of one step of a
// ceremony. *cards.Card implements it; see that package for what each
// method promises. A wrong PIN is a *cards.PINError.
type Card interface {
	// Serial is the card's serial number (0 when the card does not tell).
	Serial() uint32
	// Reader is the name of the reader the card is in.
	Reader() string
	// Custody lists the retired slots that hold a key, with the share
	// certificate each one carries, if any.
	Custody() ([]cards.SlotInfo, error)
	// Init makes the card a custody card (card init).
	Init(opts cards.InitOptions) (*cards.Custody, error)
	// VerifyPIN checks the PIN; WriteShare needs it first.
	VerifyPIN(pin []byte) error
	// WriteShare writes a share certificate into slot and reads it back.
	WriteShare(slot uint8, sc *cards.ShareCert) error
	// ReadShare reads the share certificate in slot.
	ReadShare(slot uint8) (*cards.ShareCert, error)
	// OpenShare opens a share sealed to slot's key, on the card.
	OpenShare(slot uint8, pin []byte, sealed *shares.SealedShare) (*shares.Share, error)
	// WipeShare puts a new key over slot and clears its certificate.
	WipeShare(slot uint8, pin []byte) error
	// Close releases the card.
	Close() error
}

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
	// Volume returns a volume's record (store.ErrNotFound if unknown).
	Volume(uuid string) (store.VolumeRecord, error)
	// Ceremony returns a ceremony's record (store.ErrNotFound if unknown).
	Ceremony(id string) (store.CeremonyRecord, error)
	// Card returns a card's record (store.ErrNotFound if unknown).
	Card(serial string) (store.CardRecord, error)
	// Events calls fn for each event of ceremony in order ("" for all).
	Events(ceremony string, fn func(store.Event) error) error
	// Update runs fn in one write transaction, after checking the tail.
	Update(fn func(*store.Tx) error) (store.Head, error)
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
}
