package audit

import (
	"fmt"
	"math"
	"slices"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
	"github.com/tallyfl/tally/valuation"
)

// small attacks the releases of clients that hold few rows each
// (cfg.SmallRows), from a freshly initialised global model (the first
// round): one client's plaintext update of one row and of SmallRows rows,
// sums of k such updates, and the groups mode's sums. Each trial draws new
// rows and a new initial model.
func (e *env) small() ([]Row, []Picture, error) {
	cfg := e.cfg
	n := cfg.SmallRows
	maxK := max(slices.Max(cfg.Ks), cfg.Clients)
	if e.train.Len() < maxK*n+1 {
		return nil, nil, fmt.Errorf("%d training rows cannot give %d clients %d rows each", e.train.Len(), maxK, n)
	}
	names := []string{"plaintext update, 1 row", fmt.Sprintf("plaintext update, %d rows", n)}
	ks := []int{1, 1}
	for _, k := range cfg.Ks {
		names = append(names, fmt.Sprintf("sum of %d updates (he)", k))
		ks = append(ks, k)
	}
	groups := cfg.Clients / cfg.GroupK
	names = append(names, fmt.Sprintf("group sums, %d clients in %d groups (groups)", cfg.Clients, groups))
	ks = append(ks, cfg.Clients/groups)
	// Differentially private releases: one client's update, and a sum of
	// GroupK, each at every ε of cfg.DPEpsilons over cfg.Rounds rounds.
	type dpRel struct {
		k     int
		sigma float64
	}
	var dps []dpRel
	for _, k := range []int{1, cfg.GroupK} {
		for _, eps := range cfg.DPEpsilons {
			sigma, err := noiseMultiplier(eps, cfg.DPDelta, cfg.Rounds)
			if err != nil {
				return nil, nil, err
			}
			dps = append(dps, dpRel{k, sigma})
			what := fmt.Sprintf("plaintext update, %d rows", n)
			if k > 1 {
				what = fmt.Sprintf("sum of %d updates", k)
			}
			names = append(names, fmt.Sprintf("%s, DP ε = %g (σ = %.3g, δ = %g, %d rounds)", what, eps, sigma, cfg.DPDelta, cfg.Rounds))
			ks = append(ks, k)
		}
	}
	firstDP := len(names) - len(dps)
	all := make([][]score, len(names))
	rows := make([]float64, len(names))
	var pics []Picture
	for t := range cfg.Trials {
		m, err := e.newModel(t)
		if err != nil {
			return nil, nil, err
		}
		global := m.Params()
		perm := derive(cfg.Seed, "rows", t, 0).Perm(e.train.Len())
		data := make([]model.Examples, maxK+1)
		updates := make([][]float64, maxK+1)
		for c := range data {
			idx := perm[c*n : (c+1)*n]
			if c == maxK {
				idx = perm[c*n : c*n+1] // the one-row client
			}
			data[c] = e.train.Subset(idx)
			if updates[c], err = e.localUpdate(m, global, data[c], derive(cfg.Seed, "train", t, c)); err != nil {
				return nil, nil, err
			}
		}
		rels := [][]int{{maxK}, {0}}
		for _, k := range cfg.Ks {
			rels = append(rels, seq(0, k))
		}
		rng := derive(cfg.Seed, "guess", t, 0)
		for i, members := range rels {
			s, err := e.attackRelease(m, global, e.sumOf(pick(updates, members), pick(data, members)), rng)
			if err != nil {
				return nil, nil, err
			}
			all[i] = append(all[i], s)
			rows[i] += float64(len(members)*data[members[0]].Len()) / float64(cfg.Trials)
			if t == 0 && e.image && (i == 1 || i == len(rels)-1) {
				pics = append(pics, e.picture(names[i], ks[i], s))
			}
		}
		// The groups mode: a seeded partition of the clients into groups
		// of at least GroupK, each group's sum decrypted.
		gperm := derive(cfg.Seed, "groups", t, 0).Perm(cfg.Clients)
		var gs []score
		for g := range groups {
			lo, hi := g*cfg.Clients/groups, (g+1)*cfg.Clients/groups
			members := gperm[lo:hi]
			s, err := e.attackRelease(m, global, e.sumOf(pick(updates, members), pick(data, members)), rng)
			if err != nil {
				return nil, nil, err
			}
			gs = append(gs, s)
		}
		gi := firstDP - 1
		all[gi] = append(all[gi], meanScore(gs))
		rows[gi] += float64(cfg.Clients*n) / float64(groups) / float64(cfg.Trials)
		clip := medianNorm(updates)
		for d, dp := range dps {
			members := seq(0, dp.k)
			rel := e.dpRelease(pick(updates, members), pick(data, members), clip, dp.sigma, derive(cfg.Seed, "dpnoise", t, d))
			s, err := e.attackRelease(m, global, rel, rng)
			if err != nil {
				return nil, nil, err
			}
			all[firstDP+d] = append(all[firstDP+d], s)
			rows[firstDP+d] += float64(dp.k*n) / float64(cfg.Trials)
			if t == 0 && e.image && dp.k == 1 && d == 0 {
				pics = append(pics, e.pictureNamed(fmt.Sprintf("%s-%s-k1-%d-dp%g", e.data, e.spec.Kind, n, cfg.DPEpsilons[0]), names[firstDP+d], s))
			}
		}
	}
	out := make([]Row, len(names))
	for i := range names {
		out[i] = e.row(names[i], ks[i], rows[i], all[i])
	}
	return out, pics, nil
}

// job runs a job-sized federation (cfg.Clients clients, Dirichlet(Alpha)
// label skew over the whole training split, FedAvg of every client for
// cfg.Rounds rounds) and attacks what a coordinator sees of it: one
// client's plaintext update and the sum of all updates of the first round,
// and the influence mode's scalars aᵢ,ᵣ = ⟨∇L_val(w_r), nᵢ·Δᵢ,ᵣ⟩ of every
// client over all rounds.
func (e *env) job() ([]Row, []Picture, error) {
	cfg := e.cfg
	parts, err := dataset.Partition(e.train, e.classes, cfg.Clients, dataset.PartitionSpec{Kind: dataset.PartitionDirichlet, Alpha: cfg.Alpha}, cfg.Seed)
	if err != nil {
		return nil, nil, err
	}
	m, err := e.newModel(0)
	if err != nil {
		return nil, nil, err
	}
	global := m.Params()
	np := len(global)
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
	// Per client: the scalars over rounds, the candidate rows (members,
	// then label-matched non-members) and their per-round alignments.
	type cand struct {
		data  model.Examples
		align [][]float64 // [row][round]
	}
	scal := make([][]float64, cfg.Clients)
	cands := make([][2]cand, cfg.Clients)
	for i, p := range parts {
		cands[i][0].data = p
		cands[i][1].data = e.test.Subset(e.labelMatched(p.Y))
		for k := range cands[i] {
			cands[i][k].align = make([][]float64, cands[i][k].data.Len())
		}
	}
	h := make([][]float64, cfg.Rounds)
	g, gj, gx := make([]float64, np), make([]float64, np), make([]float64, np)
	var perClient []score
	var sumScore score
	var pics []Picture
	proj := make([]projSeries, cfg.Clients)
	for i, p := range parts {
		proj[i].n = p.Len()
	}
	var known []float64 // the previous round's global change
	for r := range cfg.Rounds {
		if err := m.SetParams(global); err != nil {
			return nil, nil, err
		}
		if err := m.Gradient(e.val, g); err != nil {
			return nil, nil, err
		}
		h[r] = make([]float64, e.classes)
		for j, vj := range valByClass {
			if vj.Len() == 0 {
				continue
			}
			if err := m.Gradient(vj, gj); err != nil {
				return nil, nil, err
			}
			h[r][j] = dot(g, gj)
		}
		for i := range cands {
			for k := range cands[i] {
				c := &cands[i][k]
				for row := range c.data.Len() {
					if err := m.Gradient(c.data.Subset([]int{row}), gx); err != nil {
						return nil, nil, err
					}
					c.align[row] = append(c.align[row], -dot(g, gx))
				}
			}
		}
		updates := make([][]float64, cfg.Clients)
		for i, p := range parts {
			if updates[i], err = e.localUpdate(m, global, p, derive(cfg.Seed, "jobtrain", i, r)); err != nil {
				return nil, nil, err
			}
			scal[i] = append(scal[i], float64(p.Len())*dot(g, updates[i]))
		}
		rel := e.sumOf(updates, parts)
		if r == 0 {
			rng := derive(cfg.Seed, "jobguess", 0, 0)
			for i := range parts {
				s, err := e.attackRelease(m, global, e.sumOf(updates[i:i+1], parts[i:i+1]), rng)
				if err != nil {
					return nil, nil, err
				}
				perClient = append(perClient, s)
			}
			if sumScore, err = e.attackRelease(m, global, rel, rng); err != nil {
				return nil, nil, err
			}
		}
		// The projection mode's scalars of this round, from its total.
		total := make([]float64, np)
		for j := range total {
			total[j] = rel.sum[j] / float64(rel.n)
		}
		vs, _, err := projectionVectors(m, e.val, e.classes, global, known, total)
		if err != nil {
			return nil, nil, err
		}
		sp := newSpan(vs)
		if err := m.SetParams(global); err != nil {
			return nil, nil, err
		}
		cg, err := classGradients(m, valByClass)
		if err != nil {
			return nil, nil, err
		}
		for i, p := range parts {
			memG, err := rowGradients(m, cands[i][0].data)
			if err != nil {
				return nil, nil, err
			}
			nonG, err := rowGradients(m, cands[i][1].data)
			if err != nil {
				return nil, nil, err
			}
			s := make([]float64, len(vs))
			for j, v := range vs {
				s[j] = float64(p.Len()) * dot(updates[i], v)
			}
			proj[i].add(e, sp, s, cg, memG, nonG)
		}
		for j := range global {
			global[j] += total[j]
		}
		known = total
	}
	// The influence scalars: label shares by least squares on the simplex,
	// membership by correlation over rounds.
	var infl []score
	for i, p := range parts {
		y := make([]float64, cfg.Rounds)
		scale := -float64(p.Len()) * cfg.Train.LearningRate * stepWeight(p.Len(), cfg.Train)
		for r := range y {
			y[r] = scal[i][r] / scale
		}
		shares := scalarShares(h, y, 5000)
		truth := counts(p.Y, e.classes)
		s := score{
			psnr: math.NaN(), psnrG: math.NaN(), ssim: math.NaN(), ssimG: math.NaN(),
			rowD: math.NaN(), rowDG: math.NaN(), featE: math.NaN(), featEG: math.NaN(),
			label:  labelOverlap(countsFromShares(shares, p.Len()), truth),
			labelG: labelOverlap(countsFromShares(e.prior, p.Len()), truth),
		}
		var mem, non []float64
		for _, a := range cands[i][0].align {
			mem = append(mem, pearson(scal[i], a))
		}
		for _, a := range cands[i][1].align {
			non = append(non, pearson(scal[i], a))
		}
		s.auc = AUC(mem, non)
		infl = append(infl, s)
	}
	mean := float64(e.train.Len()) / float64(cfg.Clients)
	one := e.row(fmt.Sprintf("job: plaintext update, round 1 (%d clients, Dirichlet %.2g)", cfg.Clients, cfg.Alpha), 1, mean, perClient)
	one.Trials = len(perClient)
	if e.image && len(perClient) > 0 {
		pics = append(pics, e.picture("job: plaintext update, round 1, client 0", 1, perClient[0]))
	}
	all := e.row(fmt.Sprintf("job: sum of all %d updates, round 1 (he)", cfg.Clients), cfg.Clients, float64(e.train.Len()), []score{sumScore})
	sc := e.row(fmt.Sprintf("job: influence scalars, %d rounds (influence)", cfg.Rounds), 1, mean, infl)
	sc.Trials = len(infl)
	// The projection scalars: the update's component in each round's
	// span, attacked as an update (projection.go).
	var ps []score
	prng := derive(cfg.Seed, "projguess", 0, 0)
	for i, p := range parts {
		ps = append(ps, proj[i].score(e, p, prng))
	}
	pr := e.row(fmt.Sprintf("job: projection scalars, %d per round, %d rounds (projection)", valuation.ProjectionVectorCount(e.classes), cfg.Rounds), 1, mean, ps)
	pr.Trials = len(ps)
	if e.image && len(ps) > 0 {
		pics = append(pics, e.pictureNamed(fmt.Sprintf("%s-%s-job-projection", e.data, e.spec.Kind), pr.Release+", client 0", ps[0]))
	}
	return []Row{one, all, sc, pr}, pics, nil
}

func dot(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func seq(lo, hi int) []int {
	out := make([]int, 0, hi-lo)
	for i := lo; i < hi; i++ {
		out = append(out, i)
	}
	return out
}

func pick[T any](xs []T, idx []int) []T {
	out := make([]T, len(idx))
	for i, j := range idx {
		out[i] = xs[j]
	}
	return out
}

// meanScore averages scores field by field (pictures are not kept).
func meanScore(ss []score) score {
	var out score
	fields := func(s *score) []*float64 {
		return []*float64{&s.psnr, &s.psnrG, &s.ssim, &s.ssimG, &s.rowD, &s.rowDG, &s.featE, &s.featEG, &s.label, &s.labelG, &s.auc}
	}
	of := fields(&out)
	for i := range ss {
		for f, p := range fields(&ss[i]) {
			*of[f] += *p / float64(len(ss))
		}
	}
	return out
}

func (e *env) row(name string, k int, rows float64, ss []score) Row {
	s := meanScore(ss)
	r := Row{
		Dataset: e.data, Model: e.spec.Kind, Release: name, K: k, Rows: rows, Trials: len(ss),
		PSNR: s.psnr, PSNRGuess: s.psnrG, SSIM: s.ssim, SSIMGuess: s.ssimG,
		RowDist: s.rowD, RowDistGuess: s.rowDG, FeatErr: s.featE, FeatErrGuess: s.featEG,
		LabelAcc: s.label, LabelAccGuess: s.labelG, AUC: s.auc,
	}
	if e.image {
		r.RowDist, r.RowDistGuess, r.FeatErr, r.FeatErrGuess = math.NaN(), math.NaN(), math.NaN(), math.NaN()
	} else {
		r.PSNR, r.PSNRGuess, r.SSIM, r.SSIMGuess = math.NaN(), math.NaN(), math.NaN(), math.NaN()
	}
	return r
}

func (e *env) picture(release string, k int, s score) Picture {
	stem := fmt.Sprintf("%s-%s-k%d-%d", e.data, e.spec.Kind, k, len(s.originals))
	if len(release) > 4 && release[:4] == "job:" {
		stem = fmt.Sprintf("%s-%s-job-round1", e.data, e.spec.Kind)
	}
	return e.pictureNamed(stem, release, s)
}

func (e *env) pictureNamed(stem, release string, s score) Picture {
	const show = 16
	o, r := s.originals, s.recons
	if len(o) > show {
		o, r = o[:show], r[:show]
	}
	return Picture{
		Name: stem, Caption: fmt.Sprintf("%s, %s: %s", e.data, e.spec.Kind, release),
		Originals: o, Recons: r, Side: 8, Lo: e.lo, Hi: e.hi,
	}
}
