package valuation

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
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

// TestRedundancyAccumulates: a pair 0.3 apart in one round and 0.1 in
// three others (of a norm about 1) is a copy over the job,
// √((0.09+3·0.01)/(1.09+3·1.01)) = 0.17, though not after the first round
// alone (0.29); a pair always 0.45 apart is not, and a client that only
// sent zeros is nobody's copy.
func TestRedundancyAccumulates(t *testing.T) {
	r := NewRedundancy()
	ids := []string{"a", "b", "c", "z"}
	round := func(gap float64) {
		t.Helper()
		if err := r.Add(ids, [][]float64{{1, 0}, {1, gap}, {1, -0.5}, {0, 0}}); err != nil {
			t.Fatal(err)
		}
	}
	round(0.3)
	if got := r.Replicas(ids); len(got) != 4 {
		t.Errorf("after one round 0.3 apart: clusters %v, want none", got)
	}
	for range 3 {
		round(0.1)
	}
	d, ok := r.Distance("b", "a")
	if want := math.Sqrt(0.12 / 4.12); !ok || math.Abs(d-want) > 1e-12 {
		t.Errorf("distance(a, b) = %g, %v; want %g", d, ok, want)
	}
	if got := r.Replicas(ids); !slices.EqualFunc(got, [][]int{{0, 1}, {2}, {3}}, slices.Equal) {
		t.Errorf("after four rounds: clusters %v, want [[0 1] [2] [3]]", got)
	}
	if _, ok := r.Distance("z", "z2"); ok {
		t.Error("a pair never seen together has a distance")
	}
	if err := r.Add([]string{"a", "b"}, [][]float64{{1, 2}, {1}}); !errors.Is(err, ErrLength) || !strings.Contains(err.Error(), "client b") {
		t.Errorf("updates of two lengths: %v, want ErrLength naming client b", err)
	}
}

// TestCapPerWeight: three identities of 20 rows that each earn what a
// 60-row client earns are capped at the rate the 60- and 61-row clients'
// rows earn together (20.1 over 241 rows); clients of 60 and 61 rows do
// not cap each other; a negative value, and a rate below the cap, are
// kept.
func TestCapPerWeight(t *testing.T) {
	vals := []float64{6, 5, 3, 6.1, 6, 6, 1, -1}
	ws := []float64{60, 60, 60, 61, 20, 20, 20, 60}
	got, err := CapPerWeight(vals, ws)
	if err != nil {
		t.Fatal(err)
	}
	c := 20.1 / 241 * 20
	want := []float64{6, 5, 3, 6.1, c, c, 1, -1}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Fatalf("capped %v, want %v", got, want)
		}
	}
	if _, err := CapPerWeight([]float64{1}, []float64{0}); !errors.Is(err, ErrWeight) {
		t.Errorf("zero weight: %v, want ErrWeight", err)
	}
}

// TestJobReplicaValues: a job cluster {a, b} valued apart in a round earns
// the mean of their values, shared; valued as one already (a round
// cluster), it keeps its values; a cluster {a, b, c} of which a and b were
// merged in the round has two parts, a+b's and c's.
func TestJobReplicaValues(t *testing.T) {
	ids := []string{"a", "b", "c", "d"}
	vals := []float64{0.2, 0.3, 0.1, 0.4}
	for _, tc := range []struct {
		name   string
		merged [][]string
		job    [][]string
		want   []float64
	}{
		{"apart", nil, [][]string{{"a", "b"}}, []float64{0.125, 0.125, 0.1, 0.4}},
		{"merged", [][]string{{"a", "b"}}, [][]string{{"a", "b"}}, vals},
		{"partly", [][]string{{"a", "b"}}, [][]string{{"a", "b", "c"}}, []float64{0.1, 0.1, 0.1, 0.4}},
		{"absent", nil, [][]string{{"a", "x"}}, vals},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := JobReplicaValues(ids, vals, tc.merged, tc.job)
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if math.Abs(got[i]-tc.want[i]) > 1e-15 {
					t.Fatalf("values %v, want %v", got, tc.want)
				}
			}
		})
	}
}
