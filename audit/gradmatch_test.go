package audit

import (
	"math"
	"testing"

	"github.com/tallyfl/tally/model"
)

// The attacker's own backpropagation must be package model's network: its
// parameter gradient equals model.Gradient's on the same rows, and its
// input gradient equals a central difference of the loss.
func TestBackpropMatchesModel(t *testing.T) {
	for _, spec := range []model.Spec{{Kind: model.KindLogReg}, {Kind: model.KindMLP}, {Kind: model.KindMLP, Hidden: []int{7, 5}, Activation: model.ActTanh}} {
		t.Run(spec.Kind+"/"+spec.Activation, func(t *testing.T) {
			cfg := Config{}.withDefaults()
			e, err := newEnv(cfg, "breast-cancer", model.KindLogReg)
			if err != nil {
				t.Fatal(err)
			}
			m, err := model.New(spec, e.train.Features, e.classes, 3)
			if err != nil {
				t.Fatal(err)
			}
			a := newArch(spec, e.train.Features, e.classes)
			p := m.Params()
			rows := e.train.Subset([]int{0, 5, 9})
			want := make([]float64, len(p))
			if err := m.Gradient(rows, want); err != nil {
				t.Fatal(err)
			}
			got := make([]float64, len(p))
			for i := range rows.Len() {
				a.backprop(p, rows.Row(i), rows.Y[i], got, 1/float64(rows.Len()), nil)
			}
			for i := range got {
				if math.Abs(got[i]-want[i]) > 1e-9*(1+math.Abs(want[i])) {
					t.Fatalf("parameter %d: backprop %v, model.Gradient %v", i, got[i], want[i])
				}
			}
			x := append([]float64(nil), rows.Row(0)...)
			gx := make([]float64, len(x))
			a.backprop(p, x, rows.Y[0], nil, 0, gx)
			loss := func() float64 {
				pr := make([]float64, e.classes)
				a.probs(p, x, pr)
				return -math.Log(pr[rows.Y[0]])
			}
			for i := range x {
				const h = 1e-6
				x0 := x[i]
				x[i] = x0 + h
				up := loss()
				x[i] = x0 - h
				down := loss()
				x[i] = x0
				if fd := (up - down) / (2 * h); math.Abs(fd-gx[i]) > 1e-5*(1+math.Abs(fd)) {
					t.Fatalf("input %d: backprop %v, central difference %v", i, gx[i], fd)
				}
			}
		})
	}
}
