package vcard

import (
	"context"
	"testing"
	"time"

	"github.com/ebfe/scard"
	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/internal/realtest"
)

// The wire cost of the virtual card through the real stack: pcscd, the
// vpcd driver and this package's TCP client. On real hardware these costs
// are the card's own; here they should be the stack's floor, well under a
// millisecond per APDU.
//
//	go test ./cards/vcard -run '^$' -bench 'RoundTrip|Insert'
//
// On the 2-CPU development machine: RoundTrip 48 ms/op before the card
// acknowledged at once (TCP_QUICKACK), 0.14-0.16 ms/op after, against
// 0.1 µs for the card itself (RoundTripInProcess); opening a card with
// piv-go (a handful of APDUs) 86 ms before, about 1 ms after.

// SELECT of the PIV application (SP 800-73-4 part 2, 3.1.1) and the
// YubiKey's GET VERSION (INS FD, Yubico's PIV extensions).
var (
	selectPIV  = []byte{0x00, 0xa4, 0x04, 0x00, 0x05, 0xa0, 0x00, 0x00, 0x03, 0x08}
	getVersion = []byte{0x00, 0xfd, 0x00, 0x00, 0x00}
)

// BenchmarkRoundTripInProcess is the peer of BenchmarkRoundTrip: the same
// GET VERSION handed to the card in process, without pcscd, vpcd or TCP.
func BenchmarkRoundTripInProcess(b *testing.B) {
	c := newTestCard(b, 1000900, "")
	c.transmit(selectPIV)
	for b.Loop() {
		if r := c.transmit(getVersion); len(r) != 5 || r[3] != 0x90 {
			b.Fatalf("GET VERSION = % x", r)
		}
	}
}

// BenchmarkRoundTrip sends one GET VERSION (YubiKey PIV, INS FD) per
// iteration over a raw PC/SC connection: one APDU through pcscd and vpcd
// and back.
func BenchmarkRoundTrip(b *testing.B) {
	realtest.LockReaders(b)
	c := newTestCard(b, 1000901, "")
	in := insert(b, c, Port0)
	sc, err := scard.EstablishContext()
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Release()
	h, err := sc.Connect(in.Reader(), scard.ShareShared, scard.ProtocolAny)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Disconnect(scard.LeaveCard)
	if r, err := h.Transmit(selectPIV); err != nil || len(r) < 2 || r[len(r)-2] != 0x61 && r[len(r)-2] != 0x90 {
		b.Fatalf("SELECT = % x, %v", r, err)
	}
	n0 := c.Counts().APDUs
	for b.Loop() {
		r, err := h.Transmit(getVersion)
		if err != nil {
			b.Fatal(err)
		}
		if len(r) != 5 || r[3] != 0x90 {
			b.Fatalf("GET VERSION = % x", r)
		}
	}
	if got := c.Counts().APDUs - n0; got != uint64(b.N) {
		b.Fatalf("the card saw %d APDUs for %d round trips", got, b.N)
	}
}

// BenchmarkRoundTripPivGo is one piv-go call (Serial: GET SERIAL) per
// iteration, as custos's cards package makes them.
func BenchmarkRoundTripPivGo(b *testing.B) {
	realtest.LockReaders(b)
	c := newTestCard(b, 1000902, "")
	in := insert(b, c, Port0)
	yk := openYK(b, in.Reader())
	for b.Loop() {
		s, err := yk.Serial()
		if err != nil || s != 1000902 {
			b.Fatalf("Serial() = %d, %v", s, err)
		}
	}
}

// BenchmarkInsertOpenRemove inserts a card, opens it with piv-go and
// removes it again, in the same reader, per iteration: what a test pays
// for each card it puts in and takes out. Insert and Remove wait for
// pcscd's polls of the reader, 400 ms apart; in one reader they come
// phase-locked, a full poll each.
func BenchmarkInsertOpenRemove(b *testing.B) {
	realtest.LockReaders(b)
	c := newTestCard(b, 1000903, "")
	var ins, open, rem time.Duration
	for b.Loop() {
		t0 := time.Now()
		in, err := c.Insert(context.Background(), Port0)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		yk, err := piv.Open(in.Reader())
		if err != nil {
			b.Fatal(err)
		}
		yk.Close()
		t2 := time.Now()
		if err := in.Remove(); err != nil {
			b.Fatal(err)
		}
		ins += t1.Sub(t0)
		open += t2.Sub(t1)
		rem += time.Since(t2)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
	b.ReportMetric(ms(ins), "insert-ms/op")
	b.ReportMetric(ms(open), "open-ms/op")
	b.ReportMetric(ms(rem), "remove-ms/op")
}
