package escrow

import (
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// Ceremony statuses, as the log records them.
const (
	StatusOpen      = store.StatusOpen      // begun, not every share written and verified
	StatusActive    = store.StatusActive    // the volume's recovery path
	StatusAbandoned = store.StatusAbandoned // stopped; its keyslot killed
	StatusRetired   = store.StatusRetired   // rotated out; its keyslot killed
)

// Record is a ceremony as one copy (token, log or card certificates) tells
// it. Everything in it is public.
type Record struct {
	ID      shares.CeremonyID
	Volume  shares.VolumeID
	K, N    int
	Keyslot int // the recovery key's keyslot; -1 before it is chosen
	// KeyslotSalt is the recovery keyslot's PBKDF salt (luks.Keyslot.Salt)
	// as read back right after custos added it: the keyslot's identity.
	// custos kills a keyslot by a remembered number only while it still
	// has this salt, so a key someone added later under the same number
	// is never taken for the ceremony's. "" when never recorded (a crash
	// between adding the keyslot and recording it, or a ceremony from an
	// older custos).
	KeyslotSalt string
	Digest      shares.Digest
	// Cards are the custodians' cards, in index order, as far as written
	// (an open ceremony may have fewer than N).
	Cards  []CardRef
	Status string
	// Replaces and ReplacedBy link a rotation's ceremonies ("" if none).
	Replaces, ReplacedBy string
	// Anchor is the log's head when the copy was written (token and card
	// copies), zero when unknown.
	Anchor store.Head
}

// CardRef is one custodian's part in a ceremony.
type CardRef struct {
	Index       int    // share index, 1..N
	Serial      string // the card's serial number, decimal
	Slot        uint8  // the PIV slot of the card key, 0x82..0x95
	Fingerprint shares.Fingerprint
	Custodian   string
	Commitment  shares.Commitment
	Sealed      *shares.SealedShare
}

// Card returns the card with share index i, or nil.
func (r *Record) Card(i int) *CardRef {
	for k := range r.Cards {
		if r.Cards[k].Index == i {
			return &r.Cards[k]
		}
	}
	return nil
}

// Complete reports whether every one of the N shares is recorded.
func (r *Record) Complete() bool {
	if len(r.Cards) != r.N {
		return false
	}
	for i := 1; i <= r.N; i++ {
		c := r.Card(i)
		if c == nil || c.Sealed == nil || c.Commitment == (shares.Commitment{}) {
			return false
		}
	}
	return true
}

// CardOutcome is what became of one card inserted during a ceremony.
type CardOutcome struct {
	Serial    string
	Reader    string
	Custodian string // "" when the card is not known
	Index     int    // the share index, 0 when the card holds none of ours
	// Err is nil when the card did its part; otherwise it says why not,
	// wrapping ErrNotCustodian, ErrSeenTwice, ErrOtherCeremony,
	// ErrCopiesDisagree (a *DisagreeError), shares.ErrCommitmentMismatch,
	// cards.ErrWrongPIN (a *cards.PINError), or a card error.
	Err error
}

// OK reports whether the card did its part.
func (o CardOutcome) OK() bool { return o.Err == nil }
