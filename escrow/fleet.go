package escrow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"custos.dev/custos/cards"
	"custos.dev/custos/internal/secmem"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// The fleet: custodian sets (set.go), and the ceremonies over many
// volumes at once — enrollment to a set without cards (fleetenroll.go),
// one pass of cards that recovers (fleetrecover.go) or re-keys
// (fleetrotate.go) many volumes. Each volume keeps every promise of the
// single-volume ceremony (the same steps, logged in the same order, the
// same trust rule); a volume that fails is named and left as the
// single-volume ceremony would leave it, and the others go on.

// FleetVolume is one volume of a fleet ceremony.
type FleetVolume struct {
	// Device names the volume as the operator did (messages, results).
	Device string
	// Volume is the LUKS volume; nil when it could not be opened (Err
	// says why).
	Volume Volume
	// Err, if set, is why the volume could not be opened: it is reported
	// as the volume's outcome and the others go on.
	Err error
	// AuthKey is an existing passphrase or key file of the volume, for an
	// enrollment to a set; nil asks for it through the Prompter. Not
	// wiped.
	AuthKey []byte
}

// fleetError is nil when nothing failed.
func fleetError(op string, total int, failed []VolumeError) error {
	if len(failed) == 0 {
		return nil
	}
	return &FleetError{Op: op, Total: total, Failed: failed}
}

// volumeEnv is env for one volume of a fleet.
func volumeEnv(env *Env, fv FleetVolume) *Env {
	sub := *env
	sub.Volume, sub.Device = fv.Volume, fv.Device
	return &sub
}

// checkDevices refuses a fleet with no volume, or with one named twice.
func checkDevices(what string, vols []FleetVolume) error {
	if len(vols) == 0 {
		return fmt.Errorf("%s: %w: no volume", what, ErrUsage)
	}
	seen := map[string]bool{}
	for _, v := range vols {
		if seen[v.Device] {
			return fmt.Errorf("%s: %w: volume %s named twice", what, ErrUsage, safeText(v.Device))
		}
		seen[v.Device] = true
	}
	return nil
}

// PassCard is what one card did in a pass over many volumes.
type PassCard struct {
	Serial    string
	Reader    string
	Custodian string
	// Opened counts the volumes whose share the card opened and whose
	// commitment it matched; Volumes counts those that named the card.
	Opened, Volumes int
	// Err is why the card opened nothing (not a custodian of any volume,
	// a wrong PIN, removed), nil otherwise.
	Err error
}

// passVolume is one volume in a pass of cards: its env and the unlocker
// that gathers its shares.
type passVolume struct {
	env  *Env
	v    *view
	ul   *unlocker
	done bool
	err  error
}

func (pv *passVolume) active() bool { return !pv.done && pv.err == nil }

// runPass takes the custodians' cards one at a time until the key of every
// volume is proven or the volume has failed. Each card is inserted once:
// its PIN is asked once (a wrong one again, as withPIN does) and kept in
// locked memory for that card's pass only, wiped before the next card;
// the card opens its share of every volume whose copies name it — for
// each volume the trust rule of a single-volume recovery applies, through
// that volume's own collector. After each card, each volume combines what
// it holds (settle) and, once its key is proven, proven runs (an error
// fails that volume alone). When cards run out (or ctx ends), the volumes
// still short of a quorum fail with ErrQuorum. A failure to read a PIN
// stops the pass.
func runPass(ctx context.Context, env *Env, vols []*passVolume, proven func(pv *passVolume) error) []PassCard {
	var log []PassCard
	activeCount := func() int {
		n := 0
		for _, pv := range vols {
			if pv.active() {
				n++
			}
		}
		return n
	}
	for {
		for _, pv := range vols {
			if !pv.active() {
				continue
			}
			done, err := pv.ul.settle(ctx)
			switch {
			case err != nil && fatal(ctx, err):
				// No new passphrase could be read: the others would
				// fail alike.
				for _, o := range vols {
					if o.active() {
						o.err = err
					}
				}
				return log
			case err != nil:
				pv.err = err
			case done:
				pv.done = true
				if err := proven(pv); err != nil {
					pv.err = err
				}
			default:
				pv.err = pv.ul.col.stuck()
			}
		}
		left := activeCount()
		if left == 0 {
			return log
		}
		card, err := waitCard(ctx, env, fmt.Sprintf("insert a custodian's card (%d of %d volumes still to recover)", left, len(vols)))
		if err != nil {
			for _, pv := range vols {
				if pv.active() {
					pv.err = pv.ul.col.quorumError(err)
				}
			}
			return log
		}
		pc, err := passCard(ctx, env, card, vols)
		card.Close()
		log = append(log, pc)
		if err != nil {
			for _, pv := range vols {
				if pv.active() {
					pv.err = err
				}
			}
			return log
		}
	}
}

// batchOpener is a card that opens many shares sealed to one slot's key in
// one pass (*cards.Card: OpenShares); cards without it open them one by
// one, with the PIN kept for the pass.
type batchOpener interface {
	OpenShares(slot uint8, pin []byte, sealed []*shares.SealedShare) ([]*shares.Share, []error, error)
}

var _ batchOpener = (*cards.Card)(nil)

// passCard is one card's pass over the volumes. Its error is a failure
// that stops the whole pass (no PIN could be read, ctx ended).
func passCard(ctx context.Context, env *Env, card Card, vols []*passVolume) (PassCard, error) {
	mc := &memoCard{Card: card, certs: map[uint8]certRead{}}
	pc := PassCard{Serial: serialOf(card), Reader: card.Reader()}
	type item struct {
		pv  *passVolume
		out CardOutcome
		p   *pending
		sh  *shares.Share
		err error
	}
	var items []*item
	var notes []string
	for _, pv := range vols {
		if !pv.active() {
			continue
		}
		it := &item{pv: pv, out: CardOutcome{Serial: pc.Serial, Reader: pc.Reader}}
		p, err := pv.ul.col.prepare(mc, &it.out)
		if err != nil {
			if !errors.Is(err, ErrNotCustodian) {
				// Not one of this volume's cards is no news; anything
				// else is.
				notes = append(notes, fmt.Sprintf("%s: %s", pv.env.device(), describe(err)))
			}
			pv.ul.col.record(it.out, nil, err)
			continue
		}
		it.p = p
		items = append(items, it)
	}
	pc.Volumes = len(items)
	if len(items) == 0 {
		pc.Err = fmt.Errorf("card %s: %w", pc.Serial, ErrNotCustodian)
		if len(notes) > 0 {
			pc.Err = fmt.Errorf("card %s: no share to open (%s)", pc.Serial, strings.Join(notes, "; "))
		}
		env.say("card %s: set aside: it holds no share of these volumes to open", pc.Serial)
		return pc, nil
	}
	pc.Custodian = items[0].p.entry.Custodian
	for _, n := range notes {
		env.say("%s: %s", who(pc.Serial, pc.Custodian), n)
	}
	pin := &passPIN{env: env, serial: pc.Serial, custodian: pc.Custodian}
	defer pin.wipe()

	// Open: in one batch per slot when the card can, else one by one.
	var cardErr error
	if b, ok := card.(batchOpener); ok {
		bySlot := map[uint8][]*item{}
		var slots []uint8
		for _, it := range items {
			s := it.p.entry.Slot
			if _, ok := bySlot[s]; !ok {
				slots = append(slots, s)
			}
			bySlot[s] = append(bySlot[s], it)
		}
		for _, s := range slots {
			group := bySlot[s]
			sealed := make([]*shares.SealedShare, len(group))
			for i, it := range group {
				sealed[i] = it.p.sealed
			}
			var opened []*shares.Share
			var errs []error
			err := pin.with(func(p []byte) error {
				var err error
				opened, errs, err = b.OpenShares(s, p, sealed)
				return err
			})
			for i, it := range group {
				if i < len(opened) && opened[i] != nil {
					it.sh = opened[i]
				} else if i < len(errs) && errs[i] != nil {
					it.err = errs[i]
				} else if err != nil {
					it.err = err
				}
			}
			if err != nil {
				cardErr = err
				break
			}
		}
	} else {
		for _, it := range items {
			err := pin.with(func(p []byte) error {
				var err error
				it.sh, err = card.OpenShare(it.p.entry.Slot, p, it.p.sealed)
				return err
			})
			it.err = err
			if err != nil && cardLevel(err) {
				cardErr = err
				break
			}
		}
	}
	for _, it := range items {
		col := it.pv.ul.col
		var t *taken
		err := it.err
		switch {
		case it.sh != nil:
			t, err = col.finish(pc.Serial, it.p, it.sh)
		case err == nil:
			err = cardErr
		}
		if err == nil && t == nil {
			err = errors.New("the card did not get to this share")
		}
		if err != nil && t == nil && !strings.HasPrefix(err.Error(), "card ") {
			err = fmt.Errorf("card %s: open share %d: %w", pc.Serial, it.p.entry.Index, err)
		}
		out := col.record(it.out, t, err)
		if out.OK() {
			pc.Opened++
		} else {
			env.say("%s: %s: set aside: %s", who(pc.Serial, pc.Custodian), it.pv.env.device(), describe(out.Err))
		}
	}
	switch {
	case fatal(ctx, cardErr):
		pc.Err = cardErr
		return pc, cardErr
	case cardErr != nil:
		pc.Err = cardErr
		env.say("%s: %v", who(pc.Serial, pc.Custodian), cardErr)
	}
	env.say("%s: opened its share of %d of %d volumes", who(pc.Serial, pc.Custodian), pc.Opened, pc.Volumes)
	return pc, nil
}

// cardLevel tells a failure of the card as a whole (after which it is not
// asked for the next share) from one share's.
func cardLevel(err error) bool {
	var pe *promptError
	var pin *cards.PINError
	return errors.As(err, &pe) || errors.As(err, &pin) || errors.Is(err, cards.ErrPINBlocked) ||
		errors.Is(err, cards.ErrCardRemoved) || errors.Is(err, cards.ErrCardTimeout) || errors.Is(err, cards.ErrNoService)
}

// passPIN is one card's PIN for its pass: asked for once (withPIN: a wrong
// one again, at most three tries, never the card's last) and kept in
// locked memory until wipe, before the next card.
type passPIN struct {
	env               *Env
	serial, custodian string
	buf               *secmem.Buf
}

// with runs fn with the card's PIN, asking for it the first time.
func (p *passPIN) with(fn func(pin []byte) error) error {
	if p.buf != nil {
		err := fn(p.buf.Bytes())
		var pe *cards.PINError
		if !errors.As(err, &pe) {
			return err
		}
		// A PIN the card took for one share and refuses for the next
		// cannot be; one kept before any VERIFY can: ask again.
		p.wipe()
	}
	return withPIN(p.env, p.serial, p.custodian, func(pin []byte) error {
		err := fn(pin)
		var pe *cards.PINError
		if errors.As(err, &pe) || errors.Is(err, cards.ErrPINBlocked) {
			return err
		}
		if p.buf == nil {
			if b, berr := secmem.New(len(pin)); berr == nil {
				copy(b.Bytes(), pin)
				p.buf = b
			}
		}
		return err
	})
}

// wipe wipes and frees the PIN.
func (p *passPIN) wipe() {
	if p.buf != nil {
		p.buf.Free()
		p.buf = nil
	}
}

// memoCard is a card in a pass: its custody slots and certificates are
// read once however many volumes ask (nothing the pass does changes them).
type memoCard struct {
	Card
	custody    []cards.SlotInfo
	custodyErr error
	haveSlots  bool
	certs      map[uint8]certRead
}

type certRead struct {
	sc  *cards.SlotCert
	err error
}

func (m *memoCard) Custody() ([]cards.SlotInfo, error) {
	if !m.haveSlots {
		m.custody, m.custodyErr = m.Card.Custody()
		m.haveSlots = true
	}
	return slices.Clone(m.custody), m.custodyErr
}

func (m *memoCard) ReadShare(slot uint8) (*cards.SlotCert, error) {
	if r, ok := m.certs[slot]; ok {
		return r.sc, r.err
	}
	sc, err := m.Card.ReadShare(slot)
	m.certs[slot] = certRead{sc, err}
	return sc, err
}

// logFleet appends a fleet step that names no one ceremony.
func logFleet(env *Env, typ string, body []byte) (store.Head, error) {
	return note(env, "", typ, body)
}
