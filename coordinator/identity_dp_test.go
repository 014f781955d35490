package coordinator

import (
	"strings"
	"testing"

	"github.com/tallyfl/tally/engine"
)

// TestIdentityDP: a job without privacy.dp has no privacy field in its
// identity (state files written before it resume), and one with it
// records the settings as defining.
func TestIdentityDP(t *testing.T) {
	job, _, _ := smallJob(t, "ident", "none", engine.ModeOff, "")
	id, err := IdentityOf(job)
	if err != nil {
		t.Fatal(err)
	}
	for f := range id.Fields {
		if strings.HasPrefix(f, "privacy") {
			t.Errorf("a job without dp has identity field %s", f)
		}
	}
	cfg := job.JobConfig
	cfg.Privacy.DP = &engine.DPConfig{Epsilon: 4, Delta: 1e-5, Clip: 3}
	dpJob, err := engine.NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	did, err := IdentityOf(dpJob)
	if err != nil {
		t.Fatal(err)
	}
	if did.Digest == id.Digest {
		t.Error("adding privacy.dp leaves the job's identity unchanged")
	}
	found := false
	for f := range did.Fields {
		found = found || strings.HasPrefix(f, "privacy.dp")
	}
	if !found {
		t.Errorf("no privacy.dp field in the identity: %v", did.Fields)
	}
}

// TestLoadJobDP: a job file's privacy.dp reaches the job with its noise
// multiplier derived.
func TestLoadJobDP(t *testing.T) {
	job, err := LoadJob("testdata/config/dp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := job.DP
	if d == nil || d.Epsilon != 4 || d.Delta != 1e-5 || d.Clip != 2 || !(d.Sigma > 0) || d.Contributors != 1 {
		t.Fatalf("privacy.dp read as %+v, want ε 4, δ 1e-5, C 2, σ > 0, m 1 (updates in the clear)", d)
	}
}
