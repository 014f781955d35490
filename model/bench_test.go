package model

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchCase is one model and data shape the valuation and the clients use.
type benchCase struct {
	name              string
	spec              Spec
	features, classes int
	trainRows         int // rows of local training data per Train call
	valRows           int // rows of the validation set Evaluate sees
}

// The validation shapes are those of the shipped scenarios: 114 rows × 30
// features, 2 classes (a 20 % split of the breast-cancer data) for logreg,
// and 360 rows × 64 features, 10 classes (a 20 % split of the 8×8 digits)
// for the MLP.
var benchCases = []benchCase{
	{name: "model=logreg/features=30", spec: Spec{Kind: KindLogReg}, features: 30, classes: 2, trainRows: 455, valRows: 114},
	{name: "model=mlp/hidden=32/features=64/classes=10", spec: Spec{Kind: KindMLP, Hidden: []int{32}}, features: 64, classes: 10, trainRows: 1437, valRows: 360},
}

// synthetic draws rows of Gaussian features whose label is the arg-max of
// a fixed random linear map, so the problem is learnable.
func synthetic(rng *rand.Rand, rows, features, classes int) Examples {
	proj := make([]float64, features*classes)
	for i := range proj {
		proj[i] = rng.NormFloat64()
	}
	d := Examples{X: make([]float64, rows*features), Y: make([]int, rows), Features: features}
	for r := 0; r < rows; r++ {
		x := d.X[r*features : (r+1)*features]
		for j := range x {
			x[j] = rng.NormFloat64()
		}
		best, arg := 0.0, 0
		for c := 0; c < classes; c++ {
			s := 0.0
			for j, v := range x {
				s += v * proj[j*classes+c]
			}
			if c == 0 || s > best {
				best, arg = s, c
			}
		}
		d.Y[r] = arg
	}
	return d
}

func BenchmarkTrain(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			data := synthetic(rng, bc.trainRows, bc.features, bc.classes)
			m, err := New(bc.spec, bc.features, bc.classes, 1)
			if err != nil {
				b.Fatal(err)
			}
			cfg := TrainConfig{Epochs: 1, BatchSize: 32, LearningRate: 0.05, Momentum: 0.9}
			if _, err := m.Train(data, cfg, rng); err != nil { // build the graphs outside the timer
				b.Fatal(err)
			}
			b.ResetTimer()
			samples := 0
			for b.Loop() {
				st, err := m.Train(data, cfg, rng)
				if err != nil {
					b.Fatal(err)
				}
				samples += st.Samples
			}
			b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}

func BenchmarkEvaluate(b *testing.B) {
	// The one-row case measures the fixed cost of a graph run (gorgonia's
	// RunAll locks the OS thread and hops to a goroutine), which bounds
	// evals/s however small the model.
	floor := benchCase{name: "model=logreg/features=2", spec: Spec{Kind: KindLogReg}, features: 2, classes: 2, valRows: 1}
	for _, bc := range append(benchCases, floor) {
		b.Run(fmt.Sprintf("%s/rows=%d", bc.name, bc.valRows), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(2, 2))
			data := synthetic(rng, bc.valRows, bc.features, bc.classes)
			m, err := New(bc.spec, bc.features, bc.classes, 1)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := m.Evaluate(data); err != nil { // build the graph outside the timer
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := m.Evaluate(data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "evals/s")
		})
	}
}
