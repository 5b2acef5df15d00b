package cards

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/cards/vcard"
	"custos.dev/custos/internal/realtest"
)

// pivTool runs yubico-piv-tool against the card in reader and returns its
// output. The PINs given to it are test values.
func pivTool(t *testing.T, reader string, args ...string) string {
	t.Helper()
	defer func(start time.Time) { t.Logf("yubico-piv-tool %v: %v", args, time.Since(start)) }(time.Now())
	tool := realtest.Binary(t, "yubico-piv-tool")
	cmd := exec.Command(tool, append([]string{"-r", reader}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("yubico-piv-tool %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String() + errOut.String()
}

// TestYubicoPIVToolReadsCustodyCard: a card initialised by custos still works
// with yubico-piv-tool: status lists slot 82, read-certificate gives the
// certificate custos wrote, and the new PIN verifies.
func TestYubicoPIVToolReadsCustodyCard(t *testing.T) {
	lock(t)
	_, in, c, cu := custodyCard(t, 4000091, vcard.Port0)
	_, _, scs := ceremony(t, cu.PublicKey, cu.PublicKey)
	if err := c.WriteShare(0x82, scs[0]); err != nil {
		t.Fatal(err)
	}
	s, _ := retiredSlot(0x82)
	want, err := c.yk.Certificate(s)
	if err != nil {
		t.Fatal(err)
	}
	c.Close() // yubico-piv-tool needs the card too

	status := pivTool(t, in.Reader(), "-a", "status")
	if !strings.Contains(status, "Slot 82") || !strings.Contains(status, "custos share 1 of 2") {
		t.Errorf("yubico-piv-tool -a status does not show slot 82 with custos's certificate:\n%s", status)
	}
	pemOut := pivTool(t, in.Reader(), "-a", "read-certificate", "-s", "82")
	block, _ := pem.Decode([]byte(pemOut))
	if block == nil {
		t.Fatalf("read-certificate gave no PEM:\n%s", pemOut)
	}
	got, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Raw, want.Raw) {
		t.Error("yubico-piv-tool reads another certificate than custos wrote")
	}
	sc, err := shareCertOf(got)
	if err != nil || sc == nil || sc.Ceremony != scs[0].Ceremony {
		t.Errorf("the certificate yubico-piv-tool read does not carry the share: %+v, %v", sc, err)
	}
	pivTool(t, in.Reader(), "-a", "verify-pin", "-P", string(testPIN))
}

// TestAPDUCounts counts the APDUs custos sends to initialise a card and to
// open one share, beside yubico-piv-tool doing the equivalent steps. The
// comparison runs on firmware 5.4.3: yubico-piv-tool 2.2 speaks only 3DES
// management keys, and 5.7's factory key is AES-192.
func TestAPDUCounts(t *testing.T) {
	lock(t)
	for _, version := range []string{"5.4.3", vcard.DefaultVersion} {
		vc := newVCard(t, 4000101, version)
		in := insert(t, vc, vcard.Port0)
		n0 := vc.Counts().APDUs
		c, err := Open(in.Reader())
		if err != nil {
			t.Fatal(err)
		}
		nOpen := vc.Counts().APDUs - n0
		cu, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, Roots: virtualCA(t).Pool()})
		if err != nil {
			t.Fatal(err)
		}
		nInit := vc.Counts().APDUs - n0
		_, _, scs := ceremony(t, cu.PublicKey, cu.PublicKey)
		n0 = vc.Counts().APDUs
		if err := c.WriteShare(cu.Slot, scs[0]); err != nil {
			t.Fatal(err)
		}
		nWrite := vc.Counts().APDUs - n0
		c.Close()

		n0 = vc.Counts().APDUs
		before := vc.Counts()
		c, err = Open(in.Reader())
		if err != nil {
			t.Fatal(err)
		}
		sc, err := c.ReadShare(cu.Slot)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.OpenShare(cu.Slot, testPIN, sc.Sealed); err != nil {
			t.Fatal(err)
		}
		after := vc.Counts()
		slotCert, err := c.yk.Certificate(mustSlot(cu.Slot))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		nOpenShare := after.APDUs - n0
		if after.Instructions[0x20]-before.Instructions[0x20] != 1 || after.Instructions[0x87]-before.Instructions[0x87] != 1 {
			t.Errorf("opening a share sent %d VERIFY and %d GENERAL AUTHENTICATE, want 1 and 1",
				after.Instructions[0x20]-before.Instructions[0x20], after.Instructions[0x87]-before.Instructions[0x87])
		}
		if nOpenShare < 4 {
			t.Errorf("opening a share took %d APDUs, below the floor of 4 (SELECT, GET DATA, VERIFY, GENERAL AUTHENTICATE): the counter is wrong", nOpenShare)
		}
		t.Logf("firmware %s: custos: Open %d APDUs, Open+Init %d, WriteShare %d, Open+ReadShare+OpenShare %d (GET DATA incl. GET RESPONSE %d)",
			version, nOpen, nInit, nWrite, nOpenShare,
			after.Instructions[0xcb]-before.Instructions[0xcb]+after.Instructions[0xc0]-before.Instructions[0xc0])
		if version == "5.4.3" {
			// yubico-piv-tool on the same card: verify the PIN, read the
			// certificate, one ECDH on the card (test-decipher).
			certFile := filepath.Join(t.TempDir(), "slot.pem")
			if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: slotCert.Raw}), 0o600); err != nil {
				t.Fatal(err)
			}
			n0 := vc.Counts().APDUs
			pivTool(t, in.Reader(), "-a", "verify-pin", "-P", string(testPIN), "-a", "read-certificate", "-s", "82", "-o", "/dev/null")
			nRead := vc.Counts().APDUs - n0
			n0 = vc.Counts().APDUs
			pivTool(t, in.Reader(), "-a", "verify-pin", "-P", string(testPIN), "-a", "test-decipher", "-s", "82", "-i", certFile)
			nDecipher := vc.Counts().APDUs - n0
			t.Logf("yubico-piv-tool: verify-pin + read-certificate -s 82: %d APDUs; verify-pin + test-decipher -s 82 (one ECDH): %d APDUs", nRead, nDecipher)
		}
		if err := in.Remove(); err != nil {
			t.Fatal(err)
		}
	}

	// yubico-piv-tool on a fresh 5.4.3 card: the same steps.
	vc := newVCard(t, 4000102, "5.4.3")
	in := insert(t, vc, vcard.Port0)
	const newKey = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071"
	count := func(args ...string) uint64 {
		n0 := vc.Counts().APDUs
		pivTool(t, in.Reader(), args...)
		return vc.Counts().APDUs - n0
	}
	var total uint64
	for _, step := range [][]string{
		{"-a", "change-pin", "-P", "123456", "-N", string(testPIN)},
		{"-a", "change-puk", "-P", "12345678", "-N", string(testPUK)},
		{"-a", "set-mgm-key", "-n", newKey},
		{"-k" + newKey, "-a", "generate", "-s", "82", "-A", "ECCP256", "--pin-policy=always", "-o", "/dev/null"},
		{"-a", "attest", "-s", "82", "-o", "/dev/null"},
		{"-a", "read-certificate", "-s", "f9", "-o", "/dev/null"},
	} {
		n := count(step...)
		t.Logf("yubico-piv-tool %s: %d APDUs", step[0:2], n)
		total += n
	}
	t.Logf("yubico-piv-tool init (change-pin, change-puk, set-mgm-key, generate, attest, read f9): %d APDUs", total)
}

func mustSlot(slot uint8) piv.Slot {
	s, err := retiredSlot(slot)
	if err != nil {
		panic(err)
	}
	return s
}
