package engine

import (
	"errors"
	"slices"
	"testing"

	"github.com/tallyfl/tally/aggregation"
)

// Every decryption request the engine publishes is an entry of its
// transcript, signed by the members that answered; the chain verifies from
// genesis under the members' identity keys; every member's own chain is a
// prefix of it; and a restarted engine restores it from the store.
func TestTranscriptHoldsEveryDecryption(t *testing.T) {
	for _, how := range []string{"all-live", "two-die-after-submitting"} {
		t.Run(how, func(t *testing.T) {
			const rounds = 3
			s := newCommitteeSim(t, rounds)
			if how != "all-live" {
				killed := false
				s.onPublish = func(task *Task) {
					if !killed && task.Kind == TaskTrain && task.Round == 2 {
						killed = true
						for _, id := range s.ids[:2] {
							s.members[id].dieAfterSubmit = true
						}
					}
				}
			}
			store := NewMemoryStore()
			s.persist = store
			s.run(20 * 15 * rounds)
			if s.done == nil || s.done.FinalRound != rounds {
				t.Fatalf("job did not complete %d rounds: %+v", rounds, s.done)
			}
			chain := s.e.Transcript()
			if chain.Len() != len(s.decryptions) {
				t.Fatalf("transcript has %d entries, the engine published %d decryption tasks", chain.Len(), len(s.decryptions))
			}
			policy, _ := aggregation.NewPolicy(aggregation.PolicyConfig{MinContributors: 3})
			if _, err := aggregation.VerifyTranscript("sim", chain.Entries(0), policy, s.keys().IdentityKey); err != nil {
				t.Fatalf("the engine's transcript does not verify from genesis: %v", err)
			}
			answered := 0
			for i, d := range s.decryptions {
				e, _ := chain.Entry(i)
				if e.Round != uint64(d.Round) || e.Attempt != uint64(d.Attempt) || !slices.Equal(e.Participants, d.Selected) {
					t.Fatalf("entry %d is round %d attempt %d %v; task %s selected %v", i, e.Round, e.Attempt, e.Participants, d.ID, d.Selected)
				}
				if len(e.Signatures) == len(e.Participants) {
					answered++
				}
			}
			if answered == 0 {
				t.Fatal("no entry carries every participant's signature")
			}
			for _, id := range s.ids {
				m := s.members[id].member
				if m == nil {
					continue
				}
				n, head := m.TranscriptHead("sim")
				if n == 0 {
					continue
				}
				e, ok := chain.Entry(n - 1)
				if !ok || e.Head() != head {
					t.Errorf("member %s holds %d entries with head %x, not a prefix of the engine's chain", id, n, head[:8])
				}
			}
			snap, err := store.Load()
			if err != nil {
				t.Fatal(err)
			}
			e2 := NewEngine(s.e.job, FedAvg{Fraction: 1, Min: 3, Mean: aggregation.FedAvg}, sumSquares{}, []float64{1, -1})
			if err := e2.Restore(snap); err != nil {
				t.Fatal(err)
			}
			if got := e2.Transcript(); got.Len() != chain.Len() || got.Head() != chain.Head() {
				t.Fatalf("restored transcript: %d entries, head %x; want %d, %x", got.Len(), got.Head(), chain.Len(), chain.Head())
			}
			last, _ := e2.Transcript().Entry(chain.Len() - 1)
			want, _ := chain.Entry(chain.Len() - 1)
			if len(last.Signatures) != len(want.Signatures) {
				t.Fatalf("restored last entry has %d signatures, want %d", len(last.Signatures), len(want.Signatures))
			}
		})
	}
}

// The engine checks a request against its transcript before it asks: a
// retried attempt whose contributors differ from the first attempt's by
// one client is not published (the members would refuse it), the same
// set is, and each participant is handed the entries it has not signed.
func TestEngineChecksRetryAgainstTranscript(t *testing.T) {
	ts, err := newTranscriptState("job", 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	req := func(attempt uint64, digest byte, contributors ...string) aggregation.DecryptRequest {
		return aggregation.DecryptRequest{Purpose: "round", Round: 4, Attempt: attempt, Digests: [][32]byte{{digest}},
			Contributors: contributors, Participants: []string{"m0", "m1", "m2"}}
	}
	first := req(1, 1, "a", "b", "c", "d")
	if err := ts.check(first); err != nil {
		t.Fatal(err)
	}
	entries, persist, err := ts.publish(first)
	if err != nil {
		t.Fatal(err)
	}
	if persist.Transcript == nil || persist.Transcript.Seq != 0 || len(entries["m0"]) != 0 {
		t.Fatalf("first publish: persist %+v, entries for m0 %d", persist.Transcript, len(entries["m0"]))
	}
	if err := ts.check(req(2, 2, "a", "b", "c")); !errors.Is(err, aggregation.ErrSetDifference) {
		t.Fatalf("retry without d: err = %v, want ErrSetDifference", err)
	}
	same := req(2, 3, "a", "b", "c", "d")
	if err := ts.check(same); err != nil {
		t.Fatalf("retry with the same contributors: %v", err)
	}
	entries, _, err = ts.publish(same)
	if err != nil {
		t.Fatal(err)
	}
	// Nobody signed entry 0: everyone is handed it with the retry.
	if len(entries["m1"]) != 1 {
		t.Fatalf("m1 is handed %d entries, want the unsigned first one", len(entries["m1"]))
	}
}
