package coordinator

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/model"
)

// withZeroColumns returns e with k all-zero features appended to every row.
func withZeroColumns(e model.Examples, k int) model.Examples {
	out := model.Examples{Y: append([]int(nil), e.Y...), Features: e.Features + k}
	for i := range e.Len() {
		out.X = append(out.X, e.Row(i)...)
		out.X = append(out.X, make([]float64, k)...)
	}
	return out
}

// federatedScaler runs one round of a 5-client breast-cancer job whose rows
// carry `zeros` extra all-zero features, with federated scaling under the
// given secure aggregation, and returns the scaler the coordinator
// computed.
func federatedScaler(t *testing.T, secure string, zeros int) dataset.Scaler {
	t.Helper()
	ds, err := dataset.Embedded("breast-cancer")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	fed, err := dataset.Federate(ds, dataset.FederationSpec{Clients: n, ValFrac: 0.2, TestFrac: 0.2, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	shards := make([]model.Examples, n)
	for i, s := range fed.Clients {
		shards[i] = withZeroColumns(s, zeros)
	}
	cfg := engine.JobConfig{
		ID: "scaling-" + secure, Seed: 3, Rounds: 1,
		Data:         engine.DataConfig{Features: ds.Examples.Features + zeros, Classes: 2},
		RoundTimeout: engine.Duration(20 * time.Second), Tick: engine.Duration(20 * time.Millisecond),
		Clients:           engine.ClientsConfig{Min: 3, WaitFor: n},
		Scaling:           engine.ScalingConfig{Mode: "federated"},
		SecureAggregation: secure,
		Committee:         engine.CommitteeConfig{Size: 3, Threshold: 2},
		HEParams:          insecureHE(),
	}
	for i := range n {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: fmt.Sprintf("c%d", i), Token: fmt.Sprintf("token-%d-scaling", i)})
	}
	job, err := engine.NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ServerConfig{Job: job, Validation: withZeroColumns(fed.Validation, zeros)})
	if err != nil {
		t.Fatal(err)
	}
	out := serveFederation(t, srv, job, shards, 50*time.Millisecond, nil)
	if out.Scaler == nil {
		t.Fatal("no feature scaling computed")
	}
	return *out.Scaler
}

// TestFederatedScalingNoiseFloor is issue 11, defect 1: under he the
// decrypted sums of squares of an all-zero feature carry the aggregation's
// noise, and without a noise floor the feature got a standard deviation of
// ~1e-5 instead of the constant-feature 1, so any non-zero value outside
// the training rows was multiplied by ~1e5. The coordinator must derive
// the floor from the HE parameters and treat those features as constant,
// and give the same scaler (up to the noise) as in the clear.
func TestFederatedScalingNoiseFloor(t *testing.T) {
	const zeros = 8 // each below-floor column is a coin flip without the fix
	he := federatedScaler(t, "he", zeros)
	clear := federatedScaler(t, "none", zeros)
	features := len(clear.Std)
	for j := features - zeros; j < features; j++ {
		if he.Std[j] != 1 || clear.Std[j] != 1 {
			t.Errorf("all-zero feature %d: std %g under he, %g in the clear; want the constant-feature 1 in both", j, he.Std[j], clear.Std[j])
		}
	}
	// The other features differ by the noise only: at most 8σ on each of
	// the count, sum and sum of squares, propagated to the variance as in
	// dataset.Moments.ScalerWithNoise.
	params, err := aggregation.NewParameters(*insecureHE())
	if err != nil {
		t.Fatal(err)
	}
	// The floor the engine uses: it includes the round-off that grows
	// with the moments' magnitude (aggregation.SlotNoiseSigmaAt).
	ds, err := dataset.Embedded("breast-cancer")
	if err != nil {
		t.Fatal(err)
	}
	sigma := params.SlotNoiseSigmaAt(5, 3, 2, dataset.ComputeMoments(ds.Examples).FlatSquaresBound()+5+25)
	rows := clear.Clip*clear.Clip + 1
	for j := range features - zeros {
		mean, variance := clear.Mean[j], clear.Std[j]*clear.Std[j]
		bound := 8 * sigma * (1 + 2*math.Abs(mean) + math.Abs(variance-mean*mean)) / rows
		if d := math.Abs(he.Std[j]*he.Std[j] - clear.Std[j]*clear.Std[j]); d > bound {
			t.Errorf("feature %d: variance %g under he, %g in the clear, differ by %.2g > %.2g", j, he.Std[j]*he.Std[j], clear.Std[j]*clear.Std[j], d, bound)
		}
	}
	if he.Clip <= 0 || math.Abs(he.Clip-clear.Clip) > 1e-6 {
		t.Errorf("clip %g under he, %g in the clear; want the same positive bound", he.Clip, clear.Clip)
	}
	// A value the training rows never had is bounded, not amplified.
	row := make([]float64, features)
	for j := range row {
		row[j] = he.Mean[j]
	}
	row[features-1] = 16
	got := he.Apply(model.Examples{X: row, Y: []int{0}, Features: features}).Row(0)[features-1]
	if math.Abs(got-16) > 1e-6 {
		t.Errorf("value 16 of an all-zero feature standardised to %g under he, want 16", got)
	}
}
