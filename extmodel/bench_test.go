package extmodel

import (
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tallyfl/tally/model"
)

// The protocol's overhead, measured on the digits MLP (64-32-10, 2,410
// parameters): the built-in gorgonia model in process against the same
// network in numpy (examples/numpy/mlp.py) behind the protocol. Each
// external sub-benchmark also times the built-in path over the same
// iterations and reports x-inprocess, external time over built-in time.

var benchTrain = model.TrainConfig{Epochs: 1, BatchSize: 16, LearningRate: 0.05, Momentum: 0.9}

// BenchmarkTrainTask: one client's training task, one epoch over a shard
// of 270 rows (the digits split over 4 clients), parameters in and update
// out.
func BenchmarkTrainTask(b *testing.B) {
	in, ext, data := digitsMLP(b, RoleTrainer)
	shard := data.Subset(seq(360, 630))
	global := in.Params()
	run := func(m model.Model, n int) time.Duration {
		start := time.Now()
		for i := range n {
			if err := m.SetParams(global); err != nil {
				b.Fatal(err)
			}
			if _, err := m.Train(shard, benchTrain, rand.New(rand.NewPCG(uint64(i), 1))); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	b.Run("inprocess", func(b *testing.B) {
		d := run(in, b.N)
		b.ReportMetric(float64(d.Microseconds())/1000/float64(b.N), "ms/task")
	})
	b.Run("external", func(b *testing.B) {
		b.StopTimer()
		ref := run(in, b.N)
		b.StartTimer()
		d := run(ext, b.N)
		b.ReportMetric(float64(d.Microseconds())/1000/float64(b.N), "ms/task")
		b.ReportMetric(float64(d)/float64(ref), "x-inprocess")
	})
}

// BenchmarkEvaluateBatch: the valuation's work, scoring parameter vectors
// (coalition models) on the 360 validation rows. In process they are
// scored as the valuation does, on one model clone per core; externally
// as one request of batch vectors. batch=1 is a single evaluation, the
// protocol's latency.
func BenchmarkEvaluateBatch(b *testing.B) {
	in, ext, data := digitsMLP(b, RoleEvaluator)
	val := data.Subset(seq(0, 360))
	rng := rand.New(rand.NewPCG(5, 6))
	for _, batch := range []int{1, 64} {
		vecs := make([][]float64, batch)
		for k := range vecs {
			vecs[k] = in.Params()
			for i := range vecs[k] {
				vecs[k][i] += 0.05 * rng.NormFloat64()
			}
		}
		workers := min(batch, 2)
		clones := make([]model.Model, workers)
		for w := range clones {
			clones[w] = in.Clone()
		}
		inproc := func(n int) time.Duration {
			start := time.Now()
			for range n {
				var wg sync.WaitGroup
				for w := range workers {
					wg.Go(func() {
						for k := w; k < batch; k += workers {
							clones[w].SetParams(vecs[k])
							if _, err := clones[w].Evaluate(val); err != nil {
								b.Error(err)
							}
						}
					})
				}
				wg.Wait()
			}
			return time.Since(start)
		}
		external := func(n int) time.Duration {
			start := time.Now()
			for range n {
				if _, err := ext.EvaluateBatch(val, vecs); err != nil {
					b.Fatal(err)
				}
			}
			return time.Since(start)
		}
		per := func(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n*batch) }
		b.Run(fmt.Sprintf("inprocess/batch=%d", batch), func(b *testing.B) {
			b.ReportMetric(per(inproc(b.N), b.N), "µs/eval")
		})
		b.Run(fmt.Sprintf("external/batch=%d", batch), func(b *testing.B) {
			b.StopTimer()
			ref := inproc(b.N)
			b.StartTimer()
			d := external(b.N)
			b.ReportMetric(per(d, b.N), "µs/eval")
			b.ReportMetric(float64(d)/float64(ref), "x-inprocess")
		})
	}
}

// BenchmarkProtocolOnly isolates the protocol from the adapter's compute:
// the fake adapter of fake_test.go, a model of the MLP's 2,410 parameters
// (241 features × 10 classes) whose evaluation is a sum of squares, takes
// batches of parameter vectors over the same pipes. x-inprocess is then
// (built-in evaluation + protocol) / built-in evaluation: the ratio an
// adapter as fast as gorgonia would reach.
func BenchmarkProtocolOnly(b *testing.B) {
	in, _, data := digitsMLP(b, RoleEvaluator)
	val := data.Subset(seq(0, 360))
	p, err := Start(Options{Command: fakeCommand(b, "ok"), Role: RoleEvaluator, Features: 241, Classes: 10, Stderr: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	fakeVal := model.Examples{X: make([]float64, 360*241), Y: make([]int, 360), Features: 241}
	ext := p.Model()
	for _, batch := range []int{1, 64} {
		vecs := make([][]float64, batch)
		for k := range vecs {
			vecs[k] = in.Params()
		}
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			b.StopTimer()
			start := time.Now()
			for range b.N {
				for _, v := range vecs {
					in.SetParams(v)
					if _, err := in.Evaluate(val); err != nil {
						b.Fatal(err)
					}
				}
			}
			ref := time.Since(start)
			b.StartTimer()
			start = time.Now()
			for range b.N {
				if _, err := ext.EvaluateBatch(fakeVal, vecs); err != nil {
					b.Fatal(err)
				}
			}
			d := time.Since(start)
			b.ReportMetric(float64(d.Microseconds())/float64(b.N*batch), "µs/eval")
			b.ReportMetric(float64(ref+d)/float64(ref), "x-inprocess")
		})
	}
}
