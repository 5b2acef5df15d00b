package vcard

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/internal/realtest"
)

// opensc's PKCS#11 module on Debian.
const opensclib = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

// tool runs a third-party client and returns its combined output.
func tool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	path := realtest.Binary(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), "OPENSC_CONF=/dev/null") // no user opensc.conf
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := tool(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// ykpiv runs yubico-piv-tool on the card's reader.
func ykpiv(t *testing.T, in *Inserted, args ...string) (string, error) {
	t.Helper()
	return tool(t, "yubico-piv-tool", append([]string{"-r", in.Reader()}, args...)...)
}

func mustYKPIV(t *testing.T, in *Inserted, args ...string) string {
	t.Helper()
	return mustTool(t, "yubico-piv-tool", append([]string{"-r", in.Reader()}, args...)...)
}

func readPEM(t *testing.T, s string, typ string) []byte {
	t.Helper()
	b, _ := pem.Decode([]byte(s[strings.Index(s, "-----BEGIN"):]))
	if b == nil || b.Type != typ {
		t.Fatalf("no %s PEM block in %q", typ, s)
	}
	return b.Bytes
}

// cardSignedCert makes a certificate for the key in slot 82, signed by
// the card itself through piv-go.
func cardSignedCert(t *testing.T, reader string, pub *ecdsa.PublicKey, pin string, usage x509.KeyUsage) []byte {
	t.Helper()
	yk := openYK(t, reader)
	defer yk.Close()
	priv, err := yk.PrivateKey(slot82, pub, piv.KeyAuth{PIN: pin})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(82),
		Subject:      pkix.Name{CommonName: "custos vcard slot 82"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     usage,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv.(*piv.ECDSAPrivateKey))
	if err != nil {
		t.Fatalf("certificate signed by the card: %v", err)
	}
	return der
}

func TestYubicoPIVTool(t *testing.T) {
	realtest.LockReaders(t)
	realtest.Binary(t, "yubico-piv-tool")
	// yubico-piv-tool 2.2 knows only 3DES management keys: a 5.4 card,
	// whose factory key is 3DES, is what a YubiKey user of it would have.
	c := newTestCard(t, 2000001, "5.4.3")
	in := insert(t, c, Port0)
	dir := t.TempDir()

	out := mustYKPIV(t, in, "-a", "status")
	for _, want := range []string{"Version:\t5.4.3", "Serial Number:\t2000001", "PIN tries left:\t3"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if out, err := ykpiv(t, in, "-a", "verify-pin", "-P", "999999"); err == nil {
		t.Fatalf("verify-pin with a wrong PIN succeeded:\n%s", out)
	}
	if out := mustYKPIV(t, in, "-a", "status"); !strings.Contains(out, "PIN tries left:\t2") {
		t.Errorf("status after a wrong PIN:\n%s", out)
	}
	if out := mustYKPIV(t, in, "-a", "verify-pin", "-P", "123456"); !strings.Contains(out, "Successfully verified PIN") {
		t.Errorf("verify-pin: %s", out)
	}
	mustYKPIV(t, in, "-a", "change-pin", "-P", "123456", "-N", "24682468")
	func() {
		yk := openYK(t, in.Reader())
		defer yk.Close()
		if err := yk.VerifyPIN("24682468"); err != nil {
			t.Fatalf("PIN set by yubico-piv-tool does not verify through piv-go: %v", err)
		}
	}()

	pubPath := filepath.Join(dir, "pub.pem")
	mustYKPIV(t, in, "-a", "generate", "-s", "82", "-A", "ECCP256", "-o", pubPath)
	pubPEM, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	pubAny, err := x509.ParsePKIXPublicKey(readPEM(t, string(pubPEM), "PUBLIC KEY"))
	if err != nil {
		t.Fatal(err)
	}
	pub := pubAny.(*ecdsa.PublicKey)
	if got := generatedPublic(t, c, 0x82); !got.Equal(pub) {
		t.Fatal("public key printed by generate is not the card's")
	}

	// selfsign-certificate: yubico-piv-tool 2.2 built with OpenSSL 3 fails
	// before it sends anything (Yubico/yubico-piv-tool#388). When it does,
	// check that the card was not asked, and let the card sign the
	// certificate through piv-go instead.
	certPath := filepath.Join(dir, "cert.pem")
	gaBefore := c.Counts().Instructions[insGeneralAuth]
	out, err = ykpiv(t, in, "-a", "verify-pin", "-P", "24682468", "-a", "selfsign-certificate", "-s", "82", "-S", "/CN=custos vcard/", "-i", pubPath, "-o", certPath)
	if err != nil {
		if c.Counts().Instructions[insGeneralAuth] != gaBefore {
			t.Fatalf("selfsign-certificate failed after the card signed:\n%s", out)
		}
		t.Logf("yubico-piv-tool selfsign-certificate failed without asking the card (client bug): %s", strings.TrimSpace(out))
		der := cardSignedCert(t, in.Reader(), pub, "24682468", x509.KeyUsageDigitalSignature)
		if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	mustYKPIV(t, in, "-a", "import-certificate", "-s", "82", "-i", certPath)
	out = mustYKPIV(t, in, "-a", "read-certificate", "-s", "82")
	if !bytes.Equal(readPEM(t, out, "CERTIFICATE"), readPEM(t, string(certPEM), "CERTIFICATE")) {
		t.Fatal("read-certificate differs from the imported certificate")
	}

	out = mustYKPIV(t, in, "-a", "attest", "-s", "82")
	slotCert, err := x509.ParseCertificate(readPEM(t, out, "CERTIFICATE"))
	if err != nil {
		t.Fatal(err)
	}
	yk := openYK(t, in.Reader())
	attCert, err := yk.AttestationCertificate()
	yk.Close()
	if err != nil {
		t.Fatal(err)
	}
	a, err := (&piv.Verifier{Roots: sharedCA(t).Pool()}).Verify(attCert, slotCert)
	if err != nil {
		t.Fatalf("attestation from yubico-piv-tool: %v", err)
	}
	if a.Serial != 2000001 || !pub.Equal(slotCert.PublicKey) {
		t.Errorf("attestation = %+v", a)
	}
}

// generatedPublic reads a slot's public key from the card's state.
func generatedPublic(t *testing.T, c *Card, slot byte) *ecdsa.PublicKey {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.app.st.Keys[slot]
	if k == nil {
		t.Fatalf("no key in slot %#x", slot)
	}
	return &k.priv.PublicKey
}

func TestOpenSC(t *testing.T) {
	realtest.LockReaders(t)
	realtest.Binary(t, "pkcs11-tool")
	if _, err := os.Stat(opensclib); err != nil {
		realtest.Missing(t, "opensc pkcs#11 module %s", opensclib)
	}
	c := newTestCard(t, 2000002, "5.4.3")
	in := insert(t, c, Port0)

	out := mustTool(t, "opensc-tool", "-l")
	if !strings.Contains(out, "Yes") || !strings.Contains(out, in.Reader()) {
		t.Fatalf("opensc-tool -l does not show a card in %s:\n%s", in.Reader(), out)
	}
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, in.Reader()) {
			line = l
		}
	}
	if !strings.Contains(line, "Yes") {
		t.Fatalf("opensc-tool -l: reader line %q has no card", line)
	}

	// A key in slot 82 with its certificate, and a Key History object
	// saying one retired key has its certificate on the card: OpenSC
	// reads retired slots only when the history object lists them.
	yk := openYK(t, in.Reader())
	pubAny, err := yk.GenerateKey(piv.DefaultManagementKey, slot82, piv.Key{Algorithm: piv.AlgorithmEC256, PINPolicy: piv.PINPolicyOnce, TouchPolicy: piv.TouchPolicyNever})
	if err != nil {
		t.Fatal(err)
	}
	yk.Close()
	pub := pubAny.(*ecdsa.PublicKey)
	der := cardSignedCert(t, in.Reader(), pub, piv.DefaultPIN, x509.KeyUsageKeyAgreement|x509.KeyUsageDigitalSignature)
	cert, _ := x509.ParseCertificate(der)
	yk = openYK(t, in.Reader())
	if err := yk.SetCertificate(piv.DefaultManagementKey, slot82, cert); err != nil {
		t.Fatal(err)
	}
	yk.Close()
	histPath := filepath.Join(t.TempDir(), "history.hex")
	os.WriteFile(histPath, []byte("C10101C20100FE00"), 0o600)
	mustYKPIV(t, in, "-a", "write-object", "--id", "0x5fc10c", "-f", "hex", "-i", histPath)

	out, err = tool(t, "pkcs15-tool", "--list-public-keys")
	if err != nil || !strings.Contains(out, "[Retired KEY MAN 1]") || !strings.Contains(out, "Key ref        : 130 (0x82)") {
		t.Fatalf("pkcs15-tool --list-public-keys: %v\n%s", err, out)
	}
	out = mustTool(t, "pkcs11-tool", "--module", opensclib, "--list-objects")
	if !strings.Contains(out, "EC_POINT") && !strings.Contains(out, "Public Key Object; EC") {
		t.Fatalf("pkcs11-tool --list-objects shows no EC public key:\n%s", out)
	}

	// ECDH through OpenSC's PKCS#11 module equals software ECDH.
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	peerDER, err := x509.MarshalPKIXPublicKey(peer.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	peerPath, secretPath := filepath.Join(dir, "peer.der"), filepath.Join(dir, "secret.bin")
	os.WriteFile(peerPath, peerDER, 0o600)
	gaBefore := c.Counts().Instructions[insGeneralAuth]
	mustTool(t, "pkcs11-tool", "--module", opensclib, "--login", "--pin", piv.DefaultPIN,
		"--derive", "-m", "ECDH1-DERIVE", "--id", "05", "--input-file", peerPath, "--output-file", secretPath)
	got, err := os.ReadFile(secretPath)
	if err != nil {
		t.Fatal(err)
	}
	cardPub, _ := pub.ECDH()
	want, err := peer.ECDH(cardPub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("pkcs11-tool derive %x, software ECDH %x", got, want)
	}
	if c.Counts().Instructions[insGeneralAuth] == gaBefore {
		t.Fatal("the derive did not reach the card")
	}
}
