package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"custos.dev/custos/cards"
	"custos.dev/custos/escrow"
	"custos.dev/custos/luks"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

// The exit code of each kind of ceremony error, wrapped as an action
// returns it (moved here from package escrow with the exit codes).
func TestExitCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{errors.New("x"), 1},
		{escrow.ErrUsage, 2},
		{&shares.QuorumError{Good: 1, Need: 2}, 3},
		{escrow.ErrQuorum, 3},
		{&escrow.DisagreeError{Field: "k"}, 4},
		{escrow.ErrKeyslotMismatch, 4},
		{escrow.ErrUnconfirmed, 4},
		{escrow.ErrUnattested, 4},
		{escrow.ErrReadBack, 4},
		{shares.ErrCommitmentMismatch, 4},
		{shares.ErrDigestMismatch, 4},
		{shares.ErrInconsistentShare, 4},
		{&store.AnchorError{Seq: 3, Problem: "x"}, 4},
		{store.ErrBrokenChain, 4},
		{store.ErrIndex, 4},
		{&cards.PINError{Retries: 2}, 1},
		{escrow.ErrNoCeremony, 1},
		// The typed errors keep the code of what they wrap.
		{&escrow.StepError{Op: "enroll", Done: escrow.StepSharesWritten, Err: store.ErrInUse}, 1},
		{&escrow.UndoError{Op: "rotate", Err: escrow.ErrReadBack, UndoErr: errors.New("x")}, 4},
		{&escrow.FailedCardsError{Failed: 2}, 4},
		{&escrow.RecoveryKeyGivenError{Keyslot: 1}, 2},
		{&escrow.SlotsError{Serial: "5000", Keys: 2}, 2},
		{escrow.ErrNoCustodian, 2},
		{&escrow.FingerprintError{Set: "dc1", Version: 1}, 4},
		{&escrow.SetAttestationError{Set: "dc1", Serial: "5000", Err: errors.New("x")}, 4},
		{&escrow.KeptKeyslotError{Keyslot: 1}, 4},
	} {
		err := &invoked{in: invocation{command: "recover", device: "/dev/test"}, err: fmt.Errorf("op: %w", c.err)}
		if got := report(&strings.Builder{}, err); got != c.want {
			t.Errorf("exit code of %v = %d, want %d", c.err, got, c.want)
		}
	}
	if got := report(&strings.Builder{}, nil); got != exitOK {
		t.Errorf("exit code of nil = %d", got)
	}
}

// A fleet ceremony exits with the worst of its volumes' codes, and gives
// the first volume's hint with that volume's device.
func TestFleetExitCode(t *testing.T) {
	fe := func(errs ...error) error {
		f := &escrow.FleetError{Op: "enroll", Total: 5}
		for i, e := range errs {
			f.Failed = append(f.Failed, escrow.VolumeError{Device: fmt.Sprintf("/dev/v%d", i), Err: e})
		}
		return &invoked{in: invocation{command: "enroll", set: "dc1"}, err: f}
	}
	for _, c := range []struct {
		err  error
		code int
		hint string
	}{
		{fe(errors.New("open volume: not a block device"), fmt.Errorf("enroll: %w", luks.ErrWrongKey)), 1, ""},
		{fe(errors.New("x"), escrow.ErrReadBack, escrow.ErrQuorum), 4, "run custos status /dev/v2 to see who holds them"},
		{fe(errors.New("x"), &cards.PINError{Retries: 1}), 1, "1 tries left"},
		{fe(errors.New("x"), &escrow.StepError{Op: "enroll", Done: escrow.StepSharesWritten, Err: errors.New("y")}),
			1, "rerun custos enroll --set dc1 /dev/v1 to finish"},
		{fe(&escrow.UndoError{Op: "enroll", Err: errors.New("x"), UndoErr: errors.New("y")}),
			1, "run custos status /dev/v0, then rerun custos enroll --set dc1 /dev/v0 to undo it"},
	} {
		code, hint := classify(c.err)
		if code != c.code || !strings.Contains(hint, c.hint) || (c.hint == "" && hint != "") {
			t.Errorf("%v: code %d hint %q, want %d %q", c.err, code, hint, c.code, c.hint)
		}
	}
}

// Each condition a ceremony reports gets its hint, naming what the operator
// typed (these were package escrow's hints; its tests check that each
// ceremony returns the condition).
func TestHints(t *testing.T) {
	single := func(cmd string) invocation { return invocation{command: cmd, device: "/dev/test"} }
	withKey := single("rotate")
	withKey.keyFile = true
	rollcallSet := invocation{command: "rollcall", set: "dc1"}
	for _, c := range []struct {
		in   invocation
		err  error
		hint string // "" for none
	}{
		{single("enroll"), fmt.Errorf("enroll: %w: ceremony x (2 of 3)", escrow.ErrAlreadyEnrolled), "run custos rotate /dev/test to replace it"},
		{single("enroll"), fmt.Errorf("enroll: %w: %w", escrow.ErrAuthorise, luks.ErrWrongKey), "give a passphrase or key file that opens /dev/test"},
		{single("rotate"), fmt.Errorf("%w: %w", escrow.ErrAuthorise, luks.ErrWrongKey), "give a passphrase or key file that opens /dev/test"},
		{single("enroll"), fmt.Errorf("enroll: %w", &escrow.UnfinishedError{Kind: "rotation", Ceremony: "x"}), "run custos rotate /dev/test to finish it"},
		{single("rotate"), fmt.Errorf("rotate: %w", &escrow.UnfinishedError{Kind: "enrollment", Ceremony: "x"}), "run custos enroll -k K -n N /dev/test to finish or undo it"},
		{invocation{command: "rotate", set: "dc1", device: "/dev/v1"}, fmt.Errorf("rotate: %w", &escrow.UnfinishedError{Kind: "enrollment", Ceremony: "x"}),
			"run custos enroll --set dc1 /dev/v1 to finish or undo it"},
		{single("enroll"), fmt.Errorf("enroll: %w: a luks1 header holds no token", escrow.ErrNeedsToken), "enroll it with its cards present: custos enroll -k K -n N /dev/test"},
		{single("enroll"), &escrow.StepError{Op: "enroll", Done: escrow.StepSharesWritten, Err: store.ErrInUse}, "rerun custos enroll -k K -n N /dev/test to finish"},
		{single("enroll"), &escrow.UndoError{Op: "enroll", Err: errors.New("x"), UndoErr: errors.New("y")}, "run custos status /dev/test, then rerun custos enroll -k K -n N /dev/test to undo it"},
		{single("rotate"), &escrow.UndoError{Op: "rotate", Err: errors.New("x"), UndoErr: errors.New("y")}, "run custos status /dev/test, then rerun custos rotate /dev/test"},
		{single("rotate"), &escrow.StepError{Op: "rotate", Done: escrow.StepSharesVerified, Err: fmt.Errorf("%w: x", escrow.ErrNeedsToken)}, "rerun custos rotate /dev/test to finish"},
		{single("rotate"), fmt.Errorf("rotate: %w", &escrow.KeptKeyslotError{Keyslot: 3, Ceremony: "x", Why: "y"}),
			"if keyslot 3 holds a key you added yourself, nothing is wrong; otherwise the old shares may still open the volume: kill it with cryptsetup luksKillSlot /dev/test 3"},
		{withKey, fmt.Errorf("rotate: %w: the old recovery keyslot 1 could not be killed afterwards: x", escrow.ErrUnconfirmed),
			"authorise with k cards of the ceremony instead of a key file (custos rotate /dev/test): their recovered key proves its keyslot"},
		{single("rotate"), &escrow.RecoveryKeyGivenError{Keyslot: 1}, "give a passphrase or key file of another keyslot, or authorise with k cards"},
		{single("rotate"), escrow.ErrNoCeremony, "run custos enroll -k K -n N /dev/test first"},
		{invocation{command: "rotate", set: "dc1", device: "/dev/v1"}, fmt.Errorf("rotate: %w", escrow.ErrNoCeremony), "enroll it first: custos enroll --set dc1 /dev/v1"},
		{single("rollcall"), fmt.Errorf("rollcall: %w", escrow.ErrNoCeremony), "run custos enroll -k K -n N /dev/test first"},
		{single("rollcall"), fmt.Errorf("rollcall: %w: %w", escrow.ErrNoCeremony, &escrow.AnchorsError{Errs: []error{&store.AnchorError{Seq: 1}}}),
			"the log is not the one the named copies were written against: run custos log verify and custos status /dev/test"},
		{single("rollcall"), fmt.Errorf("rollcall: %w", &escrow.FailedCardsError{Failed: 2}), "rotate the key to a healthy card set: custos rotate /dev/test"},
		{rollcallSet, fmt.Errorf("rollcall: %w", &escrow.FailedCardsError{Failed: 2, Set: "dc1"}), "replace each across the fleet: custos rotate --set dc1 --replace OLD=NEW DEVICE..."},
		{single("recover"), fmt.Errorf("%w: 2 of 3 good shares: %w", escrow.ErrQuorum, errors.New("no more cards")),
			"insert more custodians' cards, or run custos status /dev/test to see who holds them"},
		{single("recover"), fmt.Errorf("%w: %w", escrow.ErrNoCeremonyLeft, escrow.ErrKeyslotMismatch), "the keyslot the copies name holds another key: run custos status /dev/test"},
		{single("recover"), &escrow.StepError{Op: "recover", Done: escrow.StepKeyslotAdded, Keyslot: 2, Err: store.ErrInUse},
			"the volume opens with the new key; repair the log with custos log verify"},
		{single("recover"), &escrow.StepError{Op: "recover", Done: escrow.StepKeyslotAdded, Keyslot: 2, Err: &escrow.AnchorsError{Errs: []error{&store.AnchorError{Seq: 1}}}},
			"the volume opens with the new key; the log is not the one the named copies were written against: run custos log verify and custos status /dev/test"},
		{single("card init"), fmt.Errorf("card init: %w", escrow.ErrNoCustodian), "name the card's holder with --custodian NAME"},
		{invocation{command: "set create", set: "dc1"}, fmt.Errorf("set create: %w: dc1 (version 1)", escrow.ErrSetExists),
			"change its cards with custos rotate --set dc1 --replace OLD=NEW, or choose another name"},
		{invocation{command: "set create", set: "dc1"}, fmt.Errorf("set create: %w", &escrow.MissingCardsError{Serials: []string{"5001"}, Err: errors.New("x")}),
			"insert every card named with --card; nothing was logged"},
		{invocation{command: "set create", set: "dc1"}, fmt.Errorf("card 5000: %w", escrow.ErrNoCustodyKey), "run custos card init on it first"},
		{single("enroll"), fmt.Errorf("card 5000: %w", escrow.ErrSlotsFull), "run custos card init --slot on it to make another custody key"},
		{invocation{command: "set create", set: "dc1"}, &escrow.SlotsError{Serial: "5000", Keys: 2}, "name the one to use: --card 5000:SLOT"},
		{invocation{command: "set import"}, &escrow.SetAttestationError{Set: "dc1", Serial: "5000", Err: errors.New("x")},
			"a set whose attestation does not verify is not taken in; if the card's maker's root is missing, give it with --attestation-roots"},
		{invocation{command: "set import"}, fmt.Errorf("set import: %w: %w", escrow.ErrSetFile, errors.New("x")), "give the file custos set export wrote, unchanged"},
		{invocation{command: "set import"}, fmt.Errorf("set import: %w", &escrow.FingerprintError{Set: "dc1", Version: 1}),
			"the file was changed, or it is another set: compare with the fingerprint the set's transcript printed"},
		{invocation{command: "set import"}, fmt.Errorf("set import: %w", &store.SetRuleError{}), "import the set's earlier versions first, in order"},
		{invocation{command: "enroll", set: "dc9"}, fmt.Errorf("%w: set dc9", escrow.ErrNoSet), "create it with custos set create, or import its file with custos set import"},
		// Conditions that carry no hint where they are not the operator's
		// next step.
		{single("recover"), fmt.Errorf("recover: %w", escrow.ErrNoCeremony), ""},
		{single("rotate"), fmt.Errorf("%w: x", escrow.ErrUnconfirmed), ""},
		{single("recover"), fmt.Errorf("recover: %w", escrow.ErrUnconfirmed), ""},
	} {
		_, hint := classify(&invoked{in: c.in, err: c.err})
		if hint != c.hint {
			t.Errorf("%s: %v: hint %q, want %q", c.in.command, c.err, hint, c.hint)
		}
	}
}

// status names the command that finishes or undoes an unfinished ceremony
// (package escrow's crash tests check the kind and the set it reports).
func TestFinishCommand(t *testing.T) {
	for _, c := range []struct {
		u    escrow.Unfinished
		want string
	}{
		{escrow.Unfinished{Kind: "enroll"}, "custos enroll -k K -n N /dev/test"},
		{escrow.Unfinished{Kind: "rotate"}, "custos rotate /dev/test"},
		{escrow.Unfinished{Kind: "enroll", Set: "dc1"}, "custos enroll --set dc1 /dev/test"},
		{escrow.Unfinished{Kind: "enroll", Set: "dc\x1b[2J"}, "custos enroll --set dc?[2J /dev/test"},
	} {
		if got := finishCommand(&c.u, "/dev/test"); got != c.want {
			t.Errorf("%+v: %q, want %q", c.u, got, c.want)
		}
	}
}
