package aggregation

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// gradientDigestRef is GradientDigest as first written (one hash Write
// per value): the digests are in requests, transcripts and receipts, so
// the faster form must give them to the bit.
func gradientDigestRef(grad []float64) [32]byte {
	h := sha256.New()
	h.Write([]byte(domainGradient))
	var w [8]byte
	binary.BigEndian.PutUint64(w[:], uint64(len(grad)))
	h.Write(w[:])
	for _, g := range grad {
		binary.LittleEndian.PutUint64(w[:], math.Float64bits(g))
		h.Write(w[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func TestGradientDigestUnchanged(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	special := []float64{0, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1), math.SmallestNonzeroFloat64, math.MaxFloat64}
	for _, n := range []int{0, 1, 7, 511, 512, 513, 1024, 100_003} {
		g := make([]float64, n)
		for i := range g {
			g[i] = r.NormFloat64()
			if r.IntN(50) == 0 {
				g[i] = special[r.IntN(len(special))]
			}
		}
		if got, want := GradientDigest(g), gradientDigestRef(g); got != want {
			t.Fatalf("%d values: digest %x, the original form gives %x", n, got[:8], want[:8])
		}
	}
}

// TestGradientDigestCache: the member's cached digest follows the
// vector's bits, also when the caller reuses one slice for another
// vector, and tells −0 from +0 as the digest does.
func TestGradientDigestCache(t *testing.T) {
	var v verifyState
	g := []float64{1, 2, 0, 4}
	if got, want := v.gradientDigest(g), GradientDigest(g); got != want {
		t.Fatalf("first: %x, want %x", got[:8], want[:8])
	}
	if got, want := v.gradientDigest(append([]float64(nil), g...)), GradientDigest(g); got != want {
		t.Fatalf("an equal copy: %x, want %x", got[:8], want[:8])
	}
	g[2] = math.Copysign(0, -1) // same slice, −0 for +0
	if got, want := v.gradientDigest(g), GradientDigest(g); got != want || got == gradientDigestRef([]float64{1, 2, 0, 4}) {
		t.Fatalf("after −0 replaced +0 in place: %x, want %x (and not the old vector's)", got[:8], want[:8])
	}
	g[3] = 5
	if got, want := v.gradientDigest(g), GradientDigest(g); got != want {
		t.Fatalf("after a value changed in place: %x, want %x", got[:8], want[:8])
	}
	if got, want := v.gradientDigest(g[:3]), GradientDigest(g[:3]); got != want {
		t.Fatalf("a prefix: %x, want %x", got[:8], want[:8])
	}
}

func BenchmarkGradientDigest(b *testing.B) {
	g := make([]float64, 1_000_000)
	for i := range g {
		g[i] = float64(i)
	}
	b.SetBytes(int64(8 * len(g)))
	b.Run("buffered", func(b *testing.B) {
		for b.Loop() {
			GradientDigest(g)
		}
	})
	b.Run("per-value", func(b *testing.B) {
		for b.Loop() {
			gradientDigestRef(g)
		}
	})
}
