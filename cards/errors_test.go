package cards

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ebfe/scard"

	"custos.dev/custos/internal/realtest"
)

func TestMapError(t *testing.T) {
	for _, tc := range []struct {
		in   error
		want error
		pin  int // retries of a *PINError, or -1
	}{
		{swError(0x63c2), ErrWrongPIN, 2},
		{fmt.Errorf("verify: %w", swError(0x63c1)), ErrWrongPIN, 1},
		{swError(0x6302), ErrWrongPIN, 2},
		{swError(0x63c0), ErrPINBlocked, -1},
		{swError(0x6983), ErrPINBlocked, -1},
		{swError(0x6300), ErrPINBlocked, -1},
		{swError(0x6982), ErrPINRequired, -1},
		{swError(0x6a82), errNotFound, -1},
		{swError(0x6a88), errNotFound, -1},
		{swError(0x6d00), errNotSupported, -1},
		{&TimeoutError{Reader: "r"}, ErrCardTimeout, -1},
		{&ResponseError{Reader: "r", Detail: "x"}, ErrBadResponse, -1},
		{scard.ErrSharingViolation, ErrCardBusy, -1},
		{fmt.Errorf("transmit: %w", scard.ErrRemovedCard), ErrCardRemoved, -1},
		{scard.ErrNoSmartcard, ErrCardRemoved, -1},
		{scard.ErrNoService, ErrNoService, -1},
		{ErrWrongCard, ErrWrongCard, -1},
		{&PINError{Retries: 1}, ErrWrongPIN, 1},
	} {
		got := mapError("", tc.in)
		if !errors.Is(got, tc.want) {
			t.Errorf("mapError(%v) = %v, want %v", tc.in, got, tc.want)
			continue
		}
		var pe *PINError
		if tc.pin >= 0 && (!errors.As(got, &pe) || pe.Retries != tc.pin) {
			t.Errorf("mapError(%v) = %v, want %d retries", tc.in, got, tc.pin)
		}
		if msg := got.Error(); msg != strings.ToLower(msg[:1])+msg[1:] || strings.HasSuffix(msg, ".") {
			t.Errorf("message %q: want lowercase, no trailing period", msg)
		}
	}
	if got := mapError("", nil); got != nil {
		t.Errorf("mapError(nil) = %v", got)
	}
	other := errors.New("something else")
	if got := mapError("", other); got != other {
		t.Errorf("mapError(unknown) = %v, want it unchanged", got)
	}
	pe := &PINError{Retries: 1, PUK: true}
	if !strings.Contains(pe.Error(), "wrong PUK: 1 try left") {
		t.Errorf("PUK error %q", pe)
	}
}

// TestOpenUnknownReader: pcscd's SCARD_E_UNKNOWN_READER is a card that is
// not there.
func TestOpenUnknownReader(t *testing.T) {
	realtest.PCSCD(t)
	if _, err := Open("custos: no such reader"); !errors.Is(err, ErrCardRemoved) {
		t.Errorf("Open(no such reader) = %v, want ErrCardRemoved", err)
	}
}
