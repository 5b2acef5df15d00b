package shares

import (
	"crypto/rand"
	"fmt"
	"io"
)

// RecoveryKeySize is the size of a recovery key in bytes (256 bits).
const RecoveryKeySize = 32

// RecoveryKeyTextSize is the length of an encoded recovery key: 64 modhex
// characters in 8 groups of 8, joined by 7 dashes.
const RecoveryKeyTextSize = 2*RecoveryKeySize + RecoveryKeySize/4 - 1

const modhexAlphabet = "cbdefghijklnrtuv"

// NewRecoveryKey returns 32 bytes from crypto/rand. The caller wipes them
// with Wipe when done.
func NewRecoveryKey() ([]byte, error) { return newRecoveryKey(rand.Reader) }

func newRecoveryKey(r io.Reader) ([]byte, error) {
	key := make([]byte, RecoveryKeySize)
	if _, err := io.ReadFull(r, key); err != nil {
		Wipe(key)
		return nil, fmt.Errorf("make recovery key: %w", err)
	}
	return key, nil
}

// EncodeRecoveryKey returns the text form of a 32-byte recovery key, exactly
// as systemd-cryptenroll writes its recovery keys: each byte as two modhex
// characters (high nibble first, alphabet "cbdefghijklnrtuv"), a dash after
// every 8 characters but the last. This text, byte for byte, is the LUKS
// keyslot passphrase. It panics if key is not RecoveryKeySize bytes long.
// The caller wipes the result with Wipe when done.
func EncodeRecoveryKey(key []byte) []byte {
	if len(key) != RecoveryKeySize {
		panic("shares: recovery key must be 32 bytes")
	}
	out := make([]byte, 0, RecoveryKeyTextSize)
	for i, b := range key {
		out = append(out, modhexAlphabet[b>>4], modhexAlphabet[b&0x0f])
		if i%4 == 3 && i != len(key)-1 {
			out = append(out, '-')
		}
	}
	return out
}

// ParseRecoveryKey reads a recovery key as a person types it: upper or
// lower case, with the dashes or without them. Anything else — a character
// outside the modhex alphabet, a dash out of place, too few or too many
// characters — is a *RecoveryKeyError that says where. Leading and trailing
// spaces, tabs and line ends are ignored. The caller wipes the result.
func ParseRecoveryKey(text []byte) ([]byte, error) {
	start, end := 0, len(text)
	for start < end && isSpace(text[start]) {
		start++
	}
	for end > start && isSpace(text[end-1]) {
		end--
	}
	key := make([]byte, RecoveryKeySize)
	n := 0 // modhex characters read
	for i := start; i < end; i++ {
		c := text[i]
		if c == '-' {
			if n == 0 || n%8 != 0 || n == 2*RecoveryKeySize || (i > start && text[i-1] == '-') {
				Wipe(key)
				return nil, &RecoveryKeyError{Offset: i - start, Reason: "a dash may only stand between groups of 8 characters"}
			}
			continue
		}
		v := modhexValue(c)
		if v < 0 {
			Wipe(key)
			return nil, &RecoveryKeyError{Offset: i - start, Reason: "not one of the letters " + modhexAlphabet}
		}
		if n == 2*RecoveryKeySize {
			Wipe(key)
			return nil, &RecoveryKeyError{Offset: i - start, Reason: "too long: a recovery key has 64 letters"}
		}
		if n%2 == 0 {
			key[n/2] = byte(v) << 4
		} else {
			key[n/2] |= byte(v)
		}
		n++
	}
	if n != 2*RecoveryKeySize {
		Wipe(key)
		return nil, &RecoveryKeyError{Offset: end - start, Reason: fmt.Sprintf("too short: %d of 64 letters", n)}
	}
	return key, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func modhexValue(c byte) int {
	if c >= 'A' && c <= 'Z' {
		c += 'a' - 'A'
	}
	for i := 0; i < len(modhexAlphabet); i++ {
		if modhexAlphabet[i] == c {
			return i
		}
	}
	return -1
}

// Wipe overwrites b with zeros. See the package documentation for what Go
// can and cannot promise about wiping.
func Wipe(b []byte) {
	clear(b)
}
