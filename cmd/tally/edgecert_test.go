package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/manifest"
)

// edgeCertFiles issues edge-0 a TLS certificate of its own (signed by a
// CA of the edge's operator, not the coordinator's) in dir.
func edgeCertFiles(t *testing.T, dir string) (cert, key string, pin []byte) {
	t.Helper()
	ca, _, _ := issue(t, dir, "edge-ca", nil, nil, 0)
	_, cert, key = issue(t, dir, "edge-0-tls", ca.cert, ca.key, x509.ExtKeyUsageServerAuth)
	pin, err := certFingerprint(cert)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, pin
}

// TestEdgeOwnCertificate (attack b's control): an edge that shows its own
// certificate, which the manifest pins for it (edges[].tls_cert in the
// job file, tally manifest create), carries a small he job to completion:
// three clients holding the manifest join it (then the coordinator, to
// fail over to), accept its certificate and submit through it; one of
// them fetches the manifest through the edge by its fingerprint. The edge
// holds no key of the coordinator's. Before, a client accepted only the
// coordinator's certificate and refused the edge's with ErrCertPin.
func TestEdgeOwnCertificate(t *testing.T) {
	pki := t.TempDir()
	cert, key, pin := edgeCertFiles(t, pki)
	dir, addr, keyFile := edgeJobWith(t, cert)
	m, err := manifest.Load(filepath.Join(dir, "job.manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := m.EdgePin("edge-0"); !ok || !bytes.Equal(got, pin) {
		t.Fatalf("the manifest pins %x for edge-0 (%v), want its certificate's %x", got, ok, pin)
	}
	var show bytes.Buffer
	if err := runManifest(context.Background(), []string{"show", filepath.Join(dir, "job.manifest.json")}, &show, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(show.String(), "edge-0") || !strings.Contains(show.String(), hex.EncodeToString(pin)) {
		t.Errorf("tally manifest show does not print edge-0's pin %x:\n%s", pin, show.String())
	}

	edgeAddr := freePort(t)
	args := []string{"--coordinator", addr, "--id", "edge-0", "--key", keyFile, "--listen", edgeAddr,
		"--tls-pin", filepath.Join(dir, "tls", "coordinator.pem"), "--tls-cert", cert, "--tls-key", key}
	var edgeOut, edgeErr lockedBuffer
	ectx, ecancel := context.WithCancel(context.Background())
	edgeDone := make(chan error, 1)
	go func() { edgeDone <- runEdge(ectx, args, &edgeOut, &edgeErr) }()
	stopEdge := sync.OnceValue(func() error { ecancel(); return <-edgeDone })
	defer stopEdge()
	// The clients start once the edge serves (it has checked its
	// certificate against the manifest then), so that they join it
	// rather than fail over to the coordinator.
	for deadline := time.Now().Add(time.Minute); !strings.Contains(edgeOut.String(), "clients join"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("tally edge did not serve within a minute:\n%s", edgeErr.String())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tokens, err := os.Open(filepath.Join(dir, "tokens.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	var wg sync.WaitGroup
	var n int
	sc := bufio.NewScanner(tokens)
	for sc.Scan() {
		f := strings.Fields(sc.Text()) // id token file
		n++
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out, errs lockedBuffer
			args := []string{"--join", edgeAddr + "," + addr, "--token", f[1], "--data", filepath.Join(dir, f[2])}
			if f[0] == "client-0" {
				// This one holds the fingerprint alone and fetches the
				// manifest through the edge, whose certificate it then
				// checks against the manifest's pins.
				args = append(args, "--manifest-sha256", m.FingerprintHex())
			}
			err := runClient(ctx, args, &out, &errs)
			if err != nil {
				cancel() // the others would wait for it until the deadline
				t.Errorf("client %s through the edge with its own certificate: %v\nstderr:\n%s", f[0], err, errs.String())
			} else if !strings.Contains(out.String(), "job finished; 1 model updates submitted") {
				t.Errorf("client %s: %s", f[0], out.String())
			}
		}()
	}
	wg.Wait()
	if n != 3 {
		t.Fatalf("tokens.txt lists %d clients, want 3", n)
	}
	if err := stopEdge(); err != nil {
		t.Fatalf("tally edge: %v\nstderr:\n%s", err, edgeErr.String())
	}
	var c struct {
		Msg             string
		Summed, Relayed int
		Partials        int
	}
	ok := false
	for line := range strings.SplitSeq(edgeErr.String(), "\n") {
		if json.Unmarshal([]byte(line), &c) == nil && c.Msg == "edge stopped" {
			ok = true
			break
		}
	}
	if !ok {
		t.Fatalf("the edge logged no \"edge stopped\" line:\n%s", edgeErr.String())
	}
	if c.Summed+c.Relayed < 3 {
		t.Fatalf("the edge carried %d uploads and relayed %d, want the 3 clients' uploads: they did not join through it\n%s", c.Summed, c.Relayed, edgeErr.String())
	}
	t.Logf("edge: %+v", c)
}

// TestEdgeUnpinnedCertificate (attack a): an edge showing a certificate
// the manifest pins neither for the coordinator nor for any edge is
// refused by a client holding the manifest, with ErrCertPin naming the
// edge's address and the certificate it saw, before the client enrols.
// tally edge itself refuses to start with such a --tls-cert, naming the
// file and the pins.
func TestEdgeUnpinnedCertificate(t *testing.T) {
	pki := t.TempDir()
	cert, _, _ := edgeCertFiles(t, pki)
	dir, addr, keyFile := edgeJobWith(t, cert)
	// Another certificate: one whose key a thief made, say.
	_, rogue, rogueKey := issue(t, pki, "rogue", nil, nil, 0)
	roguePin, err := certFingerprint(rogue)
	if err != nil {
		t.Fatal(err)
	}

	var stderr lockedBuffer
	err = runEdgeFor(30*time.Second, []string{"--coordinator", addr, "--id", "edge-0", "--key", keyFile, "--listen", freePort(t),
		"--tls-pin", filepath.Join(dir, "tls", "coordinator.pem"), "--tls-cert", rogue, "--tls-key", rogueKey}, &stderr)
	if !errors.Is(err, client.ErrCertPin) {
		t.Fatalf("tally edge with an unpinned --tls-cert: %v, want %v at start\nstderr:\n%s", err, client.ErrCertPin, stderr.String())
	}
	for _, want := range []string{rogue, hex.EncodeToString(roguePin), "edge-0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("tally edge's refusal %q does not name %s", err, want)
		}
	}

	// A rogue edge that does not ask: a TLS server with that certificate.
	kp, err := tls.LoadX509KeyPair(rogue, rogueKey)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&kp)))
	go srv.Serve(lis)
	defer srv.Stop()
	f, err := os.ReadFile(filepath.Join(dir, "tokens.txt"))
	if err != nil {
		t.Fatal(err)
	}
	first := strings.Fields(strings.SplitN(string(f), "\n", 2)[0])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = runClient(ctx, []string{"--join", lis.Addr().String(), "--token", first[1], "--data", filepath.Join(dir, first[2])}, io.Discard, io.Discard)
	if !errors.Is(err, client.ErrCertPin) {
		t.Fatalf("a client joining an edge with an unpinned certificate: %v, want %v", err, client.ErrCertPin)
	}
	for _, want := range []string{lis.Addr().String(), hex.EncodeToString(roguePin)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the client's refusal %q does not name %s", err, want)
		}
	}
}
