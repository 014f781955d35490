package accountant

import (
	"errors"
	"math"
	"testing"
)

// Without subsampling the accountant must reproduce the Gaussian
// mechanism's closed form: T rounds are (α, T·α/(2σ²))-RDP, and the best
// order of ε(α) = Tα/(2σ²) + log(1/δ)/(α−1) is α* = 1 + σ·√(2·log(1/δ)/T),
// where ε* = T/(2σ²) + √(2T·log(1/δ))/σ.
func TestGaussianClosedForm(t *testing.T) {
	for _, c := range []struct {
		name         string
		sigma, delta float64
		rounds       int
	}{
		{"sigma=1/T=1/delta=1e-5", 1, 1e-5, 1},
		{"sigma=4/T=100/delta=1e-6", 4, 1e-6, 100},
		{"sigma=0.7/T=20/delta=1e-3", 0.7, 1e-3, 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			T, L := float64(c.rounds), math.Log(1/c.delta)
			star := 1 + c.sigma*math.Sqrt(2*L/T)
			want := T/(2*c.sigma*c.sigma) + math.Sqrt(2*T*L)/c.sigma
			a, err := New(append(DefaultOrders(), star)...)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Compose(1, c.sigma, c.rounds); err != nil {
				t.Fatal(err)
			}
			eps, order, err := a.Epsilon(c.delta)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(eps-want) > 1e-9*want || order != star {
				t.Errorf("ε = %.12g at α = %v, want the closed form %.12g at α* = %v", eps, order, want, star)
			}
		})
	}
}

// At α = 2 the sampled Gaussian sum has three terms, so
// ε(2) = log(1 + q²·(e^{1/σ²} − 1)) exactly.
func TestSampledOrderTwo(t *testing.T) {
	for _, q := range []float64{0.001, 0.01, 0.1, 0.5, 0.9} {
		for _, sigma := range []float64{0.5, 1, 2, 8} {
			got, err := SampledGaussianRDP(q, sigma, 2)
			if err != nil {
				t.Fatal(err)
			}
			want := math.Log1p(q * q * math.Expm1(1/(sigma*sigma)))
			if math.Abs(got-want) > 1e-12*max(want, 1e-300) {
				t.Errorf("q=%v σ=%v: ε(2) = %.15g, want %.15g", q, sigma, got, want)
			}
		}
	}
}

// Subsampling can only help, and the sampled RDP tends to the full
// mechanism's as q → 1; for small q it is within the moments accountant's
// O(q²α/σ²) (Abadi et al. 2016, Lemma 3, for σ ≥ 1 and small α): here
// below 2q²α/σ².
func TestSampledBounds(t *testing.T) {
	for _, alpha := range []float64{2, 4, 8, 16, 32} {
		prev := 0.0
		for _, q := range []float64{0.001, 0.01, 0.1, 0.5, 0.99, 1} {
			r, err := SampledGaussianRDP(q, 4, alpha)
			if err != nil {
				t.Fatal(err)
			}
			if r < prev || r > GaussianRDP(4, alpha)*(1+1e-12) {
				t.Errorf("α=%v q=%v: ε = %v, want between %v (smaller q) and %v (no sampling)", alpha, q, r, prev, GaussianRDP(4, alpha))
			}
			prev = r
			if q <= 0.01 {
				if bound := 2 * q * q * alpha / 16; r > bound {
					t.Errorf("α=%v q=%v σ=4: ε = %v, above 2q²α/σ² = %v", alpha, q, r, bound)
				}
			}
		}
	}
}

// The RDP conversion is an upper bound: at the ε it reports for one
// Gaussian mechanism, the exact privacy curve of Balle & Wang ("Improving
// the Gaussian Mechanism for Differential Privacy", ICML 2018, Theorem 8),
// δ(ε) = Φ(1/(2σ) − εσ) − e^ε·Φ(−1/(2σ) − εσ), must not exceed δ, and
// should not be far below it (the bound is not vacuous).
func TestSoundAgainstAnalyticGaussian(t *testing.T) {
	phi := func(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }
	for _, sigma := range []float64{0.8, 2, 5} {
		for _, delta := range []float64{1e-3, 1e-5, 1e-8} {
			a, err := New()
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Compose(1, sigma, 1); err != nil {
				t.Fatal(err)
			}
			eps, _, err := a.Epsilon(delta)
			if err != nil {
				t.Fatal(err)
			}
			exact := phi(1/(2*sigma)-eps*sigma) - math.Exp(eps)*phi(-1/(2*sigma)-eps*sigma)
			if exact > delta {
				t.Errorf("σ=%v δ=%v: reported ε = %.4f, but the exact curve gives δ(ε) = %.3g > δ", sigma, delta, eps, exact)
			}
			if exact < delta*1e-4 {
				t.Errorf("σ=%v δ=%v: reported ε = %.4f is loose beyond reason, exact δ(ε) = %.3g", sigma, delta, eps, exact)
			}
		}
	}
}

func TestComposeAdds(t *testing.T) {
	a, _ := New()
	b, _ := New()
	if err := a.Compose(0.1, 1.2, 30); err != nil {
		t.Fatal(err)
	}
	if err := a.Compose(0.1, 1.2, 70); err != nil {
		t.Fatal(err)
	}
	if err := b.Compose(0.1, 1.2, 100); err != nil {
		t.Fatal(err)
	}
	ea, _, _ := a.Epsilon(1e-5)
	eb, _, _ := b.Epsilon(1e-5)
	if math.Abs(ea-eb) > 1e-12*eb {
		t.Errorf("30 then 70 steps give ε = %v, 100 steps at once %v", ea, eb)
	}
}

func TestErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"sigma", func() error { _, err := SampledGaussianRDP(0.1, 0, 2); return err }(), "accountant: invalid parameters: noise multiplier σ = 0, want finite and > 0"},
		{"q", func() error { _, err := SampledGaussianRDP(1.5, 1, 2); return err }(), "accountant: invalid parameters: sampling rate q = 1.5, want in [0, 1]"},
		{"fractional", func() error { _, err := SampledGaussianRDP(0.1, 1, 2.5); return err }(), "accountant: invalid parameters: order α = 2.5: with subsampling (q = 0.1) only integer orders are computed"},
		{"order", func() error { _, err := New(2, 1); return err }(), "accountant: invalid parameters: orders[1] = 1, want finite and > 1"},
		{"delta", func() error { a, _ := New(); _, _, err := a.Epsilon(0); return err }(), "accountant: invalid parameters: δ = 0, want in (0, 1)"},
	} {
		if !errors.Is(c.err, ErrParams) || c.err.Error() != c.want {
			t.Errorf("%s: error %v, want %q", c.name, c.err, c.want)
		}
	}
}
