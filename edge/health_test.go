package edge

import (
	"context"
	"crypto/ed25519"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// An edge's client port answers the health service for the path through
// it: a client probing its way back to an edge (client.Failover) must not
// move to one that cannot reach the coordinator. Before, the edge
// answered Unimplemented whatever its upstream, and the probe took any
// answer for a live edge.
func TestEdgeHealthFollowsTheCoordinator(t *testing.T) {
	up := health.NewServer()
	upAddr, stopUp := serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, up) })
	check := edgeHealth(t, upAddr)

	if got := check(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("coordinator serving: edge says %v, want SERVING", got)
	}
	// A coordinator whose job has ended reports NOT_SERVING.
	up.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	time.Sleep(healthCacheFor + 50*time.Millisecond)
	if got := check(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("coordinator not serving: edge says %v, want NOT_SERVING", got)
	}
	// A coordinator that is gone.
	stopUp()
	time.Sleep(healthCacheFor + 50*time.Millisecond)
	if got := check(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("coordinator unreachable: edge says %v, want NOT_SERVING", got)
	}
}

// edgeHealth starts an edge relaying to upstream and returns a function
// that asks the edge's client port for its health.
func edgeHealth(t *testing.T, upstream string) func() healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(upstream, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_, key, _ := ed25519.GenerateKey(nil)
	e, err := New(Config{Upstream: conn, ID: "edge-0", Key: key, Job: "job"})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serve(t, e.Register, e.ServerOptions()...)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	hc := healthpb.NewHealthClient(cc)
	return func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatalf("edge health check: %v", err)
		}
		return r.GetStatus()
	}
}

// serve runs a gRPC server with what register adds on a free port until
// the test ends or stop is called.
func serve(t *testing.T, register func(*grpc.Server), opts ...grpc.ServerOption) (addr string, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	register(s)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().String(), s.Stop
}
