package aggregation

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
)

// Attack tests of the decryption transcript (issue 14, attacks (c), (e)
// and (f)): a coordinator that deviates in one precise way — relabelling
// rounds or attempts, retrying a round with one client fewer, re-keying or
// restarting members in between, handing two participant sets the same
// ciphertext, or showing members different chains — against honest
// members, each refusal asserted by its error.

// relay is the coordinator's side of the transcript in these tests: a
// chain it keeps and hands members (or, deviating, a chain of its choice),
// the entry of the request in flight, and how far each member has seen.
type relay struct {
	t      *testing.T
	policy Policy
	seen   map[*Transcript]map[string]int
	// cm supplies the honest evidence every participant verifies a
	// request with before it admits it (Member.VerifyAggregate).
	cm *committee
}

func newRelay(t *testing.T, cm *committee) *relay {
	p, err := NewPolicy(PolicyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &relay{t: t, policy: p, seen: map[*Transcript]map[string]int{}, cm: cm}
}

// ask has each participant of req admit it, handing it the entries of
// chain it has not seen, and produce its shares of cts; the entry goes into
// chain with the signatures of those that admitted. It returns the first
// refusal (or nil when every participant answered).
func (r *relay) ask(chain *Transcript, members map[string]*Member, req DecryptRequest, cts [][]byte) error {
	r.t.Helper()
	seen := r.seen[chain]
	if seen == nil {
		seen = map[string]int{}
		r.seen[chain] = seen
	}
	e := NewTranscriptEntry(chain.Job(), uint64(chain.Len()), chain.Head(), req)
	e.Signatures = map[string][]byte{}
	var first error
	for _, p := range req.Participants {
		m := members[p]
		var sig []byte
		err := m.VerifyAggregate(req, r.cm.evidence(r.t, req, cts))
		if err == nil {
			sig, err = m.Admit(req, chain.Entries(seen[p]))
		}
		if err == nil {
			for b, ct := range cts {
				if req.Purpose == PurposeInfluence {
					_, err = m.DecryptCoefficientShare(req, ct)
				} else {
					_, err = m.DecryptShare(req, b, ct)
				}
				if err != nil {
					break
				}
			}
		}
		if err != nil {
			if first == nil {
				first = fmt.Errorf("%s: %w", p, err)
			}
			continue
		}
		e.Signatures[p] = sig
		seen[p] = chain.Len() + 1
	}
	if len(e.Signatures) > 0 {
		// The coordinator's copy: linked, signed, and (deviating) not
		// checked against the rules.
		if err := e.Verify(func(id string) (ed25519.PublicKey, bool) { return members[id].Info().SigningKey, true }, false); err != nil {
			r.t.Fatal(err)
		}
		chain.add(e)
	}
	return first
}

// rekey gives the committee's members (or new ones) a new key instance of
// the same job, as a re-key after a committee loss does.
func rekey(t *testing.T, cm *committee, ms []*Member, epoch uint64) {
	t.Helper()
	for _, m := range ms {
		cm.keys[m.ID()] = m.Info().SigningKey
	}
	inst, err := NewKeyGenInstance(cm.params, Committee{Job: "job", Epoch: epoch, Seed: []byte("seed"), Threshold: cm.inst.Threshold(), Members: infosOf(ms)})
	if err != nil {
		t.Fatal(err)
	}
	cm.inst = inst
	cm.pk, cm.cert = runKeyGen(t, cm.params, inst, ms)
	cm.members, cm.ids = map[string]*Member{}, nil
	for _, m := range ms {
		cm.members[m.ID()] = m
		cm.ids = append(cm.ids, m.ID())
	}
}

func membersOf(cm *committee) []*Member {
	var ms []*Member
	for _, id := range cm.ids {
		ms = append(ms, cm.members[id])
	}
	return ms
}

func withAttempt(r DecryptRequest, a uint64) DecryptRequest { r.Attempt = a; return r }

// (c) More influence scalars than allowed per client and round, by
// relabelling attempts or rounds, asking other participants, or after a
// re-key.
func TestAttackScalarsByRelabelling(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 4, 2)
	c := realisticCase(3, 40, []float64{10, 20, 30}, false)
	r := newRelay(t, cm)
	chain := NewTranscript("job")
	fresh := func() ([][]byte, [][32]byte) { return influenceRun(t, cm, c) }

	cts, digests := fresh()
	ask := func(req DecryptRequest, ct []byte) error { return r.ask(chain, cm.members, req, [][]byte{ct}) }
	if err := ask(withAttempt(NewInfluenceRequest(cm.inst.ID(), 7, "c00", digests[0], cm.gradientDigest(digests[0]), cm.ids), 1), cts[0]); err != nil {
		t.Fatalf("the first scalar of c00 in round 7: %v", err)
	}
	for _, tc := range []struct {
		name  string
		req   func(d [32]byte) DecryptRequest
		want  error
		rekey bool
	}{
		{"same round, next attempt", func(d [32]byte) DecryptRequest {
			return withAttempt(NewInfluenceRequest(cm.inst.ID(), 7, "c00", d, cm.gradientDigest(d), cm.ids), 2)
		}, ErrScalarBudget, false},
		{"same round, other participants", func(d [32]byte) DecryptRequest {
			return withAttempt(NewInfluenceRequest(cm.inst.ID(), 7, "c00", d, cm.gradientDigest(d), []string{"m02", "m03"}), 3)
		}, ErrScalarBudget, false},
		{"relabelled as an older round", func(d [32]byte) DecryptRequest {
			return withAttempt(NewInfluenceRequest(cm.inst.ID(), 6, "c00", d, cm.gradientDigest(d), []string{"m02", "m03"}), 1)
		}, ErrStaleRound, false},
		{"same round after a re-key", func(d [32]byte) DecryptRequest {
			return withAttempt(NewInfluenceRequest(cm.inst.ID(), 7, "c00", d, cm.gradientDigest(d), cm.ids), 4)
		}, ErrScalarBudget, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.rekey {
				rekey(t, cm, membersOf(cm), 2)
			}
			cts, digests := fresh()
			err := ask(tc.req(digests[0]), cts[0])
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrPolicy) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// Allowed: another client of the round, and the next round.
	cts, digests = fresh()
	if err := ask(withAttempt(NewInfluenceRequest(cm.inst.ID(), 7, "c01", digests[1], cm.gradientDigest(digests[1]), cm.ids), 4), cts[1]); err != nil {
		t.Fatalf("c01 round 7: %v", err)
	}
	if err := ask(withAttempt(NewInfluenceRequest(cm.inst.ID(), 8, "c00", digests[0], cm.gradientDigest(digests[0]), cm.ids), 1), cts[0]); err != nil {
		t.Fatalf("c00 round 8: %v", err)
	}

	t.Run("a budget of two", func(t *testing.T) {
		p2, err := NewPolicy(PolicyConfig{MaxScalarsPerRound: 2})
		if err != nil {
			t.Fatal(err)
		}
		tr := NewTranscript("job")
		for i := 0; i < 3; i++ {
			e := NewTranscriptEntry("job", uint64(i), tr.Head(), withAttempt(NewInfluenceRequest(cm.inst.ID(), 9, "c02", [32]byte{byte(i + 1)}, [32]byte{0xee, byte(i + 1)}, cm.ids), uint64(i+1)))
			err := tr.Append(e, p2)
			if i < 2 && err != nil {
				t.Fatalf("scalar %d of 2: %v", i+1, err)
			}
			if i == 2 && !errors.Is(err, ErrScalarBudget) {
				t.Fatalf("third scalar with L = 2: err = %v, want ErrScalarBudget", err)
			}
		}
	})
}

// (e) A retried round whose contributor set differs from the first
// attempt's by one client: asked of other participants, after a re-key,
// after a member restart, and of a new committee.
func TestAttackRetryLeaveOneOut(t *testing.T) {
	params := testParams(t)
	weights := []float64{1, 2, 3, 4}
	for _, tc := range []string{"other participants", "after a re-key", "after a member restart", "new committee"} {
		t.Run(tc, func(t *testing.T) {
			cm := newCommittee(t, params, 4, 2)
			r := newRelay(t, cm)
			chain := NewTranscript("job")
			first, _ := encryptedRound(t, cm, 20, weights, 5)
			if err := r.ask(chain, cm.members, withAttempt(NewDecryptRequest(first, "round", 3, []string{"m00", "m01"}), 1), first.Ciphertexts); err != nil {
				t.Fatalf("attempt 1: %v", err)
			}
			participants := []string{"m02", "m03"}
			switch tc {
			case "after a re-key":
				participants = []string{"m00", "m01"}
				rekey(t, cm, membersOf(cm), 2)
			case "after a member restart":
				// m00 and m01 restart from their persisted transcripts
				// (their key shares are lost: the committee re-keys).
				ms := membersOf(cm)
				for i, m := range ms[:2] {
					raw, err := m.MarshalTranscript()
					if err != nil {
						t.Fatal(err)
					}
					tr, err := UnmarshalTranscript(raw)
					if err != nil {
						t.Fatal(err)
					}
					if ms[i], err = NewMember(params, m.ID(), m.identity, m.signer, m.keys, m.policy, tr, m.rand); err != nil {
						t.Fatal(err)
					}
				}
				participants = []string{"m00", "m01"}
				rekey(t, cm, ms, 2)
			case "new committee":
				policy, _ := NewPolicy(PolicyConfig{})
				var ms []*Member
				for i := 4; i < 7; i++ {
					ms = append(ms, newTestMember(t, params, memberID(i), policy, cm.keys))
				}
				rekey(t, cm, ms, 2)
				participants = []string{"m04", "m05"}
			}
			// The retry sums the same updates of the same global model but
			// one: its difference from attempt 1 is client c03's update.
			retry, _ := encryptedRound(t, cm, 20, weights[:3], 5)
			err := r.ask(chain, cm.members, withAttempt(NewDecryptRequest(retry, "round", 3, participants), 2), retry.Ciphertexts)
			if !errors.Is(err, ErrSetDifference) || !errors.Is(err, ErrPolicy) {
				t.Fatalf("retry without c03: err = %v, want ErrSetDifference", err)
			}
			// The same set as attempt 1 is allowed (a retry that reuses
			// it), in the next attempt: its clients sign new submissions,
			// and a client signs one per attempt.
			same, _ := encryptedRound(t, cm, 20, weights, 5)
			if err := r.ask(chain, cm.members, withAttempt(NewDecryptRequest(same, "round", 3, participants), 3), same.Ciphertexts); err != nil {
				t.Fatalf("retry with the same contributors: %v", err)
			}
		})
	}

	t.Run("entries withheld from a participant", func(t *testing.T) {
		// With c = 5 and t = 3 any two participant sets share a member
		// (2t − c = 1): the coordinator may hide attempt 1 from m03 and
		// m04, but m02 took part in it and refuses from its own chain.
		cm := newCommittee(t, params, 5, 3)
		r := newRelay(t, cm)
		chain := NewTranscript("job")
		first, _ := encryptedRound(t, cm, 20, weights, 5)
		if err := r.ask(chain, cm.members, withAttempt(NewDecryptRequest(first, "round", 3, []string{"m00", "m01", "m02"}), 1), first.Ciphertexts); err != nil {
			t.Fatalf("attempt 1: %v", err)
		}
		retry, _ := encryptedRound(t, cm, 20, weights[:3], 5)
		err := r.ask(NewTranscript("job"), cm.members, withAttempt(NewDecryptRequest(retry, "round", 3, []string{"m02", "m03", "m04"}), 2), retry.Ciphertexts)
		if !errors.Is(err, ErrSetDifference) {
			t.Fatalf("retry on a chain without attempt 1: err = %v, want m02's ErrSetDifference", err)
		}
	})
}

// (f) Two disjoint participant sets asked to decrypt the same ciphertext.
func TestAttackSameDigestTwoParticipantSets(t *testing.T) {
	params := testParams(t)
	weights := []float64{1, 2, 3}
	t.Run("chain shown", func(t *testing.T) {
		cm := newCommittee(t, params, 4, 2)
		r := newRelay(t, cm)
		chain := NewTranscript("job")
		agg, _ := encryptedRound(t, cm, 20, weights, 5)
		if err := r.ask(chain, cm.members, NewDecryptRequest(agg, "round", 1, []string{"m00", "m01"}), agg.Ciphertexts); err != nil {
			t.Fatal(err)
		}
		err := r.ask(chain, cm.members, withAttempt(NewDecryptRequest(agg, "round", 1, []string{"m02", "m03"}), 1), agg.Ciphertexts)
		if !errors.Is(err, ErrAlreadyServed) || !errors.Is(err, ErrPolicy) {
			t.Fatalf("same digest, disjoint participants: err = %v, want ErrAlreadyServed", err)
		}
	})
	t.Run("chains forked", func(t *testing.T) {
		// The coordinator shows {m02, m03} a chain without the first
		// decryption: they cannot know (2t − c = 0 here), but the two
		// chains cannot be joined again: the next member of either that
		// is shown the other's entries refuses them as a fork.
		cm := newCommittee(t, params, 4, 2)
		r := newRelay(t, cm)
		a, b := NewTranscript("job"), NewTranscript("job")
		agg, _ := encryptedRound(t, cm, 20, weights, 5)
		req := NewDecryptRequest(agg, "round", 1, []string{"m00", "m01"})
		if err := r.ask(a, cm.members, req, agg.Ciphertexts); err != nil {
			t.Fatal(err)
		}
		if err := r.ask(b, cm.members, NewDecryptRequest(agg, "round", 1, []string{"m02", "m03"}), agg.Ciphertexts); err != nil {
			t.Fatal(err)
		}
		next, _ := encryptedRound(t, cm, 20, weights, 6)
		err := r.ask(b, cm.members, NewDecryptRequest(next, "round", 2, []string{"m00", "m02"}), next.Ciphertexts)
		if !errors.Is(err, ErrTranscriptFork) {
			t.Fatalf("m00 shown the other chain: err = %v, want ErrTranscriptFork", err)
		}
	})
	t.Run("sets overlap", func(t *testing.T) {
		// With 2t > c the two sets share a member, which refuses from its
		// own chain even when the coordinator hides the first entry.
		cm := newCommittee(t, params, 5, 3)
		r := newRelay(t, cm)
		agg, _ := encryptedRound(t, cm, 20, weights, 5)
		if err := r.ask(NewTranscript("job"), cm.members, NewDecryptRequest(agg, "round", 1, []string{"m00", "m01", "m02"}), agg.Ciphertexts); err != nil {
			t.Fatal(err)
		}
		err := r.ask(NewTranscript("job"), cm.members, NewDecryptRequest(agg, "round", 1, []string{"m02", "m03", "m04"}), agg.Ciphertexts)
		if !errors.Is(err, ErrAlreadyServed) && !errors.Is(err, ErrTranscriptFork) {
			t.Fatalf("second participant set: err = %v, want m02's refusal", err)
		}
	})
}

// A chain's entries must carry valid signatures of their participants.
func TestTranscriptSignatures(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 4, 2)
	r := newRelay(t, cm)
	chain := NewTranscript("job")
	agg, _ := encryptedRound(t, cm, 20, []float64{1, 2, 3}, 5)
	if err := r.ask(chain, cm.members, NewDecryptRequest(agg, "round", 1, []string{"m00", "m01"}), agg.Ciphertexts); err != nil {
		t.Fatal(err)
	}
	next, _ := encryptedRound(t, cm, 20, []float64{1, 2, 3}, 6)
	req := NewDecryptRequest(next, "round", 2, []string{"m02", "m03"})
	if err := cm.verifyRequest(t, "m02", req, next.Ciphertexts, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mangle func(e *TranscriptEntry)
	}{
		{"signature under another key", func(e *TranscriptEntry) {
			e.Signatures = map[string][]byte{"m00": e.Signatures["m01"]}
		}},
		{"signed by a non-participant", func(e *TranscriptEntry) { e.Signatures = map[string][]byte{"m02": e.Signatures["m00"]} }},
		{"signature of another head", func(e *TranscriptEntry) { e.Round++ }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := cloneEntry(chain.entries[0])
			tc.mangle(&e)
			_, err := cm.members["m02"].Admit(req, []TranscriptEntry{e})
			if !errors.Is(err, ErrTranscript) {
				t.Fatalf("err = %v, want ErrTranscript", err)
			}
		})
	}
	// An entry no participant answered carries no signature: it only adds
	// to what is forbidden, and is accepted — and enforced.
	unsigned := cloneEntry(chain.entries[0])
	unsigned.Signatures = nil
	same := NewDecryptRequest(agg, "round", 1, []string{"m02", "m03"})
	if err := cm.verifyRequest(t, "m03", same, agg.Ciphertexts, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cm.members["m03"].Admit(same, []TranscriptEntry{unsigned}); !errors.Is(err, ErrAlreadyServed) {
		t.Fatalf("after an unsigned entry of the same digest: err = %v, want ErrAlreadyServed", err)
	}
	if _, err := cm.members["m02"].Admit(req, chain.Entries(0)); err != nil {
		t.Fatalf("the genuine chain: %v", err)
	}
	if n, h := cm.members["m02"].TranscriptHead("job"); n != 2 || h == chain.Head() {
		t.Fatalf("m02 holds %d entries, head %x; want 2, past the coordinator's head", n, h[:4])
	}
}

func TestTranscriptRoundTripAndCorruption(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	r := newRelay(t, cm)
	chain := NewTranscript("job")
	agg, _ := encryptedRound(t, cm, 20, []float64{1, 2, 3}, 5)
	if err := r.ask(chain, cm.members, NewDecryptRequest(agg, "round", 1, []string{"m00", "m01"}), agg.Ciphertexts); err != nil {
		t.Fatal(err)
	}
	raw, err := chain.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalTranscript(raw)
	if err != nil {
		t.Fatal(err)
	}
	if back.Head() != chain.Head() || back.Len() != 1 {
		t.Fatal("transcript does not round-trip")
	}
	if _, err := VerifyTranscript("job", back.Entries(0), r.policy, cm.keys.IdentityKey); err != nil {
		t.Fatalf("verifying the chain from genesis: %v", err)
	}
	bad := append([]byte(nil), raw...)
	bad[len(bad)/2] ^= 1
	if _, err := UnmarshalTranscript(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a flipped bit: err = %v, want ErrMalformed", err)
	}
	if _, err := UnmarshalTranscript(raw[:len(raw)-1]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated: err = %v, want ErrMalformed", err)
	}
}

// With L = 2 a valuation mode may release two scalars per client and
// round, each the product with its own committed vector: the round may
// have two distinct vectors, not a third (ErrGradientMismatch), and a
// client's product with one vector is decrypted once (ErrAlreadyServed).
func TestTranscriptVectorsPerRound(t *testing.T) {
	p2, err := NewPolicy(PolicyConfig{MaxScalarsPerRound: 2})
	if err != nil {
		t.Fatal(err)
	}
	key, parts := [32]byte{7}, []string{"m00", "m01"}
	tr := NewTranscript("job")
	n := byte(0)
	ask := func(client string, vector byte) error {
		n++
		req := NewInfluenceRequest(key, 9, client, [32]byte{0xdd, n}, [32]byte{0xee, vector}, parts)
		return tr.Append(NewTranscriptEntry("job", uint64(tr.Len()), tr.Head(), req), p2)
	}
	for _, c := range []struct {
		client string
		vector byte
		want   error
	}{
		{"c00", 1, nil},
		{"c00", 2, nil},
		{"c01", 1, nil},
		{"c01", 1, ErrAlreadyServed},
		{"c02", 3, ErrGradientMismatch},
		{"c02", 2, nil},
	} {
		err := ask(c.client, c.vector)
		if c.want == nil && err != nil || c.want != nil && (!errors.Is(err, c.want) || !errors.Is(err, ErrPolicy)) {
			t.Fatalf("%s with vector %d: err = %v, want %v", c.client, c.vector, err, c.want)
		}
	}
	// The chain keeps the vector digests: a restored copy applies the
	// same rules.
	raw, err := tr.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalTranscript(raw)
	if err != nil {
		t.Fatal(err)
	}
	e := NewTranscriptEntry("job", uint64(back.Len()), back.Head(), NewInfluenceRequest(key, 9, "c03", [32]byte{0xdd, 0xff}, [32]byte{0xee, 4}, parts))
	if err := back.Check(&e, p2); !errors.Is(err, ErrGradientMismatch) {
		t.Fatalf("restored transcript, a third vector: err = %v, want ErrGradientMismatch", err)
	}
}
