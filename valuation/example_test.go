package valuation_test

import (
	"context"
	"fmt"

	"github.com/tallyfl/tally/valuation"
)

// negDistance scores parameters by minus their squared distance to a target:
// a stand-in for "negative validation loss". A real scorer wraps a clone of
// the model and the validation set:
//
//	type modelScorer struct { m model.Model; val model.Examples }
//	func (s modelScorer) Score(p []float64) (float64, error) {
//		if err := s.m.SetParams(p); err != nil { return 0, err }
//		met, err := s.m.Evaluate(s.val)
//		return -met.Loss, err
//	}
//	newScorer := func() (valuation.ParamScorer, error) { return modelScorer{global.Clone(), val}, nil }
type negDistance struct{ target []float64 }

func (s negDistance) Score(p []float64) (float64, error) {
	d := 0.0
	for k := range p {
		d += (p[k] - s.target[k]) * (p[k] - s.target[k])
	}
	return -d, nil
}

func ExampleNewFederatedGame() {
	base := []float64{0, 0}
	updates := [][]float64{{1, 1}, {1, 1}, {-1, -1}} // two good clients, one sign-flipped
	weights := []float64{100, 100, 100}
	game, err := valuation.NewFederatedGame(base, updates, weights,
		func() (valuation.ParamScorer, error) { return negDistance{[]float64{1, 1}}, nil },
		valuation.FederatedOptions{})
	if err != nil {
		panic(err)
	}
	// One Evaluator per round lets several estimators share utilities.
	ev, _ := valuation.NewEvaluator(game, 0)
	for _, m := range []string{"exact-shapley", "loo", "tmc"} {
		est, _ := valuation.NewEstimator(m, valuation.Config{Seed: 1, Samples: 600})
		res, _ := est.Estimate(context.Background(), ev)
		fmt.Printf("%-13s %6.3f\n", m, res.Values)
	}
	// Output:
	// exact-shapley [ 2.037  2.037 -2.963]
	// loo           [ 1.111  1.111 -0.889]
	// tmc           [ 1.917  2.201 -3.007]
}
