package valuation

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// linearScorer scores ⟨c, w⟩: the federated game is then exactly the
// surrogate game, and with equal weights its Shapley value has a closed form.
type linearScorer struct{ c []float64 }

func (s linearScorer) Score(w []float64) (float64, error) { return dot(s.c, w), nil }

// quadScorer scores −‖w − target‖²/dim, a stand-in for negative validation
// loss, and fails the test if it is ever used by two goroutines at once.
type quadScorer struct {
	target []float64
	busy   atomic.Bool
	misuse *atomic.Int64
}

func (s *quadScorer) Score(w []float64) (float64, error) {
	if !s.busy.CompareAndSwap(false, true) {
		s.misuse.Add(1)
	}
	defer s.busy.Store(false)
	d := 0.0
	for k, x := range w {
		e := x - s.target[k]
		d += e * e
	}
	return -d / float64(len(w)), nil
}

// round is a synthetic federated round: honest clients step towards the
// target with client-specific noise and sample counts; "random" clients send
// a Gaussian vector of an honest update's norm (a free rider), "flip" clients
// send an honest update with its sign flipped.
type round struct {
	base, target []float64
	updates      [][]float64
	weights      []float64
}

func syntheticRound(seed uint64, n, dim int, bad map[int]string) round {
	return noisyRound(seed, n, dim, bad, 0.5)
}

// noisyRound is syntheticRound with honest noise growing linearly from 0.1
// to 0.1 + spread (relative to the step's norm) across the clients.
func noisyRound(seed uint64, n, dim int, bad map[int]string, spread float64) round {
	rng := rand.New(rand.NewPCG(seed, 77))
	gauss := func(scale float64) []float64 {
		v := make([]float64, dim)
		for k := range v {
			v[k] = rng.NormFloat64() * scale / math.Sqrt(float64(dim))
		}
		return v
	}
	r := round{base: gauss(1), target: gauss(1)}
	for i := range n {
		noise := gauss(0.1 + spread*float64(i)/float64(n))
		u := make([]float64, dim)
		for k := range u {
			u[k] = 0.5*(r.target[k]-r.base[k]) + noise[k]
		}
		switch bad[i] {
		case "random":
			g := gauss(1)
			scale := norm(u) / norm(g)
			for k := range u {
				u[k] = g[k] * scale
			}
		case "flip":
			for k := range u {
				u[k] = -u[k]
			}
		}
		r.updates = append(r.updates, u)
		r.weights = append(r.weights, float64(50+rng.IntN(150)))
	}
	return r
}

func (r round) game(t testing.TB, opts FederatedOptions) (*FederatedGame, *atomic.Int64, *atomic.Int64) {
	t.Helper()
	var created, misuse atomic.Int64
	g, err := NewFederatedGame(r.base, r.updates, r.weights, func() (ParamScorer, error) {
		created.Add(1)
		return &quadScorer{target: r.target, misuse: &misuse}, nil
	}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return g, &created, &misuse
}

// TestFederatedLinearClosedForm: with equal weights and a linear scorer,
// U(S) = ⟨c, base⟩ + mean_{i∈S} x_i with x_i = ⟨c, Δ_i⟩, whose Shapley value is
// φ_i = x_i·H_n/n + (Σ_{j≠i} x_j)·(1 − H_n)/(n(n−1)), H_n the n-th harmonic
// number (the game is Σ_j x_j·[j∈S]/|S|, and player j's share of its own
// term is Σ_s (1/n)/(s+1) = H_n/n).
func TestFederatedLinearClosedForm(t *testing.T) {
	for _, n := range []int{2, 5, 9} {
		r := syntheticRound(uint64(n), n, 16, nil)
		for i := range r.weights {
			r.weights[i] = 30
		}
		c := r.target
		g, err := NewFederatedGame(r.base, r.updates, r.weights, func() (ParamScorer, error) { return linearScorer{c}, nil }, FederatedOptions{})
		if err != nil {
			t.Fatal(err)
		}
		x := make([]float64, n)
		for i, u := range r.updates {
			x[i] = dot(c, u)
		}
		h := 0.0
		for k := 1; k <= n; k++ {
			h += 1 / float64(k)
		}
		want := make([]float64, n)
		for i := range want {
			want[i] = x[i]*h/float64(n) + (sum(x)-x[i])*(1-h)/float64(n*(n-1))
		}
		got := mustEstimate(t, MethodExactShapley, Config{}, g)
		assertClose(t, "linear federated game", got.Values, want, 1e-12)
	}
}

// TestFederatedLinearIsSurrogate: with a linear scorer U(S) − U(∅) equals the
// surrogate game built from a_i = ⟨∇L, n_i Δ_i⟩ with L = −score, for unequal
// weights too, and Influence is efficient for it.
func TestFederatedLinearIsSurrogate(t *testing.T) {
	r := syntheticRound(3, 7, 12, map[int]string{2: "flip"})
	c := r.target
	g, err := NewFederatedGame(r.base, r.updates, r.weights, func() (ParamScorer, error) { return linearScorer{c}, nil }, FederatedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	grad := make([]float64, len(c))
	for k := range c {
		grad[k] = -c[k]
	}
	a, err := InfluenceCoefficients(grad, r.updates, r.weights)
	if err != nil {
		t.Fatal(err)
	}
	sg, err := NewSurrogateGame(a, r.weights)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	u0, _ := g.Utility(ctx, 0)
	for s := range Coalition(1 << 7) {
		uf, err1 := g.Utility(ctx, s)
		us, err2 := sg.Utility(ctx, s)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if math.Abs((uf-u0)-us) > 1e-12 {
			t.Fatalf("coalition %v: federated − U(∅) = %.15g, surrogate %.15g", s, uf-u0, us)
		}
	}
	infl, err := Influence(grad, r.updates, r.weights)
	if err != nil {
		t.Fatal(err)
	}
	uN, _ := g.Utility(ctx, Grand(7))
	if math.Abs(sum(infl)-(uN-u0)) > 1e-12 {
		t.Errorf("Σ influence = %.15g, want U(N) − U(∅) = %.15g", sum(infl), uN-u0)
	}
	if slices.Index(infl, slices.Min(infl)) != 2 {
		t.Errorf("influence %v does not rank the flipped update (player 2) last", infl)
	}
}

// TestFederatedCorruptedRankedLast is the synthetic version of the issue's
// breast-cancer acceptance test: eight clients, one free rider sending a
// random vector of matched norm, one sending its update sign-flipped, six
// honest. Exact Shapley, LOO, TMC and GTG must rank the two corrupted
// clients last.
func TestFederatedCorruptedRankedLast(t *testing.T) {
	for _, tc := range []struct {
		name string
		bad  map[int]string
	}{
		{"random=3/flip=6", map[int]string{3: "random", 6: "flip"}},
		{"random=0/flip=7", map[int]string{0: "random", 7: "flip"}},
		{"random=5/random=1", map[int]string{5: "random", 1: "random"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := syntheticRound(11, 8, 64, tc.bad)
			g, created, misuse := r.game(t, FederatedOptions{MaxScorers: 2})
			ev, err := NewEvaluator(g, 4)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range []string{MethodExactShapley, MethodLOO, MethodTMC, MethodGTG, MethodBanzhaf} {
				res := mustEstimate(t, m, Config{Seed: 1, Samples: 80}, ev)
				order := ranking(res.Values)
				last := []int{order[6], order[7]}
				for _, p := range last {
					if tc.bad[p] == "" {
						t.Errorf("%s: honest player %d ranked in the last two: values %.4g", m, p, res.Values)
					}
				}
			}
			if c := created.Load(); c < 1 || c > 2 {
				t.Errorf("%d scorers created, want 1 or 2 (MaxScorers)", c)
			}
			if k := misuse.Load(); k != 0 {
				t.Errorf("a scorer was used concurrently %d times", k)
			}
		})
	}
}

func TestFederatedValidation(t *testing.T) {
	ok := func() (ParamScorer, error) { return linearScorer{make([]float64, 3)}, nil }
	base := []float64{0, 0, 0}
	for _, tc := range []struct {
		name    string
		updates [][]float64
		weights []float64
		scorer  func() (ParamScorer, error)
		is      error
		msg     string
	}{
		{"no-players", nil, nil, ok, ErrPlayers, "0 players"},
		{"weights-length", [][]float64{{1, 2, 3}}, []float64{1, 2}, ok, ErrLength, "1 updates, 2 weights"},
		{"update-length", [][]float64{{1, 2, 3}, {1, 2}}, []float64{1, 1}, ok, ErrLength, "player 1: update has 2 values, want 3"},
		{"weight-zero", [][]float64{{1, 2, 3}, {1, 2, 3}}, []float64{1, 0}, ok, ErrWeight, "player 1: weight 0"},
		{"nan", [][]float64{{1, math.NaN(), 3}}, []float64{1}, ok, ErrInput, "player 0: update[1] = NaN"},
		{"nil-scorer", [][]float64{{1, 2, 3}}, []float64{1}, nil, ErrScorer, "newScorer is nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewFederatedGame(base, tc.updates, tc.weights, tc.scorer, FederatedOptions{})
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want %v containing %q", err, tc.is, tc.msg)
			}
		})
	}
	t.Run("scorer-error", func(t *testing.T) {
		boom := errors.New("boom")
		g, err := NewFederatedGame(base, [][]float64{{1, 2, 3}}, []float64{1}, func() (ParamScorer, error) { return nil, boom }, FederatedOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Utility(t.Context(), 1); !errors.Is(err, ErrScorer) || !errors.Is(err, boom) {
			t.Errorf("err = %v, want ErrScorer wrapping boom", err)
		}
	})
}

func TestFederatedNoAllocation(t *testing.T) {
	r := syntheticRound(5, 6, 256, nil)
	g, _, _ := r.game(t, FederatedOptions{})
	ctx := context.Background()
	if _, err := g.Utility(ctx, Grand(6)); err != nil { // warm-up: creates the worker
		t.Fatal(err)
	}
	s := Of(0, 2, 5)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := g.Utility(ctx, s); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Utility allocates %v times per call after warm-up", allocs)
	}
}

func TestFederatedParams(t *testing.T) {
	g, err := NewFederatedGame([]float64{1, 1}, [][]float64{{2, 0}, {0, 4}}, []float64{1, 3}, func() (ParamScorer, error) { return linearScorer{[]float64{1, 1}}, nil }, FederatedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float64, 2)
	for _, tc := range []struct {
		s    Coalition
		want []float64
	}{
		{0, []float64{1, 1}},
		{Of(0), []float64{3, 1}},
		{Of(1), []float64{1, 5}},
		{Of(0, 1), []float64{1.5, 4}}, // (1·[2,0] + 3·[0,4]) / 4
	} {
		if err := g.Params(tc.s, out); err != nil || !slices.Equal(out, tc.want) {
			t.Errorf("Params(%v) = %v, %v; want %v", tc.s, out, err, tc.want)
		}
	}
}
