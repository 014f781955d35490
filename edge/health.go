package edge

import (
	"context"
	"sync"
	"time"

	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// The edge's client port serves the gRPC health service for the path
// through it, not for the edge process alone: SERVING only while the
// coordinator answers its own health check SERVING through the edge's
// upstream connection. A client on a later --join address probes the
// earlier ones with this check before it moves back (client.Failover), so
// an edge that is up but cannot reach the coordinator, or whose
// coordinator's job has ended, is not chosen. The plaintext --health-addr
// port of `tally edge` (Kubernetes probes) still reports the process
// alone: a coordinator outage must not get every edge restarted.
//
// The answer is the coordinator's, asked at most once per
// healthCacheFor, with at most healthTimeout to answer, whatever the
// number of clients probing.
const (
	healthCacheFor = time.Second
	healthTimeout  = 2 * time.Second
)

// healthServer is the edge's health service; only Check is served.
type healthServer struct {
	healthpb.UnimplementedHealthServer
	e *Edge
}

// upstreamHealth is the coordinator's last health answer and when it came.
type upstreamHealth struct {
	mu     sync.Mutex
	at     time.Time
	status healthpb.HealthCheckResponse_ServingStatus
}

// Check answers for the whole server ("") and for the coordinator's
// service, the one the edge relays, with the coordinator's own answer;
// other services are unknown (NotFound, as grpc's health server says).
func (h healthServer) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	switch req.GetService() {
	case "", tallyv1.CoordinatorService_ServiceDesc.ServiceName:
	default:
		return nil, status.Errorf(codes.NotFound, "edge: unknown service %q", req.GetService())
	}
	return &healthpb.HealthCheckResponse{Status: h.e.upstreamStatus(ctx, req.GetService())}, nil
}

// upstreamStatus asks the coordinator for its health unless it answered
// within healthCacheFor; an error (unreachable, timed out) is NOT_SERVING.
func (e *Edge) upstreamStatus(ctx context.Context, service string) healthpb.HealthCheckResponse_ServingStatus {
	u := &e.health
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.at.IsZero() && time.Since(u.at) < healthCacheFor {
		return u.status
	}
	cctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	resp := &healthpb.HealthCheckResponse{}
	err := e.cfg.Upstream.Invoke(cctx, healthpb.Health_Check_FullMethodName, &healthpb.HealthCheckRequest{Service: service}, resp)
	st := resp.GetStatus()
	if err != nil {
		if ctx.Err() != nil {
			// The prober gave up first: no answer to keep.
			return healthpb.HealthCheckResponse_UNKNOWN
		}
		st = healthpb.HealthCheckResponse_NOT_SERVING
		e.cfg.Log.Debug("the coordinator does not answer its health check", "err", err)
	}
	u.at, u.status = time.Now(), st
	return st
}
