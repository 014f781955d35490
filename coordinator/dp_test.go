package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
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

// composedEpsilon is the accountant's ε at delta of a client that took part
// in n1 rounds at noise multiplier s1 and n2 at s2.
func composedEpsilon(t *testing.T, delta, s1 float64, n1 int, s2 float64, n2 int) float64 {
	t.Helper()
	a, err := accountant.New()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Compose(1, s1, n1); err != nil {
		t.Fatal(err)
	}
	if err := a.Compose(1, s2, n2); err != nil {
		t.Fatal(err)
	}
	e, _, err := a.Epsilon(delta)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestRoundsRaisedUnderDP: a DP job's σ is derived from (ε, δ, rounds), so
// raising rounds after some have run would run the rest at the σ of the
// larger job while the rounds done kept the smaller σ of the smaller one:
// the client's ε would pass the target while the accountant, reckoning
// every round at the new σ, reported less. The state file must refuse the
// raise, naming the ε it would reach, and leave the recorded rounds alone;
// a raise before any round ran is allowed (nothing has been spent), and
// the job resumed as it was reports ε within the target.
func TestRoundsRaisedUnderDP(t *testing.T) {
	const target, delta = 4.0, 1e-5
	base, fed, _ := smallJob(t, "dpraise", "none", engine.ModeOff, "")
	withRounds := func(rounds int) engine.Job {
		cfg := base.JobConfig
		cfg.Rounds = rounds
		cfg.Privacy.DP = &engine.DPConfig{Epsilon: target, Delta: delta, Clip: 50}
		// Clients enrol again when the job resumes.
		cfg.Clients.Enrolment = slices.Clone(cfg.Clients.Enrolment)
		for i := range cfg.Clients.Enrolment {
			cfg.Clients.Enrolment[i].Uses = 2
		}
		job, err := engine.NewJob(cfg, ".")
		if err != nil {
			t.Fatal(err)
		}
		return job
	}
	run := func(job engine.Job, s *BoltStore) (Outcome, *tallyv1.JobStatusResponse) {
		srv, err := NewServer(ServerConfig{Job: job, Validation: fed.Validation, Store: s})
		if err != nil {
			t.Fatal(err)
		}
		out := serveFederation(t, srv, job, fed.Clients, 200*time.Millisecond, nil)
		st, err := srv.service.JobStatus(context.Background(), &tallyv1.JobStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return out, st
	}
	small, raised := withRounds(2), withRounds(4)
	if !(raised.DP.Sigma > small.DP.Sigma) {
		t.Fatalf("σ for 4 rounds %g not above σ for 2 rounds %g", raised.DP.Sigma, small.DP.Sigma)
	}

	t.Run("raised before any round", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		s, err := OpenJobStore(path, small, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		s, err = OpenJobStore(path, raised, nil)
		if err != nil {
			t.Fatalf("raise with no round run refused: %v", err)
		}
		s.Close()
	})

	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenJobStore(path, small, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, st := run(small, s)
	s.Close()
	first := map[string]int{}
	for _, c := range st.GetClients() {
		first[c.GetClientId()] = int(c.GetRoundsContributed())
	}

	s, err = OpenJobStore(path, raised, nil)
	if err == nil {
		// What the unguarded raise does: rounds 3 and 4 at the new σ.
		_, st := run(raised, s)
		s.Close()
		for _, c := range st.GetClients() {
			n1 := first[c.GetClientId()]
			n2 := int(c.GetRoundsContributed()) - n1
			if truth := composedEpsilon(t, delta, small.DP.Sigma, n1, raised.DP.Sigma, n2); truth > target {
				t.Errorf("client %s: JobStatus reports ε = %.3f after %d rounds at σ %.4g and %d at σ %.4g, which compose to ε = %.3f > target %g",
					c.GetClientId(), c.GetDpEpsilon(), n1, small.DP.Sigma, n2, raised.DP.Sigma, truth, target)
			}
		}
		t.Fatalf("rounds raised from 2 to 4 after 2 DP rounds were accepted")
	}
	worst := 0
	for _, n := range first {
		worst = max(worst, n)
	}
	want := composedEpsilon(t, delta, small.DP.Sigma, worst, raised.DP.Sigma, 2)
	if !errors.Is(err, ErrDPRoundsRaised) || !strings.Contains(err.Error(), path) ||
		!strings.Contains(err.Error(), fmt.Sprintf("ε would reach %.3f", want)) {
		t.Fatalf("OpenJobStore with rounds raised = %v; want %v naming %s and ε %.3f", err, ErrDPRoundsRaised, path, want)
	}
	t.Logf("refused: %v", err)

	// The refusal recorded nothing: the raise is refused again, and the job
	// as it was resumes with every client's ε within the target.
	if _, err := OpenJobStore(path, raised, nil); !errors.Is(err, ErrDPRoundsRaised) {
		t.Fatalf("second raise = %v, want %v", err, ErrDPRoundsRaised)
	}
	s, err = OpenJobStore(path, small, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srv, err := NewServer(ServerConfig{Job: small, Validation: fed.Validation, Store: s})
	if err != nil {
		t.Fatal(err)
	}
	st, err = srv.service.JobStatus(context.Background(), &tallyv1.JobStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.GetClients() {
		if !(c.GetDpEpsilon() > 0) || c.GetDpEpsilon() > target {
			t.Errorf("client %s: JobStatus ε = %g after %d rounds, want in (0, %g]", c.GetClientId(), c.GetDpEpsilon(), c.GetRoundsContributed(), target)
		}
	}
}
