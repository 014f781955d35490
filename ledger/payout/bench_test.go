package payout

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func BenchmarkPayouts(b *testing.B) {
	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			values := make([]float64, n)
			for i := range values {
				values[i] = rng.NormFloat64()
			}
			for b.Loop() {
				if _, _, err := Payouts(values, 100, 0.1, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "clients/s")
		})
	}
}
