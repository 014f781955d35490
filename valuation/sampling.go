package valuation

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// welford accumulates a mean and variance in one pass (Welford 1962), in a
// fixed order so that the same samples give the same bits.
type welford struct {
	count int
	mean  float64
	m2    float64
}

func (w *welford) add(x float64) {
	w.count++
	d := x - w.mean
	w.mean += d / float64(w.count)
	w.m2 += d * (x - w.mean)
}

// variance is the unbiased sample variance; +Inf below two samples.
func (w *welford) variance() float64 {
	if w.count < 2 {
		return math.Inf(1)
	}
	return w.m2 / float64(w.count-1)
}

// stderr is the standard error of the mean.
func (w *welford) stderr() float64 {
	if w.count < 2 {
		return math.Inf(1)
	}
	return math.Sqrt(w.variance() / float64(w.count))
}

// rngFor derives a method's random stream from the seed, so that two methods
// run with one seed do not draw the same numbers.
func rngFor(seed uint64, method string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(method))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// stopper applies the standard-error and rank-stability rules after each
// batch.
type stopper struct {
	cfg      Config
	prevRank []int
	stable   int
}

// check returns a stop reason or "".
func (st *stopper) check(samples int, values, se []float64) string {
	if samples < st.cfg.MinSamples {
		return ""
	}
	if st.cfg.SETarget > 0 && slices.Max(se) <= st.cfg.SETarget {
		return "se-target"
	}
	if st.cfg.RankStable > 0 {
		r := ranking(values)
		if st.prevRank != nil && slices.Equal(r, st.prevRank) {
			st.stable++
		} else {
			st.stable = 0
		}
		st.prevRank = r
		if st.stable >= st.cfg.RankStable {
			return "rank-stable"
		}
	}
	return ""
}

// ranking returns the players ordered by decreasing value, ties by index.
func ranking(values []float64) []int {
	idx := make([]int, len(values))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case values[a] > values[b]:
			return -1
		case values[a] < values[b]:
			return 1
		}
		return 0
	})
	return idx
}

// budgetOnly reports whether the budget is the only stopping rule. Then
// samples that hit the cache spend nothing, and a budget the run cannot reach
// would keep it sampling forever: above 2^n, or above what truncation lets
// tmc and gtg reach. So the run also stops once every coalition has been used
// ("exhausted") or once it stalls (see stall). With any other rule, sampling
// goes on (more samples still lower the variance, at no further evaluation
// cost), and that rule ends it.
func budgetOnly(cfg Config) bool {
	return cfg.Budget > 0 && cfg.Samples == 0 && cfg.SETarget == 0 && cfg.RankStable == 0
}

// stall is the budget-only rule against spinning on the cache: it counts the
// samples of consecutive batches that used no new coalition. Whether a batch
// used one depends only on which coalitions its samples visit, not on the
// order the workers visit them in, so a seed stalls at the same sample on
// any worker count.
type stall struct {
	on   bool
	idle int
}

// after records a batch of k samples that took the distinct count from
// before to now, and reports whether the run has stalled.
func (s *stall) after(k, before, now int) bool {
	if !s.on {
		return false
	}
	if now > before {
		s.idle = 0
		return false
	}
	s.idle += k
	return s.idle >= StallSamples
}

// permEstimator is permutation sampling of the Shapley value (Castro, Gómez
// & Tejada 2009), with truncation (TMC, Ghorbani & Zou 2019) and with
// GTG-Shapley's between-round truncation and guided permutations (Liu et
// al. 2022).
type permEstimator struct {
	name     string
	cfg      Config
	truncate bool
	guided   bool
}

func (p permEstimator) Method() string { return p.name }

func (p permEstimator) Estimate(ctx context.Context, g Game) (Result, error) {
	start := time.Now()
	cfg := p.cfg
	n := g.Players()
	ev, err := AsEvaluator(g, cfg.Workers)
	if err != nil {
		return Result{}, err
	}
	// A permutation needs U(∅), U(N) and up to n−1 prefixes in between.
	if cfg.Budget > 0 && cfg.Budget < n+1 {
		return Result{}, fmt.Errorf("%w: %s needs %d evaluations for one permutation of %d players, budget is %d",
			ErrBudget, p.name, n+1, n, cfg.Budget)
	}
	tr := newTracker(ev)
	rng := rngFor(cfg.Seed, p.name)
	full := Grand(n)
	ends := [2]float64{}
	err = ev.parallel(ctx, 2, func(ctx context.Context, k int) error {
		var err error
		ends[k], err = tr.get(ctx, Coalition(k)*full) // k=0: ∅, k=1: N
		return err
	})
	if err != nil {
		return Result{}, err
	}
	u0, uN := ends[0], ends[1]
	res := Result{Method: p.name, Values: make([]float64, n), StdErr: make([]float64, n)}
	finish := func(stop string) (Result, error) {
		res.Stop = stop
		res.Evaluations = tr.distinct()
		res.Computed = int(tr.fresh.Load())
		res.Wall = time.Since(start)
		return res, nil
	}
	if p.guided && math.Abs(uN-u0) <= cfg.RoundTolerance*math.Abs(uN) {
		// GTG between-round truncation: the round did not move the model
		// enough for anyone to have contributed; zeros, exactly.
		return finish("round-truncated")
	}
	thr := -1.0 // no truncation: |U(N) − U(prefix)| < −1 never holds
	if p.truncate {
		thr = cfg.Truncation * math.Abs(uN-u0)
	}

	batch := cfg.Batch
	if batch == 0 {
		batch = DefaultBatch
		if p.guided {
			batch = n
		}
	}
	perms := make([][]int, batch)
	margs := make([][]float64, batch)
	cuts := make([]int, batch)
	for j := range batch {
		perms[j] = make([]int, n)
		margs[j] = make([]float64, n)
	}
	stats := make([]welford, n)
	st := stopper{cfg: cfg}
	drawn := 0
	exhaustible := budgetOnly(cfg) && n < MaxPlayers
	stalled := stall{on: budgetOnly(cfg)}
	for {
		if cfg.Samples > 0 && drawn >= cfg.Samples {
			return finish("samples")
		}
		if exhaustible && tr.distinct() == 1<<n {
			return finish("exhausted")
		}
		k := batch
		if cfg.Samples > 0 {
			k = min(k, cfg.Samples-drawn)
		}
		if cfg.Budget > 0 {
			k = min(k, (cfg.Budget-tr.distinct())/max(n-1, 1))
			if k == 0 {
				return finish("budget")
			}
		}
		for j := range k {
			perm := perms[j]
			for i := range perm {
				perm[i] = i
			}
			if p.guided {
				// Guided sampling: permutation number t is led by player
				// t mod n, so every player leads equally often and its
				// small-coalition marginals (the ones truncation never
				// skips) are sampled evenly.
				lead := (drawn + j) % n
				perm[0], perm[lead] = perm[lead], perm[0]
				rest := perm[1:]
				rng.Shuffle(len(rest), func(a, b int) { rest[a], rest[b] = rest[b], rest[a] })
			} else {
				rng.Shuffle(n, func(a, b int) { perm[a], perm[b] = perm[b], perm[a] })
			}
		}
		before := tr.distinct()
		err := ev.parallel(ctx, k, func(ctx context.Context, j int) error {
			var err error
			cuts[j], err = walk(ctx, tr, perms[j], margs[j], u0, uN, thr)
			return err
		})
		if err != nil {
			return Result{}, err
		}
		for j := range k {
			for i, m := range margs[j] {
				stats[i].add(m)
			}
			res.Truncated += cuts[j]
		}
		drawn += k
		res.Samples = drawn
		for i := range stats {
			res.Values[i] = stats[i].mean
			res.StdErr[i] = stats[i].stderr()
		}
		if stalled.after(k, before, tr.distinct()) {
			return finish("stalled")
		}
		if stop := st.check(drawn, res.Values, res.StdErr); stop != "" {
			return finish(stop)
		}
	}
}

// walk fills marg with the marginal contributions along perm and returns how
// many were truncated: once |U(N) − U(prefix)| < thr, the remaining players
// add nothing (within the tolerance) and are given zero without evaluation.
func walk(ctx context.Context, tr *tracker, perm []int, marg []float64, u0, uN, thr float64) (int, error) {
	n := len(perm)
	prev := u0
	var s Coalition
	for pos, p := range perm {
		if math.Abs(uN-prev) < thr {
			for _, q := range perm[pos:] {
				marg[q] = 0
			}
			return n - pos, nil
		}
		s = s.With(p)
		v := uN
		if pos < n-1 {
			var err error
			if v, err = tr.get(ctx, s); err != nil {
				return 0, err
			}
		}
		marg[p] = v - prev
		prev = v
	}
	return 0, nil
}

// msrEstimator estimates the Banzhaf value by maximum sample reuse (Wang &
// Jia 2023): draw coalitions uniformly; every draw is used for every player,
// as a sample of E[U(S) | i ∈ S] or of E[U(S) | i ∉ S], and
// β_i = E[U(S) | i ∈ S] − E[U(S) | i ∉ S].
type msrEstimator struct{ cfg Config }

func (msrEstimator) Method() string { return MethodBanzhaf }

func (m msrEstimator) Estimate(ctx context.Context, g Game) (Result, error) {
	start := time.Now()
	cfg := m.cfg
	n := g.Players()
	ev, err := AsEvaluator(g, cfg.Workers)
	if err != nil {
		return Result{}, err
	}
	tr := newTracker(ev)
	rng := rngFor(cfg.Seed, MethodBanzhaf)
	full := Grand(n)
	batch := cfg.Batch
	if batch == 0 {
		batch = 8 * DefaultBatch
	}
	draws := make([]Coalition, batch)
	vals := make([]float64, batch)
	in := make([]welford, n)
	out := make([]welford, n)
	res := Result{Method: MethodBanzhaf, Values: make([]float64, n), StdErr: make([]float64, n)}
	st := stopper{cfg: cfg}
	finish := func(stop string) (Result, error) {
		res.Stop = stop
		res.Evaluations = tr.distinct()
		res.Computed = int(tr.fresh.Load())
		res.Wall = time.Since(start)
		return res, nil
	}
	exhaustible := budgetOnly(cfg) && n < MaxPlayers
	stalled := stall{on: budgetOnly(cfg)}
	for {
		if cfg.Samples > 0 && res.Samples >= cfg.Samples {
			return finish("samples")
		}
		if exhaustible && tr.distinct() == 1<<n {
			return finish("exhausted")
		}
		k := batch
		if cfg.Samples > 0 {
			k = min(k, cfg.Samples-res.Samples)
		}
		if cfg.Budget > 0 {
			// Each draw adds at most one distinct coalition.
			k = min(k, cfg.Budget-tr.distinct())
			if k <= 0 {
				return finish("budget")
			}
		}
		for j := range k {
			draws[j] = Coalition(rng.Uint64()) & full
		}
		before := tr.distinct()
		err := ev.parallel(ctx, k, func(ctx context.Context, j int) error {
			var err error
			vals[j], err = tr.get(ctx, draws[j])
			return err
		})
		if err != nil {
			return Result{}, err
		}
		for j := range k {
			for i := range n {
				if draws[j].Has(i) {
					in[i].add(vals[j])
				} else {
					out[i].add(vals[j])
				}
			}
		}
		res.Samples += k
		for i := range n {
			if in[i].count == 0 || out[i].count == 0 {
				res.Values[i], res.StdErr[i] = 0, math.Inf(1)
				continue
			}
			res.Values[i] = in[i].mean - out[i].mean
			res.StdErr[i] = math.Sqrt(in[i].variance()/float64(in[i].count) + out[i].variance()/float64(out[i].count))
		}
		if stalled.after(k, before, tr.distinct()) {
			return finish("stalled")
		}
		if stop := st.check(res.Samples, res.Values, res.StdErr); stop != "" {
			return finish(stop)
		}
	}
}
