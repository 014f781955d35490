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
	"github.com/tallyfl/tally/model"
)

// roundDone returns the ActRoundDone among acts, or nil.
func roundDone(acts []Action) *RoundRecord {
	for _, a := range acts {
		if d, ok := a.(ActRoundDone); ok {
			return &d.Record
		}
	}
	return nil
}

// TestDeclineClosesRound: a selected client whose trainer failed declines
// its task; the round closes as soon as the others have submitted, with
// no tick of its deadline passing, in either order of events.
func TestDeclineClosesRound(t *testing.T) {
	for _, declineFirst := range []bool{true, false} {
		name := map[bool]string{true: "decline-first", false: "decline-last"}[declineFirst]
		t.Run(name, func(t *testing.T) {
			e := NewEngine(traceJob(t, nil), FedAvg{Fraction: 1, Min: 2, Mean: meanForTest}, sumSquares{}, []float64{1, -1})
			for _, c := range []string{"c1", "c2", "c3"} {
				e.Step(EvJoin{Client: c, Samples: 10})
			}
			task := e.Task()
			if task == nil || len(task.Selected) != 3 {
				t.Fatalf("task %+v, want one with 3 selected clients", task)
			}
			decline := func() []Action {
				acts := e.Step(EvDecline{Client: "c3", TaskID: task.ID, Reason: "trainer crashed twice"})
				for _, a := range acts {
					if r, ok := a.(ActReply); ok && r.Err != nil {
						t.Fatalf("decline refused: %v", r.Err)
					}
				}
				return acts
			}
			var last []Action
			if declineFirst {
				if rec := roundDone(decline()); rec != nil {
					t.Fatal("the round closed on the decline alone")
				}
			}
			for _, c := range []string{"c1", "c2"} {
				last = e.Step(EvSubmit{Client: c, TaskID: task.ID, Samples: 10, Update: []float64{0.5, 0.5}})
			}
			if !declineFirst {
				last = decline()
			}
			rec := roundDone(last)
			if rec == nil {
				t.Fatalf("the round did not close when the last awaited client answered: %v", last)
			}
			if rec.Failed || len(rec.Contributors) != 2 || len(rec.Selected) != 3 {
				t.Errorf("round record %+v, want 2 contributors of 3 selected, not failed", rec)
			}
		})
	}
}

// TestDeclineRefusals: a decline is refused for a task that is not open,
// from a client not selected or unknown, and after the client submitted;
// a repeated decline is a duplicate.
func TestDeclineRefusals(t *testing.T) {
	e := NewEngine(traceJob(t, map[string]string{"fraction": "0.5"}), FedAvg{Fraction: 0.5, Min: 2, Mean: meanForTest}, sumSquares{}, []float64{1, -1})
	for _, c := range []string{"c1", "c2", "c3", "c4"} {
		e.Step(EvJoin{Client: c, Samples: 10})
	}
	task := e.Task()
	if task == nil {
		t.Fatal("no task")
	}
	in, out := task.Selected[0], ""
	for _, c := range []string{"c1", "c2", "c3", "c4"} {
		if !task.isSelected(c) {
			out = c
		}
	}
	e.Step(EvSubmit{Client: in, TaskID: task.ID, Samples: 10, Update: []float64{1, 2}})
	reply := func(ev EvDecline) ActReply {
		for _, a := range e.Step(ev) {
			if r, ok := a.(ActReply); ok {
				return r
			}
		}
		t.Fatalf("no reply to %+v", ev)
		return ActReply{}
	}
	for _, c := range []struct {
		name string
		ev   EvDecline
		want error
	}{
		{"wrong-task", EvDecline{Client: task.Selected[1], TaskID: "t/train/r9/a1"}, ErrNoTask},
		{"not-selected", EvDecline{Client: out, TaskID: task.ID}, ErrNotSelected},
		{"unknown-client", EvDecline{Client: "zz", TaskID: task.ID}, ErrUnknownClient},
		{"after-submit", EvDecline{Client: in, TaskID: task.ID}, ErrConflict},
	} {
		t.Run(c.name, func(t *testing.T) {
			if r := reply(c.ev); !errors.Is(r.Err, c.want) {
				t.Fatalf("err = %v, want %v", r.Err, c.want)
			}
		})
	}
	if e.Task() != task {
		t.Fatal("a refused decline changed the task")
	}
}

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
	job, fed, store := smallJob(t, "decline", "none", ModeOff, "")
	job.RoundTimeout = Duration(10 * time.Minute)
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
		cfg := client.Config{Conn: conn, Token: e.Token, Data: fed.Clients[i], PollWait: 200 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
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
