package aggregation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"math"
	"testing"

	"github.com/tuneinsight/lattigo/v6/ring"
)

// Attack tests of issue 14 items 1 and 2: a coordinator deviates in one
// precise way against honest members, which must refuse with a named error
// and produce no share.

// decryptOrRefuse is the member's whole path for one request: verify, then
// a share of block 0. It returns the share or the refusal.
func decryptOrRefuse(t *testing.T, cm *committee, p string, req DecryptRequest, cts [][]byte, mutate func(*Evidence)) ([]byte, error) {
	t.Helper()
	if err := cm.verifyRequest(t, p, req, cts, mutate); err != nil {
		return nil, err
	}
	if req.Purpose == PurposeInfluence {
		return cm.members[p].admitCoefficientShare(req, cts[0])
	}
	return cm.members[p].admitDecryptShare(req, 0, cts[0])
}

// (a) One client's update presented as an aggregate of k = 3 with invented
// contributor names: decrypting it would hand the coordinator that update.
func TestAttackSingleUpdateAsAggregate(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	// The victim's update, alone, is what the coordinator wants read.
	single, _ := encryptedRound(t, cm, 40, []float64{5}, 11)
	victim := single.Contributors[0]
	src := cm.sources[single.Digests[0]]
	parts := cm.ids[:2]

	t.Run("invented names", func(t *testing.T) {
		forged := *single
		forged.Contributors = []string{victim, "ghost1", "ghost2"}
		req := NewDecryptRequest(&forged, "total", 1, parts)
		_, err := decryptOrRefuse(t, cm, parts[0], req, forged.Ciphertexts, nil)
		if !errors.Is(err, ErrUnknownContributor) {
			t.Fatalf("err = %v, want ErrUnknownContributor", err)
		}
	})
	t.Run("real names, their signatures, not in the sum", func(t *testing.T) {
		// Two real clients of the round did sign submissions; the
		// coordinator lists them but decrypts the victim's ciphertext only.
		others, _ := encryptedRound(t, cm, 40, []float64{1, 1}, 12)
		osrc := cm.sources[others.Digests[0]]
		forged := *single
		forged.Contributors = []string{"c00", "r01", "r02"}
		mixed := &testSource{cts: map[string][][]byte{"c00": src.cts[victim], "r01": osrc.cts["c00"], "r02": osrc.cts["c01"]},
			weights: map[string]float64{"c00": 5, "r01": 1, "r02": 1}}
		cm.register(forged.Digests[0], mixed)
		defer cm.register(single.Digests[0], src)
		req := NewDecryptRequest(&forged, "total", 1, parts)
		_, err := decryptOrRefuse(t, cm, parts[0], req, forged.Ciphertexts, nil)
		if !errors.Is(err, ErrNotASum) {
			t.Fatalf("err = %v, want ErrNotASum", err)
		}
	})
	t.Run("one name listed thrice", func(t *testing.T) {
		forged := *single
		forged.Contributors = []string{victim, victim, victim}
		req := NewDecryptRequest(&forged, "total", 1, parts)
		if _, err := decryptOrRefuse(t, cm, parts[0], req, forged.Ciphertexts, nil); !errors.Is(err, ErrInvalidInput) {
			t.Fatalf("err = %v, want ErrInvalidInput (duplicate contributors)", err)
		}
	})
	t.Run("forged signature", func(t *testing.T) {
		agg, _ := encryptedRound(t, cm, 40, []float64{1, 2, 3}, 13)
		req := NewDecryptRequest(agg, "total", 1, parts)
		_, err := decryptOrRefuse(t, cm, parts[0], req, agg.Ciphertexts, func(ev *Evidence) {
			var s Submission
			if err := s.UnmarshalBinary(ev.Submissions["c01"]); err != nil {
				t.Fatal(err)
			}
			_, other, _ := ed25519.GenerateKey(nil)
			s.Signature = ed25519.Sign(other, s.message())
			ev.Submissions["c01"], _ = s.MarshalBinary()
		})
		if !errors.Is(err, ErrSubmissionSignature) {
			t.Fatalf("err = %v, want ErrSubmissionSignature", err)
		}
	})
	t.Run("submission of another round", func(t *testing.T) {
		agg, _ := encryptedRound(t, cm, 40, []float64{1, 2, 3}, 14)
		req := NewDecryptRequest(agg, "total", 2, parts)
		_, err := decryptOrRefuse(t, cm, parts[0], req, agg.Ciphertexts, func(ev *Evidence) {
			old := req
			old.Round = 1
			ev.Submissions = cm.evidence(t, old, agg.Ciphertexts).Submissions
		})
		if !errors.Is(err, ErrSubmissionMismatch) {
			t.Fatalf("err = %v, want ErrSubmissionMismatch", err)
		}
	})
	t.Run("honest aggregate", func(t *testing.T) {
		agg, _ := encryptedRound(t, cm, 40, []float64{1, 2, 3}, 15)
		req := NewDecryptRequest(agg, "total", 1, parts)
		if _, err := decryptOrRefuse(t, cm, parts[0], req, agg.Ciphertexts, nil); err != nil {
			t.Fatalf("the honest aggregate was refused: %v", err)
		}
	})
}

// (b) Related c₁: a coordinator-chosen c₁ (a scaled c₁, or a large constant)
// turns a share c₁·λs + e into the key share; two requests on c₁ and r·c₁
// give it by subtraction. Neither is a sum of signed ciphertexts.
func TestAttackRelatedC1(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	agg, _ := encryptedRound(t, cm, 40, []float64{1, 2, 3}, 21)
	src := cm.sources[agg.Digests[0]]
	parts := cm.ids[:2]
	rq := params.ckks.RingQ().AtLevel(params.ckks.MaxLevel())

	forge := func(t *testing.T, f func(c1 ring.Poly)) *Aggregate {
		c, info, err := parseCiphertext(params, agg.Ciphertexts[0])
		if err != nil {
			t.Fatal(err)
		}
		f(c.Value[1])
		out := *agg
		out.Ciphertexts = [][]byte{marshalCiphertext(params, agg.Key, info.block, info.blocks, c, nil)}
		out.Digests = [][32]byte{sha256.Sum256(out.Ciphertexts[0])}
		cm.register(out.Digests[0], src)
		return &out
	}
	for _, tc := range []struct {
		name string
		f    func(c1 ring.Poly)
	}{
		{"r·c1 with r = 3", func(c1 ring.Poly) { rq.MulScalar(c1, 3, c1) }},
		{"c1 = 2^40 (reads λs from one share)", func(c1 ring.Poly) {
			c1.Zero()
			for r := range c1.Coeffs {
				for i := range c1.Coeffs[r] {
					c1.Coeffs[r][i] = 1 << 40
				}
			}
		}},
		{"c1 + 1 (a coordinator-chosen encryption of zero)", func(c1 ring.Poly) {
			for r, q := range rq.ModuliChain() {
				c1.Coeffs[r][0] = (c1.Coeffs[r][0] + 1) % q
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forged := forge(t, tc.f)
			req := NewDecryptRequest(forged, "total", 1, parts)
			if _, err := decryptOrRefuse(t, cm, parts[0], req, forged.Ciphertexts, nil); !errors.Is(err, ErrNotASum) {
				t.Fatalf("err = %v, want ErrNotASum", err)
			}
		})
	}
	t.Run("retry counter without its public zero", func(t *testing.T) {
		// A retry claims a re-randomisation the member recomputes: the
		// plain sum under a retry counter does not match it.
		req := NewDecryptRequest(agg, "total", 1, parts)
		req.Retry = 1
		if _, err := decryptOrRefuse(t, cm, parts[0], req, agg.Ciphertexts, nil); !errors.Is(err, ErrNotASum) {
			t.Fatalf("err = %v, want ErrNotASum", err)
		}
	})
	t.Run("public re-randomisation is accepted and decrypts", func(t *testing.T) {
		enc, err := NewEncryptor(params, cm.pk, 1)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := enc.RerandomizeAggregate(agg, "total", 1, 0, 2)
		if err != nil {
			t.Fatal(err)
		}
		if fresh.Digests[0] == agg.Digests[0] {
			t.Fatal("re-randomised aggregate has the same digest")
		}
		cm.register(fresh.Digests[0], src)
		req := NewDecryptRequest(fresh, "total", 1, parts)
		req.Retry = 2
		cm.verifyAll(t, req, fresh.Ciphertexts)
		dec, err := NewDecryptor(params, cm.inst)
		if err != nil {
			t.Fatal(err)
		}
		shares := map[string][]byte{}
		for _, p := range req.Participants {
			if shares[p], err = cm.members[p].admitDecryptShare(req, 0, fresh.Ciphertexts[0]); err != nil {
				t.Fatal(err)
			}
		}
		vals, err := dec.CombineBlock(req, 0, fresh.Ciphertexts[0], shares)
		if err != nil {
			t.Fatal(err)
		}
		if _, weight, err := Assemble(agg.NumParams, [][]float64{vals}); err != nil || math.Abs(weight-6) > 1e-3 {
			t.Fatalf("re-randomised aggregate decrypts to weight %v (%v), want 6", weight, err)
		}
	})
	t.Run("c1 reused under another c0 and participant set", func(t *testing.T) {
		// Two shares of one c₁ with different Lagrange weights give c₁·s̃ᵢ
		// by lattice reduction. The honest aggregate is served to {m00,
		// m01}; the same c₁ with a changed c₀ (a new digest) is then asked
		// of {m00, m02}.
		fresh, _ := encryptedRound(t, cm, 40, []float64{1, 2, 3}, 22)
		first := NewDecryptRequest(fresh, "total", 3, []string{cm.ids[0], cm.ids[1]})
		if _, err := decryptOrRefuse(t, cm, cm.ids[0], first, fresh.Ciphertexts, nil); err != nil {
			t.Fatal(err)
		}
		c, info, err := parseCiphertext(params, fresh.Ciphertexts[0])
		if err != nil {
			t.Fatal(err)
		}
		q := rq.ModuliChain()[0]
		c.Value[0].Coeffs[0][0] = (c.Value[0].Coeffs[0][0] + 1) % q
		forged := *fresh
		forged.Ciphertexts = [][]byte{marshalCiphertext(params, fresh.Key, info.block, info.blocks, c, nil)}
		forged.Digests = [][32]byte{sha256.Sum256(forged.Ciphertexts[0])}
		cm.register(forged.Digests[0], cm.sources[fresh.Digests[0]])
		again := NewDecryptRequest(&forged, "total", 3, []string{cm.ids[0], cm.ids[2]})
		if _, err := decryptOrRefuse(t, cm, cm.ids[0], again, forged.Ciphertexts, nil); !errors.Is(err, ErrAlreadyServed) {
			t.Fatalf("err = %v, want ErrAlreadyServed", err)
		}
		// m02 never served that c₁: for it the request is a valid sum.
		if _, err := decryptOrRefuse(t, cm, cm.ids[2], again, forged.Ciphertexts, nil); err != nil {
			t.Fatalf("m02: %v", err)
		}
		// The rule survives a restart: the c₁ digest is in the member's
		// transcript entry, which the client persists.
		b, err := cm.members[cm.ids[0]].MarshalTranscript()
		if err != nil {
			t.Fatal(err)
		}
		tr, err := UnmarshalTranscript(b)
		if err != nil {
			t.Fatal(err)
		}
		d := C1Digest(fresh.Ciphertexts[0])
		if j, ok := tr.c1[d]; !ok || tr.entries[j].Request != first.ID() {
			t.Fatalf("restored transcript lost the verified c1 (%v)", ok)
		}
		// And it holds over the chain, whoever decrypted: the same c₁
		// under another c₀ does not pass the transcript's rules as the
		// entry after the first decryption, for any participant set.
		pol, err := NewPolicy(PolicyConfig{})
		if err != nil {
			t.Fatal(err)
		}
		e := NewTranscriptEntry(tr.Job(), uint64(tr.Len()), tr.Head(), NewDecryptRequest(&forged, "total", 3, []string{cm.ids[1], cm.ids[2]}))
		if err := tr.Check(&e, pol); !errors.Is(err, ErrAlreadyServed) {
			t.Fatalf("same c1 as the chain's next entry: err = %v, want ErrAlreadyServed", err)
		}
	})
	t.Run("a share without verification", func(t *testing.T) {
		req := NewDecryptRequest(agg, "total", 9, parts)
		if _, err := cm.members[parts[0]].admitDecryptShare(req, 0, agg.Ciphertexts[0]); !errors.Is(err, ErrNotVerified) {
			t.Fatalf("err = %v, want ErrNotVerified", err)
		}
	})
}

// (d) Under influence valuation the coordinator chooses the multiplier
// vector: a unit vector reads one coordinate of the update. The vector
// goes to members in the clear and its digest is in the request; members
// recompute the product's c₁ from the client's signed ciphertexts.
func TestAttackInfluenceVector(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	c := realisticCase(31, 50, []float64{10, 20, 30}, false)
	cts, digests := influenceRun(t, cm, c)
	p := cm.ids[0]
	committed := GradientDigest(c.grad)

	// The coordinator's unit vector e_7, applied to client c00's signed
	// ciphertexts.
	unit := make([]float64, len(c.grad))
	unit[7] = 1
	inf, err := NewInfluence(params, cm.inst.ID(), unit, len(unit))
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range cm.sources[digests[0]].cts["c00"] {
		if err := inf.Add("c00", ct); err != nil {
			t.Fatal(err)
		}
	}
	readOne, readOneDigest, err := inf.Finalize("c00")
	if err != nil {
		t.Fatal(err)
	}
	evil := c
	evil.grad = unit
	evilCts, evilDigests := influenceRun(t, cm, evil)

	t.Run("product with another vector under the committed digest", func(t *testing.T) {
		cm.register(readOneDigest, cm.sources[digests[0]])
		req := NewInfluenceRequest(cm.inst.ID(), 1, "c00", readOneDigest, committed, cm.ids)
		if _, err := decryptOrRefuse(t, cm, p, req, [][]byte{readOne}, nil); !errors.Is(err, ErrProductMismatch) {
			t.Fatalf("err = %v, want ErrProductMismatch", err)
		}
	})
	t.Run("vector sent differs from the committed digest", func(t *testing.T) {
		req := NewInfluenceRequest(cm.inst.ID(), 1, "c00", digests[0], committed, cm.ids)
		_, err := decryptOrRefuse(t, cm, p, req, [][]byte{cts[0]}, func(ev *Evidence) { ev.Gradient = unit })
		if !errors.Is(err, ErrGradientMismatch) {
			t.Fatalf("err = %v, want ErrGradientMismatch", err)
		}
	})
	t.Run("honest influence request", func(t *testing.T) {
		req := NewInfluenceRequest(cm.inst.ID(), 1, "c01", digests[1], committed, cm.ids)
		if _, err := decryptOrRefuse(t, cm, p, req, [][]byte{cts[1]}, nil); err != nil {
			t.Fatalf("honest influence request refused: %v", err)
		}
	})
	t.Run("a second vector in the same round", func(t *testing.T) {
		// Committed honestly, but not the round's: one vector per round.
		req := NewInfluenceRequest(cm.inst.ID(), 1, "c02", evilDigests[2], GradientDigest(unit), cm.ids)
		if _, err := decryptOrRefuse(t, cm, p, req, [][]byte{evilCts[2]}, nil); !errors.Is(err, ErrGradientMismatch) {
			t.Fatalf("err = %v, want ErrGradientMismatch", err)
		}
	})
	t.Run("no commitment", func(t *testing.T) {
		req := NewInfluenceRequest(cm.inst.ID(), 1, "c02", digests[2], [32]byte{}, cm.ids)
		if _, err := decryptOrRefuse(t, cm, p, req, [][]byte{cts[2]}, nil); !errors.Is(err, ErrGradientMismatch) {
			t.Fatalf("err = %v, want ErrGradientMismatch", err)
		}
	})
}

// The total's verification, given the round's vector, derives every
// contributor's product digest, so the influence requests that follow
// fetch no contribution again.
func TestVerifyInfluenceReusesTotalPass(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	c := realisticCase(41, 50, []float64{1, 2, 3}, false)
	cts, digests := influenceRun(t, cm, c)
	// The same clients' total.
	src := cm.sources[digests[0]]
	acc, err := NewAccumulator(params, cm.inst.ID(), 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range c.clients {
		for _, ct := range src.cts[id] {
			if err := acc.Add(id, ct); err != nil {
				t.Fatal(err)
			}
		}
	}
	agg, err := acc.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	cm.register(agg.Digests[0], src)
	p := cm.ids[0]
	fetched := 0
	count := func(ev *Evidence) {
		inner := ev.Contribution
		ev.Contribution = func(client string, b int) ([]byte, error) { fetched++; return inner(client, b) }
	}
	total := NewDecryptRequest(agg, "total", 1, cm.ids[:2])
	if err := cm.verifyRequest(t, p, total, agg.Ciphertexts, func(ev *Evidence) { count(ev); ev.Gradient = c.grad }); err != nil {
		t.Fatal(err)
	}
	if want := len(c.clients) * len(agg.Ciphertexts); fetched != want {
		t.Fatalf("total fetched %d contributions, want %d", fetched, want)
	}
	for i, id := range c.clients {
		req := NewInfluenceRequest(cm.inst.ID(), 1, id, digests[i], GradientDigest(c.grad), cm.ids)
		if err := cm.verifyRequest(t, p, req, [][]byte{cts[i]}, count); err != nil {
			t.Fatal(err)
		}
	}
	if want := len(c.clients) * len(agg.Ciphertexts); fetched != want {
		t.Fatalf("influence requests fetched %d more contributions, want none", fetched-want)
	}
}

// A submission round-trips, and any change to what it signs breaks it.
func TestSubmissionRoundTrip(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	agg, _ := encryptedRound(t, cm, 40, []float64{1}, 51)
	src := cm.sources[agg.Digests[0]]
	key := cm.clientKey("c00")
	sub, err := NewSubmission(params, "job", "c00", 3, 1, 7, src.cts["c00"], key)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := sub.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back Submission
	if err := back.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	again, _ := back.MarshalBinary()
	if !bytes.Equal(raw, again) {
		t.Fatal("submission does not round-trip")
	}
	pub := key.Public().(ed25519.PublicKey)
	if err := back.Verify(pub); err != nil {
		t.Fatal(err)
	}
	if err := back.CheckCiphertext(params, 0, src.cts["c00"][0]); err != nil {
		t.Fatal(err)
	}
	back.Weight++
	if err := back.Verify(pub); !errors.Is(err, ErrSubmissionSignature) {
		t.Fatalf("changed weight: err = %v, want ErrSubmissionSignature", err)
	}
	other := bytes.Clone(src.cts["c00"][0])
	other[len(other)-1] ^= 1
	if err := sub.CheckCiphertext(params, 0, other); !errors.Is(err, ErrSubmissionMismatch) {
		t.Fatalf("changed c1: err = %v, want ErrSubmissionMismatch", err)
	}
	if err := back.UnmarshalBinary(raw[:len(raw)-1]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated: err = %v, want ErrMalformed", err)
	}
}

// A store keeps the first statement once a block it covers is kept: the
// blocks in the sum are covered by it only.
func TestSubmissionStoreReplacement(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	enc, err := NewEncryptor(params, cm.pk, 1)
	if err != nil {
		t.Fatal(err)
	}
	key := cm.clientKey("c00")
	sign := func() ([]byte, *Submission, [][]byte) {
		cts, err := enc.EncryptUpdate(update(1, 1500), 3)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := NewSubmission(params, "job", "c00", 1, 0, 3, cts, key)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := sub.MarshalBinary()
		return raw, sub, cts
	}
	st := NewSubmissionStore()
	raw1, sub1, _ := sign()
	raw2, sub2, cts2 := sign()
	raw3, sub3, _ := sign()
	if err := st.Put("c00", raw1, sub1); err != nil {
		t.Fatal(err)
	}
	if err := st.Put("c00", raw1, sub1); err != nil {
		t.Fatalf("the same statement again: %v", err)
	}
	if err := st.Put("c00", raw2, sub2); err != nil {
		t.Fatalf("a new statement before any block: %v", err)
	}
	if err := st.AddBlock("c00", 0, cts2[0]); err != nil {
		t.Fatal(err)
	}
	if err := st.Put("c00", raw3, sub3); !errors.Is(err, ErrSubmissionMismatch) {
		t.Fatalf("a new statement after a block: err = %v, want ErrSubmissionMismatch", err)
	}
	if got, _, _ := st.Submission("c00"); !bytes.Equal(got, raw2) {
		t.Fatal("the store does not keep the statement its block is covered by")
	}
}

// With L = 2 a member verifies influence products with two committed
// vectors in one round, and refuses a third (ErrGradientMismatch): a
// valuation mode may release L scalars per client and round, each the
// product with its own vector, and no more vectors than that.
func TestVerifyVectorsPerRound(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	p2, err := NewPolicy(PolicyConfig{MaxScalarsPerRound: 2})
	if err != nil {
		t.Fatal(err)
	}
	p := cm.ids[0]
	cm.members[p].policy = p2
	for i, seed := range []uint64{41, 42, 43} {
		c := realisticCase(seed, 50, []float64{10, 20, 30}, false)
		cts, digests := influenceRun(t, cm, c)
		req := NewInfluenceRequest(cm.inst.ID(), 1, "c00", digests[0], GradientDigest(c.grad), cm.ids)
		// Each vector in its own attempt: the clients sign one
		// submission per attempt, and the bound is per round.
		req.Attempt = uint64(i + 1)
		err := cm.verifyRequest(t, p, req, [][]byte{cts[0]}, nil)
		if i < 2 && err != nil {
			t.Fatalf("vector %d of 2: %v", i+1, err)
		}
		if i == 2 && !errors.Is(err, ErrGradientMismatch) {
			t.Fatalf("a third vector with L = 2: err = %v, want ErrGradientMismatch", err)
		}
	}
}
