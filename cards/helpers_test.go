package cards

import (
	"context"
	"crypto/ecdsa"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/internal/realtest"
	"custos.dev/custos/shares"
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

// ceremony splits a fresh recovery key among the given card keys, one
// sealed share each, and returns the ceremony and the ShareCerts.
func ceremony(t testing.TB, keys ...*ecdsa.PublicKey) (*shares.Ceremony, []byte, []*ShareCert) {
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
	var scs []*ShareCert
	for i, s := range ss {
		rcpt, err := keys[i].ECDH()
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := shares.Seal(s, rcpt)
		if err != nil {
			t.Fatal(err)
		}
		sc := &ShareCert{
			Ceremony: sealed.Ceremony, Volume: sealed.Volume, K: sealed.K, N: sealed.N, Index: sealed.Index,
			Keyslot: 1, Digest: c.Digest, Commitment: c.Commitments[s.Index-1], Sealed: sealed,
		}
		sc.Anchor[0], sc.Anchor[31] = 0xa1, byte(i)
		scs = append(scs, sc)
	}
	return c, secret, scs
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
