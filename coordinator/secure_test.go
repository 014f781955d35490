package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
)

// insecureHE is a small CKKS parameter set: fast, and insecure, so it
// lives only in test files.
func insecureHE() *aggregation.ParametersConfig {
	c := aggregation.DefaultConfig()
	c.LogN = 10
	c.Insecure = true
	return &c
}

// runCommitteeKill runs 8 clients with a 5-member, threshold-3 committee,
// and when round 2 completes kills `kill` committee members (their client
// processes stop answering). It returns the job's final status.
func runCommitteeKill(t *testing.T, kill int) Status {
	t.Helper()
	ds, err := dataset.Embedded("breast-cancer")
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	fed, err := dataset.Federate(ds, dataset.FederationSpec{Clients: n, ValFrac: 0.2, TestFrac: 0.2, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.JobConfig{
		ID: "kill", Seed: 5, Rounds: 5,
		Data:         engine.DataConfig{Features: ds.Examples.Features, Classes: 2},
		RoundTimeout: engine.Duration(1500 * time.Millisecond), Tick: engine.Duration(20 * time.Millisecond),
		Clients:   engine.ClientsConfig{Min: 3, WaitFor: n, Liveness: engine.Duration(400 * time.Millisecond)},
		Scaling:   engine.ScalingConfig{Mode: "federated"},
		Committee: engine.CommitteeConfig{Size: 5, Threshold: 3},
		HEParams:  insecureHE(),
	}
	for i := range n {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: fmt.Sprintf("c%d", i), Token: fmt.Sprintf("token-%d-xyz", i)})
	}
	job, err := engine.NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	cancels := map[string]context.CancelFunc{}
	var mu sync.Mutex
	var srv *Server
	killed := false
	srv, err = NewServer(ServerConfig{Job: job, Validation: fed.Validation, Linger: 2 * time.Second, OnRound: func(r engine.RoundRecord) {
		if r.Round != 2 || r.Failed || killed {
			return
		}
		killed = true
		// Called on the driver goroutine: the view is read directly.
		members := slices.Clone(srv.driver.view.committee)
		mu.Lock()
		defer mu.Unlock()
		for _, id := range members[:kill] {
			cancels[id]()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	out := serveFederation(t, srv, job, fed.Clients, 100*time.Millisecond, func(i int, ctx context.Context) context.Context {
		cctx, ccancel := context.WithCancel(ctx)
		mu.Lock()
		cancels[job.Clients.Enrolment[i].ID] = ccancel
		mu.Unlock()
		return cctx
	})
	if out.Done == nil || out.Done.FinalRound != 5 {
		t.Fatalf("job did not complete 5 rounds: %+v", out.Done)
	}
	return srv.Status()
}

func TestCommitteeSurvivesTwoKilled(t *testing.T) {
	st := runCommitteeKill(t, 2)
	for _, r := range st.History {
		if r.Failed {
			t.Errorf("round %d attempt %d failed: %s", r.Round, r.Attempt, r.Reason)
		}
	}
	if st.Epochs != 1 {
		t.Errorf("%d key generations, want 1: losing c − t members must not force a re-key", st.Epochs)
	}
	last := st.History[len(st.History)-1]
	if len(last.Decryptions) == 0 || last.Decryptions[0].Purpose != "round" || len(last.Decryptions[0].Participants) != 3 {
		t.Errorf("last round decryptions = %+v, want the round's aggregate decrypted by 3 participants", last.Decryptions)
	}
	if err := engine.CheckDecryptions(3, st.History); err != nil {
		t.Error(err)
	}
}

func TestCommitteeRekeysWhenThreeKilled(t *testing.T) {
	st := runCommitteeKill(t, 3)
	var failed []engine.RoundRecord
	for _, r := range st.History {
		if r.Failed {
			failed = append(failed, r)
		}
	}
	if len(failed) == 0 {
		t.Fatal("no round failed, yet only 2 of 5 committee members were left")
	}
	if !strings.Contains(failed[0].Reason, "re-keying") {
		t.Errorf("failure reason %q does not say the job re-keys", failed[0].Reason)
	}
	if st.Epochs < 2 {
		t.Errorf("%d key generations, want a second committee", st.Epochs)
	}
	completed := 0
	for _, r := range st.History {
		if !r.Failed {
			completed++
		}
	}
	if completed != 5 {
		t.Errorf("%d rounds completed, want 5", completed)
	}
	if err := engine.CheckDecryptions(3, st.History); err != nil {
		t.Error(err)
	}
}
