package experiments

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
	"github.com/tallyfl/tally/valuation"
)

// federation is a scenario's data for one seed, ready to train on.
type federation struct {
	clients     []model.Examples
	corruptions []dataset.Corruption
	val, test   model.Examples
	weights     []float64 // n_i = rows of client i
	features    int
	classes     int
	// sybils lists the clients that hold the split client's data (empty
	// unless this is the Sybil run).
	sybils []int
}

// rng derives a generator from (seed, purpose, indices), so each use of
// randomness is independent of the others and of the order of use.
func rng(seed uint64, purpose string, idx ...int) *rand.Rand {
	h := sha256.New()
	fmt.Fprintf(h, "%d|%s", seed, purpose)
	for _, i := range idx {
		fmt.Fprintf(h, "|%d", i)
	}
	s := h.Sum(nil)
	return rand.New(rand.NewPCG(binary.LittleEndian.Uint64(s[:8]), binary.LittleEndian.Uint64(s[8:16])))
}

// newFederation loads the scenario's dataset, standardises it as a whole (so
// feature noise σ is in standard deviations of each feature, whatever its
// raw units), deals it to clients and applies the corruptions. With sybil
// set, client Sybil.Client's shard is then split into Sybil.Parts clients:
// the first keeps its index, the others are appended.
func newFederation(sc Scenario, seed uint64, sybil bool) (*federation, error) {
	ds, err := dataset.Embedded(sc.Dataset)
	if err != nil {
		return nil, err
	}
	if sc.MaxRows > 0 && sc.MaxRows < ds.Examples.Len() {
		// A stratified subsample: Split's "train" part with the rest as
		// "validation", keyed by a constant so every seed sees the same rows.
		keep, _, _, err := dataset.Split(ds.Examples, 1-float64(sc.MaxRows)/float64(ds.Examples.Len()), 0, 0x5ab5)
		if err != nil {
			return nil, err
		}
		ds.Examples = keep
	}
	ds.Examples = dataset.ComputeMoments(ds.Examples).Scaler().Apply(ds.Examples)
	fed, err := dataset.Federate(ds, dataset.FederationSpec{
		Clients: sc.Clients, Partition: sc.Partition,
		ValFrac: sc.ValFrac, TestFrac: sc.TestFrac, Seed: seed,
		Corruptions: sc.Corruptions,
	})
	if err != nil {
		return nil, err
	}
	f := &federation{
		clients: fed.Clients, corruptions: fed.Corruptions,
		val: fed.Validation, test: fed.Test,
		features: ds.Examples.Features, classes: fed.Classes,
	}
	if sybil && sc.Sybil != nil {
		c, parts := sc.Sybil.Client, sc.Sybil.Parts
		data := f.clients[c]
		if data.Len() < parts {
			return nil, fmt.Errorf("%w: sybil client %d has %d rows, fewer than %d parts", ErrScenario, c, data.Len(), parts)
		}
		perm := rng(seed, "sybil").Perm(data.Len())
		f.sybils = []int{c}
		for p := range parts {
			var idx []int
			for k := p; k < len(perm); k += parts {
				idx = append(idx, perm[k])
			}
			slices.Sort(idx)
			if p == 0 {
				f.clients[c] = data.Subset(idx)
				continue
			}
			f.sybils = append(f.sybils, len(f.clients))
			f.clients = append(f.clients, data.Subset(idx))
			f.corruptions = append(f.corruptions, dataset.Corruption{})
		}
	}
	for _, c := range f.clients {
		f.weights = append(f.weights, float64(c.Len()))
	}
	return f, nil
}

// roundTrace is one FedAvg round as the coordinator saw it: the global model
// it started from and every client's update.
type roundTrace struct {
	base    []float64
	updates [][]float64
}

// trace is a whole FedAvg run, recorded once and then valued by every
// method and mode.
type trace struct {
	fed    *federation
	rounds []roundTrace
	// proto is a model of the scenario's spec, cloned into scorers.
	proto model.Model
	// test holds the final global model's metrics on the test set.
	test model.Metrics
}

// runFedAvg trains sc for its rounds from seed: every honest client trains
// the global model on its shard (model.Train, its own seeded stream), free
// riders fabricate their update (random ones with the mean norm of the
// round's trained updates, echoes the last global change), and the global
// model takes the weighted FedAvg of all updates.
func runFedAvg(sc Scenario, seed uint64, fed *federation) (*trace, error) {
	global, err := model.New(sc.Model, fed.features, fed.classes, seed)
	if err != nil {
		return nil, err
	}
	trainer := global.Clone()
	t := &trace{fed: fed, proto: global.Clone()}
	total := 0.0
	for _, w := range fed.weights {
		total += w
	}
	var lastDelta []float64
	for r := range sc.Rounds {
		base := global.Params()
		updates := make([][]float64, len(fed.clients))
		normSum, trained := 0.0, 0
		for i, data := range fed.clients {
			if fed.corruptions[i].IsFreeRider() {
				continue
			}
			if err := trainer.SetParams(base); err != nil {
				return nil, err
			}
			// A duplicate trains on its original's rows with its original's
			// shuffles, so its update is bit-identical: the exact replication
			// of Ohrimenko et al. (2019), where Shapley's symmetry axiom says
			// the two must be paid the same. With RetrainCopies it shuffles
			// on its own stream, as a separate process would.
			stream := i
			if c := fed.corruptions[i]; c.Kind == dataset.CorruptDuplicate && !sc.RetrainCopies {
				stream = c.Of
			}
			if _, err := trainer.Train(data, sc.Train, rng(seed, "train", r, stream)); err != nil {
				return nil, fmt.Errorf("round %d client %d: %w", r, i, err)
			}
			u := trainer.Params()
			sq := 0.0
			for k := range u {
				u[k] -= base[k]
				sq += u[k] * u[k]
			}
			updates[i] = u
			normSum += math.Sqrt(sq)
			trained++
		}
		for i, c := range fed.corruptions {
			if c.IsFreeRider() {
				updates[i] = dataset.FreeRiderUpdate(c, normSum/float64(max(trained, 1)), lastDelta, len(base), rng(seed, "free-rider", r, i))
			}
		}
		next := slices.Clone(base)
		for i, u := range updates {
			for k := range next {
				next[k] += fed.weights[i] * u[k] / total
			}
		}
		lastDelta = make([]float64, len(base))
		for k := range next {
			lastDelta[k] = next[k] - base[k]
		}
		if err := global.SetParams(next); err != nil {
			return nil, err
		}
		t.rounds = append(t.rounds, roundTrace{base: base, updates: updates})
	}
	if t.test, err = global.Evaluate(fed.test); err != nil {
		return nil, err
	}
	return t, nil
}

// modelScorer scores parameters on the validation set with one model clone.
type modelScorer struct {
	m        model.Model
	val      model.Examples
	accuracy bool
}

func (s *modelScorer) Score(p []float64) (float64, error) {
	if err := s.m.SetParams(p); err != nil {
		return 0, err
	}
	met, err := s.m.Evaluate(s.val)
	if err != nil {
		return 0, err
	}
	if s.accuracy {
		return met.Accuracy, nil
	}
	return -met.Loss, nil
}

// scorerPool keeps model clones across games: a clone builds its gorgonia
// graphs on first use, which costs more than hundreds of evaluations of a
// small model, so each round's games borrow warm clones instead.
type scorerPool struct {
	mu    sync.Mutex
	free  []*modelScorer
	proto model.Model
	val   model.Examples
	acc   bool
}

// lease hands out scorers for one game and returns them all on release.
type lease struct {
	pool *scorerPool
	mu   sync.Mutex
	out  []*modelScorer
}

func (p *scorerPool) lease() *lease { return &lease{pool: p} }

func (l *lease) newScorer() (valuation.ParamScorer, error) {
	p := l.pool
	p.mu.Lock()
	var s *modelScorer
	if n := len(p.free); n > 0 {
		s, p.free = p.free[n-1], p.free[:n-1]
	} else {
		s = &modelScorer{m: p.proto.Clone(), val: p.val, accuracy: p.acc}
	}
	p.mu.Unlock()
	l.mu.Lock()
	l.out = append(l.out, s)
	l.mu.Unlock()
	return s, nil
}

// release returns the scorers; the game they served must not be used again.
func (l *lease) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pool.mu.Lock()
	l.pool.free = append(l.pool.free, l.out...)
	l.pool.mu.Unlock()
	l.out = nil
}
