package audit

import (
	"math"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/model"
	"github.com/tallyfl/tally/valuation"
)

// The projection mode's releases (issue 16): per client and round, m
// scalars s_j = ⟨nᵢΔᵢ, v_j⟩ against public vectors v_1 … v_m
// (valuation.ProjectionVectors: the round's decrypted total, validation
// gradients at three points of its line, per-class validation gradient
// parts; unit norm, off the previous round's change).
//
// The attack is the strongest the scalars allow without further
// assumptions: the least-squares recovery of the client's update in the
// span of the vectors. With an orthonormal basis u_k = Σ_j R_kj·v_j of the
// span (Gram–Schmidt, public), the coordinates c_k = Σ_j R_kj·s_j =
// ⟨nᵢΔᵢ, u_k⟩ are exact, and P̂ = Σ_k c_k·u_k is the minimum-norm
// solution of Vᵀx = s, the projection of nᵢΔᵢ onto the span. From P̂ the
// attacks are those of a whole update, restricted to what the span
// holds: first-layer inversion of P̂/nᵢ of every round (a blend of
// whatever rows the span's directions carry, which are validation
// gradients, not the client's), label shares by non-negative least
// squares of the coordinates against the class-conditional validation
// gradients' coordinates (scalarShares over every round and direction),
// and membership by the correlation, over every round and direction,
// between the coordinates and a candidate row's own ⟨u_k, −∇ℓ(row)⟩.
// Gradient matching is not run on P̂: matching a dummy row's gradient
// inside a ≤ 9-dimensional span constrains ≤ 9 numbers per round, far
// fewer than a row's features, and costs the most of any attack.

// span is an orthonormal basis of a round's public vectors and the
// change of basis from their scalars to its coordinates.
type span struct {
	u [][]float64 // orthonormal directions
	r [][]float64 // u_k = Σ_j r[k][j]·v_j
}

// spanTol drops a Gram–Schmidt residual below this norm (the vectors
// have unit norm): a direction the others already nearly span, whose
// coordinate the scalars' decryption noise would dominate.
const spanTol = 1e-3

// newSpan orthonormalises vectors (modified Gram–Schmidt, in order).
func newSpan(vectors [][]float64) span {
	var s span
	m := len(vectors)
	for j, v := range vectors {
		w := append([]float64(nil), v...)
		coef := make([]float64, m)
		coef[j] = 1
		for k, u := range s.u {
			d := dot(u, w)
			for i := range w {
				w[i] -= d * u[i]
			}
			for i := range coef {
				coef[i] -= d * s.r[k][i]
			}
		}
		n := math.Sqrt(dot(w, w))
		if n < spanTol {
			continue
		}
		for i := range w {
			w[i] /= n
		}
		for i := range coef {
			coef[i] /= n
		}
		s.u, s.r = append(s.u, w), append(s.r, coef)
	}
	return s
}

// coords maps a client's scalars s_j = ⟨x, v_j⟩ to ⟨x, u_k⟩.
func (s span) coords(scalars []float64) []float64 {
	out := make([]float64, len(s.u))
	for k, row := range s.r {
		for j, c := range row {
			out[k] += c * scalars[j]
		}
	}
	return out
}

// project is ⟨x, u_k⟩ for a vector x in the clear.
func (s span) project(x []float64) []float64 {
	out := make([]float64, len(s.u))
	for k, u := range s.u {
		out[k] = dot(u, x)
	}
	return out
}

// recover is Σ_k c_k·u_k, the update's component in the span.
func (s span) recover(c []float64) []float64 {
	if len(s.u) == 0 {
		return nil
	}
	out := make([]float64, len(s.u[0]))
	for k, u := range s.u {
		for i, v := range u {
			out[i] += c[k] * v
		}
	}
	return out
}

// projectionVectors are the round's public vectors as the coordinator's
// valuer builds them (coordinator.ModelValuer.ProjectionVectors with the
// default line-search step and loss utility): from base after the server's
// own step along known, the validation gradients over val or its per-class
// parts.
func projectionVectors(m model.Model, val model.Examples, classes int, base, known, total []float64) ([][]float64, []float64, error) {
	score := func(p []float64) (float64, error) {
		if err := m.SetParams(p); err != nil {
			return 0, err
		}
		met, err := m.Evaluate(val)
		return -met.Loss, err
	}
	at, err := valuation.KnownStep(base, known, score)
	if err != nil {
		return nil, nil, err
	}
	vs, err := engine.ModelProjectionVectors(m, val, classes, at, total, known)
	return vs, at, err
}

// projSeries is what the projection attack holds of one client: per
// round its coordinates, the class gradients' and the candidate rows'
// coordinates, and the recovered update components.
type projSeries struct {
	n      int         // the client's reported sample count
	c, h   [][]float64 // per (round, direction): the client's coordinate; the classes'
	mem    [][]float64 // [row][(round, direction)]
	non    [][]float64
	recons [][]float64 // first-layer candidates from each round's P̂/n
}

// add records one round: sp the round's span, scalars the client's m
// scalars, classGrads the class-conditional validation gradients at the
// round's model, memG / nonG each candidate row's gradient there.
func (p *projSeries) add(e *env, sp span, scalars []float64, classGrads, memG, nonG [][]float64) {
	c := sp.coords(scalars)
	for k := range c {
		p.c = append(p.c, []float64{c[k]})
		hk := make([]float64, len(classGrads))
		for j, g := range classGrads {
			if g != nil {
				hk[j] = dot(sp.u[k], g)
			}
		}
		p.h = append(p.h, hk)
	}
	for set, gs := range [][][]float64{memG, nonG} {
		dst := &p.mem
		if set == 1 {
			dst = &p.non
		}
		if *dst == nil {
			*dst = make([][]float64, len(gs))
		}
		for row, g := range gs {
			for _, u := range sp.u {
				(*dst)[row] = append((*dst)[row], -dot(u, g))
			}
		}
	}
	if rec := sp.recover(c); rec != nil && p.n > 0 {
		for i := range rec {
			rec[i] /= float64(p.n)
		}
		p.recons = append(p.recons, firstLayerInversion(e.arch, rec)...)
	}
}

// score attacks the series: reconstruction against truth (scaled rows),
// label shares and membership, each beside guessing.
func (p *projSeries) score(e *env, truth model.Examples, rng interface{ IntN(int) int }) score {
	var s score
	guesses := make([][]float64, max(len(p.recons), 1))
	for i := range guesses {
		guesses[i] = e.valRaw.Row(rng.IntN(e.valRaw.Len()))
	}
	if e.image {
		pix := make([][]float64, len(p.recons))
		for i, c := range p.recons {
			pix[i] = e.unscale(c)
		}
		s.psnr, s.ssim, s.originals, s.recons = e.bestImages(truth, pix)
		s.psnrG, s.ssimG, _, _ = e.bestImages(truth, guesses)
	} else {
		g := e.scaler.Apply(model.Examples{X: flat(guesses), Y: make([]int, len(guesses)), Features: truth.Features})
		scaled := make([][]float64, len(guesses))
		for i := range scaled {
			scaled[i] = g.Row(i)
		}
		s.rowD, s.featE = bestRows(truth, p.recons)
		s.rowDG, s.featEG = bestRows(truth, scaled)
	}
	scale := -float64(p.n) * e.cfg.Train.LearningRate * stepWeight(p.n, e.cfg.Train)
	y := make([]float64, len(p.c))
	for i, c := range p.c {
		y[i] = c[0] / scale
	}
	counts0 := counts(truth.Y, e.classes)
	if len(p.h) > 0 {
		s.label = labelOverlap(countsFromShares(scalarShares(p.h, y, 5000), truth.Len()), counts0)
	} else {
		s.label = math.NaN()
	}
	s.labelG = labelOverlap(countsFromShares(e.prior, truth.Len()), counts0)
	all := make([]float64, len(p.c))
	for i, c := range p.c {
		all[i] = c[0]
	}
	var mem, non []float64
	for _, a := range p.mem {
		mem = append(mem, pearson(all, a))
	}
	for _, a := range p.non {
		non = append(non, pearson(all, a))
	}
	s.auc = AUC(mem, non)
	return s
}

// classGradients are the class-conditional validation gradients at the
// model m holds (nil for a class without validation rows).
func classGradients(m model.Model, byClass []model.Examples) ([][]float64, error) {
	out := make([][]float64, len(byClass))
	for j, vj := range byClass {
		if vj.Len() == 0 {
			continue
		}
		out[j] = make([]float64, m.NumParams())
		if err := m.Gradient(vj, out[j]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// rowGradients is each row's own gradient at the model m holds.
func rowGradients(m model.Model, data model.Examples) ([][]float64, error) {
	out := make([][]float64, data.Len())
	for i := range out {
		out[i] = make([]float64, m.NumParams())
		if err := m.Gradient(data.Subset([]int{i}), out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}
