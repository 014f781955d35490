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
	"slices"
	"strings"

	"google.golang.org/grpc/credentials"
)

// Errors of the transport a client verifies the coordinator with.
var (
	// ErrPlaintextCoordinator: the coordinator answered a TLS handshake in
	// plaintext. A client that did not ask for plaintext
	// (--insecure-plaintext) does not talk to it.
	ErrPlaintextCoordinator = errors.New("client: the coordinator does not speak TLS (is it running with --insecure-plaintext?); this client did not ask for plaintext")
	// ErrCertPin: the server's certificate (the coordinator's, or an
	// edge's) is none the manifest pins.
	ErrCertPin = errors.New("client: the server's TLS certificate is not one the manifest pins (the coordinator's or a listed edge's)")
	// ErrClientCertRefused: the server (mutual TLS) refused this
	// client's certificate, or that it showed none.
	ErrClientCertRefused = errors.New("client: the server refused this client's TLS certificate (mutual TLS): check --tls-cert and --tls-key against the CA the coordinator (or edge) was given with --client-ca")
)

// PinnedTLS returns transport credentials that accept exactly the server
// certificates whose SHA-256 (of their DER) is one of pins, whatever CA
// signed them or whatever names they carry: the manifest is the root of
// trust, not a CA. A client passes the manifest's TLSPins: the
// coordinator's certificate and each listed edge's, accepted at any
// address it joins, so that failing over and back keeps the same set.
// certs, if set, are presented for mutual TLS. When a handshake fails
// because the peer speaks plaintext or shows another certificate, fatal
// is called with ErrPlaintextCoordinator or ErrCertPin (wrapped, naming the
// address and the fingerprint seen), and when the peer refuses this
// client's certificate (mutual TLS), with ErrClientCertRefused: gRPC
// would otherwise retry such a connection for ever as "unavailable", and
// the operator would never learn why.
func PinnedTLS(pins [][]byte, certs []tls.Certificate, fatal func(error)) credentials.TransportCredentials {
	pins = slices.Clone(pins)
	cfg := &tls.Config{
		Certificates: certs,
		MinVersion:   tls.VersionTLS12,
		// The pins replace chain and name verification;
		// VerifyPeerCertificate does the only check there is, on every
		// handshake.
		InsecureSkipVerify: true, //nolint:gosec // verified by pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return fmt.Errorf("%w: it presented no certificate", ErrCertPin)
			}
			got := sha256.Sum256(raw[0])
			ok := 0
			for _, pin := range pins {
				ok |= subtle.ConstantTimeCompare(got[:], pin)
			}
			if ok != 1 {
				hexPins := make([]string, len(pins))
				for i, pin := range pins {
					hexPins[i] = hex.EncodeToString(pin)
				}
				return fmt.Errorf("%w: it presented %s, the manifest pins %s", ErrCertPin, hex.EncodeToString(got[:]), strings.Join(hexPins, ", "))
			}
			return nil
		},
	}
	return &pinned{TransportCredentials: credentials.NewTLS(cfg), fatal: fatal}
}

// ReportRefusals wraps TLS transport credentials creds (credentials.NewTLS,
// verifying by a CA) so that fatal hears of the failures no retry cures,
// as PinnedTLS reports them: the peer answering in plaintext
// (ErrPlaintextCoordinator) and the peer refusing this side's certificate
// (ErrClientCertRefused), each naming the address. A caller holding no
// manifest (tally client --insecure-no-manifest --tls-ca, tally edge)
// would otherwise have gRPC retry such a connection for ever as
// "unavailable". A nil fatal leaves creds as they are.
func ReportRefusals(creds credentials.TransportCredentials, fatal func(error)) credentials.TransportCredentials {
	if fatal == nil {
		return creds
	}
	return &pinned{TransportCredentials: creds, fatal: fatal}
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
			p.fatal(fmt.Errorf("%s: %w", addr, err))
		case certificateRefused(err):
			// TLS 1.2: the server's alert ends the handshake.
			p.fatal(fmt.Errorf("%w: %s: %v", ErrClientCertRefused, addr, err))
		}
	}
	if err == nil && p.fatal != nil {
		// TLS 1.3: the client's side of the handshake is over before the
		// server checks its certificate, so the server's refusal comes as
		// an alert on the first read.
		c = &refusalConn{Conn: c, addr: addr, fatal: p.fatal}
	}
	return c, info, err
}

// certificateRefused reports whether err is a TLS alert from the peer that
// refuses this side's certificate. crypto/tls reports a received alert as
// a *net.OpError "remote error" around an unexported alert type, so the
// alert is known by its text (crypto/tls's alert names).
func certificateRefused(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return false
	}
	switch op.Err.Error() {
	case "tls: certificate required", "tls: bad certificate", "tls: unknown certificate authority",
		"tls: unsupported certificate", "tls: revoked certificate", "tls: expired certificate",
		"tls: unknown certificate":
		return true
	}
	return false
}

// refusalConn reports, through fatal, a read that fails with the server's
// refusal of this client's certificate (certificateRefused).
type refusalConn struct {
	net.Conn
	addr  string
	fatal func(error)
}

func (c *refusalConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && certificateRefused(err) {
		c.fatal(fmt.Errorf("%w: %s: %v", ErrClientCertRefused, c.addr, err))
	}
	return n, err
}

func (p *pinned) Clone() credentials.TransportCredentials {
	return &pinned{TransportCredentials: p.TransportCredentials.Clone(), fatal: p.fatal}
}
