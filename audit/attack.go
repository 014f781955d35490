package audit

import (
	"math"

	"github.com/tallyfl/tally/model"
)

// firstLayerInversion is the analytic attack on the first layer. For any
// unit j of the first layer (a class of logistic regression, a hidden
// neuron of the MLP) the gradient of one row's loss is x·δⱼ for the weights
// W₁[·][j] and δⱼ for the bias b₁[j], so W₁[·][j] ÷ b₁[j] is the row itself
// (Phong et al. 2017; the label-wise form is iDLG's starting point). Local
// training sums such gradients over rows, steps and momentum, so a unit's
// ratio is in general an affine combination Σ_b c_bj·x_b / Σ_b c_bj of the
// rows that reached it: exact when one row did (one example; a ReLU neuron
// that fired for one row only, the separation Fowl et al. 2022 engineer),
// a blend otherwise. It returns one candidate per unit whose bias moved,
// in the scaled feature space the client trained in.
func firstLayerInversion(a arch, update []float64) [][]float64 {
	in, n := a.widths[0], a.widths[1]
	db := update[a.b[0] : a.b[0]+n]
	maxB := 0.0
	for _, v := range db {
		maxB = max(maxB, math.Abs(v))
	}
	var out [][]float64
	for j := range n {
		// A unit whose bias barely moved divides noise by noise: dead
		// ReLUs and units that saw cancelling rows.
		if maxB == 0 || math.Abs(db[j]) < 1e-6*maxB {
			continue
		}
		x := make([]float64, in)
		for i := range in {
			x[i] = update[a.w[0]+i*n+j] / db[j]
		}
		out = append(out, x)
	}
	return out
}

// stepWeight is Σ_s ω_s for the momentum SGD of model.Train: the update is
// Δ = −η·Σ_s ω_s·g_s with ω_s = (1 − μ^{S−s+1})/(1 − μ) over S steps, since
// the gradient of step s stays in the velocity, decayed by μ, for every
// later step. The attacker knows S from the sample count each client
// reports and the job's epochs and batch size.
func stepWeight(rows int, cfg model.TrainConfig) float64 {
	steps := cfg.Epochs * ((rows + cfg.BatchSize - 1) / cfg.BatchSize)
	mu := cfg.Momentum
	w := 0.0
	for s := 1; s <= steps; s++ {
		if mu == 0 {
			w++
			continue
		}
		w += (1 - math.Pow(mu, float64(steps-s+1))) / (1 - mu)
	}
	return w
}

// labelShares estimates the label distribution of the rows behind an
// average update Δ (one client's, or Σ nᵢΔᵢ / Σ nᵢ for a sum). The last
// layer's bias gradient of one row is p − onehot(y), so Δb_L ≈ −η·Ω·(p̄ −
// π) with Ω = stepWeight (each row's share of the steps' weights), p̄ the
// mean prediction and π the label shares: π̂ = p̄ + Δb_L/(η·Ω), projected
// onto the simplex. The attacker's p̄ is the mean prediction on its own
// validation rows, averaged between the global model and the global model
// moved by Δ. For one row this is iDLG's rule (Zhao et al. 2020): the label
// is the one entry of Δb_L of the other sign.
func labelShares(a arch, global, update []float64, rows int, cfg model.TrainConfig, val model.Examples) []float64 {
	classes := a.widths[len(a.widths)-1]
	moved := make([]float64, len(global))
	for i := range global {
		moved[i] = global[i] + update[i]
	}
	pbar := make([]float64, classes)
	p := make([]float64, classes)
	for _, params := range [][]float64{global, moved} {
		for r := range val.Len() {
			a.probs(params, val.Row(r), p)
			for j := range p {
				pbar[j] += p[j]
			}
		}
	}
	scale := cfg.LearningRate * stepWeight(rows, cfg)
	db := update[a.b[len(a.b)-1]:]
	est := make([]float64, classes)
	for j := range est {
		est[j] = pbar[j]/float64(2*val.Len()) + db[j]/scale
	}
	return projectSimplex(est)
}

// scalarShares fits the label shares behind one client's influence
// scalars. To first order, Δᵢ,ᵣ ≈ −η·Ω·∇L_{Dᵢ}(w_r) and ∇L_{Dᵢ} ≈ Σ_j πᵢⱼ·∇L_j,
// the mean gradient of class j's rows (the attacker takes them from its
// validation rows), so yᵣ = aᵢ,ᵣ/(−nᵢ·η·Ω) ≈ Σ_j πᵢⱼ·h_{r,j} with
// h_{r,j} = ⟨∇L_val(w_r), ∇L_j(w_r)⟩. Momentum and many local steps bend
// the scale of that approximation more than its direction, so the fit is
// non-negative least squares, min_β ≥ 0 ‖H·β − y‖², by projected gradient
// descent with step 1/‖H‖²_F (a bound on the gradient's Lipschitz
// constant), and π = β/Σβ. H is rounds × classes.
func scalarShares(h [][]float64, y []float64, iters int) []float64 {
	classes := len(h[0])
	beta := make([]float64, classes)
	for j := range beta {
		beta[j] = 1 / float64(classes)
	}
	lip := 0.0
	for _, row := range h {
		for _, v := range row {
			lip += v * v
		}
	}
	if lip == 0 {
		return beta
	}
	grad := make([]float64, classes)
	for range iters {
		clear(grad)
		for r, row := range h {
			res := -y[r]
			for j, v := range row {
				res += v * beta[j]
			}
			for j, v := range row {
				grad[j] += 2 * res * v
			}
		}
		for j := range beta {
			beta[j] = max(beta[j]-grad[j]/(2*lip), 0)
		}
	}
	total := 0.0
	for _, b := range beta {
		total += b
	}
	if total == 0 {
		for j := range beta {
			beta[j] = 1 / float64(classes)
		}
		return beta
	}
	for j := range beta {
		beta[j] /= total
	}
	return beta
}

// pearson is the correlation of a and b, 0 when either is constant.
func pearson(a, b []float64) float64 {
	n := float64(len(a))
	var ma, mb float64
	for i := range a {
		ma += a[i]
		mb += b[i]
	}
	ma /= n
	mb /= n
	var ab, aa, bb float64
	for i := range a {
		ab += (a[i] - ma) * (b[i] - mb)
		aa += (a[i] - ma) * (a[i] - ma)
		bb += (b[i] - mb) * (b[i] - mb)
	}
	if aa == 0 || bb == 0 {
		return 0
	}
	return ab / math.Sqrt(aa*bb)
}
