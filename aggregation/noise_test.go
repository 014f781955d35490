package aggregation

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
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
				if err := cm.add(acc, fmt.Sprintf("c%02d", i), cts, 1); err != nil {
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

// TestSlotNoiseSigmaLargeMoments is the flaky TestFederatedScalingNoiseFloor
// made deterministic: the moments of data with large sums of squares
// (values up to 4,000, as the breast-cancer areas) beside all-zero
// features. Encoding and decoding run a float64 FFT whose round-off is
// relative to the whole block, so the zero features' slots carry an error
// that grows with the other slots' magnitude; the noise floor must bound
// it (8σ, the margin of dataset.Moments.ScalerWithNoise) and the zero
// features must come out constant.
func TestSlotNoiseSigmaLargeMoments(t *testing.T) {
	const clients, rows, big, zeros = 5, 70, 30, 40
	for _, tc := range []struct {
		name         string
		params       Parameters
		members, thr int
	}{
		{"logN=10/c=3/t=2", testParams(t), 3, 2},
		{"logN=14/c=5/t=3", DefaultParameters(), 5, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cm := newCommittee(t, tc.params, tc.members, tc.thr)
			enc, err := NewEncryptor(cm.params, cm.pk, 1)
			if err != nil {
				t.Fatal(err)
			}
			features := big + zeros
			numParams := 1 + 2*features
			acc, err := NewAccumulator(cm.params, cm.inst.ID(), numParams)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(7, 11))
			var total dataset.Moments
			for i := range clients {
				e := model.Examples{Features: features}
				for range rows {
					row := make([]float64, features)
					for j := range big {
						row[j] = 4000 * rng.Float64()
					}
					e.X = append(e.X, row...)
					e.Y = append(e.Y, 0)
				}
				m := dataset.ComputeMoments(e)
				if err := total.Add(m); err != nil {
					t.Fatal(err)
				}
				cts, err := enc.EncryptUpdate(m.Flatten(), 1)
				if err != nil {
					t.Fatal(err)
				}
				if err := cm.add(acc, fmt.Sprintf("c%02d", i), cts, 1); err != nil {
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
			sum := make([]float64, len(avg))
			for i, v := range avg {
				sum[i] = v * weight
			}
			got, err := dataset.MomentsFromFlat(sum, features)
			if err != nil {
				t.Fatal(err)
			}
			// The engine's floor: the weight slot adds one per client
			// to each part and the number of clients to the sum.
			squares := got.FlatSquaresBound() + clients + clients*clients
			sigma := tc.params.SlotNoiseSigmaAt(clients, tc.members, tc.thr, squares)
			t.Logf("round-off σ %.3g of the floor, flooding and encryption σ %.3g", tc.params.RoundoffSigma(squares), tc.params.SlotNoiseSigma(clients, tc.members, tc.thr))
			// A slot's error is the floor's, spread over the block, plus
			// float64's own precision on its value: the zero features'
			// slots carry the first only.
			want := total.Flatten()
			var worstZero, worstRel float64
			for i := range want {
				d := math.Abs(sum[i] - want[i])
				if want[i] == 0 {
					worstZero = max(worstZero, d)
				}
				worstRel = max(worstRel, (d-8*sigma)/math.Abs(want[i]))
			}
			t.Logf("largest error of a zero slot %.3g, floor σ %.3g (%.1f σ); largest error beyond 8σ relative to its slot %.3g (2^%.1f)", worstZero, sigma, worstZero/sigma, worstRel, math.Log2(max(worstRel, 1e-300)))
			if worstZero > 8*sigma {
				t.Errorf("largest error of a zero slot %.3g exceeds 8σ = %.3g of the noise floor", worstZero, 8*sigma)
			}
			if worstRel > 0x1p-48 {
				t.Errorf("a slot's error exceeds 8σ by %.3g of its value, beyond 2^-48", worstRel)
			}
			s := got.ScalerWithNoise(sigma)
			for j := big; j < features; j++ {
				if s.Std[j] != 1 {
					t.Errorf("all-zero feature %d: std %g, want the constant-feature 1", j, s.Std[j])
				}
			}
		})
	}
}
