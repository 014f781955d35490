package valuation

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// projectionGame builds the projection game of updates against vectors
// from base, as the coordinator does from decrypted scalars.
func projectionGame(t *testing.T, base []float64, vectors, updates [][]float64, weights []float64, inner ParamScorer) *FederatedGame {
	t.Helper()
	s, err := ProjectionScalars(vectors, updates, weights)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewProjectionGame(Gram(vectors), s, weights, func() (SpanScorer, error) {
		return NewSpanScorer(base, vectors, inner), nil
	}, FederatedOptions{MaxScorers: 1})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestProjectionGameIsPlaintextInSpan: when every update lies in the span
// of the public vectors, the projection game is the plaintext line-search
// game, coalition by coalition, though it sees only the scalars; the
// vectors are deliberately redundant (one is a sum of two others), so the
// Gram matrix is singular.
func TestProjectionGameIsPlaintextInSpan(t *testing.T) {
	const dim, m = 30, 4
	rng := rand.New(rand.NewPCG(3, 4))
	vectors := make([][]float64, m+1)
	for j := range m {
		vectors[j] = make([]float64, dim)
		for k := range vectors[j] {
			vectors[j][k] = rng.NormFloat64()
		}
	}
	vectors[m] = make([]float64, dim)
	for k := range dim {
		vectors[m][k] = vectors[0][k] + vectors[1][k]
	}
	base, opt := make([]float64, dim), make([]float64, dim)
	for k := range opt {
		opt[k] = rng.NormFloat64()
	}
	var updates [][]float64
	for range 5 {
		u := make([]float64, dim)
		for j := range m {
			c := rng.NormFloat64()
			for k := range u {
				u[k] += c * vectors[j][k]
			}
		}
		updates = append(updates, u)
	}
	weights := []float64{10, 20, 30, 40, 50}
	plain, err := NewFederatedGame(base, updates, weights, func() (ParamScorer, error) { return bowlScorer{opt}, nil }, FederatedOptions{MaxScorers: 1, LineSearch: true})
	if err != nil {
		t.Fatal(err)
	}
	proj := projectionGame(t, base, vectors, updates, weights, bowlScorer{opt})
	ctx := context.Background()
	for s := Coalition(0); s <= Grand(len(updates)); s++ {
		want, err := plain.Utility(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := proj.Utility(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got-want) > 1e-9*(1+math.Abs(want)) {
			t.Errorf("U(%v): projection %v, plaintext %v", s, got, want)
		}
	}
}

// TestProjectionPaysFreeRidersNothing: the round of
// TestLineSearchPaysFreeRidersNothing (three honest clients overshooting
// the optimum, a zero, a random and an echo free rider) valued from the
// projection mode's public vectors and scalars only: the free riders get
// ≤ 0, the echo what the zero update gets (all its scalars are 0:
// the vectors are off the known direction), and the honest clients keep
// most of their plaintext values.
func TestProjectionPaysFreeRidersNothing(t *testing.T) {
	const dim = 20
	rng := rand.New(rand.NewPCG(1, 2))
	base, opt, known := make([]float64, dim), make([]float64, dim), make([]float64, dim)
	for k := range opt {
		opt[k] = 1 + 0.5*rng.NormFloat64()
		if k < dim/2 {
			known[k] = 0.3 * opt[k]
		}
	}
	var updates [][]float64
	for range 3 {
		u := make([]float64, dim)
		for k := range u {
			u[k] = 2*opt[k] + 0.2*rng.NormFloat64()
		}
		updates = append(updates, u)
	}
	random := make([]float64, dim)
	for k := range random {
		random[k] = rng.NormFloat64()
	}
	c := norm(updates[0]) / norm(random)
	for k := range random {
		random[k] *= c
	}
	updates = append(updates, make([]float64, dim), random, append([]float64(nil), known...))
	weights := []float64{50, 50, 50, 50, 50, 50}
	score := bowlScorer{opt}
	// What the server does: its own step along known, then the vectors
	// from the decrypted total at that point.
	at, err := KnownStep(base, known, score.Score)
	if err != nil {
		t.Fatal(err)
	}
	total := make([]float64, dim)
	for _, u := range updates {
		for k, x := range u {
			total[k] += x / float64(len(updates))
		}
	}
	// The bowl's gradient p − opt, its parts the even and odd coordinates.
	grad := func(p []float64, part int) ([]float64, error) {
		g := make([]float64, dim)
		for k := range g {
			if part < 0 || k%2 == part {
				g[k] = p[k] - opt[k]
			}
		}
		return g, nil
	}
	vectors, err := ProjectionVectors(at, total, known, 2, grad)
	if err != nil {
		t.Fatal(err)
	}
	if len(vectors) != ProjectionVectorCount(2) {
		t.Fatalf("%d vectors, ProjectionVectorCount(2) = %d", len(vectors), ProjectionVectorCount(2))
	}
	game := projectionGame(t, at, vectors, updates, weights, score)
	v := mustEstimate(t, "exact-shapley", Config{}, game).Values
	plain := freeRiderRound(t, true)
	t.Logf("projection: honest %.4g %.4g %.4g, zero %.4g, random %.4g, echo %.4g", v[0], v[1], v[2], v[3], v[4], v[5])
	t.Logf("plaintext:  honest %.4g %.4g %.4g, zero %.4g, random %.4g, echo %.4g", plain[0], plain[1], plain[2], plain[3], plain[4], plain[5])
	for i := range 3 {
		if !(v[i] > 0.5*plain[i]) {
			t.Errorf("honest client %d valued %g, plaintext %g", i, v[i], plain[i])
		}
	}
	if !(v[3] <= 0) {
		t.Errorf("zero free rider valued %g, want ≤ 0", v[3])
	}
	if !(v[4] <= 0) {
		t.Errorf("random free rider valued %g, want ≤ 0", v[4])
	}
	// Its scalars are zero up to the rounding of ProjectOff (1e-16).
	if !(v[5] <= 0) || math.Abs(v[5]-v[3]) > 1e-12 {
		t.Errorf("echo free rider valued %g, want ≤ 0 and what the zero free rider gets (%g)", v[5], v[3])
	}
}

// TestSpanOrthonormal: the basis NewSpan derives from a Gram matrix is
// orthonormal in the parameter space and drops dependent directions.
func TestSpanOrthonormal(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	vs := make([][]float64, 4)
	for j := range 3 {
		vs[j] = make([]float64, 12)
		for k := range vs[j] {
			vs[j][k] = rng.NormFloat64() * float64(j+1)
		}
	}
	vs[3] = make([]float64, 12)
	for k := range vs[3] {
		vs[3][k] = 2*vs[0][k] - vs[2][k]
	}
	sp, err := NewSpan(Gram(vs))
	if err != nil {
		t.Fatal(err)
	}
	if sp.Rank() != 3 {
		t.Fatalf("rank %d, want 3", sp.Rank())
	}
	us := make([][]float64, sp.Rank())
	c := make([]float64, len(vs))
	for k := range us {
		z := make([]float64, sp.Rank())
		z[k] = 1
		sp.Combination(z, c)
		us[k] = make([]float64, 12)
		for j, v := range vs {
			for i, x := range v {
				us[k][i] += c[j] * x
			}
		}
	}
	for a := range us {
		for b := range us {
			want := 0.0
			if a == b {
				want = 1
			}
			if d := dot(us[a], us[b]); math.Abs(d-want) > 1e-9 {
				t.Errorf("⟨u_%d, u_%d⟩ = %v, want %v", a, b, d, want)
			}
		}
	}
	if _, err := NewSpan([][]float64{{1, 2}, {3, 1}}); !errors.Is(err, ErrInput) {
		t.Errorf("asymmetric Gram: %v, want ErrInput", err)
	}
	if _, err := NewSpan([][]float64{{1, math.NaN()}, {math.NaN(), 1}}); !errors.Is(err, ErrInput) {
		t.Errorf("NaN Gram: %v, want ErrInput", err)
	}
}

// TestProjectionReplicas: clients of equal weight whose scalar vectors
// agree to CopyScalar are one cluster; another weight, a scalar off by
// more, or all-zero scalars are not.
func TestProjectionReplicas(t *testing.T) {
	s := [][]float64{{1, 2, 3}, {1, 2, 3 + 1e-6}, {1, 2, 3}, {1, 2.01, 3}, {0, 0, 0}, {0, 0, 0}}
	w := []float64{10, 10, 20, 10, 10, 10}
	got := ProjectionReplicas(s, w)
	want := [][]int{{0, 1}, {2}, {3}, {4}, {5}}
	if len(got) != len(want) {
		t.Fatalf("clusters %v, want %v", got, want)
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("clusters %v, want %v", got, want)
		}
		for k := range want[i] {
			if got[i][k] != want[i][k] {
				t.Fatalf("clusters %v, want %v", got, want)
			}
		}
	}
}
