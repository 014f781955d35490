package experiments

import (
	"fmt"
	"math"

	"github.com/tallyfl/tally/ledger/payout"
)

// PayBaselineShare is the baseline share of the budget the experiments pay
// with (payment.baseline_share; the coordinator's default is 0). It is not
// 0 so that "paid only the baseline" is a figure a free rider can be held
// to: each client's baseline over the job is PayBaselineShare · n_i / Σn
// of the budget (a share of the rows, as the coordinator splits it).
const PayBaselineShare = 0.1

// Pay is what a valued run pays its clients under the job's rules, the
// code the coordinator settles with (engine.Engine.pay and settle): a
// budget of 1 for the whole job, its baseline share paid every round
// to the submissions in proportion to their rows (payout.Period.Baseline,
// by v.Weights), the rest held in
// escrow and settled once at the end by max(V_i, 0), levelled so that no
// client is paid less in all than one of lower value (payout.Period.Settle,
// payout.Level), V_i the client's credited total (payout.Totals:
// a round whose values sum to ≤ 0 credits nobody and debits whoever made
// it worse; no decay). The round values it starts from are the run's:
// capped per row and with copies valued as one, as the coordinator values
// them (valueRound, valueTrace).
type Pay struct {
	// Values are the credited totals V_i the escrow is split by.
	Values []float64
	// Payouts are each client's share of the budget: its baselines and
	// its part of the escrow.
	Payouts []float64
	// Baseline[i] is what the baseline alone pays client i over the job.
	Baseline []float64
}

// JobPay pays v's rounds with baseline share share. A run that failed
// (Err) or holds a NaN pays NaN.
func JobPay(v Valued, share float64) (Pay, error) {
	n := len(v.Totals)
	if v.Err != "" || hasNaN(v.Totals) || len(v.Rounds) == 0 {
		return Pay{Values: nanSlice(n), Payouts: nanSlice(n), Baseline: nanSlice(n)}, nil
	}
	ids := clientIDs(n)
	totals, err := payout.NewTotals(1)
	if err != nil {
		return Pay{}, err
	}
	p := payout.Period{Budget: 1, Rounds: len(v.Rounds), BaselineShare: share}
	pay := Pay{Values: make([]float64, n), Payouts: make([]float64, n), Baseline: make([]float64, n)}
	weights := v.Weights
	if weights == nil {
		weights = make([]float64, n)
		for i := range weights {
			weights[i] = 1
		}
	}
	if len(weights) != n {
		return Pay{}, fmt.Errorf("%d weights for %d clients", len(weights), n)
	}
	for r, vals := range v.Rounds {
		if len(vals) != n {
			return Pay{}, fmt.Errorf("round %d: %d values for %d clients", r, len(vals), n)
		}
		if err := totals.AddRound(ids, vals, nil); err != nil {
			return Pay{}, fmt.Errorf("round %d: %w", r, err)
		}
		// Every client submitted in every round of an experiment.
		each, _, err := p.Baseline(weights)
		if err != nil {
			return Pay{}, err
		}
		for i, x := range each {
			pay.Payouts[i] += x
			pay.Baseline[i] += x
		}
	}
	for i, id := range ids {
		pay.Values[i], _, _, _ = totals.Get(id)
	}
	settled, _, _, err := p.Settle(pay.Values, pay.Baseline, nil, len(v.Rounds), 0)
	if err != nil {
		return Pay{}, err
	}
	for i, x := range settled {
		pay.Payouts[i] += x
	}
	return pay, nil
}

// Inversions counts the pairs of clients whose payouts order them against
// their values: V_i > V_j but paid_i < paid_j (up to 1e-12 of the budget,
// rounding).
func Inversions(values, paid []float64) int {
	k := 0
	for i := range values {
		for j := range values {
			if values[i] > values[j] && paid[i] < paid[j]-1e-12 {
				k++
			}
		}
	}
	return k
}

// PaySpearman is Spearman's ρ between the honest clients' payouts and
// their reference totals (NaN with fewer than two honest clients).
func PaySpearman(paid, reference []float64, honest []bool) float64 {
	var a, b []float64
	for i, h := range honest {
		if h {
			a, b = append(a, paid[i]), append(b, reference[i])
		}
	}
	if len(a) < 2 {
		return math.NaN()
	}
	return Spearman(a, b)
}

// FreeRiderPay is the largest payout of the free riders as a multiple of
// the baseline each client is paid: 1 when every free rider got only the
// baseline (NaN without free riders or without a baseline).
func FreeRiderPay(pay Pay, freeRiders []int) float64 {
	if len(freeRiders) == 0 {
		return math.NaN()
	}
	worst := math.Inf(-1)
	for _, i := range freeRiders {
		if !(pay.Baseline[i] > 0) {
			return math.NaN()
		}
		worst = max(worst, pay.Payouts[i]/pay.Baseline[i])
	}
	return worst
}

// DuplicatePay is, over the pairs (copy, original), the largest ratio of
// what the original and its copy are paid together to what the original
// is paid in the same job without the copies; alone[i] is the index in
// that job of the job's client i (−1 for a copy). NaN without pairs.
func DuplicatePay(with, without []float64, pairs [][2]int, alone []int) float64 {
	if len(pairs) == 0 || hasNaN(with) || hasNaN(without) {
		return math.NaN()
	}
	worst := math.Inf(-1)
	for _, p := range pairs {
		orig := alone[p[1]]
		if orig < 0 || !(without[orig] > 0) {
			return math.NaN()
		}
		worst = max(worst, (with[p[0]]+with[p[1]])/without[orig])
	}
	return worst
}

// SybilPay is the split holder's gain of the budget: what its identities
// are paid together in the split job less what it is paid whole (both
// shares of a budget of 1).
func SybilPay(base []float64, client int, split []float64, sybils []int) float64 {
	if hasNaN(base) || hasNaN(split) {
		return math.NaN()
	}
	s := 0.0
	for _, i := range sybils {
		s += split[i]
	}
	return s - base[client]
}
