package aggregation

import (
	"fmt"
	"math"
	"math/big"
	mrand "math/rand/v2"
	"testing"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/multiparty"
	"github.com/tuneinsight/lattigo/v6/ring"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
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
		if err := ecd.Encode(vals, pt); err != nil {
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
	n := float64(cp.N())
	modelAgg := math.Sqrt(clients * p.FreshNoiseVariance(c))
	modelInf := math.Sqrt(p.InfluenceNoiseVariance(c, 1))
	whole, coef := cm.members[cm.ids[0]].floodingSigmas()
	needAgg := floodingSigma(f.Security, float64(f.Decryptions)*n, aggRMS)
	needInf := floodingSigma(f.Security, float64(f.Scalars), infRMS)
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
