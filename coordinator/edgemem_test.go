package coordinator

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/edge"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/model"
)

// edgeMemJob is a secure job of n digits clients (an MLP of 2,410
// parameters: 5 ciphertexts a client at LogN 10) with the influence
// valuation, run through one in-process edge, so that its partials carry
// influence products as well as c₁ rows. It returns the edge after the
// job, and the size of one client's upload.
func edgeMemJob(t *testing.T, n int, cfg edge.Config) (*edge.Edge, int64) {
	t.Helper()
	ds, err := dataset.Embedded("digits")
	if err != nil {
		t.Fatal(err)
	}
	fed, err := dataset.Federate(ds, dataset.FederationSpec{Clients: n, ValFrac: 0.2, TestFrac: 0.2, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jc := engine.JobConfig{
		ID: "edgemem", Seed: 3, Rounds: 1,
		Model:        model.Spec{Kind: model.KindMLP, Hidden: []int{32}},
		Train:        model.TrainConfig{Epochs: 1, BatchSize: 16, LearningRate: 0.01},
		Data:         engine.DataConfig{Features: 64, Classes: 10},
		RoundTimeout: engine.Duration(90 * time.Second), Tick: engine.Duration(10 * time.Millisecond),
		Clients:           engine.ClientsConfig{Min: n, WaitFor: n, Liveness: engine.Duration(time.Minute)},
		Scaling:           engine.ScalingConfig{Mode: "none"},
		SecureAggregation: "he",
		Committee:         engine.CommitteeConfig{Size: 3, Threshold: 2},
		HEParams:          insecureHE(),
		Valuation:         engine.ValuationConfig{Mode: engine.ModeInfluence, Method: engine.MethodInfluence},
		Edges:             []engine.EdgeConfig{{ID: "edge-0", PublicKey: hex.EncodeToString(pub)}},
	}
	for i := range n {
		jc.Clients.Enrolment = append(jc.Clients.Enrolment, engine.EnrolmentConfig{ID: fmt.Sprintf("c%02d", i), Token: fmt.Sprintf("edgemem-token-%02d", i)})
	}
	job, err := engine.NewJob(jc, ".")
	if err != nil {
		t.Fatal(err)
	}
	var rounds []engine.RoundRecord
	srv, err := NewServer(ServerConfig{Job: job, Validation: fed.Validation, OnRound: func(r engine.RoundRecord) { rounds = append(rounds, r) }})
	if err != nil {
		t.Fatal(err)
	}
	out, e := serveFederationWith(t, srv, job, fed.Clients, federationOpts{timeout: 3 * time.Minute, edge: &cfg, edgeKey: key})
	if out.Done == nil || out.Done.FinalRound != 1 || len(rounds) != 1 {
		t.Fatalf("job did not complete its round: done %+v, %d records", out.Done, len(rounds))
	}
	if r := rounds[0]; r.Failed || len(r.Contributors) != n {
		t.Fatalf("round 1: failed=%v (%s), %d of %d contributors", r.Failed, r.Reason, len(r.Contributors), n)
	}
	if got := e.Summed.Load(); got != int64(n) {
		t.Fatalf("the edge summed %d uploads (%d partials, %d relayed), want all %d", got, e.Partials.Load(), e.Relayed.Load(), n)
	}
	spec := model.Spec{Kind: model.KindMLP, Hidden: []int{32}}
	params, err := model.NumParamsFor(spec, 64, 10)
	if err != nil {
		t.Fatal(err)
	}
	return e, int64(job.Params.Blocks(params) * job.Params.CiphertextSize())
}

// An edge holds a bounded number of its clients' uploads in memory,
// whatever the number of clients: BenchmarkScale's 1,000 clients through 4
// edges had grown the benchmark's process (clients and edges) to 22 GB,
// every upload (7 ciphertexts, 4.6 MB at LogN 14) held whole until the
// round's only partial left, and after. Here 24 clients go through one
// edge that reads 2 uploads at once and forwards a partial once it holds
// 2 uploads' worth. What it may hold then: the 2 uploads being read and
// summed, one more while an upload's c₁ rows and product are kept and its
// buffer not yet released, and two partials (the one being forwarded, and one
// waiting for it, during which no upload is summed) of at most
// PartialBytes plus their last client each, at most an upload: 9 uploads,
// where the edge held 28-39 before (24 clients, and the resends of the
// clients handed the task again while they waited for the partial).
// Nothing is held once the round is done.
func TestEdgeHoldsBoundedUploads(t *testing.T) {
	const n, slots = 24, 2
	// The upload size is known from the job; one client's upload here is
	// 123,048 bytes (3 ciphertexts at LogN 10).
	const upload = 3 * 41016
	cfg := edge.Config{UploadSlots: slots, PartialBytes: 2 * upload}
	e, size := edgeMemJob(t, n, cfg)
	if size != upload {
		t.Fatalf("an upload is %d bytes, the test assumes %d", size, upload)
	}
	limit := slots*size + size + 2*(cfg.PartialBytes+size)
	t.Logf("%d clients, uploads of %d bytes: the edge held at most %d bytes at once (%.1f uploads) in %d partials", n, size, e.PeakHeld(), float64(e.PeakHeld())/float64(size), e.Partials.Load())
	if e.PeakHeld() > limit {
		t.Errorf("the edge held %d bytes of uploads at once, %.1f uploads of %d bytes; want at most %d", e.PeakHeld(), float64(e.PeakHeld())/float64(size), size, limit)
	}
	if e.Partials.Load() < n/3 {
		t.Errorf("%d partials for %d clients, partials of at most 2 uploads' worth: PartialBytes not applied", e.Partials.Load(), n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.Held() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if e.Held() != 0 {
		t.Errorf("the edge still holds %d bytes of uploads after the job", e.Held())
	}
}
