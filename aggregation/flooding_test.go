package aggregation

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"math"
	"math/big"
	mrand "math/rand/v2"
	"testing"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/multiparty"
	"github.com/tuneinsight/lattigo/v6/ring"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
	"github.com/tuneinsight/lattigo/v6/utils/sampling"
)

// collectiveSecret reconstructs s = Σ λᵢ·s̃ᵢ from the first t members, for
// tests that look at ciphertext noise.
func collectiveSecret(t testing.TB, cm *committee) *rlwe.SecretKey {
	t.Helper()
	thr := cm.inst.t
	active := make([]multiparty.ShamirPublicPoint, 0, thr)
	for _, id := range cm.ids[:thr] {
		active = append(active, cm.inst.points[id])
	}
	rq := cm.params.ckks.RingQ()
	s := rlwe.NewSecretKey(cm.params.ckks)
	for _, id := range cm.ids[:thr] {
		m := cm.members[id]
		add := rlwe.NewSecretKey(cm.params.ckks)
		if err := m.combiner.GenAdditiveShare(active, cm.inst.points[id], *m.tsk, add); err != nil {
			t.Fatal(err)
		}
		rq.Add(s.Value.Q, add.Value.Q, s.Value.Q)
	}
	return s
}

// noiseStats decrypts ct (NTT domain) with s, subtracts want (NTT domain)
// and returns the root mean square and the largest absolute value of the
// centred coefficients of the difference: the ciphertext noise.
func noiseStats(p Parameters, ct *rlwe.Ciphertext, s *rlwe.SecretKey, want ring.Poly) (rms, worst float64) {
	rq := p.ckks.RingQ().AtLevel(ct.Level())
	e := rq.NewPoly()
	rq.MulCoeffsMontgomery(ct.Value[1], s.Value.Q, e)
	rq.Add(e, ct.Value[0], e)
	rq.Sub(e, want, e)
	rq.INTT(e, e)
	moduli := rq.ModuliChain()[:ct.Level()+1]
	var ss float64
	for k := 0; k < p.ckks.N(); k++ {
		v, _ := new(big.Float).SetInt(centeredCRT(moduli, func(l int) uint64 { return e.Coeffs[l][k] })).Float64()
		ss += v * v
		worst = max(worst, math.Abs(v))
	}
	return math.Sqrt(ss / float64(p.ckks.N())), worst
}

// TestCiphertextNoise measures, at the default parameters, the noise of an
// aggregate of 8 fresh ciphertexts and of an influence ciphertext under
// the key of a 5-member committee (t = 3), compares it with the noise
// model the bound uses (which must not underestimate it), and checks that
// the flooding each member adds hides it as the bound requires for the
// default flooding caps: for a whole share, σ_f ≥ 2^(λ+1)·√count·k·noise;
// for a coefficient share, after the amplification A(c, t) the
// coordinator can undo with t−1 colluders, σ_f/A at least that.
func TestCiphertextNoise(t *testing.T) {
	if testing.Short() {
		t.Skip("default parameters")
	}
	p := DefaultParameters()
	const c, thr, clients = 5, 3, 8
	cm := newCommittee(t, p, c, thr)
	s := collectiveSecret(t, cm)
	// The noise the flooding hides is that of the ciphertexts as
	// encrypted: the rounding of c₀ on the wire is a function of c₀ and
	// adds nothing the coordinator could not compute from c₀ (doc.go,
	// "Wire formats"), so it is measured with c₀ whole; TestC0Rounding
	// measures the rounding itself.
	p.c0Drop = 0
	enc, err := NewEncryptor(p, cm.pk, 1)
	if err != nil {
		t.Fatal(err)
	}
	cp := p.ckks
	ecd := ckks.NewEncoder(cp, uint(p.cfg.EncoderPrecision))
	rq := cp.RingQ()
	numParams := p.Slots() - 1
	r := mrand.New(mrand.NewPCG(3, 5))
	grad := make([]float64, numParams)
	for j := range grad {
		// Entries of the largest magnitude: the noise model's worst case.
		grad[j] = 1 - 2*float64(r.IntN(2))
	}
	inf, err := NewInfluence(p, cm.inst.ID(), grad, numParams)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := NewAccumulator(p, cm.inst.ID(), numParams)
	if err != nil {
		t.Fatal(err)
	}
	sumPt := rq.NewPoly()
	var infRMS float64
	vals := make([]float64, p.Slots())
	for i := range clients {
		u := update(uint64(40+i), numParams)
		w := float64(10 * (i + 1))
		cts, err := enc.EncryptUpdate(u, w)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("c%02d", i)
		if err := acc.Add(id, cts[0]); err != nil {
			t.Fatal(err)
		}
		if err := inf.Add(id, cts[0]); err != nil {
			t.Fatal(err)
		}
		fill(vals, u, w, 0)
		pt := ckks.NewPlaintext(cp, cp.MaxLevel())
		if err := encode(p, ecd, vals, pt); err != nil {
			t.Fatal(err)
		}
		rq.Add(sumPt, pt.Value, sumPt)
		b, _, err := inf.Finalize(id)
		if err != nil {
			t.Fatal(err)
		}
		ict, _, err := parseInfluence(p, b)
		if err != nil {
			t.Fatal(err)
		}
		prod := rq.NewPoly()
		rq.MulCoeffsMontgomery(pt.Value, inf.grad[0], prod)
		rms, _ := noiseStats(p, ict, s, prod)
		infRMS += rms * rms / clients
	}
	agg, err := acc.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	act, _, err := parseCiphertext(p, agg.Ciphertexts[0])
	if err != nil {
		t.Fatal(err)
	}
	aggRMS, aggWorst := noiseStats(p, act, s, sumPt)
	infRMS = math.Sqrt(infRMS)

	f := DefaultFlooding()
	modelAgg := math.Sqrt(clients * p.FreshNoiseVariance(c))
	modelInf := math.Sqrt(p.InfluenceNoiseVariance(c, 1))
	whole, coef := cm.members[cm.ids[0]].floodingSigmas()
	needAgg := floodingSigma(f.Security, p.aggregateReleases(f), aggRMS)
	needInf := floodingSigma(f.Security, influenceReleases(f), infRMS)
	amp := influenceAmplification(c, thr)
	t.Logf("aggregate of %d: noise rms 2^%.2f (largest 2^%.2f), model 2^%.2f; flooding per share 2^%.2f: margin 2^%.2f; bound (λ=%d, %d block decryptions) needs 2^%.2f",
		clients, math.Log2(aggRMS), math.Log2(aggWorst), math.Log2(modelAgg), math.Log2(whole), math.Log2(whole/aggRMS), f.Security, f.Decryptions, math.Log2(needAgg))
	t.Logf("influence scalar: noise rms 2^%.2f, model 2^%.2f; flooding per share 2^%.2f, 2^%.2f after A(%d,%d) = %.1f: margin 2^%.2f; bound (λ=%d, %d scalars) needs 2^%.2f",
		math.Log2(infRMS), math.Log2(modelInf), math.Log2(coef), math.Log2(coef/amp), c, thr, amp, math.Log2(coef/amp/infRMS), f.Security, f.Scalars, math.Log2(needInf))
	// The model must bound the measurement (10% slack for the sampling
	// error of an rms over N coefficients is generous).
	if aggRMS > 1.1*modelAgg {
		t.Errorf("aggregate noise rms %.3g above the model's %.3g", aggRMS, modelAgg)
	}
	if infRMS > 1.1*modelInf {
		t.Errorf("influence noise rms %.3g above the model's %.3g", infRMS, modelInf)
	}
	if whole < needAgg {
		t.Errorf("whole-share flooding σ 2^%.2f below the bound's 2^%.2f for the measured aggregate noise", math.Log2(whole), math.Log2(needAgg))
	}
	if coef/amp < needInf {
		t.Errorf("coefficient-share flooding σ/A 2^%.2f below the bound's 2^%.2f for the measured influence noise", math.Log2(coef/amp), math.Log2(needInf))
	}
}

// lowBitStats samples polys polynomials of rq with read and returns the
// standard deviation of the centred values and the fraction of odd ones.
func lowBitStats(rq *ring.Ring, polys int, read func(ring.Poly)) (sd, odd float64) {
	moduli := rq.ModuliChain()[:rq.Level()+1]
	var ss big.Float
	ss.SetPrec(200)
	var count, odds int
	for range polys {
		pol := rq.NewPoly()
		read(pol)
		for k := 0; k < rq.N(); k++ {
			v := centeredCRT(moduli, func(l int) uint64 { return pol.Coeffs[l][k] })
			f := new(big.Float).SetPrec(200).SetInt(v)
			ss.Add(&ss, f.Mul(f, f))
			if v.Bit(0) == 1 {
				odds++
			}
			count++
		}
	}
	ss.Quo(&ss, new(big.Float).SetInt64(int64(count)))
	v, _ := ss.Float64()
	return math.Sqrt(v), float64(odds) / float64(count)
}

// TestFloodSampler checks the flooding noise: its standard deviation is
// the σ asked for, and its low bits are uniform (half the samples odd),
// where lattigo's own sampler at such a σ returns only even values —
// the low bits a flooded share would then show of the ciphertext noise.
func TestFloodSampler(t *testing.T) {
	p := testParams(t)
	rq := p.ckks.RingQ()
	for _, logSigma := range []int{20, 60, 70, 90} {
		t.Run(fmt.Sprintf("convolution/sigma=2^%d", logSigma), func(t *testing.T) {
			sigma := math.Exp2(float64(logSigma))
			fs, err := newFloodSampler(rq, sigma, 12, crand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			sd, odd := lowBitStats(rq, 8, fs.add)
			t.Logf("σ 2^%d in %d levels: measured σ ratio %.4f, odd fraction %.4f", logSigma, fs.Levels(), sd/sigma, odd)
			// 8192 samples: the σ estimate is within 3% and the odd
			// fraction within 0.03 of ½ at about four standard errors.
			if r := sd / sigma; r < 0.97 || r > 1.03 {
				t.Errorf("measured σ %.4g, want %.4g (ratio %.4f)", sd, sigma, r)
			}
			if math.Abs(odd-0.5) > 0.03 {
				t.Errorf("fraction of odd samples %.4f, want ½", odd)
			}
		})
	}
	t.Run("lattigo/sigma=2^60", func(t *testing.T) {
		sigma := math.Exp2(60)
		prng, err := sampling.NewPRNG()
		if err != nil {
			t.Fatal(err)
		}
		smp, err := ring.NewSampler(prng, rq, ring.DiscreteGaussian{Sigma: sigma, Bound: 6 * sigma}, false)
		if err != nil {
			t.Fatal(err)
		}
		_, odd := lowBitStats(rq, 1, smp.Read)
		t.Logf("lattigo's sampler at σ = 2^60: odd fraction %.4f", odd)
		if odd > 0.01 {
			t.Errorf("lattigo's sampler at σ = 2^60 returned %.4f odd samples; if it is now accurate, floodSampler's convolution may be dropped", odd)
		}
	})
}

// floodingCommittee is a committee under the test set with a tiny
// flooding bound, to reach its caps.
func floodingCommittee(t *testing.T, c, thr int, f FloodingConfig) *committee {
	t.Helper()
	cfg := DefaultConfig()
	cfg.LogN, cfg.Insecure, cfg.Flooding = 10, true, f
	p, err := NewParameters(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return newCommittee(t, p, c, thr)
}

// TestFloodingBudget: a coordinator asking for more than the bound covers
// is refused with ErrFloodingBudget — one block decryption past the cap,
// an aggregate of more contributors, one influence scalar past the cap, a
// committee larger than the bound assumes.
func TestFloodingBudget(t *testing.T) {
	f := FloodingConfig{Decryptions: 2, Contributors: 4, Scalars: 1, Committee: 3}
	t.Run("decryptions", func(t *testing.T) {
		cm := floodingCommittee(t, 3, 2, f)
		for round := uint64(1); round <= 3; round++ {
			agg, _ := encryptedRound(t, cm, 10, []float64{1, 2, 3}, 10*round)
			_, _, err := decrypt(t, cm, agg, round, cm.ids[:2])
			if round <= 2 && err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if round == 3 && (!errors.Is(err, ErrFloodingBudget) || !errors.Is(err, ErrPolicy)) {
				t.Fatalf("third block decryption with a cap of 2: got %v, want ErrFloodingBudget", err)
			}
		}
	})
	t.Run("contributors", func(t *testing.T) {
		cm := floodingCommittee(t, 3, 2, f)
		agg, _ := encryptedRound(t, cm, 10, []float64{1, 2, 3, 4, 5}, 1)
		if _, _, err := decrypt(t, cm, agg, 1, cm.ids[:2]); !errors.Is(err, ErrFloodingBudget) {
			t.Fatalf("aggregate of 5 with a cap of 4: got %v, want ErrFloodingBudget", err)
		}
	})
	t.Run("scalars", func(t *testing.T) {
		cm := floodingCommittee(t, 3, 2, f)
		c := realisticCase(5, 20, []float64{5, 7}, false)
		cts, digests := influenceRun(t, cm, c)
		for i, client := range c.clients {
			req := NewInfluenceRequest(cm.inst.ID(), 1, client, digests[i], cm.gradientDigest(digests[i]), cm.ids)
			if err := cm.verifyRequest(t, cm.ids[0], req, [][]byte{cts[i]}, nil); err != nil {
				t.Fatal(err)
			}
			_, err := cm.members[cm.ids[0]].admitCoefficientShare(req, cts[i])
			if i == 0 && err != nil {
				t.Fatal(err)
			}
			if i == 1 && !errors.Is(err, ErrFloodingBudget) {
				t.Fatalf("second scalar with a cap of 1: got %v, want ErrFloodingBudget", err)
			}
		}
	})
	t.Run("committee", func(t *testing.T) {
		cm := floodingCommittee(t, 4, 2, f)
		c := realisticCase(5, 20, []float64{5}, false)
		cts, digests := influenceRun(t, cm, c)
		req := NewInfluenceRequest(cm.inst.ID(), 1, c.clients[0], digests[0], cm.gradientDigest(digests[0]), cm.ids)
		if _, err := cm.members[cm.ids[0]].admitCoefficientShare(req, cts[0]); !errors.Is(err, ErrFloodingBudget) {
			t.Fatalf("committee of 4 with a cap of 3: got %v, want ErrFloodingBudget", err)
		}
	})
}

// TestFloodingDerivation pins the bound's arithmetic: σ grows as
// 2^(λ+1)·√count·k·noise, so doubling λ's bits or quadrupling the count
// moves it as predicted, and a member's coefficient noise is A(c, t)
// times the target.
func TestFloodingDerivation(t *testing.T) {
	p := testParams(t)
	f := p.Config().Flooding
	agg, inf := p.deriveFlooding(f)
	if agg != p.AggregateFloodingSigma() || inf != p.InfluenceFloodingTarget() {
		t.Fatalf("parameters carry σ %g, %g; the bound gives %g, %g", p.AggregateFloodingSigma(), p.InfluenceFloodingTarget(), agg, inf)
	}
	g := f
	g.Security += 8
	agg8, _ := p.deriveFlooding(g)
	if r := math.Log2(agg8 / agg); r < 8 || r > 8.2 {
		t.Errorf("λ + 8 moves σ by 2^%.2f, want 2^8 (and a little for the tail)", r)
	}
	g = f
	g.Decryptions *= 4
	agg4, _ := p.deriveFlooding(g)
	if r := math.Log2(agg4 / agg); r < 1 || r > 1.1 {
		t.Errorf("4× the decryptions moves σ by 2^%.2f, want 2^1 (and a little for the tail)", r)
	}
	if got, want := influenceAmplification(5, 3), 6.78; math.Abs(got-want) > 0.01 {
		t.Errorf("A(5, 3) = %.3f, want %.2f", got, want)
	}
	if got := influenceAmplification(3, 3); got != 1 {
		t.Errorf("A(3, 3) = %v, want 1: with t = c every share is needed", got)
	}
	if got := p.InfluenceFloodingSigma(5, 3); got != inf*influenceAmplification(5, 3) {
		t.Errorf("InfluenceFloodingSigma(5, 3) = %g, want A·target = %g", got, inf*influenceAmplification(5, 3))
	}
}
