package escrow

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"strconv"

	"custos.dev/custos/cards"
	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// failpoint, when set (by tests only), is called with the name of each step
// of Enroll and Rotate right after the step is taken and recorded. A non-nil
// error stops the ceremony there as a crash would: nothing is rolled back,
// nothing wiped on the volume or in the log. The names are in failpoints.
var failpoint func(name string) error

// The steps of Enroll and Rotate where a crash test stops.
const (
	fpEnrollBegun      = "enroll.begun"         // open record with the chosen keyslot logged
	fpEnrollKeyslot    = "enroll.keyslot-added" // recovery keyslot added
	fpEnrollCard       = "enroll.card-written"  // one card's share written, verified and logged
	fpEnrollToken      = "enroll.token-written" // LUKS2 token written
	fpEnrollLogged     = "enroll.logged"        // ceremony marked active
	fpRotateBegun      = "rotate.begun"
	fpRotateKeyslot    = "rotate.keyslot-added"
	fpRotateCard       = "rotate.card-written"
	fpRotateToken      = "rotate.token-written"
	fpRotateOldKilled  = "rotate.old-killed"
	fpRotateOldTokenRm = "rotate.old-token-removed"
	fpRotateLogged     = "rotate.logged"
	fpRotateWiped      = "rotate.wiped"
)

var failpoints = []string{
	fpEnrollBegun, fpEnrollKeyslot, fpEnrollCard, fpEnrollToken, fpEnrollLogged,
	fpRotateBegun, fpRotateKeyslot, fpRotateCard, fpRotateToken, fpRotateOldKilled,
	fpRotateOldTokenRm, fpRotateLogged, fpRotateWiped,
}

// crash is the error a failpoint stopped a ceremony with.
type crash struct{ err error }

func (c *crash) Error() string { return c.err.Error() }
func (c *crash) Unwrap() error { return c.err }

// step calls the failpoint for name.
func step(name string) error {
	if failpoint == nil {
		return nil
	}
	if err := failpoint(name); err != nil {
		return &crash{err}
	}
	return nil
}

// crashed tells whether err is a failpoint's stop, which must not be
// rolled back.
func crashed(err error) bool {
	var c *crash
	return errors.As(err, &c)
}

func (env *Env) actor() string {
	if env.Actor == "" {
		return "custos"
	}
	return env.Actor
}

func (env *Env) say(format string, args ...any) {
	if env.Prompt != nil {
		env.Prompt.Say(fmt.Sprintf(format, args...))
	}
}

func (env *Env) device() string {
	if env.Device == "" {
		return "DEVICE"
	}
	return env.Device
}

// need checks that the parts a ceremony uses are there.
func (env *Env) need(what string, volume, cards, log, prompt bool) error {
	switch {
	case env == nil:
		return fmt.Errorf("%s: %w: no environment", what, ErrUsage)
	case volume && env.Volume == nil:
		return fmt.Errorf("%s: %w: no volume", what, ErrUsage)
	case cards && env.Cards == nil:
		return fmt.Errorf("%s: %w: no card source", what, ErrUsage)
	case log && env.Log == nil:
		return fmt.Errorf("%s: %w", what, ErrNoLog)
	case prompt && env.Prompt == nil:
		return fmt.Errorf("%s: %w: no prompter", what, ErrUsage)
	}
	return nil
}

func (env *Env) recoveryOptions(slot int) luks.AddOptions {
	o := luks.AddOptions{Slot: &slot}
	if env.RecoveryPBKDF != nil {
		o.PBKDF = env.RecoveryPBKDF
	} else {
		o.MinimalPBKDF = true
	}
	return o
}

func serialOf(c Card) string { return strconv.FormatUint(uint64(c.Serial()), 10) }

func slotText(s uint8) string { return fmt.Sprintf("%02x", s) }

// askTwice asks for a new secret and its repetition.
func askTwice(p Prompter, prompt string) ([]byte, error) {
	a, err := p.Secret(prompt)
	if err != nil {
		return nil, err
	}
	b, err := p.Secret("repeat " + prompt)
	if err != nil {
		shares.Wipe(a)
		return nil, err
	}
	defer shares.Wipe(b)
	if len(a) == 0 {
		shares.Wipe(a)
		return nil, fmt.Errorf("%s: %w", prompt, errors.New("empty"))
	}
	if !bytes.Equal(a, b) {
		shares.Wipe(a)
		return nil, fmt.Errorf("%s: %w", prompt, ErrMismatch)
	}
	return a, nil
}

// maxPINTries bounds the PIN prompts for one card in one step.
const maxPINTries = 3

// withPIN asks for the card's PIN and runs fn with it; while fn fails with
// a wrong PIN and the card has more than one try left, it asks again (at
// most maxPINTries times, never spending the card's last try). The PIN is
// wiped before withPIN returns.
func withPIN(env *Env, serial, custodian string, fn func(pin []byte) error) error {
	who := "card " + serial
	if custodian != "" {
		who += " (custodian " + custodian + ")"
	}
	for try := 1; ; try++ {
		pin, err := env.Prompt.Secret("pin for " + who)
		if err != nil {
			return &promptError{err}
		}
		err = fn(pin)
		shares.Wipe(pin)
		var pe *cards.PINError
		if errors.As(err, &pe) && pe.Retries > 1 && try < maxPINTries {
			env.say("wrong pin for %s: %d tries left", who, pe.Retries)
			continue
		}
		return err
	}
}

// slotKey returns a custody slot's public key for ECDH.
func slotKey(si cards.SlotInfo) (*ecdh.PublicKey, error) {
	if si.PublicKey == nil {
		return nil, errors.New("slot has no public key")
	}
	return si.PublicKey.ECDH()
}

// sealedEqual compares two sealed shares byte for byte.
func sealedEqual(a, b *shares.SealedShare) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, err1 := a.MarshalBinary()
	y, err2 := b.MarshalBinary()
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// volumeID reads the volume's UUID as a shares.VolumeID.
func volumeID(h *luks.Header) (shares.VolumeID, error) {
	v, err := shares.ParseVolumeID(h.UUID)
	if err != nil {
		return v, fmt.Errorf("volume uuid: %w", err)
	}
	return v, nil
}

// ceremonyOf builds the shares.Ceremony a record describes, with the
// commitments of the cards it has (the others zero).
func ceremonyOf(r *Record) *shares.Ceremony {
	c := &shares.Ceremony{ID: r.ID, Volume: r.Volume, K: r.K, N: r.N, Digest: r.Digest,
		Commitments: make([]shares.Commitment, r.N), SecretSize: shares.RecoveryKeySize}
	for _, cr := range r.Cards {
		if cr.Index >= 1 && cr.Index <= r.N {
			c.Commitments[cr.Index-1] = cr.Commitment
		}
	}
	return c
}

// checkKN validates a threshold and count.
func checkKN(k, n int) error {
	if k < 2 || k > n || n > 255 {
		return fmt.Errorf("%w: k=%d n=%d: want 2 <= k <= n <= 255", ErrUsage, k, n)
	}
	return nil
}

// toStore converts a record for the log.
func toStore(r *Record) (store.CeremonyRecord, error) {
	s := store.CeremonyRecord{
		ID: r.ID.String(), VolumeUUID: r.Volume.String(), K: r.K, N: r.N,
		Keyslot: r.Keyslot, KeyslotSalt: r.KeyslotSalt, Status: r.Status, Replaces: r.Replaces, ReplacedBy: r.ReplacedBy,
	}
	if r.Digest != (shares.Digest{}) {
		s.Digest = append([]byte(nil), r.Digest[:]...)
	}
	for _, c := range r.Cards {
		sc := store.CeremonyCard{Index: c.Index, Serial: c.Serial, Fingerprint: c.Fingerprint.String(),
			Slot: slotText(c.Slot), Custodian: c.Custodian}
		if c.Commitment != (shares.Commitment{}) {
			sc.Commitment = append([]byte(nil), c.Commitment[:]...)
		}
		if c.Sealed != nil {
			b, err := c.Sealed.MarshalBinary()
			if err != nil {
				return s, fmt.Errorf("card %d: %w", c.Index, err)
			}
			sc.SealedShare = b
		}
		s.Cards = append(s.Cards, sc)
	}
	return s, nil
}

// fromStore converts a record read from the log.
func fromStore(s store.CeremonyRecord) (*Record, error) {
	r := &Record{K: s.K, N: s.N, Keyslot: s.Keyslot, KeyslotSalt: s.KeyslotSalt, Status: s.Status, Replaces: s.Replaces, ReplacedBy: s.ReplacedBy}
	var err error
	if r.ID, err = shares.ParseCeremonyID(s.ID); err != nil {
		return nil, fmt.Errorf("log ceremony %q: %w", s.ID, err)
	}
	if r.Volume, err = shares.ParseVolumeID(s.VolumeUUID); err != nil {
		return nil, fmt.Errorf("log ceremony %s: %w", s.ID, err)
	}
	if len(s.Digest) != 0 {
		if len(s.Digest) != len(r.Digest) {
			return nil, fmt.Errorf("log ceremony %s: digest of %d bytes", s.ID, len(s.Digest))
		}
		copy(r.Digest[:], s.Digest)
	}
	for _, c := range s.Cards {
		cr := CardRef{Index: c.Index, Serial: c.Serial, Custodian: c.Custodian}
		if err := cr.Fingerprint.UnmarshalText([]byte(c.Fingerprint)); err != nil {
			return nil, fmt.Errorf("log ceremony %s card %d: fingerprint: %w", s.ID, c.Index, err)
		}
		slot, err := strconv.ParseUint(c.Slot, 16, 8)
		if err != nil {
			return nil, fmt.Errorf("log ceremony %s card %d: slot %q", s.ID, c.Index, c.Slot)
		}
		cr.Slot = uint8(slot)
		if len(c.Commitment) != 0 {
			if len(c.Commitment) != len(cr.Commitment) {
				return nil, fmt.Errorf("log ceremony %s card %d: commitment of %d bytes", s.ID, c.Index, len(c.Commitment))
			}
			copy(cr.Commitment[:], c.Commitment)
		}
		if len(c.SealedShare) != 0 {
			if cr.Sealed, err = shares.ParseSealedShare(c.SealedShare); err != nil {
				return nil, fmt.Errorf("log ceremony %s card %d: sealed share: %w", s.ID, c.Index, err)
			}
		}
		r.Cards = append(r.Cards, cr)
	}
	return r, nil
}

// put records the ceremonies as they now stand, in one transaction.
func put(env *Env, recs ...*Record) (store.Head, error) {
	srs := make([]store.CeremonyRecord, len(recs))
	for i, r := range recs {
		s, err := toStore(r)
		if err != nil {
			return store.Head{}, fmt.Errorf("log ceremony %s: %w", r.ID, err)
		}
		srs[i] = s
	}
	h, err := env.Log.Update(func(tx *store.Tx) error {
		for _, s := range srs {
			if _, err := tx.PutCeremony(env.actor(), s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return h, fmt.Errorf("log ceremony: %w", err)
	}
	return h, nil
}

// note appends a ceremony step that the log does not interpret.
func note(env *Env, ceremony, typ string, body []byte) (store.Head, error) {
	h, err := env.Log.Update(func(tx *store.Tx) error {
		_, err := tx.Append(store.Event{Actor: env.actor(), Type: typ, Ceremony: ceremony, Body: body})
		return err
	})
	if err != nil {
		return h, fmt.Errorf("log %s: %w", typ, err)
	}
	return h, nil
}

// waitCard says msg and waits for the next card.
func waitCard(ctx context.Context, env *Env, msg string) (Card, error) {
	env.say("%s", msg)
	c, err := env.Cards.Next(ctx)
	if err != nil {
		return nil, fmt.Errorf("wait for a card: %w", err)
	}
	return c, nil
}
