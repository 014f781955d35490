package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
)

// TestClosedTaskNotPending: a task the engine closes without publishing
// another (here round 1 closes at its deadline without c2, and round 2
// cannot start: c1 left, one client is too few) is no longer pending for
// the selected client that did not answer. Its downloads and answers are
// refused as for no open task, so that a member still at work on such a
// task learns that it closed (client.taskClosed), instead of being served
// it as open until the next task is published.
func TestClosedTaskNotPending(t *testing.T) {
	srv, fed, ctx, step := plainStepServer(t, "closed", 4)
	d := srv.driver
	for i := range 3 {
		step(engine.EvJoin{Client: fmt.Sprintf("c%d", i), Samples: int64(fed.Clients[i].Len())})
	}
	var task *engine.Task
	for task == nil {
		if ctx.Err() != nil {
			t.Fatalf("no round-1 task published: %+v", d.Status())
		}
		for i := range 3 {
			step(engine.EvPoll{Client: fmt.Sprintf("c%d", i)})
		}
		task, _, _ = d.pending("c2")
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range []string{"c0", "c1"} {
		for _, a := range step(engine.EvSubmit{Client: c, TaskID: task.ID, Samples: int64(fed.Clients[0].Len()), Update: make([]float64, len(task.Params))}) {
			if r, ok := a.(engine.ActReply); ok && r.Err != nil {
				t.Fatalf("%s's update: %v", c, r.Err)
			}
		}
	}
	step(engine.EvLeft{Client: "c1"})
	for len(d.Status().History) == 0 {
		if ctx.Err() != nil {
			t.Fatal("round 1 did not close at its deadline")
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := d.Status()
	t.Logf("round 1: failed %v, contributors %v", st.History[0].Failed, st.History[0].Contributors)
	if p, _, _ := d.pending("c2"); p != nil {
		t.Fatalf("task %s is still pending for c2 after round 1 closed", p.ID)
	}
}

// plainStepServer is a plaintext job id of three clients, c0 to c2 (min
// 2, round timeout 400 ms), on a Server whose driver runs until the test
// ends and is stepped by hand (step), without the gRPC service; fed is
// the clients' data, ctx the test's.
func plainStepServer(t *testing.T, id string, seed uint64) (srv *Server, fed *dataset.Federation, ctx context.Context, step func(engine.Event) []engine.Action) {
	t.Helper()
	ds, err := dataset.Embedded("breast-cancer")
	if err != nil {
		t.Fatal(err)
	}
	fed, err = dataset.Federate(ds, dataset.FederationSpec{Clients: 3, ValFrac: 0.2, TestFrac: 0.2, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.JobConfig{
		ID: id, Seed: seed, Rounds: 3,
		Data:         engine.DataConfig{Features: ds.Examples.Features, Classes: 2},
		RoundTimeout: engine.Duration(400 * time.Millisecond), Tick: engine.Duration(10 * time.Millisecond),
		Clients: engine.ClientsConfig{Min: 2, WaitFor: 3},
		Scaling: engine.ScalingConfig{Mode: "none"}, SecureAggregation: "none",
	}
	for i := range 3 {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: fmt.Sprintf("c%d", i), Token: fmt.Sprintf("token-%d-%s", i, id)})
	}
	job, err := engine.NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	if srv, err = NewServer(ServerConfig{Job: job, Validation: fed.Validation}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	go func() { _ = srv.driver.Run(ctx) }()
	step = func(ev engine.Event) []engine.Action {
		t.Helper()
		acts, err := srv.driver.Step(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		return acts
	}
	return srv, fed, ctx, step
}
