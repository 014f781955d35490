package aggregation

import (
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// logUniform draws a magnitude log-uniformly in [lo, hi] with a random sign.
func logUniform(r *mrand.Rand, lo, hi float64) float64 {
	v := math.Exp(math.Log(lo) + r.Float64()*(math.Log(hi)-math.Log(lo)))
	if r.IntN(2) == 0 {
		return -v
	}
	return v
}

// influenceCase is a round of the influence mode: a validation gradient and
// the clients' weighted updates, in the clear for reference.
type influenceCase struct {
	grad    []float64
	clients []string
	weights []float64
	updates [][]float64
}

// realisticCase draws the magnitudes of the brief: gradient entries of
// 1e-4..1, weights up to 1e4, update entries of 1e-3..1. With aligned,
// every update entry has the sign of −g (a descent step: the largest
// |aᵢ|, the hardest case for the budget); otherwise signs are independent.
func realisticCase(seed uint64, numParams int, weights []float64, aligned bool) influenceCase {
	r := mrand.New(mrand.NewPCG(seed, 11))
	c := influenceCase{grad: make([]float64, numParams), weights: weights}
	for j := range c.grad {
		c.grad[j] = logUniform(r, 1e-4, 1)
	}
	for i := range weights {
		c.clients = append(c.clients, fmt.Sprintf("c%02d", i))
		u := make([]float64, numParams)
		for j := range u {
			u[j] = logUniform(r, 1e-3, 1)
			if aligned {
				u[j] = -math.Copysign(u[j], c.grad[j])
			}
		}
		c.updates = append(c.updates, u)
	}
	return c
}

// want is aᵢ = ⟨g, nᵢ·Δᵢ⟩ and the error bound of doc.go for it,
// (6·√(N/12)·2^-25·‖nᵢΔᵢ‖₂ + 2^-21)·max|g|, and the unit
// max|g|·‖nᵢΔᵢ‖₂ in which errors are reported.
func (c influenceCase) want(p Parameters, i int) (a, bound, unit float64) {
	maxG, sq := 0.0, 0.0
	for j, g := range c.grad {
		x := c.weights[i] * c.updates[i][j]
		a += g * x
		sq += x * x
		maxG = max(maxG, math.Abs(g))
	}
	return a, (influenceBound(p)*math.Sqrt(sq) + influenceFloodBound(p)) * maxG, maxG * math.Sqrt(sq)
}

// influenceRun encrypts every client's update, streams the blocks into an
// Influence from one goroutine per client, and finalises each client.
func influenceRun(t testing.TB, cm *committee, c influenceCase) (cts [][]byte, digests [][32]byte) {
	t.Helper()
	enc, err := NewEncryptor(cm.params, cm.pk, 2)
	if err != nil {
		t.Fatal(err)
	}
	inf, err := NewInfluence(cm.params, cm.inst.ID(), c.grad, len(c.grad))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(c.clients))
	src := &testSource{cts: map[string][][]byte{}, weights: map[string]float64{}, grad: c.grad}
	for i, id := range c.clients {
		blocks, err := enc.EncryptUpdate(c.updates[i], c.weights[i])
		if err != nil {
			t.Fatal(err)
		}
		src.cts[id], src.weights[id] = blocks, c.weights[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Blocks in reverse order: arrival order must not matter.
			for b := len(blocks) - 1; b >= 0; b-- {
				if err := inf.Add(id, blocks[b]); err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, id := range c.clients {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		ct, d, err := inf.Finalize(id)
		if err != nil {
			t.Fatal(err)
		}
		cm.register(d, src)
		cts, digests = append(cts, ct), append(digests, d)
	}
	return cts, digests
}

// coefficientShares asks every member in askeds for its share.
func coefficientShares(t testing.TB, cm *committee, req DecryptRequest, ct []byte, asked []string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, p := range asked {
		if err := cm.verifyRequest(t, p, req, [][]byte{ct}, nil); err != nil {
			t.Fatalf("member %s: %v", p, err)
		}
		s, err := cm.members[p].admitCoefficientShare(req, ct)
		if err != nil {
			t.Fatalf("member %s: %v", p, err)
		}
		out[p] = s
	}
	return out
}

// influenceBound is the main term of the asserted error bound on aᵢ, in
// units of max|g|·‖nᵢΔᵢ‖₂: six standard deviations of the gradient's
// rounding error (doc.go, "Influence"), 6·√(N/12)·2^-25: 6.6e-6 for
// N = 2^14, 1.7e-6 for N = 2^10.
// influenceFloodBound is six standard deviations of the flooding noise on
// aᵢ, per unit of max|g|, for the committees of these tests (c ≤ 5, so
// A ≤ A(5, 3), and Σ|λᵢ| ≤ 64 for any answering subset): the members' σ
// weighed by the λᵢ and divided by the scale Δ·Δ_g/slots ≥
// 2^(scale+25)/(slots·max|g|) (doc.go, "Influence").
func influenceFloodBound(p Parameters) float64 {
	return 6 * p.InfluenceFloodingSigma(5, 3) * 64 * float64(p.Slots()) * math.Exp2(-float64(p.cfg.LogDefaultScale+influenceGradientBits-1))
}

func influenceBound(p Parameters) float64 {
	return 6 * math.Sqrt(float64(p.CKKS().N())/12) * math.Exp2(1-influenceGradientBits)
}

func TestInfluenceAnyTOfC(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 5, 3)
	// 3 blocks of 1024 slots, the weight slot in the last.
	c := realisticCase(1, 2*params.Slots()+100, []float64{12, 700, 10000}, false)
	cts, digests := influenceRun(t, cm, c)
	dec, err := NewDecryptor(params, cm.inst)
	if err != nil {
		t.Fatal(err)
	}
	// Each client's request goes to all five members; the answers that
	// arrive differ, as after dropouts. Sets with D > 1 ({m00,m01,m04}:
	// points 1, 2, 5) combine as well as consecutive ones.
	answered := [][]string{cm.ids, {"m00", "m01", "m04"}, {"m01", "m02", "m03"}}
	for i, id := range c.clients {
		req := NewInfluenceRequest(cm.inst.ID(), 1, id, digests[i], cm.gradientDigest(digests[i]), cm.ids)
		all := coefficientShares(t, cm, req, cts[i], cm.ids)
		want, bound, _ := c.want(params, i)
		for _, set := range answered {
			t.Run(fmt.Sprintf("client=%s/answered=%v", id, set), func(t *testing.T) {
				shares := map[string][]byte{}
				for _, p := range set {
					shares[p] = all[p]
				}
				got, err := dec.CombineCoefficient(req, cts[i], shares)
				if err != nil {
					t.Fatal(err)
				}
				if e := math.Abs(got - want); e > bound {
					t.Fatalf("aᵢ = %.9g, want %.9g: error %.3g exceeds %.3g", got, want, e, bound)
				}
			})
		}
	}
}

func TestInfluenceThresholdMinusOne(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 5, 3)
	c := realisticCase(2, params.Slots(), []float64{300}, true)
	cts, digests := influenceRun(t, cm, c)
	dec, _ := NewDecryptor(params, cm.inst)
	req := NewInfluenceRequest(cm.inst.ID(), 1, c.clients[0], digests[0], cm.gradientDigest(digests[0]), cm.ids)
	shares := coefficientShares(t, cm, req, cts[0], cm.ids[:2])
	if _, err := dec.CombineCoefficient(req, cts[0], shares); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("2 of threshold 3 shares: %v, want ErrIncomplete", err)
	}
	// Interpolating the two shares anyway gives noise, not aᵢ.
	ct, info, err := parseInfluence(params, cts[0])
	if err != nil {
		t.Fatal(err)
	}
	var vals [][]uint64
	for _, p := range cm.ids[:2] {
		s, err := parseCoefficientShare(params, shares[p])
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, s.values)
	}
	want, _, _ := c.want(params, 0)
	got, err := dec.combineCoefficient(ct, info.logScale, []int64{1, 2}, vals)
	if err == nil && math.Abs(got-want) < 1e3*math.Abs(want) {
		t.Fatalf("t−1 shares decoded to %g, close to aᵢ = %g", got, want)
	}
}

func TestInfluencePolicy(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 4, 2)
	c := realisticCase(3, 50, []float64{10, 20}, false)
	cts, digests := influenceRun(t, cm, c)
	// A second Influence for the same round gives the same client a new
	// ciphertext, hence a new digest.
	cts2, digests2 := influenceRun(t, cm, c)
	key := cm.inst.ID()
	m := cm.members["m00"]
	first := NewInfluenceRequest(key, 7, "c00", digests[0], cm.gradientDigest(digests[0]), cm.ids)
	cm.verifyAll(t, first, [][]byte{cts[0]})
	if _, err := m.admitCoefficientShare(first, cts[0]); err != nil {
		t.Fatal(err)
	}
	agg, _ := encryptedRound(t, cm, 50, []float64{1, 2, 3}, 9)

	// The requests for another digest of c00 (a second ciphertext of the
	// same client and round) are of attempt 1, a retry: its upload of
	// attempt 0 is the one the member verified, and a retry is where an
	// honest coordinator would have a second one.
	retry := func(r DecryptRequest) DecryptRequest { r.Attempt = 1; return r }
	cases := []struct {
		name string
		req  DecryptRequest
		ct   []byte
		want error
		ev   func(*Evidence) // changes the honest evidence
	}{
		{"same request again", first, cts[0], ErrAlreadyServed, nil},
		{"other participants", NewInfluenceRequest(key, 7, "c00", digests[0], cm.gradientDigest(digests[0]), []string{"m00", "m01"}), cts[0], ErrAlreadyServed, nil},
		{"other digest", retry(NewInfluenceRequest(key, 7, "c00", digests2[0], cm.gradientDigest(digests2[0]), cm.ids)), cts2[0], ErrScalarBudget, nil},
		{"other digest and participants", retry(NewInfluenceRequest(key, 7, "c00", digests2[0], cm.gradientDigest(digests2[0]), []string{"m00", "m03"})), cts2[0], ErrScalarBudget, nil},
		{"other purpose", withPurpose(NewInfluenceRequest(key, 7, "c00", digests2[0], cm.gradientDigest(digests2[0]), cm.ids), "total"), cts2[0], ErrPolicy, nil},
		{"two contributors", withContributors(NewInfluenceRequest(key, 7, "c01", digests[1], cm.gradientDigest(digests[1]), cm.ids), "c00", "c01"), cts[1], ErrPolicy, nil},
		{"two digests", withDigests(NewInfluenceRequest(key, 7, "c01", digests[1], cm.gradientDigest(digests[1]), cm.ids), digests[1], digests2[1]), cts[1], ErrPolicy, nil},
		{"digest mismatch", NewInfluenceRequest(key, 7, "c01", digests[1], cm.gradientDigest(digests[1]), cm.ids), cts2[1], ErrDigestMismatch, nil},
		{"fewer than t participants", NewInfluenceRequest(key, 7, "c01", digests[1], cm.gradientDigest(digests[1]), []string{"m00"}), cts[1], ErrInvalidInput, nil},
		{"not a participant", NewInfluenceRequest(key, 7, "c01", digests[1], cm.gradientDigest(digests[1]), []string{"m01", "m02"}), cts[1], ErrNotMember, nil},
		// With the round's committed vector, so that verification gets
		// as far as reading the ciphertext.
		{"aggregate ciphertext", NewInfluenceRequest(key, 7, "c02", agg.Digests[0], GradientDigest(c.grad), cm.ids), agg.Ciphertexts[0], ErrMalformed,
			func(ev *Evidence) { ev.Gradient = c.grad }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Verified first, as the client does: refused there or after.
			err := cm.verifyRequest(t, m.ID(), tc.req, [][]byte{tc.ct}, tc.ev)
			if err == nil {
				_, err = m.admitCoefficientShare(tc.req, tc.ct)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	t.Run("other client or round allowed", func(t *testing.T) {
		for _, req := range []DecryptRequest{
			NewInfluenceRequest(key, 7, "c01", digests[1], cm.gradientDigest(digests[1]), cm.ids),
			NewInfluenceRequest(key, 8, "c00", digests2[0], cm.gradientDigest(digests2[0]), cm.ids),
		} {
			ct := cts[1]
			if req.Round == 8 {
				ct = cts2[0]
			}
			cm.verifyAll(t, req, [][]byte{ct})
			if _, err := m.admitCoefficientShare(req, ct); err != nil {
				t.Fatalf("%s round %d: %v", req.Contributors[0], req.Round, err)
			}
		}
	})

	t.Run("transcript survives a restart", func(t *testing.T) {
		raw, err := m.MarshalTranscript()
		if err != nil {
			t.Fatal(err)
		}
		restored, err := UnmarshalTranscript(raw)
		if err != nil {
			t.Fatal(err)
		}
		e, ok := restored.FindRequest(first.ID())
		if !ok || e.Digests[0] != digests[0] || e.Scalars != 1 {
			t.Fatalf("restored transcript lost the coefficient share: %+v %v", e, ok)
		}
		again, _ := restored.MarshalBinary()
		if string(again) != string(raw) {
			t.Fatal("transcript does not round-trip")
		}
		// A member restarted with the transcript refuses a second scalar
		// for (c00, round 8), whatever the digest.
		m2, err := NewMember(params, "m00", m.identity, m.signer, m.keys, m.policy, restored, m.rand)
		if err != nil {
			t.Fatal(err)
		}
		m2.inst, m2.tsk, m2.pk = m.inst, m.tsk, m.pk
		cts3, digests3 := influenceRun(t, cm, c)
		third := NewInfluenceRequest(key, 8, "c00", digests3[0], cm.gradientDigest(digests3[0]), cm.ids)
		if err := m2.VerifyAggregate(third, cm.evidence(t, third, [][]byte{cts3[0]})); err != nil {
			t.Fatal(err)
		}
		if _, err := m2.admitCoefficientShare(third, cts3[0]); !errors.Is(err, ErrScalarBudget) {
			t.Fatalf("restarted member: %v, want ErrScalarBudget", err)
		}
	})
}

func withPurpose(r DecryptRequest, p string) DecryptRequest { r.Purpose = p; return r }
func withContributors(r DecryptRequest, c ...string) DecryptRequest {
	r.Contributors = c
	return r
}
func withDigests(r DecryptRequest, d ...[32]byte) DecryptRequest { r.Digests = d; return r }

func TestDecryptShareRefusesInfluence(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	c := realisticCase(4, 50, []float64{10, 20, 30}, false)
	cts, digests := influenceRun(t, cm, c)
	m := cm.members["m00"]
	// Purpose "influence" is refused for a whole share, even naming k
	// contributors and exactly t participants.
	req := DecryptRequest{Key: cm.inst.ID(), Purpose: PurposeInfluence, Round: 1, Digests: [][32]byte{digests[0]},
		Contributors: c.clients, Participants: cm.ids[:2]}.Canonical()
	if _, err := m.admitDecryptShare(req, 0, cts[0]); !errors.Is(err, ErrPolicy) {
		t.Fatalf("whole share of an influence request: %v, want ErrPolicy", err)
	}
	// Relabelled as an aggregate, an influence ciphertext does not parse
	// as one: it can never be decrypted whole.
	req.Purpose = "total"
	if err := cm.verifyRequest(t, m.ID(), req, [][]byte{cts[0]}, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("verifying a whole decryption of an influence ciphertext: %v, want ErrMalformed", err)
	}
	if _, err := m.admitDecryptShare(req, 0, cts[0]); !errors.Is(err, ErrNotVerified) {
		t.Fatalf("whole share of an influence ciphertext: %v, want ErrMalformed", err)
	}
}

func TestCoefficientShareSize(t *testing.T) {
	for _, params := range []Parameters{testParams(t), DefaultParameters()} {
		t.Run(fmt.Sprintf("logN=%d", params.Config().LogN), func(t *testing.T) {
			limbs := params.CKKS().MaxLevel() + 1
			if got, want := params.CoefficientShareSize(), baseHeaderSize+32+8*limbs; got != want {
				t.Fatalf("coefficient share of %d bytes, want %d (header, request ID, one word per limb)", got, want)
			}
		})
	}
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	c := realisticCase(5, 20, []float64{5}, false)
	cts, digests := influenceRun(t, cm, c)
	req := NewInfluenceRequest(cm.inst.ID(), 1, "c00", digests[0], cm.gradientDigest(digests[0]), cm.ids)
	cm.verifyAll(t, req, [][]byte{cts[0]})
	s, err := cm.members["m01"].admitCoefficientShare(req, cts[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != params.CoefficientShareSize() || len(s) != 104 {
		t.Fatalf("share of %d bytes, want %d: one coefficient, not %d", len(s), params.CoefficientShareSize(), params.CKKS().N())
	}
	if _, err := parseCoefficientShare(params, s); err != nil {
		t.Fatal(err)
	}
}

func TestInfluenceRejects(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 2, 2)
	key := cm.inst.ID()
	for _, tc := range []struct {
		name string
		grad []float64
		n    int
	}{
		{"length mismatch", []float64{1, 2}, 3},
		{"no parameters", nil, 0},
		{"NaN", []float64{1, math.NaN()}, 2},
		{"infinite", []float64{math.Inf(-1)}, 1},
		{"above 2^30", []float64{2e9}, 1},
	} {
		t.Run("new/"+tc.name, func(t *testing.T) {
			if _, err := NewInfluence(params, key, tc.grad, tc.n); !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("got %v, want ErrInvalidInput", err)
			}
		})
	}
	enc, _ := NewEncryptor(params, cm.pk, 1)
	inf, err := NewInfluence(params, key, update(1, 10), 10)
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := enc.EncryptBlock(update(2, 10), 3, 0)
	other, _ := enc.EncryptBlock(update(2, 2000), 3, 0) // says 2 blocks
	bad := slices.Clone(ct)
	bad[len(bad)-1] = 0xff
	for _, tc := range []struct {
		name   string
		client string
		ct     []byte
		want   error
	}{
		{"empty client", "", ct, ErrInvalidInput},
		{"unreduced", "a", bad, ErrMalformed},
		{"truncated", "a", ct[:100], ErrMalformed},
		{"block count", "a", other, ErrBlockMismatch},
	} {
		t.Run("add/"+tc.name, func(t *testing.T) {
			if err := inf.Add(tc.client, tc.ct); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, _, err := inf.Finalize("a"); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("finalize with nothing: %v", err)
	}
	if err := inf.Add("a", ct); err != nil {
		t.Fatal(err)
	}
	if err := inf.Add("a", ct); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate block: %v", err)
	}
	if _, _, err := inf.Finalize("a"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := inf.Finalize("a"); !errors.Is(err, ErrState) {
		t.Fatalf("second finalize: %v", err)
	}
	if err := inf.Add("a", ct); !errors.Is(err, ErrState) {
		t.Fatalf("add after finalize: %v", err)
	}
}

func TestInfluenceWire(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	c := realisticCase(6, 20, []float64{5}, false)
	cts, digests := influenceRun(t, cm, c)
	req := NewInfluenceRequest(cm.inst.ID(), 1, "c00", digests[0], cm.gradientDigest(digests[0]), cm.ids)
	cm.verifyAll(t, req, [][]byte{cts[0]})
	share, err := cm.members["m00"].admitCoefficientShare(req, cts[0])
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseCoefficientShare(params, share)
	if err != nil {
		t.Fatal(err)
	}
	if again := s.marshal(params); string(again) != string(share) {
		t.Fatal("coefficient share does not round-trip")
	}
	mutate := func(b []byte, f func([]byte)) []byte { b = slices.Clone(b); f(b); return b }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"truncated", share[:len(share)-1], ErrMalformed},
		{"longer", append(slices.Clone(share), 0), ErrMalformed},
		{"kind", mutate(share, func(b []byte) { b[2] = byte(kindDecryptShare) }), ErrMalformed},
		{"unreduced", mutate(share, func(b []byte) {
			for i := len(b) - 8; i < len(b); i++ {
				b[i] = 0xff
			}
		}), ErrMalformed},
		{"parameters", mutate(share, func(b []byte) { b[9] ^= 1 }), ErrParametersMismatch},
	} {
		t.Run("share/"+tc.name, func(t *testing.T) {
			if _, err := parseCoefficientShare(params, tc.b); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"log scale", mutate(cts[0], func(b []byte) { b[baseHeaderSize] = 0x7f })},
		{"no blocks", mutate(cts[0], func(b []byte) { copy(b[baseHeaderSize+4:], []byte{0, 0, 0, 0}) })},
		{"kind", mutate(cts[0], func(b []byte) { b[2] = byte(kindCiphertext) })},
		{"truncated", cts[0][:influenceHeader]},
	} {
		t.Run("influence/"+tc.name, func(t *testing.T) {
			if _, _, err := parseInfluence(params, tc.b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func TestLagrangeAtZero(t *testing.T) {
	for _, tc := range []struct {
		points []int64
		d      int64
	}{
		{[]int64{1, 2, 3}, 1},
		{[]int64{3, 4, 5}, 1},
		{[]int64{1, 2, 5}, 6},
		{[]int64{2, 7}, 5},
	} {
		t.Run(fmt.Sprint(tc.points), func(t *testing.T) {
			coeffs, d := lagrangeAtZero(tc.points)
			if d.Int64() != tc.d {
				t.Fatalf("D = %v, want %d", d, tc.d)
			}
			// Σ cᵢ·f(xᵢ) = D·f(0) for f = 1, x, ..., x^(t−1) shifted by 5.
			for deg := range tc.points {
				sum := int64(0)
				for i, x := range tc.points {
					f := int64(5)
					for range deg {
						f *= x
					}
					if deg == 0 {
						f = 5
					} else {
						f += 5
					}
					sum += coeffs[i].Int64() * f
				}
				if sum != 5*tc.d {
					t.Fatalf("degree %d: Σ cᵢ f(xᵢ) = %d, want %d", deg, sum, 5*tc.d)
				}
			}
		})
	}
	// Points 2, 4, 6 have coefficients 3, −3, 1 (D = 1, Σ|cᵢ| = 7); the
	// consecutive 4, 5, 6 have D = 1 but 15, −24, 10.
	if got := bestSubset([]int64{1, 2, 4, 5, 6}, 3); !slices.Equal(got, []int{1, 2, 4}) {
		t.Fatalf("best subset %v, want points 2, 4, 6", got)
	}
}

// TestInfluencePrecision measures aᵢ against the plaintext inner product
// with the default (secure) parameters on the magnitudes of the brief:
// P = 1e5 parameters (7 blocks), gradient entries 1e-4..1, weights up to
// 1e4, update entries 1e-3..1, signs independent or aligned (a descent
// step, the largest |aᵢ|), 3-of-5 decryption with σ = 2^30 flooding, from
// consecutive members (D = 1) and from members 1, 2, 5 (D = 6).
func TestInfluencePrecision(t *testing.T) {
	params := DefaultParameters()
	cm := newCommittee(t, params, 5, 3)
	dec, _ := NewDecryptor(params, cm.inst)
	const numParams = 100_000
	worstRel, worstNorm := 0.0, 0.0
	for round, aligned := range []bool{false, true} {
		c := realisticCase(7, numParams, []float64{1, 37, 1500, 10000}, aligned)
		cts, digests := influenceRun(t, cm, c)
		for i, id := range c.clients {
			req := NewInfluenceRequest(cm.inst.ID(), uint64(round), id, digests[i], cm.gradientDigest(digests[i]), cm.ids)
			all := coefficientShares(t, cm, req, cts[i], cm.ids)
			want, bound, unit := c.want(params, i)
			for _, set := range [][]string{{"m00", "m01", "m02"}, {"m00", "m01", "m04"}} {
				shares := map[string][]byte{}
				for _, p := range set {
					shares[p] = all[p]
				}
				got, err := dec.CombineCoefficient(req, cts[i], shares)
				if err != nil {
					t.Fatal(err)
				}
				abs := math.Abs(got - want)
				rel, nrm := abs/math.Abs(want), abs/unit
				worstRel, worstNorm = max(worstRel, rel), max(worstNorm, nrm)
				t.Logf("aligned=%v n=%5.0f set=%v: aᵢ = %.6e, |error| %.3g, relative %.3g, /(max|g|·‖nΔ‖₂) %.3g",
					aligned, c.weights[i], set, want, abs, rel, nrm)
				if abs > bound {
					t.Errorf("error %.3g exceeds %.3g", abs, bound)
				}
				// On these draws (fixed seed; the only random terms, the
				// encryption and flooding noise, weigh below 1e-12) the
				// relative error is at most 1e-5.
				if rel > 1e-4 {
					t.Errorf("relative error %.3g above 1e-4", rel)
				}
			}
		}
	}
	t.Logf("worst: relative %.3g, normalised %.3g", worstRel, worstNorm)
}

// TestInfluenceBudget checks both sides of [Parameters.InfluenceMaxL1]
// (2^56 with the test set's 1024 slots, scale 2^104 and Q ≥ 2^179): an
// update with ‖nᵢΔᵢ‖₁ = 2^55 aligned with the gradient decodes within the
// bound, and one of 2^58 (constant coefficient ≈ 0.9·2^178, between Q/8
// and Q/2) is refused rather than decoded wrong.
func TestInfluenceBudget(t *testing.T) {
	params := testParams(t)
	if got := params.InfluenceMaxL1(); got != math.Exp2(56) {
		t.Fatalf("InfluenceMaxL1 = 2^%.1f, want 2^56", math.Log2(got))
	}
	// doc.go's figure for the default set.
	if got := DefaultParameters().InfluenceMaxL1(); got != math.Exp2(61) {
		t.Fatalf("default InfluenceMaxL1 = 2^%.1f, want 2^61", math.Log2(got))
	}
	cm := newCommittee(t, params, 3, 3)
	dec, _ := NewDecryptor(params, cm.inst)
	for round, tc := range []struct {
		entries int
		want    error
	}{{8, nil}, {64, ErrDecryption}} {
		t.Run(fmt.Sprintf("l1=2^%d", 52+int(math.Log2(float64(tc.entries)))), func(t *testing.T) {
			const numParams = 100
			c := influenceCase{grad: make([]float64, numParams), clients: []string{"big"}, weights: []float64{1 << 20}}
			u := make([]float64, numParams)
			for j := range c.grad {
				c.grad[j] = 0.9
				if j < tc.entries {
					u[j] = 1 << 32
				}
			}
			c.updates = [][]float64{u}
			cts, digests := influenceRun(t, cm, c)
			req := NewInfluenceRequest(cm.inst.ID(), uint64(round), "big", digests[0], cm.gradientDigest(digests[0]), cm.ids)
			got, err := dec.CombineCoefficient(req, cts[0], coefficientShares(t, cm, req, cts[0], cm.ids))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if want, bound, _ := c.want(params, 0); err == nil && math.Abs(got-want) > bound {
				t.Fatalf("aᵢ = %.9g, want %.9g", got, want)
			}
		})
	}
}
