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
// pooled data (ScalerWithNoise when the sum is approximate, as a decrypted
// CKKS aggregate is). No single client's statistics need to be revealed.
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

// FlatSquaresBound bounds, from the summed moments m alone, the sum of the
// squared entries of the flattened moments of every part that was added
// into m plus those of m itself: the magnitude that the float64 round-off
// of encoding each part and decoding the sum depends on
// (aggregation.Parameters.SlotNoiseSigmaAt). Counts and sums of squares
// are non-negative, so the parts' squares sum to at most the square of
// their sum; a part's |Sum[j]| ≤ √(Count·SumSq[j]) by Cauchy–Schwarz, so
// its squared sums add to at most m.Count·m.SumSq[j]. Entries carrying
// noise count by their absolute value.
func (m Moments) FlatSquaresBound() float64 {
	n := math.Abs(m.Count)
	b := 2 * n * n
	for j := range m.SumSq {
		q := math.Abs(m.SumSq[j])
		b += 2*q*q + n*q + m.Sum[j]*m.Sum[j]
	}
	return b
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

// Scaler standardises features: x_j ↦ (x_j − Mean_j) / Std_j, clipped to
// [−Clip, Clip] when Clip > 0.
type Scaler struct {
	Mean []float64 `yaml:"mean" json:"mean"`
	Std  []float64 `yaml:"std" json:"std"`
	// Clip bounds the standardised values; 0 means no bound. Scalers from
	// Moments set it to √(Count − 1) (see ScalerWithNoise); a scaler given
	// by hand, or stored before the bound existed, has none.
	Clip float64 `yaml:"clip,omitempty" json:"clip,omitempty"`
}

// minRelStd is the standard deviation, relative to max(1, |mean|), below
// which a feature counts as constant. Computing the variance as
// E[x²] − E[x]² loses about 16 digits of mean², which leaves an error of
// roughly 1e-8·|mean| in the standard deviation of a truly constant column;
// the threshold sits two orders of magnitude above that noise.
const minRelStd = 1e-6

// noiseSigmas is how many standard deviations of aggregation noise a
// variance must exceed to count as real. The noise on each sum is Gaussian
// (a sum of many independent flooding samples, aggregation.SlotNoiseSigma),
// and P(|N(0,1)| > 8) ≈ 1.2e-15, so even a million all-zero features would
// all be recognised as constant with probability 1 − 1e-9.
const noiseSigmas = 8

// Scaler returns the standardising scaler of the data the moments describe,
// for moments summed exactly (in the clear): ScalerWithNoise(0).
func (m Moments) Scaler() Scaler { return m.ScalerWithNoise(0) }

// ScalerWithNoise returns the standardising scaler of the data the moments
// describe, when Count and each entry of Sum and SumSq may carry independent additive
// noise of standard deviation up to noise, such as the noise floor of a
// decrypted CKKS aggregate (aggregation.Parameters.SlotNoiseSigmaAt); noise 0
// means exact sums. It gives the mean and the population standard
// deviation of each feature.
//
// Constant features. The variance E[x²] − E[x]² is clamped at zero
// (rounding and approximate aggregation can make it slightly negative). A
// feature whose standard deviation is below the larger of
// 1e-6·max(1, |mean|) (float rounding, see minRelStd) and the noise floor
// below gets Std 1 rather than a tiny value: it then scales to x − mean,
// near 0 on the training rows, instead of amplifying noise into huge values
// (scikit-learn's StandardScaler also uses 1 for constant features).
//
// Noise floor. With n = Count and noise e₀ on Count, e₁ on Sum_j and e₂
// on SumSq_j, the estimated variance is, to first order, the true one plus
// e₂/n − 2·mean·e₁/n − (E[x²] − 2·mean²)·e₀/n, the last term being the
// count's noise (for a constant column of value c it is c²·e₀/n: with
// e₀ = 8σ, σ = 2.9e-7 and n = 1,400 the standard deviation it fakes for
// c = 100 exceeds the 1e-6·c rounding threshold). With
// |eᵢ| ≤ z·noise, z = noiseSigmas, that error is at most
//
//	floor² = z·noise·(1 + 2|mean| + |E[x²] − 2·mean²|)/n + (z·noise/n)²,
//
// so a feature whose estimated variance is below floor² cannot be told
// from a constant one and is treated as constant. Without this, an
// all-zero column of the 10-client digits federation read a standard
// deviation of 1.2e-5 to 2.2e-5 from the aggregation noise alone
// (√(σ_slot/n) with σ_slot ≈ 3e-7, n ≈ 1,400), and a rare non-zero pixel
// outside the training rows was multiplied by ~1e5.
//
// Bound. Samuelson's inequality (Samuelson 1968, "How deviant can you
// be?") says that in any n values |x_i − mean| ≤ √(n − 1)·std with the
// population std, so no training row can standardise beyond √(n − 1).
// Clip is set to that bound: it never changes a training row (beyond
// noise), identically in the clear and under secure aggregation, and keeps
// a validation or test value far outside the training range (a pixel that
// is almost never lit in training) from becoming an outlier larger than
// any the model was trained on.
//
// With Count ≤ 0 it returns the identity scaler (Mean 0, Std 1, no Clip).
func (m Moments) ScalerWithNoise(noise float64) Scaler {
	s := Scaler{Mean: make([]float64, len(m.Sum)), Std: make([]float64, len(m.Sum))}
	if m.Count <= 0 {
		for j := range s.Std {
			s.Std[j] = 1
		}
		return s
	}
	n := m.Count
	zn := noiseSigmas * max(noise, 0)
	for j := range s.Mean {
		mean := m.Sum[j] / n
		variance := max(m.SumSq[j]/n-mean*mean, 0)
		floorSq := zn*(1+2*math.Abs(mean)+math.Abs(m.SumSq[j]/n-2*mean*mean))/n + (zn/n)*(zn/n)
		std := math.Sqrt(variance)
		if std < minRelStd*max(1, math.Abs(mean)) || variance <= floorSq {
			std = 1
		}
		s.Mean[j], s.Std[j] = mean, std
	}
	s.Clip = math.Sqrt(max(n-1, 1))
	return s
}

// Validate checks that the scaler fits data with the given number of
// features, with finite means, finite positive deviations and a finite,
// non-negative Clip.
func (s Scaler) Validate(features int) error {
	if len(s.Mean) != features || len(s.Std) != features {
		return fmt.Errorf("%w: %d means and %d deviations for %d features", ErrScaler, len(s.Mean), len(s.Std), features)
	}
	if math.IsNaN(s.Clip) || math.IsInf(s.Clip, 0) || s.Clip < 0 {
		return fmt.Errorf("%w: clip %g, want finite and ≥ 0 (0: no bound)", ErrScaler, s.Clip)
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

// Apply returns a standardised copy of e, each value clipped to
// [−Clip, Clip] when Clip > 0. The scaler must fit e (see
// Validate); a feature-count mismatch is a caller bug and panics.
func (s Scaler) Apply(e model.Examples) model.Examples {
	if len(s.Mean) != e.Features || len(s.Std) != e.Features {
		panic(fmt.Sprintf("dataset: Scaler.Apply: scaler for %d features applied to %d", len(s.Mean), e.Features))
	}
	out := copyExamples(e)
	for i := range out.Len() {
		row := out.Row(i)
		for j := range row {
			z := (row[j] - s.Mean[j]) / s.Std[j]
			if s.Clip > 0 {
				z = max(-s.Clip, min(z, s.Clip))
			}
			row[j] = z
		}
	}
	return out
}
