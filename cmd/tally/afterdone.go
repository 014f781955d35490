package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// afterDoneModes are the values of the coordinator's --after-done flag.
var afterDoneModes = []string{"exit", "wait"}

// waitAfterDone is --after-done wait: the job is done (this run finished
// it, or a restarted process found it finished in its state file), and
// the process stays up until ctx ends (SIGTERM, Ctrl-C) instead of
// exiting. A Kubernetes StatefulSet restarts a pod whose process exits,
// even with status 0, and each restart would only find the job done and
// exit again, a restart loop the kubelet backs off ever longer and reports
// as failing. If healthAddr is set the plaintext health service answers
// SERVING there meanwhile (the server that ran the job closed it); the
// dashboard, if on, keeps serving until the caller closes it.
func waitAfterDone(ctx context.Context, healthAddr string, stdout io.Writer, log *slog.Logger) error {
	fmt.Fprintln(stdout, "job done; waiting for a stop signal (--after-done wait)")
	log.Info("job done; waiting for a stop signal", "after_done", "wait")
	if healthAddr == "" {
		<-ctx.Done()
		return nil
	}
	lis, err := net.Listen("tcp", healthAddr)
	if err != nil {
		return fmt.Errorf("--health-addr: listen on %s after the job: %w", healthAddr, err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(tallyv1.CoordinatorService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case <-ctx.Done():
		srv.Stop()
		<-served
		return nil
	case err := <-served:
		return fmt.Errorf("health service on %s after the job: %w", healthAddr, err)
	}
}
