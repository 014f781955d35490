package payout

import (
	"fmt"
	"math"
	"sort"
)

// Credit returns a round's values as the job's totals count them: when
// the round's realised gain Σφ (U(all) − U(none), by efficiency) is not
// positive, the round made the model no better, so nobody is credited for
// it, but whoever made it worse is still debited (positive values become
// 0, negative ones stay). A round with a positive gain counts as valued.
// A gain within rounding of zero (|Σφ| ≤ GainTolerance · Σ|φ|: a round
// whose grand coalition took no step has U(all) = U(none), but its
// Shapley values sum to ±1e-17) counts as no gain, so that whether such a
// round is credited does not hang on the order of a floating-point sum.
// The result is a new slice.
func Credit(values []float64) []float64 {
	var gain, mass float64
	for _, v := range values {
		gain += v
		mass += math.Abs(v)
	}
	valued := gain > GainTolerance*mass
	out := make([]float64, len(values))
	for i, v := range values {
		if valued {
			out[i] = v
		} else {
			out[i] = min(v, 0)
		}
	}
	return out
}

// GainTolerance is the relative size below which a round's gain Σφ is
// rounding, not gain (Credit).
const GainTolerance = 1e-9

// Totals accumulates the credited values of rounds with a freshness
// decay: after rounds 1 … R (counting only the rounds added),
//
//	V_i = Σ_r decay^(R−r) c_{i,r},   se_i = sqrt(Σ_r decay^(2(R−r)) se_{i,r}²)
//
// where c_{·,r} = Credit(φ_{·,r}). Negative credits net against positive
// ones. The coordinator's standings, `tally scores` and every settlement
// use it, so that they agree to the bit.
type Totals struct {
	decay  float64
	value  map[string]float64
	se2    map[string]float64
	rounds map[string]int
}

// NewTotals returns empty totals; decay must be in (0, 1].
func NewTotals(decay float64) (*Totals, error) {
	if !(decay > 0 && decay <= 1) {
		return nil, fmt.Errorf("%w: decay %v must be in (0, 1]", ErrAllocation, decay)
	}
	return &Totals{decay: decay, value: map[string]float64{}, se2: map[string]float64{}, rounds: map[string]int{}}, nil
}

// AddRound adds one round: ids name the players of values and stderr
// (stderr may be nil). Values must be finite and ids distinct.
func (t *Totals) AddRound(ids []string, values, stderr []float64) error {
	if len(values) != len(ids) || (stderr != nil && len(stderr) != len(ids)) {
		return fmt.Errorf("%w: %d ids, %d values, %d standard errors", ErrAllocation, len(ids), len(values), len(stderr))
	}
	seen := make(map[string]bool, len(ids))
	for k, id := range ids {
		if seen[id] {
			return fmt.Errorf("%w: client %q appears twice in one round", ErrAllocation, id)
		}
		seen[id] = true
		if math.IsNaN(values[k]) || math.IsInf(values[k], 0) {
			return fmt.Errorf("%w: client %q: value %v", ErrAllocation, id, values[k])
		}
	}
	if t.decay != 1 {
		for id := range t.value {
			t.value[id] *= t.decay
			t.se2[id] *= t.decay * t.decay
		}
	}
	c := Credit(values)
	for k, id := range ids {
		t.value[id] += c[k]
		if stderr != nil {
			t.se2[id] += stderr[k] * stderr[k]
		}
		t.rounds[id]++
	}
	return nil
}

// Get returns a client's total value, its standard error and the number
// of rounds it was valued in; ok is false for a client never added.
func (t *Totals) Get(id string) (value, stderr float64, rounds int, ok bool) {
	v, ok := t.value[id]
	return v, math.Sqrt(t.se2[id]), t.rounds[id], ok
}

// IDs returns every client added, sorted.
func (t *Totals) IDs() []string {
	ids := make([]string, 0, len(t.value))
	for id := range t.value {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Period is the plan of one settlement period: Budget is what its Rounds
// planned rounds may pay in all, BaselineShare of it as a baseline paid
// every round, the rest (the value part) held in escrow and paid once, at
// Settle, by max(V_i, 0), levelled so that no client is paid less in all
// than one of lower value (Level).
//
// Nothing is ever paid before it is owed for good: the baseline of a
// round is owed once the round completes, and the value part only when
// the period is over, when no later round can change V. So a payout never
// needs to be clawed back, and at every point
//
//	paid + escrow + unspent = Budget · done / Rounds
//
// where done is the number of completed rounds (Committed).
type Period struct {
	Budget        float64
	Rounds        int
	BaselineShare float64
}

func (p Period) check() error {
	switch {
	case p.Rounds < 1:
		return fmt.Errorf("%w: a period of %d rounds", ErrAllocation, p.Rounds)
	case math.IsNaN(p.Budget) || math.IsInf(p.Budget, 0) || p.Budget < 0:
		return fmt.Errorf("%w: period budget %v must be finite and non-negative", ErrAllocation, p.Budget)
	case math.IsNaN(p.BaselineShare) || p.BaselineShare < 0 || p.BaselineShare > 1:
		return fmt.Errorf("%w: baseline share %v must be within [0, 1]", ErrAllocation, p.BaselineShare)
	}
	return nil
}

// Baseline returns what each of a completed round's valid submissions is
// paid at once, given their weights (the rows n_i each declared and
// submitted under), and what of the round's baseline is unspent (all of it
// when no submission has a positive weight): BaselineShare · Budget /
// Rounds split in proportion to the weights. Split by rows, not by
// identities, a holder that divides its rows among several identities is
// paid the same baseline as when whole (a Sybil split gains nothing from
// the baseline), and copies of one data set each claim only the rows
// they declared at enrolment.
func (p Period) Baseline(weights []float64) (each []float64, unspent float64, err error) {
	if err := p.check(); err != nil {
		return nil, 0, err
	}
	var sum float64
	for i, w := range weights {
		if math.IsNaN(w) || math.IsInf(w, 0) || w < 0 {
			return nil, 0, fmt.Errorf("%w: submission %d has weight %v, want finite and ≥ 0", ErrAllocation, i, w)
		}
		sum += w
	}
	pot := p.BaselineShare * p.Budget / float64(p.Rounds)
	each = make([]float64, len(weights))
	if !(sum > 0) {
		return each, pot, nil
	}
	for i, w := range weights {
		each[i] = pot * w / sum
	}
	return each, 0, nil
}

// Escrow is the value part held for done completed rounds.
func (p Period) Escrow(done int) float64 {
	return (1 - p.BaselineShare) * p.Budget * float64(done) / float64(p.Rounds)
}

// Committed is the part of the budget that done completed rounds have
// used up: their baselines and their value part. A period settled before
// its planned end (the job stopped) commits only this much; the rest of
// its budget was never owed.
func (p Period) Committed(done int) float64 {
	return p.Budget * float64(done) / float64(p.Rounds)
}

// Settle pays the escrow of done completed rounds by values, the
// period's totals V (from Totals, so netted and decayed), to clients
// whose baselines in the period already paid them prepaid (nil: none):
// in proportion to max(V_i, 0) where that keeps every client's pay in all
// in the order of its value, and otherwise levelled so that it does
// (Level). A client whose total is ≤ 0 gets nothing from the escrow; if
// nobody's is positive the whole escrow is unspent. credits are the quota
// issued at the same time, split by the same rule
// ((1 − BaselineShare) · quotaPerRound · done, against the baseline
// credits precredited, nil: none).
func (p Period) Settle(values, prepaid, precredited []float64, done int, quotaPerRound float64) (payouts, credits []float64, unspent float64, err error) {
	if err := p.check(); err != nil {
		return nil, nil, 0, err
	}
	if done < 0 || done > p.Rounds {
		return nil, nil, 0, fmt.Errorf("%w: %d completed rounds in a period of %d", ErrAllocation, done, p.Rounds)
	}
	if payouts, unspent, err = Level(values, prepaid, p.Escrow(done)); err != nil {
		return nil, nil, 0, err
	}
	credits, _, err = Level(values, precredited, (1-p.BaselineShare)*quotaPerRound*float64(done))
	return payouts, credits, unspent, err
}
