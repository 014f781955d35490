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

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/auth"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// An edge's own calls are signed with the key the job lists for it: an
// unlisted edge, a listed id with another key, and a client's key are
// refused (Unauthenticated); a client's key cannot be used to reach the
// edge methods, nor an edge's for a client's.
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
		if err := call(c.k, c.id); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: err = %v, want Unauthenticated", name, err)
		}
	}
	// A client's call to an edge method is checked against the edge list,
	// not the enrolled keys.
	cl := newTestClient(t, conn, job.ID)
	if _, err := cl.enroll(context.Background(), "token-aaaa", 2); err != nil {
		t.Fatal(err)
	}
	if err := call(cl.key, cl.id); status.Code(err) != codes.Unauthenticated {
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
