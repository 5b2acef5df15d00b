package cards

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"custos.dev/custos/cards/vcard"
)

// insertNotPIV puts a card that is not a PIV card into the vpcd reader on
// port: it answers every command with 6A82 (file or application not
// found), as a payment or transit card would to the PIV SELECT. It speaks
// vsmartcard's vpcd protocol (two-byte length, then a one-byte control
// message or an APDU). Closing the returned connection pulls the card.
func insertNotPIV(t *testing.T, port int) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", vcard.Addr(port))
	if err != nil {
		t.Fatalf("connect to vpcd: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	atr := []byte{0x3b, 0x80, 0x80, 0x01, 0x01} // a minimal T=1 ATR
	go func() {
		for {
			var n [2]byte
			if _, err := io.ReadFull(conn, n[:]); err != nil {
				return
			}
			msg := make([]byte, binary.BigEndian.Uint16(n[:]))
			if _, err := io.ReadFull(conn, msg); err != nil {
				return
			}
			var resp []byte
			switch {
			case len(msg) == 1 && msg[0] == 0x04: // get ATR
				resp = atr
			case len(msg) == 1: // power on, off, reset
				continue
			default:
				resp = []byte{0x6a, 0x82}
			}
			out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
			if _, err := conn.Write(append(out, resp...)); err != nil {
				return
			}
		}
	}()
	return conn
}

// TestNotPIVCard: a card without a PIV application gives ErrNotPIV, shows
// in Readers with serial 0, and WaitInserted/WaitRemoved see it come and go.
func TestNotPIVCard(t *testing.T) {
	lock(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reader := vcard.ReaderName(vcard.Port1)
	conn := insertNotPIV(t, vcard.Port1)
	got, err := WaitInserted(ctx, map[string]bool{vcard.ReaderName(vcard.Port0): true})
	if err != nil || got != reader {
		t.Fatalf("WaitInserted = %q, %v; want %q", got, err, reader)
	}
	rs, err := Readers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Name == reader && (!r.Present || r.Serial != 0 || len(r.ATR) == 0) {
			t.Errorf("Readers() = %+v for a non-PIV card", r)
		}
	}
	if _, err := Open(reader); !errors.Is(err, ErrNotPIV) {
		t.Errorf("Open(non-PIV card) = %v, want ErrNotPIV", err)
	}
	conn.Close()
	if err := WaitRemoved(ctx, reader); err != nil {
		t.Fatalf("WaitRemoved after pulling the non-PIV card: %v", err)
	}
}
