package audit

import (
	"math"
	"math/rand/v2"
)

// backprop runs one row through the model with parameters p and
// accumulates scale·∇_θ ℓ(x, y) into gp (when gp is not nil) and writes
// ∇_x ℓ(x, y) into gx (when gx is not nil), ℓ the softmax cross-entropy.
// It is the same network as package model's (checked against
// model.Gradient in the tests), written out so the attacker can
// differentiate with respect to the input, which model does not offer.
func (a arch) backprop(p, x []float64, y int, gp []float64, scale float64, gx []float64) {
	L := len(a.widths) - 1
	acts := make([][]float64, L+1)
	pre := make([][]float64, L+1)
	acts[0] = x
	for l := 1; l <= L; l++ {
		in, n := a.widths[l-1], a.widths[l]
		z := make([]float64, n)
		copy(z, p[a.b[l-1]:a.b[l-1]+n])
		h := acts[l-1]
		for i := range in {
			if h[i] == 0 {
				continue
			}
			row := p[a.w[l-1]+i*n : a.w[l-1]+(i+1)*n]
			for j := range n {
				z[j] += h[i] * row[j]
			}
		}
		pre[l] = z
		out := make([]float64, n)
		if l < L {
			for j, v := range z {
				if a.tanh {
					out[j] = math.Tanh(v)
				} else {
					out[j] = max(v, 0)
				}
			}
		} else {
			mx := math.Inf(-1)
			for _, v := range z {
				mx = max(mx, v)
			}
			s := 0.0
			for j, v := range z {
				out[j] = math.Exp(v - mx)
				s += out[j]
			}
			for j := range out {
				out[j] /= s
			}
		}
		acts[l] = out
	}
	delta := append([]float64(nil), acts[L]...)
	delta[y]--
	for l := L; l >= 1; l-- {
		in, n := a.widths[l-1], a.widths[l]
		h := acts[l-1]
		if gp != nil {
			for j := range n {
				gp[a.b[l-1]+j] += scale * delta[j]
			}
			for i := range in {
				if h[i] == 0 {
					continue
				}
				row := gp[a.w[l-1]+i*n : a.w[l-1]+(i+1)*n]
				for j := range n {
					row[j] += scale * h[i] * delta[j]
				}
			}
		}
		if l == 1 && gx == nil {
			break
		}
		back := make([]float64, in)
		for i := range in {
			row := p[a.w[l-1]+i*n : a.w[l-1]+(i+1)*n]
			s := 0.0
			for j := range n {
				s += row[j] * delta[j]
			}
			back[i] = s
		}
		if l == 1 {
			copy(gx, back)
			break
		}
		for i := range back {
			if a.tanh {
				back[i] *= 1 - h[i]*h[i]
			} else if pre[l-1][i] <= 0 {
				back[i] = 0
			}
		}
		delta = back
	}
}

// matchConfig sets the gradient-matching optimisation.
type matchConfig struct {
	iters int
	lr    float64 // Adam step in standardised feature units
}

// gradientMatch is the optimisation attack of DLG (Zhu et al. 2019) in the
// form of Geiping et al. (2020): dummy rows, with the labels the label
// attack inferred, are moved by Adam (signed gradients in Geiping et al.;
// plain Adam here) to maximise the cosine between their mean gradient at
// the global model and the observed update direction −Δ, within a box
// constraint to the feature range (for images, the pixel range 0–16).
// Geiping et al.'s total-variation prior made 8×8 digits worse at every
// weight tried (3·10⁻⁴ to 3·10⁻² on the baseline), so there is none.
// Local training takes several momentum steps, which the single gradient
// at the global model only approximates (FedSGD's view of a FedAvg
// update); the cosine forgives the scale.
//
// The gradient of the cosine with respect to a row needs the mixed second
// derivative ∂/∂x ⟨∇_θ ℓ(x), V⟩ for V = ∂cos/∂G held fixed; that is the
// derivative along V of ∇_x ℓ in parameter space, taken here by a central
// difference, (∇_x ℓ(x; θ+εV) − ∇_x ℓ(x; θ−εV))/(2ε), exact to O(ε²) away
// from ReLU kinks.
func (e *env) gradientMatch(global, update []float64, labels []int, mc matchConfig, rng *rand.Rand) [][]float64 {
	a := e.arch
	np, f, n := len(global), e.train.Features, len(labels)
	if n == 0 {
		return nil
	}
	target := make([]float64, np)
	for i, v := range update {
		target[i] = -v
	}
	tNorm := math.Sqrt(dot(target, target))
	if tNorm == 0 {
		return nil
	}
	lo, hi := make([]float64, f), make([]float64, f)
	for i := range f {
		if e.image {
			lo[i] = (e.lo - e.scaler.Mean[i]) / e.scaler.Std[i]
			hi[i] = (e.hi - e.scaler.Mean[i]) / e.scaler.Std[i]
		} else {
			lo[i], hi[i] = -5, 5
		}
	}
	xs := make([][]float64, n)
	for b := range xs {
		xs[b] = make([]float64, f)
		for i := range xs[b] {
			xs[b][i] = min(max(0.5*rng.NormFloat64(), lo[i]), hi[i])
		}
	}
	m1 := make([][]float64, n)
	m2 := make([][]float64, n)
	for b := range xs {
		m1[b], m2[b] = make([]float64, f), make([]float64, f)
	}
	const beta1, beta2, adamEps = 0.9, 0.999, 1e-8
	g := make([]float64, np)
	v := make([]float64, np)
	plus, minus := make([]float64, np), make([]float64, np)
	gp, gm := make([]float64, f), make([]float64, f)
	grad := make([]float64, f)
	for it := 1; it <= mc.iters; it++ {
		clear(g)
		for b, x := range xs {
			a.backprop(global, x, labels[b], g, 1/float64(n), nil)
		}
		gNorm := math.Sqrt(dot(g, g))
		if gNorm == 0 {
			break
		}
		cos := dot(g, target) / (gNorm * tNorm)
		for i := range v {
			v[i] = target[i]/(gNorm*tNorm) - cos*g[i]/(gNorm*gNorm)
		}
		vNorm := math.Sqrt(dot(v, v))
		eps := 1e-3 * math.Sqrt(float64(np)) / max(vNorm, 1e-300)
		for i := range v {
			plus[i] = global[i] + eps*v[i]
			minus[i] = global[i] - eps*v[i]
		}
		for b, x := range xs {
			a.backprop(plus, x, labels[b], nil, 0, gp)
			a.backprop(minus, x, labels[b], nil, 0, gm)
			for i := range grad {
				// Descent on 1 − cos.
				grad[i] = -(gp[i] - gm[i]) / (2 * eps) / float64(n)
			}
			for i := range x {
				m1[b][i] = beta1*m1[b][i] + (1-beta1)*grad[i]
				m2[b][i] = beta2*m2[b][i] + (1-beta2)*grad[i]*grad[i]
				mh := m1[b][i] / (1 - math.Pow(beta1, float64(it)))
				vh := m2[b][i] / (1 - math.Pow(beta2, float64(it)))
				x[i] = min(max(x[i]-mc.lr*mh/(math.Sqrt(vh)+adamEps), lo[i]), hi[i])
			}
		}
	}
	return xs
}

// labelList expands class counts into one label per dummy row.
func labelList(c []int) []int {
	var out []int
	for j, k := range c {
		for range k {
			out = append(out, j)
		}
	}
	return out
}
