package engine

import (
	"bytes"
	"errors"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
	"github.com/tallyfl/tally/valuation"
)

// copyJobUpdates are the updates of a three-client plain-mode job of three
// rounds in which c3 is a copy of c1 over the job but not in any one round:
// in round 1, whose update is ten times longer, c3 is 0.15 of its norm from
// c1 (CopyDistance is 0.1), in rounds 2 and 3 half its norm. Summed over
// the job the pair is 0.164 apart (within JobCopyDistance 0.25); over
// rounds 2 and 3 alone 0.5.
func copyJobUpdates(round int) map[string][]float64 {
	if round == 1 {
		return map[string][]float64{"c1": {10, 0}, "c2": {0, 10}, "c3": {10, 1.5}}
	}
	return map[string][]float64{"c1": {1, 0}, "c2": {0, 1}, "c3": {1, 0.5}}
}

func copyJob(t *testing.T) Job {
	return traceJob(t, map[string]string{"wait_for": "3", "min": "3", "rounds": "3"})
}

func newCopyEngine(t *testing.T) *Engine { return newCopyEngineWith(t, sumSquares{}) }

func newCopyEngineWith(t *testing.T, eval Evaluator) *Engine {
	e := NewEngine(copyJob(t), FedAvg{Fraction: 1, Min: 3, Mean: meanForTest}, eval, []float64{1, -1})
	e.SetValuer(&recordingValuer{})
	return e
}

// runCopyJob joins the clients (again, when resumed) and drives e until the job is done
// or round stopAfter completed (0: to the end), applying every ActPersist
// to store, and returns the engine's history.
func runCopyJob(t *testing.T, e *Engine, store *MemoryStore, stopAfter int) []RoundRecord {
	t.Helper()
	samples := map[string]int64{"c1": 10, "c2": 10, "c3": 10}
	ids := slices.Sorted(maps.Keys(samples))
	apply := func(acts []Action) {
		for _, a := range acts {
			if p, ok := a.(ActPersist); ok {
				if err := store.Apply(p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, c := range ids {
		apply(e.Step(EvJoin{Client: c, Samples: samples[c]}))
	}
	for steps := 0; e.Phase() != PhaseDone; steps++ {
		if steps > 10 {
			t.Fatalf("job did not end: phase %v, round %d", e.Phase(), e.Round())
		}
		if stopAfter > 0 && e.lastCompleted() >= stopAfter {
			break
		}
		task := e.Task()
		if task == nil {
			t.Fatalf("round %d: no task (phase %v)", e.Round(), e.Phase())
		}
		ups := copyJobUpdates(task.Round)
		for _, c := range ids {
			apply(e.Step(EvSubmit{Client: c, TaskID: task.ID, Samples: samples[c], Update: ups[c]}))
		}
	}
	return e.History()
}

func lastSettlement(t *testing.T, history []RoundRecord) *Settlement {
	t.Helper()
	s := settlementsOf(history)
	if len(s) != 1 {
		t.Fatalf("%d settlements, want 1", len(s))
	}
	return s[0]
}

// TestJobReplicasAcrossRestart: a coordinator restarted between rounds
// finds the copy the job would have found without the restart, and settles
// the same values: the accumulated distances are stored with each round
// and restored. Without them the restarted job sees rounds 2–3 alone, where
// c1 and c3 are 0.5 apart, and pays the copy twice.
func TestJobReplicasAcrossRestart(t *testing.T) {
	cleanStore := NewMemoryStore()
	clean := lastSettlement(t, runCopyJob(t, newCopyEngine(t), cleanStore, 0))
	cleanSnap, _ := cleanStore.Load()
	if r := cleanSnap.Redundancy; r == nil || r.From != 1 || r.Through != 3 {
		t.Fatalf("without a restart the store holds the accumulator %+v, want rounds 1–3", r)
	}
	if len(clean.Replicas) != 1 || !slices.Equal(clean.Replicas[0], []string{"c1", "c3"}) {
		t.Fatalf("without a restart: settlement replicas %v, want [[c1 c3]]", clean.Replicas)
	}
	for k := 1; k <= 2; k++ {
		store := NewMemoryStore()
		first := newCopyEngine(t)
		runCopyJob(t, first, store, k)
		// The coordinator dies after the next round's updates came in and
		// before its record was written: that round is run again.
		if task := first.Task(); task != nil {
			for _, c := range []string{"c1", "c2", "c3"} {
				first.Step(EvSubmit{Client: c, TaskID: task.ID, Samples: 10, Update: copyJobUpdates(task.Round)[c]})
			}
			if first.lastCompleted() != k+1 {
				t.Fatalf("round %d did not complete before the crash", k+1)
			}
		}
		snap, err := store.Load()
		if err != nil {
			t.Fatal(err)
		}
		e := newCopyEngine(t)
		if err := e.Restore(snap); err != nil {
			t.Fatal(err)
		}
		if from := e.JobCopyCheckFrom(); from != 1 {
			t.Errorf("restart after round %d: copy check from round %d, want 1", k, from)
		}
		s := lastSettlement(t, runCopyJob(t, e, store, 0))
		t.Logf("restart after round %d: replicas %v, values %v (without a restart %v, %v)", k, s.Replicas, s.Values, clean.Replicas, clean.Values)
		if !slices.EqualFunc(s.Replicas, clean.Replicas, slices.Equal) {
			t.Errorf("restart after round %d: settlement replicas %v, without a restart %v", k, s.Replicas, clean.Replicas)
		}
		if !maps.EqualFunc(s.Values, clean.Values, func(a, b float64) bool { return math.Abs(a-b) <= 1e-12 }) {
			t.Errorf("restart after round %d: settlement values %v, without a restart %v", k, s.Values, clean.Values)
		}
		if s.ReplicasFrom != 0 {
			t.Errorf("restart after round %d: replicas_from %d, want 0 (the whole job)", k, s.ReplicasFrom)
		}
		final, _ := store.Load()
		if r := final.Redundancy; r == nil || !bytes.Equal(r.Sums, cleanSnap.Redundancy.Sums) || r.From != 1 || r.Through != 3 {
			t.Errorf("restart after round %d: stored accumulator %+v, without a restart %+v", k, final.Redundancy, cleanSnap.Redundancy)
		}
	}
}

// failingOnce fails its nth evaluation.
type failingOnce struct {
	n, calls int
}

func (f *failingOnce) Evaluate(p []float64, s *dataset.Scaler) (model.Metrics, error) {
	f.calls++
	if f.calls == f.n {
		return model.Metrics{}, errors.New("evaluation failed")
	}
	return sumSquares{}.Evaluate(p, s)
}

// TestRedundancyFailedAttempt: a round attempt that fails after its
// updates were valued (here its evaluation) adds nothing to the
// accumulator; the attempt run again adds the round once, so the job ends
// with the sums of a job without the failure.
func TestRedundancyFailedAttempt(t *testing.T) {
	cleanStore := NewMemoryStore()
	runCopyJob(t, newCopyEngine(t), cleanStore, 0)
	want, _ := cleanStore.Load()
	store := NewMemoryStore()
	history := runCopyJob(t, newCopyEngineWith(t, &failingOnce{n: 2}), store, 0)
	if len(history) != 4 || !history[1].Failed || history[1].Round != 2 {
		t.Fatalf("history of %d attempts, want round 2's first attempt failed among 4", len(history))
	}
	got, _ := store.Load()
	if got.Redundancy == nil || !bytes.Equal(got.Redundancy.Sums, want.Redundancy.Sums) {
		t.Errorf("after a failed attempt the stored accumulator is %x, without one %x", got.Redundancy.Sums, want.Redundancy.Sums)
	}
}

// TestRedundancyOldState: a state file written before the accumulator was
// stored (no Redundancy in the snapshot) still resumes. The accumulator
// starts empty and the engine says so: JobCopyCheckFrom and the
// settlement's ReplicasFrom name the first round the copy check covers,
// and the accumulator stored since carries it, so a second restart still
// knows. Here the pair is then not caught: rounds 2–3 alone put c1 and c3
// 0.5 apart.
func TestRedundancyOldState(t *testing.T) {
	store := NewMemoryStore()
	runCopyJob(t, newCopyEngine(t), store, 1)
	old := NewMemoryStore()
	snap, _ := store.Load()
	for _, c := range snap.Clients {
		if err := old.Apply(ActPersist{Client: &c}); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range snap.Rounds {
		if err := old.Apply(ActPersist{Round: &r, Global: snap.Global}); err != nil {
			t.Fatal(err)
		}
	}
	snap, _ = old.Load()
	if snap.Redundancy != nil {
		t.Fatal("the old state holds an accumulator")
	}
	e := newCopyEngine(t)
	if err := e.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if from := e.JobCopyCheckFrom(); from != 2 {
		t.Errorf("copy check from round %d, want 2", from)
	}
	runCopyJob(t, e, old, 2)
	snap, _ = old.Load()
	if r := snap.Redundancy; r == nil || r.From != 2 || r.Through != 2 {
		t.Fatalf("stored accumulator %+v, want rounds 2–2", r)
	}
	e = newCopyEngine(t)
	if err := e.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if from := e.JobCopyCheckFrom(); from != 2 {
		t.Errorf("after a second restart: copy check from round %d, want 2", from)
	}
	s := lastSettlement(t, runCopyJob(t, e, old, 0))
	t.Logf("resumed from an old state after round 1: replicas %v from round %d, values %v", s.Replicas, s.ReplicasFrom, s.Values)
	if s.ReplicasFrom != 2 || len(s.Replicas) != 0 {
		t.Errorf("settlement replicas %v from round %d, want none from round 2", s.Replicas, s.ReplicasFrom)
	}

	// A state whose only rounds were not valued in plain mode has nothing
	// to miss.
	fresh := newCopyEngine(t)
	if err := fresh.Restore(Snapshot{}); err != nil || fresh.JobCopyCheckFrom() != 1 {
		t.Errorf("new job: copy check from round %d (%v), want 1", fresh.JobCopyCheckFrom(), err)
	}
}

// TestRedundancyRestoreRefuses: a stored accumulator that does not decode,
// or claims rounds after the last completed one, is refused by Restore
// with what was wrong.
func TestRedundancyRestoreRefuses(t *testing.T) {
	store := NewMemoryStore()
	runCopyJob(t, newCopyEngine(t), store, 1)
	snap, _ := store.Load()
	bad := *snap.Redundancy
	bad.Sums = append(slices.Clone(bad.Sums), 0)
	snap.Redundancy = &bad
	err := newCopyEngine(t).Restore(snap)
	if !errors.Is(err, valuation.ErrRedundancyEncoding) {
		t.Errorf("damaged sums: %v, want ErrRedundancyEncoding", err)
	}
	later := *snap.Redundancy
	later.Sums, later.Through = slices.Clone(snap.Redundancy.Sums[:len(snap.Redundancy.Sums)-1]), 2
	snap.Redundancy = &later
	if err := newCopyEngine(t).Restore(snap); err == nil || !strings.Contains(err.Error(), "rounds 1–2, the last completed round is 1") {
		t.Errorf("accumulator ahead of the rounds: %v", err)
	}
}
