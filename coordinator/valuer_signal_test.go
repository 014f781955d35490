package coordinator

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/model"
)

// TestValuerRandomUpdateInNoiseBand: under none (plain mode, exact
// Shapley, the line-search step) the coordinator's game counts an update
// inside the random-direction band around the validation gradient as a
// zero update (valuation.FederatedOptions.Signal), so a random direction
// that leans downhill by chance gets exactly what a zero free rider gets,
// ≤ 0. Before the coordinator passed the signal, the leaning direction was
// valued on its own (its value differed from the zero update's).
func TestValuerRandomUpdateInNoiseBand(t *testing.T) {
	job, fed, _ := smallJob(t, "signal", "none", engine.ModePlain, "exact-shapley")
	m, err := model.New(job.Model, job.Data.Features, job.Data.Classes, job.Seed)
	if err != nil {
		t.Fatal(err)
	}
	base := m.Params()
	p := len(base)
	sc := dataset.ComputeMoments(fed.Validation).Scaler()
	valData := sc.Apply(fed.Validation)
	v := &ModelValuer{Job: job, Model: m.Clone(), Data: fed.Validation}
	// Three honest updates: a gradient step on each client's shard.
	var updates [][]float64
	for i := range 3 {
		g := make([]float64, p)
		if err := m.SetParams(base); err != nil {
			t.Fatal(err)
		}
		if err := m.Gradient(sc.Apply(fed.Clients[i]), g); err != nil {
			t.Fatal(err)
		}
		for k := range g {
			g[k] *= -0.5
		}
		updates = append(updates, g)
	}
	// The validation gradient at base (round 0: nothing known).
	val := make([]float64, p)
	if err := m.SetParams(base); err != nil {
		t.Fatal(err)
	}
	if err := m.Gradient(valData, val); err != nil {
		t.Fatal(err)
	}
	// A random direction of an honest norm leaning downhill at half the
	// band's cosine: random = r⊥ − c·val/‖val‖.
	rng := rand.New(rand.NewPCG(5, 6))
	r := make([]float64, p)
	for k := range r {
		r[k] = rng.NormFloat64()
	}
	nv := math.Sqrt(dot(val, val))
	c := dot(r, val) / (nv * nv)
	for k := range r {
		r[k] -= c * val[k]
	}
	cos := 0.5 * 3 / math.Sqrt(float64(p))
	along := cos / math.Sqrt(1-cos*cos) * math.Sqrt(dot(r, r))
	for k := range r {
		r[k] -= along * val[k] / nv
	}
	s := math.Sqrt(dot(updates[0], updates[0]) / dot(r, r))
	for k := range r {
		r[k] *= s
	}
	updates = append(updates, make([]float64, p), r)
	res, err := v.Game(0, base, nil, updates, []float64{40, 40, 40, 40, 40}, &sc)
	if err != nil {
		t.Fatal(err)
	}
	vals := res.Values
	t.Logf("p %d; values: honest %.4g %.4g %.4g, zero %.4g, leaning random %.4g", p, vals[0], vals[1], vals[2], vals[3], vals[4])
	for i := range 3 {
		if !(vals[i] > 0) {
			t.Errorf("honest client %d valued %g, want > 0", i, vals[i])
		}
	}
	if !(vals[4] <= 0) || vals[4] != vals[3] {
		t.Errorf("the leaning random update is valued %g, want ≤ 0 and exactly the zero update's %g: it lies inside the noise band", vals[4], vals[3])
	}
}

func dot(a, b []float64) float64 {
	var s float64
	for k := range a {
		s += a[k] * b[k]
	}
	return s
}
