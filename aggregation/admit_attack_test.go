package aggregation

import (
	"errors"
	"testing"
)

// TestAttackAdmitWithoutVerification: a coordinator that asks an honest
// member to admit a request — append it to the member's transcript and
// sign the new head — without the member having verified it
// ([Member.VerifyAggregate]) gets no signature: [ErrNotVerified], and the
// member's transcript is left as it was (the entries handed with the
// request are not taken either). A member's signature of a head is its
// word on the entry: the coordinator adds it to its transcript
// ([Transcript.AddSignature]), `tally ledger verify` counts the entries
// "signed by every participant", and the entry records the c₁ digests and
// vector "every participant checked" ([TranscriptEntry.C1]). Had the
// member signed here, the coordinator would hold member p's signature on
// "aggregate of three contributors" for what is one victim's update under
// two invented names, a request verification refuses
// (TestAttackSingleUpdateAsAggregate).
func TestAttackAdmitWithoutVerification(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	p, q, o := cm.ids[0], cm.ids[1], cm.ids[2]
	m := cm.members[p]
	single, _ := encryptedRound(t, cm, 40, []float64{5}, 11)
	forged := *single
	forged.Contributors = []string{single.Contributors[0], "ghost1", "ghost2"}
	lie := NewDecryptRequest(&forged, "total", 2, []string{p, q})

	// The coordinator's chain so far: a request of q and o only.
	r := newRelay(t, cm)
	chain := NewTranscript(cm.inst.job)
	before, _ := encryptedRound(t, cm, 40, []float64{1, 2, 3}, 20)
	if err := r.ask(chain, cm.members, NewDecryptRequest(before, "total", 1, []string{q, o}), before.Ciphertexts); err != nil {
		t.Fatal(err)
	}
	unchanged := func(t *testing.T) {
		t.Helper()
		if n, _ := m.TranscriptHead(cm.inst.job); n != 0 {
			t.Fatalf("the refused admission left %d entries in member %s's transcript, want 0", n, p)
		}
	}

	t.Run("no evidence", func(t *testing.T) {
		sig, err := m.Admit(lie, chain.Entries(0))
		if !errors.Is(err, ErrNotVerified) || sig != nil {
			t.Fatalf("Admit of a request never verified: signature %x, err = %v; want none and ErrNotVerified", sig, err)
		}
		t.Logf("refused: %v", err)
		unchanged(t)
	})
	t.Run("evidence refused", func(t *testing.T) {
		if err := cm.verifyRequest(t, p, lie, forged.Ciphertexts, nil); !errors.Is(err, ErrUnknownContributor) {
			t.Fatalf("VerifyAggregate: %v, want ErrUnknownContributor", err)
		}
		if sig, err := m.Admit(lie, chain.Entries(0)); !errors.Is(err, ErrNotVerified) || sig != nil {
			t.Fatalf("Admit after VerifyAggregate refused the request: signature %x, err = %v; want none and ErrNotVerified", sig, err)
		}
		unchanged(t)
	})
	t.Run("another request's evidence", func(t *testing.T) {
		// An honest aggregate, verified for participants p and q, then
		// asked of p and o: another request (its ID names the
		// participants), which p did not verify.
		agg, _ := encryptedRound(t, cm, 40, []float64{1, 2, 3}, 21)
		verified := NewDecryptRequest(agg, "total", 3, []string{p, q})
		if err := cm.verifyRequest(t, p, verified, agg.Ciphertexts, nil); err != nil {
			t.Fatal(err)
		}
		other := NewDecryptRequest(agg, "total", 3, []string{p, o})
		if sig, err := m.Admit(other, chain.Entries(0)); !errors.Is(err, ErrNotVerified) || sig != nil {
			t.Fatalf("Admit of a request other than the one verified: signature %x, err = %v; want none and ErrNotVerified", sig, err)
		}
		unchanged(t)
		// The verified one is admitted and signed (the check can pass).
		sig, err := m.Admit(verified, chain.Entries(0))
		if err != nil {
			t.Fatalf("Admit of the verified request: %v", err)
		}
		e, _ := m.transcript.FindRequest(verified.ID())
		e.Signatures = map[string][]byte{p: sig}
		if err := e.Verify(cm.keys.IdentityKey, false); err != nil {
			t.Fatal(err)
		}
	})
}

// TestAttackAdmitInfluenceWithoutVerification: the same for influence
// requests, one at a time ([Member.Admit]) and batched
// ([Member.AdmitBatch], refused whole and naming the request): a
// coordinator cannot have a member sign "client c's product with vector
// v" it never recomputed from c's signed ciphertexts.
func TestAttackAdmitInfluenceWithoutVerification(t *testing.T) {
	params := testParams(t)
	cm := newCommittee(t, params, 3, 2)
	c := realisticCase(4, 50, []float64{30, 20, 10}, false)
	cts, digests := influenceRun(t, cm, c)
	p := cm.ids[0]
	m := cm.members[p]
	reqs := make([]DecryptRequest, len(digests))
	for i, d := range digests {
		reqs[i] = NewInfluenceRequest(cm.inst.ID(), 1, c.clients[i], d, cm.gradientDigest(d), cm.ids[:2])
	}
	if sig, err := m.Admit(reqs[0], nil); !errors.Is(err, ErrNotVerified) || sig != nil {
		t.Fatalf("Admit of an influence request never verified: signature %x, err = %v; want none and ErrNotVerified", sig, err)
	}
	// Requests 0 and 2 verified, request 1 not.
	for _, i := range []int{0, 2} {
		if err := cm.verifyRequest(t, p, reqs[i], [][]byte{cts[i]}, nil); err != nil {
			t.Fatal(err)
		}
	}
	sig, err := m.AdmitBatch(reqs, nil)
	if !errors.Is(err, ErrNotVerified) || sig != nil {
		t.Fatalf("AdmitBatch with request 1 never verified: signature %x, err = %v; want none and ErrNotVerified", sig, err)
	}
	t.Logf("refused: %v", err)
	if n, _ := m.TranscriptHead(cm.inst.job); n != 0 {
		t.Fatalf("the refused batch left %d entries in the member's transcript, want 0", n)
	}
	for i, req := range reqs {
		if _, err := m.DecryptCoefficientShare(req, cts[i]); !errors.Is(err, ErrNotAdmitted) {
			t.Fatalf("request %d after the refused batch: %v, want ErrNotAdmitted", i, err)
		}
	}
	// Once every request is verified, the batch is admitted.
	if err := cm.verifyRequest(t, p, reqs[1], [][]byte{cts[1]}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AdmitBatch(reqs, nil); err != nil {
		t.Fatalf("AdmitBatch of verified requests: %v", err)
	}
}
