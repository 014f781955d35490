package payout

import (
	"fmt"
	"math"
	"sort"
)

// Level splits an escrow among clients who were already paid prepaid[i]
// in the period (their baselines, split by rows), so that what each is
// paid in all, prepaid[i] + pays[i], never orders two clients against
// their values: V_i > V_j and V_i > 0 implies total_i ≥ total_j.
//
// The split by max(V_i, 0) alone (Payouts) does not ensure that: the
// baseline follows rows, not value, so a client with more rows and a
// slightly lower value can end up paid more than one with fewer rows and
// a slightly higher value. Level pays, in order of increasing value,
//
//	total_i = max(prepaid_i + λ·V_i, max{total_j : V_j < V_i})   for V_i > 0
//	total_i = prepaid_i                                          for V_i ≤ 0
//
// with the one λ ≥ 0 at which the escrow is spent. Where the rows agree
// with the values nothing binds and λ = escrow / Σ max(V_j, 0): the split
// of Payouts, to the bit (Level returns it unchanged then). Where they do
// not, the client whose rows fell short is raised to the total of the
// client just below it in value, and everyone's value part is a little
// smaller to pay for it: at most the spread of the baselines moves, never
// more. A client with V_i ≤ 0 gets nothing from the escrow, whatever its
// rows; two such clients are not ordered by Level (each is paid its
// baseline only).
//
// When the escrow cannot cover even λ = 0 (only with a large baseline
// share, and a client with V ≤ 0 holding most of the rows), the
// positive-value clients paid least are raised towards the level the
// order needs as far as the escrow goes, and the rest of the order is not
// restored; Inverted tells how many pairs remain.
//
// values and prepaid have one entry per client (prepaid nil: nothing
// prepaid); all finite, prepaid ≥ 0, escrow finite and ≥ 0. Σ pays +
// unspent = escrow up to rounding; unspent is all of it when no value is
// positive.
func Level(values, prepaid []float64, escrow float64) (pays []float64, unspent float64, err error) {
	n := len(values)
	if prepaid == nil {
		prepaid = make([]float64, n)
	}
	switch {
	case len(prepaid) != n:
		return nil, 0, fmt.Errorf("%w: %d prepaid amounts for %d values", ErrAllocation, len(prepaid), n)
	case math.IsNaN(escrow) || math.IsInf(escrow, 0) || escrow < 0:
		return nil, 0, fmt.Errorf("%w: escrow %v must be finite and non-negative", ErrAllocation, escrow)
	}
	for i, b := range prepaid {
		if math.IsNaN(b) || math.IsInf(b, 0) || b < 0 {
			return nil, 0, fmt.Errorf("%w: client %d was prepaid %v, want finite and ≥ 0", ErrAllocation, i, b)
		}
	}
	pays, unspent, err = Payouts(values, escrow, 0, nil)
	if err != nil || unspent == escrow || Inverted(values, prepaid, pays) == 0 {
		return pays, unspent, err
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return values[order[a]] < values[order[b]] })
	var sumPos float64
	for _, v := range values {
		sumPos += max(v, 0)
	}
	// totals fills pays for one λ (and a cap h on the level, +Inf for
	// none) and returns what they cost the escrow.
	totals := func(lambda, h float64) float64 {
		level, cost := 0.0, 0.0
		for a := 0; a < n; {
			b := a
			for b < n && values[order[b]] == values[order[a]] {
				b++
			}
			top := level
			for _, i := range order[a:b] {
				t := prepaid[i]
				if values[i] > 0 {
					t = max(prepaid[i]+lambda*values[i], min(level, h))
				}
				pays[i] = t - prepaid[i]
				cost += pays[i]
				top = max(top, t)
			}
			level, a = top, b
		}
		return cost
	}
	// solve finds the x in [lo, hi] at which cost(x) = escrow, for a cost
	// continuous, non-decreasing and piecewise linear in x, with cost(lo)
	// ≤ escrow ≤ cost(hi): bisection, then the line through the last
	// bracket, which is exact once the bracket holds no kink.
	solve := func(cost func(float64) float64, lo, hi float64) float64 {
		clo, chi := cost(lo), cost(hi)
		for range 200 {
			if chi-clo <= 1e-15*escrow || hi-lo <= 1e-300 {
				break
			}
			mid := lo + (hi-lo)/2
			if c := cost(mid); c <= escrow {
				lo, clo = mid, c
			} else {
				hi, chi = mid, c
			}
		}
		if chi > clo {
			return lo + (hi-lo)*(escrow-clo)/(chi-clo)
		}
		return lo
	}
	inf := math.Inf(1)
	if c0 := totals(0, inf); c0 <= escrow {
		// cost(λ) ≥ λ·Σ max(V, 0), so escrow / Σ brackets the answer.
		lambda := solve(func(x float64) float64 { return totals(x, inf) }, 0, escrow/sumPos)
		totals(lambda, inf)
	} else {
		// Even λ = 0 costs too much: cap the level at h instead. cost(0)
		// = 0, and at the largest prepaid amount the cap no longer binds.
		var hi float64
		for _, b := range prepaid {
			hi = max(hi, b)
		}
		h := solve(func(x float64) float64 { return totals(0, x) }, 0, hi)
		totals(0, h)
	}
	var sum float64
	for _, x := range pays {
		sum += x
	}
	if sum > escrow {
		// Rounding of the last step: scale back into the escrow.
		for i := range pays {
			pays[i] *= escrow / sum
		}
		sum = escrow
	}
	return pays, max(escrow-sum, 0), nil
}

// Inverted counts the pairs of clients paid against their values'
// order: V_i > V_j, V_i > 0, but prepaid_i + pays_i < prepaid_j + pays_j
// (by more than 1e-12 of the larger total, rounding). Pairs of clients
// whose values are both ≤ 0 are not counted: each is paid its baseline,
// whatever the rows.
func Inverted(values, prepaid, pays []float64) int {
	k := 0
	for i := range values {
		if values[i] <= 0 {
			continue
		}
		ti := prepaid[i] + pays[i]
		for j := range values {
			tj := prepaid[j] + pays[j]
			if values[i] > values[j] && ti < tj-1e-12*max(math.Abs(tj), 1) {
				k++
			}
		}
	}
	return k
}
