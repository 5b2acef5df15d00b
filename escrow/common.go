package escrow

import (
	"bytes"
	"context"
	"errors"
	"fmt"

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
	fpEnrollBegun      = "enroll.begun"              // open record with the chosen keyslot logged
	fpEnrollKeyslot    = "enroll.keyslot-added"      // recovery keyslot added and its salt logged
	fpEnrollOpenToken  = "enroll.open-token-written" // the open ceremony's token written (luks2)
	fpEnrollCard       = "enroll.card-written"       // one card's share written, verified and logged
	fpEnrollToken      = "enroll.token-written"      // LUKS2 token written
	fpEnrollLogged     = "enroll.logged"             // ceremony marked active
	fpRotateBegun      = "rotate.begun"
	fpRotateKeyslot    = "rotate.keyslot-added"
	fpRotateOpenToken  = "rotate.open-token-written"
	fpRotateCard       = "rotate.card-written"
	fpRotateToken      = "rotate.token-written"
	fpRotateOldKilled  = "rotate.old-killed"
	fpRotateOldTokenRm = "rotate.old-token-removed"
	fpRotateLogged     = "rotate.logged"
	fpRotateWiped      = "rotate.wiped"
	// The fleet's: a ceremony enrolled or rotated to a custodian set
	// seals every share at once, and a fleet rotate logs the set's new
	// version before it touches a volume.
	fpEnrollSealed = "enroll.sealed"
	fpRotateSealed = "rotate.sealed"
	fpSetReplaced  = "rotate.set-logged"
)

var failpoints = []string{
	fpEnrollBegun, fpEnrollKeyslot, fpEnrollOpenToken, fpEnrollCard, fpEnrollToken, fpEnrollLogged,
	fpRotateBegun, fpRotateKeyslot, fpRotateOpenToken, fpRotateCard, fpRotateToken, fpRotateOldKilled,
	fpRotateOldTokenRm, fpRotateLogged, fpRotateWiped,
	fpEnrollSealed, fpRotateSealed, fpSetReplaced,
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

func (env *Env) recoveryOptions(slot, authSlot int) luks.AddOptions {
	o := luks.AddOptions{Slot: &slot, AuthSlot: &authSlot}
	if env.RecoveryPBKDF != nil {
		o.PBKDF = env.RecoveryPBKDF
	} else {
		o.MinimalPBKDF = true
	}
	return o
}

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
	name := who(serial, custodian)
	for try := 1; ; try++ {
		pin, err := env.Prompt.Secret("pin for " + name)
		if err != nil {
			return &promptError{err}
		}
		err = fn(pin)
		shares.Wipe(pin)
		var pe *cards.PINError
		if errors.As(err, &pe) && pe.Retries > 1 && try < maxPINTries {
			env.say("wrong pin for %s: %d tries left", name, pe.Retries)
			continue
		}
		return err
	}
}

// checkKN validates a threshold and count.
func checkKN(k, n int) error {
	if k < 2 || k > n || n > 255 {
		return fmt.Errorf("%w: k=%d n=%d: want 2 <= k <= n <= 255", ErrUsage, k, n)
	}
	return nil
}

// put records a ceremony as it now stands, with its status, in one
// transaction.
func put(env *Env, status string, rec *Record) (store.Head, error) {
	h, err := env.Log.Update(func(tx *store.Tx) error {
		_, err := tx.PutCeremony(env.actor(), status, rec)
		return err
	})
	if err != nil {
		return h, fmt.Errorf("log ceremony %s: %w", idText(rec.ID), err)
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
