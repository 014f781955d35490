package engine

import "testing"

// endings records how every task of s closed (Closed), read when the next
// task is published and once more after the run.
func endings(s *committeeSim, also func(*Task)) (map[string]Ending, func()) {
	got := map[string]Ending{}
	note := func() {
		if c := s.e.Closed(); c.ID != "" {
			got[c.ID] = c.How
		}
	}
	s.onPublish = func(t *Task) {
		note()
		if also != nil {
			also(t)
			note()
		}
	}
	return got, note
}

// The engine says how each task closed: a batch its members refuse below
// t is given up at once, and the tasks that got their answers (every
// update, the aggregate's t shares, the next round's batch) completed.
func TestClosedGivenUpAndCompleted(t *testing.T) {
	const rounds = 2
	s := newInfluenceSim(t, rounds)
	var refused string
	published := map[string]*Task{}
	got, note := endings(s, func(task *Task) {
		published[task.ID] = task
		if !task.Coefficient || task.Round != 1 || refused != "" {
			return
		}
		refused = task.ID
		for _, id := range task.Selected[:3] {
			s.step(EvShares{Client: id, TaskID: task.ID, Parts: map[string][]byte{"refused": []byte("test: refused")}})
		}
	})
	s.run(20 * 15 * rounds)
	note()
	if s.done == nil || s.done.FinalRound != rounds {
		t.Fatalf("job did not complete: %+v", s.done)
	}
	if refused == "" {
		t.Fatal("no batch in round 1")
	}
	if got[refused] != EndedGivenUp {
		t.Errorf("refused batch %s ended %q, want %q", refused, got[refused], EndedGivenUp)
	}
	completed := 0
	for id, task := range published {
		if id == refused || task.Round != rounds {
			continue
		}
		if got[id] != EndedCompleted {
			t.Errorf("round %d task %s (%s) ended %q, want %q", task.Round, id, task.Kind, got[id], EndedCompleted)
		}
		completed++
	}
	if completed < 3 {
		t.Fatalf("%d tasks in round %d, want its train task, its decryption and its batch", completed, rounds)
	}
}

// A batch short of t answers at its deadline timed out.
func TestClosedTimedOut(t *testing.T) {
	s := newInfluenceSim(t, 1)
	var batch string
	got, note := endings(s, func(task *Task) {
		if !task.Coefficient {
			return
		}
		batch = task.ID
		for _, id := range task.Selected[:3] {
			s.members[id].dead = true
		}
	})
	s.run(20 * 15)
	note()
	if batch == "" {
		t.Fatal("no batch published")
	}
	if got[batch] != EndedTimedOut {
		t.Errorf("batch %s ended %q, want %q (endings %v)", batch, got[batch], EndedTimedOut, got)
	}
}
