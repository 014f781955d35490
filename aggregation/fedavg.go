package aggregation

import (
	"fmt"
	"math"
)

// FedAvg returns the weighted average Σ wᵢ·uᵢ / Σ wᵢ of the update vectors
// (McMahan et al., "Communication-Efficient Learning of Deep Networks from
// Decentralized Data", AISTATS 2017). It is the plaintext reference for the
// encrypted path: the committee decrypts Σ nᵢ·Δᵢ and Σ nᵢ, and
// [Assemble] divides the two exactly as FedAvg does here.
//
// Every update must have the same non-zero length, every weight must be
// finite and > 0, and every value finite; the error names the first
// offending client index. The inputs are not modified.
func FedAvg(updates [][]float64, weights []float64) ([]float64, error) {
	if len(updates) == 0 {
		return nil, fmt.Errorf("%w: no updates", ErrInvalidInput)
	}
	if len(weights) != len(updates) {
		return nil, fmt.Errorf("%w: %d updates but %d weights", ErrInvalidInput, len(updates), len(weights))
	}
	dim := len(updates[0])
	if dim == 0 {
		return nil, fmt.Errorf("%w: client 0: empty update", ErrInvalidInput)
	}
	var total float64
	for i, u := range updates {
		if len(u) != dim {
			return nil, fmt.Errorf("%w: client %d: update has %d values, client 0 has %d", ErrInvalidInput, i, len(u), dim)
		}
		w := weights[i]
		if !(w > 0) || math.IsInf(w, 0) {
			return nil, fmt.Errorf("%w: client %d: weight %v must be finite and > 0", ErrInvalidInput, i, w)
		}
		for j, v := range u {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("%w: client %d: value %d is %v", ErrInvalidInput, i, j, v)
			}
		}
		total += w
	}
	out := make([]float64, dim)
	for i, u := range updates {
		// Dividing each weight first keeps intermediate sums at the scale
		// of the updates, which loses less precision than summing wᵢ·uᵢ
		// when the weights are large sample counts.
		f := weights[i] / total
		for j, v := range u {
			out[j] += f * v
		}
	}
	return out, nil
}
