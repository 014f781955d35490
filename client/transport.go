package client

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
)

// Errors of the transport a client verifies the coordinator with.
var (
	// ErrPlaintextCoordinator: the coordinator answered a TLS handshake in
	// plaintext. A client that did not ask for plaintext
	// (--insecure-plaintext) does not talk to it.
	ErrPlaintextCoordinator = errors.New("client: the coordinator does not speak TLS (is it running with --insecure-plaintext?); this client did not ask for plaintext")
	// ErrCertPin: the coordinator's certificate is not the one the
	// manifest pins.
	ErrCertPin = errors.New("client: the coordinator's TLS certificate is not the one the manifest pins")
)

// PinnedTLS returns transport credentials that accept exactly the server
// certificate whose SHA-256 (of its DER) is pin, whatever CA signed it or
// whatever names it carries: the manifest is the root of trust, not a CA.
// certs, if set, are presented for mutual TLS. When a handshake fails
// because the peer speaks plaintext or shows another certificate, fatal
// is called with ErrPlaintextCoordinator or ErrCertPin (wrapped, naming the
// address and both fingerprints): gRPC would otherwise retry such a
// connection for ever as "unavailable", and the operator would never learn
// why.
func PinnedTLS(pin []byte, certs []tls.Certificate, fatal func(error)) credentials.TransportCredentials {
	cfg := &tls.Config{
		Certificates: certs,
		MinVersion:   tls.VersionTLS12,
		// The pin replaces chain and name verification; VerifyPeerCertificate
		// does the only check there is, on every handshake.
		InsecureSkipVerify: true, //nolint:gosec // verified by pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return fmt.Errorf("%w: it presented no certificate", ErrCertPin)
			}
			got := sha256.Sum256(raw[0])
			if subtle.ConstantTimeCompare(got[:], pin) != 1 {
				return fmt.Errorf("%w: it presented %s, the manifest pins %s", ErrCertPin, hex.EncodeToString(got[:]), hex.EncodeToString(pin))
			}
			return nil
		},
	}
	return &pinned{TransportCredentials: credentials.NewTLS(cfg), fatal: fatal}
}

// pinned reports the handshake failures that no retry will cure.
type pinned struct {
	credentials.TransportCredentials
	fatal func(error)
}

func (p *pinned) ClientHandshake(ctx context.Context, addr string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, info, err := p.TransportCredentials.ClientHandshake(ctx, addr, conn)
	if err != nil && p.fatal != nil {
		var rh tls.RecordHeaderError
		switch {
		case errors.As(err, &rh):
			p.fatal(fmt.Errorf("%w: %s: %v", ErrPlaintextCoordinator, addr, err))
		case errors.Is(err, ErrCertPin):
			p.fatal(fmt.Errorf("coordinator %s: %w", addr, err))
		}
	}
	return c, info, err
}

func (p *pinned) Clone() credentials.TransportCredentials {
	return &pinned{TransportCredentials: p.TransportCredentials.Clone(), fatal: p.fatal}
}
