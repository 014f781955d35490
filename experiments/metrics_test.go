package experiments

import (
	"math"
	"testing"
)

func TestMetrics(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name      string
		got, want float64
	}{
		{"kendall/identical", KendallTau([]float64{1, 2, 3, 4}, []float64{10, 20, 30, 40}), 1},
		{"kendall/reversed", KendallTau([]float64{1, 2, 3, 4}, []float64{4, 3, 2, 1}), -1},
		// One discordant pair of six: (5 − 1)/6.
		{"kendall/one-swap", KendallTau([]float64{1, 2, 3, 4}, []float64{1, 3, 2, 4}), 4.0 / 6},
		// τ-b with a tie in b: 5 concordant, 0 discordant, √(6·5).
		{"kendall/tie", KendallTau([]float64{1, 2, 3, 4}, []float64{1, 1, 3, 4}), 5 / math.Sqrt(30)},
		{"kendall/constant", KendallTau([]float64{1, 2}, []float64{3, 3}), nan},
		{"pearson/linear", Pearson([]float64{1, 2, 3}, []float64{-2, -4, -6}), -1},
		{"spearman/monotone", Spearman([]float64{1, 2, 3}, []float64{1, 8, 27}), 1},
		{"l2/exact", NormL2([]float64{3, 4}, []float64{3, 4}), 0},
		{"l2/zero", NormL2([]float64{0, 0}, []float64{3, 4}), 1},
		{"auc/perfect", DetectionAUC([]float64{-1, 2, 3}, []bool{true, false, false}), 1},
		{"auc/ties", DetectionAUC([]float64{1, 1}, []bool{true, false}), 0.5},
		{"auc/none-corrupted", DetectionAUC([]float64{1, 2}, []bool{false, false}), nan},
		{"symmetry/equal", SymmetryError([]float64{2, 1, 2}, [][2]int{{2, 0}}), 0},
		{"symmetry/off", SymmetryError([]float64{3, 1, 2}, [][2]int{{2, 0}}), 1 / 2.0},
		// Base: client 0 holds 2 of 4 (share 0.5); split: its parts 0 and 3
		// hold 3 of 5 (0.6): gain 0.1.
		{"sybil/gain", SybilGain([]float64{2, 1, 1}, 0, []float64{1.5, 1, 1, 1.5}, []int{0, 3}), 0.1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if math.IsNaN(c.want) != math.IsNaN(c.got) || (!math.IsNaN(c.want) && math.Abs(c.got-c.want) > 1e-12) {
				t.Fatalf("got %v, want %v", c.got, c.want)
			}
		})
	}
}

func TestMeanCI(t *testing.T) {
	// t_{0.975, 2} = 4.302653; sd of {1, 2, 3} is 1.
	iv := MeanCI([]float64{1, 2, 3, math.NaN()})
	if iv.N != 3 || iv.Mean != 2 || math.Abs(iv.Half-4.302653/math.Sqrt(3)) > 1e-5 {
		t.Fatalf("got %+v", iv)
	}
	if iv := MeanCI([]float64{5}); iv.Mean != 5 || iv.Half != 0 || iv.N != 1 {
		t.Fatalf("one repeat: %+v", iv)
	}
}

func TestParseMethod(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"tmc@16", "tmc@16", true},
		{"exact-shapley", "exact-shapley", true},
		{"cgsv", "cgsv", true},
		{"tmc@0", "", false},
		{"loo@4", "", false},
		{"shapley", "", false},
	} {
		t.Run(c.in, func(t *testing.T) {
			m, err := ParseMethod(c.in)
			if (err == nil) != c.ok || (c.ok && m.String() != c.want) {
				t.Fatalf("ParseMethod(%q) = %v, %v", c.in, m, err)
			}
		})
	}
}

func TestPartitionGroups(t *testing.T) {
	for _, c := range []struct{ n, k, groups int }{{5, 2, 2}, {10, 3, 3}, {50, 5, 10}, {4, 3, 1}} {
		g := partitionGroups(c.n, c.k, 7, 3)
		seen := map[int]bool{}
		for _, m := range g {
			if len(m) < c.k {
				t.Errorf("n=%d k=%d: group %v below k", c.n, c.k, m)
			}
			for _, i := range m {
				if seen[i] {
					t.Errorf("n=%d: client %d twice", c.n, i)
				}
				seen[i] = true
			}
		}
		if len(g) != c.groups || len(seen) != c.n {
			t.Errorf("n=%d k=%d: %d groups over %d clients, want %d over %d", c.n, c.k, len(g), len(seen), c.groups, c.n)
		}
	}
}
