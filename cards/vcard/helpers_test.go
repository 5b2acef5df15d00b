package vcard

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/internal/realtest"
)

var (
	testCAOnce sync.Once
	testCA     *CA
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

// sharedCA is one virtual CA for the whole test binary.
func sharedCA(t testing.TB) *CA {
	t.Helper()
	testCAOnce.Do(func() {
		testCADir, testCAErr = os.MkdirTemp("", "vcard-ca")
		if testCAErr == nil {
			testCA, testCAErr = OpenCA(filepath.Join(testCADir, "ca"))
		}
	})
	if testCAErr != nil {
		t.Fatalf("ca: %v", testCAErr)
	}
	return testCA
}

// newTestCard makes a card with a state file in t.TempDir.
func newTestCard(t testing.TB, serial uint32, version string) *Card {
	t.Helper()
	c, err := NewCard(Config{Serial: serial, Version: version, CA: sharedCA(t), StatePath: filepath.Join(t.TempDir(), "card.json")})
	if err != nil {
		t.Fatalf("NewCard: %v", err)
	}
	if os.Getenv("VCARD_TRACE") != "" {
		c.SetTrace(os.Stderr)
	}
	return c
}

// insert puts c into the reader on port and removes it at cleanup.
func insert(t testing.TB, c *Card, port int) *Inserted {
	t.Helper()
	in, err := c.Insert(context.Background(), port)
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

// openYK opens the card in reader with piv-go, closed at cleanup.
func openYK(t testing.TB, reader string) *piv.YubiKey {
	t.Helper()
	yk, err := piv.Open(reader)
	if err != nil {
		t.Fatalf("piv.Open(%q): %v", reader, err)
	}
	t.Cleanup(func() { yk.Close() })
	return yk
}

// insertedYK is the common start: lock the readers, make a card, insert
// it in the first reader and open it with piv-go.
func insertedYK(t *testing.T, serial uint32, version string) (*Card, *Inserted, *piv.YubiKey) {
	t.Helper()
	realtest.LockReaders(t)
	c := newTestCard(t, serial, version)
	in := insert(t, c, Port0)
	return c, in, openYK(t, in.Reader())
}

// mgmtKeyOf reads the card's management key under its lock.
func mgmtKeyOf(c *Card) (alg byte, key []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.app.st.MgmtAlg, append([]byte(nil), c.app.st.MgmtKey...)
}
