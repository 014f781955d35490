package model

import (
	"fmt"
	"math/rand/v2"
	"sync"
)

// chunkRows is the largest number of rows one graph run takes in Evaluate
// and Gradient. Larger sets are processed in chunks of this size plus one
// remainder chunk, so memory stays bounded (a chunk's activations are at
// most 512 × the widest layer) and only two graphs per purpose are built.
// 512 exceeds the validation sets the valuation uses (≈100–400 rows),
// which therefore take a single run.
const chunkRows = 512

// net is a fully connected softmax classifier on gorgonia: logistic
// regression is the case without hidden layers, the MLP the case with.
type net struct {
	spec   Spec
	widths []int // input, hidden..., classes
	layers []layer
	params []float64
	cache  graphCache
	vel    []float64 // momentum buffer, reused across Train calls
}

var _ Model = (*net)(nil)

func newNet(spec Spec, widths []int) *net {
	return &net{
		spec:   spec,
		widths: append([]int(nil), widths...),
		layers: layersOf(widths),
		params: make([]float64, countParams(widths)),
		cache:  graphCache{max: graphCacheSize},
	}
}

func (m *net) NumParams() int { return len(m.params) }

func (m *net) Params() []float64 { return append([]float64(nil), m.params...) }

func (m *net) SetParams(p []float64) error {
	if len(p) != len(m.params) {
		return fmt.Errorf("%w: got %d values, want %d", ErrParamLength, len(p), len(m.params))
	}
	copy(m.params, p)
	return nil
}

// Clone returns a model with the same spec and parameters and an empty
// graph cache: its graphs are its own, built on first use, so the clone
// can run on another goroutine.
func (m *net) Clone() Model {
	c := newNet(m.spec, m.widths)
	copy(c.params, m.params)
	return c
}

// buildMu serialises graph construction across models. gorgonia v0.9.18
// shares package-level constant nodes between graphs and caches their hash
// lazily, so two models building graphs at once (clients of one simulation,
// valuation workers) race on that cache; the race detector caught it in the
// coordinator's tests. Building is once per (purpose, rows) per model, so
// the lock costs nothing on the hot path: running a built graph is not locked.
var buildMu sync.Mutex

// graphFor returns the cached graph for key, building it on a miss.
func (m *net) graphFor(key graphKey) (*graph, error) {
	if gr := m.cache.get(key); gr != nil {
		return gr, nil
	}
	buildMu.Lock()
	gr, err := buildGraph(key, m.widths, m.layers, m.spec.Activation, len(m.params))
	buildMu.Unlock()
	if err != nil {
		return nil, err
	}
	m.cache.put(gr)
	return gr, nil
}

// check verifies that data fits the model: column count, matrix size and
// label range. Rows are not required here; callers decide about empty data.
func (m *net) check(data Examples) error {
	features, classes := m.widths[0], m.widths[len(m.widths)-1]
	if data.Features != features {
		return fmt.Errorf("%w: %d features, model has %d", ErrShape, data.Features, features)
	}
	if len(data.X) != data.Len()*features {
		return fmt.Errorf("%w: X has %d values, want %d rows × %d features", ErrShape, len(data.X), data.Len(), features)
	}
	for i, y := range data.Y {
		if y < 0 || y >= classes {
			return fmt.Errorf("%w: label %d of row %d is outside [0, %d)", ErrShape, y, i, classes)
		}
	}
	if data.Len() == 0 {
		return fmt.Errorf("%w: no rows", ErrShape)
	}
	return nil
}

// chunks calls fn for consecutive chunks of at most chunkRows rows.
func chunks(n int, fn func(start, rows int) error) error {
	for start := 0; start < n; start += chunkRows {
		if err := fn(start, min(chunkRows, n-start)); err != nil {
			return err
		}
	}
	return nil
}

func (m *net) Evaluate(data Examples) (Metrics, error) {
	if err := m.check(data); err != nil {
		return Metrics{}, err
	}
	sum, correct := 0.0, 0
	err := chunks(data.Len(), func(start, rows int) error {
		gr, err := m.graphFor(graphKey{forward, rows})
		if err != nil {
			return err
		}
		if err := gr.run(m.params, data, start, nil); err != nil {
			return err
		}
		sum += gr.stats.sumLoss
		correct += gr.stats.correct
		return nil
	})
	if err != nil {
		return Metrics{}, err
	}
	n := float64(data.Len())
	return Metrics{Loss: sum / n, Accuracy: float64(correct) / n}, nil
}

// Gradient writes ∇ of the mean loss over all rows of data. Chunks are
// combined as Σ (rows_c / N) · ∇(mean loss of chunk c), which is the same
// quantity; a set of at most chunkRows rows takes a single run.
func (m *net) Gradient(data Examples, out []float64) error {
	if len(out) != len(m.params) {
		return fmt.Errorf("%w: gradient buffer has %d values, want %d", ErrParamLength, len(out), len(m.params))
	}
	if err := m.check(data); err != nil {
		return err
	}
	n := data.Len()
	if n <= chunkRows {
		gr, err := m.graphFor(graphKey{backward, n})
		if err != nil {
			return err
		}
		if err := gr.run(m.params, data, 0, nil); err != nil {
			return err
		}
		copy(out, gr.grad)
		return nil
	}
	clear(out)
	return chunks(n, func(start, rows int) error {
		gr, err := m.graphFor(graphKey{backward, rows})
		if err != nil {
			return err
		}
		if err := gr.run(m.params, data, start, nil); err != nil {
			return err
		}
		wt := float64(rows) / float64(n)
		for i, g := range gr.grad {
			out[i] += wt * g
		}
		return nil
	})
}

// Train runs cfg.Epochs epochs of mini-batch SGD with momentum (the
// heavy-ball form used by PyTorch):
//
//	g ← ∇L_batch(w) + λ·w,  v ← μ·v + g,  w ← w − η·v
//
// where λ is WeightDecay (L2, applied to weights and biases alike), μ is
// Momentum and η is LearningRate. The velocity v starts at zero on every
// call, because in federated training each call is a fresh local run from
// the global model. Each epoch shuffles the row order with rng and walks
// it in batches of BatchSize; the final partial batch, if any, is a step of
// its own on the mean of its rows (its graph is cached like the full-batch
// one), so every row is used every epoch.
func (m *net) Train(data Examples, cfg TrainConfig, rng *rand.Rand) (TrainStats, error) {
	if err := cfg.Validate(); err != nil {
		return TrainStats{}, err
	}
	if rng == nil {
		return TrainStats{}, fmt.Errorf("%w: Train needs an rng to shuffle rows", ErrConfig)
	}
	if err := m.check(data); err != nil {
		return TrainStats{}, err
	}
	n := data.Len()
	bs := min(cfg.BatchSize, n)
	if len(m.vel) != len(m.params) {
		m.vel = make([]float64, len(m.params))
	}
	clear(m.vel)
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	var st TrainStats
	for e := 0; e < cfg.Epochs; e++ {
		rng.Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
		sum := 0.0
		for start := 0; start < n; start += bs {
			rows := min(bs, n-start)
			gr, err := m.graphFor(graphKey{backward, rows})
			if err != nil {
				return st, err
			}
			if err := gr.run(m.params, data, start, order); err != nil {
				return st, err
			}
			sum += gr.stats.sumLoss
			m.step(gr.grad, cfg)
			st.Steps++
		}
		st.Samples += n
		st.Loss = sum / float64(n)
	}
	return st, nil
}

// step applies one SGD-with-momentum update from the batch gradient g.
func (m *net) step(g []float64, cfg TrainConfig) {
	lr, mu, wd := cfg.LearningRate, cfg.Momentum, cfg.WeightDecay
	for i, w := range m.params {
		d := g[i] + wd*w
		v := mu*m.vel[i] + d
		m.vel[i] = v
		m.params[i] = w - lr*v
	}
}
