package engine

import (
	"errors"
	"testing"
)

// roundDone returns the ActRoundDone among acts, or nil.
func roundDone(acts []Action) *RoundRecord {
	for _, a := range acts {
		if d, ok := a.(ActRoundDone); ok {
			return &d.Record
		}
	}
	return nil
}

// TestDeclineClosesRound: a selected client whose trainer failed declines
// its task; the round closes as soon as the others have submitted, with
// no tick of its deadline passing, in either order of events.
func TestDeclineClosesRound(t *testing.T) {
	for _, declineFirst := range []bool{true, false} {
		name := map[bool]string{true: "decline-first", false: "decline-last"}[declineFirst]
		t.Run(name, func(t *testing.T) {
			e := NewEngine(traceJob(t, nil), FedAvg{Fraction: 1, Min: 2, Mean: meanForTest}, sumSquares{}, []float64{1, -1})
			for _, c := range []string{"c1", "c2", "c3"} {
				e.Step(EvJoin{Client: c, Samples: 10})
			}
			task := e.Task()
			if task == nil || len(task.Selected) != 3 {
				t.Fatalf("task %+v, want one with 3 selected clients", task)
			}
			decline := func() []Action {
				acts := e.Step(EvDecline{Client: "c3", TaskID: task.ID, Reason: "trainer crashed twice"})
				for _, a := range acts {
					if r, ok := a.(ActReply); ok && r.Err != nil {
						t.Fatalf("decline refused: %v", r.Err)
					}
				}
				return acts
			}
			var last []Action
			if declineFirst {
				if rec := roundDone(decline()); rec != nil {
					t.Fatal("the round closed on the decline alone")
				}
			}
			for _, c := range []string{"c1", "c2"} {
				last = e.Step(EvSubmit{Client: c, TaskID: task.ID, Samples: 10, Update: []float64{0.5, 0.5}})
			}
			if !declineFirst {
				last = decline()
			}
			rec := roundDone(last)
			if rec == nil {
				t.Fatalf("the round did not close when the last awaited client answered: %v", last)
			}
			if rec.Failed || len(rec.Contributors) != 2 || len(rec.Selected) != 3 {
				t.Errorf("round record %+v, want 2 contributors of 3 selected, not failed", rec)
			}
			// Declining is an answer, not silence: the client that declined
			// is selected again in the next round.
			next := e.Task()
			if next == nil {
				t.Fatal("no task for the next round")
			}
			if len(next.Selected) != 3 {
				t.Errorf("task %s selects %v, want c1, c2 and c3: the client that declined is selected again", next.ID, next.Selected)
			}
		})
	}
}

// TestDeclineRefusals: a decline is refused for a task that is not open,
// from a client not selected or unknown, and after the client submitted;
// a repeated decline is a duplicate.
func TestDeclineRefusals(t *testing.T) {
	e := NewEngine(traceJob(t, map[string]string{"fraction": "0.5"}), FedAvg{Fraction: 0.5, Min: 2, Mean: meanForTest}, sumSquares{}, []float64{1, -1})
	for _, c := range []string{"c1", "c2", "c3", "c4"} {
		e.Step(EvJoin{Client: c, Samples: 10})
	}
	task := e.Task()
	if task == nil {
		t.Fatal("no task")
	}
	in, out := task.Selected[0], ""
	for _, c := range []string{"c1", "c2", "c3", "c4"} {
		if !task.isSelected(c) {
			out = c
		}
	}
	e.Step(EvSubmit{Client: in, TaskID: task.ID, Samples: 10, Update: []float64{1, 2}})
	reply := func(ev EvDecline) ActReply {
		for _, a := range e.Step(ev) {
			if r, ok := a.(ActReply); ok {
				return r
			}
		}
		t.Fatalf("no reply to %+v", ev)
		return ActReply{}
	}
	for _, c := range []struct {
		name string
		ev   EvDecline
		want error
	}{
		{"wrong-task", EvDecline{Client: task.Selected[1], TaskID: "t/train/r9/a1"}, ErrNoTask},
		{"not-selected", EvDecline{Client: out, TaskID: task.ID}, ErrNotSelected},
		{"unknown-client", EvDecline{Client: "zz", TaskID: task.ID}, ErrUnknownClient},
		{"after-submit", EvDecline{Client: in, TaskID: task.ID}, ErrConflict},
	} {
		t.Run(c.name, func(t *testing.T) {
			if r := reply(c.ev); !errors.Is(r.Err, c.want) {
				t.Fatalf("err = %v, want %v", r.Err, c.want)
			}
		})
	}
	if e.Task() != task {
		t.Fatal("a refused decline changed the task")
	}
}
