package cards

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/internal/realtest"
	"custos.dev/custos/shares"
	"custos.dev/custos/store"
)

var (
	testCAOnce sync.Once
	testCA     *vcard.CA
	testCAErr  error
	testCADir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if testCADir != "" {
		os.RemoveAll(testCADir)
	}
	os.Exit(code)
}

// virtualCA is one virtual attestation CA for the whole test binary.
func virtualCA(t testing.TB) *vcard.CA {
	t.Helper()
	testCAOnce.Do(func() {
		testCADir, testCAErr = os.MkdirTemp("", "cards-ca")
		if testCAErr == nil {
			testCA, testCAErr = vcard.OpenCA(filepath.Join(testCADir, "ca"))
		}
	})
	if testCAErr != nil {
		t.Fatalf("virtual CA: %v", testCAErr)
	}
	return testCA
}

// newVCard makes a factory-fresh virtual card with its state in t.TempDir.
func newVCard(t testing.TB, serial uint32, version string) *vcard.Card {
	t.Helper()
	c, err := vcard.NewCard(vcard.Config{Serial: serial, Version: version, CA: virtualCA(t), StatePath: filepath.Join(t.TempDir(), "card.json")})
	if err != nil {
		t.Fatalf("vcard.NewCard: %v", err)
	}
	if os.Getenv("VCARD_TRACE") != "" {
		c.SetTrace(os.Stderr)
	}
	return c
}

// insert puts vc into the vpcd reader on port, removed at cleanup.
func insert(t testing.TB, vc *vcard.Card, port int) *vcard.Inserted {
	t.Helper()
	in, err := vc.Insert(context.Background(), port)
	if err != nil {
		t.Fatalf("Insert: %v", err)
	}
	t.Cleanup(func() {
		if err := in.Remove(); err != nil {
			t.Errorf("Remove: %v", err)
		}
	})
	return in
}

// openCard opens the card in reader, closed at cleanup.
func openCard(t testing.TB, reader string) *Card {
	t.Helper()
	c, err := Open(reader)
	if err != nil {
		t.Fatalf("Open(%q): %v", reader, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A custodian's test credentials (never the factory ones).
var (
	testPIN = []byte("246810")
	testPUK = []byte("13579135")
)

// custodyCard is the common start: a fresh virtual card in the reader on
// port, opened and initialised by custos with the virtual CA trusted.
func custodyCard(t testing.TB, serial uint32, port int) (*vcard.Card, *vcard.Inserted, *Card, *Custody) {
	t.Helper()
	vc := newVCard(t, serial, "")
	in := insert(t, vc, port)
	c := openCard(t, in.Reader())
	cu, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, Roots: virtualCA(t).Pool()})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return vc, in, c, cu
}

// lock takes the machine-wide vpcd readers lock.
func lock(t testing.TB) {
	t.Helper()
	start := time.Now()
	realtest.LockReaders(t)
	if d := time.Since(start); d > time.Second {
		t.Logf("waited %v for the vpcd readers (other packages' tests hold them)", d.Round(time.Second))
	}
}

// testShare is one card's part of a test ceremony: its sealed share and
// the version 2 payload its certificate carries (docs/FORMAT.md section
// 12), which package cards treats as opaque bytes.
type testShare struct {
	Sealed     *shares.SealedShare
	Commitment shares.Commitment
	Anchor     store.Head
	Payload    []byte
}

// ceremony splits a fresh recovery key among the given card keys, one
// sealed share each, and returns the ceremony, the secret and each card's
// share with its certificate payload (store.EncodeCardCopy of the record
// with that card alone).
func ceremony(t testing.TB, keys ...*ecdsa.PublicKey) (*shares.Ceremony, []byte, []*testShare) {
	t.Helper()
	secret, err := shares.NewRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	var vol shares.VolumeID
	vol[0] = 0x42
	k := len(keys)
	if k > 2 {
		k = 2
	}
	c, ss, err := shares.Split(shares.NewCeremonyID(), vol, secret, k, len(keys))
	if err != nil {
		t.Fatal(err)
	}
	rec := &store.Record{Version: store.RecordVersion, ID: [16]byte(c.ID), Volume: [16]byte(vol), K: k, N: len(keys),
		Keyslot: 1, Salt: "5a17", Digest: [32]byte(c.Digest)}
	var out []*testShare
	for i, s := range ss {
		rcpt, err := keys[i].ECDH()
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := shares.Seal(s, rcpt)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := sealed.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		entry := store.RecordCard{Index: s.Index, Serial: fmt.Sprint(1000 + i), Slot: 0x82, Key: [32]byte(sealed.Recipient),
			Commitment: [32]byte(c.Commitments[s.Index-1]), Sealed: raw}
		entry.Attestation[0], entry.Attestation[31] = 0xa7, byte(i)
		one := *rec
		one.Cards = []store.RecordCard{entry}
		ts := &testShare{Sealed: sealed, Commitment: c.Commitments[s.Index-1], Anchor: store.Head{Seq: uint64(10 + i)}}
		ts.Anchor.Hash[0], ts.Anchor.Hash[31] = 0xa1, byte(i)
		if ts.Payload, err = store.EncodeCardCopy(&one, ts.Anchor); err != nil {
			t.Fatal(err)
		}
		out = append(out, ts)
	}
	return c, secret, out
}

// copyOf decodes a version 2 payload read from a card.
func copyOf(t testing.TB, sc *SlotCert) *store.CardCopy {
	t.Helper()
	if sc == nil || sc.Payload == nil {
		t.Fatalf("no version 2 payload: %+v", sc)
	}
	cp, err := store.ParseCardCopy(sc.Payload)
	if err != nil {
		t.Fatalf("the payload read back does not decode: %v", err)
	}
	return cp
}

// carries tells whether sc is exactly ts's payload, for ts's key.
func carries(sc *SlotCert, ts *testShare) bool {
	return sc != nil && sc.V1 == nil && bytes.Equal(sc.Payload, ts.Payload) && sc.Key == ts.Sealed.Recipient
}

// writeV1 writes a version 1 custody certificate (the DER extension custos
// wrote before the version 2 record) for the slot's key carrying sc, as
// custos 1 did: the management key read with the PIN.
func writeV1(t testing.TB, c *Card, slot uint8, pin []byte, sc *ShareCert) {
	t.Helper()
	pub, err := c.slotKey(slot)
	if err != nil {
		t.Fatal(err)
	}
	cert := v1Certificate(t, pub, sc)
	if err := c.verifyAndReadKey(pin); err != nil {
		t.Fatal(err)
	}
	if err := c.authenticateStored(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.storeCertificate(slot, cert); err != nil {
		t.Fatal(err)
	}
}

// v1Certificate is a certificate for pub with the version 1 extension.
func v1Certificate(t testing.TB, pub *ecdsa.PublicKey, sc *ShareCert) *x509.Certificate {
	t.Helper()
	ext, err := marshalShareCert(sc)
	if err != nil {
		t.Fatal(err)
	}
	eph, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(1),
		Subject:         pkix.Name{CommonName: fmt.Sprintf("custos share %d of %d, ceremony %s", sc.Index, sc.N, sc.Ceremony)},
		NotBefore:       time.Now().UTC().Truncate(time.Second),
		NotAfter:        noExpiry,
		KeyUsage:        x509.KeyUsageKeyAgreement,
		ExtraExtensions: []pkix.Extension{{Id: oidShareCert, Value: ext}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, &x509.Certificate{Subject: pkix.Name{CommonName: "custos ceremony " + sc.Ceremony.String()}}, pub, eph)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// v1ShareCert is the version 1 content for ts's sealed share.
func v1ShareCert(c *shares.Ceremony, ts *testShare) *ShareCert {
	s := ts.Sealed
	sc := &ShareCert{Ceremony: s.Ceremony, Volume: s.Volume, K: s.K, N: s.N, Index: s.Index, Keyslot: 1,
		Digest: c.Digest, Commitment: ts.Commitment, Sealed: s}
	sc.Anchor = [32]byte(ts.Anchor.Hash)
	return sc
}

// credentialsOf reads the PIN's, PUK's and management key's GET METADATA
// on the card in reader, over a Card of its own.
func credentialsOf(t testing.TB, reader string) (pin, puk, mgmt slotMetadata) {
	t.Helper()
	c, err := Open(reader)
	if err != nil {
		t.Fatalf("Open(%q): %v", reader, err)
	}
	defer c.Close()
	for ref, m := range map[byte]*slotMetadata{keyPIN: &pin, keyPUK: &puk, keyManagementKey: &mgmt} {
		if *m, err = c.getMetadata(ref); err != nil {
			t.Fatalf("GET METADATA %02x: %v", ref, err)
		}
	}
	return pin, puk, mgmt
}
