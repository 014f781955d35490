package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// selfSigned is a loopback server certificate and the SHA-256 of its DER.
func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "coordinator"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, sum[:]
}

// TestPinnedTLS (attack g): a client that pins the coordinator's
// certificate refuses a coordinator that answers in plaintext, and one
// that shows another certificate, with a named error and before it sends
// its token; it runs the job with the pinned one (the control), and with
// the certificate the manifest pins for an edge: the pins are a set.
func TestPinnedTLS(t *testing.T) {
	cert, pin := selfSigned(t)
	edgeCert, edgePin := selfSigned(t)
	other, otherPin := selfSigned(t)
	for _, tc := range []struct {
		name string
		opts []grpc.ServerOption
		want error
	}{
		{"pinned", []grpc.ServerOption{grpc.Creds(credentials.NewServerTLSFromCert(&cert))}, nil},
		{"edge-pinned", []grpc.ServerOption{grpc.Creds(credentials.NewServerTLSFromCert(&edgeCert))}, nil},
		{"plaintext", nil, ErrPlaintextCoordinator},
		{"other-certificate", []grpc.ServerOption{grpc.Creds(credentials.NewServerTLSFromCert(&other))}, ErrCertPin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, addr, err, cause := runPinned(t, tc.opts, [][]byte{pin, edgePin}, nil)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Run over the pinned certificate: %v", err)
				}
				return
			}
			if n := f.counts().enrolls; n != 0 {
				t.Errorf("%d enrolments reached the coordinator, want 0", n)
			}
			if !errors.Is(cause, tc.want) {
				t.Fatalf("Run: %v, cause %v; want %v", err, cause, tc.want)
			}
			if tc.want == ErrCertPin {
				for _, want := range []string{addr, hex.EncodeToString(otherPin)} {
					if !strings.Contains(cause.Error(), want) {
						t.Errorf("the refusal %q does not name %s", cause, want)
					}
				}
			}
		})
	}
}

// A coordinator with mutual TLS that refuses this client's certificate
// (none, or one its CA did not sign) is a misconfiguration no retry cures:
// the client stops with ErrClientCertRefused, naming the address, instead
// of retrying "unavailable" for ever. Under TLS 1.3 the refusal arrives
// after the client's side of the handshake, on the first read. Before,
// the chart's demo clients under mutual TLS retried until they were
// killed (deploy/validate TestRehearseMTLS), logging only WARN lines.
func TestPinnedTLSClientCertificateRefused(t *testing.T) {
	cert, pin := selfSigned(t)
	ca, _ := selfSigned(t)
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	mine, _ := selfSigned(t) // signed by nobody the coordinator trusts
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
	}{{"no-certificate", nil}, {"another-CA", []tls.Certificate{mine}}} {
		t.Run(tc.name, func(t *testing.T) {
			mtls := grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12}))
			f, addr, err, cause := runPinned(t, []grpc.ServerOption{mtls}, [][]byte{pin}, tc.certs)
			if !errors.Is(cause, ErrClientCertRefused) {
				t.Fatalf("Run: %v, cause %v; want ErrClientCertRefused", err, cause)
			}
			if !strings.Contains(cause.Error(), addr) {
				t.Errorf("the refusal %q does not name %s", cause, addr)
			}
			if n := f.counts().enrolls; n != 0 {
				t.Errorf("%d enrolments reached the coordinator, want 0", n)
			}
		})
	}
}

// runPinned runs a client over PinnedTLS(pins, certs) against a fake
// coordinator served with opts, for at most a minute, and returns the
// fake, its address, Run's error and the cause PinnedTLS's fatal gave.
func runPinned(t *testing.T, opts []grpc.ServerOption, pins [][]byte, certs []tls.Certificate) (f *fakeCoord, addr string, err, cause error) {
	t.Helper()
	f = newFakeCoord(t, 1)
	srv := grpc.NewServer(opts...)
	tallyv1.RegisterCoordinatorServiceServer(srv, f)
	lis := listen(t, "")
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	ctx, stop := context.WithTimeout(ctx, time.Minute)
	defer stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(PinnedTLS(pins, certs, cancel)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := New(Config{Conn: conn, Token: f.token, Data: testData(), PollWait: 50 * time.Millisecond, MinBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(ctx)
	return f, lis.Addr().String(), err, context.Cause(ctx)
}
