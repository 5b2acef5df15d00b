// Package shares is the cryptographic core of custos: the recovery key, its
// k-of-n split, the share envelope, the commitments that check each share on
// its own, and the sealing of a share to a card's P-256 key. It is pure Go,
// does no I/O and imports nothing else of custos. The byte layouts are in
// docs/FORMAT.md, with vectors in testdata/format.
//
// # Recovery key
//
// NewRecoveryKey makes 32 random bytes; EncodeRecoveryKey writes them as
// systemd-cryptenroll writes its recovery keys (64 modhex characters, a dash
// after every 8), and that text is the LUKS keyslot passphrase;
// ParseRecoveryKey reads it back as a person types it.
//
// # Splitting and combining
//
//	c, shares, err := shares.Split(shares.NewCeremonyID(), volume, key, 3, 5)
//	// c (a *Ceremony) is public: commitments and a digest, no secret.
//	secret, rejected, err := c.Combine(someShares)
//
// Combine checks every share against its commitment before it combines
// anything, sets aside and names each bad one (another ceremony, a duplicate,
// x = 0, tampered bytes), and checks the result against the digest: it never
// returns a wrong secret. Fewer than k good shares give a *QuorumError that
// says how many good ones there are.
//
// # Sealing
//
//	sealed, err := shares.Seal(share, cardPublicKey)
//	share, err := shares.Open(sealed, cardPublicKey, func(eph *ecdh.PublicKey) ([]byte, error) {
//		return card.SharedKey(eph) // the ECDH happens on the card
//	})
//
// Open checks the recipient's fingerprint before calling agree, so a card is
// never asked for its PIN to open a share sealed to another key.
//
// # Caveats
//
// Wiping is best effort. Wipe and the Wipe methods overwrite the buffers
// this package hands out, and the package wipes its own intermediates (ECDH
// shared secrets, derived keys), but Go cannot promise that no copy exists:
// the garbage collector may have moved a buffer before it was wiped,
// hashicorp/vault/shamir allocates and does not wipe its polynomials, and
// strings cannot be wiped at all. Keep secrets in []byte, wipe them as soon
// as they are no longer needed, and run the process with core dumps off and
// its memory locked (cmd/custos does both).
//
// Shares from hashicorp/vault/shamir carry their x coordinate as their last
// byte, chosen at random; the envelope's index is the custodian's number,
// not x.
//
// The randomness always comes from crypto/rand. Since Go 1.26 the crypto
// packages ignore a caller's reader, so the format vectors fix the ephemeral
// keys instead.
package shares
