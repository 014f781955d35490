package ledger

import (
	"fmt"
	"testing"
)

// BenchmarkAppendRound measures one committed round of receipts: what a
// coordinator step pays for its ledger, fsync included.
func BenchmarkAppendRound(b *testing.B) {
	for _, n := range []int{8, 64} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			db := openTest(b)
			key, err := db.SigningKey()
			if err != nil {
				b.Fatal(err)
			}
			round := 0
			for b.Loop() {
				round++
				err := db.Update(func(tx *Tx) error {
					_, err := tx.AppendReceipts(key, testReceipts("job", round, n))
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "receipts/s")
		})
	}
}

// BenchmarkVerify measures a full offline audit of a stored ledger.
func BenchmarkVerify(b *testing.B) {
	for _, rounds := range []int{10, 100} {
		const n = 10
		b.Run(fmt.Sprintf("receipts=%d", rounds*n), func(b *testing.B) {
			db := openTest(b)
			appendRounds(b, db, "job", rounds, n)
			for b.Loop() {
				if err := db.Verify(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*rounds*n)/b.Elapsed().Seconds(), "receipts/s")
		})
	}
}
