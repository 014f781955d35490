package client

import (
	"context"
	"log/slog"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
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
type Failover struct {
	conns []grpc.ClientConnInterface
	names []string
	cur   atomic.Int32
	log   *slog.Logger
}

// NewFailover returns a connection over conns, named by names in logs,
// starting with the first.
func NewFailover(conns []grpc.ClientConnInterface, names []string, log *slog.Logger) *Failover {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Failover{conns: conns, names: names, log: log}
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
		f.log.Warn("address unavailable, failing over", "from", f.names[i], "to", f.names[next], "err", err)
	}
}

func (f *Failover) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	i := f.cur.Load()
	err := f.conns[i].Invoke(ctx, method, args, reply, opts...)
	if err != nil {
		f.failed(i, err)
	}
	return err
}

func (f *Failover) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	i := f.cur.Load()
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
