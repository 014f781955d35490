package valuation

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// exactEstimator computes the Shapley value (Shapley 1953) or the Banzhaf
// value (Banzhaf 1965) from all 2^n coalitions.
type exactEstimator struct {
	name    string
	workers int
	banzhaf bool
}

func (x exactEstimator) Method() string { return x.name }

func (x exactEstimator) Estimate(ctx context.Context, g Game) (Result, error) {
	start := time.Now()
	n := g.Players()
	if err := checkPlayers(n); err != nil {
		return Result{}, err
	}
	if n > MaxExactPlayers {
		return Result{}, fmt.Errorf("%w: %s with %d players (at most %d)", ErrTooManyPlayers, x.name, n, MaxExactPlayers)
	}
	ev, err := AsEvaluator(g, x.workers)
	if err != nil {
		return Result{}, err
	}
	// Every coalition is needed exactly once, so the run's distinct-coalition
	// count is 2^n without a seen-set (which at n = 20 would cost 40 MB).
	size := 1 << n
	v := make([]float64, size)
	var fresh atomic.Int64
	err = ev.parallel(ctx, size, func(ctx context.Context, k int) error {
		u, c, err := ev.get(ctx, Coalition(k))
		if c {
			fresh.Add(1)
		}
		v[k] = u
		return err
	})
	if err != nil {
		return Result{}, err
	}
	var values []float64
	if x.banzhaf {
		values = banzhafFromTable(n, v)
	} else {
		values = shapleyFromTable(n, v)
	}
	return Result{
		Method:      x.name,
		Values:      values,
		StdErr:      make([]float64, n),
		Evaluations: size,
		Computed:    int(fresh.Load()),
		Stop:        "exact",
		Wall:        time.Since(start),
	}, nil
}

// shapleyFromTable returns φ_i = Σ_{S∌i} |S|!(n−|S|−1)!/n! · (v[S∪i] − v[S])
// from the table v[S] of all 2^n utilities.
func shapleyFromTable(n int, v []float64) []float64 {
	// w[s] = s!(n−s−1)!/n! = 1/(n·C(n−1, s)); the binomials are exact
	// integers in float64 for n ≤ 63 up to 2^53, far beyond MaxExactPlayers.
	w := make([]float64, n)
	binom := 1.0
	for s := range n {
		w[s] = 1 / (float64(n) * binom)
		binom = binom * float64(n-1-s) / float64(s+1)
	}
	phi := make([]float64, n)
	for s := range v {
		S := Coalition(s)
		ws := w[min(S.Size(), n-1)]
		for i := range n {
			if !S.Has(i) {
				phi[i] += ws * (v[S.With(i)] - v[s])
			}
		}
	}
	return phi
}

// banzhafFromTable returns β_i = 2^{−(n−1)} Σ_{S∌i} (v[S∪i] − v[S]).
func banzhafFromTable(n int, v []float64) []float64 {
	phi := make([]float64, n)
	for s := range v {
		S := Coalition(s)
		for i := range n {
			if !S.Has(i) {
				phi[i] += v[S.With(i)] - v[s]
			}
		}
	}
	scale := 1 / float64(uint64(1)<<uint(n-1))
	for i := range phi {
		phi[i] *= scale
	}
	return phi
}

// looEstimator is leave-one-out: φ_i = U(N) − U(N∖{i}), n+1 evaluations.
type looEstimator struct{ workers int }

func (looEstimator) Method() string { return MethodLOO }

func (l looEstimator) Estimate(ctx context.Context, g Game) (Result, error) {
	start := time.Now()
	n := g.Players()
	ev, err := AsEvaluator(g, l.workers)
	if err != nil {
		return Result{}, err
	}
	tr := newTracker(ev)
	full := Grand(n)
	ss := make([]Coalition, n+1)
	ss[n] = full
	for i := range n {
		ss[i] = full.Without(i)
	}
	u := make([]float64, n+1)
	err = ev.parallel(ctx, n+1, func(ctx context.Context, k int) error {
		var err error
		u[k], err = tr.get(ctx, ss[k])
		return err
	})
	if err != nil {
		return Result{}, err
	}
	values := make([]float64, n)
	for i := range n {
		values[i] = u[n] - u[i]
	}
	return Result{
		Method:      MethodLOO,
		Values:      values,
		StdErr:      make([]float64, n),
		Evaluations: tr.distinct(),
		Computed:    int(tr.fresh.Load()),
		Stop:        "exact",
		Wall:        time.Since(start),
	}, nil
}
