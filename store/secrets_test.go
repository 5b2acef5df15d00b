package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// modhex is YubiKey's keyboard-layout-proof hex: nibbles 0-f as these letters.
const modhexAlphabet = "cbdefghijklnrtuv"

func modhex(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(modhexAlphabet[c>>4])
		s.WriteByte(modhexAlphabet[c&0xf])
	}
	return s.String()
}

// secretForms returns the forms in which a secret could be found in a file:
// raw, hex (both cases), base64 (standard and URL, padded or not, at each of
// the three alignments inside a longer base64 string) and modhex.
func secretForms(secret []byte) map[string][]byte {
	forms := map[string][]byte{
		"raw":       secret,
		"hex":       []byte(hex.EncodeToString(secret)),
		"HEX":       []byte(strings.ToUpper(hex.EncodeToString(secret))),
		"modhex":    []byte(modhex(secret)),
		"MODHEX":    []byte(strings.ToUpper(modhex(secret))),
		"base64":    []byte(base64.StdEncoding.EncodeToString(secret)),
		"base64url": []byte(base64.URLEncoding.EncodeToString(secret)),
	}
	for encName, enc := range map[string]*base64.Encoding{"base64": base64.RawStdEncoding, "base64url": base64.RawURLEncoding} {
		for shift := 0; shift < 3; shift++ {
			s := enc.EncodeToString(append(make([]byte, shift), secret...))
			// Drop the characters the prefix touches and the tail, which
			// depends on what follows.
			start := (shift*8 + 5) / 6
			if len(s)-4 > start {
				forms[fmt.Sprintf("%s at offset %d", encName, shift)] = []byte(s[start : len(s)-4])
			}
		}
	}
	return forms
}

// findSecrets reports each secret found in data, in any form.
func findSecrets(data []byte, secrets map[string][]byte) []string {
	var found []string
	for name, secret := range secrets {
		for form, b := range secretForms(secret) {
			if bytes.Contains(data, b) {
				found = append(found, name+" as "+form)
			}
		}
	}
	return found
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func randomDigits(t *testing.T, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		d, err := rand.Int(rand.Reader, big.NewInt(10))
		if err != nil {
			t.Fatal(err)
		}
		b[i] = byte('0' + d.Int64())
	}
	return b
}

// ceremonySecrets stands in for one ceremony's secrets: the recovery key,
// its shares, the custodians' PINs and PUKs, the card management key and
// the passphrase that unlocked the volume.
type ceremonySecrets struct {
	secrets map[string][]byte
	record  *Record // complete
	regs    []CardRegistration
}

func makeCeremonySecrets(t *testing.T, id string, k, n int) ceremonySecrets {
	cs := ceremonySecrets{secrets: map[string][]byte{
		"recovery key":   randomBytes(t, 32),
		"passphrase":     []byte(base64.RawStdEncoding.EncodeToString(randomBytes(t, 18))),
		"management key": randomBytes(t, 24),
	}}
	rec := complete(sampleCeremony(id, hex.EncodeToString(randomBytes(t, 6)), k, n))
	rec.Keyslot = 2
	rec.Digest = sha256.Sum256(append([]byte("custos digest "), cs.secrets["recovery key"]...))
	for i := range rec.Cards {
		share := randomBytes(t, 33) // a Shamir share of the 32-byte key: 32 bytes and an x coordinate
		cs.secrets[fmt.Sprintf("share %d", i+1)] = share
		cs.secrets[fmt.Sprintf("pin %d", i+1)] = randomDigits(t, 8)
		cs.secrets[fmt.Sprintf("puk %d", i+1)] = randomDigits(t, 8)
		// Sealing as the shares package does: an AEAD under a key only the
		// card can rederive, after the header. The ciphertext is public.
		block, _ := aes.NewCipher(randomBytes(t, 32))
		aead, _ := cipher.NewGCM(block)
		nonce := randomBytes(t, aead.NonceSize())
		ct := aead.Seal(nonce, nonce, share, []byte(id))
		c := &rec.Cards[i]
		sealed := append(bytes.Clone(c.Sealed[:136]), 0, byte(len(ct)))
		c.Sealed = append(sealed, ct...)
		c.Commitment = sha256.Sum256(append([]byte(fmt.Sprintf("%s/%d/", id, i+1)), share...))
		cs.regs = append(cs.regs, CardRegistration{Serial: c.Serial, Custodian: c.Custodian, Slot: fmt.Sprintf("%02x", c.Slot),
			Fingerprint: hex.EncodeToString(c.Key[:]), Attestation: randomBytes(t, 600)})
	}
	cs.record = rec
	return cs
}

// writeCeremony runs a ceremony's worth of events through the public API:
// card init, enroll with each step, rollcalls.
func writeCeremony(t *testing.T, l *Log, cs ceremonySecrets) {
	t.Helper()
	open := cs.record.Clone()
	open.Cards, open.Salt = nil, ""
	id := open.IDString()
	_, err := l.Update(func(tx *Tx) error {
		for _, r := range cs.regs {
			if _, err := tx.RegisterCard("operator", id, r); err != nil {
				return err
			}
		}
		if _, err := tx.PutCeremony("operator", StatusOpen, open); err != nil {
			return err
		}
		steps := []Event{
			{Actor: "operator", Type: "enroll.volume-unlocked", Ceremony: id, Body: []byte(`{"keyslot":0}`)},
			{Actor: "operator", Type: "enroll.keyslot-added", Ceremony: id, Body: []byte(`{"keyslot":2}`)},
		}
		for _, c := range cs.record.Cards {
			steps = append(steps, Event{Actor: c.Custodian, Type: "enroll.share-verified", Ceremony: id,
				Body: mustJSON(map[string]any{"index": c.Index, "serial": c.Serial, "commitment": c.Commitment[:]})})
		}
		for _, ev := range steps {
			if _, err := tx.Append(ev); err != nil {
				return err
			}
		}
		_, err := tx.PutCeremony("operator", StatusActive, cs.record)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs.record.Cards {
		if _, err := l.RecordRollcall(c.Custodian, Rollcall{Ceremony: id, Serial: c.Serial, Fingerprint: hex.EncodeToString(c.Key[:]), OK: true}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNoSecretsInTheDatabase(t *testing.T) {
	boltOnly(t)
	l := openTest(t)
	cs := makeCeremonySecrets(t, "enroll-2026-03-14", 3, 5)
	writeCeremony(t, l, cs)
	var export, transcript bytes.Buffer
	if err := l.ExportJSONL(&export, ""); err != nil {
		t.Fatal(err)
	}
	if err := l.Transcript(&transcript, cs.record.IDString()); err != nil {
		t.Fatal(err)
	}
	l.Close()
	raw, err := os.ReadFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	for what, data := range map[string][]byte{"database file": raw, "export": export.Bytes(), "transcript": transcript.Bytes()} {
		if found := findSecrets(data, cs.secrets); len(found) > 0 {
			t.Errorf("%s holds secrets: %v", what, found)
		}
	}
	// The scan is not blind: the public data is there, in the forms the
	// scanner looks for.
	public := map[string][]byte{
		"commitment":   cs.record.Cards[0].Commitment[:],
		"sealed share": cs.record.Cards[4].Sealed,
		"digest":       cs.record.Digest[:],
	}
	for name, v := range public {
		if found := findSecrets(raw, map[string][]byte{name: v}); len(found) == 0 {
			t.Errorf("the scanner does not find the %s in the database: it would not find a secret either", name)
		}
	}
	if found := findSecrets(transcript.Bytes(), map[string][]byte{"commitment": cs.record.Cards[0].Commitment[:]}); len(found) == 0 {
		t.Error("the scanner does not find the commitment (hex) in the transcript")
	}
}

// The control: a caller that puts a share into a generic body is caught by
// the same scan, in each encoding.
func TestSecretScanCatchesALeak(t *testing.T) {
	boltOnly(t)
	share := randomBytes(t, 33)
	for form, enc := range map[string]func([]byte) string{
		"base64": base64.StdEncoding.EncodeToString,
		"hex":    hex.EncodeToString,
		"modhex": modhex,
		"base64 inside a longer string": func(b []byte) string {
			return base64.RawStdEncoding.EncodeToString(append([]byte{1, 2}, b...))
		},
	} {
		t.Run(form, func(t *testing.T) {
			l := openTest(t)
			if _, err := l.Append(Event{Actor: "careless", Type: "leak", Body: mustJSON(map[string]string{"x": enc(share)})}); err != nil {
				t.Fatal(err)
			}
			l.Close()
			raw, _ := os.ReadFile(filepath.Clean(l.path))
			if found := findSecrets(raw, map[string][]byte{"share": share}); len(found) == 0 {
				t.Errorf("a share written as %s was not found", form)
			}
		})
	}
}
