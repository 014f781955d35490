package dataset

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/tallyfl/tally/model"
)

// Partition kinds.
const (
	PartitionIID       = "iid"
	PartitionDirichlet = "dirichlet"
	PartitionSizeSkew  = "size-skew"
)

// MinClientRows is the fewest rows Partition gives any client. One row is
// enough for a client to train and to be valued; a larger floor would bias
// the Dirichlet label skew towards uniform for small datasets.
const MinClientRows = 1

// dirichletRetries is how many fresh Dirichlet draws Partition tries before
// it rebalances. Redrawing conditions the draw on every client having data,
// as the NIID-Bench partitioner does (Li et al. 2022); with very small alpha
// most draws leave some client empty, so after a few draws the rows are
// moved instead, which changes the distribution far less than redrawing
// forever would.
const dirichletRetries = 10

// PartitionSpec says how to divide a dataset among clients.
//
//   - "iid" (or ""): a uniform random split into parts whose sizes differ by
//     at most one row.
//   - "dirichlet": label skew. For every class c, the proportions of its rows
//     going to each client are drawn from Dir(Alpha·1_n) (Hsu, Qi & Brown
//     2019, "Measuring the effects of non-identical data distribution for
//     federated visual classification"). Small Alpha (0.1) gives each client
//     few classes; large Alpha (100) approaches iid. Client sizes vary too.
//   - "size-skew": quantity skew with iid labels: client i receives a share
//     of the rows proportional to Sizes[i], or to i+1 when Sizes is empty.
type PartitionSpec struct {
	Kind  string    `yaml:"kind" json:"kind"`
	Alpha float64   `yaml:"alpha" json:"alpha"`
	Sizes []float64 `yaml:"sizes" json:"sizes"`
}

// Validate reports every problem of the spec at once (joined), each
// wrapping ErrPartition. It cannot check that len(Sizes) matches the number
// of clients; Partition does.
func (p PartitionSpec) Validate() error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrPartition}, a...)...))
	}
	switch p.Kind {
	case "", PartitionIID, PartitionDirichlet, PartitionSizeSkew:
	default:
		bad("unknown kind %q; want %q, %q or %q", p.Kind, PartitionIID, PartitionDirichlet, PartitionSizeSkew)
	}
	if p.Kind == PartitionDirichlet {
		if !(p.Alpha > 0) || math.IsInf(p.Alpha, 0) {
			bad("dirichlet alpha %g must be positive and finite", p.Alpha)
		}
	} else if p.Alpha != 0 {
		bad("alpha applies to kind %q only, not %q", PartitionDirichlet, p.Kind)
	}
	if p.Kind == PartitionSizeSkew {
		for i, s := range p.Sizes {
			if !(s > 0) || math.IsInf(s, 0) {
				bad("size-skew sizes[%d] = %g must be positive and finite", i, s)
			}
		}
	} else if len(p.Sizes) > 0 {
		bad("sizes apply to kind %q only, not %q", PartitionSizeSkew, p.Kind)
	}
	return errors.Join(errs...)
}

// Partition divides the rows of e among n clients as spec says. Every row
// goes to exactly one client, every client gets at least MinClientRows rows,
// rows keep their original order within a part, and the same seed yields
// the same parts. Labels must lie in [0, classes).
//
// Errors (wrapping ErrPartition or ErrInvalid): an invalid spec, n < 1,
// len(spec.Sizes) not n, malformed examples, or fewer than
// n·MinClientRows rows.
func Partition(e model.Examples, classes, n int, spec PartitionSpec, seed uint64) ([]model.Examples, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, fmt.Errorf("%w: %d clients, want at least 1", ErrPartition, n)
	}
	if classes < 1 {
		return nil, fmt.Errorf("%w: %d classes, want at least 1", ErrPartition, classes)
	}
	if err := checkExamples(e, classes); err != nil {
		return nil, err
	}
	if e.Len() < n*MinClientRows {
		return nil, fmt.Errorf("%w: %d rows cannot give %d clients %d row(s) each", ErrPartition, e.Len(), n, MinClientRows)
	}
	rng := rand.New(rand.NewPCG(seed, streamPartition))

	var parts [][]int
	switch spec.Kind {
	case "", PartitionIID:
		parts = deal(rng.Perm(e.Len()), apportion(e.Len(), ones(n)))
	case PartitionSizeSkew:
		w := spec.Sizes
		if len(w) == 0 {
			w = make([]float64, n)
			for i := range w {
				w[i] = float64(i + 1)
			}
		}
		if len(w) != n {
			return nil, fmt.Errorf("%w: %d size-skew sizes for %d clients", ErrPartition, len(w), n)
		}
		parts = deal(rng.Perm(e.Len()), raiseToMinimum(apportion(e.Len(), w)))
	case PartitionDirichlet:
		parts = dirichletParts(e.Y, classes, n, spec.Alpha, rng)
	}

	out := make([]model.Examples, n)
	for i, idx := range parts {
		slices.Sort(idx)
		out[i] = e.Subset(idx)
	}
	return out, nil
}

func ones(n int) []float64 {
	w := make([]float64, n)
	for i := range w {
		w[i] = 1
	}
	return w
}

// deal cuts perm into consecutive parts of the given sizes.
func deal(perm []int, sizes []int) [][]int {
	parts := make([][]int, len(sizes))
	at := 0
	for i, s := range sizes {
		parts[i] = slices.Clone(perm[at : at+s])
		at += s
	}
	return parts
}

// raiseToMinimum moves units from the largest parts to any part below
// MinClientRows. The caller guarantees Σ sizes ≥ len(sizes)·MinClientRows.
func raiseToMinimum(sizes []int) []int {
	for i := range sizes {
		for sizes[i] < MinClientRows {
			big := 0
			for j, s := range sizes {
				if s > sizes[big] {
					big = j
				}
			}
			sizes[big]--
			sizes[i]++
		}
	}
	return sizes
}

// dirichletParts splits each class's rows by Dir(alpha) proportions; see
// PartitionSpec and dirichletRetries.
func dirichletParts(y []int, classes, n int, alpha float64, rng *rand.Rand) [][]int {
	byClass := make([][]int, classes)
	for i, c := range y {
		byClass[c] = append(byClass[c], i)
	}
	var parts [][]int
	for range dirichletRetries {
		parts = make([][]int, n)
		for _, rows := range byClass {
			if len(rows) == 0 {
				continue
			}
			rows = slices.Clone(rows)
			rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
			for i, p := range deal(rows, apportion(len(rows), dirichlet(alpha, n, rng))) {
				parts[i] = append(parts[i], p...)
			}
		}
		if !slices.ContainsFunc(parts, func(p []int) bool { return len(p) < MinClientRows }) {
			return parts
		}
	}
	// Rebalance the last draw: each short client takes a random row from
	// the currently largest client. The largest client loses the least of
	// its label profile, so the skew survives.
	for i := range parts {
		for len(parts[i]) < MinClientRows {
			big := 0
			for j := range parts {
				if len(parts[j]) > len(parts[big]) {
					big = j
				}
			}
			k := rng.IntN(len(parts[big]))
			parts[i] = append(parts[i], parts[big][k])
			parts[big] = slices.Delete(parts[big], k, k+1)
		}
	}
	return parts
}

// dirichlet draws p ~ Dir(alpha·1_n) by normalising n Gamma(alpha, 1)
// draws. It works in log space because for alpha ≪ 1 the Gamma draws
// underflow to zero in float64: P(G < x) ≈ x^alpha for small x, so
// Gamma(0.001) falls below 1e-300 about half the time, which would leave
// all-zero proportions.
func dirichlet(alpha float64, n int, rng *rand.Rand) []float64 {
	logs := make([]float64, n)
	top := math.Inf(-1)
	for i := range logs {
		logs[i] = logGamma(alpha, rng)
		top = max(top, logs[i])
	}
	sum := 0.0
	for i, l := range logs {
		logs[i] = math.Exp(l - top)
		sum += logs[i]
	}
	for i := range logs {
		logs[i] /= sum
	}
	return logs
}

// logGamma returns the logarithm of a Gamma(alpha, 1) draw, by Marsaglia &
// Tsang (2000), "A simple method for generating gamma variables", ACM TOMS
// 26(3). For alpha < 1 it uses their boost: if G ~ Gamma(alpha+1) and
// U ~ U(0,1) then G·U^(1/alpha) ~ Gamma(alpha), whose log is computed
// without forming the (possibly underflowing) product.
func logGamma(alpha float64, rng *rand.Rand) float64 {
	if alpha < 1 {
		u := 1 - rng.Float64() // in (0, 1], so the log is finite
		return logGamma(alpha+1, rng) + math.Log(u)/alpha
	}
	d := alpha - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return math.Log(d * v)
		}
	}
}

// LabelSkew measures how far the clients' label distributions are from the
// pooled one: the mean, over clients with rows, of the total-variation
// distance ½·Σ_c |p_i(c) − p(c)|. It is 0 when every client has the pooled
// proportions and approaches 1 − max_c p(c) when each client holds a single
// class. Experiments report it next to the Dirichlet alpha.
func LabelSkew(parts []model.Examples, classes int) float64 {
	pooled := make([]float64, classes)
	total := 0
	for _, p := range parts {
		for _, y := range p.Y {
			pooled[y]++
		}
		total += p.Len()
	}
	if total == 0 {
		return 0
	}
	for c := range pooled {
		pooled[c] /= float64(total)
	}
	sum, clients := 0.0, 0
	local := make([]float64, classes)
	for _, p := range parts {
		if p.Len() == 0 {
			continue
		}
		clear(local)
		for _, y := range p.Y {
			local[y]++
		}
		tv := 0.0
		for c := range local {
			tv += math.Abs(local[c]/float64(p.Len()) - pooled[c])
		}
		sum += tv / 2
		clients++
	}
	return sum / float64(clients)
}
