// Package escrow holds custos's ceremonies: card init, enroll, recover,
// rotate, rollcall and status. Each ceremony is a function over a few small
// interfaces — a LUKS Volume, a CardSource that hands over custodians'
// cards as they are inserted, the ceremony Log, and a Prompter that asks for
// PINs and passphrases — gathered in an Env. cmd/custos fills the Env with
// the real parts (a *luks.Volume, a ReaderSource over pcscd, a *store.Log,
// its terminal prompter); tests fill it with fakes or with the same real
// parts on image files and virtual cards.
//
//	vol, _ := luks.Open("/dev/sdb2")
//	log, _ := store.Open("", nil)
//	env := &escrow.Env{Volume: vol, Device: "/dev/sdb2", Cards: escrow.NewReaderSource(), Log: log, Prompt: p}
//	res, err := escrow.Enroll(ctx, env, escrow.EnrollOptions{K: 3, N: 5, Custodians: names, AuthKey: key})
//	var ae *escrow.StepError
//	switch {
//	case errors.Is(err, escrow.ErrAlreadyEnrolled):
//		// rotate instead
//	case errors.As(err, &ae):
//		// every share is written: run Enroll again to finish
//	}
//
// # Prompts
//
// Every secret comes through Prompter.Secret, one prompt at a time, in an
// order the caller can script (one line of standard input per prompt). The
// order of each ceremony is part of the command line's contract and is
// written down once, with the commands (cmd/custos, from which --help, the
// man page and the README's "Prompt order" are generated); tests of this
// package check that the ceremonies ask in that order. A wrong PIN is asked
// for again at once (at most three tries, never the card's last).
//
// Progress goes through Prompter.Say: "insert card 2 of 5 (custodian
// alice)". Neither Say messages nor errors nor the log nor the token ever
// carry a secret.
//
// # Where the ceremony comes from
//
// Recover, Rollcall and Status learn the volume's ceremony from its LUKS2
// tokens of type "custos", then from the log, then (Recover only) from the
// certificate on the first card inserted. When the token and the log both
// hold a ceremony they are compared field by field; a card's certificate is
// compared with both for its own share. Copies that disagree are named in a
// *DisagreeError and never silently chosen between: a disagreement about the
// ceremony as a whole stops the ceremony (exit code 4), one about a single
// share sets that card aside.
//
// # The fleet
//
// A custodian set (CreateSet, ImportSet) holds a team's cards with their
// attested keys, so that EnrollSet seals many volumes' shares with no card
// present; RecoverMany and RotateSet take one pass of cards over many
// volumes (each card's PIN asked once and kept in locked memory for that
// card's pass only), RollcallSet proves the set's cards and SetStatus
// lists the volumes enrolled to a set with their margins. Each volume
// keeps the promises of its single-volume ceremony, through the same
// view, candidates and collector; one that fails is named in a
// *FleetError and the others go on. docs/DESIGN.md, "The fleet".
//
// # Interrupted ceremonies
//
// Enroll and Rotate record each step in the log before they take it, and
// choose the keyslot number before adding it, so that a crash (kill -9, a
// power loss) leaves a state Status explains and a rerun of the same command
// finishes or undoes: an enrollment whose shares were all written and
// verified is finished (token and log), an earlier one is undone (its
// keyslot killed with the operator's key, the ceremony marked abandoned) and
// started again. A rotation is rolled back until every new share is verified
// and rolled forward after; at every point the volume opens with the
// operator's key and with the old or the new recovery key.
//
// # Attestation
//
// Enroll and Rotate attest each card's slot key (Card.Attest) right before
// they seal a share to it: a key imported rather than generated on the
// card, a key of PIN policy never, a card that cannot attest, and a card
// whose attestation chains to none of Yubico's roots or Env.Roots are set
// aside with ErrUnattested; when no other card comes, the ceremony stops
// with it (exit 4). EnrollOptions.AllowUnattested (recorded in the
// ceremony) lets through only a card that cannot attest. The chain is
// logged beside the card, the record keeps its digest, and
// VerifyAttestations verifies every chain again from the log alone;
// Status, Enroll and Rotate report each card's attestation from its
// ceremony's chain (CardAttestation). Recover and Rollcall check that a
// card's slot key is the record's, the attested one, before they ask for
// its PIN (Card.CheckRecipient).
//
// # Errors
//
// Errors are lowercase, wrap a sentinel from errors.go where one applies
// (ErrUsage, ErrQuorum, ErrVerification and the ones wrapping it, ...), and
// are typed where the caller needs their data: what a ceremony had done
// when it failed (StepError, UndoError), the unfinished ceremony in the way
// (UnfinishedError), the cards that failed a rollcall (FailedCardsError),
// a fleet's failed volumes (FleetError). This package words no advice:
// the command line maps each error to its exit status and to what the
// operator should run next, with the device and set names it was given.
//
// # Caveats
//
// The recovery key is enrolled with luks.MinimalPBKDF (pbkdf2, 1000
// iterations): it is 256 random bits, so a costly PBKDF adds nothing but
// unlock time and memory on the rescue machine. Keyslots for passphrases a
// person chose get Env.PBKDF, cryptsetup's defaults when nil.
//
// A LUKS2 header's JSON area (12 KiB of JSON by default) holds the token of
// a ceremony with up to about 40 cards; beyond that Enroll says so and the
// ceremony lives in the log and on the cards only, as on LUKS1.
//
// Wiping is best effort, as package shares explains; PINs also pass through
// piv-go as strings, which cannot be wiped.
//
// A ceremony enrolled to a set has no card certificate naming it: it is
// recovered from its LUKS2 token or the log (with k cards), never from the
// cards alone; EnrollSet refuses a volume that cannot hold its token.
// Without the cards present, a new share is checked by the other side of
// its key agreement (shares.SealChecked), not read back by its card; the
// cards' keys are proven at CreateSet and by each RollcallSet.
//
// A rotation that keeps a card seals the new share to the same card key
// and overwrites the old certificate: the old share on that card lives on
// only in the retired token and log copies, worthless once the old keyslot
// is killed. Cards that leave the custodian set are wiped (their slot gets a
// new key) only when presented; Rotate lists the ones still to wipe.
package escrow
