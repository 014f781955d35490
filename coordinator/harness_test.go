package coordinator

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/edge"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/model"
	"github.com/tallyfl/tally/valuation"
)

// smallJob is the 2-round, 5-client breast-cancer job of the matrix and
// telemetry tests, with its federation and a bbolt store in a temp dir.
func smallJob(t *testing.T, id, secure, mode, method string) (engine.Job, *dataset.Federation, *BoltStore) {
	t.Helper()
	ds, err := dataset.Embedded("breast-cancer")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	fed, err := dataset.Federate(ds, dataset.FederationSpec{Clients: n, ValFrac: 0.2, TestFrac: 0.2, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.JobConfig{
		ID: id, Seed: 9, Rounds: 2,
		Data:         engine.DataConfig{Features: ds.Examples.Features, Classes: 2},
		RoundTimeout: engine.Duration(20 * time.Second), Tick: engine.Duration(20 * time.Millisecond),
		Clients:           engine.ClientsConfig{Min: 3, WaitFor: n},
		Scaling:           engine.ScalingConfig{Mode: "federated"},
		SecureAggregation: secure,
		Committee:         engine.CommitteeConfig{Size: 3, Threshold: 2},
		HEParams:          insecureHE(),
		Valuation:         engine.ValuationConfig{Mode: mode, Method: method, Estimator: valuation.Config{Samples: 20}},
		Payment:           engine.PaymentConfig{BudgetPerRound: 10, BaselineShare: 0.1},
	}
	for i := range n {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: fmt.Sprintf("c%d", i), Token: fmt.Sprintf("token-%d-%s", i, id)})
	}
	job, err := engine.NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	store, err := OpenBoltStore(filepath.Join(t.TempDir(), "state.db"), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return job, fed, store
}

// serveFederation runs srv on loopback gRPC with one in-process client per
// enrolment entry of job, client i training on shards[i], and returns the
// job's outcome. clientCtx, if set, derives client i's context (a test that
// kills clients cancels it); such clients may end with their context's
// error, other client errors fail the test.
func serveFederation(t *testing.T, srv *Server, job engine.Job, shards []model.Examples, pollWait time.Duration, clientCtx func(i int, ctx context.Context) context.Context) Outcome {
	t.Helper()
	out, _ := serveFederationWith(t, srv, job, shards, federationOpts{pollWait: pollWait, clientCtx: clientCtx})
	return out
}

// federationOpts are serveFederationWith's options; the zero value is
// serveFederation's defaults.
type federationOpts struct {
	pollWait  time.Duration                                    // the clients' PollWait (0: client's default)
	clientCtx func(i int, ctx context.Context) context.Context // as serveFederation's
	timeout   time.Duration                                    // the whole job's; 0 is 2 minutes
	// edge, if set, puts one in-process edge aggregator (package edge)
	// with this configuration between every client and srv. The job
	// must list it first in its edges, with edgeKey's public key; its
	// Upstream, ID, Key, Job and Log are filled in here.
	edge    *edge.Config
	edgeKey ed25519.PrivateKey
}

// serveFederationWith is serveFederation with opts, and returns the edge
// the clients went through when opts.edge is set (nil otherwise).
func serveFederationWith(t *testing.T, srv *Server, job engine.Job, shards []model.Examples, opts federationOpts) (Outcome, *edge.Edge) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	conn := up // what the clients dial
	var e *edge.Edge
	if opts.edge != nil {
		// The edge relays to srv over up; the clients dial the edge.
		cfg := *opts.edge
		cfg.Upstream, cfg.ID, cfg.Key, cfg.Job, cfg.Log = up, job.Edges[0].ID, opts.edgeKey, job.ID, slog.New(slog.DiscardHandler)
		var gs *grpc.Server
		var elis net.Listener
		e, gs, elis = newEdgeServer(t, cfg)
		go func() { _ = gs.Serve(elis) }()
		defer gs.Stop()
		if conn, err = grpc.NewClient(elis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
	}
	timeout := opts.timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, en := range job.Clients.Enrolment {
		c, err := client.New(client.Config{Conn: conn, Token: en.Token, Data: shards[i], PollWait: opts.pollWait, TestOnlyWeakParameters: true})
		if err != nil {
			t.Fatal(err)
		}
		cctx := ctx
		if opts.clientCtx != nil {
			cctx = opts.clientCtx(i, ctx)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(cctx); err != nil && cctx.Err() == nil {
				t.Errorf("client %s: %v", en.ID, err)
			}
		}()
	}
	out, err := srv.Run(ctx, lis)
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return out, e
}

// newEdgeServer is an in-process edge aggregator of cfg registered on a
// gRPC server, and a loopback listener for the caller to serve it on.
func newEdgeServer(tb testing.TB, cfg edge.Config) (*edge.Edge, *grpc.Server, net.Listener) {
	tb.Helper()
	e, err := edge.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	gs := grpc.NewServer(e.ServerOptions()...)
	e.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return e, gs, lis
}
