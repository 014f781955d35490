package valuation

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestSampledWithinThreeSE is the convergence property: on random games with
// n ≤ 8, Monte Carlo and TMC estimates fall within 3 standard errors of exact
// Shapley for at least 95% of players (about 99.7% if the errors were exactly
// normal, so 95% leaves room for the t-distribution of small samples and
// TMC's truncation bias). Banzhaf MSR is held to the same bar against exact
// Banzhaf.
func TestSampledWithinThreeSE(t *testing.T) {
	for _, method := range []string{MethodMonteCarlo, MethodTMC, MethodGTG, MethodBanzhaf} {
		t.Run(method, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 6))
			exactName := MethodExactShapley
			if method == MethodBanzhaf {
				exactName = MethodExactBanzhaf
			}
			inside, total := 0, 0
			for game := range 24 {
				n := 3 + game%6
				v := randomTable(rng, n, game%2)
				g := tableGame(n, v)
				exact := mustEstimate(t, exactName, Config{}, g).Values
				samples := 150
				if method == MethodBanzhaf {
					samples = 600
				}
				res := mustEstimate(t, method, Config{Seed: uint64(game), Samples: samples}, g)
				if res.Samples != samples || res.Stop != "samples" {
					t.Fatalf("game %d: %d samples, stop %q; want %d, \"samples\"", game, res.Samples, res.Stop, samples)
				}
				for i := range n {
					total++
					se := res.StdErr[i]
					if !(se >= 0) {
						t.Fatalf("game %d player %d: standard error %v", game, i, se)
					}
					if math.Abs(res.Values[i]-exact[i]) <= 3*se+1e-12 {
						inside++
					}
				}
			}
			frac := float64(inside) / float64(total)
			t.Logf("%d of %d players (%.1f%%) within 3 SE of exact", inside, total, 100*frac)
			if frac < 0.95 {
				t.Errorf("%d of %d players (%.1f%%) within 3 SE of exact, want ≥ 95%%", inside, total, 100*frac)
			}
		})
	}
}

// TestSampledErrorShrinks guards against a trivially large standard error
// passing the 3-SE test: the mean absolute error at 400 permutations must be
// below a tenth of the spread of the exact values.
func TestSampledErrorShrinks(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	v := randomTable(rng, 6, 1)
	g := tableGame(6, v)
	exact := mustEstimate(t, MethodExactShapley, Config{}, g).Values
	spread := slices.Max(exact) - slices.Min(exact)
	for _, m := range []string{MethodMonteCarlo, MethodTMC, MethodGTG} {
		res := mustEstimate(t, m, Config{Seed: 1, Samples: 400}, g)
		mae := 0.0
		for i := range exact {
			mae += math.Abs(res.Values[i]-exact[i]) / float64(len(exact))
		}
		if mae > spread/10 {
			t.Errorf("%s: mean |error| %.4g > spread/10 = %.4g", m, mae, spread/10)
		}
	}
}

func TestSameSeedSameBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	v := randomTable(rng, 7, 0)
	for _, m := range []string{MethodMonteCarlo, MethodTMC, MethodGTG, MethodBanzhaf} {
		t.Run(m, func(t *testing.T) {
			var runs []Result
			for _, workers := range []int{1, 3, 8} {
				runs = append(runs, mustEstimate(t, m, Config{Seed: 42, Samples: 64, Workers: workers}, tableGame(7, v)))
			}
			for k, r := range runs[1:] {
				if !slices.Equal(r.Values, runs[0].Values) || !slices.Equal(r.StdErr, runs[0].StdErr) ||
					r.Evaluations != runs[0].Evaluations || r.Truncated != runs[0].Truncated {
					t.Errorf("run %d differs from run 0 with the same seed:\n%v\n%v", k+1, r.Values, runs[0].Values)
				}
			}
			other := mustEstimate(t, m, Config{Seed: 43, Samples: 64}, tableGame(7, v))
			if slices.Equal(other.Values, runs[0].Values) {
				t.Errorf("seeds 42 and 43 gave identical values")
			}
		})
	}
}

func TestStoppingRules(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	n := 8
	v := randomTable(rng, n, 1)
	g := tableGame(n, v)
	for _, m := range []string{MethodMonteCarlo, MethodTMC, MethodGTG, MethodBanzhaf} {
		t.Run(m+"/budget", func(t *testing.T) {
			for _, budget := range []int{9, 40, 100, 177} {
				res := mustEstimate(t, m, Config{Seed: 1, Budget: budget}, g)
				if res.Evaluations > budget {
					t.Errorf("budget %d: used %d evaluations", budget, res.Evaluations)
				}
				if res.Stop != "budget" {
					t.Errorf("budget %d: stop %q, want budget", budget, res.Stop)
				}
				if res.Samples == 0 {
					t.Errorf("budget %d: no samples drawn", budget)
				}
			}
		})
		t.Run(m+"/se-target", func(t *testing.T) {
			const target = 0.05
			res := mustEstimate(t, m, Config{Seed: 1, SETarget: target, Samples: 100000}, g)
			if res.Stop != "se-target" || slices.Max(res.StdErr) > target {
				t.Errorf("stop %q with max SE %.4g, want se-target ≤ %v", res.Stop, slices.Max(res.StdErr), target)
			}
			if res.Samples < DefaultMinSamples {
				t.Errorf("stopped after %d samples, before min_samples", res.Samples)
			}
		})
		t.Run(m+"/rank-stable", func(t *testing.T) {
			res := mustEstimate(t, m, Config{Seed: 1, RankStable: 3, Samples: 100000}, g)
			if res.Stop != "rank-stable" {
				t.Errorf("stop %q, want rank-stable", res.Stop)
			}
		})
	}
	t.Run("monte-carlo/exhausted", func(t *testing.T) {
		// Three players have 8 coalitions; a large budget cannot be spent.
		res := mustEstimate(t, MethodMonteCarlo, Config{Seed: 1, Budget: 1000}, additiveGame([]float64{1, 2, 3}))
		if res.Stop != "exhausted" || res.Evaluations != 8 {
			t.Errorf("stop %q after %d evaluations, want exhausted after 8", res.Stop, res.Evaluations)
		}
	})
	t.Run("monte-carlo/budget-too-small", func(t *testing.T) {
		est, err := NewEstimator(MethodMonteCarlo, Config{Budget: n})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := est.Estimate(t.Context(), g); !errorsIs(err, ErrBudget) {
			t.Errorf("budget %d for %d players: err = %v, want ErrBudget", n, n, err)
		}
	})
}

// TestBudgetOnlyStalls is the regression test for a budget-only tmc or gtg
// run that never returned: on a game where any non-empty coalition has the
// full utility, truncation stops every permutation after its leader, so
// only ∅, N and the 4 singletons are ever used and a budget of 16 cannot be
// spent, nor can all 16 coalitions be used. The run must stop "stalled"
// after StallSamples idle samples, with efficiency intact, and with the same
// bits on 1 and 3 workers. The deadline only turns a regression into a
// failure instead of a hung test; it is not a timing assertion.
func TestBudgetOnlyStalls(t *testing.T) {
	g := GameFunc{N: 4, F: func(s Coalition) float64 {
		if s != 0 {
			return 1
		}
		return 0
	}}
	for _, m := range []string{MethodTMC, MethodGTG} {
		t.Run(m, func(t *testing.T) {
			var runs []Result
			for _, workers := range []int{1, 3} {
				est, err := NewEstimator(m, Config{Seed: 7, Budget: 16, Workers: workers})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				res, err := est.Estimate(ctx, g)
				cancel()
				if err != nil {
					t.Fatalf("workers=%d: %v", workers, err)
				}
				if res.Stop != "stalled" || res.Evaluations != 6 {
					t.Errorf("workers=%d: stop %q after %d evaluations, want stalled after 6", workers, res.Stop, res.Evaluations)
				}
				if res.Samples < StallSamples || res.Samples > StallSamples+2*DefaultBatch+g.N {
					t.Errorf("workers=%d: %d samples, want StallSamples (%d) plus at most the first batches", workers, res.Samples, StallSamples)
				}
				if math.Abs(sum(res.Values)-1) > 1e-12 {
					t.Errorf("workers=%d: Σφ = %.15g, want 1", workers, sum(res.Values))
				}
				runs = append(runs, res)
			}
			if !slices.Equal(runs[0].Values, runs[1].Values) || !slices.Equal(runs[0].StdErr, runs[1].StdErr) || runs[0].Samples != runs[1].Samples {
				t.Errorf("1 and 3 workers differ: %v (%d samples) vs %v (%d samples)", runs[0].Values, runs[0].Samples, runs[1].Values, runs[1].Samples)
			}
		})
	}
}

// TestBudgetOnlyEnds checks every sampled method on budgets it cannot spend
// (above 2^n, or beyond what truncation reaches): each run ends, "exhausted"
// or "stalled", within the budget and within the 2^n coalitions. Without
// truncation, monte-carlo and banzhaf can reach every coalition, so on these
// small games they use all of them; on the saturating game tmc and gtg reach
// only ∅, N, the singletons and the pairs.
func TestBudgetOnlyEnds(t *testing.T) {
	saturating := func(n int) GameFunc {
		return GameFunc{N: n, F: func(s Coalition) float64 { return math.Min(1, float64(s.Size())/2) }}
	}
	all := []string{MethodMonteCarlo, MethodTMC, MethodGTG, MethodBanzhaf}
	for _, tc := range []struct {
		name    string
		g       GameFunc
		budget  int
		methods []string
	}{
		{"additive/n=3/budget=1000", additiveGame([]float64{1, 2, 3}), 1000, all},
		{"saturating/n=6/budget=500", saturating(6), 500, all},
		// 40 < 2^6: only truncation keeps tmc and gtg from spending it.
		{"saturating/n=6/budget=40", saturating(6), 40, []string{MethodTMC, MethodGTG}},
	} {
		for _, m := range tc.methods {
			t.Run(tc.name+"/"+m, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				est, err := NewEstimator(m, Config{Seed: 3, Budget: tc.budget})
				if err != nil {
					t.Fatal(err)
				}
				res, err := est.Estimate(ctx, tc.g)
				if err != nil {
					t.Fatal(err)
				}
				n := tc.g.N
				if res.Stop != "exhausted" && res.Stop != "stalled" {
					t.Errorf("stop %q, want exhausted or stalled", res.Stop)
				}
				if res.Evaluations > min(tc.budget, 1<<n) {
					t.Errorf("%d evaluations, budget %d, %d coalitions", res.Evaluations, tc.budget, 1<<n)
				}
				want := 1 << n
				if (m == MethodTMC || m == MethodGTG) && tc.g.N == 6 {
					want = 2 + n + n*(n-1)/2
				}
				if res.Evaluations != want {
					t.Errorf("stop %q after %d evaluations, want %d", res.Stop, res.Evaluations, want)
				}
			})
		}
	}
}

func TestTruncation(t *testing.T) {
	// A saturating game: any two players reach the full utility, so every
	// later marginal is exactly zero and truncation is free of bias.
	n := 10
	g := GameFunc{N: n, F: func(s Coalition) float64 { return math.Min(1, float64(s.Size())/2) }}
	mc := mustEstimate(t, MethodMonteCarlo, Config{Seed: 3, Samples: 50}, g)
	tmc := mustEstimate(t, MethodTMC, Config{Seed: 3, Samples: 50}, g)
	if mc.Truncated != 0 {
		t.Errorf("monte-carlo truncated %d marginals", mc.Truncated)
	}
	if want := 50 * (n - 2); tmc.Truncated != want {
		t.Errorf("tmc truncated %d marginals, want %d", tmc.Truncated, want)
	}
	if tmc.Evaluations >= mc.Evaluations {
		t.Errorf("tmc used %d evaluations, monte-carlo %d: truncation saved nothing", tmc.Evaluations, mc.Evaluations)
	}
	// Same permutations (TMC and MC share nothing but the game, so compare
	// with exact): efficiency holds per permutation in both.
	for _, r := range []Result{mc, tmc} {
		if math.Abs(sum(r.Values)-1) > 1e-12 {
			t.Errorf("%s: Σφ = %.15g, want 1", r.Method, sum(r.Values))
		}
	}
}

func TestGTGRoundTruncation(t *testing.T) {
	calls := 0
	g := GameFunc{N: 6, F: func(s Coalition) float64 { calls++; return 0.8 }}
	res := mustEstimate(t, MethodGTG, Config{Seed: 1, Workers: 1}, g)
	if res.Stop != "round-truncated" || res.Evaluations != 2 || calls != 2 {
		t.Errorf("stop %q after %d evaluations (%d calls), want round-truncated after 2", res.Stop, res.Evaluations, calls)
	}
	if slices.ContainsFunc(res.Values, func(x float64) bool { return x != 0 }) {
		t.Errorf("values %v, want zeros", res.Values)
	}
}

// TestGTGGuidedLeaders checks guided sampling: the only one-player prefix of
// a permutation is its leader, so with one worker the singletons a guided
// round evaluates, in order, are exactly {0}, {1}, …, {n−1}.
func TestGTGGuidedLeaders(t *testing.T) {
	for _, n := range []int{2, 5, 9} {
		var leaders []int
		g := GameFunc{N: n, F: func(s Coalition) float64 {
			if s.Size() == 1 {
				leaders = append(leaders, s.Members()[0])
			}
			return float64(s.Size()) // additive: no prefix truncates early
		}}
		res := mustEstimate(t, MethodGTG, Config{Seed: 9, Samples: n, Workers: 1}, g)
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		if !slices.Equal(leaders, want) {
			t.Errorf("n=%d: leaders %v, want %v", n, leaders, want)
		}
		assertClose(t, "gtg additive", res.Values, constant(n, 1), 1e-12)
	}
}

func TestSampledEstimatesShareCache(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	v := randomTable(rng, 6, 0)
	ev, err := NewEvaluator(tableGame(6, v), 2)
	if err != nil {
		t.Fatal(err)
	}
	ex := mustEstimate(t, MethodExactShapley, Config{}, ev)
	if ex.Computed != 64 {
		t.Fatalf("exact computed %d, want 64", ex.Computed)
	}
	for _, m := range Methods() {
		res := mustEstimate(t, m, Config{Seed: 1, Samples: 20}, ev)
		if res.Computed != 0 {
			t.Errorf("%s computed %d coalitions on a full cache", m, res.Computed)
		}
		if res.Evaluations == 0 {
			t.Errorf("%s reports no evaluations", m)
		}
	}
	if got := ev.Evaluations(); got != 64 {
		t.Errorf("evaluator made %d utility calls, want 64", got)
	}
}

func ExampleNewEstimator() {
	g := GameFunc{N: 3, F: func(s Coalition) float64 {
		// Two left gloves (players 0 and 1), one right glove (player 2).
		return float64(min((s & Of(0, 1)).Size(), (s & Of(2)).Size()))
	}}
	est, _ := NewEstimator("exact-shapley", Config{})
	res, _ := est.Estimate(context.Background(), g)
	fmt.Printf("%.4f %d evaluations\n", res.Values, res.Evaluations)
	// Output: [0.1667 0.1667 0.6667] 8 evaluations
}
