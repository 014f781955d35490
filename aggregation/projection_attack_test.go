package aggregation

import (
	"errors"
	"math/rand/v2"
	"testing"
)

// TestAttackProjectionVectors: under the projection valuation mode a
// member holds L = 6 (breast-cancer's public vectors) and verifies each of
// a client's products with six committed vectors over the same signed
// ciphertexts of one round; the coordinator's seventh vector, committed
// honestly, is refused (ErrGradientMismatch), and so is a product whose
// vector sent in the clear is not the one its request commits to.
func TestAttackProjectionVectors(t *testing.T) {
	const l, numParams = 6, 40
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	pol, err := NewPolicy(PolicyConfig{MaxScalarsPerRound: l})
	if err != nil {
		t.Fatal(err)
	}
	p := cm.ids[0]
	cm.members[p].policy = pol
	c := realisticCase(51, numParams, []float64{10, 20, 30}, false)
	influenceRun(t, cm, c) // the round's signed ciphertexts
	var src *testSource
	for _, s := range cm.sources {
		src = s
	}
	rng := rand.New(rand.NewPCG(7, 8))
	product := func(v []float64) ([]byte, [32]byte) {
		inf, err := NewInfluence(params, cm.inst.ID(), v, numParams)
		if err != nil {
			t.Fatal(err)
		}
		for _, ct := range src.cts["c00"] {
			if err := inf.Add("c00", ct); err != nil {
				t.Fatal(err)
			}
		}
		ct, d, err := inf.Finalize("c00")
		if err != nil {
			t.Fatal(err)
		}
		cm.register(d, &testSource{cts: src.cts, weights: src.weights, grad: v})
		return ct, d
	}
	vector := func() []float64 {
		v := make([]float64, numParams)
		for k := range v {
			v[k] = rng.NormFloat64() / 6
		}
		return v
	}
	for j := range l + 1 {
		v := vector()
		if j == 0 {
			v = c.grad // the round's first vector: the one the run committed
		}
		ct, d := product(v)
		req := NewInfluenceRequest(cm.inst.ID(), 1, "c00", d, GradientDigest(v), cm.ids)
		err := cm.verifyRequest(t, p, req, [][]byte{ct}, nil)
		if j < l && err != nil {
			t.Fatalf("vector %d of %d: %v", j+1, l, err)
		}
		if j == l && !errors.Is(err, ErrGradientMismatch) {
			t.Fatalf("a %d-th vector with L = %d: err = %v, want ErrGradientMismatch", l+1, l, err)
		}
	}
	// Another client, a vector of the round, but the coordinator sends a
	// different one in the clear than the request commits to.
	v, other := vector(), vector()
	inf, err := NewInfluence(params, cm.inst.ID(), v, numParams)
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range src.cts["c01"] {
		if err := inf.Add("c01", ct); err != nil {
			t.Fatal(err)
		}
	}
	ct, d, err := inf.Finalize("c01")
	if err != nil {
		t.Fatal(err)
	}
	cm.register(d, &testSource{cts: src.cts, weights: src.weights, grad: v})
	req := NewInfluenceRequest(cm.inst.ID(), 1, "c01", d, GradientDigest(c.grad), cm.ids)
	if err := cm.verifyRequest(t, p, req, [][]byte{ct}, func(ev *Evidence) { ev.Gradient = other }); !errors.Is(err, ErrGradientMismatch) {
		t.Fatalf("vector sent not the committed one: err = %v, want ErrGradientMismatch", err)
	}
}
