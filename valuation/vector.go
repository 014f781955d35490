package valuation

import (
	"context"
	"fmt"
	"math"
)

// checkUpdates validates a round's updates and weights: one weight per
// update, every update of the same length dim (or of updates[0]'s length when
// dim < 0), everything finite, weights positive. Errors name the player.
func checkUpdates(updates [][]float64, weights []float64, dim int) error {
	if len(updates) == 0 {
		return fmt.Errorf("%w: no updates", ErrPlayers)
	}
	if len(weights) != len(updates) {
		return fmt.Errorf("%w: %d updates, %d weights", ErrLength, len(updates), len(weights))
	}
	if dim < 0 {
		dim = len(updates[0])
	}
	for i, u := range updates {
		if len(u) != dim {
			return fmt.Errorf("%w: player %d: update has %d values, want %d", ErrLength, i, len(u), dim)
		}
		for k, x := range u {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("%w: player %d: update[%d] = %v", ErrInput, i, k, x)
			}
		}
		if w := weights[i]; !(w > 0) || math.IsInf(w, 0) {
			return fmt.Errorf("%w: player %d: weight %v", ErrWeight, i, w)
		}
	}
	return nil
}

// CosineToAggregate returns, for each player, the cosine between its update
// and the weighted aggregate Σ_j n_j Δ_j / Σ_j n_j: CGSV's per-round
// contribution signal (Xu et al. 2021). A zero update, or a zero aggregate,
// gets 0. Values lie in [−1, 1]; they are not in utility units and do not sum
// to anything, so they do not combine with the coalition methods' values
// without a normalisation chosen by the caller.
func CosineToAggregate(updates [][]float64, weights []float64) ([]float64, error) {
	if err := checkUpdates(updates, weights, -1); err != nil {
		return nil, err
	}
	agg := aggregate(updates, weights)
	na := norm(agg)
	out := make([]float64, len(updates))
	for i, u := range updates {
		nu := norm(u)
		if nu == 0 || na == 0 {
			continue
		}
		out[i] = dot(u, agg) / (nu * na)
	}
	return out, nil
}

// InfluenceCoefficients returns a_i = ⟨g, n_i·Δ_i⟩, where g is the gradient of
// the validation loss at the current model. These are the scalars the
// "influence" privacy mode decrypts (one per client per round), and the input
// of NewSurrogateGame.
func InfluenceCoefficients(grad []float64, updates [][]float64, weights []float64) ([]float64, error) {
	if err := checkUpdates(updates, weights, len(grad)); err != nil {
		return nil, err
	}
	for k, x := range grad {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%w: gradient[%d] = %v", ErrInput, k, x)
		}
	}
	a := make([]float64, len(updates))
	for i, u := range updates {
		a[i] = weights[i] * dot(grad, u)
	}
	return a, nil
}

// Influence returns the first-order (DIG-FL-style, Wang et al. 2022)
// contribution of each player to the improvement of the validation quality:
// φ_i = −⟨g, n_i·Δ_i⟩ / Σ_j n_j, where g is the gradient of the validation
// loss at the current model. To first order in the step, the full aggregate
// changes the loss by ⟨g, Σ_j n_j Δ_j⟩/Σ_j n_j, so the φ_i sum to the
// first-order improvement of U = −loss (efficiency). Values are in units of
// negative loss.
func Influence(grad []float64, updates [][]float64, weights []float64) ([]float64, error) {
	a, err := InfluenceCoefficients(grad, updates, weights)
	if err != nil {
		return nil, err
	}
	total := 0.0
	for _, w := range weights {
		total += w
	}
	for i := range a {
		a[i] = -a[i] / total
	}
	return a, nil
}

// SurrogateGame is the first-order surrogate of the federated game built from
// per-player scalars a_i = ⟨∇L_val, n_i Δ_i⟩ and weights n_i:
// U(S) = −Σ_S a_i / Σ_S n_i, U(∅) = 0. It is exact when the validation loss
// is linear in the parameters along the updates, and otherwise accurate to
// first order in the step size (see doc.go). It is immutable and safe for
// concurrent use.
type SurrogateGame struct {
	a, n []float64
}

// NewSurrogateGame copies a and n. It fails with ErrLength, ErrWeight,
// ErrInput or ErrPlayers.
func NewSurrogateGame(a, n []float64) (*SurrogateGame, error) {
	if len(a) != len(n) {
		return nil, fmt.Errorf("%w: %d coefficients, %d weights", ErrLength, len(a), len(n))
	}
	if err := checkPlayers(len(a)); err != nil {
		return nil, err
	}
	for i := range a {
		if math.IsNaN(a[i]) || math.IsInf(a[i], 0) {
			return nil, fmt.Errorf("%w: player %d: coefficient %v", ErrInput, i, a[i])
		}
		if !(n[i] > 0) || math.IsInf(n[i], 0) {
			return nil, fmt.Errorf("%w: player %d: weight %v", ErrWeight, i, n[i])
		}
	}
	return &SurrogateGame{a: append([]float64(nil), a...), n: append([]float64(nil), n...)}, nil
}

// Players returns the number of players.
func (g *SurrogateGame) Players() int { return len(g.a) }

// Utility returns −Σ_S a_i / Σ_S n_i, or 0 for the empty coalition.
func (g *SurrogateGame) Utility(ctx context.Context, s Coalition) (float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if s&^Grand(len(g.a)) != 0 {
		return 0, fmt.Errorf("%w: %v in a game of %d players", ErrCoalition, s, len(g.a))
	}
	if s == 0 {
		return 0, nil
	}
	var sa, sn float64
	for i := range g.a {
		if s.Has(i) {
			sa += g.a[i]
			sn += g.n[i]
		}
	}
	return -sa / sn, nil
}

func aggregate(updates [][]float64, weights []float64) []float64 {
	agg := make([]float64, len(updates[0]))
	total := 0.0
	for _, w := range weights {
		total += w
	}
	for i, u := range updates {
		c := weights[i] / total
		for k, x := range u {
			agg[k] += c * x
		}
	}
	return agg
}

func dot(a, b []float64) float64 {
	s := 0.0
	for k := range a {
		s += a[k] * b[k]
	}
	return s
}

func norm(a []float64) float64 { return math.Sqrt(dot(a, a)) }
