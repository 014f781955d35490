package coordinator

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/dataset"
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
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i, e := range job.Clients.Enrolment {
		c, err := client.New(client.Config{Conn: conn, Token: e.Token, Data: shards[i], PollWait: pollWait, TestOnlyWeakParameters: true})
		if err != nil {
			t.Fatal(err)
		}
		cctx := ctx
		if clientCtx != nil {
			cctx = clientCtx(i, ctx)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(cctx); err != nil && cctx.Err() == nil {
				t.Errorf("client %s: %v", e.ID, err)
			}
		}()
	}
	out, err := srv.Run(ctx, lis)
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return out
}
