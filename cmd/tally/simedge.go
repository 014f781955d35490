package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"runtime/pprof"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tallyfl/tally/edge"
	"github.com/tallyfl/tally/engine"
)

// simEdges are the edge aggregators of `tally simulate --edges N`: each a
// gRPC server on loopback relaying to the simulation's coordinator, under
// a key the job lists.
type simEdges struct {
	keys    []ed25519.PrivateKey
	edges   []*edge.Edge
	servers []*grpc.Server
	conns   []*grpc.ClientConn
	addrs   []string

	mu     sync.Mutex
	killed []bool
	wg     sync.WaitGroup
}

// newSimEdges draws n edge keys and lists them in cfg.
func newSimEdges(n int, cfg *engine.JobConfig) (*simEdges, error) {
	s := &simEdges{killed: make([]bool, n)}
	for i := range n {
		pub, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		s.keys = append(s.keys, key)
		cfg.Edges = append(cfg.Edges, engine.EdgeConfig{ID: fmt.Sprintf("edge-%d", i), PublicKey: hex.EncodeToString(pub)})
	}
	return s, nil
}

// start serves every edge, relaying to the coordinator at coord over dial;
// serverTLS, if not nil, is the certificate the edges show their clients.
func (s *simEdges) start(ctx context.Context, job engine.Job, coord string, dial grpc.DialOption, serverTLS *tls.Config, log *slog.Logger) error {
	for i, key := range s.keys {
		conn, err := grpc.NewClient(coord, dial)
		if err != nil {
			return err
		}
		s.conns = append(s.conns, conn)
		id := job.Edges[i].ID
		e, err := edge.New(edge.Config{Upstream: conn, ID: id, Key: key, Job: job.ID, Log: log.With("edge", id)})
		if err != nil {
			return err
		}
		opts := e.ServerOptions()
		if serverTLS != nil {
			opts = append(opts, grpc.Creds(credentials.NewTLS(serverTLS)))
		}
		gs := grpc.NewServer(opts...)
		e.Register(gs)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		s.edges, s.servers, s.addrs = append(s.edges, e), append(s.servers, gs), append(s.addrs, lis.Addr().String())
		s.wg.Add(1)
		go pprof.Do(ctx, pprof.Labels("tally", "edge"), func(context.Context) {
			defer s.wg.Done()
			_ = gs.Serve(lis)
		})
	}
	return nil
}

// order is the addresses client i is given, its own edge first, then the
// other edges, then the coordinator.
func (s *simEdges) order(i int, coord string) []string {
	var out []string
	for k := range s.addrs {
		out = append(out, s.addrs[(i+k)%len(s.addrs)])
	}
	return append(out, coord)
}

// kill stops edge i at once, its clients' calls in flight cut.
func (s *simEdges) kill(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < 0 || i >= len(s.servers) || s.killed[i] {
		return
	}
	s.killed[i] = true
	s.servers[i].Stop()
}

func (s *simEdges) close() {
	for i := range s.servers {
		s.kill(i)
	}
	s.wg.Wait()
	for _, c := range s.conns {
		c.Close()
	}
}

// edgeRep is one edge in the simulation's report.
type edgeRep struct {
	ID       string `json:"id"`
	Partials int64  `json:"partials"`
	Summed   int64  `json:"summed"`
	Relayed  int64  `json:"relayed"`
	Killed   bool   `json:"killed"`
}

func (s *simEdges) report(job engine.Job) []edgeRep {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []edgeRep
	for i, e := range s.edges {
		out = append(out, edgeRep{ID: job.Edges[i].ID, Partials: e.Partials.Load(), Summed: e.Summed.Load(), Relayed: e.Relayed.Load(), Killed: s.killed[i]})
	}
	return out
}
