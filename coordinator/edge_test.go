package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/edge"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/auth"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// An edge's own calls are signed with the key the job lists for it: an
// unlisted edge, a listed id with another key, and a client's key are
// refused (Unauthenticated, naming auth.ReasonNotEdge, and an edge.Edge
// that asks its Standing is told ErrNotListed); a client's key cannot be
// used to reach the edge methods, nor an edge's for a client's.
func TestEdgeCallsNeedTheListedKey(t *testing.T) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	job := authJob(t)
	cfg := job.JobConfig
	cfg.Edges = []engine.EdgeConfig{{ID: "edge-0", PublicKey: hex.EncodeToString(pub)}}
	job, err = engine.NewJob(cfg, job.Dir)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveAuth(t, job, "", nil)
	conn := dialPlain(t, addr)
	call := func(k ed25519.PrivateKey, id string) error {
		api := tallyv1.NewCoordinatorServiceClient(auth.Conn(conn, func() (ed25519.PrivateKey, string, string) { return k, job.ID, id }, nil))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := api.EdgeTask(ctx, &tallyv1.EdgeTaskRequest{TaskId: "none"})
		return err
	}
	if err := call(key, "edge-0"); err != nil {
		t.Fatalf("the listed edge was refused: %v", err)
	}
	for name, c := range map[string]struct {
		k  ed25519.PrivateKey
		id string
	}{"unlisted edge": {key, "edge-1"}, "listed id, another key": {other, "edge-0"}} {
		err := call(c.k, c.id)
		if status.Code(err) != codes.Unauthenticated || !auth.HasReason(err, auth.ReasonNotEdge) {
			t.Errorf("%s: err = %v, want Unauthenticated naming %s", name, err, auth.ReasonNotEdge)
		}
		// An edge of that id and key is told it is not listed, and does
		// not start (cmd/tally TestEdgeNotListedFailsAtStart).
		e, err := edge.New(edge.Config{Upstream: conn, ID: c.id, Key: c.k, Job: job.ID})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = e.Standing(ctx)
		cancel()
		if !errors.Is(err, edge.ErrNotListed) || e.NotListedErr() == nil {
			t.Errorf("%s: Standing = %v (NotListedErr %v), want ErrNotListed", name, err, e.NotListedErr())
		}
		select {
		case <-e.NotListed():
		default:
			t.Errorf("%s: NotListed not closed after the refusal", name)
		}
	}
	listed, err := edge.New(edge.Config{Upstream: conn, ID: "edge-0", Key: key, Job: job.ID})
	if err != nil {
		t.Fatal(err)
	}
	if err := listed.Standing(context.Background()); err != nil || listed.NotListedErr() != nil {
		t.Errorf("the listed edge's Standing = %v (NotListedErr %v), want nil", err, listed.NotListedErr())
	}
	// A coordinator that cannot be reached says nothing of the edge's
	// standing: not ErrNotListed, the edge carries on.
	down, err := edge.New(edge.Config{Upstream: dialPlain(t, "127.0.0.1:1"), ID: "edge-9", Key: other, Job: job.ID})
	if err != nil {
		t.Fatal(err)
	}
	if err := down.Standing(context.Background()); status.Code(err) != codes.Unavailable || errors.Is(err, edge.ErrNotListed) || down.NotListedErr() != nil {
		t.Errorf("Standing with the coordinator down = %v (NotListedErr %v), want Unavailable, not ErrNotListed", err, down.NotListedErr())
	}
	// A client's call to an edge method is checked against the edge list,
	// not the enrolled keys.
	cl := newTestClient(t, conn, job.ID)
	if _, err := cl.enroll(context.Background(), "token-aaaa", 2); err != nil {
		t.Fatal(err)
	}
	if err := call(cl.key, cl.id); status.Code(err) != codes.Unauthenticated || !auth.HasReason(err, auth.ReasonNotEdge) {
		t.Errorf("a client calling EdgeTask: err = %v, want Unauthenticated", err)
	}
	if !isEdgeMethod(tallyv1.CoordinatorService_EdgeSubmit_FullMethodName) || isEdgeMethod(tallyv1.CoordinatorService_NextTask_FullMethodName) {
		t.Fatal("edge methods misclassified")
	}
}

// A job whose edges list is malformed is refused when it loads.
func TestEdgeListValidated(t *testing.T) {
	job := authJob(t)
	for name, edges := range map[string][]engine.EdgeConfig{
		"no id":     {{PublicKey: hex.EncodeToString(make([]byte, 32))}},
		"short key": {{ID: "e", PublicKey: "abcd"}},
		"twice":     {{ID: "e", PublicKey: hex.EncodeToString(make([]byte, 32))}, {ID: "e", PublicKey: hex.EncodeToString(make([]byte, 32))}},
	} {
		cfg := job.JobConfig
		cfg.Edges = edges
		if _, err := engine.NewJob(cfg, job.Dir); !errors.Is(err, engine.ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", name, err)
		}
	}
}
