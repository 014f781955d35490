package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/edge"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/auth"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// downloadStream is a Download stream of an authenticated caller that
// discards what it is sent.
type downloadStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s downloadStream) Context() context.Context             { return s.ctx }
func (s downloadStream) Send(*tallyv1.DownloadResponse) error { return nil }

// errorInfo is the tally.v1 ErrorInfo of a status error, read from its
// details as a client that knows nothing of package auth would: the
// reason and metadata, or "" and nil when err carries none.
func errorInfo(err error) (string, map[string]string) {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == "tally.v1" {
			return info.GetReason(), info.GetMetadata()
		}
	}
	return "", nil
}

// A download refused because the task is not open for the caller and one
// refused because the open task has no such object keep the code older
// clients read (FailedPrecondition) and name different reasons:
// TASK_CLOSED, with the task and, when the coordinator knows it, how the
// task ended for the caller (answered, completed, timed out), and
// NO_OBJECT. Before, both were FailedPrecondition alone, and a member
// could not tell a closed task from a missing submission.
func TestDownloadReasons(t *testing.T) {
	srv, fed, ctx, step := plainStepServer(t, "reasons", 5)
	d := srv.driver
	submit := func(c string, task *engine.Task) {
		t.Helper()
		for _, a := range step(engine.EvSubmit{Client: c, TaskID: task.ID, Samples: 10, Update: make([]float64, len(task.Params))}) {
			if r, ok := a.(engine.ActReply); ok && r.Err != nil {
				t.Fatalf("%s's update: %v", c, r.Err)
			}
		}
	}
	waitTask := func(round int) *engine.Task {
		t.Helper()
		for {
			if ctx.Err() != nil {
				t.Fatalf("no round-%d task published: %+v", round, d.Status())
			}
			for i := range 3 {
				step(engine.EvPoll{Client: fmt.Sprintf("c%d", i)})
			}
			if task, _, _ := d.pending("c2"); task != nil && task.Round == round {
				return task
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitRounds := func(n int) {
		t.Helper()
		for len(d.Status().History) < n {
			if ctx.Err() != nil {
				t.Fatalf("round %d did not close", n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	download := func(client, task, name string) error {
		return srv.service.Download(&tallyv1.DownloadRequest{TaskId: task, Name: name}, downloadStream{ctx: context.WithValue(ctx, callerKey{}, client)})
	}
	want := func(what string, err error, reason string, meta map[string]string) {
		t.Helper()
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("%s: code %v (%v), want FailedPrecondition", what, status.Code(err), err)
		}
		got, md := errorInfo(err)
		if got != reason {
			t.Errorf("%s: reason %q (%v), want %q", what, got, err, reason)
			return
		}
		for k, v := range meta {
			if md[k] != v {
				t.Errorf("%s: metadata %q = %q, want %q (all: %v)", what, k, md[k], v, md)
			}
		}
		if _, ok := meta["ended"]; !ok && md["ended"] != "" {
			t.Errorf("%s: says the task ended %q, which it cannot know", what, md["ended"])
		}
		t.Logf("%s: %v %v", what, err, md)
	}

	for i := range 3 {
		step(engine.EvJoin{Client: fmt.Sprintf("c%d", i), Samples: int64(fed.Clients[i].Len())})
	}
	r1 := waitTask(1)
	want("open task, no such object", download("c2", r1.ID, "no-such-object"), "NO_OBJECT", nil)
	want("a task never published", download("c2", "reasons/train/r9/a1", "public-key"), "TASK_CLOSED", map[string]string{"task": "reasons/train/r9/a1"})
	submit("c0", r1)
	want("a task the caller answered", download("c0", r1.ID, "public-key"), "TASK_CLOSED", map[string]string{"task": r1.ID, "ended": "answered"})
	submit("c1", r1)
	submit("c2", r1)
	waitRounds(1)
	want("a completed task", download("c2", r1.ID, "public-key"), "TASK_CLOSED", map[string]string{"task": r1.ID, "ended": "completed"})
	// How a task ended is told only to the clients it selected.
	want("a completed task, asked by a client it did not select", download("c9", r1.ID, "public-key"), "TASK_CLOSED", map[string]string{"task": r1.ID})

	r2 := waitTask(2)
	submit("c0", r2)
	submit("c1", r2)
	waitRounds(2)
	want("a task closed at its deadline", download("c2", r2.ID, "public-key"), "TASK_CLOSED", map[string]string{"task": r2.ID, "ended": "timed_out"})
}

// An edge relays a refusal's reason and metadata as the coordinator sent
// them: a client behind an edge tells a closed task from a missing object
// as one that dials the coordinator does.
func TestDownloadReasonsThroughEdge(t *testing.T) {
	job := authJob(t)
	cfg := job.JobConfig
	cfg.Clients.WaitFor = 2
	job, err := engine.NewJob(cfg, job.Dir)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveAuth(t, job, "", nil)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, gs, lis := newEdgeServer(t, edge.Config{Upstream: dialPlain(t, addr), ID: "edge-0", Key: key, Job: job.ID})
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn := dialPlain(t, lis.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := newTestClient(t, conn, job.ID), newTestClient(t, conn, job.ID)
	if _, err := a.enroll(ctx, "token-aaaa", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := b.enroll(ctx, "token-bbbb", 2); err != nil {
		t.Fatal(err)
	}
	var task string
	for task == "" {
		if ctx.Err() != nil {
			t.Fatal("no task handed to a")
		}
		go func() { _, _ = b.api.NextTask(ctx, &tallyv1.NextTaskRequest{WaitMs: 10}) }()
		r, err := a.api.NextTask(ctx, &tallyv1.NextTaskRequest{WaitMs: 100})
		if err != nil {
			t.Fatal(err)
		}
		task = r.GetTrain().GetTaskId()
	}
	fetch := func(id, name string) error {
		req := &tallyv1.DownloadRequest{TaskId: id, Name: name}
		s, err := a.api.Download(auth.WithFirstMessage(ctx, req), req)
		if err != nil {
			return err
		}
		for {
			if _, err := s.Recv(); err != nil {
				return err
			}
		}
	}
	for _, c := range []struct {
		what, task, reason string
	}{
		{"open task, no such object", task, "NO_OBJECT"},
		{"a task never published", "authjob/train/r9/a1", "TASK_CLOSED"},
	} {
		err := fetch(c.task, "no-such-object")
		reason, md := errorInfo(err)
		if status.Code(err) != codes.FailedPrecondition || reason != c.reason {
			t.Errorf("%s through the edge: %v, reason %q, want FailedPrecondition naming %s", c.what, err, reason, c.reason)
		}
		if c.reason == "TASK_CLOSED" && md["task"] != c.task {
			t.Errorf("%s through the edge: metadata %v, want task %q", c.what, md, c.task)
		}
		t.Logf("%s through the edge: %v %v", c.what, err, md)
	}
}
