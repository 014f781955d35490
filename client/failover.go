package client

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// Failover is a connection over several addresses of one job, edges
// (`tally edge`) or the coordinator itself, all speaking the coordinator's
// API (`tally client --join A,B`). Calls go to one address at a time; a
// call that fails Unavailable (the address died or cannot be reached)
// moves the next calls to the next address, and the client's own retry
// then carries on there. An edge holds nothing a client needs (no key,
// no state beyond the round in flight), so the cost of a dead edge is at
// most the upload of the round in flight.
//
// The earlier addresses are preferred: on a later one, a call made
// DefaultProbeEvery or more after the last move or probe starts a probe
// (at most one at a time, in the background: no call waits for it) that
// asks each earlier address in turn for its health, and the next calls go
// back to the first that answers SERVING. A client that started before its edge
// was ready thus joins the edge once it is, rather than staying on the
// coordinator all job long.
type Failover struct {
	conns []grpc.ClientConnInterface
	names []string
	cur   atomic.Int32
	log   *slog.Logger

	probeEvery time.Duration
	// lastProbe is when (Unix ns) calls last moved or a probe started;
	// probing is set while a probe runs.
	lastProbe atomic.Int64
	probing   atomic.Bool
}

// DefaultProbeEvery is how often a Failover on a later address asks the
// earlier ones whether they answer again; ProbeTimeout bounds the wait
// for one address's answer.
const (
	DefaultProbeEvery = 5 * time.Second
	ProbeTimeout      = 3 * time.Second
)

// NewFailover returns a connection over conns, named by names in logs,
// starting with the first.
func NewFailover(conns []grpc.ClientConnInterface, names []string, log *slog.Logger) *Failover {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Failover{conns: conns, names: names, log: log, probeEvery: DefaultProbeEvery}
}

// Current is the index of the address calls go to now.
func (f *Failover) Current() int { return int(f.cur.Load()) }

// failed moves on from address i after err, if err says i is gone and no
// other call moved on already.
func (f *Failover) failed(i int32, err error) {
	if len(f.conns) < 2 || status.Code(err) != codes.Unavailable {
		return
	}
	next := (i + 1) % int32(len(f.conns))
	if f.cur.CompareAndSwap(i, next) {
		f.lastProbe.Store(time.Now().UnixNano())
		f.log.Warn("address unavailable, failing over", "from", f.names[i], "to", f.names[next], "err", err)
	}
}

// current is the address the next call goes to, after starting a probe of
// the earlier ones if one is due.
func (f *Failover) current() int32 {
	i := f.cur.Load()
	if i > 0 && time.Since(time.Unix(0, f.lastProbe.Load())) >= f.probeEvery && f.probing.CompareAndSwap(false, true) {
		f.lastProbe.Store(time.Now().UnixNano())
		go func() {
			defer f.probing.Store(false)
			f.probe(i)
		}()
	}
	return i
}

// probe asks the addresses before i, in order, for their health, and
// moves the calls to the first that answers SERVING (if the calls are
// still on i). An edge answers for the path through it, SERVING only while
// it reaches a coordinator that says SERVING (edge/health.go); an edge of
// an older tally answers Unimplemented, which counts as an answer, as it
// did. NOT_SERVING, Unavailable or a timeout do not.
func (f *Failover) probe(i int32) {
	for j := range i {
		if r, ok := f.conns[j].(interface{ ResetConnectBackoff() }); ok {
			// Dial now, not when the address's reconnect back-off ends.
			r.ResetConnectBackoff()
		}
		ctx, cancel := context.WithTimeout(context.Background(), ProbeTimeout)
		resp := &healthpb.HealthCheckResponse{}
		err := f.conns[j].Invoke(ctx, healthpb.Health_Check_FullMethodName, &healthpb.HealthCheckRequest{}, resp)
		cancel()
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			continue
		case codes.OK:
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				f.log.Debug("an earlier address answers but is not serving", "address", f.names[j], "status", resp.GetStatus())
				continue
			}
		}
		if f.cur.CompareAndSwap(i, j) {
			f.log.Info("an earlier address answers again, moving back", "from", f.names[i], "to", f.names[j])
		}
		return
	}
}

func (f *Failover) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	i := f.current()
	err := f.conns[i].Invoke(ctx, method, args, reply, opts...)
	if err != nil {
		f.failed(i, err)
	}
	return err
}

func (f *Failover) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	i := f.current()
	cs, err := f.conns[i].NewStream(ctx, desc, method, opts...)
	if err != nil {
		f.failed(i, err)
		return nil, err
	}
	return &failoverStream{ClientStream: cs, f: f, i: i}, nil
}

// ResetConnectBackoff resets every address's (client.go calls it after a
// long outage).
func (f *Failover) ResetConnectBackoff() {
	for _, c := range f.conns {
		if r, ok := c.(interface{ ResetConnectBackoff() }); ok {
			r.ResetConnectBackoff()
		}
	}
}

type failoverStream struct {
	grpc.ClientStream
	f *Failover
	i int32
}

func (s *failoverStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.f.failed(s.i, err)
	}
	return err
}

func (s *failoverStream) SendMsg(m any) error {
	err := s.ClientStream.SendMsg(m)
	if err != nil {
		s.f.failed(s.i, err)
	}
	return err
}
