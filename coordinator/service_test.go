package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"math"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/auth"
	"github.com/tallyfl/tally/model"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

func encode(v []float64) ([]byte, []byte) {
	buf := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(buf[8*i:], math.Float64bits(x))
	}
	d := sha256.Sum256(buf)
	return buf, d[:]
}

func submitRaw(ctx context.Context, api tallyv1.CoordinatorServiceClient, h *tallyv1.SubmitHeader, data []byte) error {
	msg := &tallyv1.SubmitUpdateRequest{Header: h, Data: data}
	s, err := api.SubmitUpdate(auth.WithFirstMessage(ctx, msg))
	if err != nil {
		return err
	}
	if err := s.Send(msg); err != nil {
		return err
	}
	_, err = s.CloseAndRecv()
	return err
}

// TestServiceRejectsBadInputAndKeepsServing sends the coordinator a series
// of bad requests; each gets the right status code, and afterwards the round
// still completes with good submissions.
func TestServiceRejectsBadInputAndKeepsServing(t *testing.T) {
	cfg := engine.JobConfig{
		ID: "svc", Seed: 1, Rounds: 1,
		Data:         engine.DataConfig{Features: 2, Classes: 2},
		RoundTimeout: engine.Duration(time.Minute), Tick: engine.Duration(10 * time.Millisecond),
		Scaling: engine.ScalingConfig{Mode: "none"}, SecureAggregation: "none",
		Clients: engine.ClientsConfig{Min: 2, Enrolment: []engine.EnrolmentConfig{{ID: "a", Token: "token-aaaa"}, {ID: "b", Token: "token-bbbb"}}},
	}
	job, err := engine.NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	val := model.Examples{X: []float64{1, 0, 0, 1, 1, 1, 0, 0}, Y: []int{0, 1, 1, 0}, Features: 2}
	srv, err := NewServer(ServerConfig{Job: job, Validation: val, Linger: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan Outcome, 1)
	go func() {
		out, err := srv.Run(ctx, lis)
		if err != nil {
			t.Error(err)
		}
		done <- out
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := tallyv1.NewCoordinatorServiceClient(conn)
	code := func(err error) codes.Code { return status.Code(err) }

	if _, err := api.Enroll(ctx, &tallyv1.EnrollRequest{Token: "no-such-token", Samples: 5, Features: 2}); code(err) != codes.Unauthenticated {
		t.Errorf("unknown token: %v, want Unauthenticated", err)
	}
	if _, err := api.Enroll(ctx, &tallyv1.EnrollRequest{Token: "token-aaaa", Samples: 5, Features: 3}); code(err) != codes.InvalidArgument {
		t.Errorf("wrong feature count: %v, want InvalidArgument", err)
	}
	forger := newTestClient(t, conn, job.ID)
	forger.id = "a" // signs as a with a key that was never enrolled
	if _, err := forger.api.NextTask(ctx, &tallyv1.NextTaskRequest{}); code(err) != codes.Unauthenticated {
		t.Errorf("call signed by an unenrolled key: %v, want Unauthenticated", err)
	}
	if _, err := api.NextTask(ctx, &tallyv1.NextTaskRequest{}); code(err) != codes.Unauthenticated {
		t.Errorf("unsigned call: %v, want Unauthenticated", err)
	}
	clients := map[string]tallyv1.CoordinatorServiceClient{}
	for _, tok := range []string{"token-aaaa", "token-bbbb"} {
		c := newTestClient(t, conn, job.ID)
		if _, err := c.enroll(ctx, tok, 2); err != nil {
			t.Fatal(err)
		}
		clients[c.id] = c.api
	}
	task, err := clients["a"].NextTask(ctx, &tallyv1.NextTaskRequest{WaitMs: 5000})
	if err != nil {
		t.Fatal(err)
	}
	tr := task.GetTrain()
	if tr == nil {
		t.Fatalf("got %v, want a train task", task)
	}
	// The task says when the round closes: opened at most a moment ago,
	// it closes one round timeout after.
	if d, now := time.UnixMilli(tr.GetDeadlineUnixMs()), time.Now(); !d.After(now) || d.After(now.Add(time.Duration(job.RoundTimeout))) {
		t.Errorf("train task deadline %v (%d ms), want after now (%v) and within the round timeout %v", d, tr.GetDeadlineUnixMs(), now, time.Duration(job.RoundTimeout))
	}
	n := int(tr.GetNumParams())
	good := make([]float64, n)
	for i := range good {
		good[i] = 0.01 * float64(i+1)
	}
	header := func(taskID string, length int, digest []byte) *tallyv1.SubmitHeader {
		return &tallyv1.SubmitHeader{TaskId: taskID, Round: 1, Samples: 5, Encoding: "f64le", Length: int64(length), Digest: digest}
	}
	short, shortDigest := encode(good[:n-1])
	if err := submitRaw(ctx, clients["a"], header(tr.GetTaskId(), n-1, shortDigest), short); code(err) != codes.InvalidArgument {
		t.Errorf("update of the wrong length: %v, want InvalidArgument", err)
	}
	buf, digest := encode(good)
	if err := submitRaw(ctx, clients["a"], header(tr.GetTaskId(), n, make([]byte, 32)), buf); code(err) != codes.InvalidArgument {
		t.Errorf("digest mismatch: %v, want InvalidArgument", err)
	}
	if err := submitRaw(ctx, clients["a"], header("svc/train/r7/a1", n, digest), buf); code(err) != codes.FailedPrecondition {
		t.Errorf("wrong round: %v, want FailedPrecondition", err)
	}
	if err := submitRaw(ctx, clients["a"], header(tr.GetTaskId(), n, digest), buf[:len(buf)-8]); code(err) != codes.InvalidArgument {
		t.Errorf("truncated payload: %v, want InvalidArgument", err)
	}
	// The coordinator is still serving: the good submissions complete the round.
	for _, id := range []string{"a", "b"} {
		if err := submitRaw(ctx, clients[id], header(tr.GetTaskId(), n, digest), buf); err != nil {
			t.Fatalf("good submission from %s: %v", id, err)
		}
	}
	for _, id := range []string{"a", "b"} {
		r, err := clients[id].NextTask(ctx, &tallyv1.NextTaskRequest{WaitMs: 5000})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetDone() == nil {
			t.Fatalf("client %s got %v after the only round, want done", id, r)
		}
		if id == "a" {
			// A submission that races the job's end (a share or an update
			// that arrives after the last round closed; b has not yet
			// learned of the end, so the coordinator still serves) is told
			// the task is over, not that the coordinator is unavailable:
			// the client's next poll brings the end, and it does not log
			// the coordinator as unreachable.
			if err := submitRaw(ctx, clients["b"], header(tr.GetTaskId(), n, digest), buf); code(err) != codes.FailedPrecondition {
				t.Errorf("submission after the job ended: %v, want FailedPrecondition", err)
			}
		}
	}
	out := <-done
	if len(out.History) != 1 || out.History[0].Failed || len(out.History[0].Contributors) != 2 {
		t.Fatalf("history = %+v", out.History)
	}
	for i, v := range out.Global {
		if want := srvInitial(t, job)[i] + good[i]; math.Abs(v-want) > 1e-15 {
			t.Fatalf("global[%d] = %v, want %v (initial + the common update)", i, v, want)
		}
	}
}

func srvInitial(t *testing.T, job engine.Job) []float64 {
	m, err := model.New(job.Model, job.Data.Features, job.Data.Classes, job.Seed)
	if err != nil {
		t.Fatal(err)
	}
	return m.Params()
}
