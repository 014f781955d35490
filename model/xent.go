package model

import (
	"fmt"
	"hash"
	"hash/fnv"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// xentStats is where one run of a graph's loss op leaves what Evaluate and
// Train need besides the mean loss: the summed loss (so chunks combine
// exactly) and the number of rows whose arg-max logit is the true class.
type xentStats struct {
	sumLoss float64
	correct int
}

// xentOp is softmax cross-entropy fused into one gorgonia op: inputs are
// the logits (n×k) and the one-hot labels (n×k), the output is the scalar
// mean loss over the n rows.
//
// It exists because the log-softmax of gorgonia.org/tensor v0.9.23 takes
// the maximum of a row starting from element 0 of the whole matrix instead
// of the row, so rows far below row 0 underflow to -Inf; it also starts one
// goroutine per row. Fusing the loss lets us use a per-row max shift
// (log Σ exp(z−m) + m, the standard stable form) and count correct
// predictions in the same pass, so Evaluate reads no intermediate tensor.
type xentOp struct {
	stats *xentStats // written by Do; owned by the graph that holds the op
}

var (
	matF64 = G.TensorType{Dims: 2, Of: tensor.Float64}

	_ G.SDOp = xentOp{}
	_ G.Op   = xentGradOp{}
)

func (op xentOp) Arity() int { return 2 }

func (op xentOp) Type() hm.Type { return hm.NewFnType(matF64, matF64, tensor.Float64) }

func (op xentOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	if len(in) != 2 {
		return nil, fmt.Errorf("model: xent wants 2 inputs, got %d", len(in))
	}
	return tensor.ScalarShape(), nil
}

func (op xentOp) Do(in ...G.Value) (G.Value, error) {
	z, y, n, k, err := xentInputs(in)
	if err != nil {
		return nil, err
	}
	sum, correct := 0.0, 0
	for r := 0; r < n; r++ {
		zr, yr := z[r*k:(r+1)*k], y[r*k:(r+1)*k]
		m, arg := zr[0], 0
		for j := 1; j < k; j++ {
			if zr[j] > m {
				m, arg = zr[j], j
			}
		}
		lse := logSumExpShifted(zr, m)
		for j := 0; j < k; j++ {
			if yr[j] != 0 {
				sum -= yr[j] * (zr[j] - lse)
			}
		}
		if yr[arg] == 1 {
			correct++
		}
	}
	op.stats.sumLoss, op.stats.correct = sum, correct
	return G.NewF64(sum / float64(n)), nil
}

// logSumExpShifted returns log Σ exp(z_j) computed as m + log Σ exp(z_j − m)
// where m = max z, which never overflows and keeps the largest term at 1.
func logSumExpShifted(z []float64, m float64) float64 {
	s := 0.0
	for _, v := range z {
		s += math.Exp(v - m)
	}
	return m + math.Log(s)
}

func (op xentOp) ReturnsPtr() bool      { return false }
func (op xentOp) CallsExtern() bool     { return false }
func (op xentOp) OverwritesInput() int  { return -1 }
func (op xentOp) WriteHash(h hash.Hash) { fmt.Fprintf(h, "tally.xent(%p)", op.stats) }
func (op xentOp) Hashcode() uint32      { return opHash(op) }
func (op xentOp) String() string        { return "SoftmaxXent" }

// DiffWRT: the labels are data, only the logits are differentiable.
func (op xentOp) DiffWRT(inputs int) []bool { return []bool{true, false} }

func (op xentOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, fmt.Errorf("model: xent wants 2 inputs, got %d", len(inputs))
	}
	dz, err := G.ApplyOp(xentGradOp{}, inputs[0], inputs[1], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dz, nil}, nil
}

// xentGradOp computes ∂(mean loss)/∂logits = g·(softmax(z) − y)/n, with the
// same per-row max shift as xentOp.
type xentGradOp struct{}

func (op xentGradOp) Arity() int { return 3 }

func (op xentGradOp) Type() hm.Type {
	return hm.NewFnType(matF64, matF64, tensor.Float64, matF64)
}

func (op xentGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	if len(in) != 3 {
		return nil, fmt.Errorf("model: xent gradient wants 3 inputs, got %d", len(in))
	}
	s, ok := in[0].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("model: xent gradient: logits shape is %T", in[0])
	}
	return s.Clone(), nil
}

func (op xentGradOp) Do(in ...G.Value) (G.Value, error) {
	if len(in) != 3 {
		return nil, fmt.Errorf("model: xent gradient wants 3 inputs, got %d", len(in))
	}
	z, y, n, k, err := xentInputs(in[:2])
	if err != nil {
		return nil, err
	}
	g, err := scalarOf(in[2])
	if err != nil {
		return nil, err
	}
	out := make([]float64, n*k)
	scale := g / float64(n)
	for r := 0; r < n; r++ {
		zr, yr, or := z[r*k:(r+1)*k], y[r*k:(r+1)*k], out[r*k:(r+1)*k]
		m := zr[0]
		for _, v := range zr[1:] {
			m = max(m, v)
		}
		lse := logSumExpShifted(zr, m)
		for j := range or {
			or[j] = scale * (math.Exp(zr[j]-lse) - yr[j])
		}
	}
	return tensor.New(tensor.WithShape(n, k), tensor.WithBacking(out)), nil
}

func (op xentGradOp) ReturnsPtr() bool      { return false }
func (op xentGradOp) CallsExtern() bool     { return false }
func (op xentGradOp) OverwritesInput() int  { return -1 }
func (op xentGradOp) WriteHash(h hash.Hash) { fmt.Fprint(h, "tally.xentGrad") }
func (op xentGradOp) Hashcode() uint32      { return opHash(op) }
func (op xentGradOp) String() string        { return "SoftmaxXentGrad" }

func opHash(op G.Op) uint32 {
	h := fnv.New32a()
	op.WriteHash(h)
	return h.Sum32()
}

// xentInputs unpacks (logits, labels) as row-major float64 data.
func xentInputs(in []G.Value) (z, y []float64, n, k int, err error) {
	if len(in) != 2 {
		return nil, nil, 0, 0, fmt.Errorf("model: xent wants 2 inputs, got %d", len(in))
	}
	zt, ok1 := in[0].(tensor.Tensor)
	yt, ok2 := in[1].(tensor.Tensor)
	if !ok1 || !ok2 {
		return nil, nil, 0, 0, fmt.Errorf("model: xent inputs are %T and %T, want tensors", in[0], in[1])
	}
	s := zt.Shape()
	if s.Dims() != 2 || !s.Eq(yt.Shape()) {
		return nil, nil, 0, 0, fmt.Errorf("model: xent shapes %v and %v", s, yt.Shape())
	}
	z, ok1 = zt.Data().([]float64)
	y, ok2 = yt.Data().([]float64)
	if !ok1 || !ok2 {
		return nil, nil, 0, 0, fmt.Errorf("model: xent wants float64 data")
	}
	return z, y, s[0], s[1], nil
}

func scalarOf(v G.Value) (float64, error) {
	switch s := v.(type) {
	case *G.F64:
		return float64(*s), nil
	case tensor.Tensor:
		if f, ok := s.Data().(float64); ok {
			return f, nil
		}
		if f, ok := s.Data().([]float64); ok && len(f) == 1 {
			return f[0], nil
		}
	}
	return 0, fmt.Errorf("model: xent gradient seed is %T, want a float64 scalar", v)
}

// reluOp is max(x, 0) in one pass. gorgonia's Rectify builds it from a
// comparison and a product, two passes and two allocations, which showed
// as a tenth of an MLP evaluation in profiles.
type reluOp struct{}

var _ G.SDOp = reluOp{}

func (op reluOp) Arity() int    { return 1 }
func (op reluOp) Type() hm.Type { return hm.NewFnType(matF64, matF64) }

func (op reluOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	if len(in) != 1 {
		return nil, fmt.Errorf("model: relu wants 1 input, got %d", len(in))
	}
	s, ok := in[0].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("model: relu: input shape is %T", in[0])
	}
	return s.Clone(), nil
}

func (op reluOp) Do(in ...G.Value) (G.Value, error) {
	x, s, err := f64Matrix(in, 1, "relu")
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(x[0]))
	for i, v := range x[0] {
		out[i] = max(v, 0)
	}
	return tensor.New(tensor.WithShape(s.Clone()...), tensor.WithBacking(out)), nil
}

func (op reluOp) ReturnsPtr() bool          { return false }
func (op reluOp) CallsExtern() bool         { return false }
func (op reluOp) OverwritesInput() int      { return -1 }
func (op reluOp) WriteHash(h hash.Hash)     { fmt.Fprint(h, "tally.relu") }
func (op reluOp) Hashcode() uint32          { return opHash(op) }
func (op reluOp) String() string            { return "ReLU" }
func (op reluOp) DiffWRT(inputs int) []bool { return []bool{true} }

func (op reluOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, fmt.Errorf("model: relu wants 1 input, got %d", len(inputs))
	}
	dx, err := G.ApplyOp(reluGradOp{}, inputs[0], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx}, nil
}

// reluGradOp passes the incoming gradient where x > 0 (the subgradient at
// 0 is taken as 0).
type reluGradOp struct{}

func (op reluGradOp) Arity() int    { return 2 }
func (op reluGradOp) Type() hm.Type { return hm.NewFnType(matF64, matF64, matF64) }

func (op reluGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	if len(in) != 2 {
		return nil, fmt.Errorf("model: relu gradient wants 2 inputs, got %d", len(in))
	}
	s, ok := in[0].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("model: relu gradient: input shape is %T", in[0])
	}
	return s.Clone(), nil
}

func (op reluGradOp) Do(in ...G.Value) (G.Value, error) {
	xs, s, err := f64Matrix(in, 2, "relu gradient")
	if err != nil {
		return nil, err
	}
	x, g := xs[0], xs[1]
	if len(g) != len(x) {
		return nil, fmt.Errorf("model: relu gradient: %d values for %d inputs", len(g), len(x))
	}
	out := make([]float64, len(x))
	for i, v := range x {
		if v > 0 {
			out[i] = g[i]
		}
	}
	return tensor.New(tensor.WithShape(s.Clone()...), tensor.WithBacking(out)), nil
}

func (op reluGradOp) ReturnsPtr() bool      { return false }
func (op reluGradOp) CallsExtern() bool     { return false }
func (op reluGradOp) OverwritesInput() int  { return -1 }
func (op reluGradOp) WriteHash(h hash.Hash) { fmt.Fprint(h, "tally.reluGrad") }
func (op reluGradOp) Hashcode() uint32      { return opHash(op) }
func (op reluGradOp) String() string        { return "ReLUGrad" }

// f64Matrix unpacks want float64 tensors and returns their data and the
// first one's shape.
func f64Matrix(in []G.Value, want int, name string) ([][]float64, tensor.Shape, error) {
	if len(in) != want {
		return nil, nil, fmt.Errorf("model: %s wants %d inputs, got %d", name, want, len(in))
	}
	out := make([][]float64, want)
	var s tensor.Shape
	for i, v := range in {
		t, ok := v.(tensor.Tensor)
		if !ok {
			return nil, nil, fmt.Errorf("model: %s input %d is %T, want a tensor", name, i, v)
		}
		if out[i], ok = t.Data().([]float64); !ok {
			return nil, nil, fmt.Errorf("model: %s input %d is not float64", name, i)
		}
		if i == 0 {
			s = t.Shape()
		}
	}
	return out, s, nil
}
