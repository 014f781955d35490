package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// ErrConfig marks an invalid TrainConfig (or a missing rng) given to Train.
var ErrConfig = errors.New("model: invalid training config")

// FieldError is one problem found by Spec.Validate or TrainConfig.Validate.
// Its message names the field as a config file spells it
// ("model.hidden[1]: width must be ≥ 1, got 0"); errors.Is matches it
// against ErrSpec or ErrConfig.
type FieldError struct {
	Field string // e.g. "model.hidden[1]"
	Msg   string // e.g. "width must be ≥ 1, got 0"
	kind  error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap returns the sentinel (ErrSpec or ErrConfig) the problem belongs to.
func (e *FieldError) Unwrap() error { return e.kind }

// Model kinds understood by New.
const (
	KindLogReg = "logreg"
	KindMLP    = "mlp"
	// KindExternal is a model that lives in another process and speaks
	// the adapter protocol of package extmodel (any framework: PyTorch,
	// JAX, scikit-learn). New does not build it; extmodel.New does.
	KindExternal = "external"
)

// Activations understood by the MLP.
const (
	ActReLU = "relu"
	ActTanh = "tanh"
)

// defaultHidden is the MLP's hidden layer when the spec names none: one
// layer of 32 units, enough for the tabular benchmarks tally ships with
// (tens of features, up to ten classes) and cheap to evaluate thousands of
// times per round.
var defaultHidden = []int{32}

// Spec names a model architecture. It is the literal form read from a job
// file; WithDefaults fills the blanks and Validate reports every problem.
type Spec struct {
	// Kind is "logreg" (multinomial softmax regression; two classes are a
	// two-way softmax too) or "mlp".
	Kind string `yaml:"kind" json:"kind"`
	// Hidden holds the MLP's hidden layer widths; default [32]. It must be
	// empty for logreg.
	Hidden []int `yaml:"hidden" json:"hidden,omitempty"`
	// Activation is the MLP's hidden activation: "relu" (default) or "tanh".
	Activation string `yaml:"activation" json:"activation,omitempty"`
	// Command is the adapter of an external model, run by /bin/sh in
	// tally's working directory (kind external only; see extmodel).
	Command string `yaml:"command,omitempty" json:"command,omitempty"`
}

// WithDefaults returns a copy of s with the MLP's hidden widths and
// activation filled in when they are empty. Kind is never guessed. The
// returned Hidden never aliases s.Hidden.
func (s Spec) WithDefaults() Spec {
	out := s
	out.Hidden = append([]int(nil), s.Hidden...)
	if s.Kind == KindMLP {
		if len(out.Hidden) == 0 {
			out.Hidden = append([]int(nil), defaultHidden...)
		}
		if out.Activation == "" {
			out.Activation = ActReLU
		}
	}
	return out
}

// Validate reports every problem of s at once, each wrapping ErrSpec and
// naming the field. It checks s as written: call WithDefaults first to
// accept an MLP spec that leaves Hidden or Activation empty.
func (s Spec) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...), kind: ErrSpec})
	}
	if s.Command != "" && s.Kind != KindExternal {
		bad("model.command", "only an external model runs a command, this one is %q", s.Kind)
	}
	switch s.Kind {
	case KindExternal:
		if s.Command == "" {
			bad("model.command", "an external model needs the command of its adapter (see extmodel)")
		}
		if len(s.Hidden) > 0 || s.Activation != "" {
			bad("model.hidden", "an external model describes its own layers; hidden and activation must be empty")
		}
	case KindLogReg:
		if len(s.Hidden) > 0 {
			bad("model.hidden", "logreg has no hidden layers, got %v", s.Hidden)
		}
		if s.Activation != "" {
			bad("model.activation", "logreg has no activation, got %q", s.Activation)
		}
	case KindMLP:
		if len(s.Hidden) == 0 {
			bad("model.hidden", "mlp needs at least one hidden layer")
		}
		for i, w := range s.Hidden {
			if w < 1 {
				bad(fmt.Sprintf("model.hidden[%d]", i), "width must be ≥ 1, got %d", w)
			}
		}
		if s.Activation != ActReLU && s.Activation != ActTanh {
			bad("model.activation", "must be %q or %q, got %q", ActReLU, ActTanh, s.Activation)
		}
	case "":
		bad("model.kind", "missing, want %q, %q or %q", KindLogReg, KindMLP, KindExternal)
	default:
		bad("model.kind", "must be %q, %q or %q, got %q", KindLogReg, KindMLP, KindExternal, s.Kind)
	}
	return errors.Join(errs...)
}

// layerWidths returns the widths of every layer, input first, after
// checking the spec (with defaults) and the problem's shape.
func layerWidths(spec Spec, features, classes int) ([]int, error) {
	if spec.Kind == KindExternal {
		return nil, fmt.Errorf("%w: model.kind: an external model runs in its adapter process; build it with extmodel.New", ErrSpec)
	}
	var errs []error
	if err := spec.Validate(); err != nil {
		errs = append(errs, err)
	}
	if features < 1 {
		errs = append(errs, fmt.Errorf("%w: features must be ≥ 1, got %d", ErrShape, features))
	}
	if classes < 2 {
		errs = append(errs, fmt.Errorf("%w: classes must be ≥ 2, got %d", ErrShape, classes))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	widths := make([]int, 0, len(spec.Hidden)+2)
	widths = append(widths, features)
	widths = append(widths, spec.Hidden...)
	return append(widths, classes), nil
}

// countParams is Σ over layers of in·out weights plus out biases.
func countParams(widths []int) int {
	n := 0
	for l := 0; l+1 < len(widths); l++ {
		n += widths[l]*widths[l+1] + widths[l+1]
	}
	return n
}

// NumParamsFor returns the length of the parameter vector of the model New
// would build. spec is completed with WithDefaults first.
func NumParamsFor(spec Spec, features, classes int) (int, error) {
	widths, err := layerWidths(spec.WithDefaults(), features, classes)
	if err != nil {
		return 0, err
	}
	return countParams(widths), nil
}

// initStream separates New's random stream from any other consumer of the
// same seed (the PCG stream constant is ASCII "model").
const initStream = 0x6d6f64656c

// New builds a model of the given spec (completed with WithDefaults) for
// inputs of `features` columns and `classes` labels. Weights are drawn from
// the seed: He-uniform, U(±√(6/in)), before ReLU (He et al., 2015) and
// Glorot-uniform, U(±√(6/(in+out))), elsewhere (Glorot & Bengio, 2010);
// biases start at zero. Graphs are built lazily, on first use.
func New(spec Spec, features, classes int, seed uint64) (Model, error) {
	spec = spec.WithDefaults()
	widths, err := layerWidths(spec, features, classes)
	if err != nil {
		return nil, err
	}
	m := newNet(spec, widths)
	rng := rand.New(rand.NewPCG(seed, initStream))
	for l, lay := range m.layers {
		in, out := widths[l], widths[l+1]
		limit := math.Sqrt(6 / float64(in+out))
		if l+1 < len(m.layers) && spec.Activation == ActReLU {
			limit = math.Sqrt(6 / float64(in))
		}
		w := m.params[lay.w : lay.w+in*out]
		for i := range w {
			w[i] = (2*rng.Float64() - 1) * limit
		}
	}
	return m, nil
}

// Validate reports every problem of c at once, each wrapping ErrConfig.
func (c TrainConfig) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...), kind: ErrConfig})
	}
	if c.Epochs < 1 {
		bad("epochs", "must be ≥ 1, got %d", c.Epochs)
	}
	if c.BatchSize < 1 {
		bad("batch_size", "must be ≥ 1, got %d", c.BatchSize)
	}
	if !(c.LearningRate > 0) || math.IsInf(c.LearningRate, 0) {
		bad("learning_rate", "must be finite and > 0, got %v", c.LearningRate)
	}
	if !(c.Momentum >= 0 && c.Momentum < 1) {
		bad("momentum", "must be in [0, 1), got %v", c.Momentum)
	}
	if !(c.WeightDecay >= 0) || math.IsInf(c.WeightDecay, 0) {
		bad("weight_decay", "must be finite and ≥ 0, got %v", c.WeightDecay)
	}
	return errors.Join(errs...)
}
