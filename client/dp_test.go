package client

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

func norm(v []float64, w float64) float64 {
	var s float64
	for _, x := range v {
		s += (w * x) * (w * x)
	}
	return math.Sqrt(s)
}

// TestPrivatizeClips: without noise, the contribution w·Δ the client
// sends is at most C in L2 norm, in Δ's direction, and one already
// within C is sent unchanged.
func TestPrivatizeClips(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name    string
		w, clip float64
		scale   float64
	}{
		{"w=40/over", 40, 1, 1},
		{"w=1/over", 1, 0.5, 3},
		{"w=40/within", 40, 1e6, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			update := make([]float64, 200)
			for i := range update {
				update[i] = tc.scale * rng.NormFloat64()
			}
			out := make([]float64, len(update))
			privatize(out, update, tc.w, dpSettings{clip: tc.clip}, rng)
			in, got := norm(update, tc.w), norm(out, tc.w)
			if got > tc.clip*(1+1e-12) {
				t.Fatalf("‖w·Δ'‖ = %g after clipping to %g", got, tc.clip)
			}
			if in <= tc.clip {
				for i := range out {
					if out[i] != update[i] {
						t.Fatalf("update within the clip changed at %d: %g → %g", i, update[i], out[i])
					}
				}
				return
			}
			if math.Abs(got-tc.clip) > 1e-9*tc.clip {
				t.Errorf("‖w·Δ'‖ = %g, want the clip %g (input norm %g)", got, tc.clip, in)
			}
			for i := range out {
				if math.Abs(out[i]*in-update[i]*tc.clip) > 1e-9*math.Abs(update[i]*tc.clip)+1e-15 {
					t.Fatalf("coordinate %d not scaled by C/‖w·Δ‖: %g → %g", i, update[i], out[i])
				}
			}
		})
	}
}

// TestPrivatizeNoiseVariance: the noise on the contribution w·Δ has mean
// 0 and the configured standard deviation σC/√m, per coordinate.
func TestPrivatizeNoiseVariance(t *testing.T) {
	spec := &tallyv1.DPSpec{Epsilon: 8, Delta: 1e-5, Sigma: 1.7, Clip: 2, Contributors: 4, NoiseStd: 1.7 * 2 / 2}
	s, err := dpFromSpec(spec, 5)
	if err != nil {
		t.Fatal(err)
	}
	const n, w = 40000, 25.0
	update := make([]float64, n) // zero: only the noise remains
	out := make([]float64, n)
	privatize(out, update, w, *s, rand.New(rand.NewPCG(3, 4)))
	var sum, sq float64
	for _, x := range out {
		sum += w * x
		sq += (w * x) * (w * x)
	}
	mean := sum / n
	variance := sq/n - mean*mean
	want := 1.7 * 1.7
	// The sample variance of n normals has relative standard error √(2/n) ≈ 0.7 %.
	if math.Abs(variance-want) > 0.05*want {
		t.Errorf("noise variance on w·Δ = %g, want σ²C²/m = %g", variance, want)
	}
	if math.Abs(mean) > 5*math.Sqrt(want/n) {
		t.Errorf("noise mean = %g, want ≈ 0", mean)
	}
}

// TestDPSpecRefused: a coordinator that asks for less noise than σ·C/√m,
// or for no clipping, is refused when the client joins.
func TestDPSpecRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec *tallyv1.DPSpec
	}{
		{"noise below σC/√m", &tallyv1.DPSpec{Epsilon: 8, Delta: 1e-5, Sigma: 2, Clip: 1, Contributors: 4, NoiseStd: 0.5}},
		{"no clip", &tallyv1.DPSpec{Epsilon: 8, Delta: 1e-5, Sigma: 2, Clip: 0, Contributors: 4, NoiseStd: 1}},
		{"no contributors", &tallyv1.DPSpec{Epsilon: 8, Delta: 1e-5, Sigma: 2, Clip: 1, Contributors: 0, NoiseStd: 1}},
		// Over 5 rounds at δ 1e-5, σ 2 gives ε ≈ 6: more than the claimed 1.
		{"σ too small for ε", &tallyv1.DPSpec{Epsilon: 1, Delta: 1e-5, Sigma: 2, Clip: 1, Contributors: 4, NoiseStd: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := dpFromSpec(tc.spec, 5); !errors.Is(err, ErrJob) {
				t.Errorf("dpFromSpec(%v) = %v, want ErrJob", tc.spec, err)
			}
		})
	}
}
