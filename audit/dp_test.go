package audit

import (
	"math"
	"testing"

	"github.com/tallyfl/tally/accountant"
	"github.com/tallyfl/tally/model"
)

// The σ the DP releases use is the accountant's: at σ the budget holds,
// and a percent less noise breaks it.
func TestNoiseMultiplierMeetsBudget(t *testing.T) {
	epsAt := func(sigma float64) float64 {
		a, err := accountant.New()
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Compose(1, sigma, 20); err != nil {
			t.Fatal(err)
		}
		e, _, err := a.Epsilon(1e-5)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	for _, eps := range []float64{1, 4, 8} {
		sigma, err := noiseMultiplier(eps, 1e-5, 20)
		if err != nil {
			t.Fatal(err)
		}
		if got := epsAt(sigma); got > eps {
			t.Errorf("ε = %v: σ = %v gives ε = %v, over budget", eps, sigma, got)
		}
		if got := epsAt(sigma * 0.99); got <= eps {
			t.Errorf("ε = %v: σ = %v is not the smallest, 0.99σ gives ε = %v", eps, sigma, got)
		}
	}
}

// Without noise a DP release is the equal-weight sum of the clipped
// updates: an update above the clipping norm is scaled to it, one below
// is left alone.
func TestDPReleaseClips(t *testing.T) {
	e := &env{train: model.Examples{Features: 1}}
	data := []model.Examples{{X: []float64{1, 2}, Y: []int{0, 1}, Features: 1}, {X: []float64{3, 4}, Y: []int{1, 1}, Features: 1}}
	r := e.dpRelease([][]float64{{3, 4}, {0.3, 0.4}}, data, 1, 0, derive(1, "t", 0, 0))
	want := []float64{0.6 + 0.3, 0.8 + 0.4}
	for j := range want {
		if got := r.sum[j] / float64(r.n) * 2; math.Abs(got-want[j]) > 1e-12 {
			t.Errorf("sum[%d] = %v, want %v", j, got, want[j])
		}
	}
	if r.truth.Len() != 4 || r.per != 2 || r.n != 4 {
		t.Errorf("release of %d rows, %d per client, n = %d; want 4, 2, 4", r.truth.Len(), r.per, r.n)
	}
}
