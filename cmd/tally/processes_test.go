package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// buildTally compiles the command once per test binary run.
func buildTally(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tally")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestSeparateProcesses follows the README's recipe: `tally data` writes
// three client shards and a job file, a coordinator and three clients run
// as separate processes, and the job finishes.
func TestSeparateProcesses(t *testing.T) {
	runSeparateProcesses(t, nil, nil)
}

// TestSeparateProcessesMutualTLS is the same recipe with mutual TLS: the
// coordinator serves the certificate the manifest pins and admits only
// client certificates of the clients' CA. Its --health-addr answers a
// plaintext health check with no certificate, as the kubelet's gRPC probe
// makes one (the chart's probes).
func TestSeparateProcessesMutualTLS(t *testing.T) {
	pki := t.TempDir()
	clientCA, clientCAFile, _ := issue(t, pki, "client-ca", nil, nil, 0)
	_, clientCert, clientKey := issue(t, pki, "hospital", clientCA.cert, clientCA.key, x509.ExtKeyUsageClientAuth)
	runSeparateProcesses(t,
		[]string{"--client-ca", clientCAFile, "--health-addr", freePort(t)},
		[]string{"--tls-cert", clientCert, "--tls-key", clientKey})
}

// waitServing asks the plaintext health service at addr until it answers
// SERVING, failing the test if ctx ends first.
func waitServing(ctx context.Context, t *testing.T, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	var last error
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		r, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		last = err
	}
	t.Fatalf("plaintext health check at --health-addr %s: never SERVING (last error %v)", addr, last)
}

// runSeparateProcesses runs the recipe with extra coordinator and client
// flags.
func runSeparateProcesses(t *testing.T, coordFlags, clientFlags []string) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildTally(t)
	dir := t.TempDir()
	addr := freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	if out, err := exec.CommandContext(ctx, bin, "data", "--dataset", "breast-cancer", "--clients", "3", "--rounds", "5", "--listen", addr, "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("tally data: %v\n%s", err, out)
	}
	var coordOut, coordErr bytes.Buffer
	coord := exec.CommandContext(ctx, bin, append([]string{"coordinator", "--config", filepath.Join(dir, "job.yaml"), "--metrics-addr", ""}, coordFlags...)...)
	coord.Stdout, coord.Stderr = &coordOut, &coordErr
	if err := coord.Start(); err != nil {
		t.Fatal(err)
	}
	for i, f := range coordFlags {
		if f == "--health-addr" {
			waitServing(ctx, t, coordFlags[i+1])
		}
	}
	f, err := os.Open(filepath.Join(dir, "tokens.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var clients []*exec.Cmd
	var outs []*bytes.Buffer
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text()) // id token file
		var out bytes.Buffer
		c := exec.CommandContext(ctx, bin, append([]string{"client", "--join", addr, "--token", fields[1], "--data", filepath.Join(dir, fields[2])}, clientFlags...)...)
		c.Stdout, c.Stderr = &out, &out
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		clients, outs = append(clients, c), append(outs, &out)
	}
	if len(clients) != 3 {
		t.Fatalf("tokens.txt lists %d clients, want 3", len(clients))
	}
	for i, c := range clients {
		if err := c.Wait(); err != nil {
			t.Errorf("client %d: %v\n%s", i, err, outs[i])
		}
		if !strings.Contains(outs[i].String(), "job finished; 5 model updates submitted") {
			t.Errorf("client %d did not report 5 updates:\n%s", i, outs[i])
		}
	}
	if err := coord.Wait(); err != nil {
		t.Fatalf("coordinator: %v\n%s\n%s", err, coordOut.String(), coordErr.String())
	}
	if !strings.Contains(coordOut.String(), "done after round 5: test accuracy") {
		t.Fatalf("coordinator did not finish the job:\n%s\n%s", coordOut.String(), coordErr.String())
	}
	if coordFlags != nil && !strings.Contains(coordErr.String(), `"mutual_tls":true`) {
		t.Errorf("the coordinator did not log serving mutual TLS:\n%s", coordErr.String())
	}
	t.Log(strings.TrimSpace(coordOut.String()))
}
