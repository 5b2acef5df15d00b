package store

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"custos.dev/custos/internal/realtest"
)

// testPKI is a CA and the PEM files of certificates it signed.
type testPKI struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestPKI(t *testing.T, dir, name string) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &testPKI{dir: dir, cert: cert, key: key}
	p.write(t, name+"-ca.pem", "CERTIFICATE", der)
	return p
}

func (p *testPKI) write(t *testing.T, file, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, file)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue writes a certificate and key for name (a server for 127.0.0.1, or
// a client) and returns their paths.
func (p *testPKI) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "PRIVATE KEY", kder)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// A one-member cluster that speaks only TLS and asks for a client
// certificate: the right files open the log and append; another CA, no
// client certificate, or a client certificate of another CA each give
// ErrUnavailable naming the TLS handshake and the three flags, and plain
// TCP says the members speak only TLS; each within the timeout, writing
// nothing.
func TestEtcdTLS(t *testing.T) {
	if onEtcd() {
		t.Skip("starts a TLS member of its own: run once, in the bbolt run")
	}
	etcd := realtest.Binary(t, "etcd")
	dir := t.TempDir()
	ca := newTestPKI(t, dir, "cluster")
	other := newTestPKI(t, dir, "stranger")
	srvCert, srvKey := ca.issue(t, "member", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.issue(t, "client", x509.ExtKeyUsageClientAuth)
	strangerCert, strangerKey := other.issue(t, "stranger-client", x509.ExtKeyUsageClientAuth)
	caPath, otherCA := filepath.Join(dir, "cluster-ca.pem"), filepath.Join(dir, "stranger-ca.pem")

	cport, pport := freePort(t), freePort(t)
	client := fmt.Sprintf("https://127.0.0.1:%d", cport)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pport)
	cmd := exec.Command(etcd, "--name", "tls", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "tls="+peer, "--initial-cluster-state", "new",
		"--cert-file", srvCert, "--key-file", srvKey, "--trusted-ca-file", caPath, "--client-cert-auth")
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})

	dsn := fmt.Sprintf("%s127.0.0.1:%d/custos-tls", EtcdScheme, cport)
	good := &Options{Timeout: 3 * time.Second, EtcdCACert: caPath, EtcdCert: cliCert, EtcdKey: cliKey}
	var l *Log
	for start := time.Now(); ; {
		if l, err = Open(dsn, good); err == nil {
			break
		}
		if time.Since(start) > 20*time.Second {
			b, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			t.Fatalf("the TLS member never answered: %v\n%s", err, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	head, err := l.Append(Event{Actor: "operator", Type: "test.step", Body: []byte(`{"i":1}`)})
	if err != nil {
		t.Fatalf("append over TLS: %v", err)
	}
	if _, err := l.Verify(head); err != nil {
		t.Fatalf("verify over TLS: %v", err)
	}
	l.Close()

	for _, c := range []struct {
		name string
		opts Options
	}{
		{"members' certificate from another CA", Options{EtcdCACert: otherCA, EtcdCert: cliCert, EtcdKey: cliKey}},
		{"no client certificate", Options{EtcdCACert: caPath}},
		{"client certificate of another CA", Options{EtcdCACert: caPath, EtcdCert: strangerCert, EtcdKey: strangerKey}},
		{"plain TCP to a TLS member", Options{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := c.opts
			o.Timeout = 2 * time.Second
			l, err := Open(dsn, &o)
			if err == nil {
				_, err = l.Append(Event{Actor: "intruder", Type: "test.step", Body: []byte(`{"i":2}`)})
				l.Close()
			}
			if err == nil {
				t.Fatal("the log opened and took an event")
			}
			t.Log(err)
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("error %v is not ErrUnavailable", err)
			}
			want := "the TLS handshake failed (check --etcd-cacert, --etcd-cert and --etcd-key)"
			if c.opts.EtcdCACert == "" {
				want = "the members speak only TLS (127.0.0.1:"
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the error does not say %q: %v", want, err)
			}
		})
	}
	// Nothing of theirs was written: the head is still the one event.
	l, err = Open(dsn, good)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if h, err := l.Head(); err != nil || h != head {
		t.Errorf("head after the refused clients: %v, %v; want %v", h, err, head)
	}
}
