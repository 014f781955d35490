package model

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// purpose says what a cached graph computes.
type purpose uint8

const (
	// forward computes the loss and the correct count only (Evaluate).
	forward purpose = iota
	// backward also computes the gradient of the mean loss (Train, Gradient).
	backward
)

func (p purpose) String() string {
	if p == forward {
		return "forward"
	}
	return "backward"
}

// graphKey identifies a cached graph: graphs are specialised to a row count
// because gorgonia shapes are static.
type graphKey struct {
	purpose purpose
	rows    int
}

// graph is one compiled gorgonia expression graph with its tape machine.
// Its input tensors are backed by the slices below, so feeding a batch or
// new parameters is a copy into memory the machine already reads.
type graph struct {
	key graphKey
	vm  G.VM

	x      []float64 // rows × (features+1): each row then a 1, backing of the input node
	y      []float64 // rows × classes one-hot, backing of the label node
	params []float64 // the parameter vector in the package layout, backing every W and b node
	grad   []float64 // same layout; filled by Read nodes (backward graphs only)
	stats  xentStats // filled by the loss op on every run
}

// layer locates one dense layer's weights and biases in the flat vector.
type layer struct {
	in, out int
	w, b    int // offsets of W (in×out, row-major) and b (out)
}

func layersOf(widths []int) []layer {
	ls := make([]layer, 0, len(widths)-1)
	off := 0
	for l := 0; l+1 < len(widths); l++ {
		in, out := widths[l], widths[l+1]
		ls = append(ls, layer{in: in, out: out, w: off, b: off + in*out})
		off += in*out + out
	}
	return ls
}

// buildGraph builds and compiles the graph for key. It is called once per
// key per model (until the key is evicted from the cache); every later call
// only copies data into the graph's backing slices and reruns the tape.
func buildGraph(key graphKey, widths []int, layers []layer, act string, nparams int) (gr *graph, err error) {
	features, classes := widths[0], widths[len(widths)-1]
	n := key.rows
	gr = &graph{
		key:    key,
		x:      make([]float64, n*(features+1)),
		y:      make([]float64, n*classes),
		params: make([]float64, nparams),
	}
	g := G.NewGraph()
	// The input carries a trailing column of ones so that the first layer's
	// bias rides in its matrix product: W0 (features×out, row-major)
	// followed by b0 (out) is, in the package layout, exactly one
	// (features+1)×out row-major matrix. That saves the bias broadcast,
	// the largest of the elementwise passes, and for logistic regression
	// leaves one product and the loss.
	for r := 0; r < n; r++ {
		gr.x[r*(features+1)+features] = 1
	}
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(n, features+1), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(n, features+1), tensor.WithBacking(gr.x))))
	y := G.NewMatrix(g, tensor.Float64, G.WithShape(n, classes), G.WithName("y"),
		G.WithValue(tensor.New(tensor.WithShape(n, classes), tensor.WithBacking(gr.y))))

	// wrt holds the parameter nodes; spans their place in the flat vector.
	var wrt G.Nodes
	var spans [][2]int
	param := func(name string, off, rows, cols int) *G.Node {
		v := tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(gr.params[off:off+rows*cols]))
		node := G.NewMatrix(g, tensor.Float64, G.WithShape(rows, cols), G.WithName(name), G.WithValue(v))
		wrt = append(wrt, node)
		spans = append(spans, [2]int{off, rows * cols})
		return node
	}
	h := x
	for l, lay := range layers {
		var z *G.Node
		if l == 0 {
			wb := param("Wb0", lay.w, lay.in+1, lay.out)
			if z, err = G.Mul(h, wb); err != nil {
				return nil, fmt.Errorf("model: build layer %d: %w", l, err)
			}
		} else {
			w := param(fmt.Sprintf("W%d", l), lay.w, lay.in, lay.out)
			b := param(fmt.Sprintf("b%d", l), lay.b, 1, lay.out)
			if z, err = G.Mul(h, w); err != nil {
				return nil, fmt.Errorf("model: build layer %d: %w", l, err)
			}
			// b is 1×out: repeat it along the rows (axis 0).
			if z, err = G.BroadcastAdd(z, b, nil, []byte{0}); err != nil {
				return nil, fmt.Errorf("model: build layer %d bias: %w", l, err)
			}
		}
		if l+1 < len(layers) {
			switch act {
			case ActTanh:
				z, err = G.Tanh(z)
			default:
				z, err = G.ApplyOp(reluOp{}, z)
			}
			if err != nil {
				return nil, fmt.Errorf("model: build layer %d activation: %w", l, err)
			}
		}
		h = z
	}
	loss, err := G.ApplyOp(xentOp{stats: &gr.stats}, h, y)
	if err != nil {
		return nil, fmt.Errorf("model: build loss: %w", err)
	}

	if key.purpose == backward {
		grads, err := G.Grad(loss, wrt...)
		if err != nil {
			return nil, fmt.Errorf("model: differentiate: %w", err)
		}
		gr.grad = make([]float64, nparams)
		for i, sp := range spans {
			// Read copies each gradient into a tensor backed by gr.grad
			// while it is still in its register, so the flat gradient is
			// complete after RunAll whatever registers gorgonia reuses.
			into := new(G.Value)
			*into = tensor.New(tensor.WithShape(wrt[i].Shape().Clone()...), tensor.WithBacking(gr.grad[sp[0]:sp[0]+sp[1]]))
			G.Read(grads[i], into)
		}
	}
	gr.vm = G.NewTapeMachine(g)
	return gr, nil
}

// run feeds params and the rows idx of data (all rows when idx is nil,
// starting at row start) into gr and executes it once.
func (gr *graph) run(params []float64, data Examples, start int, idx []int) error {
	copy(gr.params, params)
	f := data.Features
	classes := len(gr.y) / gr.key.rows
	clear(gr.y)
	for r := 0; r < gr.key.rows; r++ {
		i := start + r
		if idx != nil {
			i = idx[start+r]
		}
		copy(gr.x[r*(f+1):r*(f+1)+f], data.X[i*f:(i+1)*f])
		gr.y[r*classes+data.Y[i]] = 1
	}
	gr.vm.Reset()
	if err := gr.vm.RunAll(); err != nil {
		return fmt.Errorf("model: run %v graph (%d rows): %w", gr.key.purpose, gr.key.rows, err)
	}
	return nil
}

// graphCache keeps the most recently used graphs of one model. It is
// bounded because a model sees few distinct row counts in practice (the
// evaluation chunk, the batch size and the two remainders), yet a caller
// evaluating many differently sized sets must not grow memory without end.
type graphCache struct {
	max    int
	graphs []*graph // most recently used first
}

// graphCacheSize holds the usual working set (forward full chunk and
// remainder, backward batch and its remainder, backward chunk and its
// remainder) with room to spare.
const graphCacheSize = 8

func (c *graphCache) get(key graphKey) *graph {
	for i, gr := range c.graphs {
		if gr.key == key {
			copy(c.graphs[1:i+1], c.graphs[:i])
			c.graphs[0] = gr
			return gr
		}
	}
	return nil
}

func (c *graphCache) put(gr *graph) {
	if len(c.graphs) >= c.max {
		last := c.graphs[len(c.graphs)-1]
		last.vm.Close()
		c.graphs = c.graphs[:len(c.graphs)-1]
	}
	c.graphs = append([]*graph{gr}, c.graphs...)
}
