package valuation

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestExactAnalyticGames(t *testing.T) {
	for _, tc := range []struct {
		name    string
		game    GameFunc
		shapley []float64
		banzhaf []float64
	}{
		{
			name:    "additive/n=5",
			game:    additiveGame([]float64{0.5, -1.25, 3, 0, 2.75}),
			shapley: []float64{0.5, -1.25, 3, 0, 2.75},
			banzhaf: []float64{0.5, -1.25, 3, 0, 2.75},
		},
		{
			// Two left gloves, one right: the scarce right glove gets 2/3.
			name:    "glove/left=2/right=1",
			game:    gloveGame(3, Of(0, 1)),
			shapley: []float64{1.0 / 6, 1.0 / 6, 2.0 / 3},
			banzhaf: []float64{1.0 / 4, 1.0 / 4, 3.0 / 4},
		},
		{
			// [51; 50, 49, 1]: the large party needs any partner.
			name:    "majority/51:50,49,1",
			game:    majorityGame(51, []float64{50, 49, 1}),
			shapley: []float64{2.0 / 3, 1.0 / 6, 1.0 / 6},
			banzhaf: []float64{3.0 / 4, 1.0 / 4, 1.0 / 4},
		},
		{
			// Council of the EEC, 1958: [12; 4,4,4,2,2,1]. Luxembourg is a
			// null player; Shapley–Shubik 14/60 and 9/60; Banzhaf swings 10
			// and 6 of 32.
			name:    "majority/eec1958",
			game:    majorityGame(12, []float64{4, 4, 4, 2, 2, 1}),
			shapley: []float64{14.0 / 60, 14.0 / 60, 14.0 / 60, 9.0 / 60, 9.0 / 60, 0},
			banzhaf: []float64{10.0 / 32, 10.0 / 32, 10.0 / 32, 6.0 / 32, 6.0 / 32, 0},
		},
		{
			name:    "unanimity/n=6/T={1,3,4}",
			game:    unanimityGame(6, Of(1, 3, 4)),
			shapley: []float64{0, 1.0 / 3, 0, 1.0 / 3, 1.0 / 3, 0},
			banzhaf: []float64{0, 1.0 / 4, 0, 1.0 / 4, 1.0 / 4, 0},
		},
		{
			name:    "unanimity/n=12/T=all",
			game:    unanimityGame(12, Grand(12)),
			shapley: constant(12, 1.0/12),
			banzhaf: constant(12, 1.0/2048),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sh := mustEstimate(t, MethodExactShapley, Config{}, tc.game)
			assertClose(t, "shapley", sh.Values, tc.shapley, 1e-12)
			if sh.Evaluations != 1<<tc.game.N || sh.Computed != 1<<tc.game.N {
				t.Errorf("shapley used %d/%d evaluations, want %d", sh.Evaluations, sh.Computed, 1<<tc.game.N)
			}
			bz := mustEstimate(t, MethodExactBanzhaf, Config{}, tc.game)
			assertClose(t, "banzhaf", bz.Values, tc.banzhaf, 1e-12)
		})
	}
}

func constant(n int, x float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = x
	}
	return out
}

func TestExactMatchesPermutationEnumeration(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 3, 5, 7} {
		for kind := range 2 {
			v := randomTable(rng, n, kind)
			got := mustEstimate(t, MethodExactShapley, Config{}, tableGame(n, v))
			assertClose(t, "exact vs n! enumeration", got.Values, bruteShapley(n, v), 1e-12)
		}
	}
}

// TestShapleyAxioms checks efficiency, symmetry, null player and additivity
// on random games.
func TestShapleyAxioms(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{2, 4, 6, 8} {
		base := randomTable(rng, n, 0)
		base[0] = rng.Float64() // a non-zero empty coalition must not matter

		// Efficiency: Σφ = U(N) − U(∅).
		phi := mustEstimate(t, MethodExactShapley, Config{}, tableGame(n, base)).Values
		if got, want := sum(phi), base[Grand(n)]-base[0]; math.Abs(got-want) > 1e-12 {
			t.Errorf("n=%d: efficiency: Σφ = %.15g, want %.15g", n, got, want)
		}

		// Symmetry: make players 0 and 1 interchangeable.
		sym := make([]float64, len(base))
		for s := range sym {
			S := Coalition(s)
			if S.Has(1) && !S.Has(0) {
				S = S.Without(1).With(0)
			}
			sym[s] = base[S]
		}
		phi = mustEstimate(t, MethodExactShapley, Config{}, tableGame(n, sym)).Values
		if math.Abs(phi[0]-phi[1]) > 1e-12 {
			t.Errorf("n=%d: symmetry: φ0 = %.15g, φ1 = %.15g", n, phi[0], phi[1])
		}

		// Null player: the last player changes nothing.
		null := n - 1
		nul := make([]float64, len(base))
		for s := range nul {
			nul[s] = base[Coalition(s).Without(null)]
		}
		phi = mustEstimate(t, MethodExactShapley, Config{}, tableGame(n, nul)).Values
		if math.Abs(phi[null]) > 1e-12 {
			t.Errorf("n=%d: null player: φ = %.3g", n, phi[null])
		}
		bz := mustEstimate(t, MethodExactBanzhaf, Config{}, tableGame(n, nul)).Values
		if math.Abs(bz[null]) > 1e-12 {
			t.Errorf("n=%d: null player (banzhaf): β = %.3g", n, bz[null])
		}

		// Additivity: φ(u+w) = φ(u) + φ(w).
		other := randomTable(rng, n, 1)
		both := make([]float64, len(base))
		for s := range both {
			both[s] = base[s] + other[s]
		}
		pu := mustEstimate(t, MethodExactShapley, Config{}, tableGame(n, base)).Values
		pw := mustEstimate(t, MethodExactShapley, Config{}, tableGame(n, other)).Values
		pb := mustEstimate(t, MethodExactShapley, Config{}, tableGame(n, both)).Values
		for i := range pb {
			if math.Abs(pb[i]-pu[i]-pw[i]) > 1e-12 {
				t.Errorf("n=%d: additivity: player %d: %.15g ≠ %.15g + %.15g", n, i, pb[i], pu[i], pw[i])
			}
		}
	}
}

func TestLeaveOneOut(t *testing.T) {
	// Additive: LOO is the weight. Glove game: removing a left glove costs
	// nothing (the other left glove replaces it), the classic duplicate
	// failure, while removing the right glove costs the pair.
	loo := mustEstimate(t, MethodLOO, Config{}, additiveGame([]float64{1, 2, -3}))
	assertClose(t, "additive", loo.Values, []float64{1, 2, -3}, 1e-15)
	if loo.Evaluations != 4 {
		t.Errorf("additive: %d evaluations, want n+1 = 4", loo.Evaluations)
	}
	loo = mustEstimate(t, MethodLOO, Config{}, gloveGame(3, Of(0, 1)))
	assertClose(t, "glove", loo.Values, []float64{0, 0, 1}, 0)
}

func TestExactRefusesLargeGames(t *testing.T) {
	g := additiveGame(make([]float64, MaxExactPlayers+1))
	for _, m := range []string{MethodExactShapley, MethodExactBanzhaf} {
		est, err := NewEstimator(m, Config{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := est.Estimate(t.Context(), g); !errorsIs(err, ErrTooManyPlayers) {
			t.Errorf("%s at n=%d: err = %v, want ErrTooManyPlayers", m, MaxExactPlayers+1, err)
		}
	}
}

// TestBanzhafMSRAnalytic: maximum-sample-reuse estimates of the analytic
// games' Banzhaf values fall within 3 standard errors of the closed forms,
// and the standard errors are small enough for that to mean something.
func TestBanzhafMSRAnalytic(t *testing.T) {
	for _, tc := range []struct {
		name string
		game GameFunc
		want []float64
	}{
		{"glove", gloveGame(3, Of(0, 1)), []float64{0.25, 0.25, 0.75}},
		{"majority/eec1958", majorityGame(12, []float64{4, 4, 4, 2, 2, 1}), []float64{10.0 / 32, 10.0 / 32, 10.0 / 32, 6.0 / 32, 6.0 / 32, 0}},
		{"unanimity/n=6", unanimityGame(6, Of(1, 3, 4)), []float64{0, 0.25, 0, 0.25, 0.25, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := mustEstimate(t, MethodBanzhaf, Config{Seed: 5, Samples: 4000}, tc.game)
			for i, w := range tc.want {
				se := res.StdErr[i]
				if se > 0.03 || math.Abs(res.Values[i]-w) > 3*se+1e-12 {
					t.Errorf("player %d: %.4f ± %.4f, closed form %.4f", i, res.Values[i], se, w)
				}
			}
		})
	}
}
