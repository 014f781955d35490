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

func TestPartitionCoversEveryRowOnce(t *testing.T) {
	tests := []struct {
		name    string
		rows    int
		classes []int
		n       int
		spec    PartitionSpec
	}{
		{"iid/n=7", 1000, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 7, PartitionSpec{Kind: "iid"}},
		{"default-kind/n=3", 10, []int{1, 1}, 3, PartitionSpec{}},
		{"iid/one-row-each", 5, []int{1}, 5, PartitionSpec{Kind: "iid"}},
		{"dirichlet/alpha=0.1/n=10", 1000, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 10, PartitionSpec{Kind: "dirichlet", Alpha: 0.1}},
		{"dirichlet/alpha=100/n=10", 1000, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 10, PartitionSpec{Kind: "dirichlet", Alpha: 100}},
		// Nearly every draw leaves clients empty: exercises the rebalancing.
		{"dirichlet/alpha=0.001/rebalanced", 40, []int{1, 1}, 20, PartitionSpec{Kind: "dirichlet", Alpha: 0.001}},
		{"dirichlet/empty-class", 60, []int{1, 0, 1}, 4, PartitionSpec{Kind: "dirichlet", Alpha: 0.5}},
		{"size-skew/default/n=4", 1000, []int{1, 1}, 4, PartitionSpec{Kind: "size-skew"}},
		{"size-skew/tiny-share-raised", 20, []int{1}, 3, PartitionSpec{Kind: "size-skew", Sizes: []float64{100, 1, 0.01}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := indexed(tc.rows, tc.classes...)
			parts, err := Partition(e, len(tc.classes), tc.n, tc.spec, 3)
			if err != nil {
				t.Fatal(err)
			}
			if len(parts) != tc.n {
				t.Fatalf("%d parts, want %d", len(parts), tc.n)
			}
			for i, p := range parts {
				if p.Len() < MinClientRows {
					t.Errorf("client %d has %d rows, want ≥ %d", i, p.Len(), MinClientRows)
				}
				if p.Features != e.Features {
					t.Errorf("client %d has %d features", i, p.Features)
				}
			}
			if seen := rowIDs(t, e, parts...); len(seen) != tc.rows {
				t.Errorf("parts cover %d distinct rows, want %d", len(seen), tc.rows)
			}
			again, _ := Partition(e, len(tc.classes), tc.n, tc.spec, 3)
			if !reflect.DeepEqual(parts, again) {
				t.Error("the same seed gave different partitions")
			}
			if tc.rows > 2*tc.n {
				other, _ := Partition(e, len(tc.classes), tc.n, tc.spec, 4)
				if reflect.DeepEqual(parts, other) {
					t.Error("seeds 3 and 4 gave the same partition")
				}
			}
		})
	}
}

func TestPartitionIIDSizes(t *testing.T) {
	parts, err := Partition(indexed(103, 1, 1), 2, 10, PartitionSpec{Kind: "iid"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		if want := 10 + map[bool]int{true: 1, false: 0}[i < 3]; p.Len() != want {
			t.Errorf("client %d has %d rows, want %d", i, p.Len(), want)
		}
	}
}

func TestPartitionSizeSkew(t *testing.T) {
	tests := []struct {
		name  string
		rows  int
		sizes []float64
		want  []int
	}{
		{"default-1..4", 1000, nil, []int{100, 200, 300, 400}},
		{"explicit", 1000, []float64{5, 3, 2}, []int{500, 300, 200}},
		{"fractions", 999, []float64{0.5, 0.25, 0.25}, []int{499, 250, 250}},
		{"floor-of-one", 20, []float64{100, 1, 0.01}, []int{18, 1, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := len(tc.want)
			parts, err := Partition(indexed(tc.rows, 1, 1), 2, n, PartitionSpec{Kind: "size-skew", Sizes: tc.sizes}, 9)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]int, n)
			for i, p := range parts {
				got[i] = p.Len()
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("sizes %v, want %v", got, tc.want)
			}
		})
	}
}

// TestDirichletSkew measures label skew (mean total-variation distance from
// the pooled label distribution) on the digits data: small alpha must be
// clearly more skewed than large alpha, and large alpha close to iid.
func TestDirichletSkew(t *testing.T) {
	d, err := Embedded("digits")
	if err != nil {
		t.Fatal(err)
	}
	skew := func(spec PartitionSpec) float64 {
		total := 0.0
		const seeds = 5
		for seed := range uint64(seeds) {
			parts, err := Partition(d.Examples, d.Classes(), 10, spec, seed)
			if err != nil {
				t.Fatal(err)
			}
			total += LabelSkew(parts, d.Classes())
		}
		return total / seeds
	}
	iid := skew(PartitionSpec{Kind: "iid"})
	small := skew(PartitionSpec{Kind: "dirichlet", Alpha: 0.1})
	mid := skew(PartitionSpec{Kind: "dirichlet", Alpha: 1})
	large := skew(PartitionSpec{Kind: "dirichlet", Alpha: 100})
	t.Logf("label skew on digits, 10 clients: iid %.3f, alpha=100 %.3f, alpha=1 %.3f, alpha=0.1 %.3f", iid, large, mid, small)
	if !(small > mid+0.1 && mid > large+0.1) {
		t.Errorf("skew not decreasing in alpha: 0.1 → %.3f, 1 → %.3f, 100 → %.3f", small, mid, large)
	}
	if small < 0.6 {
		t.Errorf("alpha=0.1 skew %.3f, want ≥ 0.6 (clients hold few classes)", small)
	}
	// An unstratified iid split of ~180 rows per client over 10 classes
	// has a sampling TV of about 0.09; Dirichlet with large alpha splits
	// each class separately and is closer still to the pooled proportions.
	if large > 0.1 || iid > 0.15 {
		t.Errorf("alpha=100 skew %.3f and iid %.3f, want ≤ 0.1 and ≤ 0.15", large, iid)
	}
}

func TestLabelSkewExtremes(t *testing.T) {
	one := func(ys ...int) model.Examples {
		return model.Examples{X: make([]float64, len(ys)), Y: ys, Features: 1}
	}
	if got := LabelSkew([]model.Examples{one(0, 1), one(1, 0)}, 2); got != 0 {
		t.Errorf("identical halves: skew %g, want 0", got)
	}
	if got := LabelSkew([]model.Examples{one(0, 0), one(1, 1), {Features: 1}}, 2); got != 0.5 {
		t.Errorf("one class per client: skew %g, want 0.5", got)
	}
}

func TestPartitionErrors(t *testing.T) {
	e := indexed(10, 1, 1)
	tests := []struct {
		name    string
		e       model.Examples
		classes int
		n       int
		spec    PartitionSpec
		want    error
		msg     string
	}{
		{"too-few-rows", indexed(5, 1), 1, 6, PartitionSpec{}, ErrPartition,
			"dataset: cannot partition: 5 rows cannot give 6 clients 1 row(s) each"},
		{"no-clients", e, 2, 0, PartitionSpec{}, ErrPartition,
			"dataset: cannot partition: 0 clients, want at least 1"},
		{"no-classes", e, 0, 2, PartitionSpec{}, ErrPartition,
			"dataset: cannot partition: 0 classes, want at least 1"},
		{"label-out-of-range", e, 1, 2, PartitionSpec{}, ErrInvalid,
			"dataset: invalid dataset: row 1 has label 1, want one in [0, 1)"},
		{"sizes-length", e, 2, 3, PartitionSpec{Kind: "size-skew", Sizes: []float64{1, 2}}, ErrPartition,
			"dataset: cannot partition: 2 size-skew sizes for 3 clients"},
		{"invalid-spec", e, 2, 3, PartitionSpec{Kind: "dirichlet"}, ErrPartition,
			"dataset: cannot partition: dirichlet alpha 0 must be positive and finite"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Partition(tc.e, tc.classes, tc.n, tc.spec, 1)
			if !errors.Is(err, tc.want) || err.Error() != tc.msg {
				t.Fatalf("got %v\nwant %s", err, tc.msg)
			}
		})
	}
}

func TestPartitionSpecValidate(t *testing.T) {
	tests := []struct {
		name string
		spec PartitionSpec
		msg  string // "" = valid
	}{
		{"zero-value-is-iid", PartitionSpec{}, ""},
		{"iid", PartitionSpec{Kind: "iid"}, ""},
		{"dirichlet", PartitionSpec{Kind: "dirichlet", Alpha: 0.5}, ""},
		{"size-skew-default", PartitionSpec{Kind: "size-skew"}, ""},
		{"size-skew-sizes", PartitionSpec{Kind: "size-skew", Sizes: []float64{1, 2.5}}, ""},
		{"unknown-kind", PartitionSpec{Kind: "pathological"},
			`dataset: cannot partition: unknown kind "pathological"; want "iid", "dirichlet" or "size-skew"`},
		{"negative-alpha", PartitionSpec{Kind: "dirichlet", Alpha: -1},
			"dataset: cannot partition: dirichlet alpha -1 must be positive and finite"},
		{"infinite-alpha", PartitionSpec{Kind: "dirichlet", Alpha: math.Inf(1)},
			"dataset: cannot partition: dirichlet alpha +Inf must be positive and finite"},
		{"alpha-on-iid", PartitionSpec{Kind: "iid", Alpha: 0.3},
			`dataset: cannot partition: alpha applies to kind "dirichlet" only, not "iid"`},
		{"every-problem-at-once", PartitionSpec{Kind: "dirichlet", Alpha: math.NaN(), Sizes: []float64{1}},
			"dataset: cannot partition: dirichlet alpha NaN must be positive and finite\n" +
				`dataset: cannot partition: sizes apply to kind "size-skew" only, not "dirichlet"`},
		{"bad-sizes", PartitionSpec{Kind: "size-skew", Sizes: []float64{1, 0, -2}},
			"dataset: cannot partition: size-skew sizes[1] = 0 must be positive and finite\n" +
				"dataset: cannot partition: size-skew sizes[2] = -2 must be positive and finite"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Validate()
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("valid spec rejected: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrPartition) || err == nil || err.Error() != tc.msg {
				t.Fatalf("got %v\nwant %s", err, tc.msg)
			}
		})
	}
}

// TestGammaMoments checks the Marsaglia–Tsang sampler, including the boost
// for alpha < 1: Gamma(alpha, 1) has mean alpha and variance alpha.
func TestGammaMoments(t *testing.T) {
	const draws = 40000
	for _, alpha := range []float64{0.05, 0.3, 1, 2.5, 20} {
		t.Run(fmt.Sprintf("alpha=%g", alpha), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			sum, sumSq := 0.0, 0.0
			for range draws {
				g := math.Exp(logGamma(alpha, rng))
				sum += g
				sumSq += g * g
			}
			mean := sum / draws
			variance := sumSq/draws - mean*mean
			// Standard error of the mean is sqrt(alpha/draws); allow 5 of them.
			if se := math.Sqrt(alpha / draws); math.Abs(mean-alpha) > 5*se {
				t.Errorf("mean %.4f, want %g ± %.4f", mean, alpha, 5*se)
			}
			if math.Abs(variance-alpha) > 0.1*alpha {
				t.Errorf("variance %.4f, want %g ± 10%%", variance, alpha)
			}
		})
	}
}

func TestDirichletTinyAlphaIsFinite(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 100 {
		p := dirichlet(1e-4, 8, rng)
		sum := 0.0
		for _, v := range p {
			if !(v >= 0 && v <= 1) {
				t.Fatalf("proportion %g outside [0, 1]: %v", v, p)
			}
			sum += v
		}
		if math.Abs(sum-1) > 1e-12 {
			t.Fatalf("proportions sum to %g: %v", sum, p)
		}
	}
}

func BenchmarkPartition(b *testing.B) {
	d, err := Embedded("wsn")
	if err != nil {
		b.Fatal(err)
	}
	for _, spec := range []PartitionSpec{{Kind: "iid"}, {Kind: "dirichlet", Alpha: 0.5}, {Kind: "size-skew"}} {
		for _, n := range []int{10, 100} {
			b.Run(fmt.Sprintf("kind=%s/n=%d/rows=%d", spec.Kind, n, d.Examples.Len()), func(b *testing.B) {
				for b.Loop() {
					if _, err := Partition(d.Examples, d.Classes(), n, spec, 1); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(d.Examples.Len()*b.N)/b.Elapsed().Seconds(), "rows/s")
			})
		}
	}
}
