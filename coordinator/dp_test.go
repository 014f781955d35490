package coordinator

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/tallyfl/tally/accountant"
	"github.com/tallyfl/tally/engine"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// TestJobStatusReportsAccountantEpsilon runs a DP job over gRPC and checks
// that JobStatus reports, for each client, the ε the RDP accountant gives
// for the rounds that client took part in at the job's σ and δ, and that
// the spec the clients received carries the derived noise.
func TestJobStatusReportsAccountantEpsilon(t *testing.T) {
	job, fed, store := smallJob(t, "dpstatus", "none", engine.ModeOff, "")
	cfg := job.JobConfig
	cfg.Privacy.DP = &engine.DPConfig{Epsilon: 4, Delta: 1e-5, Clip: 50}
	job, err := engine.NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	if job.DP == nil || !(job.DP.Sigma > 0) {
		t.Fatalf("no noise multiplier derived: %+v", job.DP)
	}
	// σ is the smallest that keeps the job's rounds within ε: the job's
	// rounds at σ are within it, at 0.99σ beyond it.
	within := func(sigma float64) float64 {
		a, err := accountant.New()
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Compose(1, sigma, job.Rounds); err != nil {
			t.Fatal(err)
		}
		e, _, err := a.Epsilon(1e-5)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if e := within(job.DP.Sigma); e > 4 {
		t.Errorf("σ = %g gives ε = %g over %d rounds, above the target 4", job.DP.Sigma, e, job.Rounds)
	}
	if e := within(0.99 * job.DP.Sigma); e <= 4 {
		t.Errorf("0.99σ = %g still gives ε = %g ≤ 4: σ is not the smallest", 0.99*job.DP.Sigma, e)
	}
	srv, err := NewServer(ServerConfig{Job: job, Validation: fed.Validation, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	// Updates in the clear: each must carry all of σ·C (m = 1).
	if d := srv.service.spec.GetDp(); d == nil || d.GetSigma() != job.DP.Sigma || d.GetContributors() != 1 ||
		math.Abs(d.GetNoiseStd()-job.DP.Sigma*50) > 1e-9 {
		t.Errorf("job spec's dp = %v, want σ %g, m 1, noise σC", d, job.DP.Sigma)
	}
	out := serveFederation(t, srv, job, fed.Clients, 200*time.Millisecond, nil)
	last := map[string]float64{}
	for _, r := range out.History {
		if r.Failed {
			continue
		}
		if len(r.DPEpsilon) != len(r.Contributors) || r.DPDelta != 1e-5 {
			t.Errorf("round %d records ε for %d of %d contributors at δ %g", r.Round, len(r.DPEpsilon), len(r.Contributors), r.DPDelta)
		}
		for id, e := range r.DPEpsilon {
			if e <= last[id] {
				t.Errorf("round %d: client %s's ε %g did not grow from %g", r.Round, id, e, last[id])
			}
			last[id] = e
		}
	}
	st, err := srv.service.JobStatus(context.Background(), &tallyv1.JobStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetDpDelta() != 1e-5 {
		t.Errorf("JobStatus dp_delta = %g, want 1e-5", st.GetDpDelta())
	}
	if len(st.GetClients()) == 0 {
		t.Fatal("JobStatus lists no client")
	}
	for _, c := range st.GetClients() {
		a, err := accountant.New()
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Compose(1, job.DP.Sigma, int(c.GetRoundsContributed())); err != nil {
			t.Fatal(err)
		}
		want, _, err := a.Epsilon(1e-5)
		if err != nil {
			t.Fatal(err)
		}
		if c.GetRoundsContributed() == 0 {
			want = 0
		}
		if rec := last[c.GetClientId()]; rec != c.GetDpEpsilon() {
			t.Errorf("client %s: the round record's ε %g (which the receipts carry) differs from JobStatus's %g", c.GetClientId(), rec, c.GetDpEpsilon())
		}
		if c.GetDpEpsilon() != want || !(want > 0) {
			t.Errorf("client %s (%d rounds): JobStatus ε = %g, accountant ε = %g", c.GetClientId(), c.GetRoundsContributed(), c.GetDpEpsilon(), want)
		}
	}
}
