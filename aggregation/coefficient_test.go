package aggregation

import (
	"crypto/rand"
	"errors"
	"math"
	"math/big"
	"testing"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
)

// TestCoefficientShareIsKeySwitchConstant checks that a coefficient share,
// its noise set to zero, is exactly the constant coefficient of lattigo's
// key-switch share of the same ciphertext under the same secret, minus
// that share's own error: the difference is one integer (the same at
// every prime) within lattigo's 6σ bound. And the shares, with their
// noise, still combine within the precision bound.
func TestCoefficientShareIsKeySwitchConstant(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 5, 3)
	c := realisticCase(3, params.Slots()+17, []float64{40, 900}, false)
	cts, digests := influenceRun(t, cm, c)
	ksSigma := math.Sqrt(math.Pow(params.ckks.NoiseFreshSK(), 2) + math.Pow(rlwe.DefaultXe.Sigma, 2))
	// Client 0's shares without noise, client 1's with.
	id := c.clients[0]
	{
		i := 0
		req := NewInfluenceRequest(cm.inst.ID(), 1, id, digests[i], cm.gradientDigest(digests[i]), cm.ids)
		for _, p := range cm.ids {
			m := cm.members[p]
			m.coefZeroNoise, m.coef = true, nil
			if err := cm.verifyRequest(t, p, req, [][]byte{cts[i]}, nil); err != nil {
				t.Fatal(err)
			}
			b, err := m.admitCoefficientShare(req, cts[i])
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseCoefficientShare(params, b)
			if err != nil {
				t.Fatal(err)
			}
			// The whole key-switch share, as the member computed it
			// before: c₁·s̃ᵢ + e in the NTT domain, back to coefficients.
			ct, _, err := parseInfluence(params, cts[i])
			if err != nil {
				t.Fatal(err)
			}
			share := m.ks.AllocateShare(ct.Level())
			m.ks.GenShare(&rlwe.SecretKey{Value: m.tsk.Poly}, m.zero, ct, &share)
			rq := params.ckks.RingQ().AtLevel(ct.Level())
			rq.INTT(share.Value, share.Value)
			rq.Reduce(share.Value, share.Value)
			moduli := rq.ModuliChain()[:ct.Level()+1]
			diff := centeredCRT(moduli, func(l int) uint64 {
				return (share.Value.Coeffs[l][0] + moduli[l] - got.values[l]) % moduli[l]
			})
			if diff.CmpAbs(big.NewInt(int64(math.Ceil(6*ksSigma)))) > 0 {
				t.Fatalf("member %s client %s: the key-switch constant coefficient minus the share is %v, not lattigo's error (|e| ≤ %.1f)", p, id, diff, 6*ksSigma)
			}
			m.coefZeroNoise, m.coef = false, nil
		}
	}
	dec, err := NewDecryptor(params, cm.inst)
	if err != nil {
		t.Fatal(err)
	}
	{
		i := 1
		req := NewInfluenceRequest(cm.inst.ID(), 1, c.clients[i], digests[i], cm.gradientDigest(digests[i]), cm.ids)
		got, err := dec.CombineCoefficient(req, cts[i], coefficientShares(t, cm, req, cts[i], cm.ids[:3]))
		if err != nil {
			t.Fatal(err)
		}
		want, bound, _ := c.want(params, i)
		if e := math.Abs(got - want); e > bound {
			t.Fatalf("aᵢ = %.9g, want %.9g: error %.3g exceeds %.3g", got, want, e, bound)
		}
	}
}

// TestCoefficientNoiseDistribution checks the one noise value of a
// coefficient share: the same integer at every prime, its standard
// deviation that of the flooding noise (σ_ks is negligible beside it),
// and within the sampler's truncation.
func TestCoefficientNoiseDistribution(t *testing.T) {
	params := testParams(t)
	sigma := params.InfluenceFloodingSigma(5, 3)
	level := params.ckks.MaxLevel()
	n, err := newCoefNoise(params, level, sigma, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	moduli := params.ckks.RingQ().ModuliChain()[:level+1]
	const samples = 4000
	var sum2 float64
	limit := new(big.Float).SetFloat64(2 * params.influenceTail() * sigma)
	for range samples {
		e := n.sample()
		v := centeredCRT(moduli, func(l int) uint64 { return e[l] })
		f := new(big.Float).SetInt(v)
		if f.Abs(f).Cmp(limit) > 0 {
			t.Fatalf("noise %v beyond twice the truncation %.3g", v, 2*params.influenceTail()*sigma)
		}
		x, _ := new(big.Float).SetInt(v).Float64()
		sum2 += x * x
	}
	std := math.Sqrt(sum2 / samples)
	// The sampler's σ is at least sigma and at most a few percent above
	// it (the top level is rounded to the radix); 4000 samples estimate
	// it within ±3.5% at 3σ.
	if r := std / sigma; r < 0.95 || r > 1.15 {
		t.Fatalf("noise standard deviation %.4g, %.3f× the flooding σ %.4g", std, r, sigma)
	}
	t.Logf("noise std %.4g = %.4f σ (σ = 2^%.1f), %d levels", std, std/sigma, math.Log2(sigma), n.flood.Levels())
}

// TestAttackCoefficientShareOtherCiphertext: a member keeps the influence
// ciphertext it verified so as not to hash it again; given another one
// for the same request (one word changed) it still refuses with
// ErrDigestMismatch, and then serves the verified one, hashed.
func TestAttackCoefficientShareOtherCiphertext(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	c := realisticCase(4, 50, []float64{30}, false)
	cts, digests := influenceRun(t, cm, c)
	req := NewInfluenceRequest(cm.inst.ID(), 1, c.clients[0], digests[0], cm.gradientDigest(digests[0]), cm.ids)
	p := cm.ids[0]
	m := cm.members[p]
	if err := cm.verifyRequest(t, p, req, [][]byte{cts[0]}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Admit(req, nil); err != nil {
		t.Fatal(err)
	}
	other := append([]byte(nil), cts[0]...)
	other[influenceHeader+8] ^= 1
	if _, err := m.DecryptCoefficientShare(req, other); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("another ciphertext than the verified one: err = %v, want ErrDigestMismatch", err)
	}
	if _, err := m.DecryptCoefficientShare(req, cts[0]); err != nil {
		t.Fatalf("the verified ciphertext after a refused one: %v", err)
	}
}
