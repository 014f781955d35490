package audit

import (
	"math"
	"slices"
)

// PSNR is the peak signal-to-noise ratio of b against a, in dB, for values
// in [0, peak]: 10·log10(peak²/MSE). Identical images give +Inf, which
// callers cap (see psnrCap).
func PSNR(a, b []float64, peak float64) float64 {
	mse := 0.0
	for i := range a {
		d := a[i] - b[i]
		mse += d * d
	}
	mse /= float64(len(a))
	if mse == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(peak*peak/mse)
}

// psnrCap bounds the PSNR of an exact reconstruction, so that means stay
// finite: 60 dB is an RMS error of 0.016 grey levels out of 16, far below
// the 1-level quantisation of the digits.
const psnrCap = 60

// SSIM is the mean structural similarity of Wang et al. (2004) over every
// ssimWindow×ssimWindow window of two side×side images, with their
// constants C1 = (0.01·L)² and C2 = (0.03·L)². Their 11×11 Gaussian window
// is larger than an 8×8 digit; a single window over the whole image would
// reduce SSIM to a correlation that any two digits share (their ink sits in
// the middle), so the windows are 3×3, uniform, at the 36 positions of an
// 8×8 image. It lies in [−1, 1], 1 for identical images.
func SSIM(a, b []float64, side int, peak float64) float64 {
	c1 := (0.01 * peak) * (0.01 * peak)
	c2 := (0.03 * peak) * (0.03 * peak)
	const w = ssimWindow
	sum, count := 0.0, 0
	for y0 := 0; y0+w <= side; y0++ {
		for x0 := 0; x0+w <= side; x0++ {
			var ma, mb float64
			for y := y0; y < y0+w; y++ {
				for x := x0; x < x0+w; x++ {
					ma += a[y*side+x]
					mb += b[y*side+x]
				}
			}
			n := float64(w * w)
			ma /= n
			mb /= n
			var va, vb, cov float64
			for y := y0; y < y0+w; y++ {
				for x := x0; x < x0+w; x++ {
					da, db := a[y*side+x]-ma, b[y*side+x]-mb
					va += da * da
					vb += db * db
					cov += da * db
				}
			}
			va /= n - 1
			vb /= n - 1
			cov /= n - 1
			sum += (2*ma*mb + c1) * (2*cov + c2) / ((ma*ma + mb*mb + c1) * (va + vb + c2))
			count++
		}
	}
	return sum / float64(count)
}

// ssimWindow is the side of SSIM's local window.
const ssimWindow = 3

// Cosine is the cosine similarity of a and b, 0 when either is zero.
func Cosine(a, b []float64) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += a[i] * b[i]
		aa += a[i] * a[i]
		bb += b[i] * b[i]
	}
	if aa == 0 || bb == 0 {
		return 0
	}
	return ab / math.Sqrt(aa*bb)
}

// rms is the root mean square difference of a and b.
func rms(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		d := a[i] - b[i]
		s += d * d
	}
	return math.Sqrt(s / float64(len(a)))
}

// AUC is the area under the ROC curve of scores that should rank members
// above non-members: the probability that a random member outscores a
// random non-member, ties counting one half (the Mann–Whitney U statistic
// divided by the number of pairs). 0.5 is random guessing.
func AUC(members, nonMembers []float64) float64 {
	if len(members) == 0 || len(nonMembers) == 0 {
		return math.NaN()
	}
	type sc struct {
		v   float64
		mem bool
	}
	all := make([]sc, 0, len(members)+len(nonMembers))
	for _, v := range members {
		all = append(all, sc{v, true})
	}
	for _, v := range nonMembers {
		all = append(all, sc{v, false})
	}
	slices.SortFunc(all, func(a, b sc) int {
		switch {
		case a.v < b.v:
			return -1
		case a.v > b.v:
			return 1
		}
		return 0
	})
	// Sum of the members' ranks, with ties given their mean rank.
	rankSum := 0.0
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].v == all[i].v {
			j++
		}
		mean := float64(i+j+1) / 2 // ranks i+1..j
		for k := i; k < j; k++ {
			if all[k].mem {
				rankSum += mean
			}
		}
		i = j
	}
	m, n := float64(len(members)), float64(len(nonMembers))
	return (rankSum - m*(m+1)/2) / (m * n)
}

// labelOverlap is the share of a multiset of labels recovered: Σ_j
// min(guess_j, truth_j) / Σ_j truth_j over class counts. For one example
// it is 1 when the label is right and 0 otherwise.
func labelOverlap(guess, truth []int) float64 {
	hit, total := 0, 0
	for j := range truth {
		hit += min(guess[j], truth[j])
		total += truth[j]
	}
	if total == 0 {
		return math.NaN()
	}
	return float64(hit) / float64(total)
}

// countsFromShares rounds shares (summing to about 1) to n counts by the
// largest-remainder method, so the counts sum to exactly n.
func countsFromShares(shares []float64, n int) []int {
	counts := make([]int, len(shares))
	type rem struct {
		j int
		r float64
	}
	rems := make([]rem, len(shares))
	total := 0.0
	for _, s := range shares {
		total += max(s, 0)
	}
	left := n
	for j, s := range shares {
		x := 0.0
		if total > 0 {
			x = max(s, 0) / total * float64(n)
		}
		counts[j] = int(math.Floor(x))
		left -= counts[j]
		rems[j] = rem{j, x - math.Floor(x)}
	}
	slices.SortStableFunc(rems, func(a, b rem) int {
		switch {
		case a.r > b.r:
			return -1
		case a.r < b.r:
			return 1
		}
		return 0
	})
	for i := 0; left > 0; i = (i + 1) % len(rems) {
		counts[rems[i].j]++
		left--
	}
	return counts
}

// projectSimplex returns the Euclidean projection of v onto the
// probability simplex (Duchi et al., ICML 2008, Fig. 1).
func projectSimplex(v []float64) []float64 {
	u := slices.Clone(v)
	slices.Sort(u)
	slices.Reverse(u)
	css, theta := 0.0, 0.0
	for i, x := range u {
		css += x
		t := (css - 1) / float64(i+1)
		if x-t > 0 {
			theta = t
		}
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = max(x-theta, 0)
	}
	return out
}
