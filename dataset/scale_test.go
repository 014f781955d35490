package dataset

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/tallyfl/tally/model"
)

// close9 reports whether a and b agree to 1e-9, relative to max(1, |a|).
func close9(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(1, math.Abs(a)) }

// TestMomentsMergeEqualsWhole is the federated-scaling property: moments
// summed over any partition, directly or as flat vectors, equal the moments
// of the pooled data, and so give the same scaler.
func TestMomentsMergeEqualsWhole(t *testing.T) {
	for _, name := range []string{"breast-cancer", "digits"} {
		for _, spec := range []PartitionSpec{{Kind: "iid"}, {Kind: "dirichlet", Alpha: 0.2}} {
			t.Run(fmt.Sprintf("%s/%s", name, spec.Kind), func(t *testing.T) {
				d, err := Embedded(name)
				if err != nil {
					t.Fatal(err)
				}
				parts, err := Partition(d.Examples, d.Classes(), 7, spec, 5)
				if err != nil {
					t.Fatal(err)
				}
				whole := ComputeMoments(d.Examples)
				var merged Moments
				flat := make([]float64, 1+2*d.Examples.Features)
				for _, p := range parts {
					m := ComputeMoments(p)
					if err := merged.Add(m); err != nil {
						t.Fatal(err)
					}
					for i, v := range m.Flatten() {
						flat[i] += v
					}
				}
				fromFlat, err := MomentsFromFlat(flat, d.Examples.Features)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range []Moments{merged, fromFlat} {
					if m.Count != whole.Count {
						t.Fatalf("count %g, want %g", m.Count, whole.Count)
					}
					for j := range whole.Sum {
						if !close9(whole.Sum[j], m.Sum[j]) || !close9(whole.SumSq[j], m.SumSq[j]) {
							t.Fatalf("feature %d: sums %g, %g; want %g, %g", j, m.Sum[j], m.SumSq[j], whole.Sum[j], whole.SumSq[j])
						}
					}
					ws, ms := whole.Scaler(), m.Scaler()
					for j := range ws.Mean {
						if !close9(ws.Mean[j], ms.Mean[j]) || !close9(ws.Std[j], ms.Std[j]) {
							t.Fatalf("feature %d: scaler %g/%g, want %g/%g", j, ms.Mean[j], ms.Std[j], ws.Mean[j], ws.Std[j])
						}
					}
				}
			})
		}
	}
}

func TestScalerStandardises(t *testing.T) {
	d, err := Embedded("breast-cancer")
	if err != nil {
		t.Fatal(err)
	}
	s := ComputeMoments(d.Examples).Scaler()
	if err := s.Validate(d.Examples.Features); err != nil {
		t.Fatal(err)
	}
	orig := copyExamples(d.Examples)
	scaled := s.Apply(d.Examples)
	if !reflect.DeepEqual(d.Examples, orig) {
		t.Fatal("Apply modified its input")
	}
	after := ComputeMoments(scaled).Scaler()
	for j := range after.Mean {
		if math.Abs(after.Mean[j]) > 1e-9 || math.Abs(after.Std[j]-1) > 1e-9 {
			t.Errorf("feature %d after scaling: mean %g, std %g; want 0, 1", j, after.Mean[j], after.Std[j])
		}
	}
	// Spot-check one value against the definition: mean radius of row 0.
	want := (17.99 - s.Mean[0]) / s.Std[0]
	if scaled.X[0] != want {
		t.Errorf("scaled x[0][0] = %g, want %g", scaled.X[0], want)
	}
}

func TestScalerConstantColumn(t *testing.T) {
	// Column 0 varies; column 1 is constant and large, where E[x²] − E[x]²
	// suffers cancellation; column 2 is constant zero.
	e := model.Examples{Features: 3}
	for i := range 101 {
		e.X = append(e.X, float64(i), 123456.789, 0)
		e.Y = append(e.Y, 0)
	}
	s := ComputeMoments(e).Scaler()
	if s.Std[1] != 1 || s.Std[2] != 1 {
		t.Errorf("constant columns got std %g and %g, want 1", s.Std[1], s.Std[2])
	}
	if math.Abs(s.Mean[1]-123456.789) > 1e-6 {
		t.Errorf("constant column mean %g", s.Mean[1])
	}
	if want := math.Sqrt(850); math.Abs(s.Std[0]-want) > 1e-9 {
		t.Errorf("std of 0..100 = %g, want %g", s.Std[0], want)
	}
	out := s.Apply(e)
	for i := range out.Len() {
		if r := out.Row(i); math.Abs(r[1]) > 1e-9 || r[2] != 0 {
			t.Fatalf("row %d: constant columns scaled to %g, %g; want 0", i, r[1], r[2])
		}
	}
}

func TestScalerNoisyAggregate(t *testing.T) {
	// CKKS-style noise on the flat vector: a slightly non-integral count and
	// sums that imply a tiny negative variance must still give a valid scaler.
	m, err := MomentsFromFlat([]float64{99.9999997, 500.0000001, 2500.000001 - 1e-3}, 1)
	if err != nil {
		t.Fatal(err)
	}
	s := m.Scaler()
	if err := s.Validate(1); err != nil {
		t.Fatalf("noisy aggregate gave an invalid scaler: %v", err)
	}
	if s.Std[0] != 1 {
		t.Errorf("negative variance gave std %g, want the constant-column 1", s.Std[0])
	}
}

func TestScalerEmpty(t *testing.T) {
	s := (Moments{Sum: make([]float64, 2), SumSq: make([]float64, 2)}).Scaler()
	if !reflect.DeepEqual(s, Scaler{Mean: []float64{0, 0}, Std: []float64{1, 1}}) {
		t.Errorf("no rows gave %+v, want the identity scaler", s)
	}
}

func TestMomentsErrors(t *testing.T) {
	m := ComputeMoments(indexed(5, 1))
	t.Run("add-mismatched", func(t *testing.T) {
		before := m.Flatten()
		err := m.Add(ComputeMoments(model.Examples{X: []float64{1, 2}, Y: []int{0}, Features: 2}))
		const want = "dataset: invalid moments: adding moments of 2 features to moments of 1"
		if !errors.Is(err, ErrMoments) || err.Error() != want {
			t.Fatalf("got %v, want %s", err, want)
		}
		if !reflect.DeepEqual(m.Flatten(), before) {
			t.Error("a failed Add changed the moments")
		}
	})
	t.Run("add-ragged", func(t *testing.T) {
		err := m.Add(Moments{Count: 1, Sum: []float64{1}, SumSq: nil})
		if !errors.Is(err, ErrMoments) {
			t.Fatalf("got %v, want ErrMoments", err)
		}
	})
	tests := []struct {
		name     string
		v        []float64
		features int
		msg      string
	}{
		{"short", []float64{1, 2}, 1, "dataset: invalid moments: flat vector of 2 values, want 1 + 2×1"},
		{"long", []float64{1, 2, 3, 4}, 1, "dataset: invalid moments: flat vector of 4 values, want 1 + 2×1"},
		{"nan", []float64{1, math.NaN(), 3}, 1, "dataset: invalid moments: flat entry 1 is NaN"},
		{"inf", []float64{1, 2, math.Inf(-1)}, 1, "dataset: invalid moments: flat entry 2 is -Inf"},
	}
	for _, tc := range tests {
		t.Run("flat/"+tc.name, func(t *testing.T) {
			_, err := MomentsFromFlat(tc.v, tc.features)
			if !errors.Is(err, ErrMoments) || err.Error() != tc.msg {
				t.Fatalf("got %v, want %s", err, tc.msg)
			}
		})
	}
}

func TestScalerValidate(t *testing.T) {
	tests := []struct {
		name string
		s    Scaler
		msg  string
	}{
		{"ok", Scaler{Mean: []float64{0, 1}, Std: []float64{1, 2}}, ""},
		{"length", Scaler{Mean: []float64{0}, Std: []float64{1}},
			"dataset: invalid scaler: 1 means and 1 deviations for 2 features"},
		{"zero-std", Scaler{Mean: []float64{0, 1}, Std: []float64{1, 0}},
			"dataset: invalid scaler: deviation of feature 1 is 0, want finite and positive"},
		{"nan-mean", Scaler{Mean: []float64{math.NaN(), 1}, Std: []float64{1, 1}},
			"dataset: invalid scaler: mean of feature 0 is NaN"},
		{"clip", Scaler{Mean: []float64{0, 1}, Std: []float64{1, 2}, Clip: 3}, ""},
		{"negative-clip", Scaler{Mean: []float64{0, 1}, Std: []float64{1, 2}, Clip: -1},
			"dataset: invalid scaler: clip -1, want finite and ≥ 0 (0: no bound)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.Validate(2)
			if tc.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrScaler) || err.Error() != tc.msg {
				t.Fatalf("got %v, want %s", err, tc.msg)
			}
		})
	}
}

// TestScalerCKKSNoise is issue 11, defect 1, at the scaler: moments
// decrypted from a CKKS aggregate carry noise of about 3e-7 on every sum
// (aggregation.SlotNoiseSigma for the default parameters, t = 3). An
// all-zero column then reads a variance of e₂/n, a standard deviation of
// ~1e-5 from noise alone, and a value 16 outside the training rows became
// ~1e6. Given the noise, the scaler must treat the column as constant (Std
// 1), keep the real deviations, and bound what it returns.
func TestScalerCKKSNoise(t *testing.T) {
	const (
		n     = 1437   // the digits federation's training rows
		sigma = 2.9e-7 // default parameters, 3 decryption shares
	)
	// Column 0 varies over 0..16, column 1 is zero in every row, column 2
	// is non-zero (1) in a single row: rare but real; column 3 is the
	// constant 100, where the count's noise fakes a variance.
	e := model.Examples{Features: 4}
	for i := range n {
		rare := 0.0
		if i == 7 {
			rare = 1
		}
		e.X = append(e.X, float64(i%17), 0, rare, 100)
		e.Y = append(e.Y, 0)
	}
	exact := ComputeMoments(e)
	for _, noise := range []struct {
		name       string
		e0, e1, e2 float64 // in units of sigma, on Count, Sum and SumSq
	}{
		{"up", 3, 2, 4}, {"down", -3, -2, -4}, {"mixed", 5, -4, 6}, {"tail", -7.9, 7.9, 7.9},
	} {
		t.Run(noise.name, func(t *testing.T) {
			flat := exact.Flatten()
			flat[0] += noise.e0 * sigma
			for j := range 4 {
				flat[1+j] += noise.e1 * sigma
				flat[5+j] += noise.e2 * sigma
			}
			m, err := MomentsFromFlat(flat, 4)
			if err != nil {
				t.Fatal(err)
			}
			if noise.e2 > 0 {
				// Without the floor the noise passes for a deviation.
				if s := m.Scaler(); s.Std[1] > 1e-3 {
					t.Fatalf("noise-blind scaler gave std %g to the zero column; the case does not exercise the floor", s.Std[1])
				}
			}
			s := m.ScalerWithNoise(sigma)
			if err := s.Validate(4); err != nil {
				t.Fatal(err)
			}
			want := exact.Scaler()
			if s.Std[1] != 1 || s.Std[3] != 1 {
				t.Errorf("constant columns under CKKS noise: std %g (all zero) and %g (all 100), want the constant-feature 1", s.Std[1], s.Std[3])
			}
			for _, j := range []int{0, 2} {
				if d := math.Abs(s.Std[j]-want.Std[j]) / want.Std[j]; d > 1e-5 {
					t.Errorf("column %d: std %g, exact %g (relative %.2g)", j, s.Std[j], want.Std[j], d)
				}
			}
			if want := math.Sqrt(n - 1); math.Abs(s.Clip-want) > 1e-6 {
				t.Errorf("clip %g, want √(n−1) = %g", s.Clip, want)
			}
			test := s.Apply(model.Examples{X: []float64{16, 16, 16, 100}, Y: []int{0}, Features: 4}).Row(0)
			if math.Abs(test[1]-16) > 1e-6 {
				t.Errorf("value 16 in the all-zero column standardised to %g, want 16", test[1])
			}
			// 16 in the rare column is ~600 deviations out: bounded.
			if test[2] != s.Clip {
				t.Errorf("value 16 in the rare column standardised to %g, want the bound %g", test[2], s.Clip)
			}
		})
	}
}

// TestScalerClipSparesTrainingRows checks the bound against Samuelson's
// inequality: on data sets built to have extreme rows (one outlier, one
// non-zero value, two clusters, random values) clipping at √(n − 1) never
// moves a training row.
func TestScalerClipSparesTrainingRows(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 3))
	for _, n := range []int{2, 3, 10, 1000} {
		e := model.Examples{Features: 4}
		for i := range n {
			outlier, single, cluster := 0.0, 0.0, 0.0
			if i == 0 {
				outlier, single = 1e6, 1
			}
			if i%2 == 0 {
				cluster = 5
			}
			e.X = append(e.X, outlier+float64(i%3), single, cluster, r.NormFloat64()*1e3)
			e.Y = append(e.Y, 0)
		}
		s := ComputeMoments(e).Scaler()
		unclipped := s
		unclipped.Clip = 0
		got, want := s.Apply(e), unclipped.Apply(e)
		for i, v := range want.X {
			if math.Abs(got.X[i]-v) > 1e-9*max(1, math.Abs(v)) {
				t.Errorf("n=%d: value %d standardised to %g unclipped, %g clipped at %g", n, i, v, got.X[i], s.Clip)
			}
		}
	}
}

func BenchmarkComputeMoments(b *testing.B) {
	d, err := Embedded("digits")
	if err != nil {
		b.Fatal(err)
	}
	b.Run(fmt.Sprintf("rows=%d/features=%d", d.Examples.Len(), d.Examples.Features), func(b *testing.B) {
		for b.Loop() {
			ComputeMoments(d.Examples)
		}
		b.ReportMetric(float64(len(d.Examples.X)*b.N)/b.Elapsed().Seconds(), "values/s")
	})
}

// TestFlatSquaresBound checks that the bound from the summed moments holds
// for the parts' flattened moments, with sums of mixed signs that cancel
// in the total.
func TestFlatSquaresBound(t *testing.T) {
	parts := []model.Examples{
		{X: []float64{-3, 0, 100, 0, -5, 0}, Y: []int{0, 1, 0}, Features: 2},
		{X: []float64{3, 0, -100, 0}, Y: []int{1, 0}, Features: 2},
	}
	var total Moments
	var got float64
	for _, e := range parts {
		m := ComputeMoments(e)
		for _, v := range m.Flatten() {
			got += v * v
		}
		if err := total.Add(m); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range total.Flatten() {
		got += v * v
	}
	if b := total.FlatSquaresBound(); b < got {
		t.Errorf("FlatSquaresBound %g below the parts' and the sum's squares %g", b, got)
	}
}
