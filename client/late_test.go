package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/coordinator"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/edge"
	"github.com/tallyfl/tally/engine"
)

// lateMember is what TestLateMemberStops saw of its slow member.
type lateMember struct {
	mu       sync.Mutex
	client   string // the slow member
	task     string // the batch it is slow on
	made     int    // its shares of that batch, all begun after the batch completed
	requests int    // the batch's requests
}

// TestLateMemberStops: a committee of 3 with threshold 2 answers a round's
// batch of influence scalars (one per contributor, 8 of them). One member
// is slow — each of its shares waits, the first until the batch has been
// completed by the other two — and must notice that the task completed
// without it: it stops within a bounded number of shares, sends nothing
// for it, and says so at INFO (naming task and round), not as a policy
// refusal. Before the fix it made every share of the batch and sent them
// to be refused as "no open task". The same through an edge (package
// edge), which relays every call of its clients but the uploads it sums.
func TestLateMemberStops(t *testing.T) {
	t.Run("direct", func(t *testing.T) { runLateMember(t, false) })
	t.Run("edge", func(t *testing.T) { runLateMember(t, true) })
}

// runLateMember is TestLateMemberStops, the clients joined to the
// coordinator itself or (viaEdge) to an edge in front of it.
func runLateMember(t *testing.T, viaEdge bool) {
	const n, delay = 8, 500 * time.Millisecond
	ds, err := dataset.Embedded("breast-cancer")
	if err != nil {
		t.Fatal(err)
	}
	fed, err := dataset.Federate(ds, dataset.FederationSpec{Clients: n, ValFrac: 0.2, TestFrac: 0.2, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	he := aggregation.DefaultConfig()
	he.LogN, he.Insecure = 10, true
	cfg := engine.JobConfig{
		ID: "late", Seed: 11, Rounds: 2,
		Data:         engine.DataConfig{Features: ds.Examples.Features, Classes: 2},
		RoundTimeout: engine.Duration(60 * time.Second), Tick: engine.Duration(20 * time.Millisecond),
		Clients:           engine.ClientsConfig{Min: 3, WaitFor: n},
		Scaling:           engine.ScalingConfig{Mode: "federated"},
		SecureAggregation: "he",
		Committee:         engine.CommitteeConfig{Size: 3, Threshold: 2},
		HEParams:          &he,
		Valuation:         engine.ValuationConfig{Mode: engine.ModeInfluence, Method: engine.MethodInfluence},
		Payment:           engine.PaymentConfig{BudgetPerRound: 10, BaselineShare: 0.1},
	}
	for i := range n {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: fmt.Sprintf("c%d", i), Token: fmt.Sprintf("token-%d-late", i)})
	}
	var edgeKey ed25519.PrivateKey
	if viaEdge {
		pub, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		edgeKey = key
		cfg.Edges = []engine.EdgeConfig{{ID: "edge-0", PublicKey: hex.EncodeToString(pub)}}
	}
	job, err := engine.NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	// The round-1 batch has completed once its first scalar is released.
	completed := make(chan struct{})
	var once sync.Once
	srv, err := coordinator.NewServer(coordinator.ServerConfig{Job: job, Validation: fed.Validation, Linger: 2 * time.Second,
		OnRelease: func(r engine.Release) error {
			if r.Purpose == aggregation.PurposeInfluence && r.Round == 1 {
				once.Do(func() { close(completed) })
			}
			return nil
		}})
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
	var relay *edge.Edge
	if viaEdge {
		if relay, err = edge.New(edge.Config{Upstream: conn, ID: "edge-0", Key: edgeKey, Job: job.ID, Log: slog.New(slog.DiscardHandler)}); err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer(relay.ServerOptions()...)
		relay.Register(gs)
		elis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = gs.Serve(elis) }()
		defer gs.Stop()
		econn, err := grpc.NewClient(elis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer econn.Close()
		conn = econn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var slow lateMember
	// Read once every client has returned; slog's handler serialises the
	// writes.
	logs := make([]*bytes.Buffer, n)
	var wg sync.WaitGroup
	for i, e := range job.Clients.Enrolment {
		logs[i] = &bytes.Buffer{}
		c, err := New(Config{Conn: conn, Token: e.Token, Data: fed.Clients[i], PollWait: 100 * time.Millisecond, TestOnlyWeakParameters: true,
			Log: slog.New(slog.NewTextHandler(logs[i], &slog.HandlerOptions{Level: slog.LevelInfo}))})
		if err != nil {
			t.Fatal(err)
		}
		// The first member to make a share of a batch is the slow one,
		// for that batch.
		c.batchTest = &batchHooks{share: func(task string, _ int) {
			slow.mu.Lock()
			if slow.task == "" {
				slow.client, slow.task = e.ID, task
			}
			if slow.client != e.ID || slow.task != task {
				slow.mu.Unlock()
				return
			}
			first := slow.made == 0
			slow.made++
			slow.mu.Unlock()
			if first {
				select {
				case <-completed:
				case <-time.After(time.Minute):
					t.Error("the batch did not complete without the slow member")
				}
			}
			time.Sleep(delay)
		}}
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
	if out.Done == nil || out.Done.FinalRound != cfg.Rounds {
		t.Fatalf("job ended %+v", out.Done)
	}
	if relay != nil && relay.Summed.Load() == 0 {
		t.Fatal("the edge summed no upload: the clients did not go through it")
	}
	for _, r := range out.History {
		if r.Round == 1 && !r.Failed {
			for _, d := range r.Decryptions {
				if d.Purpose == aggregation.PurposeInfluence {
					slow.requests++
				}
			}
		}
	}
	if slow.task == "" {
		t.Fatal("no member made a share of a batch")
	}
	var log string
	for i, e := range job.Clients.Enrolment {
		if e.ID == slow.client {
			log = logs[i].String()
		}
	}
	t.Logf("slow member %s, batch %s of %d requests: %d shares made after the batch completed without it", slow.client, slow.task, slow.requests, slow.made)
	if slow.requests < n-1 {
		t.Fatalf("round 1 decrypted %d influence scalars, want a batch of about %d", slow.requests, n)
	}
	// The member asks every closedPoll (1 s) whether the task is still
	// open: at most that long of shares after the batch completed, and
	// the one in hand when it learns. Fewer than the batch's: it sent no
	// answer, which carries a share of every request.
	if most := int(closedPoll/delay) + 2; slow.made > most {
		t.Errorf("the slow member made %d of the batch's %d shares after the batch completed without it, want at most %d", slow.made, slow.requests, most)
	}
	// The coordinator names how the task ended (TASK_CLOSED, ended=completed):
	// the member says completed because it was told so, not by default.
	if !strings.Contains(log, "completed without this member") || !strings.Contains(log, "ended=completed") || !strings.Contains(log, slow.task) || !strings.Contains(log, "round=1") {
		t.Errorf("the slow member did not log that task %s of round 1 completed without it; its log:\n%s", slow.task, log)
	}
	if strings.Contains(log, "refused by this member's policy") || strings.Contains(log, "task failed") {
		t.Errorf("the slow member warned about a task that completed without it; its log:\n%s", log)
	}
}
