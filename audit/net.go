package audit

import (
	"math"

	"github.com/tallyfl/tally/model"
)

// arch is the layer layout of a built-in model (model/doc.go, "Architecture
// and parameter layout"): widths d₀…d_L and, per layer, the offsets of W_l
// (d_{l−1}×d_l, row-major) and b_l in the flat parameter vector. The
// attacks read updates through it, as a coordinator that knows the job's
// model spec can.
type arch struct {
	widths []int
	w, b   []int
	tanh   bool
}

func newArch(spec model.Spec, features, classes int) arch {
	spec = spec.WithDefaults()
	a := arch{widths: append(append([]int{features}, spec.Hidden...), classes), tanh: spec.Activation == model.ActTanh}
	off := 0
	for l := 1; l < len(a.widths); l++ {
		a.w = append(a.w, off)
		off += a.widths[l-1] * a.widths[l]
		a.b = append(a.b, off)
		off += a.widths[l]
	}
	return a
}

// numParams is the length of the parameter vector.
func (a arch) numParams() int {
	last := len(a.widths) - 1
	return a.b[last-1] + a.widths[last]
}

// probs writes the softmax output of the model with parameters p on row x
// into out (len classes). It is a plain forward pass, used by the attacker
// to read the global model's predictions on its own validation rows.
func (a arch) probs(p, x, out []float64) {
	h := x
	for l := 1; l < len(a.widths); l++ {
		in, n := a.widths[l-1], a.widths[l]
		z := make([]float64, n)
		copy(z, p[a.b[l-1]:a.b[l-1]+n])
		for i := range in {
			if h[i] == 0 {
				continue
			}
			row := p[a.w[l-1]+i*n : a.w[l-1]+(i+1)*n]
			for j := range n {
				z[j] += h[i] * row[j]
			}
		}
		if l < len(a.widths)-1 {
			for j := range z {
				if a.tanh {
					z[j] = math.Tanh(z[j])
				} else {
					z[j] = max(z[j], 0)
				}
			}
		}
		h = z
	}
	mx := math.Inf(-1)
	for _, v := range h {
		mx = max(mx, v)
	}
	s := 0.0
	for j, v := range h {
		out[j] = math.Exp(v - mx)
		s += out[j]
	}
	for j := range out {
		out[j] /= s
	}
}
