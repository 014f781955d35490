package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/model"
	"github.com/tallyfl/tally/valuation"
)

// ModelValuer is the Valuer of a job: validation data, a model to clone per
// worker, and the job's valuation settings.
type ModelValuer struct {
	Job   engine.Job
	Model model.Model
	Data  model.Examples

	scaler *dataset.Scaler
	scaled model.Examples

	// games, if set, records every round's game (ServerConfig.ExportGames).
	games *gameRecorder
}

func (v *ModelValuer) data(s *dataset.Scaler) model.Examples {
	if s == nil {
		return v.Data
	}
	if s != v.scaler {
		v.scaler, v.scaled = s, s.Apply(v.Data)
	}
	return v.scaled
}

// scorer adapts a model clone to valuation.ParamScorer.
type scorer struct {
	m        model.Model
	data     model.Examples
	accuracy bool
}

func (s *scorer) Score(p []float64) (float64, error) {
	if err := s.m.SetParams(p); err != nil {
		return 0, err
	}
	met, err := s.m.Evaluate(s.data)
	if err != nil {
		return 0, err
	}
	if s.accuracy {
		return met.Accuracy, nil
	}
	return -met.Loss, nil
}

// parallelism is how many coalitions are evaluated at once: an external
// model batches concurrent evaluations into one request to its adapter
// (extmodel), so it asks for more than the cores; 0 (the cores) for a
// built-in model.
func parallelism(m model.Model) int {
	if p, ok := m.(interface{ Parallelism() int }); ok {
		return p.Parallelism()
	}
	return 0
}

// roundConfig derives the estimator's configuration for a round, its seed
// keyed by (job seed, round) so that the same seed gives the same scores.
func (v *ModelValuer) roundConfig(round int) valuation.Config {
	cfg := v.Job.Valuation.Estimator
	if cfg.Workers == 0 {
		cfg.Workers = parallelism(v.Model)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%d|valuation|%d", v.Job.Seed, round)
	cfg.Seed = binary.LittleEndian.Uint64(h.Sum(nil)[:8])
	return cfg
}

// Game implements Valuer.
func (v *ModelValuer) Game(round int, base, known []float64, updates [][]float64, weights []float64, sc *dataset.Scaler) (valuation.Result, error) {
	method := v.Job.Valuation.Method
	start := time.Now()
	switch method {
	case engine.MethodCGSV:
		vals, err := valuation.CosineToAggregate(updates, weights)
		return valuation.Result{Method: method, Values: vals, Wall: time.Since(start)}, err
	case engine.MethodInfluence:
		g, err := v.Gradient(base, known, sc)
		if err != nil {
			return valuation.Result{}, err
		}
		vals, err := valuation.Influence(g, updates, weights)
		return valuation.Result{Method: method, Values: vals, Wall: time.Since(start)}, err
	}
	data := v.data(sc)
	acc := v.Job.Valuation.Utility == "accuracy"
	opts := valuation.FederatedOptions{MaxScorers: parallelism(v.Model)}
	if v.lineSearch() {
		opts.LineSearch, opts.Known = true, known
		if known == nil {
			// The validation gradient at base: with nothing known, an
			// update inside the random-direction band around it counts as
			// zero (valuation.FederatedOptions.Signal). With a known
			// direction the game does not use it, so it is not computed.
			signal, err := v.Gradient(base, nil, sc)
			if err != nil {
				return valuation.Result{}, err
			}
			opts.Signal = signal
		}
	}
	game, err := valuation.NewFederatedGame(base, updates, weights, func() (valuation.ParamScorer, error) {
		return &scorer{m: v.Model.Clone(), data: data, accuracy: acc}, nil
	}, opts)
	if err != nil {
		return valuation.Result{}, err
	}
	return v.estimate(round, game)
}

func (v *ModelValuer) estimate(round int, game valuation.Game) (valuation.Result, error) {
	method := v.Job.Valuation.Method
	if game.Players() > valuation.MaxExactPlayers && (method == "exact-shapley" || method == "exact-banzhaf") {
		// A groups round or a job above the bound: fall back to sampling
		// rather than fail the round.
		method = "monte-carlo"
	}
	est, err := valuation.NewEstimator(method, v.roundConfig(round))
	if err != nil {
		return valuation.Result{}, err
	}
	return est.Estimate(context.Background(), v.games.wrap(round, game))
}

// lineSearch reports whether coalitions are valued after their best step.
func (v *ModelValuer) lineSearch() bool { return v.Job.Valuation.Step != engine.StepFedAvg }

// score scores parameters on the (scaled) validation data with the job's
// utility, for the line searches outside a game.
func (v *ModelValuer) score(sc *dataset.Scaler) func([]float64) (float64, error) {
	s := &scorer{m: v.Model.Clone(), data: v.data(sc), accuracy: v.Job.Valuation.Utility == "accuracy"}
	return s.Score
}

// Surrogate implements Valuer: the first-order surrogate game on the
// scalars against Gradient's public vector. total is not used yet: a
// second-order game from one scalar per client, its curvature measured
// along the decrypted total, was tried and gave honest values ten times
// the realised gain of their rounds, because a coalition's step length,
// which its curvature grows with, is not known from those scalars.
func (v *ModelValuer) Surrogate(round int, base, known, total, a, weights []float64, sc *dataset.Scaler) (valuation.Result, error) {
	if v.Job.Valuation.Method == engine.MethodInfluence {
		var total float64
		for _, w := range weights {
			total += w
		}
		vals := make([]float64, len(a))
		for i := range a {
			vals[i] = -a[i] / total
		}
		return valuation.Result{Method: engine.MethodInfluence, Values: vals}, nil
	}
	game, err := valuation.NewSurrogateGame(a, weights)
	if err != nil {
		return valuation.Result{}, err
	}
	return v.estimate(round, game)
}

// Gradient implements Valuer: with the line-search step, the gradient at
// the server's own step along known, off known (what an update adds
// beyond the previous change; an echo of it gets a_i = 0).
func (v *ModelValuer) Gradient(base, known []float64, sc *dataset.Scaler) ([]float64, error) {
	at := base
	if v.lineSearch() {
		var err error
		if at, err = valuation.KnownStep(base, known, v.score(sc)); err != nil {
			return nil, err
		}
	}
	m := v.Model
	if err := m.SetParams(at); err != nil {
		return nil, err
	}
	g := make([]float64, m.NumParams())
	if err := m.Gradient(v.data(sc), g); err != nil {
		return nil, err
	}
	if v.lineSearch() {
		g = valuation.ProjectOff(g, known)
	}
	return g, nil
}

// ProjectionVectors implements engine.ProjectionValuer: the public vectors
// from the server's own step along known (engine.ModelProjectionVectors),
// gradients over the whole validation set or its per-class parts.
func (v *ModelValuer) ProjectionVectors(base, known, total []float64, sc *dataset.Scaler) ([][]float64, []float64, error) {
	at := base
	if v.lineSearch() {
		var err error
		if at, err = valuation.KnownStep(base, known, v.score(sc)); err != nil {
			return nil, nil, err
		}
	} else {
		known = nil
	}
	vs, err := engine.ModelProjectionVectors(v.Model.Clone(), v.data(sc), v.Job.Data.Classes, at, total, known)
	return vs, at, err
}

// Projection implements engine.ProjectionValuer: the projection game from
// at, estimated with the job's method.
func (v *ModelValuer) Projection(round int, at []float64, vectors, scalars [][]float64, weights []float64, sc *dataset.Scaler) (valuation.Result, error) {
	data := v.data(sc)
	acc := v.Job.Valuation.Utility == "accuracy"
	game, err := valuation.NewProjectionGame(valuation.Gram(vectors), scalars, weights, func() (valuation.SpanScorer, error) {
		return valuation.NewSpanScorer(at, vectors, &scorer{m: v.Model.Clone(), data: data, accuracy: acc}), nil
	}, valuation.FederatedOptions{MaxScorers: parallelism(v.Model)})
	if err != nil {
		return valuation.Result{}, err
	}
	return v.estimate(round, game)
}
