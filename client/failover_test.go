package client

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// fakeConn answers every call with err.
type fakeConn struct {
	err   error
	calls int
}

func (f *fakeConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	f.calls++
	return f.err
}

func (f *fakeConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	f.calls++
	return nil, f.err
}

// A call that fails Unavailable moves the next ones to the next address,
// in order and round again; any other failure does not.
func TestFailoverMovesOnUnavailableOnly(t *testing.T) {
	dead := &fakeConn{err: status.Error(codes.Unavailable, "connection refused")}
	refusing := &fakeConn{err: status.Error(codes.PermissionDenied, "no")}
	live := &fakeConn{}
	f := NewFailover([]grpc.ClientConnInterface{dead, refusing, live}, []string{"a", "b", "c"}, nil)
	ctx := context.Background()
	if err := f.Invoke(ctx, "/m", nil, nil); status.Code(err) != codes.Unavailable || f.Current() != 1 {
		t.Fatalf("after Unavailable: err %v, current %d, want 1", err, f.Current())
	}
	if err := f.Invoke(ctx, "/m", nil, nil); status.Code(err) != codes.PermissionDenied || f.Current() != 1 {
		t.Fatalf("a refusal must not move on: err %v, current %d", err, f.Current())
	}
	refusing.err = status.Error(codes.Unavailable, "gone")
	if _, err := f.NewStream(ctx, &grpc.StreamDesc{}, "/m"); err == nil || f.Current() != 2 {
		t.Fatalf("stream: err %v, current %d, want 2", err, f.Current())
	}
	if err := f.Invoke(ctx, "/m", nil, nil); err != nil || live.calls != 1 {
		t.Fatalf("the live address: err %v, calls %d", err, live.calls)
	}
	live.err = status.Error(codes.Unavailable, "gone too")
	_ = f.Invoke(ctx, "/m", nil, nil)
	if f.Current() != 0 {
		t.Fatalf("after the last address: current %d, want 0 (round again)", f.Current())
	}
	if one := NewFailover([]grpc.ClientConnInterface{dead}, []string{"a"}, nil); one.Invoke(ctx, "/m", nil, nil) == nil || one.Current() != 0 {
		t.Fatal("a single address has nowhere to go")
	}
}

// A client whose first address is down when it starts moves to the next,
// and back to the first once it answers: on a cluster, clients that start
// before their edge is ready used to stay on the coordinator all job long.
func TestFailoverMovesBackWhenAnEarlierAddressAnswers(t *testing.T) {
	// The first address is one nothing listens on (any more).
	first, stop := serveHealth(t, "")
	stop()
	second, _ := serveHealth(t, "")
	f := edgeThenCoordinator(t, first, second)
	f.probeEvery = 200 * time.Millisecond
	hc := healthpb.NewHealthClient(f)
	check := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(); status.Code(err) != codes.Unavailable || f.Current() != 1 {
		t.Fatalf("first address down: err %v, current %d; want Unavailable, then 1", err, f.Current())
	}
	// While the first address stays down, calls stay on the second.
	for range 5 {
		if err := check(); err != nil {
			t.Fatalf("on the second address: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if f.Current() != 1 {
		t.Fatalf("moved to %d while the first address was down", f.Current())
	}
	serveHealth(t, first)
	deadline := time.Now().Add(10 * time.Second)
	for f.Current() != 0 && time.Now().Before(deadline) {
		if err := check(); err != nil {
			t.Fatalf("call while the first address came up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if f.Current() != 0 {
		t.Fatalf("the first address answers again, but calls still go to %d", f.Current())
	}
	if err := check(); err != nil || f.Current() != 0 {
		t.Fatalf("back on the first address: err %v, current %d", err, f.Current())
	}
}

// serveHealth serves the gRPC health service on addr ("": a free port)
// until the test ends or stop is called, and returns its address.
func serveHealth(t *testing.T, addr string) (_ string, stop func()) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().String(), s.Stop
}

// A probe moves calls back only to an address that says it is SERVING:
// an edge that cannot reach the coordinator (or a coordinator whose job
// has ended) answers NOT_SERVING, and the client stays where it is.
// Before, any answer but Unavailable or a timeout counted.
func TestFailoverStaysOffAnAddressNotServing(t *testing.T) {
	first, stop := serveHealth(t, "")
	stop()
	second, _ := serveHealth(t, "")
	f := edgeThenCoordinator(t, first, second)
	f.probeEvery = 100 * time.Millisecond
	hc := healthpb.NewHealthClient(f)
	check := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = hc.Check(ctx, &healthpb.HealthCheckRequest{})
	}
	check()
	if f.Current() != 1 {
		t.Fatalf("first address down: current %d, want 1", f.Current())
	}
	// The first address comes back answering NOT_SERVING.
	l, err := net.Listen("tcp", first)
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	var probes atomic.Int32
	s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		probes.Add(1)
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(s, hs)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(10 * time.Second)
	for probes.Load() < 3 && time.Now().Before(deadline) {
		check()
		time.Sleep(50 * time.Millisecond)
	}
	if probes.Load() < 3 {
		t.Fatalf("the first address was probed %d times in 10 s, want 3", probes.Load())
	}
	if f.Current() != 1 {
		t.Fatalf("moved back to an address answering NOT_SERVING (after %d probes)", probes.Load())
	}
	// Once it says SERVING, calls move back.
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	deadline = time.Now().Add(10 * time.Second)
	for f.Current() != 0 && time.Now().Before(deadline) {
		check()
		time.Sleep(50 * time.Millisecond)
	}
	if f.Current() != 0 {
		t.Fatal("the first address says SERVING, but calls still go to 1")
	}
}

// edgeThenCoordinator is a Failover over plaintext connections to first
// (named edge) and second (coordinator).
func edgeThenCoordinator(t *testing.T, first, second string) *Failover {
	t.Helper()
	var conns []grpc.ClientConnInterface
	for _, a := range []string{first, second} {
		cc, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		conns = append(conns, cc)
	}
	return NewFailover(conns, []string{"edge", "coordinator"}, nil)
}
