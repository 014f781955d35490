package experiments

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/valuation"
)

// TestProbeFreeRiderSketchedNorm (gated: TALLY_FR_PROBE=1; issue 15)
// measures whether the projection mode could apply plain mode's round-0
// noise band (valuation.FederatedOptions.Signal: |cos(Δ_i, g)| ≤ κ/√P
// counts as a zero update) if each client released, in round 0 only, k
// more scalars ⟨n_i·Δ_i, r_j⟩ for unit directions r_j seeded from the
// round's decrypted total (fixed only after every upload). ‖Δ_i‖ is then
// estimated two ways from what would be released:
//
//   - sketch: ‖Δ_i‖² ≈ (P/k)·Σ_j ⟨Δ_i, r_j⟩²;
//   - span+sketch: ‖PΔ_i‖² exactly from the projection scalars (P onto the
//     public vectors' span) plus (P/k)·Σ_j ⟨Δ_i − PΔ_i, r_j⟩², the
//     residual's inner products being computable from the same scalars.
//
// ⟨Δ_i, g⟩ is known to projection mode already (g, the validation gradient
// at the base, lies in the span: the per-class parts add up to it; the
// probe prints how far off the span it is). For each scenario, seed and k
// it prints the random free rider's and the honest clients' round-0
// |cos_est| against the band, and, with the clients inside the band given
// zero round-0 scalars, the projection mode's exact-Shapley totals of the
// free riders and its Spearman against the plain reference, before and
// after.
func TestProbeFreeRiderSketchedNorm(t *testing.T) {
	if os.Getenv("TALLY_FR_PROBE") == "" {
		t.Skip("set TALLY_FR_PROBE=1 to run the sketched-norm free-rider probe")
	}
	demo, err := LoadScenario(filepath.Join("acceptance", "scenarios", "demo-corrupt-bc8.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	ks := []int{2, 4, 8}
	es := Method{Name: valuation.MethodExactShapley}
	ctx := context.Background()
	type tally struct{ riderIn, riderN, falseZero, honestN int }
	type mcTally struct{ riderIn, riderN, honestIn, honestN, differ, decided int }
	const mcTrials = 2000
	for _, sc := range []Scenario{demo, load(t, "free-riders-bc8", 0)} {
		sc.Seeds = seeds
		counts := map[string]*tally{}
		mcs := map[string]*mcTally{}
		for _, seed := range seeds {
			fed, err := newFederation(sc, seed, false)
			if err != nil {
				t.Fatal(err)
			}
			tr, err := runFedAvg(sc, seed, fed)
			if err != nil {
				t.Fatal(err)
			}
			ref, runs, err := valueTrace(ctx, sc, seed, tr, []Method{es}, []string{ModeProjection}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			proj := runs[0]
			if proj.Err != "" {
				t.Fatal(proj.Err)
			}
			w := fed.weights
			n := len(w)
			var honest []int
			random := -1
			for i, c := range fed.corruptions {
				switch {
				case c.Kind == "":
					honest = append(honest, i)
				case c.IsFreeRider() && c.Mode == dataset.FreeRiderRandom:
					random = i
				}
			}
			pool := &scorerPool{proto: tr.proto, val: fed.val, acc: sc.Utility == "accuracy"}
			rt := tr.rounds[0]
			plain, err := buildGame(sc, seed, tr, pool, ModePlain, 0, 1, false)
			if err != nil {
				t.Fatal(err)
			}
			plain.release()
			g := plain.grad
			P := len(rt.base)
			band := valuation.NoiseKappa / math.Sqrt(float64(P))
			vectors, at, err := projectionVectors(tr, pool, rt.base, nil, rt.updates, w)
			if err != nil {
				t.Fatal(err)
			}
			scalars, err := valuation.ProjectionScalars(vectors, rt.updates, w)
			if err != nil {
				t.Fatal(err)
			}
			if cl := valuation.ProjectionReplicas(scalars, w); len(cl) < n {
				t.Fatalf("seed %d: round 0 has copies; the probe does not merge them", seed)
			}
			sp, err := valuation.NewSpan(valuation.Gram(vectors))
			if err != nil {
				t.Fatal(err)
			}
			// inSpan is the projection onto the span of d given its scalars.
			inSpan := func(s []float64) []float64 {
				z, err := sp.Coords(s)
				if err != nil {
					t.Fatal(err)
				}
				c := make([]float64, len(vectors))
				sp.Combination(z, c)
				p := make([]float64, P)
				for j, v := range vectors {
					for q, x := range v {
						p[q] += c[j] * x
					}
				}
				return p
			}
			gs, _ := valuation.ProjectionScalars(vectors, [][]float64{g}, []float64{1})
			gOff := math.Sqrt(dist2(g, inSpan(gs[0]))) / math.Sqrt(dot2(g, g))
			// The sketch directions, seeded from the decrypted total.
			total := make([]float64, P)
			var nt float64
			for i, u := range rt.updates {
				nt += w[i]
				for q, x := range u {
					total[q] += w[i] * x
				}
			}
			h := sha256.New()
			for _, x := range total {
				_ = binary.Write(h, binary.LittleEndian, x/nt)
			}
			sum := h.Sum(nil)
			src := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(sum[:8]), binary.LittleEndian.Uint64(sum[8:16])))
			dirs := unitDirections(src, ks[len(ks)-1], P)
			// estimate is client i's cos_est from the sketch scalars on
			// dirs (false for a zero update: no norm, nothing to zero).
			ds, res := make([][]float64, n), make([][]float64, n)
			spanN2 := make([]float64, n)
			for i, u := range rt.updates {
				ds[i], res[i] = make([]float64, P), make([]float64, P)
				p := inSpan(scalars[i])
				spanN2[i] = dot2(p, p)
				for q, x := range u {
					ds[i][q] = w[i] * x
					res[i][q] = ds[i][q] - p[q]
				}
			}
			ng := math.Sqrt(dot2(g, g))
			estimate := func(i int, dirs [][]float64, est string) (float64, bool) {
				r, n2 := ds[i], 0.0
				if est == "span+sketch" {
					r, n2 = res[i], spanN2[i]
				}
				var s2 float64
				for _, v := range dirs {
					x := dot2(r, v)
					s2 += x * x
				}
				n2 += float64(P) / float64(len(dirs)) * s2
				if n2 == 0 {
					return 0, false
				}
				return dot2(ds[i], g) / (ng * math.Sqrt(n2)), true
			}
			// value0 is round 0's projection exact Shapley on scalars s.
			value0 := func(s [][]float64) []float64 {
				l := pool.lease()
				defer l.release()
				game, err := valuation.NewProjectionGame(valuation.Gram(vectors), s, w, func() (valuation.SpanScorer, error) {
					sc, err := l.newScorer()
					return valuation.NewSpanScorer(at, vectors, sc), err
				}, valuation.FederatedOptions{})
				if err != nil {
					t.Fatal(err)
				}
				rg := &roundGame{mode: ModeProjection, game: game, players: n, weights: w}
				v, _, _, _, err := valueRound(ctx, seed, 0, rg, es, w)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			// Unchanged scalars must give the run's own round 0.
			for i, v := range value0(scalars) {
				if math.Abs(v-proj.Rounds[0][i]) > 1e-9 {
					t.Fatalf("seed %d client %d: round 0 rebuilt %.6g, the run's %.6g", seed, i, v, proj.Rounds[0][i])
				}
			}
			cosTrue := make([]float64, n)
			for i, u := range rt.updates {
				if nu := math.Sqrt(dot2(u, u)); nu > 0 {
					cosTrue[i] = dot2(u, g) / (nu * ng)
				}
			}
			var others string
			for i, c := range fed.corruptions {
				if c.Kind != "" && i != random {
					others += fmt.Sprintf(", %d (%s) %.3f", i, c, math.Abs(cosTrue[i]))
				}
			}
			fmt.Printf("%s seed %2d: P %d band %.3f, g off span %.1e; |cos| true: random %.3f, honest min %.3f%s\n",
				sc.Name, seed, P, band, gOff, math.Abs(cosTrue[random]), minAbs(cosTrue, honest), others)
			for _, k := range ks {
				for _, est := range []string{"sketch", "span+sketch"} {
					cosEst := make([]float64, n)
					zeroed := append([][]float64(nil), scalars...)
					var inside []int
					for i := range n {
						var ok bool
						if cosEst[i], ok = estimate(i, dirs[:k], est); ok && math.Abs(cosEst[i]) <= band {
							inside = append(inside, i)
							zeroed[i] = make([]float64, len(scalars[i]))
						}
					}
					key := fmt.Sprintf("k=%d %s", k, est)
					c := counts[key]
					if c == nil {
						c = &tally{}
						counts[key] = c
					}
					c.riderN++
					if math.Abs(cosEst[random]) <= band {
						c.riderIn++
					}
					for _, i := range honest {
						c.honestN++
						if math.Abs(cosEst[i]) <= band {
							c.falseZero++
						}
					}
					// Round 0 revalued with the clients inside zeroed.
					after0 := value0(zeroed)
					after := make([]float64, n)
					for i := range after {
						after[i] = proj.Totals[i] - proj.Rounds[0][i] + after0[i]
					}
					var fr string
					for i, c := range fed.corruptions {
						if c.IsFreeRider() {
							fr += fmt.Sprintf(" %s %+.4f→%+.4f", c.Mode, proj.Totals[i], after[i])
						}
					}
					fmt.Printf("  k=%d %-11s random |cos_est| %.3f in=%-5v honest min |cos_est| %.3f inside %v | V%s | ρ all %.3f→%.3f honest %.3f→%.3f\n",
						k, est, math.Abs(cosEst[random]), math.Abs(cosEst[random]) <= band, minAbs(cosEst, honest), inside, fr,
						Spearman(proj.Totals, ref.Totals), Spearman(after, ref.Totals),
						Spearman(pick(proj.Totals, honest), pick(ref.Totals, honest)), Spearman(pick(after, honest), pick(ref.Totals, honest)))
				}
			}
			// Over many sketch draws (not only the one the total seeds):
			// how often the random free rider is inside, an honest client
			// inside (a false zero), and any client decided otherwise
			// than plain mode's band on the true cosine.
			mcSrc := rand.New(rand.NewPCG(seed, 0xf4))
			for _, k := range ks {
				for _, est := range []string{"sketch", "span+sketch"} {
					m := mcs[fmt.Sprintf("k=%d %s", k, est)]
					if m == nil {
						m = &mcTally{}
						mcs[fmt.Sprintf("k=%d %s", k, est)] = m
					}
					var rIn int
					for range mcTrials {
						dirs := unitDirections(mcSrc, k, P)
						for i := range n {
							c, ok := estimate(i, dirs, est)
							if !ok {
								continue
							}
							in := math.Abs(c) <= band
							switch {
							case i == random:
								m.riderN++
								if in {
									m.riderIn++
									rIn++
								}
							case fed.corruptions[i].Kind == "":
								m.honestN++
								if in {
									m.honestIn++
								}
							}
							m.decided++
							if in != (math.Abs(cosTrue[i]) <= band) {
								m.differ++
							}
						}
					}
					fmt.Printf("  draws k=%d %-11s random inside %.3f\n", k, est, float64(rIn)/mcTrials)
				}
			}
			fmt.Printf("  plain reference: random %+.4f\n", ref.Totals[random])
		}
		for _, k := range ks {
			for _, est := range []string{"sketch", "span+sketch"} {
				c := counts[fmt.Sprintf("k=%d %s", k, est)]
				fmt.Printf("%s k=%d %-11s random inside %d/%d, honest inside (false zeros) %d/%d\n", sc.Name, k, est, c.riderIn, c.riderN, c.falseZero, c.honestN)
				m := mcs[fmt.Sprintf("k=%d %s", k, est)]
				fmt.Printf("%s k=%d %-11s over %d draws a seed: random inside %.3f, honest inside %.4f (%d of %d), decided otherwise than plain's band %.4f\n",
					sc.Name, k, est, mcTrials, float64(m.riderIn)/float64(m.riderN), float64(m.honestIn)/float64(m.honestN), m.honestIn, m.honestN, float64(m.differ)/float64(m.decided))
			}
		}
	}
}

// unitDirections draws k uniform unit directions in p dimensions.
func unitDirections(src *rand.Rand, k, p int) [][]float64 {
	dirs := make([][]float64, k)
	for j := range dirs {
		dirs[j] = make([]float64, p)
		for q := range dirs[j] {
			dirs[j][q] = src.NormFloat64()
		}
		nr := math.Sqrt(dot2(dirs[j], dirs[j]))
		for q := range dirs[j] {
			dirs[j][q] /= nr
		}
	}
	return dirs
}

func dot2(a, b []float64) float64 {
	var s float64
	for k, x := range a {
		s += x * b[k]
	}
	return s
}

func dist2(a, b []float64) float64 {
	var s float64
	for k, x := range a {
		e := x - b[k]
		s += e * e
	}
	return s
}

func minAbs(xs []float64, idx []int) float64 {
	m := math.Inf(1)
	for _, i := range idx {
		m = math.Min(m, math.Abs(xs[i]))
	}
	return m
}

func pick(xs []float64, idx []int) []float64 {
	out := make([]float64, len(idx))
	for k, i := range idx {
		out[k] = xs[i]
	}
	return out
}
