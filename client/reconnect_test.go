package client

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tallyfl/tally/model"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// outageCoordinator is a fake coordinator that admits any token into a
// logistic-regression job in the clear and answers every poll with "wait".
// It records when each poll arrives, so a test can see how soon a client
// comes back after an outage.
type outageCoordinator struct {
	tallyv1.UnimplementedCoordinatorServiceServer
	job *tallyv1.JobSpec

	mu    sync.Mutex
	polls []time.Time
}

func (f *outageCoordinator) Schema(context.Context, *tallyv1.SchemaRequest) (*tallyv1.SchemaResponse, error) {
	return &tallyv1.SchemaResponse{JobId: f.job.GetJobId(), Features: f.job.GetFeatures(), ClassNames: f.job.GetClassNames()}, nil
}

func (f *outageCoordinator) Enroll(context.Context, *tallyv1.EnrollRequest) (*tallyv1.EnrollResponse, error) {
	return &tallyv1.EnrollResponse{ClientId: "client-0", Job: f.job}, nil
}

func (f *outageCoordinator) Resume(context.Context, *tallyv1.ResumeRequest) (*tallyv1.ResumeResponse, error) {
	return &tallyv1.ResumeResponse{ClientId: "client-0", Job: f.job}, nil
}

func (f *outageCoordinator) NextTask(context.Context, *tallyv1.NextTaskRequest) (*tallyv1.NextTaskResponse, error) {
	f.mu.Lock()
	f.polls = append(f.polls, time.Now())
	f.mu.Unlock()
	time.Sleep(20 * time.Millisecond) // a short long-poll
	return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Wait{Wait: &tallyv1.WaitTask{}}}, nil
}

// firstPollAfter is the first poll at or after t.
func (f *outageCoordinator) firstPollAfter(t time.Time) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.polls {
		if !p.Before(t) {
			return p, true
		}
	}
	return time.Time{}, false
}

func serveOn(t *testing.T, addr string, f *outageCoordinator) *grpc.Server {
	t.Helper()
	var lis net.Listener
	var err error
	// The port was ours a moment ago; the kernel may take a little while to
	// hand it out again.
	for range 50 {
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv := grpc.NewServer()
	tallyv1.RegisterCoordinatorServiceServer(srv, f)
	go srv.Serve(lis)
	return srv
}

// TestReconnectAfterOutage: a coordinator that is down for half a minute
// and then listens again has its client back within 10 s. gRPC's own
// reconnect backoff grows to 120 s, and while it waits every call fails at
// once without dialling; the client's retries must make the connection dial
// again, so that its own backoff (5 s at most) is what a restarted
// coordinator waits for. Before the client reset the transport's backoff,
// a 30 s outage left it refused for 10–17 s after the coordinator was back.
func TestReconnectAfterOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("a 30-second outage; not in -short")
	}
	t.Parallel()
	data := model.Examples{X: []float64{0, 1, 1, 0}, Y: []int{0, 1}, Features: 2}
	m, err := model.New(model.Spec{Kind: model.KindLogReg}, 2, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	fake := &outageCoordinator{job: &tallyv1.JobSpec{
		JobId: "outage", Seed: 1, Features: 2, Classes: 2, ClassNames: []string{"0", "1"}, Rounds: 1,
		Model: &tallyv1.ModelSpec{Kind: model.KindLogReg}, NumParams: int32(m.NumParams()), SecureAggregation: "none",
	}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	srv := grpc.NewServer()
	tallyv1.RegisterCoordinatorServiceServer(srv, fake)
	go srv.Serve(lis)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := New(Config{Conn: conn, Token: "t", Data: data, MaxBackoff: 5 * time.Second, PollWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- c.Run(ctx) }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := fake.firstPollAfter(time.Time{}); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client never polled the coordinator")
		}
		time.Sleep(20 * time.Millisecond)
	}

	srv.Stop() // the coordinator dies; its port refuses connections
	time.Sleep(30 * time.Second)
	back := time.Now()
	srv = serveOn(t, addr, fake)
	defer srv.Stop()

	for {
		if p, ok := fake.firstPollAfter(back); ok {
			took := p.Sub(back)
			t.Logf("client back %v after the coordinator listened again", took.Round(time.Millisecond))
			if took > 10*time.Second {
				t.Fatalf("client back only %v after the coordinator listened again, want ≤ 10s", took)
			}
			break
		}
		if time.Since(back) > 60*time.Second {
			t.Fatal("client not back within 60 s of the coordinator listening again")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-ran
}
