package vcard

import (
	"strconv"
	"testing"

	"custos.dev/custos/internal/realtest"
)

func TestAddrMovesOnlyTheTwoReaders(t *testing.T) {
	if BaseEnv != realtest.VPCDBaseEnv {
		t.Fatalf("vcard reads %s, realtest sets %s", BaseEnv, realtest.VPCDBaseEnv)
	}
	for _, tc := range []struct {
		base string
		port int
		want string
	}{
		{"", Port0, "127.0.0.1:35963"},
		{"", Port1, "127.0.0.1:35964"},
		{"35973", Port0, "127.0.0.1:35973"},
		{"35973", Port1, "127.0.0.1:35974"},
		{"35973", 35990, "127.0.0.1:35990"}, // a private reader is not moved
		{"junk", Port1, "127.0.0.1:35964"},
		{"0", Port0, "127.0.0.1:35963"},
		{"70000", Port0, "127.0.0.1:35963"},
	} {
		t.Setenv(BaseEnv, tc.base)
		if got := Addr(tc.port); got != tc.want {
			t.Errorf("Addr(%d) with %s=%q: %s, want %s", tc.port, BaseEnv, tc.base, got, tc.want)
		}
	}
}

// TestBoundReadersTakeTheCard: a card inserted into Port0 goes to the
// readers this process is bound to (a pool member under scripts/test), and
// their pcscd reports it there.
func TestBoundReadersTakeTheCard(t *testing.T) {
	realtest.LockReaders(t)
	r := realtest.Bound()
	if got, want := Addr(Port0), "127.0.0.1:"+strconv.Itoa(r.Port0); got != want {
		t.Fatalf("Port0 dials %s, the bound readers listen on %s", got, want)
	}
	c := newTestCard(t, 4711, "")
	in, err := c.Insert(t.Context(), Port0)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Remove()
	if in.Reader() != "Virtual PCD 00 00" {
		t.Fatalf("reader %q", in.Reader())
	}
}
