package experiments

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/valuation"
)

// Valued is one (mode, method) valuation of a whole FedAvg run: the
// per-round values of every client, their FedSV totals and what they cost.
type Valued struct {
	Mode   string
	Method string
	// Rounds[r][i] is client i's value in round r; StdErr likewise (0 for
	// exact and vector methods).
	Rounds [][]float64
	StdErr [][]float64
	// Totals[i] is Σ_r Rounds[r][i] (FedSV, no decay).
	Totals []float64
	// Unmerged[i] is Totals[i] before copies found over the whole job are
	// valued as one (plain mode, valuation.JobReplicaValues): the FedSV of
	// the rounds' games as played; nil when nothing was merged.
	Unmerged []float64
	// Weights[i] is client i's rows n_i, its FedAvg weight, which also
	// splits the payout's baseline (JobPay); nil means equal.
	Weights []float64
	// Evaluations is the number of distinct coalition utilities the method
	// used, summed over rounds (0 for vector methods).
	Evaluations int
	// Wall is the method's wall time summed over rounds (for influence it
	// includes the validation gradient).
	Wall time.Duration
	Cost
	// Err is why the method could not run (then the values are NaN).
	Err string
}

// Cost is what a privacy mode reveals, summed over rounds: how many vectors
// and scalars would be decrypted under secure aggregation, and the fewest
// clients behind any decrypted vector. It depends on the mode only; the
// method runs on whatever the mode reveals.
type Cost struct {
	// VectorDecryptions counts decrypted model-sized vectors: in plain mode
	// every client's update (as with secure_aggregation none, one
	// contributor each), in groups mode one aggregate per group, in
	// influence mode the round's aggregate.
	VectorDecryptions int
	// ScalarDecryptions counts decrypted single numbers: the influence
	// mode's a_i, one per client and round, each from one client.
	ScalarDecryptions int
	// MinContributors is the fewest clients summed in any decrypted vector.
	MinContributors int
	// The homomorphic work a secure-aggregation job would do, counted by
	// heRound's rule (doc.go), 0 in plain mode: ciphertext additions,
	// plaintext×ciphertext multiplications, decryption shares the committee
	// members compute, and combinations of shares into a plaintext.
	HEAdds, HEMults        int
	DecShares, DecCombines int
}

// roundGame is one round's game in one mode, and what the vector methods
// need.
type roundGame struct {
	mode    string
	game    valuation.Game
	players int
	// groups[g] lists the clients of player g in groups mode, or of a
	// cluster of copies valued as one (valuation.UpdateReplicas in plain,
	// ScalarReplicas in influence mode); nil when every client is a player.
	groups [][]int
	// updates and weights are the players' (for groups: the groups') updates
	// and weights; a the influence coefficients (influence mode).
	updates [][]float64
	weights []float64
	a       []float64
	grad    []float64
	// scalars is the projection mode's public vectors, so scalars per
	// client and round.
	scalars int
	// gradWall is the time the validation gradient took.
	gradWall time.Duration
	cost     Cost
	rec      *recorder
	release  func()
}

// recorder is a Game that remembers the utility of every coalition asked
// of it, for --export-games.
type recorder struct {
	g    valuation.Game
	mu   sync.Mutex
	seen map[valuation.Coalition]float64
}

func (r *recorder) Players() int { return r.g.Players() }

func (r *recorder) Utility(ctx context.Context, s valuation.Coalition) (float64, error) {
	u, err := r.g.Utility(ctx, s)
	if err == nil {
		r.mu.Lock()
		r.seen[s] = u
		r.mu.Unlock()
	}
	return u, err
}

// coalitions returns what was recorded, sorted by bitmask.
func (r *recorder) coalitions() ([]valuation.Coalition, []float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs := make([]valuation.Coalition, 0, len(r.seen))
	for c := range r.seen {
		cs = append(cs, c)
	}
	slices.Sort(cs)
	us := make([]float64, len(cs))
	for k, c := range cs {
		us[k] = r.seen[c]
	}
	return cs, us
}

// partitionGroups splits clients 0…n−1 into a seeded random partition of
// ⌊n/k⌋ groups of at least k (the remainder dealt one each), redrawn every
// round, as the coordinator's groups mode does.
func partitionGroups(n, k int, seed uint64, round int) [][]int {
	p := rng(seed, "groups", round).Perm(n)
	g := max(1, n/k)
	groups := make([][]int, g)
	for i, c := range p {
		groups[i%g] = append(groups[i%g], c)
	}
	for _, m := range groups {
		slices.Sort(m)
	}
	sort.Slice(groups, func(a, b int) bool { return groups[a][0] < groups[b][0] })
	return groups
}

// buildGame makes round r's game in mode. record wraps it in a recorder.
// blocks is B, the ciphertexts per update (ciphertextBlocks).
func buildGame(sc Scenario, seed uint64, t *trace, pool *scorerPool, mode string, r, blocks int, record bool) (*roundGame, error) {
	rt := t.rounds[r]
	w := t.fed.weights
	n := len(w)
	rg := &roundGame{mode: mode, release: func() {}}
	// What the server knows before round r, the previous global change, as
	// the coordinator keeps it (engine.Engine.known): a coalition is valued
	// after the server's own best step along it, with it projected off.
	var known []float64
	if r > 0 {
		prev := t.rounds[r-1].base
		known = make([]float64, len(rt.base))
		for k := range known {
			known[k] = rt.base[k] - prev[k]
		}
	}
	gradient := func() error {
		start := time.Now()
		l := pool.lease()
		sc, err := l.newScorer()
		if err != nil {
			l.release()
			return err
		}
		at, err := valuation.KnownStep(rt.base, known, sc.Score)
		l.release()
		if err != nil {
			return err
		}
		m := t.proto.Clone()
		if err := m.SetParams(at); err != nil {
			return err
		}
		rg.grad = make([]float64, m.NumParams())
		if err := m.Gradient(t.fed.val, rg.grad); err != nil {
			return err
		}
		rg.grad = valuation.ProjectOff(rg.grad, known)
		rg.gradWall = time.Since(start)
		return nil
	}
	switch mode {
	case ModePlain, ModeGroups:
		rg.updates, rg.weights = rt.updates, w
		rg.cost = Cost{VectorDecryptions: n, MinContributors: 1}
		if mode == ModeGroups {
			rg.groups = partitionGroups(n, sc.GroupSize, seed, r)
			rg.updates, rg.weights = make([][]float64, len(rg.groups)), make([]float64, len(rg.groups))
			rg.cost = Cost{VectorDecryptions: len(rg.groups), MinContributors: n}
			for g, members := range rg.groups {
				agg := make([]float64, len(rt.base))
				for _, i := range members {
					rg.weights[g] += w[i]
					for k, v := range rt.updates[i] {
						agg[k] += w[i] * v
					}
				}
				for k := range agg {
					agg[k] /= rg.weights[g]
				}
				rg.updates[g] = agg
				rg.cost.MinContributors = min(rg.cost.MinContributors, len(members))
			}
		}
		if mode == ModePlain {
			// Copies are one player, their value shared (engine.valueAsOne);
			// those found only over the whole job are merged at its end
			// (valueTrace, valuation.JobReplicaValues).
			if cl := valuation.UpdateReplicas(rt.updates); len(cl) < n {
				us, ws, err := valuation.MergeReplicas(cl, rt.updates, w)
				if err != nil {
					return nil, err
				}
				rg.groups, rg.updates, rg.weights = cl, us, ws
			}
		}
		if err := gradient(); err != nil {
			return nil, err
		}
		l := pool.lease()
		game, err := valuation.NewFederatedGame(rt.base, rg.updates, rg.weights, l.newScorer, valuation.FederatedOptions{LineSearch: true, Known: known, Signal: rg.grad})
		if err != nil {
			l.release()
			return nil, err
		}
		rg.game, rg.release = game, l.release
	case ModeInfluence:
		if err := gradient(); err != nil {
			return nil, err
		}
		a, err := valuation.InfluenceCoefficients(rg.grad, rt.updates, w)
		if err != nil {
			return nil, err
		}
		ws := w
		if cl := valuation.ScalarReplicas(a, w); len(cl) < n {
			as := make([][]float64, n)
			for i, x := range a {
				as[i] = []float64{x}
			}
			merged, mw, err := valuation.MergeReplicas(cl, as, w)
			if err != nil {
				return nil, err
			}
			a, ws = make([]float64, len(cl)), mw
			for c, u := range merged {
				a[c] = u[0]
			}
			rg.groups = cl
		}
		game, err := valuation.NewSurrogateGame(a, ws)
		if err != nil {
			return nil, err
		}
		rg.a, rg.weights, rg.game = a, ws, game
		rg.cost = Cost{VectorDecryptions: 1, ScalarDecryptions: n, MinContributors: n}
	case ModeProjection:
		start := time.Now()
		vectors, at, err := projectionVectors(t, pool, rt.base, known, rt.updates, w)
		if err != nil {
			return nil, err
		}
		scalars, err := valuation.ProjectionScalars(vectors, rt.updates, w)
		if err != nil {
			return nil, err
		}
		ws := w
		// Copies (equal weights, equal scalars) are one player, as
		// engine.projectionAsOne values them: their mean scalars per row,
		// times their mean weight.
		if cl := valuation.ProjectionReplicas(scalars, w); len(cl) < n {
			per := make([][]float64, n)
			for i, s := range scalars {
				per[i] = make([]float64, len(s))
				for j, x := range s {
					per[i][j] = x / w[i]
				}
			}
			merged, mw, err := valuation.MergeReplicas(cl, per, w)
			if err != nil {
				return nil, err
			}
			for c, u := range merged {
				for j := range u {
					u[j] *= mw[c]
				}
			}
			scalars, ws, rg.groups = merged, mw, cl
		}
		l := pool.lease()
		game, err := valuation.NewProjectionGame(valuation.Gram(vectors), scalars, ws, func() (valuation.SpanScorer, error) {
			sc, err := l.newScorer()
			if err != nil {
				return nil, err
			}
			return valuation.NewSpanScorer(at, vectors, sc), nil
		}, valuation.FederatedOptions{})
		if err != nil {
			l.release()
			return nil, err
		}
		rg.game, rg.release, rg.weights, rg.gradWall = game, l.release, ws, time.Since(start)
		rg.cost = Cost{VectorDecryptions: 1, ScalarDecryptions: n * len(vectors), MinContributors: n}
		rg.scalars = len(vectors)
	default:
		return nil, fmt.Errorf("%w: %q", ErrMode, mode)
	}
	var sizes []int
	for _, g := range rg.groups {
		if mode == ModeGroups {
			sizes = append(sizes, len(g))
		}
	}
	he := heRound(mode, n, blocks, sizes, sc.GroupSize)
	if mode == ModeProjection {
		he = projectionHE(n, blocks, rg.scalars)
	}
	rg.cost.HEAdds, rg.cost.HEMults, rg.cost.DecShares, rg.cost.DecCombines = he.HEAdds, he.HEMults, he.DecShares, he.DecCombines
	rg.players = rg.game.Players()
	if record {
		rg.rec = &recorder{g: rg.game, seen: map[valuation.Coalition]float64{}}
		rg.game = rg.rec
	}
	return rg, nil
}

// estimatorSeed keys a method's randomness by (seed, round, mode, method).
func estimatorSeed(seed uint64, r int, mode string, m Method) uint64 {
	h := sha256.Sum256(fmt.Appendf(nil, "%d|estimator|%d|%s|%s", seed, r, mode, m))
	return binary.LittleEndian.Uint64(h[:8])
}

// errSkip marks a (mode, method) pair that does not exist, such as cgsv in
// influence mode (the mode never reveals an update vector) or an exact method
// beyond the exact bound.
type errSkip string

func (e errSkip) Error() string { return string(e) }

// valueRound runs method m on one round's game and returns per-client
// values (groups' values shared by weight), their standard errors, the
// distinct evaluations used and the wall time.
func valueRound(ctx context.Context, seed uint64, r int, rg *roundGame, m Method, clientWeights []float64) (vals, ses []float64, evals int, wall time.Duration, err error) {
	start := time.Now()
	var pv, pse []float64
	switch {
	case rg.mode == ModeProjection && m.Vector():
		return nil, nil, 0, 0, errSkip(m.Name + " needs update vectors or the influence scalar; the projection mode releases neither")
	case m.Name == valuation.MethodCGSV:
		if rg.mode == ModeInfluence {
			return nil, nil, 0, 0, errSkip("cgsv needs update vectors, which the influence mode never reveals")
		}
		pv, err = valuation.CosineToAggregate(rg.updates, rg.weights)
	case m.Name == valuation.MethodInfluence:
		if rg.mode == ModeInfluence {
			total := 0.0
			for _, w := range rg.weights {
				total += w
			}
			pv = make([]float64, len(rg.a))
			for i, a := range rg.a {
				pv[i] = -a / total
			}
		} else {
			pv, err = valuation.Influence(rg.grad, rg.updates, rg.weights)
		}
		wall += rg.gradWall
	default:
		if m.Exact() && rg.players > exactReferenceBound {
			return nil, nil, 0, 0, errSkip(fmt.Sprintf("%s is not run above %d players", m.Name, exactReferenceBound))
		}
		cfg := valuation.Config{Seed: estimatorSeed(seed, r, rg.mode, m)}
		if m.PerPlayer > 0 {
			cfg.Budget = m.PerPlayer * rg.players
		}
		est, e := valuation.NewEstimator(m.Name, cfg)
		if e != nil {
			return nil, nil, 0, 0, e
		}
		// A fresh Evaluator per method: no cache is shared, so the wall time
		// is what the method costs on its own.
		ev, e := valuation.NewEvaluator(rg.game, 0)
		if e != nil {
			return nil, nil, 0, 0, e
		}
		res, e := est.Estimate(ctx, ev)
		if e != nil {
			return nil, nil, 0, 0, e
		}
		pv, pse, evals = res.Values, res.StdErr, res.Evaluations
	}
	if err != nil {
		return nil, nil, 0, 0, err
	}
	if pv, err = capRows(rg, pv); err != nil {
		return nil, nil, 0, 0, err
	}
	wall += time.Since(start)
	vals, ses, err = spread(rg, pv, pse, clientWeights)
	return vals, ses, evals, wall, err
}

// capRows caps the players' values per row (valuation.CapPerWeight), as
// engine.valueAsOne does in plain and influence mode; groups mode shares a
// group's value by weight and is left alone.
func capRows(rg *roundGame, pv []float64) ([]float64, error) {
	if rg.mode == ModeGroups {
		return pv, nil
	}
	return valuation.CapPerWeight(pv, rg.weights)
}

// spread turns players' values into clients' values: a group's or a
// cluster of copies' value is shared among its members by weight (copies
// have equal weights, so equally, as engine.valueAsOne shares them).
func spread(rg *roundGame, pv, pse, clientWeights []float64) (vals, ses []float64, err error) {
	if rg.groups == nil {
		if pse == nil {
			pse = make([]float64, len(pv))
		}
		return pv, pse, nil
	}
	vals, ses = make([]float64, len(clientWeights)), make([]float64, len(clientWeights))
	for g, members := range rg.groups {
		ws := make([]float64, len(members))
		for k, i := range members {
			ws[k] = clientWeights[i]
		}
		se := 0.0
		if pse != nil {
			se = pse[g]
		}
		v, s, e := valuation.SplitByWeight(pv[g], se, ws)
		if e != nil {
			return nil, nil, e
		}
		for k, i := range members {
			vals[i], ses[i] = v[k], s[k]
		}
	}
	return vals, ses, nil
}

// referenceMethod is the ground truth's method for a scenario.
func referenceMethod(sc Scenario) Method {
	if sc.Reference == ReferenceMonteCarlo {
		return Method{Name: valuation.MethodMonteCarlo}
	}
	return Method{Name: valuation.MethodExactShapley}
}

// valueTrace values every round of t with the reference and with every
// method in every mode, calling progress after each (mode, method).
// games, if not nil, receives each round's recorded games.
func valueTrace(ctx context.Context, sc Scenario, seed uint64, t *trace, methods []Method, modes []string,
	progress func(mode, method string, wall time.Duration), games func(r int, rg *roundGame) error) (ref Valued, runs []Valued, err error) {
	n := len(t.fed.weights)
	pool := &scorerPool{proto: t.proto, val: t.fed.val, acc: sc.Utility == "accuracy"}
	newValued := func(mode, method string) Valued {
		return Valued{Mode: mode, Method: method, Rounds: make([][]float64, len(t.rounds)), StdErr: make([][]float64, len(t.rounds)), Totals: make([]float64, n)}
	}
	refMethod := referenceMethod(sc)
	ref = newValued(ModePlain, "reference:"+refMethod.Name)
	byKey := map[string]*Valued{}
	var order []string
	for _, mode := range modes {
		for _, m := range methods {
			k := mode + "|" + m.String()
			if _, dup := byKey[k]; dup {
				continue
			}
			v := newValued(mode, m.String())
			byKey[k] = &v
			order = append(order, k)
		}
	}
	walls := map[string]time.Duration{}
	// The plain game is built every round, for the reference, and valued
	// first; the reference and the plain methods share it, so an exported
	// plain game holds every coalition either used.
	gameModes := []string{ModePlain}
	for _, m := range modes {
		if m != ModePlain {
			gameModes = append(gameModes, m)
		}
	}
	blocks := ciphertextBlocks(t.proto.NumParams())
	// What the coordinator accumulates over the job to recognise copies
	// (engine: the job's valuation.Redundancy), and the clusters each
	// round's plain game already valued as one.
	ids := clientIDs(n)
	red := valuation.NewRedundancy()
	merged := make([][][]string, len(t.rounds))
	for r := range t.rounds {
		if err := red.Add(ids, t.rounds[r].updates); err != nil {
			return ref, nil, fmt.Errorf("round %d: %w", r, err)
		}
		for _, mode := range gameModes {
			rg, err := buildGame(sc, seed, t, pool, mode, r, blocks, games != nil)
			if err != nil {
				return ref, nil, fmt.Errorf("round %d, %s: %w", r, mode, err)
			}
			if mode == ModePlain {
				for _, c := range rg.groups {
					if len(c) > 1 {
						names := make([]string, len(c))
						for k, i := range c {
							names[k] = ids[i]
						}
						merged[r] = append(merged[r], names)
					}
				}
				rm := refMethod
				cfg := valuation.Config{Seed: estimatorSeed(seed, r, "reference", rm), Samples: sc.ReferenceSamples}
				est, err := valuation.NewEstimator(rm.Name, cfg)
				if err != nil {
					return ref, nil, err
				}
				res, err := est.Estimate(ctx, rg.game)
				if err != nil {
					return ref, nil, fmt.Errorf("round %d, reference: %w", r, err)
				}
				pv, err := capRows(rg, res.Values)
				if err != nil {
					return ref, nil, err
				}
				vals, ses, err := spread(rg, pv, res.StdErr, t.fed.weights)
				if err != nil {
					return ref, nil, err
				}
				ref.Rounds[r], ref.StdErr[r] = vals, ses
				ref.Evaluations += res.Evaluations
				ref.Wall += res.Wall
				ref.Cost = add(ref.Cost, rg.cost, r)
				// Exact Shapley in plain mode is the reference itself: reuse it.
				if v, ok := byKey[ModePlain+"|"+valuation.MethodExactShapley]; ok && rm.Name == valuation.MethodExactShapley {
					v.Rounds[r], v.StdErr[r] = vals, ses
					v.Evaluations += res.Evaluations
					v.Wall += res.Wall
					v.Cost = add(v.Cost, rg.cost, r)
					walls[ModePlain+"|"+valuation.MethodExactShapley] += res.Wall
				}
			}
			if slices.Contains(modes, mode) {
				for _, m := range methods {
					k := mode + "|" + m.String()
					v := byKey[k]
					if v.Rounds[r] != nil || v.Err != "" {
						continue
					}
					vals, ses, evals, wall, err := valueRound(ctx, seed, r, rg, m, t.fed.weights)
					if err != nil {
						if ctx.Err() != nil {
							return ref, nil, ctx.Err()
						}
						v.Err = err.Error()
						continue
					}
					v.Rounds[r], v.StdErr[r] = vals, ses
					v.Evaluations += evals
					v.Wall += wall
					v.Cost = add(v.Cost, rg.cost, r)
					walls[k] += wall
				}
			}
			if games != nil {
				if err := games(r, rg); err != nil {
					return ref, nil, err
				}
			}
			rg.release()
		}
	}
	// Copies found over the whole job are valued as one in every round of
	// the plain mode (the settlement's rule, engine.settle); the influence
	// mode has no updates to find them by.
	var jobClusters [][]string
	for _, c := range red.Replicas(ids) {
		if len(c) > 1 {
			names := make([]string, len(c))
			for k, i := range c {
				names[k] = ids[i]
			}
			jobClusters = append(jobClusters, names)
		}
	}
	finish := func(v *Valued) {
		if v.Err == "" && v.Mode == ModePlain && jobClusters != nil {
			v.Unmerged = make([]float64, n)
			for _, vals := range v.Rounds {
				for i, x := range vals {
					v.Unmerged[i] += x
				}
			}
			for r, vals := range v.Rounds {
				out, err := valuation.JobReplicaValues(ids, vals, merged[r], jobClusters)
				if err != nil {
					v.Err = err.Error()
					break
				}
				v.Rounds[r] = out
			}
		}
		if v.Err != "" {
			for r := range v.Rounds {
				v.Rounds[r], v.StdErr[r] = nanSlice(n), nanSlice(n)
			}
			for i := range v.Totals {
				v.Totals[i] = math.NaN()
			}
			return
		}
		for _, vals := range v.Rounds {
			for i, x := range vals {
				v.Totals[i] += x
			}
		}
	}
	finish(&ref)
	for _, k := range order {
		v := byKey[k]
		finish(v)
		runs = append(runs, *v)
		if progress != nil {
			progress(v.Mode, v.Method, walls[k])
		}
	}
	return ref, runs, nil
}

// add sums two rounds' costs; the minimum contributors is a minimum.
// Every other field is a count and adds.
func add(a, b Cost, r int) Cost {
	if r == 0 || a.MinContributors == 0 {
		a.MinContributors = b.MinContributors
	}
	return Cost{
		VectorDecryptions: a.VectorDecryptions + b.VectorDecryptions,
		ScalarDecryptions: a.ScalarDecryptions + b.ScalarDecryptions,
		MinContributors:   min(a.MinContributors, b.MinContributors),
		HEAdds:            a.HEAdds + b.HEAdds,
		HEMults:           a.HEMults + b.HEMults,
		DecShares:         a.DecShares + b.DecShares,
		DecCombines:       a.DecCombines + b.DecCombines,
	}
}

func nanSlice(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = math.NaN()
	}
	return s
}

// clientIDs names clients 0…n−1 as the redundancy accumulator keys them.
func clientIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	return ids
}

// projectionVectors returns the projection mode's public vectors of a
// round (valuation.ProjectionVectors) and the point they are taken from,
// base after the server's own step along known, as the coordinator's
// ModelValuer computes them: the total is the round's FedAvg step.
func projectionVectors(t *trace, pool *scorerPool, base, known []float64, updates [][]float64, w []float64) ([][]float64, []float64, error) {
	l := pool.lease()
	defer l.release()
	sc, err := l.newScorer()
	if err != nil {
		return nil, nil, err
	}
	at, err := valuation.KnownStep(base, known, sc.Score)
	if err != nil {
		return nil, nil, err
	}
	total := make([]float64, len(base))
	var n float64
	for i, u := range updates {
		n += w[i]
		for k, x := range u {
			total[k] += w[i] * x
		}
	}
	for k := range total {
		total[k] /= n
	}
	vs, err := engine.ModelProjectionVectors(t.proto.Clone(), t.fed.val, t.fed.classes, at, total, known)
	return vs, at, err
}
