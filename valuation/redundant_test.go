package valuation

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestReplicasValuedAsOne: an exact copy of client 0 (client 4) is paid
// as a separate player by the plain game: the pair takes about twice the
// original's value. Valued as one player, whose value the two share, the
// pair earns exactly what client 0 earns in the game without the copy.
func TestReplicasValuedAsOne(t *testing.T) {
	const dim = 12
	rng := rand.New(rand.NewPCG(3, 4))
	opt := make([]float64, dim)
	for k := range opt {
		opt[k] = rng.NormFloat64()
	}
	var updates [][]float64
	for range 4 {
		u := make([]float64, dim)
		for k := range u {
			u[k] = 1.5*opt[k] + 0.8*rng.NormFloat64()
		}
		updates = append(updates, u)
	}
	withCopy := append(slices.Clone(updates), slices.Clone(updates[0]))
	weights := []float64{40, 40, 40, 40, 40}
	shapley := func(us [][]float64, ws []float64) []float64 {
		g, err := NewFederatedGame(make([]float64, dim), us, ws, func() (ParamScorer, error) { return bowlScorer{opt}, nil }, FederatedOptions{LineSearch: true, MaxScorers: 1})
		if err != nil {
			t.Fatal(err)
		}
		return mustEstimate(t, "exact-shapley", Config{}, g).Values
	}
	without := shapley(updates, weights[:4])
	naive := shapley(withCopy, weights)
	share := func(v []float64, is ...int) float64 {
		var s, tot float64
		for i, x := range v {
			tot += math.Abs(x)
			if slices.Contains(is, i) {
				s += x
			}
		}
		return s / tot
	}
	cl := UpdateReplicas(withCopy)
	if !slices.EqualFunc(cl, [][]int{{0, 4}, {1}, {2}, {3}}, slices.Equal) {
		t.Fatalf("clusters %v, want [[0 4] [1] [2] [3]]", cl)
	}
	us, ws, err := MergeReplicas(cl, withCopy, weights)
	if err != nil {
		t.Fatal(err)
	}
	merged, _ := SplitReplicas(cl, shapley(us, ws), nil, 5)
	t.Logf("client 0's share without the copy %.3f; the pair's as separate players %.3f, valued as one %.3f",
		share(without, 0), share(naive, 0, 4), share(merged, 0, 4))
	if r := share(merged, 0, 4) / share(without, 0); r > 1.1 {
		t.Errorf("original and copy take %.2f× the original's share without the copy, want ≤ 1.1", r)
	}
	if merged[0] != merged[4] {
		t.Errorf("original %g and copy %g are not paid alike", merged[0], merged[4])
	}
}

// TestReplicaThresholds: honest-looking pairs are not copies; an update
// equal up to rounding, or a scalar within its encryption noise, is.
func TestReplicaThresholds(t *testing.T) {
	a := []float64{1, 2, 3}
	b := []float64{1, 2, 3.01}    // cosine 0.99999: a copy
	c := []float64{1.3, 1.6, 3.2} // cosine 0.990, the honest maximum measured
	if got := UpdateReplicas([][]float64{a, b, c, make([]float64, 3)}); len(got) != 3 {
		t.Errorf("clusters %v, want a and b together, c and the zero update alone", got)
	}
	s := []float64{-0.5, -0.5 * (1 + 2e-5), -0.5 * (1 + 1e-3), -0.5 * (1 + 2e-5)}
	got := ScalarReplicas(s, []float64{30, 30, 30, 31})
	if !slices.EqualFunc(got, [][]int{{0, 1}, {2}, {3}}, slices.Equal) {
		t.Errorf("scalar clusters %v, want [[0 1] [2] [3]] (3 has another weight)", got)
	}
}
