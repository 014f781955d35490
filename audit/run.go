package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
)

// Row is one line of the results table: one release kind attacked on one
// dataset and model, averaged over its trials. A metric that does not
// apply to the release is NaN (written as an empty cell).
type Row struct {
	Dataset, Model, Release string
	// K is the number of client updates summed in the release (1 for a
	// plaintext update); Rows the mean training rows behind it.
	K      int
	Rows   float64
	Trials int
	// Image metrics (digits): mean over the true images of their
	// reconstruction's (paired one to one, see assign), and the same for
	// as many guesses drawn from the attacker's own validation images.
	PSNR, PSNRGuess, SSIM, SSIMGuess float64
	// Table metrics (breast-cancer), in standard deviations of each
	// feature: RMS distance from each true row to its reconstruction
	// (paired one to one by distance), and the mean absolute per-feature
	// error of that pair; again beside as many guessed rows.
	RowDist, RowDistGuess, FeatErr, FeatErrGuess float64
	// LabelAcc is the share of the rows' labels recovered as a multiset
	// (labelOverlap); LabelAccGuess the same for the prior guess (the
	// validation set's label shares times the row count).
	LabelAcc, LabelAccGuess float64
	// AUC is the membership-inference AUC for the release's rows against
	// label-matched non-members; 0.5 is random guessing.
	AUC float64
}

// Picture is one figure: original images (raw pixels) beside their best
// reconstruction.
type Picture struct {
	Name      string // file stem, e.g. "digits-mlp-plaintext-8"
	Caption   string
	Originals [][]float64
	Recons    [][]float64
	Side      int     // image side (8)
	Lo, Hi    float64 // pixel range
}

// Result is what Run measured.
type Result struct {
	Config   Config
	Rows     []Row
	Pictures []Picture
	Utility  []Utility
}

// Run plays the coordinator of every (dataset, model) pair of cfg: it
// simulates what tally's clients release with the real local training of
// package model, attacks each release and measures the attack against
// random guessing. It is deterministic in cfg.Seed.
func Run(cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	res := &Result{Config: cfg}
	for _, d := range cfg.Datasets {
		for _, m := range cfg.Models {
			if m == KindCNN {
				if d != "digits" {
					continue
				}
				e, err := newCNNEnv(cfg)
				if err != nil {
					return nil, err
				}
				rows, pics, err := e.cnn(cfg.CNN)
				if err != nil {
					return nil, fmt.Errorf("audit: %s/%s: %w", d, m, err)
				}
				res.Rows = append(res.Rows, rows...)
				res.Pictures = append(res.Pictures, pics...)
				continue
			}
			e, err := newEnv(cfg, d, m)
			if err != nil {
				return nil, err
			}
			rows, pics, err := e.small()
			if err != nil {
				return nil, fmt.Errorf("audit: %s/%s: %w", d, m, err)
			}
			res.Rows = append(res.Rows, rows...)
			res.Pictures = append(res.Pictures, pics...)
			rows, pics, err = e.job()
			if err != nil {
				return nil, fmt.Errorf("audit: %s/%s: %w", d, m, err)
			}
			res.Rows = append(res.Rows, rows...)
			res.Pictures = append(res.Pictures, pics...)
			for _, eps := range append([]float64{0}, cfg.DPEpsilons...) {
				u := Utility{Dataset: d, Model: m, Epsilon: eps}
				if eps > 0 {
					if u.Sigma, err = noiseMultiplier(eps, cfg.DPDelta, cfg.Rounds); err != nil {
						return nil, err
					}
				}
				u.Min, u.Max = math.Inf(1), math.Inf(-1)
				for rep := range utilityRepeats {
					acc, err := e.utility(u.Sigma, rep)
					if err != nil {
						return nil, fmt.Errorf("audit: %s/%s: %w", d, m, err)
					}
					u.Accuracy += acc / utilityRepeats
					u.Min, u.Max = min(u.Min, acc), max(u.Max, acc)
				}
				res.Utility = append(res.Utility, u)
			}
		}
	}
	return res, nil
}

// derive is the audit's keyed randomness: a PCG seeded from SHA-256 of
// (seed, purpose, i, j), independent across purposes and of call order.
func derive(seed uint64, purpose string, i, j int) *rand.Rand {
	h := sha256.Sum256(fmt.Appendf(nil, "%d|audit|%s|%d|%d", seed, purpose, i, j))
	return rand.New(rand.NewPCG(binary.LittleEndian.Uint64(h[:8]), binary.LittleEndian.Uint64(h[8:16])))
}

func newEnv(cfg Config, name, kind string) (*env, error) {
	ds, err := dataset.Embedded(name)
	if err != nil {
		return nil, err
	}
	spec := model.Spec{Kind: kind}
	if kind == model.KindMLP {
		spec.Hidden, spec.Activation = cfg.Hidden, cfg.Activation
	}
	spec = spec.WithDefaults()
	train, val, test, err := dataset.Split(ds.Examples, 0.2, 0.2, cfg.Seed)
	if err != nil {
		return nil, err
	}
	// The job's federated scaling: the coordinator learns the pooled
	// moments, so the attacker knows the scaler and can undo it.
	sc := dataset.ComputeMoments(train).Scaler()
	e := &env{
		cfg: cfg, data: name, spec: spec, classes: ds.Classes(),
		arch:  newArch(spec, ds.Examples.Features, ds.Classes()),
		image: name == "digits",
		lo:    0, hi: 16, side: 8,
		scaler: sc, train: sc.Apply(train), val: sc.Apply(val), test: sc.Apply(test), valRaw: val,
	}
	e.prior = labelCounts(val.Y, e.classes)
	if e.image {
		rows := make([][]float64, val.Len())
		for i := range rows {
			rows[i] = val.Row(i)
		}
		e.meanImage = meanRow(rows)
	}
	return e, nil
}

// labelShares of ys over classes.
func labelCounts(ys []int, classes int) []float64 {
	out := make([]float64, classes)
	for _, y := range ys {
		out[y]++
	}
	for j := range out {
		out[j] /= float64(len(ys))
	}
	return out
}

func counts(ys []int, classes int) []int {
	out := make([]int, classes)
	for _, y := range ys {
		out[y]++
	}
	return out
}

// newModel builds the job's model with its initial weights for trial t.
func (e *env) newModel(t int) (model.Model, error) {
	return model.New(e.spec, e.train.Features, e.classes, e.cfg.Seed+uint64(t)*7919)
}

// localUpdate is what a tally client sends: the difference between its
// locally trained parameters and the global ones (client/client.go, train).
func (e *env) localUpdate(m model.Model, global []float64, data model.Examples, rng *rand.Rand) ([]float64, error) {
	if err := m.SetParams(global); err != nil {
		return nil, err
	}
	if _, err := m.Train(data, e.cfg.Train, rng); err != nil {
		return nil, err
	}
	local := m.Params()
	for i := range local {
		local[i] -= global[i]
	}
	return local, nil
}

// release is what the coordinator sees of one decryption: Σ nᵢΔᵢ over its
// clients and Σ nᵢ, with the clients' rows kept aside to score the attack.
type release struct {
	sum   []float64
	n     int
	per   int // rows per client (the step count's input)
	truth model.Examples
}

func (e *env) sumOf(updates [][]float64, data []model.Examples) release {
	r := release{sum: make([]float64, len(updates[0])), truth: model.Examples{Features: e.train.Features}}
	for i, u := range updates {
		ni := data[i].Len()
		for j, v := range u {
			r.sum[j] += float64(ni) * v
		}
		r.n += ni
		r.truth.X = append(r.truth.X, data[i].X...)
		r.truth.Y = append(r.truth.Y, data[i].Y...)
	}
	r.per = int(math.Round(float64(r.n) / float64(len(updates))))
	return r
}

// matchLR is the Adam step of gradient matching, in standard deviations:
// of 0.02 and 0.05 tried on the digits baseline, 0.05 matched better.
const matchLR = 0.05

// score is the per-release measurement before averaging over trials.
type score struct {
	psnr, psnrG, ssim, ssimG   float64
	rowD, rowDG, featE, featEG float64
	label, labelG, auc         float64
	originals, recons          [][]float64
}

// attackRelease runs the reconstruction, label and membership attacks on
// one release made from the global parameters.
func (e *env) attackRelease(m model.Model, global []float64, r release, rng *rand.Rand) (score, error) {
	var s score
	avg := make([]float64, len(r.sum))
	for j, v := range r.sum {
		avg[j] = v / float64(r.n)
	}
	shares := labelShares(e.arch, global, avg, r.per, e.cfg.Train, e.val)
	inferred := countsFromShares(shares, r.n)
	// The strongest attack is the union of both: a guess gets as many
	// candidates as the two produce together.
	cands := firstLayerInversion(e.arch, avg)
	if e.cfg.MatchIters > 0 {
		cands = append(cands, e.gradientMatch(global, avg, labelList(inferred), matchConfig{iters: e.cfg.MatchIters, lr: matchLR}, rng)...)
	}
	guesses := make([][]float64, max(len(cands), 1))
	for i := range guesses {
		guesses[i] = e.valRaw.Row(rng.IntN(e.valRaw.Len()))
	}
	if e.image {
		pix := make([][]float64, len(cands))
		for i, c := range cands {
			pix[i] = e.unscale(c)
		}
		s.psnr, s.ssim, s.originals, s.recons = e.bestImages(r.truth, pix)
		s.psnrG, s.ssimG, _, _ = e.bestImages(r.truth, guesses)
	} else {
		scaledGuesses := make([][]float64, len(guesses))
		g := e.scaler.Apply(model.Examples{X: flat(guesses), Y: make([]int, len(guesses)), Features: e.train.Features})
		for i := range scaledGuesses {
			scaledGuesses[i] = g.Row(i)
		}
		s.rowD, s.featE = bestRows(r.truth, cands)
		s.rowDG, s.featEG = bestRows(r.truth, scaledGuesses)
	}
	truth := counts(r.truth.Y, e.classes)
	s.label = labelOverlap(inferred, truth)
	s.labelG = labelOverlap(countsFromShares(e.prior, r.n), truth)
	auc, err := e.membership(m, global, r)
	if err != nil {
		return s, err
	}
	s.auc = auc
	return s, nil
}

// membership scores each candidate row by the cosine between the released
// sum and the descent direction of that row's loss at the global model:
// training on a row moves the parameters along −∇ℓ(row), so members align
// with the update (the gradient-alignment test of Nasr et al. 2019, in its
// simplest form). Non-members are test rows of the same labels as the
// members, so that label skew alone does not pass for membership.
func (e *env) membership(m model.Model, global []float64, r release) (float64, error) {
	if err := m.SetParams(global); err != nil {
		return 0, err
	}
	g := make([]float64, len(global))
	scoreRow := func(data model.Examples, i int) (float64, error) {
		if err := m.Gradient(data.Subset([]int{i}), g); err != nil {
			return 0, err
		}
		return -Cosine(r.sum, g), nil
	}
	non := e.labelMatched(r.truth.Y)
	var mem, nonm []float64
	for i := range r.truth.Len() {
		v, err := scoreRow(r.truth, i)
		if err != nil {
			return 0, err
		}
		mem = append(mem, v)
	}
	for _, i := range non {
		v, err := scoreRow(e.test, i)
		if err != nil {
			return 0, err
		}
		nonm = append(nonm, v)
	}
	return AUC(mem, nonm), nil
}

// labelMatched picks, for each label in ys, a test row of that label, in
// turn, so non-members follow the members' label distribution.
func (e *env) labelMatched(ys []int) []int {
	byClass := make([][]int, e.classes)
	for i, y := range e.test.Y {
		byClass[y] = append(byClass[y], i)
	}
	next := make([]int, e.classes)
	out := make([]int, 0, len(ys))
	for _, y := range ys {
		if len(byClass[y]) == 0 {
			continue
		}
		out = append(out, byClass[y][next[y]%len(byClass[y])])
		next[y]++
	}
	return out
}

func flat(rows [][]float64) []float64 {
	var out []float64
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}

// unscale maps a scaled row back to raw pixels, clipped to the pixel range.
func (e *env) unscale(z []float64) []float64 {
	out := make([]float64, len(z))
	for i, v := range z {
		out[i] = min(max(v*e.scaler.Std[i]+e.scaler.Mean[i], e.lo), e.hi)
	}
	return out
}

// assign pairs each true row with a distinct candidate, greedily by
// similarity (the most similar remaining pair first), as gradient-
// inversion papers pair reconstructions with originals one to one; true
// rows left over when there are fewer candidates than rows are paired
// with fallback, the attacker's constant best guess (the mean of its
// validation rows). A candidate claims at most one row, so a release
// cannot score well by producing many candidates, and guessing gets the
// same number of candidates.
func assign(truth, cands [][]float64, sim func(a, b []float64) float64, fallback []float64) [][]float64 {
	type pair struct {
		t, c int
		s    float64
	}
	pairs := make([]pair, 0, len(truth)*len(cands))
	for t, x := range truth {
		for c, y := range cands {
			pairs = append(pairs, pair{t, c, sim(x, y)})
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		switch {
		case a.s > b.s:
			return -1
		case a.s < b.s:
			return 1
		}
		return 0
	})
	out := make([][]float64, len(truth))
	used := make([]bool, len(cands))
	left := min(len(truth), len(cands))
	for _, p := range pairs {
		if left == 0 {
			break
		}
		if out[p.t] != nil || used[p.c] {
			continue
		}
		out[p.t], used[p.c] = cands[p.c], true
		left--
	}
	for t := range out {
		if out[t] == nil {
			out[t] = fallback
		}
	}
	return out
}

// meanRow is the column mean of rows.
func meanRow(rows [][]float64) []float64 {
	out := make([]float64, len(rows[0]))
	for _, r := range rows {
		for i, v := range r {
			out[i] += v / float64(len(rows))
		}
	}
	return out
}

// bestImages pairs the true images (scaled rows, unscaled here) one to
// one with the candidates by SSIM (assign) and returns the mean PSNR and
// SSIM of the pairs, with the pairs.
func (e *env) bestImages(truth model.Examples, cands [][]float64) (psnr, ssim float64, orig, rec [][]float64) {
	for i := range truth.Len() {
		orig = append(orig, e.unscale(truth.Row(i)))
	}
	rec = assign(orig, cands, func(a, b []float64) float64 { return SSIM(a, b, e.side, e.hi-e.lo) }, e.meanImage)
	for i := range orig {
		ssim += SSIM(orig[i], rec[i], e.side, e.hi-e.lo)
		psnr += min(PSNR(orig[i], rec[i], e.hi-e.lo), psnrCap)
	}
	n := float64(truth.Len())
	return psnr / n, ssim / n, orig, rec
}

// bestRows pairs the true rows one to one with the candidates by RMS
// distance in standard deviations (assign) and returns the mean distance
// and the mean absolute per-feature error of the pairs.
func bestRows(truth model.Examples, cands [][]float64) (dist, feat float64) {
	rows := make([][]float64, truth.Len())
	for i := range rows {
		rows[i] = truth.Row(i)
	}
	zero := make([]float64, truth.Features) // the scaled mean row
	rec := assign(rows, cands, func(a, b []float64) float64 { return -rms(a, b) }, zero)
	for i, x := range rows {
		dist += rms(x, rec[i])
		mae := 0.0
		for f := range x {
			mae += math.Abs(x[f] - rec[i][f])
		}
		feat += mae / float64(len(x))
	}
	n := float64(truth.Len())
	return dist / n, feat / n
}
