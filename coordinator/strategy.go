package coordinator

import (
	"math"
	"math/rand/v2"
	"slices"
)

// FedAvg selects a seeded fraction of the available clients and moves the
// global model by the n_i-weighted mean of their updates (McMahan et al.,
// AISTATS 2017).
type FedAvg struct {
	// Fraction of the available clients selected per round; at least Min.
	Fraction float64
	Min      int
	// Aggregate is the weighted mean of updates; the aggregation package
	// provides it so plaintext and encrypted paths share one definition.
	Mean func(updates [][]float64, weights []float64) ([]float64, error)
}

// Select implements Strategy.
func (f FedAvg) Select(available []string, rng *rand.Rand) []string {
	k := int(math.Ceil(f.Fraction * float64(len(available))))
	k = max(k, f.Min)
	if k >= len(available) {
		return slices.Clone(available)
	}
	perm := rng.Perm(len(available))[:k]
	slices.Sort(perm)
	out := make([]string, k)
	for i, p := range perm {
		out[i] = available[p]
	}
	return out
}

// Aggregate implements Strategy.
func (f FedAvg) Aggregate(global []float64, results []Result) ([]float64, error) {
	updates := make([][]float64, len(results))
	weights := make([]float64, len(results))
	for i, r := range results {
		updates[i], weights[i] = r.Update, float64(r.Samples)
	}
	mean, err := f.Mean(updates, weights)
	if err != nil {
		return nil, err
	}
	next := slices.Clone(global)
	for i, v := range mean {
		next[i] += v
	}
	return next, nil
}
