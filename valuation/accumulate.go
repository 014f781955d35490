package valuation

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Accumulator sums per-round values per client across rounds (FedSV, Wang et
// al. 2020), optionally with a freshness decay: after rounds 1 … R,
//
//	total_i = Σ_r decay^(R−r) φ_{i,r},  se_i = sqrt(Σ_r decay^(2(R−r)) se_{i,r}²),
//
// the standard errors combined in quadrature because the rounds' estimates
// use independent randomness. A client absent from a round contributes 0 to
// it (and its total still decays). decay = 1 is plain FedSV.
//
// An Accumulator is not safe for concurrent use; the coordinator owns it.
type Accumulator struct {
	decay  float64
	rounds int
	byID   map[string]*Total
}

// Total is one client's accumulated value.
type Total struct {
	ID     string  `json:"id"`
	Value  float64 `json:"value"`
	StdErr float64 `json:"stderr"`
	// Rounds is the number of rounds the client was valued in.
	Rounds int `json:"rounds"`
}

// NewAccumulator returns an empty accumulator. It fails with ErrDecay unless
// 0 < decay ≤ 1.
func NewAccumulator(decay float64) (*Accumulator, error) {
	if !(decay > 0 && decay <= 1) {
		return nil, fmt.Errorf("%w: got %v", ErrDecay, decay)
	}
	return &Accumulator{decay: decay, byID: make(map[string]*Total)}, nil
}

// AddRound adds one round's values. ids name the players of values and
// stderr (which may be nil: no sampling error); ids must be distinct.
func (a *Accumulator) AddRound(ids []string, values, stderr []float64) error {
	if len(values) != len(ids) || (stderr != nil && len(stderr) != len(ids)) {
		return fmt.Errorf("%w: %d ids, %d values, %d standard errors", ErrLength, len(ids), len(values), len(stderr))
	}
	seen := make(map[string]bool, len(ids))
	for k, id := range ids {
		if seen[id] {
			return fmt.Errorf("%w: client %q appears twice in one round", ErrInput, id)
		}
		seen[id] = true
		if math.IsNaN(values[k]) || math.IsInf(values[k], 0) {
			return fmt.Errorf("%w: client %q: value %v", ErrInput, id, values[k])
		}
		if stderr != nil && (math.IsNaN(stderr[k]) || stderr[k] < 0) {
			return fmt.Errorf("%w: client %q: standard error %v", ErrInput, id, stderr[k])
		}
	}
	if a.decay != 1 {
		for _, t := range a.byID {
			t.Value *= a.decay
			t.StdErr *= a.decay // sqrt(d² Σ se²) = d·sqrt(Σ se²)
		}
	}
	for k, id := range ids {
		t := a.byID[id]
		if t == nil {
			t = &Total{ID: id}
			a.byID[id] = t
		}
		t.Value += values[k]
		if stderr != nil {
			t.StdErr = math.Hypot(t.StdErr, stderr[k])
		}
		t.Rounds++
	}
	a.rounds++
	return nil
}

// Rounds is the number of rounds added.
func (a *Accumulator) Rounds() int { return a.rounds }

// Get returns one client's total.
func (a *Accumulator) Get(id string) (Total, bool) {
	t, ok := a.byID[id]
	if !ok {
		return Total{}, false
	}
	return *t, true
}

// Totals returns every client's total, sorted by id.
func (a *Accumulator) Totals() []Total {
	out := make([]Total, 0, len(a.byID))
	for _, t := range a.byID {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(x, y Total) int { return strings.Compare(x.ID, y.ID) })
	return out
}

// SplitByWeight shares a group's value (and standard error) among its
// members in proportion to their weights (typically sample counts): member k
// gets value·w_k/Σw and stderr·w_k/Σw. This is how the "groups" privacy mode
// turns group values into client values; across rounds, with the partition
// redrawn, the accumulated values separate the members of a group.
func SplitByWeight(value, stderr float64, weights []float64) (values, stderrs []float64, err error) {
	if len(weights) == 0 {
		return nil, nil, fmt.Errorf("%w: empty group", ErrLength)
	}
	total := 0.0
	for k, w := range weights {
		if !(w > 0) || math.IsInf(w, 0) {
			return nil, nil, fmt.Errorf("%w: member %d: weight %v", ErrWeight, k, w)
		}
		total += w
	}
	values = make([]float64, len(weights))
	stderrs = make([]float64, len(weights))
	for k, w := range weights {
		values[k] = value * w / total
		stderrs[k] = stderr * w / total
	}
	return values, stderrs, nil
}

// Spearman returns Spearman's rank correlation of a and b: the Pearson
// correlation of their ranks, ties given their average rank. It returns NaN
// when the lengths differ, when there are fewer than two values, or when
// either input is constant (the correlation is undefined).
func Spearman(a, b []float64) float64 {
	if len(a) != len(b) || len(a) < 2 {
		return math.NaN()
	}
	ra, rb := ranks(a), ranks(b)
	ma, mb := mean(ra), mean(rb)
	var sab, saa, sbb float64
	for k := range ra {
		da, db := ra[k]-ma, rb[k]-mb
		sab += da * db
		saa += da * da
		sbb += db * db
	}
	if saa == 0 || sbb == 0 {
		return math.NaN()
	}
	return sab / math.Sqrt(saa*sbb)
}

// ranks returns 1-based ranks with ties averaged.
func ranks(x []float64) []float64 {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(p, q int) int {
		switch {
		case x[p] < x[q]:
			return -1
		case x[p] > x[q]:
			return 1
		}
		return 0
	})
	r := make([]float64, len(x))
	for lo := 0; lo < len(idx); {
		hi := lo + 1
		for hi < len(idx) && x[idx[hi]] == x[idx[lo]] {
			hi++
		}
		avg := float64(lo+hi+1) / 2 // mean of ranks lo+1 … hi
		for _, i := range idx[lo:hi] {
			r[i] = avg
		}
		lo = hi
	}
	return r
}

func mean(x []float64) float64 {
	s := 0.0
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}
