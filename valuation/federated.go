package valuation

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"
)

// ParamScorer scores a flat parameter vector on the validation set; higher is
// better (pass negative loss, or accuracy). It is defined here, by its
// consumer, so that valuation does not import model/: a model.Model clone
// with its validation data behind SetParams + Evaluate satisfies it in a few
// lines.
//
// Contract: a ParamScorer need NOT be safe for concurrent use; the federated
// game gives each one to a single goroutine at a time. Score treats params as
// read-only and must not retain it (the game reuses the buffer). Score must be
// deterministic.
type ParamScorer interface {
	Score(params []float64) (float64, error)
}

// FederatedOptions tunes a FederatedGame.
type FederatedOptions struct {
	// MaxScorers bounds how many scorers (model clones) the game creates and
	// therefore how many utilities it computes at once; callers beyond it
	// wait. 0 means runtime.GOMAXPROCS(0), the Evaluator's default pool size.
	MaxScorers int `yaml:"max_scorers" json:"max_scorers"`
	// LineSearch scores a coalition by the best step along its direction,
	// no longer than its FedAvg step, rather than by its FedAvg step (see
	// linesearch.go):
	//
	//	U(S) = max_{t∈[0,1]} score(b + t·d_S/Σ_S n_i),  U(∅) = score(b),
	//
	// with d_S = Σ_{i∈S} n_i·P(Δ_i), P the projection off Known, and b the
	// base after the server's own best step along Known. A zero update,
	// or one along Known, only shortens a coalition's step: its marginal
	// is ≤ 0 always and exactly 0 while the best step is shorter than
	// the cap, as it is when the clients' steps overshoot.
	LineSearch bool `yaml:"line_search" json:"line_search"`
	// Known is what the server already knows before the round (the
	// previous global change), or nil; only with LineSearch.
	Known []float64 `yaml:"-" json:"-"`
	// Signal is the validation gradient at Base(), off Known, or nil;
	// only with LineSearch. With nothing known (a job's first round) an
	// update whose cosine with it lies inside the band a random direction
	// falls in (|cos| ≤ NoiseKappa/√p, p the model's parameters, when
	// that is at most NoiseBandMax) carries nothing the server could not
	// draw itself, and counts as zero (linesearch.go).
	Signal []float64 `yaml:"-" json:"-"`
}

// FederatedGame is one round's game: the players are the round's clients (or
// groups of clients) and
//
//	U(S) = score(base + Σ_{i∈S} n_i Δ_i / Σ_{i∈S} n_i),  U(∅) = score(base),
//
// the validation quality of the global model after a FedAvg step over S only.
//
// It is safe for concurrent Utility calls: each call borrows a worker (one
// ParamScorer from NewScorer and one parameter buffer), so after warm-up a call
// allocates nothing of its own. The game keeps base, updates and weights
// without copying (a model's updates can be large); the caller must not
// modify them while the game is in use.
type FederatedGame struct {
	base      []float64
	updates   [][]float64
	weights   []float64
	newScorer func() (ParamScorer, error)

	tokens chan struct{} // one per scorer that may exist
	mu     sync.Mutex
	idle   []*fedWorker

	line *lineGame // with FederatedOptions.LineSearch
}

type fedWorker struct {
	scorer ParamScorer
	buf    []float64
	dir    []float64 // the line search's direction
}

// NewFederatedGame validates its inputs and returns the game. newScorer is
// called lazily, at most MaxScorers times, once per worker; typically it
// returns a Clone of the model wrapped with the validation set. Errors name
// the player at fault and wrap ErrLength, ErrWeight, ErrInput or ErrPlayers.
func NewFederatedGame(base []float64, updates [][]float64, weights []float64, newScorer func() (ParamScorer, error), opts FederatedOptions) (*FederatedGame, error) {
	if newScorer == nil {
		return nil, fmt.Errorf("%w: newScorer is nil", ErrScorer)
	}
	if err := checkPlayers(len(updates)); err != nil {
		return nil, err
	}
	if err := checkUpdates(updates, weights, len(base)); err != nil {
		return nil, err
	}
	for k, x := range base {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%w: base[%d] = %v", ErrInput, k, x)
		}
	}
	if opts.MaxScorers < 0 {
		return nil, fmt.Errorf("%w: max_scorers %d is negative", ErrConfig, opts.MaxScorers)
	}
	if opts.Known != nil && (!opts.LineSearch || len(opts.Known) != len(base)) {
		return nil, fmt.Errorf("%w: known direction of %d values needs line_search and %d values", ErrLength, len(opts.Known), len(base))
	}
	for k, x := range opts.Known {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%w: known[%d] = %v", ErrInput, k, x)
		}
	}
	if opts.Signal != nil && (!opts.LineSearch || len(opts.Signal) != len(base)) {
		return nil, fmt.Errorf("%w: signal of %d values needs line_search and %d values", ErrLength, len(opts.Signal), len(base))
	}
	for k, x := range opts.Signal {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%w: signal[%d] = %v", ErrInput, k, x)
		}
	}
	m := opts.MaxScorers
	if m == 0 {
		m = runtime.GOMAXPROCS(0)
	}
	g := &FederatedGame{
		base:      base,
		updates:   updates,
		weights:   weights,
		newScorer: newScorer,
		tokens:    make(chan struct{}, m),
		idle:      make([]*fedWorker, 0, m),
	}
	if opts.LineSearch {
		w, err := g.borrow()
		if err != nil {
			return nil, err
		}
		g.line, err = newLineGame(base, updates, weights, opts.Known, opts.Signal, w.scorer.Score)
		g.giveBack(w)
		if err != nil {
			return nil, fmt.Errorf("%w: server step along the known direction: %w", ErrScorer, err)
		}
	}
	return g, nil
}

// Base is the point every coalition steps from: the round's model, or
// with a known direction the model after the server's own step along it.
func (g *FederatedGame) Base() []float64 {
	if g.line != nil {
		return g.line.base
	}
	return g.base
}

// Players returns the number of updates.
func (g *FederatedGame) Players() int { return len(g.updates) }

// Params writes base + Σ_S n_i Δ_i / Σ_S n_i into out (len(base)); the players
// are added in increasing order, so the bits do not depend on the caller.
func (g *FederatedGame) Params(s Coalition, out []float64) error {
	if s&^Grand(len(g.updates)) != 0 {
		return fmt.Errorf("%w: %v in a game of %d players", ErrCoalition, s, len(g.updates))
	}
	if len(out) != len(g.base) {
		return fmt.Errorf("%w: output has %d values, want %d", ErrLength, len(out), len(g.base))
	}
	copy(out, g.base)
	if s == 0 {
		return nil
	}
	total := 0.0
	for i, w := range g.weights {
		if s.Has(i) {
			total += w
		}
	}
	for i, u := range g.updates {
		if !s.Has(i) {
			continue
		}
		c := g.weights[i] / total
		for k, x := range u {
			out[k] += c * x
		}
	}
	return nil
}

// Utility scores the FedAvg model of coalition s.
func (g *FederatedGame) Utility(ctx context.Context, s Coalition) (float64, error) {
	select {
	case g.tokens <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-g.tokens }()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	w, err := g.borrow()
	if err != nil {
		return 0, err
	}
	defer g.giveBack(w)
	var v float64
	if g.line != nil {
		if s&^Grand(len(g.updates)) != 0 {
			return 0, fmt.Errorf("%w: %v in a game of %d players", ErrCoalition, s, len(g.updates))
		}
		if w.dir == nil {
			w.dir = make([]float64, len(g.base))
		}
		v, err = g.line.utility(s, w.scorer.Score, w.dir, w.buf)
	} else {
		if err := g.Params(s, w.buf); err != nil {
			return 0, err
		}
		v, err = w.scorer.Score(w.buf)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: coalition %v: %w", ErrScorer, s, err)
	}
	return v, nil
}

// borrow takes an idle worker or, holding a token, creates one: there are
// never more workers than tokens.
func (g *FederatedGame) borrow() (*fedWorker, error) {
	g.mu.Lock()
	if k := len(g.idle); k > 0 {
		w := g.idle[k-1]
		g.idle = g.idle[:k-1]
		g.mu.Unlock()
		return w, nil
	}
	g.mu.Unlock()
	sc, err := g.newScorer()
	if err != nil {
		return nil, fmt.Errorf("%w: new scorer: %w", ErrScorer, err)
	}
	return &fedWorker{scorer: sc, buf: make([]float64, len(g.base))}, nil
}

func (g *FederatedGame) giveBack(w *fedWorker) {
	g.mu.Lock()
	g.idle = append(g.idle, w)
	g.mu.Unlock()
}
