package aggregation

import (
	"errors"
	"math"
	"testing"
)

// precisionBound is the largest error tolerated on an averaged parameter.
// Measured with LogN 10 and 14: max error ≈ 1e-9 to 1e-8 on averages of
// values in [-1, 1] (see doc.go); the bound leaves two orders of
// magnitude, and the acceptance criterion of the project is 1e-4 on
// accuracy and loss.
const precisionBound = 1e-6

func TestRoundTrip(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	numParams := 2*params.Slots() + 17 // three blocks, the weight in the last
	weights := []float64{10, 250, 3, 41}
	agg, want := encryptedRound(t, cm, numParams, weights, 1)
	if len(agg.Ciphertexts) != 3 || len(agg.Contributors) != 4 {
		t.Fatalf("aggregate has %d blocks and %d contributors, want 3 and 4", len(agg.Ciphertexts), len(agg.Contributors))
	}
	got, weight, err := decrypt(t, cm, agg, 1, cm.ids[:2])
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(weight-304) > 1e-6 {
		t.Errorf("total weight %v, want 304", weight)
	}
	e := maxAbsDiff(got, want)
	t.Logf("max error of the average over %d parameters: %.3g", numParams, e)
	if e > precisionBound {
		t.Errorf("max error %g exceeds %g", e, precisionBound)
	}
}

func TestAnyTOfCDecrypt(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 5, 3)
	numParams := 100
	// Every 3-subset of 5 members, each on a fresh aggregate (a member
	// never serves a digest twice).
	var round uint64
	for a := 0; a < 5; a++ {
		for b := a + 1; b < 5; b++ {
			for c := b + 1; c < 5; c++ {
				round++
				parts := []string{cm.ids[a], cm.ids[b], cm.ids[c]}
				t.Run(parts[0]+parts[1]+parts[2], func(t *testing.T) {
					agg, want := encryptedRound(t, cm, numParams, []float64{1, 2, 3}, round)
					got, _, err := decrypt(t, cm, agg, round, parts)
					if err != nil {
						t.Fatal(err)
					}
					if e := maxAbsDiff(got, want); e > precisionBound {
						t.Errorf("max error %g", e)
					}
				})
			}
		}
	}
}

// With c = 5, t = 3 and two members gone (they never answer), the three
// others still decrypt.
func TestTwoMembersAbsent(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 5, 3)
	delete(cm.members, cm.ids[0])
	delete(cm.members, cm.ids[3])
	agg, want := encryptedRound(t, cm, 50, []float64{5, 5, 5}, 9)
	got, _, err := decrypt(t, cm, agg, 1, []string{cm.ids[1], cm.ids[2], cm.ids[4]})
	if err != nil {
		t.Fatal(err)
	}
	if e := maxAbsDiff(got, want); e > precisionBound {
		t.Errorf("max error %g", e)
	}
}

// t−1 shares do not decrypt: the combination is refused by the API, and
// combining the t−1 shares anyway yields values nowhere near the truth.
func TestThresholdMinusOneFails(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 5, 3)
	agg, want := encryptedRound(t, cm, 50, []float64{1, 1, 1}, 3)
	req := NewDecryptRequest(agg, "total", 1, cm.ids[:3])
	dec, err := NewDecryptor(params, cm.inst)
	if err != nil {
		t.Fatal(err)
	}
	ct := agg.Ciphertexts[0]
	shares := map[string][]byte{}
	for _, p := range req.Participants[:2] {
		if err := cm.verifyRequest(t, p, req, agg.Ciphertexts, nil); err != nil {
			t.Fatal(err)
		}
		if shares[p], err = cm.members[p].admitDecryptShare(req, 0, ct); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dec.CombineBlock(req, 0, ct, shares); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("combining 2 of 3 shares: err = %v, want ErrIncomplete", err)
	}

	c, _, err := parseCiphertext(params, ct)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := dec.combine(c, [][]byte{shares[req.Participants[0]], shares[req.Participants[1]]})
	if err == nil {
		// The range check may in principle miss; then the values must
		// still be far from the truth.
		if d := maxAbsDiff(vals[:50], want); d < 1e3 {
			t.Fatalf("t−1 shares decrypted to within %g of the truth", d)
		}
	} else if !errors.Is(err, ErrDecryption) {
		t.Fatalf("err = %v, want ErrDecryption", err)
	}
	// And t shares from another participant set do not combine either: a
	// member's share is bound to the set through its Lagrange coefficient.
	other := NewDecryptRequest(agg, "total", 1, []string{cm.ids[0], cm.ids[1], cm.ids[4]})
	if err := cm.verifyRequest(t, cm.ids[4], other, agg.Ciphertexts, nil); err != nil {
		t.Fatal(err)
	}
	s4, err := cm.members[cm.ids[4]].admitDecryptShare(other, 0, ct)
	if err != nil {
		t.Fatal(err)
	}
	mixed := map[string][]byte{cm.ids[0]: shares[cm.ids[0]], cm.ids[1]: shares[cm.ids[1]], cm.ids[2]: s4}
	if _, err := dec.CombineBlock(req, 0, ct, mixed); err == nil {
		t.Fatal("a share for another request and block was accepted")
	}
}

func TestMemberPolicy(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	agg, _ := encryptedRound(t, cm, 20, []float64{1, 2, 3, 4}, 5)
	m := cm.members[cm.ids[0]]
	parts := cm.ids[:2]
	ct := agg.Ciphertexts[0]
	base := NewDecryptRequest(agg, "total", 1, parts)

	few := base
	few.Contributors = base.Contributors[:2]
	otherKey := base
	otherKey.Key[0] ^= 1
	notMe := NewDecryptRequest(agg, "total", 1, cm.ids[1:3])
	tooMany := NewDecryptRequest(agg, "total", 1, cm.ids)
	wrongDigest := base
	wrongDigest.Digests = [][32]byte{{1}}
	// Another c₁ digest too, or the transcript would refuse base's c₁
	// after this entry (one c₁ is decrypted once).
	wrongDigest.C1 = [][32]byte{{2}}

	// verify: the request is verified first (with the round's genuine
	// ciphertexts), as the client does, and refused there or after.
	for _, tc := range []struct {
		name   string
		req    DecryptRequest
		ct     []byte
		verify bool
		want   error
	}{
		{"fewer-than-k-contributors", few, ct, false, ErrPolicy},
		{"digest-mismatch", wrongDigest, ct, true, ErrDigestMismatch},
		{"other-key-instance", otherKey, ct, false, ErrKeyMismatch},
		{"member-not-participant", notMe, ct, false, ErrNotMember},
		{"participants-not-t", tooMany, ct, false, ErrInvalidInput},
		{"not-verified", wrongDigest, ct, false, ErrNotVerified},
		{"truncated-ciphertext", base, ct[:100], true, ErrDigestMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.verify {
				// The round's honest evidence, relayed for tc.req.
				err = m.VerifyAggregate(tc.req, cm.evidence(t, base, agg.Ciphertexts))
			}
			if err == nil {
				_, err = m.admitDecryptShare(tc.req, 0, tc.ct)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// A share is refused on its own checks too, admitted or not.
	if _, err := m.DecryptShare(wrongDigest, 0, ct); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("DecryptShare of a request whose digest is not its ciphertext's: err = %v, want ErrDigestMismatch", err)
	}
	// Requests refused at verification or admission left no entry; the one
	// that passed both (and then failed on its ciphertext) is in the
	// transcript.
	if n := m.transcript.Len(); n != 1 {
		t.Fatalf("transcript has %d entries after the refusals, want 1 (truncated-ciphertext)", n)
	}

	t.Run("second-share-same-digest", func(t *testing.T) {
		if err := cm.verifyRequest(t, m.ID(), base, agg.Ciphertexts, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := m.admitDecryptShare(base, 0, ct); err != nil {
			t.Fatal(err)
		}
		// The identical retry, and a request with other participants or
		// purpose for the same digest, are all refused.
		retries := []DecryptRequest{base, NewDecryptRequest(agg, "total", 1, []string{cm.ids[0], cm.ids[2]}), NewDecryptRequest(agg, "other", 2, parts)}
		for i, r := range retries {
			err := cm.verifyRequest(t, m.ID(), r, agg.Ciphertexts, nil)
			if err == nil {
				_, err = m.admitDecryptShare(r, 0, ct)
			}
			if !errors.Is(err, ErrAlreadyServed) || !errors.Is(err, ErrPolicy) {
				t.Fatalf("retry %d: err = %v, want ErrAlreadyServed", i, err)
			}
		}
		// The transcript survives export and import.
		b, err := m.MarshalTranscript()
		if err != nil {
			t.Fatal(err)
		}
		r, err := UnmarshalTranscript(b)
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := r.FindRequest(base.ID()); !ok || e.Digests[0] != base.Digests[0] || r.Head() != m.transcript.Head() {
			t.Fatalf("imported transcript lost the served request")
		}
		b2, _ := r.MarshalBinary()
		if string(b) != string(b2) {
			t.Fatal("transcript export not stable")
		}
		policy, _ := NewPolicy(PolicyConfig{})
		restarted, err := NewMember(params, m.ID(), m.identity, m.signer, m.keys, policy, r, m.rand)
		if err != nil {
			t.Fatal(err)
		}
		restarted.inst, restarted.tsk, restarted.combiner, restarted.pk = m.inst, m.tsk, m.combiner, m.pk
		if err := restarted.VerifyAggregate(base, cm.evidence(t, base, agg.Ciphertexts)); err != nil {
			t.Fatal(err)
		}
		if _, err := restarted.admitDecryptShare(base, 0, ct); !errors.Is(err, ErrAlreadyServed) {
			t.Fatalf("after restart: err = %v, want ErrAlreadyServed", err)
		}
	})

	t.Run("leave-one-out-in-same-round", func(t *testing.T) {
		// A fresh aggregate over the same round whose contributors differ
		// from the one just served by a single client would reveal that
		// client's update by subtraction.
		agg2, _ := encryptedRound(t, cm, 20, []float64{1, 2, 3}, 6)
		req := NewDecryptRequest(agg2, "total", 1, parts)
		if err := cm.verifyRequest(t, m.ID(), req, agg2.Ciphertexts, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := m.admitDecryptShare(req, 0, agg2.Ciphertexts[0]); !errors.Is(err, ErrPolicy) {
			t.Fatalf("err = %v, want ErrPolicy", err)
		}
		// The same set in another round is fine.
		req.Round = 2
		if err := cm.verifyRequest(t, m.ID(), req, agg2.Ciphertexts, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := m.admitDecryptShare(req, 0, agg2.Ciphertexts[0]); err != nil {
			t.Fatal(err)
		}
	})
}

// A retry after a dropout needs a fresh aggregate: RerandomizeAggregate
// gives a new digest with the same plaintext, by a public encryption of
// zero every member recomputes.
func TestRerandomizedRetry(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	agg, want := encryptedRound(t, cm, 1500, []float64{1, 2, 3}, 11)
	req := NewDecryptRequest(agg, "total", 1, cm.ids[:2])
	cm.verifyAll(t, req, agg.Ciphertexts)
	if _, err := cm.members[cm.ids[0]].admitDecryptShare(req, 0, agg.Ciphertexts[0]); err != nil {
		t.Fatal(err)
	}
	// Member 1 dropped before answering; retry with members 0 and 2.
	enc, err := NewEncryptor(params, cm.pk, 1)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := enc.RerandomizeAggregate(agg, "total", 1, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	for b := range fresh.Digests {
		if fresh.Digests[b] == agg.Digests[b] {
			t.Fatalf("rerandomised block %d has the same digest", b)
		}
	}
	cm.register(fresh.Digests[0], cm.sources[agg.Digests[0]])
	retry := NewDecryptRequest(fresh, "total", 1, []string{cm.ids[0], cm.ids[2]})
	retry.Retry = 1
	cm.verifyAll(t, retry, fresh.Ciphertexts)
	dec, err := NewDecryptor(params, cm.inst)
	if err != nil {
		t.Fatal(err)
	}
	blocks := make([][]float64, len(fresh.Ciphertexts))
	for b, ct := range fresh.Ciphertexts {
		shares := map[string][]byte{}
		for _, p := range retry.Participants {
			if shares[p], err = cm.members[p].admitDecryptShare(retry, b, ct); err != nil {
				t.Fatal(err)
			}
		}
		if blocks[b], err = dec.CombineBlock(retry, b, ct, shares); err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := Assemble(agg.NumParams, blocks)
	if err != nil {
		t.Fatal(err)
	}
	if e := maxAbsDiff(got, want); e > precisionBound {
		t.Errorf("max error %g", e)
	}
}
