package extmodel

import (
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/model"
)

func fakeData() model.Examples {
	return model.Examples{X: []float64{1, 2, 3, 4, 5, 6}, Y: []int{0, 1}, Features: 3}
}

var fakeTrain = model.TrainConfig{Epochs: 1, BatchSize: 2, LearningRate: 0.1}

func startFake(t *testing.T, mode string, opts Options) *Model {
	t.Helper()
	opts.Command = fakeCommand(t, mode)
	opts.Role, opts.Features, opts.Classes = RoleTrainer, 3, 2
	if opts.Stderr == nil {
		opts.Stderr = io.Discard
	}
	p, err := Start(opts)
	if err != nil {
		t.Fatalf("start %s: %v", mode, err)
	}
	t.Cleanup(func() { p.Close() })
	m := p.Model()
	m.BeginTask("client-2", "r3a1", time.Time{})
	return m
}

// TestTrainerFailures runs each failure of issue 17 item 4 against a
// client's trainer: the error names the client, the task and what was
// wrong, and the adapter was restarted once before giving up.
func TestTrainerFailures(t *testing.T) {
	for _, tc := range []struct {
		mode    string
		opts    Options
		is      error
		want    []string
		retries int // processes started after the first
	}{
		{"crash", Options{}, ErrAdapter, []string{"client client-2, task r3a1", "crashed before answering \"train\"", "exit status 3", "RuntimeError: boom", "after one restart"}, 1},
		{"hang", Options{CallTimeout: 300 * time.Millisecond}, ErrAdapter, []string{"client client-2, task r3a1", "no answer to \"train\" within 300ms; killed", "after one restart"}, 1},
		// The task's deadline bounds the call (here: already passed, so
		// the minimum of one second), not CallTimeout.
		{"hang/task-deadline", Options{CallTimeout: time.Hour}, ErrAdapter, []string{"client client-2, task r3a1", "no answer to \"train\" within 1s; killed"}, 1},
		{"short", Options{}, ErrProtocol, []string{"client client-2, task r3a1", "the update of task r3a1 has 5 values, the model 6", "after one restart"}, 1},
		{"nan", Options{}, ErrProtocol, []string{"client client-2, task r3a1", "update value 2 of task r3a1 is NaN", "after one restart"}, 1},
		{"error", Options{}, ErrAdapter, []string{"client client-2, task r3a1", `"train" failed: RuntimeError: CUDA out of memory`, "after one restart"}, 1},
		{"relayout", Options{}, ErrLayout, []string{"client client-2, task r3a1", "after a restart it describes the layout [w[2 3]], before [w[3 2]]"}, 1},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			mode, deadline, _ := strings.Cut(tc.mode, "/")
			m := startFake(t, mode, tc.opts)
			if deadline != "" {
				m.BeginTask("client-2", "r3a1", time.Now().Add(-time.Minute))
			}
			before := m.Params()
			_, err := m.Train(fakeData(), fakeTrain, rand.New(rand.NewPCG(1, 2)))
			if err == nil {
				t.Fatal("Train succeeded, want an error")
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
			if got := m.Process().Restarts(); got != tc.retries {
				t.Errorf("%d restarts, want %d", got, tc.retries)
			}
			if p := m.Params(); !equal(p, before) {
				t.Errorf("a failed Train changed the parameters: %v → %v", before, p)
			}
			t.Log(err)
		})
	}
}

func equal(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTrainerCrashOnceRecovers: a trainer that crashes once is restarted
// and the task completes on the new process.
func TestTrainerCrashOnceRecovers(t *testing.T) {
	m := startFake(t, "crash-once", Options{})
	before := m.Params()
	st, err := m.Train(fakeData(), fakeTrain, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Process().Restarts(); got != 1 {
		t.Errorf("%d restarts, want 1", got)
	}
	for i, p := range m.Params() {
		if want := before[i] / 2; p != want {
			t.Fatalf("param %d = %v, want %v (the fake halves them)", i, p, want)
		}
	}
	if st.Samples != 2 {
		t.Errorf("samples %d, want 2", st.Samples)
	}
}

// TestGarbageHello: an adapter that prints text instead of its hello is
// refused at start with what it printed.
func TestGarbageHello(t *testing.T) {
	_, err := Start(Options{Command: fakeCommand(t, "garbage"), Role: RoleEvaluator, Features: 3, Classes: 2, Stderr: io.Discard})
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), `"Loading weights… done"`) {
		t.Fatalf("Start = %v, want ErrProtocol quoting the line", err)
	}
}

// TestMissingCommand: a command that does not exist fails at start with
// the shell's message.
func TestMissingCommand(t *testing.T) {
	var stderr strings.Builder
	_, err := Start(Options{Command: "/nonexistent/python3 adapter.py", Role: RoleTrainer, Features: 3, Classes: 2, Stderr: &stderr})
	if !errors.Is(err, ErrAdapter) || !strings.Contains(err.Error(), "/nonexistent/python3") {
		t.Fatalf("Start = %v, want ErrAdapter naming the command", err)
	}
	t.Log(err)
}

// TestBatchedEvaluation: concurrent Evaluate calls from clones are
// answered correctly, and Gradient returns the adapter's gradient.
func TestBatchedEvaluation(t *testing.T) {
	m := startFake(t, "ok", Options{})
	const n = 40
	errs := make(chan error, n)
	for k := range n {
		c := m.Clone()
		p := make([]float64, 6)
		p[0] = float64(k)
		if err := c.SetParams(p); err != nil {
			t.Fatal(err)
		}
		go func() {
			met, err := c.Evaluate(fakeData())
			if err == nil && met.Loss != float64(k*k) {
				err = errors.New("wrong loss")
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	g := make([]float64, 6)
	if err := m.Gradient(fakeData(), g); err != nil {
		t.Fatal(err)
	}
	for i, p := range m.Params() {
		if g[i] != 2*p {
			t.Fatalf("gradient %d = %v, want %v", i, g[i], 2*p)
		}
	}
	met, err := m.EvaluateBatch(fakeData(), [][]float64{{1, 0, 0, 0, 0, 0}, {0, 2, 0, 0, 0, 0}})
	if err != nil || met[0].Loss != 1 || met[1].Loss != 4 {
		t.Fatalf("EvaluateBatch = %v, %v", met, err)
	}
}
