package valuation

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// Analytic games used across the tests.

func additiveGame(w []float64) GameFunc {
	return GameFunc{N: len(w), F: func(s Coalition) float64 {
		t := 0.0
		for i, x := range w {
			if s.Has(i) {
				t += x
			}
		}
		return t
	}}
}

// gloveGame: players in left own a left glove, the others a right glove; a
// coalition is worth its number of pairs.
func gloveGame(n int, left Coalition) GameFunc {
	return GameFunc{N: n, F: func(s Coalition) float64 {
		l := (s & left).Size()
		r := (s &^ left).Size()
		return float64(min(l, r))
	}}
}

// majorityGame is the weighted voting game [quota; weights].
func majorityGame(quota float64, w []float64) GameFunc {
	return GameFunc{N: len(w), F: func(s Coalition) float64 {
		t := 0.0
		for i, x := range w {
			if s.Has(i) {
				t += x
			}
		}
		if t >= quota {
			return 1
		}
		return 0
	}}
}

// unanimityGame u_T(S) = 1 if T ⊆ S.
func unanimityGame(n int, t Coalition) GameFunc {
	return GameFunc{N: n, F: func(s Coalition) float64 {
		if s&t == t {
			return 1
		}
		return 0
	}}
}

// tableGame is a game given by its full table of 2^n utilities.
func tableGame(n int, v []float64) GameFunc {
	return GameFunc{N: n, F: func(s Coalition) float64 { return v[s] }}
}

// randomTable draws a random game: i.i.d. uniform utilities, or (kind 1) a
// random positive combination of unanimity games, which is monotone and
// closer to a learning curve.
func randomTable(rng *rand.Rand, n, kind int) []float64 {
	v := make([]float64, 1<<n)
	switch kind {
	case 0:
		for s := 1; s < len(v); s++ {
			v[s] = rng.Float64()
		}
	default:
		type term struct {
			t Coalition
			c float64
		}
		terms := make([]term, 2*n)
		for k := range terms {
			terms[k] = term{Coalition(rng.Uint64()) & Grand(n), rng.Float64()}
			if terms[k].t == 0 {
				terms[k].t = Singleton(rng.IntN(n))
			}
		}
		for s := range v {
			for _, tm := range terms {
				if Coalition(s)&tm.t == tm.t {
					v[s] += tm.c
				}
			}
		}
	}
	return v
}

// bruteShapley averages marginal contributions over all n! orders: an
// independent check on the exact estimator (feasible for n ≤ 7).
func bruteShapley(n int, v []float64) []float64 {
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	phi := make([]float64, n)
	count := 0
	var rec func(k int)
	rec = func(k int) {
		if k == n {
			var s Coalition
			for _, p := range perm {
				phi[p] += v[s.With(p)] - v[s]
				s = s.With(p)
			}
			count++
			return
		}
		for j := k; j < n; j++ {
			perm[k], perm[j] = perm[j], perm[k]
			rec(k + 1)
			perm[k], perm[j] = perm[j], perm[k]
		}
	}
	rec(0)
	for i := range phi {
		phi[i] /= float64(count)
	}
	return phi
}

func mustEstimate(t testing.TB, method string, cfg Config, g Game) Result {
	t.Helper()
	est, err := NewEstimator(method, cfg)
	if err != nil {
		t.Fatalf("NewEstimator(%q): %v", method, err)
	}
	res, err := est.Estimate(context.Background(), g)
	if err != nil {
		t.Fatalf("%s: Estimate: %v", method, err)
	}
	if len(res.Values) != g.Players() || len(res.StdErr) != g.Players() {
		t.Fatalf("%s: %d values, %d stderrs for %d players", method, len(res.Values), len(res.StdErr), g.Players())
	}
	return res
}

func assertClose(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if math.Abs(got[i]-want[i]) > tol {
			t.Errorf("%s: player %d: got %.15g, want %.15g (|Δ| = %.3g > %.1g)", what, i, got[i], want[i], math.Abs(got[i]-want[i]), tol)
		}
	}
}

func sum(x []float64) float64 {
	s := 0.0
	for _, v := range x {
		s += v
	}
	return s
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func runtimeGosched() { runtime.Gosched() }
