package aggregation

import (
	"fmt"
	"math"
	"testing"
)

// TestSlotNoiseSigma checks the noise floor against the noise actually
// found in decrypted aggregates of all-zero updates: the standard deviation
// over the slots must be close to SlotNoiseSigma (the flooding noise
// dominates, so the bound is nearly tight), and no slot may exceed 8 of
// them, the margin dataset uses to tell a zero variance from noise.
func TestSlotNoiseSigma(t *testing.T) {
	for _, tc := range []struct {
		name                string
		params              Parameters
		members, thr, nodes int
	}{
		{"logN=10/c=3/t=2/clients=4", testParams(t), 3, 2, 4},
		{"logN=10/c=5/t=3/clients=10", testParams(t), 5, 3, 10},
		{"logN=14/c=5/t=3/clients=5", DefaultParameters(), 5, 3, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cm := newCommittee(t, tc.params, tc.members, tc.thr)
			enc, err := NewEncryptor(cm.params, cm.pk, 1)
			if err != nil {
				t.Fatal(err)
			}
			numParams := tc.params.Slots() - 1 // one block, the weight in the last slot
			acc, err := NewAccumulator(cm.params, cm.inst.ID(), numParams)
			if err != nil {
				t.Fatal(err)
			}
			zero := make([]float64, numParams)
			for i := range tc.nodes {
				cts, err := enc.EncryptUpdate(zero, 1)
				if err != nil {
					t.Fatal(err)
				}
				if err := acc.Add(fmt.Sprintf("c%02d", i), cts[0]); err != nil {
					t.Fatal(err)
				}
			}
			agg, err := acc.Finalize()
			if err != nil {
				t.Fatal(err)
			}
			avg, weight, err := decrypt(t, cm, agg, 1, cm.ids[:tc.thr])
			if err != nil {
				t.Fatal(err)
			}
			var ss, worst float64
			for _, v := range avg {
				s := v * weight // back to the sum, as the coordinator does for moments
				ss += s * s
				worst = max(worst, math.Abs(s))
			}
			got := math.Sqrt(ss / float64(len(avg)))
			want := tc.params.SlotNoiseSigma(tc.nodes, tc.members, tc.thr)
			t.Logf("measured slot noise σ %.3g, predicted %.3g (ratio %.3f), largest |error| %.2f σ", got, want, got/want, worst/want)
			if got > 1.1*want || got < 0.7*want {
				t.Errorf("measured slot noise σ %.3g, predicted %.3g: ratio %.3f outside [0.7, 1.1]", got, want, got/want)
			}
			if worst > 8*want {
				t.Errorf("largest slot error %.3g exceeds 8σ = %.3g", worst, 8*want)
			}
		})
	}
}
