package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSelfSigned writes a self-signed CA certificate and its key as PEM.
func writeSelfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	_, f, k := issue(t, dir, name, nil, nil, 0)
	return f, k
}

// issue writes a certificate for name and its key as PEM: a CA when parent
// is nil (self-signed), else a leaf signed by parent with usage, valid for
// 127.0.0.1. It returns the parsed certificate and key for signing more.
func issue(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage) (*issued, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature
	} else {
		tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{usage}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &issued{cert, key}, certFile, keyFile
}

type issued struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// TestTLSFlags: the coordinator's flags give TLS, and mutual TLS with
// --client-ca; inconsistent flags and unreadable files are refused with
// the flag named.
func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeSelfSigned(t, dir, "server")
	ca, _ := writeSelfSigned(t, dir, "clients-ca")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err := (tlsFiles{}).serverTLS(); cfg != nil || err != nil {
		t.Errorf("no flags: %v, %v; want plaintext", cfg, err)
	}
	cfg, err := (tlsFiles{cert: cert, key: key}).serverTLS()
	if err != nil || cfg == nil || cfg.ClientAuth != tls.NoClientCert {
		t.Errorf("--tls-cert/--tls-key: %+v, %v; want TLS without client certificates", cfg, err)
	}
	cfg, err = (tlsFiles{cert: cert, key: key, ca: ca}).serverTLS()
	if err != nil || cfg == nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.ClientCAs == nil {
		t.Errorf("with --client-ca: %+v, %v; want client certificates required and verified", cfg, err)
	}
	for _, tc := range []struct {
		name string
		tf   tlsFiles
		want string
	}{
		{"cert without key", tlsFiles{cert: cert}, "--tls-cert and --tls-key go together"},
		{"client CA without TLS", tlsFiles{ca: ca}, "--client-ca needs --tls-cert"},
		{"client CA not PEM", tlsFiles{cert: cert, key: key, ca: notPEM}, "--client-ca: " + notPEM + " holds no PEM certificate"},
		{"key pair mismatch", tlsFiles{cert: cert, key: ca}, "TLS key pair"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.tf.serverTLS(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want it to say %q", err, tc.want)
			}
		})
	}
	if _, err := (tlsFiles{ca: filepath.Join(dir, "missing.pem")}).dialOption(); err == nil || !strings.Contains(err.Error(), "--tls-ca") {
		t.Errorf("client with a missing --tls-ca: %v", err)
	}
	if _, err := (tlsFiles{ca: ca, cert: cert, key: key}).dialOption(); err != nil {
		t.Errorf("client with CA and certificate: %v", err)
	}
}
