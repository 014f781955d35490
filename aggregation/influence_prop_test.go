package aggregation

import (
	"fmt"
	"math"
	"math/big"
	mrand "math/rand/v2"
	"testing"

	"github.com/tuneinsight/lattigo/v6/ring"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
)

// TestConstantCoefficientIsScaledMean pins the fact the influence mode rests
// on: the constant coefficient of an encoded plaintext is scale × the mean
// of its slots (the real parts, for the standard ring), for both ring types.
// It follows from m(ζ) summed over all primitive roots ζ being the degree
// times m₀, the slots being one evaluation per conjugate pair.
func TestConstantCoefficientIsScaledMean(t *testing.T) {
	for _, rt := range []ring.Type{ring.ConjugateInvariant, ring.Standard} {
		for _, logScale := range []int{26, 40} {
			t.Run(fmt.Sprintf("ring=%v/logScale=%d", rt, logScale), func(t *testing.T) {
				cp, err := ckks.NewParametersFromLiteral(ckks.ParametersLiteral{
					LogN: 10, LogQ: []int{60, 60}, LogP: []int{61}, RingType: rt, LogDefaultScale: logScale,
				})
				if err != nil {
					t.Fatal(err)
				}
				r := mrand.New(mrand.NewPCG(uint64(rt), uint64(logScale)))
				slots := cp.MaxSlots()
				ecd := ckks.NewEncoder(cp, 53)
				pt := ckks.NewPlaintext(cp, cp.MaxLevel())
				var vals any
				mean := 0.0
				if rt == ring.Standard {
					v := make([]complex128, slots)
					for i := range v {
						v[i] = complex(2*r.Float64()-1, 2*r.Float64()-1)
						mean += real(v[i])
					}
					vals = v
				} else {
					v := make([]float64, slots)
					for i := range v {
						v[i] = 2*r.Float64() - 1
						mean += v[i]
					}
					vals = v
				}
				mean /= float64(slots)
				if err := ecd.Encode(vals, pt); err != nil {
					t.Fatal(err)
				}
				rq := cp.RingQ().AtLevel(pt.Level())
				coeffs := rq.NewPoly()
				rq.INTT(pt.Value, coeffs)
				c0 := centeredCRT(cp.RingQ().ModuliChain()[:pt.Level()+1], func(l int) uint64 { return coeffs.Coeffs[l][0] })
				got, _ := new(big.Float).SetInt(c0).Float64()
				want := math.Exp2(float64(logScale)) * mean
				// Encoding rounds each coefficient to an integer: ±0.5.
				if math.Abs(got-want) > 0.5+1e-12*math.Abs(want) {
					t.Fatalf("constant coefficient %.3f, scale × mean of slots %.3f", got, want)
				}
				// And the other coefficients are not (a trivially passing
				// check would have them all equal).
				c1 := centeredCRT(cp.RingQ().ModuliChain()[:pt.Level()+1], func(l int) uint64 { return coeffs.Coeffs[l][1] })
				if f, _ := new(big.Float).SetInt(c1).Float64(); math.Abs(f-want) < 1 {
					t.Fatalf("coefficient 1 also equals scale × mean")
				}
			})
		}
	}
}
