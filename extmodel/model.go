package extmodel

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tallyfl/tally/model"
)

// minTaskTimeout is the least time a task's Train is given, whatever its
// deadline says.
const minTaskTimeout = time.Second

// Model is a model.Model whose training and evaluation run in an adapter
// process. The parameters live here, in Go; each call sends them.
//
// Contract: as model.Model's. A Model is not safe for concurrent use, but
// its clones are independent of each other (each has its own parameters)
// and share the process, which serialises and batches their calls: that
// is how the valuation's parallel coalition evaluations become batched
// requests (see Parallelism).
type Model struct {
	p      *Process
	params []float64

	client, task string
	deadline     time.Time
}

var _ model.Model = (*Model)(nil)

// NumParams implements model.Model.
func (m *Model) NumParams() int { return len(m.params) }

// Params implements model.Model.
func (m *Model) Params() []float64 { return slices.Clone(m.params) }

// SetParams implements model.Model.
func (m *Model) SetParams(p []float64) error {
	if len(p) != len(m.params) {
		return fmt.Errorf("%w: got %d, the adapter's model has %d", model.ErrParamLength, len(p), len(m.params))
	}
	copy(m.params, p)
	return nil
}

// Clone implements model.Model: same process, own parameters.
func (m *Model) Clone() model.Model {
	c := *m
	c.params = slices.Clone(m.params)
	return &c
}

// Process is the adapter process behind the model.
func (m *Model) Process() *Process { return m.p }

// BeginTask names the client and task of the next Train in its errors, and
// bounds it by the task's deadline (zero: Options.CallTimeout). The
// client calls it through an interface of its own before each task.
func (m *Model) BeginTask(client, task string, deadline time.Time) {
	m.client, m.task, m.deadline = client, task, deadline
}

// Parallelism is how many concurrent evaluations the model invites: they
// are sent as one batch. The coordinator's valuation sizes its worker
// pool by it.
func (m *Model) Parallelism() int { return m.p.opts.MaxBatch }

// Train implements model.Model: one train request from the current
// parameters, with a seed drawn from rng; the parameters become
// params + Δ.
func (m *Model) Train(data model.Examples, cfg model.TrainConfig, rng *rand.Rand) (model.TrainStats, error) {
	if rng == nil {
		return model.TrainStats{}, fmt.Errorf("%w: nil rng", model.ErrConfig)
	}
	if err := cfg.Validate(); err != nil {
		return model.TrainStats{}, err
	}
	timeout := time.Duration(0)
	if !m.deadline.IsZero() {
		// The deadline is the coordinator's clock; a second of grace
		// keeps a skewed clock from failing a task before it starts.
		timeout = max(time.Until(m.deadline), minTaskTimeout)
	}
	res, err := m.p.Train(m.task, data, m.params, cfg, rng.Uint64(), timeout)
	if err != nil {
		return model.TrainStats{}, fmt.Errorf("%s, task %s: %w", m.who(), m.taskName(), err)
	}
	for i, u := range res.Update {
		m.params[i] += u
	}
	return model.TrainStats{Steps: res.Steps, Samples: res.Samples * cfg.Epochs, Loss: res.Loss}, nil
}

func (m *Model) who() string {
	if m.client == "" {
		return "client (not enrolled yet)"
	}
	return "client " + m.client
}

func (m *Model) taskName() string {
	if m.task == "" {
		return "(unnamed)"
	}
	return m.task
}

// Evaluate implements model.Model. Concurrent calls from clones are
// batched.
func (m *Model) Evaluate(data model.Examples) (model.Metrics, error) {
	c := &evalCall{data: data, params: m.params}
	if err := m.check(data); err != nil {
		return model.Metrics{}, err
	}
	if err := m.p.enqueue(c); err != nil {
		return model.Metrics{}, err
	}
	return c.out, nil
}

// Gradient implements model.Model.
func (m *Model) Gradient(data model.Examples, out []float64) error {
	if len(out) != len(m.params) {
		return fmt.Errorf("%w: gradient buffer of %d, the model has %d", model.ErrParamLength, len(out), len(m.params))
	}
	if err := m.check(data); err != nil {
		return err
	}
	c := &evalCall{data: data, params: m.params, gradients: true}
	if err := m.p.enqueue(c); err != nil {
		return err
	}
	copy(out, c.grad)
	return nil
}

// EvaluateBatch scores many parameter vectors on data in batched
// requests; the model's own parameters are not used.
func (m *Model) EvaluateBatch(data model.Examples, params [][]float64) ([]model.Metrics, error) {
	if err := m.check(data); err != nil {
		return nil, err
	}
	met, _, err := m.p.Evaluate(data, params, false)
	return met, err
}

func (m *Model) check(d model.Examples) error {
	if d.Len() == 0 {
		return fmt.Errorf("%w: no rows", model.ErrShape)
	}
	if d.Features != m.p.opts.Features || len(d.X) != d.Len()*d.Features {
		return fmt.Errorf("%w: %d values for %d rows of %d features; the model takes %d", model.ErrShape, len(d.X), d.Len(), d.Features, m.p.opts.Features)
	}
	return nil
}

// New builds the model a spec names: an adapter process for kind
// external (opts gives its role, stderr and timeouts; Command, Features,
// Classes and Seed come from the arguments), a built-in gorgonia model
// otherwise. The closer ends the process (a no-op for built-in models).
func New(spec model.Spec, features, classes int, seed uint64, opts Options) (model.Model, io.Closer, error) {
	if spec.Kind != model.KindExternal {
		m, err := model.New(spec, features, classes, seed)
		return m, nopCloser{}, err
	}
	if err := spec.Validate(); err != nil {
		return nil, nil, err
	}
	opts.Command, opts.Features, opts.Classes, opts.Seed = spec.Command, features, classes, seed
	p, err := Start(opts)
	if err != nil {
		return nil, nil, err
	}
	return p.Model(), p, nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }
