package valuation_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
	"github.com/tallyfl/tally/valuation"
)

// This file runs the valuation on a real model: plain FedAvg in process (no
// network), gorgonia models from model/, embedded data from dataset/. It is
// an external test package so that valuation itself stays free of both.

// modelScorer is the ParamScorer of the federated game on a real model: a
// clone of the global model and the validation set. Utility "loss" scores
// −mean cross-entropy, "accuracy" the fraction of rows classified right.
type modelScorer struct {
	m       model.Model
	val     model.Examples
	utility string
}

func (s *modelScorer) Score(p []float64) (float64, error) {
	if err := s.m.SetParams(p); err != nil {
		return 0, err
	}
	met, err := s.m.Evaluate(s.val)
	if err != nil {
		return 0, err
	}
	if s.utility == "accuracy" {
		return met.Accuracy, nil
	}
	return -met.Loss, nil
}

// fedScenario is an in-process FedAvg simulation: a dataset dealt to
// clients by dataset.Federate, a model spec and the local training
// hyper-parameters every honest client uses.
type fedScenario struct {
	dataset string
	spec    model.Spec
	fed     dataset.FederationSpec
	train   model.TrainConfig
}

// fedSim is the state of a simulation between rounds.
type fedSim struct {
	seed        uint64
	global      model.Model
	clients     []model.Examples
	corruptions []dataset.Corruption
	val         model.Examples
	weights     []float64 // n_i = rows of client i
}

// Stream purposes, so that training, free riders and estimators draw from
// independent PCG streams of the same seed.
const (
	streamTrain     = 0x747261696e // "train"
	streamFreeRider = 0x66726565   // "free"
)

// newFedSim deals the data, standardises every client's rows and the
// validation set with the scaler of the pooled client moments (what the
// coordinator learns from an aggregate of per-client Moments), and builds the
// initial global model from the seed.
func newFedSim(tb testing.TB, sc fedScenario) *fedSim {
	tb.Helper()
	ds, err := dataset.Embedded(sc.dataset)
	if err != nil {
		tb.Fatal(err)
	}
	fed, err := dataset.Federate(ds, sc.fed)
	if err != nil {
		tb.Fatal(err)
	}
	var mom dataset.Moments
	for _, c := range fed.Clients {
		if err := mom.Add(dataset.ComputeMoments(c)); err != nil {
			tb.Fatal(err)
		}
	}
	scaler := mom.Scaler()
	s := &fedSim{seed: sc.fed.Seed, corruptions: fed.Corruptions, val: scaler.Apply(fed.Validation)}
	for _, c := range fed.Clients {
		s.clients = append(s.clients, scaler.Apply(c))
		s.weights = append(s.weights, float64(c.Len()))
	}
	if s.global, err = model.New(sc.spec, ds.Examples.Features, fed.Classes, sc.fed.Seed); err != nil {
		tb.Fatal(err)
	}
	return s
}

// round runs local training for round r and returns the global parameters
// it started from and every client's update Δ_i = local − global. Honest and
// label-flipping clients train a clone of the global model with their own
// seeded stream; a free rider fabricates its update with
// dataset.FreeRiderUpdate, its norm matched to the mean norm of this round's
// trained updates. The global model is not changed; see step.
func (s *fedSim) round(tb testing.TB, r int, cfg model.TrainConfig) (base []float64, updates [][]float64) {
	tb.Helper()
	base = s.global.Params()
	updates = make([][]float64, len(s.clients))
	normSum, trained := 0.0, 0
	for i, data := range s.clients {
		if s.corruptions[i].IsFreeRider() {
			continue
		}
		local := s.global.Clone()
		rng := rand.New(rand.NewPCG(s.seed, streamTrain+uint64(r)<<16+uint64(i)))
		if _, err := local.Train(data, cfg, rng); err != nil {
			tb.Fatalf("round %d client %d: %v", r, i, err)
		}
		u := local.Params()
		sq := 0.0
		for k := range u {
			u[k] -= base[k]
			sq += u[k] * u[k]
		}
		updates[i] = u
		normSum += math.Sqrt(sq)
		trained++
	}
	for i, c := range s.corruptions {
		if c.IsFreeRider() {
			rng := rand.New(rand.NewPCG(s.seed, streamFreeRider+uint64(r)<<16+uint64(i)))
			updates[i] = dataset.FreeRiderUpdate(c, normSum/float64(max(trained, 1)), nil, len(base), rng)
		}
	}
	return base, updates
}

// step applies plain FedAvg of every update to the global model:
// w ← w + Σ n_i Δ_i / Σ n_i.
func (s *fedSim) step(tb testing.TB, base []float64, updates [][]float64) {
	tb.Helper()
	total := 0.0
	for _, n := range s.weights {
		total += n
	}
	next := slices.Clone(base)
	for i, u := range updates {
		for k := range next {
			next[k] += s.weights[i] * u[k] / total
		}
	}
	if err := s.global.SetParams(next); err != nil {
		tb.Fatal(err)
	}
}

// game is the federated game of one round on the validation set.
func (s *fedSim) game(tb testing.TB, base []float64, updates [][]float64, utility string) *valuation.FederatedGame {
	tb.Helper()
	g, err := valuation.NewFederatedGame(base, updates, s.weights, func() (valuation.ParamScorer, error) {
		return &modelScorer{m: s.global.Clone(), val: s.val, utility: utility}, nil
	}, valuation.FederatedOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// breastCancer is the acceptance scenario of issue 4: breast-cancer, 8
// clients iid, validation and test 20% each, client 6 with half its labels
// flipped, client 7 a free rider sending a random update of an honest norm.
func breastCancer(seed uint64) fedScenario {
	return fedScenario{
		dataset: "breast-cancer",
		spec:    model.Spec{Kind: model.KindLogReg},
		fed: dataset.FederationSpec{
			Clients:   8,
			Partition: dataset.PartitionSpec{Kind: dataset.PartitionIID},
			ValFrac:   0.2, TestFrac: 0.2,
			Seed: seed,
			Corruptions: map[int]dataset.Corruption{
				6: {Kind: dataset.CorruptLabelFlip, Rate: 0.5},
				7: {Kind: dataset.CorruptFreeRider, Mode: dataset.FreeRiderRandom},
			},
		},
		// Two epochs of mini-batches of 16 on ~43 rows: six SGD steps per
		// round; ten rounds reach 92–99% validation accuracy over seeds
		// 1–20, the label flipper notwithstanding.
		train: model.TrainConfig{Epochs: 2, BatchSize: 16, LearningRate: 0.1, Momentum: 0.9},
	}
}

// methodConfig is one estimator and its settings.
type methodConfig struct {
	name string
	cfg  valuation.Config
}

// realMethods are the coalition methods the acceptance test asks for, all at
// their defaults: TMC and GTG draw DefaultSamples (200) permutations with a
// truncation tolerance of 1% of the round's gain. With one Evaluator per
// round shared by the four methods, no round computes more than its 256
// coalitions. At n = 8, 200 permutations touch about 243 of the 256
// coalitions a round, so here TMC and GTG cost nearly what exact Shapley
// does; capped at a budget of 128 evaluations a round they rank clients 6
// and 7 last on only 13/20 (TMC) and 12/20 (GTG) seeds, at 192 on 17/20 and
// 16/20: the free rider's value sits close to the honest clients', and
// Monte Carlo noise at those budgets is larger than the gap.
//
// Measured over seeds 1–20 (utility −loss, 10 rounds), the share of seeds on
// which a method ranks clients 6 and 7 lowest: exact Shapley 20/20, TMC
// 20/20, GTG 19/20, LOO 14/20. With 64 permutations TMC fell to 16/20 and
// GTG to 17/20 whether truncation was 1% or 1e-9 of the gain, so their
// misses are Monte Carlo variance, not truncation bias; at 1,000
// permutations both are 20/20. LOO's misses are its documented failure
// (doc.go): with iid shards the honest clients are nearly interchangeable,
// so removing any one of them changes the aggregate about as little as
// removing the free rider (whose random update is mostly orthogonal to the
// loss gradient); the label flipper is still lowest on every seed.
func realMethods() []methodConfig {
	return []methodConfig{
		{valuation.MethodExactShapley, valuation.Config{}},
		{valuation.MethodLOO, valuation.Config{}},
		{valuation.MethodTMC, valuation.Config{}},
		{valuation.MethodGTG, valuation.Config{}},
	}
}

// fedRun is what valuePipeline returns: per method, the accumulated totals
// in client order, and the final model's validation metrics.
type fedRun struct {
	totals map[string][]float64
	evals  map[string]int // distinct coalitions used, summed over rounds
	final  model.Metrics
}

// valuePipeline runs `rounds` rounds of FedAvg on sc and values each round's
// game with every method of realMethods, summing per-round values (FedSV).
func valuePipeline(tb testing.TB, sc fedScenario, rounds int, utility string, methods []methodConfig) fedRun {
	tb.Helper()
	sim := newFedSim(tb, sc)
	n := len(sim.clients)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("client-%d", i)
	}
	accs := map[string]*valuation.Accumulator{}
	for _, m := range methods {
		a, err := valuation.NewAccumulator(1)
		if err != nil {
			tb.Fatal(err)
		}
		accs[m.name] = a
	}
	evals := map[string]int{}
	ctx := context.Background()
	for r := range rounds {
		base, updates := sim.round(tb, r, sc.train)
		ev, err := valuation.NewEvaluator(sim.game(tb, base, updates, utility), 0)
		if err != nil {
			tb.Fatal(err)
		}
		for _, m := range methods {
			cfg := m.cfg
			// Each round gets its own estimator stream.
			cfg.Seed = sc.fed.Seed<<8 + uint64(r)
			est, err := valuation.NewEstimator(m.name, cfg)
			if err != nil {
				tb.Fatal(err)
			}
			res, err := est.Estimate(ctx, ev)
			if err != nil {
				tb.Fatalf("round %d %s: %v", r, m.name, err)
			}
			evals[m.name] += res.Evaluations
			if err := accs[m.name].AddRound(ids, res.Values, res.StdErr); err != nil {
				tb.Fatal(err)
			}
		}
		sim.step(tb, base, updates)
	}
	run := fedRun{totals: map[string][]float64{}, evals: evals}
	for name, a := range accs {
		v := make([]float64, n)
		for i, id := range ids {
			t, _ := a.Get(id)
			v[i] = t.Value
		}
		run.totals[name] = v
	}
	var err error
	if run.final, err = sim.global.Evaluate(sim.val); err != nil {
		tb.Fatal(err)
	}
	return run
}

// lowestTwo returns the indices of the two smallest values, in increasing
// order of index.
func lowestTwo(v []float64) []int {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case v[a] < v[b]:
			return -1
		case v[a] > v[b]:
			return 1
		}
		return 0
	})
	low := slices.Clone(idx[:2])
	slices.Sort(low)
	return low
}

// TestRealModelCorruptedClientsRankLast is issue 4's acceptance test: on
// breast-cancer with 8 clients, after 10 rounds of plain FedAvg, exact
// Shapley, leave-one-out, TMC and GTG-Shapley each give the label flipper
// (client 6) and the random free rider (client 7) the two lowest summed
// values, with the utility −validation loss.
func TestRealModelCorruptedClientsRankLast(t *testing.T) {
	const seed, rounds = 1, 10
	run := valuePipeline(t, breastCancer(seed), rounds, "loss", realMethods())
	t.Logf("final global model: validation loss %.4f, accuracy %.4f", run.final.Loss, run.final.Accuracy)
	if run.final.Accuracy < 0.9 {
		t.Errorf("FedAvg reached validation accuracy %.3f, want ≥ 0.9: the scenario is not learning", run.final.Accuracy)
	}
	for _, m := range realMethods() {
		v := run.totals[m.name]
		t.Logf("%-13s %8.4f  (%d evaluations over %d rounds)", m.name, v, run.evals[m.name], rounds)
		if low := lowestTwo(v); !slices.Equal(low, []int{6, 7}) {
			t.Errorf("%s: lowest two are clients %v, want [6 7] (values %.4g)", m.name, low, v)
		}
	}
}

// TestRealModelAcrossSeeds repeats the acceptance scenario on seeds 1–20
// (each a different split, partition, initialisation, training order and
// free-rider direction). Exact Shapley and TMC must rank clients 6 and 7
// lowest on every seed, and every method must put the label flipper below
// every honest client; GTG's and LOO's rate of ranking both last is logged
// (see realMethods for why they miss on a few seeds).
func TestRealModelAcrossSeeds(t *testing.T) {
	const seeds, rounds = 20, 10
	bothLast := map[string]int{}
	for seed := uint64(1); seed <= seeds; seed++ {
		run := valuePipeline(t, breastCancer(seed), rounds, "loss", realMethods())
		for _, m := range realMethods() {
			v := run.totals[m.name]
			if slices.Equal(lowestTwo(v), []int{6, 7}) {
				bothLast[m.name]++
			} else if m.name == valuation.MethodExactShapley || m.name == valuation.MethodTMC {
				t.Errorf("seed %d %s: lowest two are %v, want [6 7] (values %.4g)", seed, m.name, lowestTwo(v), v)
			}
			if slices.Min(v) != v[6] {
				t.Errorf("seed %d %s: label flipper (client 6) is not lowest (values %.4g)", seed, m.name, v)
			}
		}
	}
	for _, m := range realMethods() {
		t.Logf("%-13s ranks clients 6 and 7 last on %d of %d seeds", m.name, bothLast[m.name], seeds)
	}
}

// TestRealModelDeterministic runs the whole pipeline (federation, scaling,
// training, free-rider updates, estimators, accumulation) twice with the
// same seed and wants the same bits.
func TestRealModelDeterministic(t *testing.T) {
	const seed, rounds = 1, 10
	a := valuePipeline(t, breastCancer(seed), rounds, "loss", realMethods())
	b := valuePipeline(t, breastCancer(seed), rounds, "loss", realMethods())
	for _, m := range realMethods() {
		va, vb := a.totals[m.name], b.totals[m.name]
		for i := range va {
			if math.Float64bits(va[i]) != math.Float64bits(vb[i]) {
				t.Errorf("%s client %d: %v then %v", m.name, i, va[i], vb[i])
			}
		}
	}
	if a.final != b.final {
		t.Errorf("final metrics differ: %+v then %+v", a.final, b.final)
	}
}

// demoTotals runs the demo scenario (breastCancer) for rounds rounds and
// returns exact Shapley's FedSV totals per client under the FedAvg-step
// utility and under the line-search utility (valued beyond the previous
// global change, as the coordinator values by default).
func demoTotals(tb testing.TB, seed uint64, rounds int) (fedavg, line []float64) {
	tb.Helper()
	sc := breastCancer(seed)
	sim := newFedSim(tb, sc)
	n := len(sim.clients)
	fedavg, line = make([]float64, n), make([]float64, n)
	var known []float64
	ctx := context.Background()
	for r := range rounds {
		base, updates := sim.round(tb, r, sc.train)
		newScorer := func() (valuation.ParamScorer, error) {
			return &modelScorer{m: sim.global.Clone(), val: sim.val, utility: "loss"}, nil
		}
		for k, opts := range []valuation.FederatedOptions{{}, {LineSearch: true, Known: known}} {
			g, err := valuation.NewFederatedGame(base, updates, sim.weights, newScorer, opts)
			if err != nil {
				tb.Fatal(err)
			}
			est, _ := valuation.NewEstimator(valuation.MethodExactShapley, valuation.Config{})
			res, err := est.Estimate(ctx, g)
			if err != nil {
				tb.Fatal(err)
			}
			for i, v := range res.Values {
				[][]float64{fedavg, line}[k][i] += v
			}
		}
		sim.step(tb, base, updates)
		next := sim.global.Params()
		known = make([]float64, len(next))
		for k := range next {
			known[k] = next[k] - base[k]
		}
	}
	return fedavg, line
}

// TestRealModelLineSearchRandomFreeRider: under local momentum exact
// Shapley on the FedAvg step pays the demo's random free rider (client 7)
// a positive total on every seed (issue 15: +0.48 to +0.85 in 20 rounds),
// because diluting the overshooting step helps. With the line search it is
// paid at most 0, and the two corrupted clients still rank last.
func TestRealModelLineSearchRandomFreeRider(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		fedavg, line := demoTotals(t, seed, 20)
		t.Logf("seed %d: client 7 (random free rider) total %+.4f with the FedAvg step, %+.4f with the line search; client 6 (label flip) %+.4f, %+.4f",
			seed, fedavg[7], line[7], fedavg[6], line[6])
		v := line
		if !(v[7] <= 0) {
			t.Errorf("seed %d: the random free rider's total is %+.4f, want ≤ 0", seed, v[7])
		}
		if low := lowestTwo(v); !(low[0] == 6 && low[1] == 7 || low[0] == 7 && low[1] == 6) {
			t.Errorf("seed %d: lowest two are %v, want clients 6 and 7 (totals %v)", seed, low, v)
		}
	}
}
