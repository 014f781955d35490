package engine

import (
	"encoding/hex"
	"math"
	"slices"
	"testing"
)

// TestReleaseNamesItsTranscriptEntry: every decryption that combined is
// reported once, as an ActRelease naming its transcript entry (position,
// digest, request, round, purpose, contributors), and its values are the
// ones the engine used: each round's model plus its decrypted mean step is
// the next round's model, and the last one the job's final model.
func TestReleaseNamesItsTranscriptEntry(t *testing.T) {
	const rounds = 3
	s := newCommitteeSim(t, rounds)
	s.run(20 * 15 * rounds)
	if s.done == nil || s.done.FinalRound != rounds {
		t.Fatalf("job did not complete %d rounds: %+v", rounds, s.done)
	}
	chain := s.e.Transcript()
	if len(s.releases) == 0 {
		t.Fatal("no ActRelease")
	}
	seen := map[int]bool{}
	var steps []Release
	for _, r := range s.releases {
		e, ok := chain.Entry(r.Seq)
		if !ok {
			t.Fatalf("release %d names no transcript entry", r.Seq)
		}
		if seen[r.Seq] {
			t.Fatalf("entry %d released twice", r.Seq)
		}
		seen[r.Seq] = true
		if head := e.Head(); hex.EncodeToString(head[:]) != r.Entry || hex.EncodeToString(e.Request[:]) != r.Request || int(e.Round) != r.Round || e.Purpose != r.Purpose || !slices.Equal(e.Contributors, r.Contributors) {
			t.Fatalf("release %d = %+v does not describe its entry %+v", r.Seq, r, e)
		}
		if r.Purpose == "round" {
			if len(r.Global) != len(r.Values) || math.Abs(r.Weight-float64(10*len(r.Contributors))) > 1e-6 {
				t.Fatalf("round release %d: %d global parameters beside %d values, weight %g", r.Seq, len(r.Global), len(r.Values), r.Weight)
			}
			steps = append(steps, r)
		}
	}
	if len(steps) != rounds {
		t.Fatalf("%d round releases, want %d", len(steps), rounds)
	}
	for i, r := range steps {
		next := s.e.Global()
		if i+1 < len(steps) {
			next = steps[i+1].Global
		}
		for j := range r.Values {
			if r.Global[j]+r.Values[j] != next[j] {
				t.Fatalf("round %d: model %v + released step %v is not the next model %v", r.Round, r.Global, r.Values, next)
			}
		}
	}
}
