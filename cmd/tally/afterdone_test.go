package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// With --after-done wait the process outlives the job, answering the
// health probe SERVING, until it is told to stop: a StatefulSet would
// otherwise restart the pod over and over.
func TestWaitAfterDoneServesHealthUntilStopped(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- waitAfterDone(ctx, addr, &out, slog.New(slog.NewTextHandler(io.Discard, nil))) }()

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	r, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after the job: %v, %v; want SERVING", r.GetStatus(), err)
	}
	select {
	case err := <-done:
		t.Fatalf("waitAfterDone returned %v before it was stopped", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("waitAfterDone after stop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("waitAfterDone did not return within 30 s of its stop")
	}
	if !strings.Contains(out.String(), "waiting for a stop signal") {
		t.Errorf("output %q does not say it waits", out.String())
	}
}

func TestAfterDoneRefusesUnknownMode(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := runCoordinator(context.Background(), []string{"--config", "job.yaml", "--after-done", "linger"}, &stdout, &stderr)
	if !errors.Is(err, errUsage) || !strings.Contains(stderr.String(), `--after-done "linger": want one of [exit wait]`) {
		t.Errorf("runCoordinator = %v, stderr %q; want errUsage naming the flag and its values", err, stderr.String())
	}
}
