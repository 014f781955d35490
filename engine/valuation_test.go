package engine

import (
	"maps"
	"math"
	"slices"
	"testing"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/valuation"
)

// recordingValuer records what each round's game was given and values
// player p at p+1.
type recordingValuer struct {
	known   [][]float64
	players []int
}

func (v *recordingValuer) Game(round int, base, known []float64, updates [][]float64, weights []float64, _ *dataset.Scaler) (valuation.Result, error) {
	v.known = append(v.known, slices.Clone(known))
	v.players = append(v.players, len(updates))
	vals := make([]float64, len(updates))
	for i := range vals {
		vals[i] = float64(i + 1)
	}
	return valuation.Result{Values: vals}, nil
}

func (v *recordingValuer) Surrogate(int, []float64, []float64, []float64, []float64, []float64, *dataset.Scaler) (valuation.Result, error) {
	panic("not in plain mode")
}

func (v *recordingValuer) Gradient([]float64, []float64, *dataset.Scaler) ([]float64, error) {
	panic("not in plain mode")
}

// TestValuationKnownAndReplicas: the engine gives the valuer the previous
// round's global change (nothing in the first round), and values a copy
// (c3 sends c1's update) together with its original as one player whose
// value the two share, listing them in the round's record.
func TestValuationKnownAndReplicas(t *testing.T) {
	e := NewEngine(traceJob(t, map[string]string{"wait_for": "3", "min": "3"}), FedAvg{Fraction: 1, Min: 3, Mean: meanForTest}, sumSquares{}, []float64{1, -1})
	v := &recordingValuer{}
	e.SetValuer(v)
	for _, c := range []string{"c1", "c2", "c3"} {
		e.Step(EvJoin{Client: c, Samples: 10})
	}
	var records []RoundRecord
	updates := map[string][]float64{"c1": {0.5, 0.25}, "c2": {-0.25, 1}, "c3": {0.5, 0.25}}
	for round := 1; round <= 2; round++ {
		task := e.Task()
		if task == nil {
			t.Fatalf("round %d: no task", round)
		}
		before := slices.Clone(e.Global())
		for _, c := range []string{"c1", "c2", "c3"} {
			for _, a := range e.Step(EvSubmit{Client: c, TaskID: task.ID, Samples: 10, Update: updates[c]}) {
				if d, ok := a.(ActRoundDone); ok {
					records = append(records, d.Record)
				}
			}
		}
		if len(records) != round {
			t.Fatalf("round %d did not close", round)
		}
		if round == 1 {
			change := make([]float64, 2)
			for k := range change {
				change[k] = e.Global()[k] - before[k]
			}
			updates["known"] = change
		}
	}
	if v.known[0] != nil {
		t.Errorf("round 1 was valued against a known direction %v, want none", v.known[0])
	}
	if !slices.Equal(v.known[1], updates["known"]) {
		t.Errorf("round 2 was valued against %v, want round 1's global change %v", v.known[1], updates["known"])
	}
	for r, rec := range records {
		rv := rec.Valuation
		if v.players[r] != 2 {
			t.Errorf("round %d: game of %d players, want 2 (c1 and its copy c3 as one)", r+1, v.players[r])
		}
		if len(rv.Replicas) != 1 || !slices.Equal(rv.Replicas[0], []string{"c1", "c3"}) {
			t.Errorf("round %d: replicas %v, want [[c1 c3]]", r+1, rv.Replicas)
		}
		if rv.Values["c1"] != rv.Values["c3"] || rv.Values["c1"]+rv.Values["c3"] != 1 || rv.Values["c2"] != 2 {
			t.Errorf("round %d: values %v, want c1 = c3 = 0.5 (sharing player 0's 1) and c2 = 2", r+1, rv.Values)
		}
	}
}

// runScripted joins clients with the given samples and runs every round of
// e with the same update per client, returning the round records.
func runScripted(t *testing.T, e *Engine, samples map[string]int64, updates map[string][]float64) []RoundRecord {
	t.Helper()
	ids := slices.Sorted(maps.Keys(samples))
	for _, c := range ids {
		e.Step(EvJoin{Client: c, Samples: samples[c]})
	}
	var records []RoundRecord
	for e.Phase() != PhaseDone {
		task := e.Task()
		if task == nil {
			t.Fatalf("round %d: no task (phase %v)", e.Round(), e.Phase())
		}
		n := len(records)
		for _, c := range ids {
			for _, a := range e.Step(EvSubmit{Client: c, TaskID: task.ID, Samples: samples[c], Update: updates[c]}) {
				if d, ok := a.(ActRoundDone); ok {
					records = append(records, d.Record)
				}
			}
		}
		if len(records) == n {
			t.Fatalf("round %d did not close", e.Round())
		}
	}
	return records
}

// TestSettlementValuesCopiesAsOne: c3 sends c1's update 0.2 of its norm
// away (a copy retrained with its own shuffles), too far to be merged
// within a round (CopyDistance 0.1) but within JobCopyDistance over the
// job. Each round is valued with c1 and c3 apart (the valuer pays player p
// p+1: c1 1, c2 2, c3 3); the settlement values them as one player, the
// mean of their values shared, so that the pair's total equals c2's, and
// names them; Contributions totals them the same way.
func TestSettlementValuesCopiesAsOne(t *testing.T) {
	e := NewEngine(traceJob(t, map[string]string{"wait_for": "3", "min": "3"}), FedAvg{Fraction: 1, Min: 3, Mean: meanForTest}, sumSquares{}, []float64{1, -1})
	e.SetValuer(&recordingValuer{})
	records := runScripted(t, e, map[string]int64{"c1": 10, "c2": 10, "c3": 10},
		map[string][]float64{"c1": {0.5, 0.25}, "c2": {-0.25, 1}, "c3": {0.5, 0.25 + 0.2*math.Hypot(0.5, 0.25)}})
	for r, rec := range records {
		if rv := rec.Valuation; len(rv.Replicas) != 0 || rv.Values["c1"] != 1 || rv.Values["c3"] != 3 {
			t.Errorf("round %d: replicas %v, values %v; want none merged within the round, c1 1 and c3 3", r+1, rv.Replicas, rv.Values)
		}
	}
	s := records[len(records)-1].Settlement
	if s == nil {
		t.Fatal("the last round has no settlement")
	}
	if len(s.Replicas) != 1 || !slices.Equal(s.Replicas[0], []string{"c1", "c3"}) {
		t.Errorf("settlement replicas %v, want [[c1 c3]]", s.Replicas)
	}
	if v := s.Values; v["c1"] != v["c3"] || math.Abs(v["c1"]+v["c3"]-v["c2"]) > 1e-12 {
		t.Errorf("settlement totals %v, want c1 = c3 and c1 + c3 = c2 (the pair earns the mean of 1 and 3 a round)", v)
	}
	cs, err := Contributions(e.job, e.History())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if math.Abs(c.Value-s.Values[c.Client]) > 1e-12 {
			t.Errorf("Contributions: %s's total %v, the settlement's %v", c.Client, c.Value, s.Values[c.Client])
		}
	}
}

// TestValuationCapsPerRow: c3 declares 4 rows, less than half of c1's and
// c2's 10, and the valuer pays it 3 against their 1 and 2: its value per
// row (0.75) is capped at the rate of the larger clients' rows, 3 over 20,
// so 0.6 in all (valuation.CapPerWeight); c1 and c2 are not capped.
func TestValuationCapsPerRow(t *testing.T) {
	e := NewEngine(traceJob(t, map[string]string{"wait_for": "3", "min": "3"}), FedAvg{Fraction: 1, Min: 3, Mean: meanForTest}, sumSquares{}, []float64{1, -1})
	e.SetValuer(&recordingValuer{})
	records := runScripted(t, e, map[string]int64{"c1": 10, "c2": 10, "c3": 4},
		map[string][]float64{"c1": {0.5, 0.25}, "c2": {-0.25, 1}, "c3": {1, -1}})
	for r, rec := range records {
		if v := rec.Valuation.Values; v["c1"] != 1 || v["c2"] != 2 || math.Abs(v["c3"]-0.6) > 1e-12 {
			t.Errorf("round %d: values %v, want c1 1, c2 2 and c3 capped at 0.6", r+1, v)
		}
	}
}
