package aggregation

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
)

// TestDecodeTwoPrimes checks the Decryptor's own decoding of a two-prime
// plaintext against lattigo's encoder on the same plaintext: slots that
// encode values at combine's scale (2^44 at level 1), and plaintexts of
// uniformly random residues, whose centred coefficients span the whole
// of (−Q/2, Q/2] and exercise the sign and the 128-bit carries.
func TestDecodeTwoPrimes(t *testing.T) {
	for _, logN := range []int{10, 14} {
		cfg := DefaultConfig()
		cfg.LogN, cfg.Insecure = logN, true
		p, err := NewParameters(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cp := p.ckks
		d := &Decryptor{params: p, ecd: ckks.NewEncoder(cp, uint(cfg.EncoderPrecision))}
		ref := ckks.NewEncoder(cp, uint(cfg.EncoderPrecision))
		rq := cp.RingQ().AtLevel(1)
		rng := rand.New(rand.NewPCG(uint64(logN), 2))
		scale := rlwe.NewScale(math.Exp2(44))
		for _, kind := range []string{"encoded", "uniform"} {
			t.Run(fmt.Sprintf("%s/logN=%d", kind, logN), func(t *testing.T) {
				pt := ckks.NewPlaintext(cp, 1)
				pt.Scale = scale
				if kind == "encoded" {
					in := make([]float64, p.Slots())
					for i := range in {
						in[i] = (rng.Float64()*2 - 1) * 1000
					}
					if err := ref.Encode(in, pt); err != nil {
						t.Fatal(err)
					}
				} else {
					for r, q := range rq.ModuliChain()[:2] {
						for i := range pt.Value.Coeffs[r] {
							pt.Value.Coeffs[r][i] = rng.Uint64N(q)
						}
					}
				}
				want := make([]float64, p.Slots())
				if err := ref.Decode(pt, want); err != nil {
					t.Fatal(err)
				}
				got := make([]float64, p.Slots())
				if err := d.decode(pt, got); err != nil {
					t.Fatal(err)
				}
				var big float64
				for _, v := range want {
					big = max(big, math.Abs(v))
				}
				// One float64 rounding more or less per coefficient, summed
				// over N coefficients by the FFT.
				tol := big * float64(cp.N()) * 0x1p-52
				for i := range want {
					if diff := math.Abs(got[i] - want[i]); !(diff <= tol) {
						t.Fatalf("slot %d: decode %v, lattigo %v (|diff| %g > %g)", i, got[i], want[i], diff, tol)
					}
				}
			})
		}
	}
}
