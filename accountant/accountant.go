package accountant

import (
	"errors"
	"fmt"
	"math"
)

// ErrParams marks a mechanism or query the accountant cannot account for.
var ErrParams = errors.New("accountant: invalid parameters")

// DefaultOrders are the Rényi orders searched when none are given: the
// integers 2…64 and a sparser tail up to 1024, enough for ε from about
// 0.1 to 100 at δ between 1e-3 and 1e-12.
func DefaultOrders() []float64 {
	var out []float64
	for a := 2; a <= 64; a++ {
		out = append(out, float64(a))
	}
	for _, a := range []int{80, 96, 128, 160, 192, 256, 384, 512, 768, 1024} {
		out = append(out, float64(a))
	}
	return out
}

// GaussianRDP is the RDP of the Gaussian mechanism at order alpha > 1 with
// noise multiplier sigma (noise standard deviation ÷ L2 sensitivity):
// α/(2σ²) (Mironov 2017, Proposition 7).
func GaussianRDP(sigma, alpha float64) float64 {
	return alpha / (2 * sigma * sigma)
}

// SampledGaussianRDP is the RDP at order alpha of the Gaussian mechanism
// with noise multiplier sigma applied to a Poisson sample of rate q
// (Mironov, Talwar & Zhang 2019, §3.3). For q = 1 it is GaussianRDP, at
// any alpha > 1; for 0 < q < 1 alpha must be an integer ≥ 2. q = 0 costs
// nothing.
func SampledGaussianRDP(q, sigma, alpha float64) (float64, error) {
	if !(sigma > 0) || math.IsInf(sigma, 0) {
		return 0, fmt.Errorf("%w: noise multiplier σ = %v, want finite and > 0", ErrParams, sigma)
	}
	if !(q >= 0 && q <= 1) {
		return 0, fmt.Errorf("%w: sampling rate q = %v, want in [0, 1]", ErrParams, q)
	}
	if !(alpha > 1) || math.IsInf(alpha, 0) {
		return 0, fmt.Errorf("%w: order α = %v, want finite and > 1", ErrParams, alpha)
	}
	switch {
	case q == 0:
		return 0, nil
	case q == 1:
		return GaussianRDP(sigma, alpha), nil
	}
	if alpha != math.Trunc(alpha) {
		return 0, fmt.Errorf("%w: order α = %v: with subsampling (q = %v) only integer orders are computed", ErrParams, alpha, q)
	}
	n := int(alpha)
	// A_α − 1 = Σ_k C(α,k)(1−q)^{α−k} q^k (e^{(k²−k)/(2σ²)} − 1), since the
	// binomial weights sum to 1; the k = 0, 1 terms vanish. Summing the
	// excess with expm1 keeps full relative precision when ε is tiny (small
	// q, large σ); log-sum-exp takes over when the terms would overflow.
	logQ, log1Q := math.Log(q), math.Log1p(-q)
	logW := make([]float64, n+1)
	expo := make([]float64, n+1)
	mx := math.Inf(-1)
	for k := 2; k <= n; k++ {
		kf := float64(k)
		logW[k] = logBinom(n, k) + float64(n-k)*log1Q + kf*logQ
		expo[k] = (kf*kf - kf) / (2 * sigma * sigma)
		mx = max(mx, logW[k]+expo[k])
	}
	if mx < 700 {
		excess := 0.0
		for k := 2; k <= n; k++ {
			excess += math.Exp(logW[k]) * math.Expm1(expo[k])
		}
		return math.Log1p(excess) / (alpha - 1), nil
	}
	s := math.Exp(float64(n)*log1Q-mx) + math.Exp(math.Log(float64(n))+float64(n-1)*log1Q+logQ-mx)
	for k := 2; k <= n; k++ {
		s += math.Exp(logW[k] + expo[k] - mx)
	}
	return (mx + math.Log(s)) / (alpha - 1), nil
}

func logBinom(n, k int) float64 {
	a, _ := math.Lgamma(float64(n + 1))
	b, _ := math.Lgamma(float64(k + 1))
	c, _ := math.Lgamma(float64(n - k + 1))
	return a - b - c
}

// Accountant adds up the RDP of the mechanisms a party has taken part in,
// at each of its orders. The zero value is not usable; call New.
// An Accountant is not safe for concurrent use.
type Accountant struct {
	orders []float64
	rdp    []float64
}

// New returns an empty accountant over the given orders (DefaultOrders
// when none are given). Every order must be finite and > 1.
func New(orders ...float64) (*Accountant, error) {
	if len(orders) == 0 {
		orders = DefaultOrders()
	}
	for i, a := range orders {
		if !(a > 1) || math.IsInf(a, 0) {
			return nil, fmt.Errorf("%w: orders[%d] = %v, want finite and > 1", ErrParams, i, a)
		}
	}
	return &Accountant{orders: append([]float64(nil), orders...), rdp: make([]float64, len(orders))}, nil
}

// Compose adds steps runs of the sampled Gaussian mechanism (rate q, noise
// multiplier sigma): in tally's terms, steps rounds in which a client's
// clipped update carries noise of σ times the clipping norm in the sum and
// the client is selected with probability q. Nothing is added on error.
func (a *Accountant) Compose(q, sigma float64, steps int) error {
	if steps < 0 {
		return fmt.Errorf("%w: %d steps, want ≥ 0", ErrParams, steps)
	}
	add := make([]float64, len(a.orders))
	for i, o := range a.orders {
		r, err := SampledGaussianRDP(q, sigma, o)
		if err != nil {
			return err
		}
		add[i] = float64(steps) * r
	}
	for i := range a.rdp {
		a.rdp[i] += add[i]
	}
	return nil
}

// Epsilon returns the smallest ε over the orders such that everything
// composed so far is (ε, delta)-DP, ε = RDP(α) + log(1/δ)/(α−1) (Mironov
// 2017, Proposition 3), and the order that achieves it.
func (a *Accountant) Epsilon(delta float64) (eps, order float64, err error) {
	if !(delta > 0 && delta < 1) {
		return 0, 0, fmt.Errorf("%w: δ = %v, want in (0, 1)", ErrParams, delta)
	}
	eps = math.Inf(1)
	for i, o := range a.orders {
		if e := a.rdp[i] + math.Log(1/delta)/(o-1); e < eps {
			eps, order = e, o
		}
	}
	return eps, order, nil
}
