package audit

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/tallyfl/tally/accountant"
	"github.com/tallyfl/tally/model"
)

// noiseMultiplier returns the smallest σ (to 0.1 %) for which rounds
// releases of the Gaussian mechanism, each client in every round, are
// (eps, delta)-DP per client by the RDP accountant.
func noiseMultiplier(eps, delta float64, rounds int) (float64, error) {
	epsAt := func(sigma float64) (float64, error) {
		a, err := accountant.New()
		if err != nil {
			return 0, err
		}
		if err := a.Compose(1, sigma, rounds); err != nil {
			return 0, err
		}
		e, _, err := a.Epsilon(delta)
		return e, err
	}
	lo, hi := 1e-2, 1e4
	if e, err := epsAt(hi); err != nil || e > eps {
		return 0, fmt.Errorf("audit: ε = %v at δ = %v over %d rounds needs σ > %v (or: %w)", eps, delta, rounds, hi, err)
	}
	for hi/lo > 1.001 {
		mid := math.Sqrt(lo * hi)
		e, err := epsAt(mid)
		if err != nil {
			return 0, err
		}
		if e > eps {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi, nil
}

// dpRelease is what the coordinator would decrypt under distributed
// differential privacy in the form of DP-FedAvg (McMahan et al., "Learning
// Differentially Private Recurrent Language Models", ICLR 2018): each
// client's update clipped to L2 norm clip, summed with equal weights, plus
// Gaussian noise of standard deviation σ·clip in every coordinate (the
// clients' shares of it add up to that). One client's update alone with
// that noise is local DP at the same ε. The attacker knows clip and σ; the
// release is scaled so that attackRelease's average is the sum ÷ k.
func (e *env) dpRelease(updates [][]float64, data []model.Examples, clip, sigma float64, rng *rand.Rand) release {
	k := len(updates)
	r := release{sum: make([]float64, len(updates[0])), truth: model.Examples{Features: e.train.Features}}
	for i, u := range updates {
		f := 1.0
		if nu := math.Sqrt(dot(u, u)); nu > clip {
			f = clip / nu
		}
		for j, v := range u {
			r.sum[j] += f * v
		}
		r.truth.X = append(r.truth.X, data[i].X...)
		r.truth.Y = append(r.truth.Y, data[i].Y...)
	}
	for j := range r.sum {
		r.sum[j] += sigma * clip * rng.NormFloat64()
	}
	r.per = data[0].Len()
	r.n = r.per * k
	for j := range r.sum {
		r.sum[j] *= float64(r.per)
	}
	return r
}

// medianNorm is the median L2 norm of the updates: the clipping norm the
// audit's DP releases use, so that about half the clients are clipped.
func medianNorm(updates [][]float64) float64 {
	ns := make([]float64, len(updates))
	for i, u := range updates {
		ns[i] = math.Sqrt(dot(u, u))
	}
	slices.Sort(ns)
	return ns[len(ns)/2]
}
