package engine

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/accountant"
)

func dpJobConfig(secure, mode string, dp *DPConfig) JobConfig {
	cfg := JobConfig{
		ID: "dp", Seed: 7, Rounds: 20,
		Data:         DataConfig{Features: 2, Classes: 2, Validation: SourceConfig{CSV: "val.csv"}},
		RoundTimeout: Duration(5 * time.Second), Tick: Duration(time.Second),
		Scaling: ScalingConfig{Mode: "none"}, SecureAggregation: secure, MinGroupSize: 3,
		Clients:   ClientsConfig{Min: 4},
		Committee: CommitteeConfig{Size: 3, Threshold: 2},
		Valuation: ValuationConfig{Mode: mode},
		Privacy:   PrivacyConfig{DP: dp},
	}
	for _, id := range []string{"c1", "c2", "c3", "c4", "c5", "c6"} {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, EnrolmentConfig{ID: id, Token: "token-" + id})
	}
	return cfg
}

// TestDPContributors: each client's share of the noise assumes the fewest
// updates of any release, and all of it when the coordinator learns
// something of one client alone.
func TestDPContributors(t *testing.T) {
	for _, tc := range []struct {
		secure, mode string
		want         int
	}{
		{"he", ModeOff, 3},
		{"he", ModeGroups, 3},
		{"he", ModeInfluence, 1},
		{"none", ModeOff, 1},
		{"none", ModePlain, 1},
	} {
		t.Run(tc.secure+"/"+tc.mode, func(t *testing.T) {
			job, err := NewJob(dpJobConfig(tc.secure, tc.mode, &DPConfig{Epsilon: 4, Delta: 1e-5, Clip: 1}), ".")
			if err != nil {
				t.Fatal(err)
			}
			if job.DP.Contributors != tc.want {
				t.Errorf("m = %d, want %d", job.DP.Contributors, tc.want)
			}
			if got, want := job.DP.NoiseStd(), job.DP.Sigma/math.Sqrt(float64(tc.want)); math.Abs(got-want) > 1e-12 {
				t.Errorf("noise std %g, want σC/√m = %g", got, want)
			}
		})
	}
}

// TestDPSigmaMatchesAudit: the σ derived for ε = 1, 4, 8 at δ = 1e-5 over
// 20 rounds is the smallest within ε, and the job's ε after all rounds is
// the accountant's.
func TestDPSigmaMatchesAudit(t *testing.T) {
	for _, eps := range []float64{1, 4, 8} {
		job, err := NewJob(dpJobConfig("none", ModeOff, &DPConfig{Epsilon: eps, Delta: 1e-5, Clip: 1}), ".")
		if err != nil {
			t.Fatal(err)
		}
		got, err := job.DP.EpsilonAfter(job.Rounds)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := accountant.New()
		if err := a.Compose(1, job.DP.Sigma, job.Rounds); err != nil {
			t.Fatal(err)
		}
		want, _, _ := a.Epsilon(1e-5)
		if got != want || got > eps || got < eps*(1-1e-4) {
			t.Errorf("ε = %g: σ %g gives ε %g after %d rounds (accountant %g)", eps, job.DP.Sigma, got, job.Rounds, want)
		}
	}
}

// TestDPRefusesInvalid: each bad setting is named by its field.
func TestDPRefusesInvalid(t *testing.T) {
	for name, tc := range map[string]struct {
		dp    DPConfig
		field string
	}{
		"epsilon=0":   {DPConfig{Epsilon: 0, Delta: 1e-5, Clip: 1}, "privacy.dp.epsilon"},
		"epsilon=inf": {DPConfig{Epsilon: math.Inf(1), Delta: 1e-5, Clip: 1}, "privacy.dp.epsilon"},
		"delta=0":     {DPConfig{Epsilon: 1, Delta: 0, Clip: 1}, "privacy.dp.delta"},
		"delta=1":     {DPConfig{Epsilon: 1, Delta: 1, Clip: 1}, "privacy.dp.delta"},
		"clip=0":      {DPConfig{Epsilon: 1, Delta: 1e-5, Clip: 0}, "privacy.dp.clip"},
		"clip=nan":    {DPConfig{Epsilon: 1, Delta: 1e-5, Clip: math.NaN()}, "privacy.dp.clip"},
	} {
		t.Run(name, func(t *testing.T) {
			dp := tc.dp
			_, err := NewJob(dpJobConfig("none", ModeOff, &dp), ".")
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.field+":") {
				t.Errorf("NewJob = %v, want ErrConfig naming %s", err, tc.field)
			}
		})
	}
}
