package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// testSpecs covers both kinds and both activations, with a width-1 layer
// to exercise the narrowest shapes gorgonia has to handle.
var testSpecs = []struct {
	name string
	spec Spec
}{
	{"logreg", Spec{Kind: KindLogReg}},
	{"mlp/relu/hidden=4,3", Spec{Kind: KindMLP, Hidden: []int{4, 3}}},
	{"mlp/tanh/hidden=5", Spec{Kind: KindMLP, Hidden: []int{5}, Activation: ActTanh}},
	{"mlp/relu/hidden=1", Spec{Kind: KindMLP, Hidden: []int{1}}},
}

func mustNew(t testing.TB, spec Spec, features, classes int, seed uint64) Model {
	t.Helper()
	m, err := New(spec, features, classes, seed)
	if err != nil {
		t.Fatalf("New(%+v): %v", spec, err)
	}
	return m
}

// randomData draws rows with Gaussian features and uniform labels.
func randomData(rng *rand.Rand, rows, features, classes int) Examples {
	d := Examples{X: make([]float64, rows*features), Y: make([]int, rows), Features: features}
	for i := range d.X {
		d.X[i] = rng.NormFloat64()
	}
	for i := range d.Y {
		d.Y[i] = rng.IntN(classes)
	}
	return d
}

// refLoss is Evaluate written out in plain Go from the documented
// parameter layout: per layer W (in×out, row-major) then b (out).
func refLoss(spec Spec, widths []int, p []float64, data Examples) Metrics {
	spec = spec.WithDefaults()
	sum, correct := 0.0, 0
	for r := 0; r < data.Len(); r++ {
		h := append([]float64(nil), data.Row(r)...)
		off := 0
		for l := 0; l+1 < len(widths); l++ {
			in, out := widths[l], widths[l+1]
			z := make([]float64, out)
			for j := 0; j < out; j++ {
				s := p[off+in*out+j]
				for i := 0; i < in; i++ {
					s += h[i] * p[off+i*out+j]
				}
				if l+2 < len(widths) {
					if spec.Activation == ActTanh {
						s = math.Tanh(s)
					} else {
						s = max(s, 0)
					}
				}
				z[j] = s
			}
			off += in*out + out
			h = z
		}
		m, arg := h[0], 0
		for j, v := range h {
			if v > m {
				m, arg = v, j
			}
		}
		lse := 0.0
		for _, v := range h {
			lse += math.Exp(v - m)
		}
		sum += m + math.Log(lse) - h[data.Y[r]]
		if arg == data.Y[r] {
			correct++
		}
	}
	n := float64(data.Len())
	return Metrics{Loss: sum / n, Accuracy: float64(correct) / n}
}

func widthsOf(spec Spec, features, classes int) []int {
	w, err := layerWidths(spec.WithDefaults(), features, classes)
	if err != nil {
		panic(err)
	}
	return w
}

func relClose(a, b, tol float64) bool {
	return math.Abs(a-b) <= tol*max(1, math.Abs(a), math.Abs(b))
}

func TestGradientMatchesFiniteDifferences(t *testing.T) {
	const features, classes = 4, 3
	for _, tc := range testSpecs {
		for _, rows := range []int{7, 600} { // 600 rows: a 512-row chunk plus an 88-row one
			t.Run(fmt.Sprintf("%s/rows=%d", tc.name, rows), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(3, uint64(rows)))
				data := randomData(rng, rows, features, classes)
				m := mustNew(t, tc.spec, features, classes, 11)
				// Biases start at zero; move them so every bias gradient is exercised away from the origin.
				p := m.Params()
				for i := range p {
					p[i] += 0.3 * rng.NormFloat64()
				}
				if err := m.SetParams(p); err != nil {
					t.Fatal(err)
				}
				grad := make([]float64, m.NumParams())
				if err := m.Gradient(data, grad); err != nil {
					t.Fatal(err)
				}
				loss := func(q []float64) float64 {
					if err := m.SetParams(q); err != nil {
						t.Fatal(err)
					}
					met, err := m.Evaluate(data)
					if err != nil {
						t.Fatal(err)
					}
					return met.Loss
				}
				// Central differences have O(h²) truncation error and
				// O(ε/h) rounding error; h = 1e-5 balances them near 1e-10.
				const h, tol = 1e-5, 1e-7
				q := append([]float64(nil), p...)
				for i := range p {
					q[i] = p[i] + h
					up := loss(q)
					q[i] = p[i] - h
					down := loss(q)
					q[i] = p[i]
					num := (up - down) / (2 * h)
					if !relClose(grad[i], num, tol) {
						t.Errorf("∂L/∂p[%d] = %.12g, finite difference %.12g", i, grad[i], num)
					}
				}
			})
		}
	}
}

func TestParamsRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name              string
		spec              Spec
		features, classes int
		want              int
	}{
		{"logreg/features=30/classes=2", Spec{Kind: KindLogReg}, 30, 2, 30*2 + 2},
		{"mlp/default/features=64/classes=10", Spec{Kind: KindMLP}, 64, 10, 64*32 + 32 + 32*10 + 10},
		{"mlp/hidden=8,4/features=3/classes=5", Spec{Kind: KindMLP, Hidden: []int{8, 4}}, 3, 5, 3*8 + 8 + 8*4 + 4 + 4*5 + 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NumParamsFor(tc.spec, tc.features, tc.classes)
			if err != nil || got != tc.want {
				t.Fatalf("NumParamsFor = %d, %v; want %d", got, err, tc.want)
			}
			m := mustNew(t, tc.spec, tc.features, tc.classes, 5)
			if m.NumParams() != tc.want {
				t.Fatalf("NumParams = %d, want %d", m.NumParams(), tc.want)
			}
			p := make([]float64, tc.want)
			for i := range p {
				p[i] = float64(i) * 0.25
			}
			if err := m.SetParams(p); err != nil {
				t.Fatal(err)
			}
			p[0] = 99 // SetParams must not retain its argument
			got1 := m.Params()
			if got1[0] != 0 || got1[len(got1)-1] != float64(tc.want-1)*0.25 {
				t.Fatalf("Params after SetParams: first %v last %v", got1[0], got1[len(got1)-1])
			}
			got1[1] = 99 // Params must return a copy
			if m.Params()[1] != 0.25 {
				t.Fatal("Params returned the model's own storage")
			}
			for _, n := range []int{0, tc.want - 1, tc.want + 1} {
				if err := m.SetParams(make([]float64, n)); !errors.Is(err, ErrParamLength) {
					t.Errorf("SetParams(len %d) = %v, want ErrParamLength", n, err)
				}
			}
			data := randomData(rand.New(rand.NewPCG(1, 1)), 3, tc.features, tc.classes)
			if err := m.Gradient(data, make([]float64, tc.want-1)); !errors.Is(err, ErrParamLength) {
				t.Errorf("Gradient with a short buffer = %v, want ErrParamLength", err)
			}
		})
	}
}

// linearData labels each Gaussian row by the arg-max of a fixed random
// linear map, so the classes are linearly separable.
func linearData(rng *rand.Rand, rows, features, classes int) Examples {
	return synthetic(rng, rows, features, classes)
}

func TestTrainLearnsSeparableProblem(t *testing.T) {
	const features, classes = 6, 3
	for _, tc := range testSpecs[:3] {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, 7))
			all := linearData(rng, 900, features, classes)
			idx := make([]int, all.Len())
			for i := range idx {
				idx[i] = i
			}
			train, test := all.Subset(idx[:600]), all.Subset(idx[600:])
			m := mustNew(t, tc.spec, features, classes, 1)
			before, err := m.Evaluate(test)
			if err != nil {
				t.Fatal(err)
			}
			cfg := TrainConfig{Epochs: 30, BatchSize: 32, LearningRate: 0.05, Momentum: 0.9}
			st, err := m.Train(train, cfg, rng)
			if err != nil {
				t.Fatal(err)
			}
			after, err := m.Evaluate(test)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("held-out before %+v after %+v, last-epoch train loss %.4f", before, after, st.Loss)
			if after.Accuracy < 0.93 {
				t.Errorf("held-out accuracy %.3f after training, want ≥ 0.93", after.Accuracy)
			}
			if after.Loss >= before.Loss/2 {
				t.Errorf("held-out loss %.4f → %.4f, want at least halved", before.Loss, after.Loss)
			}
		})
	}
}

func TestTrainStatsAndPartialBatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := randomData(rng, 10, 3, 2)
	m := mustNew(t, Spec{Kind: KindLogReg}, 3, 2, 1)
	st, err := m.Train(data, TrainConfig{Epochs: 3, BatchSize: 4, LearningRate: 0.1}, rng)
	if err != nil {
		t.Fatal(err)
	}
	// 10 rows in batches of 4: 4, 4 and a final partial batch of 2 per epoch.
	if st.Steps != 9 || st.Samples != 30 {
		t.Errorf("stats %+v, want 9 steps and 30 samples", st)
	}
	if !(st.Loss > 0) || math.IsInf(st.Loss, 0) {
		t.Errorf("last-epoch loss %v, want finite and positive", st.Loss)
	}
	// A batch larger than the data is one full batch.
	st, err = m.Train(data, TrainConfig{Epochs: 2, BatchSize: 64, LearningRate: 0.1}, rng)
	if err != nil || st.Steps != 2 || st.Samples != 20 {
		t.Errorf("batch > rows: %+v, %v; want 2 steps and 20 samples", st, err)
	}
}

// With a full batch the row order does not matter (up to rounding), so two
// epochs of Train must equal the documented update written out by hand.
func TestTrainFollowsMomentumRule(t *testing.T) {
	for _, tc := range testSpecs[:2] {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(4, 4))
			data := randomData(rng, 20, 3, 3)
			m := mustNew(t, tc.spec, 3, 3, 2)
			cfg := TrainConfig{Epochs: 2, BatchSize: 20, LearningRate: 0.3, Momentum: 0.8, WeightDecay: 0.01}

			ref := m.Clone()
			p := ref.Params()
			g := make([]float64, len(p))
			v := make([]float64, len(p))
			for e := 0; e < cfg.Epochs; e++ {
				if err := ref.Gradient(data, g); err != nil {
					t.Fatal(err)
				}
				for i := range p {
					v[i] = cfg.Momentum*v[i] + g[i] + cfg.WeightDecay*p[i]
					p[i] -= cfg.LearningRate * v[i]
				}
				if err := ref.SetParams(p); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := m.Train(data, cfg, rng); err != nil {
				t.Fatal(err)
			}
			for i, got := range m.Params() {
				if !relClose(got, p[i], 1e-12) {
					t.Fatalf("param %d: Train %.15g, hand-written update %.15g", i, got, p[i])
				}
			}
		})
	}
}

func TestTrainIsDeterministic(t *testing.T) {
	for _, tc := range testSpecs {
		t.Run(tc.name, func(t *testing.T) {
			run := func(seed uint64) []float64 {
				rng := rand.New(rand.NewPCG(seed, 9))
				data := randomData(rng, 150, 5, 3)
				m := mustNew(t, tc.spec, 5, 3, seed)
				cfg := TrainConfig{Epochs: 3, BatchSize: 16, LearningRate: 0.1, Momentum: 0.9, WeightDecay: 1e-3}
				if _, err := m.Train(data, cfg, rng); err != nil {
					t.Fatal(err)
				}
				return m.Params()
			}
			a, b, c := run(42), run(42), run(43)
			same := func(x, y []float64) bool {
				for i := range x {
					if math.Float64bits(x[i]) != math.Float64bits(y[i]) {
						return false
					}
				}
				return true
			}
			if !same(a, b) {
				t.Error("two runs with the same seed gave different parameter bits")
			}
			if same(a, c) {
				t.Error("runs with different seeds gave identical parameters")
			}
		})
	}
}

func TestCloneIsIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	data := randomData(rng, 50, 4, 3)
	m := mustNew(t, Spec{Kind: KindMLP, Hidden: []int{6}}, 4, 3, 3)
	before, err := m.Evaluate(data) // builds m's graphs before cloning
	if err != nil {
		t.Fatal(err)
	}
	orig := m.Params()
	c := m.Clone()
	if got, err := c.Evaluate(data); err != nil || got != before {
		t.Fatalf("clone evaluates to %+v, %v; original %+v", got, err, before)
	}
	if _, err := c.Train(data, TrainConfig{Epochs: 2, BatchSize: 8, LearningRate: 0.5}, rng); err != nil {
		t.Fatal(err)
	}
	for i, v := range m.Params() {
		if v != orig[i] {
			t.Fatalf("training the clone changed the original's param %d", i)
		}
	}
	if got, _ := m.Evaluate(data); got != before {
		t.Fatalf("original evaluates to %+v after the clone trained, want %+v", got, before)
	}
	trained := c.Params()
	if err := m.SetParams(make([]float64, m.NumParams())); err != nil {
		t.Fatal(err)
	}
	for i, v := range c.Params() {
		if v != trained[i] {
			t.Fatalf("SetParams on the original changed the clone's param %d", i)
		}
	}
}

// Clones evaluated on separate goroutines must agree with the serial
// result; under -race this also checks gorgonia shares no mutable state
// between graphs.
func TestClonesEvaluateConcurrently(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	data := randomData(rng, 40, 4, 3)
	m := mustNew(t, Spec{Kind: KindMLP, Hidden: []int{5}}, 4, 3, 3)
	want, err := m.Evaluate(data)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	got := make([]Metrics, 4)
	errs := make([]error, 4)
	for i := range got {
		c := m.Clone()
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := make([]float64, c.NumParams())
			for range 5 {
				if errs[i] = c.Gradient(data, g); errs[i] != nil {
					return
				}
				if got[i], errs[i] = c.Evaluate(data); errs[i] != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil || got[i] != want {
			t.Errorf("goroutine %d: %+v, %v; want %+v", i, got[i], errs[i], want)
		}
	}
}

func TestEvaluateMatchesPlainGo(t *testing.T) {
	const features, classes = 5, 4
	for _, tc := range testSpecs {
		// 1100 = 2×512 + 76 and 513 = 512 + 1: row counts that are not
		// multiples of the chunk size, the second with a one-row remainder.
		for _, rows := range []int{1, 114, 1100, 513} {
			t.Run(fmt.Sprintf("%s/rows=%d", tc.name, rows), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(8, uint64(rows)))
				data := randomData(rng, rows, features, classes)
				m := mustNew(t, tc.spec, features, classes, 21)
				p := m.Params()
				for i := range p {
					p[i] += 0.2 * rng.NormFloat64()
				}
				if err := m.SetParams(p); err != nil {
					t.Fatal(err)
				}
				got, err := m.Evaluate(data)
				if err != nil {
					t.Fatal(err)
				}
				want := refLoss(tc.spec, widthsOf(tc.spec, features, classes), p, data)
				if !relClose(got.Loss, want.Loss, 1e-12) || got.Accuracy != want.Accuracy {
					t.Errorf("Evaluate = %+v, plain Go = %+v", got, want)
				}
				if after := m.Params(); !equalBits(after, p) {
					t.Error("Evaluate changed the parameters")
				}
				g := make([]float64, len(p))
				if err := m.Gradient(data, g); err != nil {
					t.Fatal(err)
				}
				if after := m.Params(); !equalBits(after, p) {
					t.Error("Gradient changed the parameters")
				}
			})
		}
	}
}

func equalBits(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			return false
		}
	}
	return true
}

// Logits thousands apart must give a finite loss: the log-softmax shifts
// each row by its own maximum.
func TestEvaluateIsStableForLargeLogits(t *testing.T) {
	m := mustNew(t, Spec{Kind: KindLogReg}, 1, 3, 1)
	// W = [1000, 0, -1000], b = 0; rows x = 5, -3, 0.
	if err := m.SetParams([]float64{1000, 0, -1000, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	data := Examples{X: []float64{5, -3, 0}, Y: []int{0, 1, 2}, Features: 1}
	got, err := m.Evaluate(data)
	if err != nil {
		t.Fatal(err)
	}
	// Row 0: label 0 is the max, loss ≈ 0. Row 1: logits (-3000, 0, 3000),
	// label 1, loss ≈ 3000. Row 2: all logits 0, loss = log 3.
	want := (0 + 3000 + math.Log(3)) / 3
	if !relClose(got.Loss, want, 1e-12) || got.Accuracy != 1.0/3 {
		t.Errorf("Evaluate = %+v, want loss %.12g accuracy 1/3", got, want)
	}
	g := make([]float64, m.NumParams())
	if err := m.Gradient(data, g); err != nil {
		t.Fatal(err)
	}
	for i, v := range g {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Fatalf("gradient[%d] = %v", i, v)
		}
	}
}

// More distinct row counts than the cache holds must still evaluate
// correctly, with the cache staying bounded.
func TestGraphCacheIsBounded(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	spec := Spec{Kind: KindLogReg}
	m := mustNew(t, spec, 3, 2, 1)
	for rows := 1; rows <= 2*graphCacheSize; rows++ {
		data := randomData(rng, rows, 3, 2)
		got, err := m.Evaluate(data)
		if err != nil {
			t.Fatal(err)
		}
		if want := refLoss(spec, widthsOf(spec, 3, 2), m.Params(), data); !relClose(got.Loss, want.Loss, 1e-12) {
			t.Fatalf("rows=%d: loss %v, want %v", rows, got.Loss, want.Loss)
		}
	}
	if n := len(m.(*net).cache.graphs); n != graphCacheSize {
		t.Errorf("cache holds %d graphs, want %d", n, graphCacheSize)
	}
}

func TestShapeErrors(t *testing.T) {
	m := mustNew(t, Spec{Kind: KindLogReg}, 2, 3, 1)
	g := make([]float64, m.NumParams())
	for _, tc := range []struct {
		name string
		data Examples
		want string
	}{
		{"features", Examples{X: []float64{1, 2, 3}, Y: []int{0}, Features: 3}, "3 features, model has 2"},
		{"x-length", Examples{X: []float64{1, 2, 3}, Y: []int{0}, Features: 2}, "X has 3 values, want 1 rows × 2 features"},
		{"label-high", Examples{X: []float64{1, 2}, Y: []int{3}, Features: 2}, "label 3 of row 0 is outside [0, 3)"},
		{"label-negative", Examples{X: []float64{1, 2}, Y: []int{-1}, Features: 2}, "label -1 of row 0 is outside [0, 3)"},
		{"empty", Examples{Features: 2}, "no rows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err1 := m.Evaluate(tc.data)
			err2 := m.Gradient(tc.data, g)
			_, err3 := m.Train(tc.data, TrainConfig{Epochs: 1, BatchSize: 1, LearningRate: 0.1}, rand.New(rand.NewPCG(1, 1)))
			for _, err := range []error{err1, err2, err3} {
				if !errors.Is(err, ErrShape) || !strings.HasSuffix(err.Error(), tc.want) {
					t.Errorf("got %v, want ErrShape ending in %q", err, tc.want)
				}
			}
		})
	}
	if _, err := New(Spec{Kind: KindLogReg}, 0, 1, 1); !errors.Is(err, ErrShape) {
		t.Errorf("New with 0 features and 1 class = %v, want ErrShape", err)
	}
}

func TestSpecValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		want []string // one line per problem; none for a valid spec
	}{
		{"logreg", Spec{Kind: "logreg"}, nil},
		{"mlp", Spec{Kind: "mlp", Hidden: []int{32, 16}, Activation: "tanh"}, nil},
		{"kind/missing", Spec{}, []string{`model.kind: missing, want "logreg", "mlp" or "external"`}},
		{"kind/unknown", Spec{Kind: "cnn"}, []string{`model.kind: must be "logreg", "mlp" or "external", got "cnn"`}},
		{"logreg/extras", Spec{Kind: "logreg", Hidden: []int{4}, Activation: "relu"}, []string{
			"model.hidden: logreg has no hidden layers, got [4]",
			`model.activation: logreg has no activation, got "relu"`,
		}},
		{"mlp/empty", Spec{Kind: "mlp"}, []string{
			"model.hidden: mlp needs at least one hidden layer",
			`model.activation: must be "relu" or "tanh", got ""`,
		}},
		{"external", Spec{Kind: "external", Command: "python3 adapter.py"}, nil},
		{"external/no-command", Spec{Kind: "external", Hidden: []int{4}}, []string{
			"model.command: an external model needs the command of its adapter (see extmodel)",
			"model.hidden: an external model describes its own layers; hidden and activation must be empty",
		}},
		{"mlp/command", Spec{Kind: "mlp", Hidden: []int{4}, Activation: "relu", Command: "x"}, []string{
			`model.command: only an external model runs a command, this one is "mlp"`,
		}},
		{"mlp/widths", Spec{Kind: "mlp", Hidden: []int{8, 0, -2}, Activation: "sigmoid"}, []string{
			"model.hidden[1]: width must be ≥ 1, got 0",
			"model.hidden[2]: width must be ≥ 1, got -2",
			`model.activation: must be "relu" or "tanh", got "sigmoid"`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrSpec) {
				t.Fatalf("Validate = %v, want ErrSpec", err)
			}
			if got, want := err.Error(), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("Validate:\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestSpecWithDefaults(t *testing.T) {
	s := Spec{Kind: "mlp"}.WithDefaults()
	if len(s.Hidden) != 1 || s.Hidden[0] != 32 || s.Activation != "relu" {
		t.Errorf("mlp defaults = %+v, want hidden [32] relu", s)
	}
	if err := s.Validate(); err != nil {
		t.Errorf("defaulted mlp spec: %v", err)
	}
	s.Hidden[0] = 7
	if again := (Spec{Kind: "mlp"}).WithDefaults(); again.Hidden[0] != 32 {
		t.Error("WithDefaults shares the default hidden slice")
	}
	if l := (Spec{Kind: "logreg"}).WithDefaults(); len(l.Hidden) != 0 || l.Activation != "" {
		t.Errorf("logreg defaults = %+v, want nothing added", l)
	}
}

func TestTrainConfigValidate(t *testing.T) {
	ok := TrainConfig{Epochs: 1, BatchSize: 32, LearningRate: 0.1, Momentum: 0.9, WeightDecay: 1e-4}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	bad := TrainConfig{Epochs: 0, BatchSize: 0, LearningRate: math.NaN(), Momentum: 1, WeightDecay: -1}
	want := strings.Join([]string{
		"epochs: must be ≥ 1, got 0",
		"batch_size: must be ≥ 1, got 0",
		"learning_rate: must be finite and > 0, got NaN",
		"momentum: must be in [0, 1), got 1",
		"weight_decay: must be finite and ≥ 0, got -1",
	}, "\n")
	err := bad.Validate()
	if !errors.Is(err, ErrConfig) || err.Error() != want {
		t.Errorf("Validate:\n got %v\nwant %q", err, want)
	}
	m := mustNew(t, Spec{Kind: KindLogReg}, 2, 2, 1)
	data := randomData(rand.New(rand.NewPCG(1, 1)), 4, 2, 2)
	if _, err := m.Train(data, ok, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("Train with a nil rng = %v, want ErrConfig", err)
	}
	if _, err := m.Train(data, bad, rand.New(rand.NewPCG(1, 1))); !errors.Is(err, ErrConfig) {
		t.Errorf("Train with a bad config = %v, want ErrConfig", err)
	}
}

// A cached graph must reflect the parameters and rows of each call, not
// those of the call that built it.
func TestCachedGraphsTrackParamsAndData(t *testing.T) {
	for _, tc := range testSpecs {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(10, 10))
			d1, d2 := randomData(rng, 30, 4, 3), randomData(rng, 30, 4, 3)
			m := mustNew(t, tc.spec, 4, 3, 4)
			g1 := make([]float64, m.NumParams())
			if err := m.Gradient(d1, g1); err != nil {
				t.Fatal(err)
			}
			e1, _ := m.Evaluate(d1)
			p := m.Params()
			for i := range p {
				p[i] += 0.1 * rng.NormFloat64()
			}
			if err := m.SetParams(p); err != nil {
				t.Fatal(err)
			}
			fresh := mustNew(t, tc.spec, 4, 3, 99)
			if err := fresh.SetParams(p); err != nil {
				t.Fatal(err)
			}
			for _, d := range []Examples{d2, d1} {
				got, want := make([]float64, len(p)), make([]float64, len(p))
				if err := m.Gradient(d, got); err != nil {
					t.Fatal(err)
				}
				if err := fresh.Gradient(d, want); err != nil {
					t.Fatal(err)
				}
				if !equalBits(got, want) {
					t.Fatal("cached backward graph disagrees with a fresh one")
				}
				if equalBits(got, g1) {
					t.Fatal("gradient did not change with parameters and data")
				}
				em, _ := m.Evaluate(d)
				ef, _ := fresh.Evaluate(d)
				if em != ef || em == e1 {
					t.Fatalf("cached forward graph: %+v, fresh %+v, first call %+v", em, ef, e1)
				}
			}
		})
	}
}
