package experiments

import (
	"math"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/tallyfl/tally/valuation"
)

// Spearman is Spearman's rank correlation (valuation.Spearman): NaN when
// either side is constant or has fewer than two values.
func Spearman(a, b []float64) float64 {
	if hasNaN(a) || hasNaN(b) {
		return math.NaN()
	}
	return valuation.Spearman(a, b)
}

// Pearson is the linear correlation of a and b; NaN when either is constant.
func Pearson(a, b []float64) float64 {
	if len(a) != len(b) || len(a) < 2 || hasNaN(a) || hasNaN(b) {
		return math.NaN()
	}
	ma, mb := mean(a), mean(b)
	var sab, saa, sbb float64
	for i := range a {
		da, db := a[i]-ma, b[i]-mb
		sab += da * db
		saa += da * da
		sbb += db * db
	}
	if saa == 0 || sbb == 0 {
		return math.NaN()
	}
	return sab / math.Sqrt(saa*sbb)
}

// KendallTau is Kendall's τ-b, which corrects for ties on either side
// (Kendall 1945): (concordant − discordant) / √((n₀−t_a)(n₀−t_b)) over all
// pairs, n₀ = n(n−1)/2 and t the pairs tied in a or in b. NaN when either
// side is constant.
func KendallTau(a, b []float64) float64 {
	if len(a) != len(b) || len(a) < 2 || hasNaN(a) || hasNaN(b) {
		return math.NaN()
	}
	var conc, disc, tieA, tieB, n0 float64
	for i := range a {
		for j := i + 1; j < len(a); j++ {
			n0++
			da, db := sign(a[i]-a[j]), sign(b[i]-b[j])
			switch {
			case da == 0 && db == 0:
				tieA++
				tieB++
			case da == 0:
				tieA++
			case db == 0:
				tieB++
			case da == db:
				conc++
			default:
				disc++
			}
		}
	}
	den := math.Sqrt((n0 - tieA) * (n0 - tieB))
	if den == 0 {
		return math.NaN()
	}
	return (conc - disc) / den
}

// NormL2 is ‖a − ref‖ / ‖ref‖, the relative error of a's values; NaN if ref
// is zero.
func NormL2(a, ref []float64) float64 {
	if len(a) != len(ref) || hasNaN(a) {
		return math.NaN()
	}
	var num, den float64
	for i := range a {
		num += (a[i] - ref[i]) * (a[i] - ref[i])
		den += ref[i] * ref[i]
	}
	if den == 0 {
		return math.NaN()
	}
	return math.Sqrt(num / den)
}

// DetectionAUC is the probability that a corrupted client gets a lower
// value than an honest one (ties count one half): the area under the ROC
// curve of "low value ⇒ corrupted". 1 detects perfectly, 0.5 is chance. NaN
// without both kinds of client.
func DetectionAUC(values []float64, corrupted []bool) float64 {
	if hasNaN(values) {
		return math.NaN()
	}
	var pairs, score float64
	for i, ci := range corrupted {
		if !ci {
			continue
		}
		for j, cj := range corrupted {
			if cj {
				continue
			}
			pairs++
			switch {
			case values[i] < values[j]:
				score++
			case values[i] == values[j]:
				score += 0.5
			}
		}
	}
	if pairs == 0 {
		return math.NaN()
	}
	return score / pairs
}

// SymmetryError is the mean, over duplicate pairs (i, j), of |φ_i − φ_j|
// relative to the mean absolute value of all clients: 0 when every
// duplicate is paid like its original, as Shapley's symmetry axiom demands.
func SymmetryError(values []float64, pairs [][2]int) float64 {
	if len(pairs) == 0 || hasNaN(values) {
		return math.NaN()
	}
	scale := 0.0
	for _, v := range values {
		scale += math.Abs(v)
	}
	scale /= float64(len(values))
	if scale == 0 {
		return math.NaN()
	}
	e := 0.0
	for _, p := range pairs {
		e += math.Abs(values[p[0]] - values[p[1]])
	}
	return e / float64(len(pairs)) / scale
}

// SybilGain is how much the Sybil's share of the total value rises when it
// splits its data among several identities: Σ_sybils φ'/Σ φ' − φ_c/Σ φ
// (shares, so that a change of the total value between the two runs is not
// counted as gain). Positive means splitting pays.
func SybilGain(base []float64, client int, split []float64, sybils []int) float64 {
	if hasNaN(base) || hasNaN(split) {
		return math.NaN()
	}
	tb, ts := sum(base), sum(split)
	if tb == 0 || ts == 0 {
		return math.NaN()
	}
	s := 0.0
	for _, i := range sybils {
		s += split[i]
	}
	return s/ts - base[client]/tb
}

// Interval is a mean over repeats with its 95% confidence half-width
// (Student's t with k−1 degrees of freedom; 0 for a single repeat). NaN
// repeats are left out; N counts the others.
type Interval struct {
	Mean, Half float64
	N          int
}

// MeanCI summarises xs.
func MeanCI(xs []float64) Interval {
	var ok []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			ok = append(ok, x)
		}
	}
	if len(ok) == 0 {
		return Interval{Mean: math.NaN(), Half: math.NaN()}
	}
	m := mean(ok)
	if len(ok) == 1 {
		return Interval{Mean: m, N: 1}
	}
	ss := 0.0
	for _, x := range ok {
		ss += (x - m) * (x - m)
	}
	sd := math.Sqrt(ss / float64(len(ok)-1))
	t := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: float64(len(ok) - 1)}.Quantile(0.975)
	return Interval{Mean: m, Half: t * sd / math.Sqrt(float64(len(ok))), N: len(ok)}
}

func hasNaN(a []float64) bool {
	for _, x := range a {
		if math.IsNaN(x) {
			return true
		}
	}
	return false
}

func mean(a []float64) float64 { return sum(a) / float64(len(a)) }

func sum(a []float64) float64 {
	s := 0.0
	for _, x := range a {
		s += x
	}
	return s
}

func sign(x float64) int {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}
