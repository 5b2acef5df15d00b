package cards

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-piv/piv-go/v2/piv"

	"custos.dev/custos/internal/realtest"
)

// Third-party PIV clients on a card custos initialised: the custody key must
// be an ordinary PIV key to all of them.

// PKCS#11 modules on Debian (opensc-pkcs11, ykcs11).
const (
	openscModule = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
	ykcs11Module = "/usr/lib/x86_64-linux-gnu/libykcs11.so"
)

// The private pcscd's vpcd reader: ykcs11 2.2 (Debian 12) lists only
// readers whose name begins with "Yubico", so the test runs its own pcscd
// with a vpcd reader so named, on ports of its own.
const (
	privateReaderName = "Yubico YubiKey (custos vpcd)"
	privatePort       = 35990
	privateChildEnv   = "CUSTOS_PRIVATE_PCSCD"
)

// privatePCSCD runs the calling test again in a child process, in a mount
// namespace of its own (unshare -m) whose /run/pcscd is a fresh tmpfs, where
// a pcscd of its own (started and stopped by PID) drives one vpcd reader
// named privateReaderName on privatePort: the machine's pcscd and its
// readers are untouched. In the parent it waits for the child, reports its
// outcome and returns ""; in the child it returns the reader's PC/SC name.
func privatePCSCD(t *testing.T) string {
	t.Helper()
	if os.Getenv(privateChildEnv) == "1" {
		startPrivatePCSCD(t)
		return privateReaderName + " 00 00"
	}
	if os.Geteuid() != 0 {
		realtest.Missing(t, "root, for a private pcscd in a mount namespace")
	}
	unshare := realtest.Binary(t, "unshare")
	pcscdPath(t)
	lock(t) // the private ports are one machine-wide resource too
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, unshare, "--mount", "--propagation", "private", "--",
		os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	// The child runs its own pcscd: not the pool member this process uses.
	cmd.Env = append(realtest.WithoutReaders(os.Environ()), privateChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("child, with its own pcscd:\n%s", out)
	if err != nil {
		t.Fatalf("the test in a private pcscd failed: %v", err)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatal("the child did not run the test")
	}
	return ""
}

func pcscdPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/pcscd", "/sbin/pcscd"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return realtest.Binary(t, "pcscd")
}

// startPrivatePCSCD, in the child: /run/pcscd becomes a tmpfs of this mount
// namespace, and pcscd starts there with a reader.conf of its own.
func startPrivatePCSCD(t *testing.T) {
	t.Helper()
	if err := syscall.Mount("tmpfs", "/run/pcscd", "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mount a tmpfs on /run/pcscd: %v", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "reader.conf")
	body := fmt.Sprintf("FRIENDLYNAME %q\nDEVICENAME /dev/null:0x%X\nLIBPATH /usr/lib/pcsc/drivers/serial/libifdvpcd.so\nCHANNELID 0x%X\n",
		privateReaderName, privatePort, privatePort)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "pcscd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pcscdPath(t), "--foreground", "--config", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pcscd: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		fi, err := os.Stat(realtest.PCSCDSocket)
		c, derr := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", privatePort))
		if derr == nil {
			c.Close()
		}
		if err == nil && fi.Mode()&os.ModeSocket != 0 && derr == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("the private pcscd is not ready (socket: %v, vpcd port %d: %v); its log:\n%s", err, privatePort, derr, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// clientTool runs a third-party client with OpenSC's and ykcs11's own
// configuration files out of the way; env adds variables (the test PIN,
// which pkcs11-tool reads with --pin env:NAME, never from argv).
func clientTool(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	path := realtest.Binary(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(append(os.Environ(), "OPENSC_CONF=/dev/null"), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestThirdPartyClients: on a card custos initialised (nothing else done to
// it), yubico-piv-tool's status shows slot 82, OpenSC's pkcs15-tool and
// pkcs11-tool (opensc-pkcs11.so) list the key, and so does Yubico's
// PKCS#11 module ykcs11; an ECDH derived through each module with the
// custodian's PIN equals the card's own ECDH through piv-go.
func TestThirdPartyClients(t *testing.T) {
	reader := privatePCSCD(t)
	if reader == "" {
		return // the parent: the child ran the test
	}
	for _, m := range []string{openscModule, ykcs11Module} {
		if _, err := os.Stat(m); err != nil {
			realtest.Missing(t, "PKCS#11 module %s (scripts/setup installs opensc and ykcs11)", m)
		}
	}
	vc := newVCard(t, 4000501, "")
	in, err := vc.InsertInto(context.Background(), privatePort, reader)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Remove() })
	c := openCard(t, in.Reader())
	cu, err := c.Init(InitOptions{PIN: testPIN, PUK: testPUK, Roots: virtualCA(t).Pool()})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	c.Close()

	status := clientTool(t, nil, "yubico-piv-tool", "-r", reader, "-a", "status")
	if !strings.Contains(status, "Slot 82") || !strings.Contains(status, "custos custody key") {
		t.Errorf("yubico-piv-tool -a status does not show slot 82:\n%s", status)
	}

	keys := clientTool(t, nil, "pkcs15-tool", "--reader", reader, "--list-keys")
	if !strings.Contains(keys, "Retired KEY MAN 1") || !strings.Contains(keys, "0x82") {
		t.Errorf("pkcs15-tool --list-keys does not list the key in slot 82:\n%s", keys)
	}
	t.Logf("pkcs15-tool --list-keys:\n%s", keys)

	pinEnv := []string{"CUSTOS_TEST_PIN=" + string(testPIN)}
	for _, module := range []string{openscModule, ykcs11Module} {
		objs := clientTool(t, pinEnv, "pkcs11-tool", "--module", module, "--slot-index", "0", "--list-objects", "--login", "--pin", "env:CUSTOS_TEST_PIN")
		if !strings.Contains(objs, "Private Key Object; EC") || !strings.Contains(objs, "ID:         05") {
			t.Errorf("pkcs11-tool -O with %s does not list the custody key (ID 05):\n%s", filepath.Base(module), objs)
		}
		t.Logf("pkcs11-tool -O (%s):\n%s", filepath.Base(module), objs)

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
		if err := os.WriteFile(peerPath, peerDER, 0o600); err != nil {
			t.Fatal(err)
		}
		gaBefore := vc.Counts().Instructions[insGeneralAuth]
		clientTool(t, pinEnv, "pkcs11-tool", "--module", module, "--slot-index", "0", "--login", "--pin", "env:CUSTOS_TEST_PIN",
			"--derive", "-m", "ECDH1-DERIVE", "--id", "05", "--input-file", peerPath, "--output-file", secretPath)
		got, err := os.ReadFile(secretPath)
		if err != nil {
			t.Fatal(err)
		}
		if vc.Counts().Instructions[insGeneralAuth] == gaBefore {
			t.Fatalf("%s derived without asking the card", filepath.Base(module))
		}
		want := pivGoECDH(t, reader, cu, peer.PublicKey())
		if !bytes.Equal(got, want) {
			t.Errorf("ECDH through %s = %x, the card's own through piv-go = %x", filepath.Base(module), got, want)
		}
		if sw, _ := peer.ECDH(mustECDH(t, cu)); !bytes.Equal(sw, want) {
			t.Error("the card's ECDH is not the software ECDH with its public key")
		}
	}
}

func mustECDH(t *testing.T, cu *Custody) *ecdh.PublicKey {
	t.Helper()
	k, err := cu.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// pivGoECDH is the card's ECDH with peer, through piv-go.
func pivGoECDH(t *testing.T, reader string, cu *Custody, peer *ecdh.PublicKey) []byte {
	t.Helper()
	yk, err := piv.Open(reader)
	if err != nil {
		t.Fatal(err)
	}
	defer yk.Close()
	slot, _ := piv.RetiredKeyManagementSlot(uint32(cu.Slot))
	priv, err := yk.PrivateKey(slot, cu.PublicKey, piv.KeyAuth{PIN: string(testPIN), PINPolicy: piv.PINPolicyAlways})
	if err != nil {
		t.Fatal(err)
	}
	k, ok := priv.(*piv.ECDSAPrivateKey)
	if !ok {
		t.Fatalf("piv-go key %T", priv)
	}
	z, err := k.ECDH(peer)
	if err != nil {
		var ae piv.AuthErr
		if errors.As(err, &ae) {
			t.Fatalf("piv-go ECDH: wrong PIN? %v", err)
		}
		t.Fatalf("piv-go ECDH: %v", err)
	}
	return z
}
