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

// TestAttackProductAfterCachedC1: a member keeps a client's checked c₁
// for the round and fetches it once for all its products, yet the second
// product of the same client, forged (its ciphertext is the product with
// another vector than the one its request commits to), is still refused
// with ErrProductMismatch, and so is one whose c₁ differs in one word.
func TestAttackProductAfterCachedC1(t *testing.T) {
	const numParams = 40
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	pol, err := NewPolicy(PolicyConfig{MaxScalarsPerRound: 6})
	if err != nil {
		t.Fatal(err)
	}
	p := cm.ids[0]
	cm.members[p].policy = pol
	c := realisticCase(52, numParams, []float64{10, 20}, false)
	influenceRun(t, cm, c)
	var src *testSource
	for _, s := range cm.sources {
		src = s
	}
	rng := rand.New(rand.NewPCG(9, 10))
	vector := func() []float64 {
		v := make([]float64, numParams)
		for k := range v {
			v[k] = rng.NormFloat64() / 6
		}
		return v
	}
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
	fetches := 0
	counting := func(ev *Evidence) {
		inner := ev.Contribution
		ev.Contribution = func(client string, b int) ([]byte, error) {
			fetches++
			return inner(client, b)
		}
	}
	a, b, forged := vector(), vector(), vector()
	ctA, dA := product(a)
	reqA := NewInfluenceRequest(cm.inst.ID(), 1, "c00", dA, GradientDigest(a), cm.ids)
	if err := cm.verifyRequest(t, p, reqA, [][]byte{ctA}, counting); err != nil {
		t.Fatal(err)
	}
	first := fetches
	if first == 0 {
		t.Fatal("the first product fetched no c1")
	}
	// The product with `forged`, under a request committing to b.
	ctF, dF := product(forged)
	reqF := NewInfluenceRequest(cm.inst.ID(), 1, "c00", dF, GradientDigest(b), cm.ids)
	cm.register(dF, &testSource{cts: src.cts, weights: src.weights, grad: b})
	if err := cm.verifyRequest(t, p, reqF, [][]byte{ctF}, counting); !errors.Is(err, ErrProductMismatch) {
		t.Fatalf("product with another vector after a cached c1: err = %v, want ErrProductMismatch", err)
	}
	// The honest product with b, one word of its c₁ changed.
	ctB, _ := product(b)
	bad := append([]byte(nil), ctB...)
	bad[len(bad)-8] ^= 1
	dBad := sha256Sum(bad)
	cm.register(dBad, &testSource{cts: src.cts, weights: src.weights, grad: b})
	reqBad := NewInfluenceRequest(cm.inst.ID(), 1, "c00", dBad, GradientDigest(b), cm.ids)
	if err := cm.verifyRequest(t, p, reqBad, [][]byte{bad}, counting); !errors.Is(err, ErrProductMismatch) {
		t.Fatalf("product with one word changed: err = %v, want ErrProductMismatch", err)
	}
	if fetches != first {
		t.Fatalf("%d c1 fetches for the client's later products, want 0 (cached)", fetches-first)
	}
}
