package experiments

import (
	"context"
	"os"
	"testing"

	"github.com/tallyfl/tally/valuation"
)

// TestProbeRetrainedCopyReference (gated: TALLY_RAWREF_PROBE=1) measures
// how much of projection mode's low Spearman ρ on duplicates-retrained-bc5
// (0.29 in results/summary.md) comes from the reference rather than the
// game: the plain reference values the retrained copy and its original as
// one over the job (valuation.JobReplicaValues), which no private mode
// can see. It prints, per seed, projection's ρ against the reference as
// committed and against the same reference's FedSV before that merge
// (Valued.Unmerged).
func TestProbeRetrainedCopyReference(t *testing.T) {
	if os.Getenv("TALLY_RAWREF_PROBE") == "" {
		t.Skip("set TALLY_RAWREF_PROBE=1 to run the retrained-copy reference probe")
	}
	sc := load(t, "duplicates-retrained-bc5", 0)
	es := Method{Name: valuation.MethodExactShapley}
	var merged, unmerged float64
	seeds := []uint64{1, 2, 3}
	for _, seed := range seeds {
		fed, err := newFederation(sc, seed, false)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := runFedAvg(sc, seed, fed)
		if err != nil {
			t.Fatal(err)
		}
		ref, runs, err := valueTrace(context.Background(), sc, seed, tr, []Method{es}, []string{ModeProjection}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		proj := runs[0]
		if proj.Err != "" || ref.Err != "" {
			t.Fatalf("seed %d: %s %s", seed, proj.Err, ref.Err)
		}
		raw := ref.Unmerged
		if raw == nil {
			raw = ref.Totals
			t.Logf("seed %d: the reference merged nothing", seed)
		}
		a, b := Spearman(proj.Totals, ref.Totals), Spearman(proj.Totals, raw)
		merged += a
		unmerged += b
		t.Logf("seed %d: projection ρ %.3f against the merged reference, %.3f against its unmerged FedSV; reference %v, unmerged %v, projection %v", seed, a, b, ref.Totals, raw, proj.Totals)
	}
	t.Logf("mean over seeds 1–3: ρ %.3f merged, %.3f unmerged", merged/float64(len(seeds)), unmerged/float64(len(seeds)))
}
