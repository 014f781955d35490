package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/edge"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// edgeJob writes a job (tally data, with TLS) whose edges list holds
// edge-0 with a key from tally edge keygen, runs its coordinator in this
// process with coordFlags, and returns the job directory, the
// coordinator's address and edge-0's key file. The coordinator stops with
// the test.
func edgeJob(t *testing.T, coordFlags ...string) (dir, addr, keyFile string) {
	t.Helper()
	return edgeJobWith(t, "", coordFlags...)
}

// edgeJobWith is edgeJob; with edgeCert (a PEM file) set, the job's
// edges list gives edge-0 that certificate (tls_cert) and the manifest is
// signed again, by the owner key tally data wrote, pinning it.
func edgeJobWith(t *testing.T, edgeCert string, coordFlags ...string) (dir, addr, keyFile string) {
	t.Helper()
	dir, addr = t.TempDir(), freePort(t)
	if err := runData(context.Background(), []string{"--dataset", "breast-cancer", "--clients", "3", "--rounds", "1", "--listen", addr, "--out", dir}, io.Discard, io.Discard); err != nil {
		t.Fatalf("tally data: %v", err)
	}
	keyFile = filepath.Join(dir, "edge.key")
	var pub bytes.Buffer
	if err := runEdgeKeygen([]string{"--key", keyFile}, &pub, io.Discard); err != nil {
		t.Fatal(err)
	}
	jf, err := os.OpenFile(filepath.Join(dir, "job.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(jf, "edges:\n    - id: edge-0\n      public_key: %s\n", strings.TrimSpace(pub.String()))
	if err == nil && edgeCert != "" {
		_, err = fmt.Fprintf(jf, "      tls_cert: %s\n", edgeCert)
	}
	if cerr := jf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if edgeCert != "" {
		args := []string{"--job", filepath.Join(dir, "job.yaml"), "--owner-key", filepath.Join(dir, "owner.key")}
		for i := range 3 {
			args = append(args, "--participant-key", fmt.Sprintf("client-%d=%s", i, filepath.Join(dir, fmt.Sprintf("client-%d.csv.key", i))))
		}
		if err := manifestCreate(args, io.Discard, io.Discard); err != nil {
			t.Fatalf("tally manifest create: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var coordErr lockedBuffer
	go func() {
		defer close(done)
		_ = runCoordinator(ctx, append([]string{"--config", filepath.Join(dir, "job.yaml"), "--metrics-addr", ""}, coordFlags...), io.Discard, &coordErr)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("coordinator stderr:\n%s", coordErr.String())
		}
	})
	return dir, addr, keyFile
}

// runEdgeFor runs tally edge with args for at most d: its error, or
// errStillRunning if it was still running then (and was stopped).
func runEdgeFor(d time.Duration, args []string, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runEdge(ctx, args, io.Discard, stderr) }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		cancel()
		<-done
		return errStillRunning
	}
}

var errStillRunning = errors.New("still running")

// An edge whose id the job does not list, or whose key is not the one the
// job lists for its id, does not start: tally edge fails with the
// coordinator's reason, naming the edge and the coordinator, and logs it
// at ERROR. It used to run all job long relaying every upload, its
// EdgeTask calls refused, without a word in its log.
func TestEdgeNotListedFailsAtStart(t *testing.T) {
	dir, addr, keyFile := edgeJob(t)
	otherKey := filepath.Join(dir, "other.key")
	if err := runEdgeKeygen([]string{"--key", otherKey}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	tlsArgs := []string{"--coordinator", addr, "--tls-ca", filepath.Join(dir, "tls", "ca.pem"),
		"--tls-cert", filepath.Join(dir, "tls", "coordinator.pem"), "--tls-key", filepath.Join(dir, "tls", "coordinator.key")}
	for name, c := range map[string]struct{ id, key string }{
		"unlisted id":            {"edge-9", keyFile},
		"listed id, another key": {"edge-0", otherKey},
	} {
		var stderr lockedBuffer
		args := append([]string{"--id", c.id, "--key", c.key, "--listen", freePort(t)}, tlsArgs...)
		err := runEdgeFor(30*time.Second, args, &stderr)
		if !errors.Is(err, edge.ErrNotListed) {
			t.Errorf("%s: tally edge = %v, want ErrNotListed at start\nstderr:\n%s", name, err, stderr.String())
			continue
		}
		for _, want := range []string{c.id, addr, "not an edge of this job"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not name %q", name, err, want)
			}
		}
		if log := stderr.String(); !strings.Contains(log, `"level":"ERROR"`) || !strings.Contains(log, `"edge":"`+c.id+`"`) || !strings.Contains(log, `"coordinator":"`+addr+`"`) {
			t.Errorf("%s: no ERROR naming the edge in its log:\n%s", name, log)
		}
	}
	// The listed edge, with its key, starts and serves.
	var stderr lockedBuffer
	args := append([]string{"--id", "edge-0", "--key", keyFile, "--listen", freePort(t)}, tlsArgs...)
	if err := runEdgeFor(5*time.Second, args, &stderr); !errors.Is(err, errStillRunning) {
		t.Errorf("the listed edge: tally edge = %v, want it serving\nstderr:\n%s", err, stderr.String())
	}
}

// A coordinator with mutual TLS (--client-ca) refuses an edge that shows
// no client certificate, as tally edge dialled before it had
// --tls-client-cert: the chart's all-on values (tls.clientCASecret and
// edge.enabled) rendered such an edge. With a certificate of the clients'
// CA the edge starts, and it holds its own clients to that CA (--client-ca).
func TestEdgeMutualTLS(t *testing.T) {
	pki := t.TempDir()
	clientCA, clientCAFile, _ := issue(t, pki, "client-ca", nil, nil, 0)
	_, edgeCert, edgeKey := issue(t, pki, "edge", clientCA.cert, clientCA.key, x509.ExtKeyUsageClientAuth)
	dir, addr, keyFile := edgeJob(t, "--client-ca", clientCAFile)
	ca := filepath.Join(dir, "tls", "ca.pem")

	// What tally edge dialled with: the coordinator's CA, no certificate.
	dial, err := tlsFiles{ca: ca}.dialOption()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, dial)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		// Until the coordinator listens, a dial fails as refused; then
		// the handshake fails for want of a certificate.
		_, last = tallyv1.NewCoordinatorServiceClient(conn).Schema(ctx, &tallyv1.SchemaRequest{})
		if last == nil || strings.Contains(last.Error(), "certificate") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if last == nil || status.Code(last) != codes.Unavailable {
		t.Fatalf("an edge with no client certificate: Schema = %v, want refused (Unavailable) by the mutual-TLS coordinator", last)
	}
	t.Logf("without a client certificate: %v", last)

	edgeAddr := freePort(t)
	args := []string{"--coordinator", addr, "--id", "edge-0", "--key", keyFile, "--listen", edgeAddr, "--tls-ca", ca,
		"--tls-cert", filepath.Join(dir, "tls", "coordinator.pem"), "--tls-key", filepath.Join(dir, "tls", "coordinator.key"),
		"--tls-client-cert", edgeCert, "--tls-client-key", edgeKey, "--client-ca", clientCAFile}
	var stderr lockedBuffer
	ectx, ecancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runEdge(ectx, args, io.Discard, &stderr) }()
	defer func() {
		ecancel()
		if err := <-done; err != nil {
			t.Errorf("tally edge with a client certificate: %v\nstderr:\n%s", err, stderr.String())
		}
	}()
	// The edge serves once it has the job from the coordinator; its own
	// clients must show a certificate of the clients' CA.
	pin, err := certFingerprint(filepath.Join(dir, "tls", "coordinator.pem"))
	if err != nil {
		t.Fatal(err)
	}
	_, stranger, strangerKey := issue(t, pki, "stranger", nil, nil, 0)
	for name, c := range map[string]struct {
		cert, key string
		ok        bool
	}{"no certificate": {ok: false}, "a certificate of another CA": {stranger, strangerKey, false}, "a client of the CA": {edgeCert, edgeKey, true}} {
		var certs []tls.Certificate
		if c.cert != "" {
			kp, err := tls.LoadX509KeyPair(c.cert, c.key)
			if err != nil {
				t.Fatal(err)
			}
			certs = []tls.Certificate{kp}
		}
		cc, err := grpc.NewClient(edgeAddr, grpc.WithTransportCredentials(client.PinnedTLS([][]byte{pin}, certs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = tallyv1.NewCoordinatorServiceClient(cc).Schema(cctx, &tallyv1.SchemaRequest{}, grpc.WaitForReady(c.ok))
		for !c.ok && err != nil && !strings.Contains(err.Error(), "certificate") && !strings.Contains(err.Error(), "tls") && cctx.Err() == nil {
			// The edge may not listen yet.
			time.Sleep(200 * time.Millisecond)
			_, err = tallyv1.NewCoordinatorServiceClient(cc).Schema(cctx, &tallyv1.SchemaRequest{})
		}
		ccancel()
		cc.Close()
		if (err == nil) != c.ok {
			t.Errorf("a client with %s joining the edge: Schema = %v, want ok %v", name, err, c.ok)
		}
	}
}

// A coordinator with mutual TLS that refuses the certificate an edge (or
// a client without a manifest, verifying the coordinator by a CA) shows
// refuses it at every retry: tally edge and tally client stop at once
// with client.ErrClientCertRefused, naming the coordinator's address.
// Before, the edge retried until its minute's wait for the job ran out
// ("context deadline exceeded", the cause unsaid) and, refused mid-job,
// for ever; the client retried for ever.
func TestEdgeClientCertificateRefused(t *testing.T) {
	pki := t.TempDir()
	_, clientCAFile, _ := issue(t, pki, "client-ca", nil, nil, 0)
	_, stranger, strangerKey := issue(t, pki, "stranger", nil, nil, 0)
	dir, addr, keyFile := edgeJob(t, "--client-ca", clientCAFile)
	tlsDir := filepath.Join(dir, "tls")
	serve := []string{"--tls-cert", filepath.Join(tlsDir, "coordinator.pem"), "--tls-key", filepath.Join(tlsDir, "coordinator.key")}
	shown := []string{"--tls-client-cert", stranger, "--tls-client-key", strangerKey}
	for name, verify := range map[string][]string{
		"--tls-ca":  {"--tls-ca", filepath.Join(tlsDir, "ca.pem")},
		"--tls-pin": {"--tls-pin", filepath.Join(tlsDir, "coordinator.pem")},
	} {
		var stderr lockedBuffer
		args := append([]string{"--coordinator", addr, "--id", "edge-0", "--key", keyFile, "--listen", freePort(t)}, verify...)
		args = append(append(args, serve...), shown...)
		start := time.Now()
		err := runEdgeFor(45*time.Second, args, &stderr)
		if !errors.Is(err, client.ErrClientCertRefused) {
			t.Errorf("edge with %s and a certificate of another CA: tally edge = %v after %v, want ErrClientCertRefused\nstderr:\n%s", name, err, time.Since(start).Round(time.Millisecond), stderr.String())
			continue
		}
		for _, want := range []string{"edge-0", addr} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("edge with %s: error %q does not name %q", name, err, want)
			}
		}
		t.Logf("edge with %s: stopped after %v: %v", name, time.Since(start).Round(time.Millisecond), err)
	}

	f, err := os.ReadFile(filepath.Join(dir, "tokens.txt"))
	if err != nil {
		t.Fatal(err)
	}
	first := strings.Fields(strings.SplitN(string(f), "\n", 2)[0])
	// The data file away from the job's manifest, which tally client
	// would otherwise pick up beside it and pin the coordinator by.
	csv, err := os.ReadFile(filepath.Join(dir, first[2]))
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "client-0.csv")
	if err := os.WriteFile(data, csv, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	start := time.Now()
	var stderr lockedBuffer
	err = runClient(ctx, []string{"--join", addr, "--token", first[1], "--data", data, "--insecure-no-manifest",
		"--tls-ca", filepath.Join(tlsDir, "ca.pem"), "--tls-cert", stranger, "--tls-key", strangerKey}, io.Discard, &stderr)
	if !errors.Is(err, client.ErrClientCertRefused) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("client without a manifest, --tls-ca and a certificate of another CA: tally client = %v after %v, want ErrClientCertRefused naming %s\nstderr:\n%s", err, time.Since(start).Round(time.Millisecond), addr, stderr.String())
	}
	t.Logf("client: stopped after %v: %v", time.Since(start).Round(time.Millisecond), err)
}
