package engine

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestWeightAboveDeclarationRefused: a client that joined declaring 10
// samples and claims 11 in its update's header is refused, with its id,
// the claim and the declaration in the error and the log; the weight
// would otherwise inflate its share of FedAvg and of its group's value.
func TestWeightAboveDeclarationRefused(t *testing.T) {
	e := NewEngine(traceJob(t, nil), FedAvg{Fraction: 1, Min: 2, Mean: meanForTest}, sumSquares{}, []float64{1, -1})
	for _, c := range []string{"c1", "c2", "c3"} {
		e.Step(EvJoin{Client: c, Samples: 10})
	}
	task := e.Task()
	acts := e.Step(EvSubmit{Client: "c2", TaskID: task.ID, Samples: 11, Update: []float64{1, 2}})
	r := acts[0].(ActReply)
	if r.Err == nil {
		t.Fatal("a claim of 11 samples from a client that declared 10 was accepted")
	}
	if !errors.Is(r.Err, ErrWeight) || !strings.Contains(r.Err.Error(), "client c2 claims 11 samples in round 1, declared 10") {
		t.Errorf("err = %v, want ErrWeight naming c2, its claim and its declaration", r.Err)
	}
	logged := false
	for _, a := range acts[1:] {
		if l, ok := a.(ActLog); ok && strings.Contains(fmt.Sprint(l.Attrs...), "c2") {
			logged = true
		}
	}
	if !logged {
		t.Errorf("the refusal is not logged with the client: %v", acts)
	}
	if _, ok := e.got["c2"]; ok {
		t.Error("the refused submission was kept")
	}
}

// TestWeightChangeFlagged: a client that claims 10 samples in round 1 and
// 7 in round 2 (within its declaration, so accepted) is flagged in round
// 2's record and the driver's log line, by name.
func TestWeightChangeFlagged(t *testing.T) {
	e := NewEngine(traceJob(t, nil), FedAvg{Fraction: 1, Min: 3, Mean: meanForTest}, sumSquares{}, []float64{1, -1})
	for _, c := range []string{"c1", "c2", "c3"} {
		e.Step(EvJoin{Client: c, Samples: 10})
	}
	for round := 1; round <= 2; round++ {
		task := e.Task()
		if task == nil {
			t.Fatalf("no task in round %d", round)
		}
		for _, c := range task.Selected {
			n := int64(10)
			if c == "c3" && round == 2 {
				n = 7
			}
			e.Step(EvSubmit{Client: c, TaskID: task.ID, Samples: n, Update: []float64{1, 2}, Digest: [32]byte{byte(round), c[1]}})
		}
	}
	h := e.History()
	if len(h) != 2 || len(h[0].WeightFlags) != 0 {
		t.Fatalf("history %+v: want two rounds, the first without flags", h)
	}
	if f := h[1].WeightFlags; len(f) != 1 || f[0] != "client c3 claims n=7 in round 2, n=10 in round 1" {
		t.Errorf("round 2's weight flags = %q, want c3's change from 10 to 7", f)
	}
}

// TestDecryptedWeightFlagged: under he, a member that encrypts the weight
// 50 with its update while its header claims 10 makes the decrypted Σn_i
// (90) differ from the claims (50): the round is flagged with the
// aggregate's clients.
func TestDecryptedWeightFlagged(t *testing.T) {
	s := newCommitteeSim(t, 1)
	s.members["m4"].encWeight = 50
	s.run(200)
	if s.done == nil {
		t.Fatal("the job did not finish")
	}
	var flags []string
	for _, r := range s.e.History() {
		flags = append(flags, r.WeightFlags...)
	}
	if len(flags) != 1 || !strings.Contains(flags[0], "decrypted Σn = 90.00") || !strings.Contains(flags[0], "m0,m1,m2,m3,m4 claim Σn = 50") {
		t.Errorf("weight flags %q, want one naming the round's sum 90 against the claims 50", flags)
	}
	s2 := newCommitteeSim(t, 1)
	s2.run(200)
	for _, r := range s2.e.History() {
		if len(r.WeightFlags) > 0 {
			t.Errorf("honest weights flagged: %q", r.WeightFlags)
		}
	}
}
