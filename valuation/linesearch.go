package valuation

import (
	"fmt"
	"math"
)

// The line-search utility (FederatedOptions.LineSearch) scores a coalition
// by the best server step along its direction instead of by a FedAvg step
// of fixed length. Under local momentum every client's step overshoots, so
// with a fixed step a coalition diluted by a zero or random update has a
// shorter, better step: exact Shapley paid a random free rider +0.48 to
// +0.85 on every demo seed (issue 15). With the step length chosen on the
// validation set, up to the coalition's own FedAvg step, diluting a
// coalition can only lower what it is worth: a shorter cap. An update
// inside the random-direction band around the validation gradient
// (FederatedOptions.Signal, NoiseKappa) counts as a zero update.
const (
	// StepMax bounds the free search along a coalition's direction, in
	// units of the grand coalition's FedAvg step length; the coalition's
	// own FedAvg step caps it further (lineGame.search), so it only
	// bounds the search's bracket.
	StepMax = 4.0
	// lineSearchIters bounds the parabolic jumps; lineTol is the step's
	// precision, relative to 1+step. Measured on six demo rounds (every
	// seventh coalition): the best score found fell short of a 4,000-point
	// grid over [0, StepMax] by at most 7.6e-6, against per-round values of
	// 1e-3 to 1e-1; 1e-3 saved a tenth of the evaluations (5.4 against 6.0
	// a coalition on a quadratic).
	lineSearchIters = 30
	lineTol         = 1e-3
	// lineShrinks: a step 4^-4 = 1/256 of the start that still does
	// worse than not moving means the coalition points uphill.
	lineShrinks = 4
	// knownTol: an update whose component off the known direction is at
	// most this fraction of its norm carries nothing new (an echo of the
	// previous global change, up to rounding) and counts as exactly zero.
	knownTol = 1e-9
	// NoiseKappa is the width of the noise band in standard deviations:
	// a random direction's cosine with a fixed vector in P dimensions has
	// mean 0 and standard deviation 1/√P, so |cos| ≤ κ/√P holds for it
	// with probability 99.73% at κ = 3. The demo's random free rider's
	// round 0 cosine on seed 5 was 0.28: inside 3/√62 = 0.38, outside
	// 2/√62. Applied in every round (tried first), the band also took 6–33%
	// of an honest client's updates in the demo's later rounds, where an
	// update's component along the validation gradient is small, and
	// moved the plain reference enough to lower projection mode's mean ρ
	// over the 13 experiment scenarios with more than 6 parameters from
	// 0.909 to 0.885, and it left every update of wsn's 6-parameter
	// scenarios inside (NoiseBandMax); so it applies to the first round
	// only (every honest update of the demo's round 0 had |cos| ≥ 0.80),
	// where a random direction's chance alignment is worth most.
	NoiseKappa = 3.0
	// NoiseBandMax: a band wider than this cosine cannot tell a random
	// direction from an honest one (κ/√P > ½ for P < 36 parameters: on
	// wsn's 6 it would be 1.22, every update inside), so there is none.
	NoiseBandMax = 0.5
)

// cgold is the golden-section fraction (3 − √5)/2 of Brent's method.
var cgold = (3 - math.Sqrt(5)) / 2

// maximise returns the largest f(t) found over t ∈ [0, hi], never less
// than f(0) = score0 (given: every coalition of a game shares it), so a
// step that does not help is not taken. It brackets a maximum from start
// (doubling the step while the score rises, or quartering it while the
// step does worse than not moving, at most lineShrinks times, after which
// not moving is the answer), then jumps to the vertex of the parabola
// through the bracket (Press et al., "Numerical Recipes", §10.2), keeping
// the bracket, until a jump gains less than lineFTol, lands within
// lineTol·(1+t) of the best point, or lineSearchIters jumps are made.
// Along a line the validation loss of a smooth model is unimodal and
// nearly quadratic near its minimum, so this takes about five
// evaluations from a start near the optimum. Measured on the demo's
// rounds: golden section took 27 evaluations a coalition and Brent's
// method 10 to 18 (it shrinks its bracket by golden steps towards an
// optimum at t = 0, the common case late in a job), which made make
// experiments run 10 to 20 times longer than the FedAvg game. For a
// non-convex model it finds a local maximum. Deterministic: the same f
// gives the same evaluations in the same order.
func maximise(f func(t float64) (float64, error), hi, start, score0 float64) (float64, error) {
	type pt struct{ t, v float64 }
	x := min(max(start, hi*1e-3), hi)
	fx, err := f(x)
	if err != nil {
		return 0, err
	}
	// a.t < b.t < c.t with b the best point so far: a bracket.
	var a, b, c pt
	if fx > score0 {
		a, b = pt{0, score0}, pt{x, fx}
		for {
			if b.t >= hi {
				// Still rising at hi: the maximum is in [a, hi].
				c = b
				break
			}
			t := min(2*b.t, hi)
			v, err := f(t)
			if err != nil {
				return 0, err
			}
			if v <= b.v {
				c = pt{t, v}
				break
			}
			a, b = b, pt{t, v}
		}
	} else {
		c = pt{x, fx}
		found := false
		for range lineShrinks {
			t := c.t / 4
			v, err := f(t)
			if err != nil {
				return 0, err
			}
			if v > score0 {
				a, b, found = pt{0, score0}, pt{t, v}, true
				break
			}
			c = pt{t, v}
		}
		if !found {
			return score0, nil
		}
	}
	// Brent's method inside the bracket, from its best point.
	best, err := brent(f, a.t, c.t, b.t, b.v)
	if err != nil {
		return 0, err
	}
	return max(best, score0), nil
}

// brent maximises f on [lo, hi] from x (f(x) = fx given) by Brent's method
// (R. P. Brent, "Algorithms for Minimization without Derivatives", 1973,
// ch. 5: parabolic interpolation with golden-section steps whenever a
// parabola does not shrink the bracket fast enough), to lineTol·(1+|x|) in
// the step or lineSearchIters steps, and returns the best score found.
func brent(f func(t float64) (float64, error), lo, hi, x, fx float64) (float64, error) {
	// Brent minimises; minimise −f.
	g := func(t float64) (float64, error) {
		v, err := f(t)
		return -v, err
	}
	a, b := lo, hi
	fx = -fx
	w, v, fw, fv := x, x, fx, fx
	var d, e float64
	for range lineSearchIters {
		m := (a + b) / 2
		tol := lineTol * (1 + math.Abs(x))
		if math.Abs(x-m) <= 2*tol-(b-a)/2 {
			break
		}
		parabolic := false
		if math.Abs(e) > tol {
			r := (x - w) * (fx - fv)
			q := (x - v) * (fx - fw)
			p := (x-v)*q - (x-w)*r
			q = 2 * (q - r)
			if q > 0 {
				p = -p
			}
			q = math.Abs(q)
			if math.Abs(p) < math.Abs(q*e/2) && p > q*(a-x) && p < q*(b-x) {
				e, d = d, p/q
				parabolic = true
				if u := x + d; u-a < 2*tol || b-u < 2*tol {
					d = math.Copysign(tol, m-x)
				}
			}
		}
		if !parabolic {
			if x >= m {
				e = a - x
			} else {
				e = b - x
			}
			d = cgold * e
		}
		u := x + d
		if math.Abs(d) < tol {
			u = x + math.Copysign(tol, d)
		}
		fu, err := g(u)
		if err != nil {
			return 0, err
		}
		if fu <= fx {
			if u >= x {
				a = x
			} else {
				b = x
			}
			v, w, x = w, x, u
			fv, fw, fx = fw, fx, fu
		} else {
			if u < x {
				a = u
			} else {
				b = u
			}
			if fu <= fw || w == x {
				v, w, fv, fw = w, u, fw, fu
			} else if fu <= fv || v == x || v == w {
				v, fv = u, fu
			}
		}
	}
	return -fx, nil
}

// lineGame is the precomputed state of a line-search federated game.
type lineGame struct {
	// base is the point coalitions step from: the round's model after the
	// server's own best step along the known direction.
	base []float64
	// dirs[i] is n_i·Δ_i with its component along the known direction
	// removed (nil when nothing is left: the player points nowhere new).
	dirs [][]float64
	// step is the grand coalition's FedAvg step length ‖Σ dirs‖/Σ n_i.
	step float64
	// f0 is the score of base, U(∅), the start of every search.
	f0 float64
	// weights are the players' n_i, for each coalition's FedAvg step.
	weights []float64
	// start is where every coalition's search starts: the grand
	// coalition's best step, near which most coalitions' optima lie.
	start float64
}

// newLineGame projects the updates off known, finds the server's own step
// along known (score must be deterministic; it is called from one
// goroutine) and returns the game's state, with U(∅) and the grand
// coalition's best step.
func newLineGame(base []float64, updates [][]float64, weights []float64, known, signal []float64, score func([]float64) (float64, error)) (*lineGame, error) {
	g := &lineGame{base: append([]float64(nil), base...), dirs: make([][]float64, len(updates)), weights: weights}
	var unit []float64
	if nk := norm(known); nk > 0 {
		unit = make([]float64, len(known))
		for k, x := range known {
			unit[k] = x / nk
		}
		// The server applies what it already knows itself: its best step
		// along the previous global change, in units of that change.
		buf := make([]float64, len(base))
		// maximise reports only the best score; its argument is tracked,
		// from t = 0 (not moving) on.
		s0, err := score(base)
		if err != nil {
			return nil, err
		}
		mu, best := 0.0, s0
		_, err = maximise(func(t float64) (float64, error) {
			for k := range buf {
				buf[k] = base[k] + t*known[k]
			}
			s, err := score(buf)
			if err == nil && s > best {
				best, mu = s, t
			}
			return s, err
		}, 2, 1, s0)
		if err != nil {
			return nil, err
		}
		for k := range g.base {
			g.base[k] += mu * known[k]
		}
	}
	var total float64
	sum := make([]float64, len(base))
	// The noise band applies only with nothing known (the job's first
	// round) and only where it can separate (NoiseBandMax).
	ns, band := norm(signal), NoiseKappa/math.Sqrt(float64(len(base)))
	if unit != nil || band > NoiseBandMax {
		ns = 0
	}
	for i, u := range updates {
		d := make([]float64, len(u))
		for k, x := range u {
			d[k] = weights[i] * x
		}
		nd := norm(d)
		if unit != nil {
			c := dot(d, unit)
			for k := range d {
				d[k] -= c * unit[k]
			}
		}
		total += weights[i]
		r := norm(d)
		if r == 0 || r <= knownTol*nd {
			continue
		}
		if ns > 0 && math.Abs(dot(d, signal)) <= band*r*ns {
			// Inside the noise band: no more aligned with the validation
			// gradient than a random direction (NoiseKappa).
			continue
		}
		g.dirs[i] = d
		for k, x := range d {
			sum[k] += x
		}
	}
	if total > 0 {
		g.step = norm(sum) / total
	}
	g.start = 1
	var err error
	if g.f0, err = score(g.base); err != nil {
		return nil, err
	}
	if len(updates) > 0 && len(updates) <= MaxPlayers {
		_, arg, err := g.search(Grand(len(updates)), score, make([]float64, len(base)), make([]float64, len(base)))
		if err != nil {
			return nil, err
		}
		if arg > 0 {
			g.start = arg
		}
	}
	if math.IsNaN(g.step) || math.IsInf(g.step, 0) {
		return nil, fmt.Errorf("%w: grand coalition step %v", ErrInput, g.step)
	}
	return g, nil
}

// utility is the best score along coalition s's direction from the base:
// max over t ∈ [0, StepMax] of score(base + t·step·d_S/‖d_S‖), with d_S the
// sum of the members' projected n_i·Δ_i added in increasing order. A
// coalition with no direction (empty, zeros, echoes) scores the base. dir
// and out are scratch buffers of the model's length.
func (g *lineGame) utility(s Coalition, score func([]float64) (float64, error), dir, out []float64) (float64, error) {
	v, _, err := g.search(s, score, dir, out)
	return v, err
}

// search is utility, also returning the best step found (in grand steps).
func (g *lineGame) search(s Coalition, score func([]float64) (float64, error), dir, out []float64) (float64, float64, error) {
	clear(dir)
	has := false
	var weight float64
	for i, d := range g.dirs {
		if !s.Has(i) {
			continue
		}
		weight += g.weights[i]
		if d == nil {
			continue
		}
		has = true
		for k, x := range d {
			dir[k] += x
		}
	}
	nd := norm(dir)
	if !has || nd == 0 || g.step == 0 {
		return g.f0, 0, nil
	}
	c := g.step / nd
	best, arg := math.Inf(-1), g.start
	v, err := maximise(func(t float64) (float64, error) {
		for k := range out {
			out[k] = g.base[k] + t*c*dir[k]
		}
		s, err := score(out)
		if err == nil && s > best {
			best, arg = s, t
		}
		return s, err
	}, StepMax, g.start, g.f0)
	if err != nil {
		return 0, 0, err
	}
	if g.f0 >= best {
		arg = 0
	}
	// No step beyond the coalition's own FedAvg step, of length
	// ‖d_S‖/Σ_S n_i (every member's weight counts, a zero update's too):
	// the loss is unimodal along the line, so when the free optimum lies
	// beyond, the capped one is at the cap. Diluting a coalition shortens
	// its cap and so can only lower its utility; while the cap does not
	// bind, the search, and so the utility, is the same bit for bit.
	if capT := nd / weight / g.step; arg > capT {
		for k := range out {
			out[k] = g.base[k] + capT*c*dir[k]
		}
		if v, err = score(out); err != nil {
			return 0, 0, err
		}
		v, arg = max(v, g.f0), capT
	}
	return v, arg, nil
}

// KnownStep returns the point a line-search game's coalitions step from:
// base after the server's own best step t·known, t ∈ [0, 2] (base itself
// when known is nil or zero). score must be deterministic.
func KnownStep(base, known []float64, score func([]float64) (float64, error)) ([]float64, error) {
	if known != nil && len(known) != len(base) {
		return nil, fmt.Errorf("%w: known direction of %d values, base %d", ErrLength, len(known), len(base))
	}
	g, err := newLineGame(base, nil, nil, known, nil, score)
	if err != nil {
		return nil, err
	}
	return g.base, nil
}

// ProjectOff returns v with its component along known removed (a copy of
// v when known is nil or zero): the influence mode's public vector, so
// that ⟨ProjectOff(∇L, u), Δ_i⟩ is the first-order gain of what Δ_i
// adds beyond the known direction u.
func ProjectOff(v, known []float64) []float64 {
	out := append([]float64(nil), v...)
	nk := norm(known)
	if nk == 0 || len(known) != len(v) {
		return out
	}
	c := dot(v, known) / (nk * nk)
	for k := range out {
		out[k] -= c * known[k]
	}
	return out
}
