package engine

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
	"github.com/tallyfl/tally/valuation"
)

// oldProjectionVectors is, verbatim but for its name and signature, the
// rebuild of a round's public vectors that coordinator.ModelValuer
// .ProjectionVectors, audit's projectionVectors and experiments'
// classGradient each held before ModelProjectionVectors replaced them
// (the three were the same lines under other names). It is kept as the
// reference the one function must match to the bit.
func oldProjectionVectors(m model.Model, data model.Examples, classes int, at, total, known []float64) ([][]float64, error) {
	parts := valuation.ProjectionParts(classes)
	subsets := make([]model.Examples, parts)
	for p := range parts {
		var idx []int
		for i, y := range data.Y {
			if y%parts == p {
				idx = append(idx, i)
			}
		}
		subsets[p] = data.Subset(idx)
	}
	return valuation.ProjectionVectors(at, total, known, parts, func(p []float64, part int) ([]float64, error) {
		d := data
		if part >= 0 {
			d = subsets[part]
		}
		g := make([]float64, m.NumParams())
		if d.Len() == 0 {
			return g, nil
		}
		if err := m.SetParams(p); err != nil {
			return nil, err
		}
		return g, m.Gradient(d, g)
	})
}

// TestModelProjectionVectorsMatchesOldRebuild: on one round of a real
// model (digits, 10 classes in 5 parts; and the same with only classes
// 0–2 left, so that parts 3 and 4 have no rows) ModelProjectionVectors
// gives exactly, bit for bit, what the three copies it replaced gave,
// with and without a known direction.
func TestModelProjectionVectorsMatchesOldRebuild(t *testing.T) {
	ds, err := dataset.Embedded("digits")
	if err != nil {
		t.Fatal(err)
	}
	all := ds.Examples
	var few []int
	for i, y := range all.Y {
		if y < 3 {
			few = append(few, i)
		}
	}
	sets := map[string]model.Examples{"all classes": all.Subset(rangeIdx(400)), "classes 0-2": all.Subset(few[:200])}
	for _, spec := range []model.Spec{{Kind: model.KindLogReg}, {Kind: model.KindMLP, Hidden: []int{8}}} {
		m, err := model.New(spec, all.Features, ds.Classes(), 3)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(7, 11))
		at := m.Params()
		total := make([]float64, len(at))
		known := make([]float64, len(at))
		for k := range at {
			total[k] = 0.05 * rng.NormFloat64()
			known[k] = 0.05 * rng.NormFloat64()
		}
		for name, val := range sets {
			for _, kn := range [][]float64{nil, known} {
				want, err := oldProjectionVectors(m.Clone(), val, ds.Classes(), at, total, kn)
				if err != nil {
					t.Fatal(err)
				}
				got, err := ModelProjectionVectors(m.Clone(), val, ds.Classes(), at, total, kn)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != valuation.ProjectionVectorCount(ds.Classes()) || len(got) != len(want) {
					t.Fatalf("%s %s: %d vectors, reference %d, want %d", spec.Kind, name, len(got), len(want), valuation.ProjectionVectorCount(ds.Classes()))
				}
				zero := 0
				for j := range want {
					if len(got[j]) != len(want[j]) {
						t.Fatalf("%s %s vector %d: %d values, reference %d", spec.Kind, name, j, len(got[j]), len(want[j]))
					}
					nz := false
					for k := range want[j] {
						if math.Float64bits(got[j][k]) != math.Float64bits(want[j][k]) {
							t.Fatalf("%s %s known=%v vector %d [%d]: %v, reference %v", spec.Kind, name, kn != nil, j, k, got[j][k], want[j][k])
						}
						nz = nz || want[j][k] != 0
					}
					if !nz {
						zero++
					}
				}
				// The empty parts' gradients are zero, the others not: the
				// comparison is of real vectors.
				if wantZero := map[string]int{"all classes": 0, "classes 0-2": 2}[name]; zero != wantZero {
					t.Errorf("%s %s: %d zero vectors, want %d", spec.Kind, name, zero, wantZero)
				}
			}
		}
	}
}

func rangeIdx(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}
