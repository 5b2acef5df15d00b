package cards

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"custos.dev/custos/cards/vcard"
)

// TestFirmwareMatrix runs init, enrollment (write, read back, open) and a
// recovery's opening on virtual cards of each firmware custos meets, through
// pcscd: 4.3.7 (a YubiKey 4: no GET SERIAL, no GET METADATA, 3DES
// management key), 5.2.7 (no GET METADATA, 3DES), 5.4.3 (GET METADATA, 3DES
// by default, AES allowed) and 5.7.1 (AES-192 by default). Each card
// refuses what its firmware lacks (vcard answers 6D00), so custos must
// manage without.
func TestFirmwareMatrix(t *testing.T) {
	lock(t)
	for i, tc := range []struct {
		version  string
		metadata bool
		mgmtAlg  byte // the management key Init leaves
	}{
		{"4.3.7", false, alg3DES},
		{"5.2.7", false, alg3DES},
		{"5.4.3", true, algAES192},
		{"5.7.1", true, algAES192},
	} {
		t.Run(tc.version, func(t *testing.T) {
			serial := uint32(4000401 + i)
			vc := newVCard(t, serial, tc.version)
			in := insert(t, vc, vcard.Port0)
			c := openCard(t, in.Reader())
			if c.Serial() != serial {
				t.Errorf("Serial() = %d, want %d", c.Serial(), serial)
			}
			if c.Version() != tc.version {
				t.Errorf("Version() = %q", c.Version())
			}
			cu, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, Roots: virtualCA(t).Pool()})
			if err != nil {
				t.Fatalf("Init: %v", err)
			}
			if cu.Serial != serial || cu.Version != tc.version || cu.Slot != 0x82 || cu.PINPolicy != "always" {
				t.Errorf("Custody = %+v", cu)
			}
			if c.mgmtAlg != tc.mgmtAlg {
				t.Errorf("management key algorithm after Init %#x, want %#x", c.mgmtAlg, tc.mgmtAlg)
			}
			c.Close()

			// Enrollment, one VERIFY; then the card alone: read and open.
			_, _, scs := ceremony(t, cu.PublicKey, cu.PublicKey)
			c = openCard(t, in.Reader())
			before := vc.Counts()
			sh, err := c.WriteShare(cu.Slot, testPIN, scs[0].Sealed, scs[0].Payload)
			if err != nil {
				t.Fatalf("WriteShare: %v", err)
			}
			if n := vc.Counts().Instructions[insVerify] - before.Instructions[insVerify]; n != 1 {
				t.Errorf("WriteShare sent %d VERIFY, want 1", n)
			}
			c.Close()
			c = openCard(t, in.Reader())
			pin, puk, err := c.Tries()
			wantPUK := 3
			if !tc.metadata {
				wantPUK = -1 // older firmware tells the PUK's tries only to a try
			}
			if err != nil || pin != 3 || puk != wantPUK {
				t.Errorf("Tries() = %d, %d, %v; want 3, %d", pin, puk, err, wantPUK)
			}
			sc, err := c.ReadShare(cu.Slot)
			if err != nil {
				t.Fatalf("ReadShare: %v", err)
			}
			if !carries(sc, scs[0]) {
				t.Errorf("ReadShare = %+v, want the payload written", sc)
			}
			before = vc.Counts()
			sh2, err := c.OpenShare(cu.Slot, testPIN, scs[0].Sealed)
			if err != nil {
				t.Fatalf("OpenShare: %v", err)
			}
			if !bytes.Equal(sh.Value, sh2.Value) {
				t.Error("the share opened at recovery differs from the one opened at enrollment")
			}
			after := vc.Counts()
			if !tc.metadata && after.Instructions[insAttest] == before.Instructions[insAttest] {
				t.Error("without GET METADATA the key was not checked by ATTEST before the PIN")
			}
			slots, err := c.Custody()
			if err != nil || len(slots) != 1 || slots[0].Slot != cu.Slot || slots[0].Fingerprint != cu.Fingerprint || !carries(slots[0].Cert, scs[0]) {
				t.Errorf("Custody() = %+v, %v", slots, err)
			}
			// A second card init picks the next slot, reading the
			// stored management key with the PIN.
			cu2, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, CurrentPIN: testPIN, CurrentPUK: testPUK, Roots: virtualCA(t).Pool()})
			if err != nil {
				t.Fatalf("second Init: %v", err)
			}
			if cu2.Slot != 0x83 {
				t.Errorf("second Init took slot %02x, want 83", cu2.Slot)
			}
			if err := c.WipeShare(cu.Slot, testPIN); err != nil {
				t.Fatalf("WipeShare: %v", err)
			}
			if _, err := c.ReadShare(cu.Slot); !errors.Is(err, ErrNoCustodySlot) {
				t.Errorf("ReadShare after the wipe = %v", err)
			}
		})
	}

	// YubiKey FIPS 4.4.2 and 4.4.4: refused before any command but GET
	// VERSION.
	for _, version := range []string{"4.4.2", "4.4.4"} {
		vc := newVCard(t, 4000491, version)
		in := insert(t, vc, vcard.Port0)
		c := openCard(t, in.Reader())
		before := vc.Counts()
		_, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, Roots: virtualCA(t).Pool()})
		if !errors.Is(err, ErrWeakFirmware) || !strings.Contains(err.Error(), "YSA-2019-02") {
			t.Fatalf("Init on %s = %v, want ErrWeakFirmware naming the advisory", version, err)
		}
		after := vc.Counts()
		if n, v := after.APDUs-before.APDUs, after.Instructions[insGetVersion]-before.Instructions[insGetVersion]; n != 1 || v != 1 {
			t.Errorf("Init on %s sent %d APDUs (%d GET VERSION), want GET VERSION alone", version, n, v)
		}
		c.Close()
		if err := in.Remove(); err != nil {
			t.Fatal(err)
		}
	}
}
