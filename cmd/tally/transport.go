package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/manifest"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// coordinatorTLS is the coordinator's transport: TLS with the flags'
// certificate or the job file's tls_cert, which a manifest must pin;
// plaintext only with --insecure-plaintext, said loudly.
func coordinatorTLS(job engine.Job, tf tlsFiles, plaintext bool, stderr io.Writer, log *slog.Logger) (*tls.Config, error) {
	if plaintext {
		if tf.cert != "" || tf.ca != "" {
			return nil, errors.New("--insecure-plaintext and --tls-cert/--client-ca: choose one")
		}
		fmt.Fprintln(stderr, "WARNING: --insecure-plaintext: serving without TLS; anyone on the path reads and alters every call")
		log.Warn("serving plaintext gRPC without TLS (--insecure-plaintext)")
		return nil, nil
	}
	if tf.cert == "" && job.JobConfig.TLSCert != "" {
		tf.cert, tf.key = jobPath(job, job.JobConfig.TLSCert), jobPath(job, job.JobConfig.TLSKey)
	}
	if tf.cert == "" {
		return nil, errors.New("no TLS certificate: the job file names no tls_cert and no --tls-cert was given; " +
			"tally data writes one (tls/coordinator.pem), or pass --insecure-plaintext to serve without TLS (every client must pass it too)")
	}
	cfg, err := tf.serverTLS()
	if err != nil {
		return nil, err
	}
	if m := job.Pinned; m != nil {
		got := sha256.Sum256(cfg.Certificates[0].Certificate[0])
		if hex.EncodeToString(got[:]) != hex.EncodeToString(m.Coordinator.TLSCertSHA256) {
			return nil, fmt.Errorf("TLS certificate %s has sha256 %x, the manifest pins %x: clients would refuse it", tf.cert, got, []byte(m.Coordinator.TLSCertSHA256))
		}
	}
	return cfg, nil
}

// clientTransport settles what a client holds the coordinator to and how
// it connects: the manifest (from its file, or fetched and checked against
// its fingerprint) and TLS pinned to the manifest's certificates (the
// coordinator's and its edges', at every address of --join);
// without a manifest only with --insecure-no-manifest, and then TLS by a
// CA (--tls-ca) or plaintext with --insecure-plaintext.
func clientTransport(ctx context.Context, addr string, tf tlsFiles, file, sha string, noManifest, plaintext bool, fatal context.CancelCauseFunc) (*manifest.Manifest, grpc.DialOption, error) {
	certs, err := tf.keyPair()
	if err != nil {
		return nil, nil, err
	}
	var m *manifest.Manifest
	switch {
	case file != "" && sha != "":
		if m, err = manifest.Load(file); err != nil {
			return nil, nil, err
		}
		if err := m.CheckFingerprint(sha); err != nil {
			return nil, nil, err
		}
	case file != "":
		if m, err = manifest.Load(file); err != nil {
			return nil, nil, err
		}
	case sha != "":
		if m, err = fetchManifest(ctx, addr, sha, certs, plaintext); err != nil {
			return nil, nil, err
		}
	case !noManifest:
		return nil, nil, errors.New("no job manifest: give --manifest FILE or --manifest-sha256 HEX (from the ML team); " +
			"--insecure-no-manifest runs on the coordinator's word")
	}
	switch {
	case plaintext:
		return m, grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	case m != nil:
		return m, grpc.WithTransportCredentials(client.PinnedTLS(m.TLSPins(), certs, fatal)), nil
	case tf.ca == "" && tf.cert == "" && tf.serverName == "":
		return nil, nil, errors.New("no way to verify the coordinator: without a manifest give --tls-ca (or --insecure-plaintext)")
	}
	opt, err := tf.dialReporting(fatal)
	return nil, opt, err
}

// fetchManifest asks the coordinator for the job's manifest (the open
// Schema call) and accepts it only with fingerprint sha; the certificate
// shown (addr may be an edge) must then be one the manifest pins. Nothing
// but the open call is sent before both checks pass.
func fetchManifest(ctx context.Context, addr, sha string, certs []tls.Certificate, plaintext bool) (*manifest.Manifest, error) {
	var mu sync.Mutex
	var seen []byte
	creds := insecure.NewCredentials()
	if !plaintext {
		creds = credentials.NewTLS(&tls.Config{
			Certificates: certs, MinVersion: tls.VersionTLS12,
			InsecureSkipVerify: true, //nolint:gosec // checked against the manifest's pin below
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) > 0 {
					sum := sha256.Sum256(raw[0])
					mu.Lock()
					seen = sum[:]
					mu.Unlock()
				}
				return nil
			},
		})
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := tallyv1.NewCoordinatorServiceClient(conn).Schema(ctx, &tallyv1.SchemaRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return nil, fmt.Errorf("fetch the manifest from %s: %w", addr, err)
	}
	if len(resp.GetManifest()) == 0 {
		return nil, fmt.Errorf("the coordinator at %s serves no manifest for job %s", addr, resp.GetJobId())
	}
	m, err := manifest.Parse(resp.GetManifest(), "the manifest served by "+addr)
	if err != nil {
		return nil, err
	}
	if err := m.CheckFingerprint(sha); err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	if !plaintext && !slices.ContainsFunc(m.TLSPins(), func(p []byte) bool { return bytes.Equal(p, seen) }) {
		return nil, fmt.Errorf("%w: %s presented %x, the manifest pins %s", client.ErrCertPin, addr, seen, pinList(m))
	}
	return m, nil
}

// pinList names the certificates m pins, for an error: the coordinator's,
// then each edge's.
func pinList(m *manifest.Manifest) string {
	s := fmt.Sprintf("%x (the coordinator)", []byte(m.Coordinator.TLSCertSHA256))
	for _, e := range m.Edges {
		s += fmt.Sprintf(", %x (edge %s)", []byte(e.TLSCertSHA256), e.ID)
	}
	return s
}

// checkKeyListed fails early, with what to do, when this client's key
// file is missing or holds a key the manifest does not list: the
// coordinator would refuse its enrolment.
func checkKeyListed(m *manifest.Manifest, keyFile string) error {
	if !fileExists(keyFile) {
		return fmt.Errorf("no key file %s: create it with tally client keygen --key %s and send the public key it prints to the ML team for the job's manifest", keyFile, keyFile)
	}
	pub, err := client.KeyFilePublicKey(keyFile)
	if err != nil {
		return err
	}
	for _, p := range m.Participants {
		if ed25519.PublicKey(p.Key).Equal(pub) {
			return nil
		}
	}
	return fmt.Errorf("%w: the key in %s (%s) is not a participant of job %s's manifest; send it to the ML team, or use the key file you sent them",
		client.ErrManifestIdentity, keyFile, hex.EncodeToString(pub), m.Job)
}
