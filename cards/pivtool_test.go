package cards

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os/exec"
	"strings"
	"testing"
	"time"

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
	if _, err := c.WriteShare(0x82, testPIN, scs[0].Sealed, scs[0].Payload); err != nil {
		t.Fatal(err)
	}
	want, err := c.readCertificate(0x82)
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
	sc, err := slotCertOf(got)
	if err != nil || !carries(sc, scs[0]) {
		t.Errorf("the certificate yubico-piv-tool read does not carry the share: %+v, %v", sc, err)
	}
	pivTool(t, in.Reader(), "-a", "verify-pin", "-P", string(testPIN))
}
