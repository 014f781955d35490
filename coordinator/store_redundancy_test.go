package coordinator

import (
	"bytes"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/ledger"
	"github.com/tallyfl/tally/model"
	"github.com/tallyfl/tally/valuation"
)

// indexValuer values player p at p+1 (plain mode only).
type indexValuer struct{}

func (indexValuer) Game(_ int, _, _ []float64, updates [][]float64, _ []float64, _ *dataset.Scaler) (valuation.Result, error) {
	vals := make([]float64, len(updates))
	for i := range vals {
		vals[i] = float64(i + 1)
	}
	return valuation.Result{Values: vals}, nil
}

func (indexValuer) Surrogate(int, []float64, []float64, []float64, []float64, []float64, *dataset.Scaler) (valuation.Result, error) {
	panic("not in plain mode")
}

func (indexValuer) Gradient([]float64, []float64, *dataset.Scaler) ([]float64, error) {
	panic("not in plain mode")
}

type normEvaluator struct{}

func (normEvaluator) Evaluate(p []float64, _ *dataset.Scaler) (model.Metrics, error) {
	var s float64
	for _, v := range p {
		s += v * v
	}
	return model.Metrics{Loss: s, Accuracy: 1 / (1 + s)}, nil
}

// copyJobUpdates: c3 is c1's copy over the job (0.164 apart) but in no one
// round (0.15, then 0.5 of the norm apart), and over rounds 2–3 alone 0.5.
func copyJobUpdates(round int) map[string][]float64 {
	if round == 1 {
		return map[string][]float64{"c1": {10, 0}, "c2": {0, 10}, "c3": {10, 1.5}}
	}
	return map[string][]float64{"c1": {1, 0}, "c2": {0, 1}, "c3": {1, 0.5}}
}

func plainCopyJob(t *testing.T) engine.Job {
	t.Helper()
	cfg := engine.JobConfig{
		ID: "copies", Seed: 7, Rounds: 3,
		Data:         engine.DataConfig{Features: 2, Classes: 2, Validation: engine.SourceConfig{CSV: "val.csv"}},
		RoundTimeout: engine.Duration(5 * time.Second), Tick: engine.Duration(time.Second),
		Scaling: engine.ScalingConfig{Mode: "none"}, SecureAggregation: "none",
		Clients:   engine.ClientsConfig{Min: 3, WaitFor: 3, Liveness: engine.Duration(100 * time.Second)},
		Valuation: engine.ValuationConfig{Mode: engine.ModePlain, Method: "exact-shapley"},
	}
	for _, id := range []string{"c1", "c2", "c3"} {
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: id, Token: "token-" + id})
	}
	job, err := engine.NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	return job
}

// runCopyJob restores an engine from the state file at path and runs it,
// writing every ActPersist to the file, until the job is done or round
// stopAfter completed (0: to the end); it returns the stored snapshot.
func runCopyJob(t *testing.T, path string, stopAfter int) engine.Snapshot {
	t.Helper()
	job := plainCopyJob(t)
	s, err := OpenJobStore(path, job, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	snap, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	e := engine.NewEngine(job, engine.FedAvg{Fraction: 1, Min: 3, Mean: aggregation.FedAvg}, normEvaluator{}, []float64{1, -1})
	e.SetValuer(indexValuer{})
	if err := e.Restore(snap); err != nil {
		t.Fatal(err)
	}
	apply := func(acts []engine.Action) {
		for _, a := range acts {
			if p, ok := a.(engine.ActPersist); ok {
				if err := s.Apply(p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	ids := []string{"c1", "c2", "c3"}
	for _, c := range ids {
		apply(e.Step(engine.EvJoin{Client: c, Samples: 10}))
	}
	for steps := 0; e.Phase() != engine.PhaseDone; steps++ {
		if steps > 10 {
			t.Fatalf("job did not end: round %d", e.Round())
		}
		if n := len(e.History()); stopAfter > 0 && n > 0 && e.History()[n-1].Round >= stopAfter {
			break
		}
		task := e.Task()
		if task == nil {
			t.Fatalf("round %d: no task", e.Round())
		}
		for _, c := range ids {
			apply(e.Step(engine.EvSubmit{Client: c, TaskID: task.ID, Samples: 10, Update: copyJobUpdates(task.Round)[c]}))
		}
	}
	if snap, err = s.Load(); err != nil {
		t.Fatal(err)
	}
	return snap
}

func settlementOf(t *testing.T, snap engine.Snapshot) *engine.Settlement {
	t.Helper()
	var out []*engine.Settlement
	for _, r := range snap.Rounds {
		if r.Settlement != nil {
			out = append(out, r.Settlement)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%d settlements stored, want 1", len(out))
	}
	return out[0]
}

// TestBoltStoreKeepsRedundancy: a plain-mode job whose coordinator is
// restarted on its state file after round 1 settles as the job without a
// restart does, finding the copy c1–c3 that only the whole job shows: the
// accumulator is stored with each round and read back.
func TestBoltStoreKeepsRedundancy(t *testing.T) {
	clean := runCopyJob(t, filepath.Join(t.TempDir(), "clean.db"), 0)
	want := settlementOf(t, clean)
	if len(want.Replicas) != 1 || !slices.Equal(want.Replicas[0], []string{"c1", "c3"}) {
		t.Fatalf("without a restart: replicas %v, want [[c1 c3]]", want.Replicas)
	}
	path := filepath.Join(t.TempDir(), "state.db")
	if snap := runCopyJob(t, path, 1); snap.Redundancy == nil || snap.Redundancy.Through != 1 {
		t.Fatalf("after round 1 the file holds the accumulator %+v", snap.Redundancy)
	}
	snap := runCopyJob(t, path, 0)
	got := settlementOf(t, snap)
	t.Logf("restarted after round 1: replicas %v, values %v (without a restart %v, %v)", got.Replicas, got.Values, want.Replicas, want.Values)
	if !slices.EqualFunc(got.Replicas, want.Replicas, slices.Equal) || !maps.Equal(got.Values, want.Values) || got.ReplicasFrom != 0 {
		t.Errorf("restarted: replicas %v (from %d), values %v; without a restart %v, %v", got.Replicas, got.ReplicasFrom, got.Values, want.Replicas, want.Values)
	}
	if !bytes.Equal(snap.Redundancy.Sums, clean.Redundancy.Sums) || snap.Redundancy.From != 1 || snap.Redundancy.Through != 3 {
		t.Errorf("stored accumulator %+v, without a restart %+v", snap.Redundancy, clean.Redundancy)
	}
}

// TestBoltStoreOldStateWithoutRedundancy: a state file written before the
// accumulator was stored opens and resumes; the settlement says from which
// round copies were looked for. A damaged stored accumulator is refused
// with the file named.
func TestBoltStoreOldStateWithoutRedundancy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	runCopyJob(t, path, 1)
	// What the file held before this change: no accumulator.
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *ledger.Tx) error { return tx.Delete(bucketState, keyRedundancy) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	snap := runCopyJob(t, path, 0)
	s := settlementOf(t, snap)
	t.Logf("resumed from a file without the accumulator after round 1: replicas %v from round %d, values %v", s.Replicas, s.ReplicasFrom, s.Values)
	if s.ReplicasFrom != 2 || len(s.Replicas) != 0 {
		t.Errorf("settlement replicas %v from round %d, want none from round 2", s.Replicas, s.ReplicasFrom)
	}
	if r := snap.Redundancy; r == nil || r.From != 2 || r.Through != 3 {
		t.Errorf("accumulator stored since %+v, want rounds 2–3", r)
	}

	db, err = ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *ledger.Tx) error { return tx.PutRaw(bucketState, keyRedundancy, []byte("{not json")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	st, err := OpenJobStore(path, plainCopyJob(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Load(); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "redundancy accumulator") {
		t.Errorf("damaged accumulator: %v, want an error naming %s and the accumulator", err, path)
	}
}
