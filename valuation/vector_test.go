package valuation

import (
	"bytes"
	"errors"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestCosineToAggregate(t *testing.T) {
	updates := [][]float64{{1, 0}, {0, 1}, {-1, 0}, {0, 0}}
	weights := []float64{3, 1, 1, 5}
	// Aggregate = (3·[1,0] + [0,1] − [1,0]) / 10 = [0.2, 0.1].
	got, err := CosineToAggregate(updates, weights)
	if err != nil {
		t.Fatal(err)
	}
	c := 2 / math.Sqrt(5)
	assertClose(t, "cosine", got, []float64{c, 1 / math.Sqrt(5), -c, 0}, 1e-15)
	if _, err := CosineToAggregate([][]float64{{1}, {1, 2}}, []float64{1, 1}); !errors.Is(err, ErrLength) {
		t.Errorf("ragged updates: err = %v, want ErrLength", err)
	}
}

func TestInfluence(t *testing.T) {
	grad := []float64{1, -2}
	updates := [][]float64{{-1, 0}, {0, 1}, {1, 1}}
	weights := []float64{1, 2, 1}
	a, err := InfluenceCoefficients(grad, updates, weights)
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, "coefficients", a, []float64{-1, -4, -1}, 0)
	phi, err := Influence(grad, updates, weights)
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, "influence", phi, []float64{0.25, 1, 0.25}, 1e-15)
	if _, err := Influence([]float64{1}, updates, weights); !errors.Is(err, ErrLength) {
		t.Errorf("short gradient: err = %v, want ErrLength", err)
	}
}

func TestSurrogateGame(t *testing.T) {
	g, err := NewSurrogateGame([]float64{-2, 4, -6}, []float64{1, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		s    Coalition
		want float64
	}{{0, 0}, {Of(0), 2}, {Of(1), -4}, {Of(0, 2), 8.0 / 3}, {Grand(3), 1}} {
		if got, _ := g.Utility(t.Context(), tc.s); math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("U(%v) = %v, want %v", tc.s, got, tc.want)
		}
	}
	if _, err := NewSurrogateGame([]float64{1}, []float64{0}); !errors.Is(err, ErrWeight) {
		t.Errorf("zero weight: err = %v, want ErrWeight", err)
	}
	if _, err := NewSurrogateGame([]float64{1, 2}, []float64{1}); !errors.Is(err, ErrLength) {
		t.Errorf("length mismatch: err = %v, want ErrLength", err)
	}
}

func TestSpearman(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b []float64
		want float64
	}{
		{"identical", []float64{1, 2, 3, 4}, []float64{10, 20, 30, 40}, 1},
		{"reversed", []float64{1, 2, 3, 4}, []float64{4, 3, 2, 1}, -1},
		{"monotone-nonlinear", []float64{1, 2, 3, 4, 5}, []float64{1, 8, 27, 64, 125}, 1},
		// Ranks (1,2,3,4,5) against (2,1,4,3,5): 1 − 6·4/(5·24) = 0.8.
		{"two-swaps", []float64{1, 2, 3, 4, 5}, []float64{2, 1, 4, 3, 5}, 0.8},
		// b's ties get ranks (1.5, 1.5, 3); Pearson of (1,2,3) and that.
		{"ties", []float64{1, 2, 3}, []float64{5, 5, 9}, math.Sqrt(3) / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Spearman(tc.a, tc.b); math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("Spearman = %v, want %v", got, tc.want)
			}
		})
	}
	for _, bad := range [][2][]float64{{{1}, {1}}, {{1, 2}, {1}}, {{1, 1}, {1, 2}}} {
		if got := Spearman(bad[0], bad[1]); !math.IsNaN(got) {
			t.Errorf("Spearman(%v, %v) = %v, want NaN", bad[0], bad[1], got)
		}
	}
}

func TestAccumulator(t *testing.T) {
	acc, err := NewAccumulator(0.5)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(acc.AddRound([]string{"a", "b"}, []float64{1, 2}, []float64{0.4, 0}))
	must(acc.AddRound([]string{"b", "c"}, []float64{3, 4}, nil))
	must(acc.AddRound([]string{"a"}, []float64{8}, []float64{0.3}))
	// a: 0.25·1 + 8 = 8.25, se sqrt((0.25·0.4)² + 0.3²); b: 0.25·2 + 0.5·3 = 2;
	// c: 0.5·4 = 2.
	want := []Total{
		{ID: "a", Value: 8.25, StdErr: math.Hypot(0.1, 0.3), Rounds: 2},
		{ID: "b", Value: 2, StdErr: 0, Rounds: 2},
		{ID: "c", Value: 2, StdErr: 0, Rounds: 1},
	}
	got := acc.Totals()
	if len(got) != len(want) {
		t.Fatalf("totals %v", got)
	}
	for k := range want {
		if got[k].ID != want[k].ID || math.Abs(got[k].Value-want[k].Value) > 1e-15 ||
			math.Abs(got[k].StdErr-want[k].StdErr) > 1e-15 || got[k].Rounds != want[k].Rounds {
			t.Errorf("total %d = %+v, want %+v", k, got[k], want[k])
		}
	}
	if acc.Rounds() != 3 {
		t.Errorf("rounds %d", acc.Rounds())
	}
	if err := acc.AddRound([]string{"a", "a"}, []float64{1, 1}, nil); !errors.Is(err, ErrInput) {
		t.Errorf("duplicate id: err = %v, want ErrInput", err)
	}
	if _, err := NewAccumulator(0); !errors.Is(err, ErrDecay) {
		t.Errorf("decay 0: err = %v, want ErrDecay", err)
	}
	// Plain FedSV: decay 1 sums.
	fed, _ := NewAccumulator(1)
	must(fed.AddRound([]string{"x"}, []float64{1.5}, nil))
	must(fed.AddRound([]string{"x"}, []float64{2.5}, nil))
	if x, _ := fed.Get("x"); x.Value != 4 {
		t.Errorf("FedSV sum %v, want 4", x.Value)
	}
}

func TestSplitByWeight(t *testing.T) {
	v, se, err := SplitByWeight(6, 0.6, []float64{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, "values", v, []float64{1, 2, 3}, 1e-15)
	assertClose(t, "stderr", se, []float64{0.1, 0.2, 0.3}, 1e-15)
	if _, _, err := SplitByWeight(1, 0, []float64{1, -1}); !errors.Is(err, ErrWeight) {
		t.Errorf("negative weight: err = %v, want ErrWeight", err)
	}
}

func TestConfigFiles(t *testing.T) {
	for _, tc := range []struct {
		file string
		want string // exact error text; "" for a valid file
	}{
		{"good.yaml", ""},
		{"negative.bad.yaml", strings.Join([]string{
			"valuation: invalid config: budget -5 is negative",
			"valuation: invalid config: batch -1 is negative",
			"valuation: invalid config: se_target -0.1 must be a finite number ≥ 0",
			"valuation: invalid config: truncation 1.5 must be in [0, 1)",
			"valuation: invalid config: min_samples 20 exceeds samples 10",
		}, "\n")},
		{"unknown-field.bad.yaml", "yaml: unmarshal errors:\n  line 2: field permutations not found in type valuation.Config"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile("testdata/" + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			var cfg Config
			dec := yaml.NewDecoder(bytes.NewReader(raw))
			dec.KnownFields(true)
			err = dec.Decode(&cfg)
			if err == nil {
				_, err = NewEstimator(MethodTMC, cfg)
			}
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Errorf("error:\n%s\nwant:\n%s", got, tc.want)
			}
			if strings.Contains(tc.file, "negative") && !errors.Is(err, ErrConfig) {
				t.Errorf("err does not wrap ErrConfig")
			}
		})
	}
}

func TestRegistry(t *testing.T) {
	names := Methods()
	if !slices.IsSorted(names) || len(names) != 7 {
		t.Errorf("Methods() = %v", names)
	}
	for _, m := range names {
		est, err := NewEstimator(m, Config{})
		if err != nil || est.Method() != m {
			t.Errorf("NewEstimator(%q) = %v, %v", m, est, err)
		}
	}
	for _, m := range VectorMethods() {
		if _, err := NewEstimator(m, Config{}); !errors.Is(err, ErrVectorMethod) {
			t.Errorf("NewEstimator(%q): err = %v, want ErrVectorMethod", m, err)
		}
	}
	if _, err := NewEstimator("shapley-ish", Config{}); !errors.Is(err, ErrUnknownMethod) {
		t.Errorf("unknown method: err = %v", err)
	}
}
