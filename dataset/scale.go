package dataset

import (
	"fmt"
	"math"

	"github.com/tallyfl/tally/model"
)

// Moments are per-feature sums from which a standardising Scaler follows.
// They add up across clients, so the coordinator can learn the pooled mean
// and variance from an aggregate alone: each client computes Moments on its
// own rows, the Flatten vectors are summed (in the clear or under secure
// aggregation), and MomentsFromFlat(sum).Scaler() is the scaler of the
// pooled data. No single client's statistics need to be revealed.
type Moments struct {
	Count float64   // number of rows
	Sum   []float64 // Σ x_j per feature j
	SumSq []float64 // Σ x_j² per feature j
}

// ComputeMoments returns the moments of e.
func ComputeMoments(e model.Examples) Moments {
	m := Moments{
		Count: float64(e.Len()),
		Sum:   make([]float64, e.Features),
		SumSq: make([]float64, e.Features),
	}
	for i := range e.Len() {
		for j, v := range e.Row(i) {
			m.Sum[j] += v
			m.SumSq[j] += v * v
		}
	}
	return m
}

// Add adds o into m. The zero Moments takes the shape of o, so a running
// total can start from Moments{}. Different feature counts fail with
// ErrMoments and leave m unchanged.
func (m *Moments) Add(o Moments) error {
	if len(o.Sum) != len(o.SumSq) || len(m.Sum) != len(m.SumSq) {
		return fmt.Errorf("%w: Sum and SumSq lengths differ", ErrMoments)
	}
	if m.Count == 0 && m.Sum == nil {
		m.Sum = make([]float64, len(o.Sum))
		m.SumSq = make([]float64, len(o.SumSq))
	}
	if len(m.Sum) != len(o.Sum) {
		return fmt.Errorf("%w: adding moments of %d features to moments of %d", ErrMoments, len(o.Sum), len(m.Sum))
	}
	m.Count += o.Count
	for j := range m.Sum {
		m.Sum[j] += o.Sum[j]
		m.SumSq[j] += o.SumSq[j]
	}
	return nil
}

// Flatten lays the moments out as one vector, [Count, Sum..., SumSq...], of
// length 1 + 2·features, so they can travel through aggregation like a
// model update. Summing flattened vectors equals flattening the sum.
func (m Moments) Flatten() []float64 {
	out := make([]float64, 0, 1+len(m.Sum)+len(m.SumSq))
	out = append(out, m.Count)
	out = append(out, m.Sum...)
	return append(out, m.SumSq...)
}

// MomentsFromFlat inverts Flatten. It fails with ErrMoments unless
// len(v) == 1+2·features and every entry is finite. Entries need not be
// integral or exactly consistent: after approximate (CKKS) aggregation the
// count may read 568.9999997 and Scaler copes with that.
func MomentsFromFlat(v []float64, features int) (Moments, error) {
	if features < 0 || len(v) != 1+2*features {
		return Moments{}, fmt.Errorf("%w: flat vector of %d values, want 1 + 2×%d", ErrMoments, len(v), features)
	}
	for i, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return Moments{}, fmt.Errorf("%w: flat entry %d is %g", ErrMoments, i, x)
		}
	}
	return Moments{
		Count: v[0],
		Sum:   append([]float64(nil), v[1:1+features]...),
		SumSq: append([]float64(nil), v[1+features:]...),
	}, nil
}

// Scaler standardises features: x_j ↦ (x_j − Mean_j) / Std_j.
type Scaler struct {
	Mean []float64 `yaml:"mean" json:"mean"`
	Std  []float64 `yaml:"std" json:"std"`
}

// minRelStd is the standard deviation, relative to max(1, |mean|), below
// which a feature counts as constant. Computing the variance as
// E[x²] − E[x]² loses about 16 digits of mean², which leaves an error of
// roughly 1e-8·|mean| in the standard deviation of a truly constant column;
// the threshold sits two orders of magnitude above that noise.
const minRelStd = 1e-6

// Scaler returns the standardising scaler of the data the moments describe:
// the mean and the population standard deviation of each feature. The
// variance is clamped at zero (rounding and approximate aggregation can
// make it slightly negative). A constant feature, one whose standard
// deviation is below 1e-6·max(1, |mean|), gets Std 1 rather than a tiny
// epsilon: it then scales to exactly 0 without amplifying rounding or CKKS
// noise into large values (scikit-learn's StandardScaler does the same).
// With Count ≤ 0 it returns the identity scaler (Mean 0, Std 1).
func (m Moments) Scaler() Scaler {
	s := Scaler{Mean: make([]float64, len(m.Sum)), Std: make([]float64, len(m.Sum))}
	for j := range s.Mean {
		if m.Count <= 0 {
			s.Std[j] = 1
			continue
		}
		mean := m.Sum[j] / m.Count
		std := math.Sqrt(max(m.SumSq[j]/m.Count-mean*mean, 0))
		if std < minRelStd*max(1, math.Abs(mean)) {
			std = 1
		}
		s.Mean[j], s.Std[j] = mean, std
	}
	return s
}

// Validate checks that the scaler fits data with the given number of
// features, with finite means and finite positive deviations.
func (s Scaler) Validate(features int) error {
	if len(s.Mean) != features || len(s.Std) != features {
		return fmt.Errorf("%w: %d means and %d deviations for %d features", ErrScaler, len(s.Mean), len(s.Std), features)
	}
	for j := range features {
		if math.IsNaN(s.Mean[j]) || math.IsInf(s.Mean[j], 0) {
			return fmt.Errorf("%w: mean of feature %d is %g", ErrScaler, j, s.Mean[j])
		}
		if !(s.Std[j] > 0) || math.IsInf(s.Std[j], 0) {
			return fmt.Errorf("%w: deviation of feature %d is %g, want finite and positive", ErrScaler, j, s.Std[j])
		}
	}
	return nil
}

// Apply returns a standardised copy of e. The scaler must fit e (see
// Validate); a feature-count mismatch is a caller bug and panics.
func (s Scaler) Apply(e model.Examples) model.Examples {
	if len(s.Mean) != e.Features || len(s.Std) != e.Features {
		panic(fmt.Sprintf("dataset: Scaler.Apply: scaler for %d features applied to %d", len(s.Mean), e.Features))
	}
	out := copyExamples(e)
	for i := range out.Len() {
		row := out.Row(i)
		for j := range row {
			row[j] = (row[j] - s.Mean[j]) / s.Std[j]
		}
	}
	return out
}
