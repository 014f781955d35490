package dataset

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"testing"

	"github.com/tallyfl/tally/model"
)

// indexed returns n rows whose single feature is the row index, so tests can
// tell exactly which rows ended up where. Labels cycle through the class
// sizes given: sizes {3, 1} labels rows 0,0,0,1,0,0,0,1,….
func indexed(n int, sizes ...int) model.Examples {
	var pattern []int
	for c, s := range sizes {
		for range s {
			pattern = append(pattern, c)
		}
	}
	e := model.Examples{Features: 1}
	for i := range n {
		e.X = append(e.X, float64(i))
		e.Y = append(e.Y, pattern[i%len(pattern)])
	}
	return e
}

// rowIDs returns the row indices held by parts built from indexed data, and
// fails if a row appears twice or a label does not match its row.
func rowIDs(t *testing.T, src model.Examples, parts ...model.Examples) map[int]bool {
	t.Helper()
	seen := map[int]bool{}
	for _, p := range parts {
		for i := range p.Len() {
			id := int(p.Row(i)[0])
			if seen[id] {
				t.Fatalf("row %d appears twice", id)
			}
			if p.Y[i] != src.Y[id] {
				t.Fatalf("row %d carries label %d, want %d", id, p.Y[i], src.Y[id])
			}
			seen[id] = true
		}
	}
	return seen
}

func classCounts(y []int, classes int) []int {
	c := make([]int, classes)
	for _, v := range y {
		c[v]++
	}
	return c
}

func TestSplitStratified(t *testing.T) {
	bc, err := Embedded("breast-cancer")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		e         model.Examples
		classes   int
		val, test float64
	}{
		{"breast-cancer/val=0.2/test=0.2", bc.Examples, 2, 0.2, 0.2},
		{"synthetic/val=0.1/test=0.3", indexed(1000, 5, 3, 1, 1), 4, 0.1, 0.3},
		{"synthetic/val=0/test=0.25", indexed(103, 2, 1), 2, 0, 0.25},
		{"synthetic/val=0.5/test=0", indexed(50, 1, 1, 1), 3, 0.5, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.e.Len()
			train, val, test, err := Split(tc.e, tc.val, tc.test, 7)
			if err != nil {
				t.Fatal(err)
			}
			if got := train.Len() + val.Len() + test.Len(); got != n {
				t.Fatalf("sets hold %d rows, want %d", got, n)
			}
			if want := int(math.Round(tc.test * float64(n))); test.Len() != want {
				t.Errorf("test has %d rows, want %d", test.Len(), want)
			}
			if want := tc.val * float64(n); math.Abs(float64(val.Len())-want) > 1 {
				t.Errorf("validation has %d rows, want %.1f ± 1", val.Len(), want)
			}
			// Stratification: every class contributes the floor or the
			// ceiling of its exact share to each set.
			all := classCounts(tc.e.Y, tc.classes)
			for _, s := range []struct {
				name string
				set  model.Examples
				frac float64
			}{{"val", val, tc.val}, {"test", test, tc.test}, {"train", train, 1 - tc.val - tc.test}} {
				got := classCounts(s.set.Y, tc.classes)
				for c := range all {
					exact := s.frac * float64(all[c])
					// train absorbs the rounding of both others: allow 2.
					tol := 1.0
					if s.name == "train" {
						tol = 2
					}
					if math.Abs(float64(got[c])-exact) > tol {
						t.Errorf("%s: class %d has %d rows, want %.2f (of %d)", s.name, c, got[c], exact, all[c])
					}
				}
			}
			if tc.e.Features == 1 {
				if seen := rowIDs(t, tc.e, train, val, test); len(seen) != n {
					t.Errorf("sets cover %d distinct rows, want %d", len(seen), n)
				}
				for _, set := range []model.Examples{train, val, test} {
					for i := 1; i < set.Len(); i++ {
						if set.X[i] <= set.X[i-1] {
							t.Fatalf("rows out of original order: %v after %v", set.X[i], set.X[i-1])
						}
					}
				}
			}
		})
	}
}

func TestSplitDeterministic(t *testing.T) {
	e := indexed(500, 3, 2)
	a1, b1, c1, err := Split(e, 0.2, 0.2, 42)
	if err != nil {
		t.Fatal(err)
	}
	a2, b2, c2, _ := Split(e, 0.2, 0.2, 42)
	if !reflect.DeepEqual([]model.Examples{a1, b1, c1}, []model.Examples{a2, b2, c2}) {
		t.Error("the same seed gave different splits")
	}
	_, b3, _, _ := Split(e, 0.2, 0.2, 43)
	if reflect.DeepEqual(b1, b3) {
		t.Error("seeds 42 and 43 gave the same validation set")
	}
}

func TestSplitErrors(t *testing.T) {
	tests := []struct {
		name      string
		e         model.Examples
		val, test float64
		want      error
		msg       string
	}{
		{"negative", indexed(10, 1), -0.1, 0.2, ErrSplit,
			"dataset: invalid split: val -0.1 and test 0.2 must be ≥ 0 and sum to less than 1"},
		{"sum-to-one", indexed(10, 1), 0.5, 0.5, ErrSplit,
			"dataset: invalid split: val 0.5 and test 0.5 must be ≥ 0 and sum to less than 1"},
		{"nan", indexed(10, 1), math.NaN(), 0, ErrSplit,
			"dataset: invalid split: val NaN and test 0 must be ≥ 0 and sum to less than 1"},
		{"no-training-rows", indexed(2, 1), 0.4, 0.4, ErrSplit,
			"dataset: invalid split: 2 rows leave no training rows after 1 for validation and 1 for test"},
		{"empty", model.Examples{Features: 1}, 0.1, 0.1, ErrSplit,
			"dataset: invalid split: 0 rows leave no training rows after 0 for validation and 0 for test"},
		{"ragged", model.Examples{X: []float64{1, 2, 3}, Y: []int{0, 1}, Features: 2}, 0.1, 0.1, ErrInvalid,
			"dataset: invalid dataset: X holds 3 values, want 2 rows × 2 features = 4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := Split(tc.e, tc.val, tc.test, 1)
			if !errors.Is(err, tc.want) || err.Error() != tc.msg {
				t.Fatalf("got %v\nwant %s", err, tc.msg)
			}
		})
	}
}

func TestApportion(t *testing.T) {
	tests := []struct {
		total   int
		weights []float64
		want    []int
	}{
		{10, []float64{1, 1, 1}, []int{4, 3, 3}},
		{10, []float64{1, 2, 3, 4}, []int{1, 2, 3, 4}},
		{7, []float64{0, 1, 0}, []int{0, 7, 0}},
		{5, []float64{0.5, 0.25, 0.25}, []int{3, 1, 1}},
		{0, []float64{1, 2}, []int{0, 0}},
		{3, []float64{0, 0}, []int{0, 0}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.total, tc.weights), func(t *testing.T) {
			if got := apportion(tc.total, tc.weights); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("apportion = %v, want %v", got, tc.want)
			}
		})
	}
}
