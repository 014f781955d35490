package aggregation

import (
	"errors"
	"testing"
)

// TestMergeAggregates: the merged ciphertext decrypts to the FedAvg of the
// union, and merging refuses overlapping contributors and other keys.
func TestMergeAggregates(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	const n = 1500 // two blocks at 1024 slots
	wa, wb := []float64{10, 20, 30}, []float64{40, 50, 60}
	a, avgA := encryptedRound(t, cm, n, wa, 1)
	b, avgB := encryptedRound(t, cm, n, wb, 100)
	for i := range b.Contributors {
		b.Contributors[i] = "other-" + b.Contributors[i]
	}
	m, err := MergeAggregates(params, a, b)
	if err != nil {
		t.Fatal(err)
	}
	// The merged aggregate is the sum of both groups' signed ciphertexts.
	union := &testSource{cts: map[string][][]byte{}, weights: map[string]float64{}}
	for prefix, src := range map[string]*testSource{"": cm.sources[a.Digests[0]], "other-": cm.sources[b.Digests[0]]} {
		for id, cts := range src.cts {
			union.cts[prefix+id], union.weights[prefix+id] = cts, src.weights[id]
		}
	}
	cm.register(m.Digests[0], union)
	if len(m.Contributors) != 6 {
		t.Fatalf("%d contributors, want 6", len(m.Contributors))
	}
	got, weight, err := decrypt(t, cm, m, 1, cm.ids[:2])
	if err != nil {
		t.Fatal(err)
	}
	if weight < 209.99 || weight > 210.01 {
		t.Fatalf("total weight %g, want 210", weight)
	}
	want := make([]float64, n)
	for i := range want {
		want[i] = (60*avgA[i] + 150*avgB[i]) / 210
	}
	if d := maxAbsDiff(got, want); d > 1e-6 {
		t.Fatalf("merged aggregate decrypts %g away from the FedAvg of the union", d)
	}
	if _, err := MergeAggregates(params, a, a); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("merging an aggregate with itself: %v, want ErrDuplicate", err)
	}
	other := *b
	other.Key[0] ^= 1
	if _, err := MergeAggregates(params, a, &other); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("merging across keys: %v, want ErrKeyMismatch", err)
	}
}
