package extmodel

import (
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
)

// repoFile is a path in the repository, from this package's directory.
func repoFile(t testing.TB, rel string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", rel)
}

// pythonFor finds an interpreter with the modules, or skips the test; on
// CI (CI set) a missing module is a failure, not a skip, so the examples
// cannot stop being tested silently.
func pythonFor(t testing.TB, modules ...string) string {
	t.Helper()
	py, err := FindPython(modules...)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set and %v; .ci/run installs python3-numpy, python3-torch and python3-sklearn", err)
		}
		t.Skip(err)
	}
	return py
}

// digitsMLP is the built-in digits MLP and the numpy adapter running the
// same network, with the same parameters, on the standardised digits.
func digitsMLP(t testing.TB, role string) (model.Model, *Model, model.Examples) {
	t.Helper()
	py := pythonFor(t, "numpy")
	ds, err := dataset.Embedded("digits")
	if err != nil {
		t.Fatal(err)
	}
	sc := dataset.ComputeMoments(ds.Examples).Scaler()
	data := sc.Apply(ds.Examples)
	in, err := model.New(model.Spec{Kind: model.KindMLP, Hidden: []int{32}}, data.Features, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(Options{Command: py + " " + repoFile(t, "examples/numpy/mlp.py") + " --hidden 32", Role: role,
		Features: data.Features, Classes: 10, Seed: 1, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	ext := p.Model()
	if ext.NumParams() != in.NumParams() {
		t.Fatalf("the numpy MLP has %d parameters, the built-in %d", ext.NumParams(), in.NumParams())
	}
	if err := ext.SetParams(in.Params()); err != nil {
		t.Fatal(err)
	}
	return in, ext, data
}

// TestNumpyMLPMatchesBuiltin: the numpy adapter computes what the
// built-in MLP computes, through the protocol: the same loss, accuracy
// and gradient at the same parameters, singly and in a batch.
func TestNumpyMLPMatchesBuiltin(t *testing.T) {
	in, ext, data := digitsMLP(t, RoleEvaluator)
	val := data.Subset(seq(0, 360))
	want, err := in.Evaluate(val)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ext.Evaluate(val)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got.Loss-want.Loss) > 1e-9 || got.Accuracy != want.Accuracy {
		t.Errorf("numpy adapter: loss %v accuracy %v; built-in: loss %v accuracy %v", got.Loss, got.Accuracy, want.Loss, want.Accuracy)
	}
	gw, gg := make([]float64, in.NumParams()), make([]float64, in.NumParams())
	if err := in.Gradient(val, gw); err != nil {
		t.Fatal(err)
	}
	if err := ext.Gradient(val, gg); err != nil {
		t.Fatal(err)
	}
	for i := range gw {
		if math.Abs(gw[i]-gg[i]) > 1e-9 {
			t.Fatalf("gradient %d: numpy %v, built-in %v", i, gg[i], gw[i])
		}
	}
	// A batch of perturbed vectors, each checked against the built-in.
	rng := rand.New(rand.NewPCG(3, 4))
	batch := make([][]float64, 10)
	for k := range batch {
		batch[k] = in.Params()
		for i := range batch[k] {
			batch[k][i] += 0.05 * rng.NormFloat64()
		}
	}
	mets, err := ext.EvaluateBatch(val, batch)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range batch {
		if err := in.SetParams(v); err != nil {
			t.Fatal(err)
		}
		w, _ := in.Evaluate(val)
		if math.Abs(mets[k].Loss-w.Loss) > 1e-9 || mets[k].Accuracy != w.Accuracy {
			t.Errorf("batch vector %d: numpy loss %v accuracy %v, built-in %v %v", k, mets[k].Loss, mets[k].Accuracy, w.Loss, w.Accuracy)
		}
	}
}

// TestNumpyMLPTrains: a training task through the protocol lowers the
// validation loss as the built-in's does.
func TestNumpyMLPTrains(t *testing.T) {
	in, ext, data := digitsMLP(t, RoleTrainer)
	train, val := data.Subset(seq(360, data.Len())), data.Subset(seq(0, 360))
	cfg := model.TrainConfig{Epochs: 1, BatchSize: 32, LearningRate: 0.05, Momentum: 0.9}
	before, _ := ext.Evaluate(val)
	st, err := ext.Train(train, cfg, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	after, _ := ext.Evaluate(val)
	if _, err := in.Train(train, cfg, rand.New(rand.NewPCG(1, 1))); err != nil {
		t.Fatal(err)
	}
	ref, _ := in.Evaluate(val)
	t.Logf("validation loss %.4f → %.4f (numpy, %d steps), built-in → %.4f", before.Loss, after.Loss, st.Steps, ref.Loss)
	if !(after.Loss < 0.5*before.Loss) || math.Abs(after.Loss-ref.Loss) > 0.5*ref.Loss+0.05 {
		t.Errorf("numpy training took the loss from %v to %v; the built-in to %v", before.Loss, after.Loss, ref.Loss)
	}
	if want := (train.Len() + 31) / 32; st.Steps != want {
		t.Errorf("%d steps, want %d", st.Steps, want)
	}
}

func seq(lo, hi int) []int {
	out := make([]int, 0, hi-lo)
	for i := lo; i < hi; i++ {
		out = append(out, i)
	}
	return out
}

// TestSklearnSGDTrains: scikit-learn's SGDClassifier behind the protocol
// learns the digits in one epoch, and its layout is the linear model's.
func TestSklearnSGDTrains(t *testing.T) {
	py := pythonFor(t, "numpy", "sklearn")
	ds, err := dataset.Embedded("digits")
	if err != nil {
		t.Fatal(err)
	}
	data := dataset.ComputeMoments(ds.Examples).Scaler().Apply(ds.Examples)
	p, err := Start(Options{Command: py + " " + repoFile(t, "examples/sklearn/sgd.py"), Role: RoleTrainer,
		Features: data.Features, Classes: 10, Seed: 1, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := formatLayout(p.Layout()); got != "[coef[10 64] intercept[10]]" {
		t.Errorf("layout %s", got)
	}
	m := p.Model()
	train, val := data.Subset(seq(360, data.Len())), data.Subset(seq(0, 360))
	before, _ := m.Evaluate(val)
	if _, err := m.Train(train, model.TrainConfig{Epochs: 1, BatchSize: 1, LearningRate: 0.01}, rand.New(rand.NewPCG(1, 1))); err != nil {
		t.Fatal(err)
	}
	after, err := m.Evaluate(val)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("validation accuracy %.3f → %.3f, loss %.3f → %.3f", before.Accuracy, after.Accuracy, before.Loss, after.Loss)
	if after.Accuracy < 0.85 || !(after.Loss < before.Loss) {
		t.Errorf("one epoch of SGDClassifier: accuracy %v, loss %v → %v", after.Accuracy, before.Loss, after.Loss)
	}
}
