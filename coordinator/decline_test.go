package coordinator

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/model"
)

// brokenTrainer is a model whose training always fails, as an external
// trainer does that crashed twice in a row.
type brokenTrainer struct{ model.Model }

func (brokenTrainer) Train(model.Examples, model.TrainConfig, *rand.Rand) (model.TrainStats, error) {
	return model.TrainStats{}, errors.New("trainer crashed (exit status 3), the same after one restart")
}

// TestClientWithBrokenTrainerDeclines runs a job over gRPC in which one of
// three clients cannot train: it tells the coordinator so, and every round
// closes with the other two instead of waiting for its deadline (10
// minutes here, far beyond the test's own 2-minute limit).
func TestClientWithBrokenTrainerDeclines(t *testing.T) {
	job, fed, store := smallJob(t, "decline", "none", engine.ModeOff, "")
	job.RoundTimeout = engine.Duration(10 * time.Minute)
	job.Clients.Enrolment = job.Clients.Enrolment[:3]
	job.Clients.WaitFor, job.Clients.Min = 3, 2
	srv, err := NewServer(ServerConfig{Job: job, Validation: fed.Validation, Store: store})
	if err != nil {
		t.Fatal(err)
	}
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
		cfg := client.Config{Conn: conn, Token: e.Token, Data: fed.Clients[i], PollWait: 200 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, TestOnlyWeakParameters: true}
		if e.ID == "c2" {
			cfg.NewModel = func(spec model.Spec, features, classes int, seed uint64) (model.Model, error) {
				m, err := model.New(spec, features, classes, seed)
				return brokenTrainer{m}, err
			}
		}
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(ctx); err != nil && ctx.Err() == nil {
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
	done := 0
	for _, r := range out.History {
		if r.Failed {
			t.Errorf("round %d failed: %s", r.Round, r.Reason)
			continue
		}
		done++
		if len(r.Selected) != 3 || len(r.Contributors) != 2 || slices.Contains(r.Contributors, "c2") {
			t.Errorf("round %d: selected %v, contributors %v; want c2 selected and not contributing", r.Round, r.Selected, r.Contributors)
		}
	}
	if done != job.Rounds {
		t.Fatalf("%d rounds completed, want %d", done, job.Rounds)
	}
}
