package experiments

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/tallyfl/tally/valuation"
)

// TestProbeRetrainedCopyProjection (gated: TALLY_DUP_PROBE=1) measures
// whether what projection mode releases per client and round separates
// duplicates-retrained-bc5's copy (client 4 of client 0) from every other
// pair over the job, against the full updates (plain mode's Redundancy),
// with and without public seeded sketch directions filling the budget of
// 10 scalars per client and round. It prints, per scenario and statistic,
// the copy's largest distance and the other pairs' smallest.
func TestProbeRetrainedCopyProjection(t *testing.T) {
	if os.Getenv("TALLY_DUP_PROBE") == "" {
		t.Skip("set TALLY_DUP_PROBE=1 to run the copy-separation probe")
	}
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	type run struct {
		name  string
		sybil bool
	}
	runs := []run{{"duplicates-retrained-bc5", false}, {"equal-bc5", false}, {"size-skew-bc5", false},
		{"sybil-bc5", true}, {"free-riders-bc8", false}, {"label-noise-bc5", false}, {"feature-noise-bc5", false},
		{"dirichlet-0.1-digits10", false}, {"dirichlet-0.5-digits10", false}, {"dirichlet-1-digits10", false}}
	stats := []string{"full", "proj", "proj+jl", "proj/round", "proj+jl/round", "full/round"}
	for _, rn := range runs {
		sc := load(t, rn.name, 0, seeds...)
		copyMax := map[string]float64{}
		honestMin := map[string]float64{}
		for _, s := range stats {
			honestMin[s] = math.Inf(1)
		}
		for _, seed := range seeds {
			fed, err := newFederation(sc, seed, rn.sybil)
			if err != nil {
				t.Fatal(err)
			}
			tr, err := runFedAvg(sc, seed, fed)
			if err != nil {
				t.Fatal(err)
			}
			pool := &scorerPool{proto: tr.proto, val: tr.fed.val, acc: sc.Utility == "accuracy"}
			n := len(fed.weights)
			type acc struct{ d2, m2, per float64 }
			sums := map[string][][]acc{}
			for _, s := range stats {
				sums[s] = make([][]acc, n)
				for i := range sums[s] {
					sums[s][i] = make([]acc, n)
				}
			}
			addPair := func(stat string, zs [][]float64) {
				for i := range zs {
					for j := i + 1; j < n; j++ {
						var d, ni, nj float64
						for k := range zs[i] {
							e := zs[i][k] - zs[j][k]
							d += e * e
							ni += zs[i][k] * zs[i][k]
							nj += zs[j][k] * zs[j][k]
						}
						a := &sums[stat][i][j]
						a.d2 += d
						a.m2 += math.Max(ni, nj)
						if m := math.Max(ni, nj); m > 0 {
							a.per += math.Sqrt(d / m)
						}
					}
				}
			}
			for r := range tr.rounds {
				rt := tr.rounds[r]
				var known []float64
				if r > 0 {
					prev := tr.rounds[r-1].base
					known = make([]float64, len(rt.base))
					for k := range known {
						known[k] = rt.base[k] - prev[k]
					}
				}
				w := fed.weights
				addPair("full", rt.updates)
				addPair("full/round", rt.updates)
				vs, _, err := projectionVectors(tr, pool, rt.base, known, rt.updates, w)
				if err != nil {
					t.Fatal(err)
				}
				coords := func(vs [][]float64) [][]float64 {
					sp, err := valuation.NewSpan(valuation.Gram(vs))
					if err != nil {
						t.Fatal(err)
					}
					ones := make([]float64, n)
					for i := range ones {
						ones[i] = 1
					}
					s, err := valuation.ProjectionScalars(vs, rt.updates, ones)
					if err != nil {
						t.Fatal(err)
					}
					out := make([][]float64, n)
					for i := range s {
						out[i], err = sp.Coords(s[i])
						if err != nil {
							t.Fatal(err)
						}
					}
					return out
				}
				z := coords(vs)
				addPair("proj", z)
				addPair("proj/round", z)
				// Public seeded Gaussian sketch directions, known projected
				// off, up to 10 vectors in all.
				g := rand.New(rand.NewPCG(seed, uint64(r)+1000))
				jl := append([][]float64(nil), vs...)
				for len(jl) < 10 {
					v := make([]float64, len(rt.base))
					for k := range v {
						v[k] = g.NormFloat64()
					}
					v = valuation.ProjectOff(v, known)
					var nn float64
					for _, x := range v {
						nn += x * x
					}
					for k := range v {
						v[k] /= math.Sqrt(nn)
					}
					jl = append(jl, v)
				}
				zj := coords(jl)
				addPair("proj+jl", zj)
				addPair("proj+jl/round", zj)
			}
			seedCopy, seedOther := map[string]float64{}, map[string]float64{}
			for _, s := range stats {
				seedOther[s] = math.Inf(1)
				for i := range n {
					for j := i + 1; j < n; j++ {
						a := sums[s][i][j]
						var d float64
						if len(s) > 6 && s[len(s)-6:] == "/round" {
							d = a.per / float64(len(tr.rounds))
						} else if a.m2 > 0 {
							d = math.Sqrt(a.d2 / a.m2)
						}
						isCopy := rn.name == "duplicates-retrained-bc5" && i == 0 && j == 4
						if isCopy {
							copyMax[s] = math.Max(copyMax[s], d)
							seedCopy[s] = d
						} else {
							honestMin[s] = math.Min(honestMin[s], d)
							seedOther[s] = math.Min(seedOther[s], d)
						}
					}
				}
			}
			if rn.name == "duplicates-retrained-bc5" {
				for _, s := range []string{"full", "proj", "proj+jl"} {
					fmt.Printf("  seed %2d %-8s copy %.3f  closest other pair %.3f\n", seed, s, seedCopy[s], seedOther[s])
				}
			}
		}
		for _, s := range stats {
			fmt.Printf("%-26s %-14s copy max %.3f  others min %.3f\n", rn.name, s, copyMax[s], honestMin[s])
		}
	}
}
