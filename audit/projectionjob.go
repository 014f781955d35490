package audit

import (
	"fmt"
	"sort"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/model"
)

// attackProjection audits a projection job's scalars: each round's public
// vectors are rebuilt (cfg.Vectors) from the round's release (the model
// it started from, its decrypted total) and the previous round's change;
// every scalar must commit, in its transcript entry, to the digest of one
// of them (aggregation.GradientDigest), which also says which v_j it is,
// and a client has at most one scalar per vector and round. A scalar that
// fails either is a Finding and left out. The others are attacked per
// client over all the rounds as Run attacks the simulated ones
// (projection.go): least-squares recovery of the update's component in
// each round's span, first-layer inversion of it, label shares and
// membership from the coordinates.
func (e *env) attackProjection(m model.Model, res *JobResult, scalars, roundRels []*engine.Release, cfg JobConfig, d *JobData) error {
	type key struct{ round, attempt int }
	// The rounds in order, each with the previous completed round's
	// change (the engine's known: nil before the first).
	rs := append([]*engine.Release(nil), roundRels...)
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].Seq < rs[j].Seq })
	type roundInfo struct {
		base    *engine.Release
		vectors [][]float64
		digests map[[32]byte]int
		span    span
	}
	rounds := map[key]*roundInfo{}
	var prev []float64
	for _, r := range rs {
		var known []float64
		if prev != nil && len(prev) == len(r.Global) {
			known = make([]float64, len(prev))
			for k := range known {
				known[k] = r.Global[k] - prev[k]
			}
		}
		prev = r.Global
		if len(r.Global) != len(r.Values) {
			continue
		}
		vs, err := cfg.Vectors(r.Global, known, r.Values)
		if err != nil {
			return fmt.Errorf("audit: public vectors of round %d: %w", r.Round, err)
		}
		ri := &roundInfo{base: r, vectors: vs, digests: map[[32]byte]int{}}
		for j, v := range vs {
			ri.digests[aggregation.GradientDigest(v)] = j
		}
		rounds[key{r.Round, r.Attempt}] = ri
	}
	valByClass := make([]model.Examples, e.classes)
	for j := range valByClass {
		var idx []int
		for i, y := range e.val.Y {
			if y == j {
				idx = append(idx, i)
			}
		}
		valByClass[j] = e.val.Subset(idx)
	}
	// Per round and client: the scalars by vector index.
	type got struct {
		idx []int
		val []float64
	}
	byRound := map[key]map[string]*got{}
	var order []key
	for _, r := range scalars {
		name := fmt.Sprintf("projection scalar (transcript seq %d, round %d)", r.Seq, r.Round)
		if len(r.Contributors) != 1 || len(r.Values) != 1 {
			res.Findings = append(res.Findings, Finding{r.Seq, fmt.Sprintf("%s: %d contributors and %d values, a projection scalar has one of each", name, len(r.Contributors), len(r.Values))})
			continue
		}
		k := key{r.Round, r.Attempt}
		ri := rounds[k]
		if ri == nil {
			res.Findings = append(res.Findings, Finding{r.Seq, name + ": no decrypted total of its round, from which its public vector is built"})
			continue
		}
		if r.Seq < 0 || r.Seq >= len(cfg.Entries) {
			res.Findings = append(res.Findings, Finding{r.Seq, name + ": no transcript entry to read its vector digest from"})
			continue
		}
		j, ok := ri.digests[cfg.Entries[r.Seq].Gradient]
		if !ok {
			res.Findings = append(res.Findings, Finding{r.Seq, fmt.Sprintf("%s of client %s: its entry commits to a vector that is none of the round's %d public vectors as rebuilt from the round's model and total", name, r.Contributors[0], len(ri.vectors))})
			continue
		}
		id := r.Contributors[0]
		if byRound[k] == nil {
			byRound[k] = map[string]*got{}
			order = append(order, k)
		}
		g := byRound[k][id]
		if g == nil {
			g = &got{}
			byRound[k][id] = g
		}
		dup := false
		for _, i := range g.idx {
			dup = dup || i == j
		}
		if dup {
			res.Findings = append(res.Findings, Finding{r.Seq, fmt.Sprintf("%s: client %s's product with public vector %d of the round was decrypted twice", name, id, j+1)})
			continue
		}
		g.idx, g.val = append(g.idx, j), append(g.val, r.Values[0])
	}
	sort.Slice(res.Findings, func(a, b int) bool { return res.Findings[a].Seq < res.Findings[b].Seq })
	sort.Slice(order, func(a, b int) bool { return rounds[order[a]].base.Seq < rounds[order[b]].base.Seq })
	per := map[string]*projSeries{}
	nonD := map[string]model.Examples{}
	data := map[string]model.Examples{}
	roundsOf := map[string]int{}
	var clients []string
	for _, k := range order {
		ri := rounds[k]
		if err := m.SetParams(ri.base.Global); err != nil {
			return err
		}
		cg, err := classGradients(m, valByClass)
		if err != nil {
			return err
		}
		ids := make([]string, 0, len(byRound[k]))
		for id := range byRound[k] {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			if d.FreeRiders[id] {
				continue
			}
			g := byRound[k][id]
			s, ok := per[id]
			if !ok {
				shard, ok := d.Shards[id]
				if !ok {
					return fmt.Errorf("audit: projection scalars of round %d name client %q, whose data is unknown", k.round, id)
				}
				data[id] = e.scaler.Apply(shard)
				nonD[id] = e.test.Subset(e.labelMatched(data[id].Y))
				s = &projSeries{n: int(ri.base.Samples[id])}
				per[id] = s
				clients = append(clients, id)
			}
			// The span of the vectors this client's scalars were taken
			// against, in their order.
			vs := make([][]float64, len(g.idx))
			for i, j := range g.idx {
				vs[i] = ri.vectors[j]
			}
			memG, err := rowGradients(m, data[id])
			if err != nil {
				return err
			}
			nonG, err := rowGradients(m, nonD[id])
			if err != nil {
				return err
			}
			s.add(e, newSpan(vs), g.val, cg, memG, nonG)
			roundsOf[id]++
		}
	}
	rng := derive(cfg.Seed, "projguess", 0, 0)
	var all []score
	var rows float64
	maxRounds, m0 := 0, 0
	for _, ri := range rounds {
		m0 = max(m0, len(ri.vectors))
	}
	for _, id := range clients {
		sc := per[id].score(e, data[id], rng)
		all = append(all, sc)
		rows += float64(data[id].Len())
		maxRounds = max(maxRounds, roundsOf[id])
		res.Clients = append(res.Clients, ClientResult{Client: id, Release: "projection", Rows: data[id].Len(), Rounds: roundsOf[id], Labels: sc.label, LabelGuess: sc.labelG, AUC: sc.auc})
	}
	if len(all) == 0 {
		return nil
	}
	row := e.row(fmt.Sprintf("projection scalars of each client, %d per round, %d rounds (projection)", m0, maxRounds), 1, rows/float64(len(all)), all)
	res.Rows = append(res.Rows, row)
	return nil
}
