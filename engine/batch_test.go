package engine

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/valuation"
)

// gradValuer is an influence valuer with a fixed public vector: each
// player's value is its scalar a_i, so a test can see which were decrypted.
type gradValuer struct{}

func (gradValuer) Game(int, []float64, []float64, [][]float64, []float64, *dataset.Scaler) (valuation.Result, error) {
	return valuation.Result{}, fmt.Errorf("not a game")
}

func (gradValuer) Surrogate(_ int, _, _, _, a, _ []float64, _ *dataset.Scaler) (valuation.Result, error) {
	return valuation.Result{Values: append([]float64(nil), a...), StdErr: make([]float64, len(a)), Evaluations: len(a)}, nil
}

func (gradValuer) Gradient(base, _ []float64, _ *dataset.Scaler) ([]float64, error) {
	g := make([]float64, len(base))
	for i := range g {
		g[i] = 0.5 / float64(i+1)
	}
	return g, nil
}

// newInfluenceSim is committeeSim under the influence valuation mode.
func newInfluenceSim(t *testing.T, rounds int) *committeeSim {
	t.Helper()
	s := newCommitteeSimWith(t, rounds, func(c *JobConfig) {
		c.Valuation = ValuationConfig{Mode: ModeInfluence, Method: MethodInfluence}
	})
	s.e.SetValuer(gradValuer{})
	return s
}

// batchAnswer is what an honest member does with a batch task
// (client/secure.go): verify each request against the signed submission of
// its client and its multiplier vector, admit the batch, and produce one
// coefficient share per request.
func (s *committeeSim) batchAnswer(m *simMember, t *Task) (map[string][]byte, error) {
	reqs := make([]aggregation.DecryptRequest, len(t.Batch))
	cts := make([][]byte, len(t.Batch))
	for i, br := range t.Batch {
		if err := reqs[i].UnmarshalBinary(br.Request); err != nil {
			return nil, err
		}
		b, err := strconv.Atoi(strings.TrimPrefix(br.Ciphertext, "ciphertext/"))
		if err != nil {
			return nil, fmt.Errorf("request %d names ciphertext %q", i, br.Ciphertext)
		}
		if cts[i], err = t.Ciphertext(b, nil); err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		ev := aggregation.Evidence{Ciphertexts: cts[i : i+1], Submissions: map[string][]byte{}, Gradient: t.Gradients[br.Gradient],
			Contribution: func(client string, b int) ([]byte, error) {
				c1, ok := t.Submissions.Contribution(client, b)
				if !ok {
					return nil, fmt.Errorf("no contribution %s/%d", client, b)
				}
				return c1, nil
			}}
		if raw, _, ok := t.Submissions.Submission(br.Client); ok {
			ev.Submissions[br.Client] = raw
		}
		if err := m.member.VerifyAggregate(reqs[i], ev); err != nil {
			return nil, err
		}
	}
	var entries []aggregation.TranscriptEntry
	for _, b := range t.Transcript[m.id] {
		var e aggregation.TranscriptEntry
		if err := e.UnmarshalBinary(b); err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	sig, err := m.member.AdmitBatch(reqs, entries)
	if err != nil {
		return nil, err
	}
	parts := map[string][]byte{"transcript-signature": sig}
	for i, req := range reqs {
		share, err := m.member.DecryptCoefficientShare(req, cts[i])
		if err != nil {
			return nil, err
		}
		parts[fmt.Sprintf("coefficients/%d", i)] = share
	}
	return parts, nil
}

// A round's influence scalars go out as one decrypt task: every round of
// an influence job under he takes two decrypt tasks (the total, then the
// batch of the five scalars) instead of six, every scalar is decrypted and
// valued, and the transcript records one entry per scalar, the batch's
// last signed by each member that answered.
func TestBatchedInfluenceScalars(t *testing.T) {
	const rounds = 3
	s := newInfluenceSim(t, rounds)
	s.run(20 * 15 * rounds)
	if s.done == nil || s.done.FinalRound != rounds {
		t.Fatalf("job did not complete %d rounds: %+v; timeouts %v", rounds, s.done, s.timeouts)
	}
	for _, rec := range s.records {
		if rec.Failed {
			t.Fatalf("round %d attempt %d failed: %s", rec.Round, rec.Attempt, rec.Reason)
		}
		scalars := 0
		for _, d := range rec.Decryptions {
			if d.Purpose == aggregation.PurposeInfluence {
				scalars++
			}
		}
		t.Logf("round %d: %d decrypt tasks, %d decryptions (%d influence scalars), values %v", rec.Round, rec.DecryptTasks, len(rec.Decryptions), scalars, rec.Valuation.Values)
		if rec.DecryptTasks != 2 || scalars != len(rec.Contributors) {
			t.Errorf("round %d: %d decrypt tasks and %d scalars for %d contributors, want 2 tasks and one scalar each", rec.Round, rec.DecryptTasks, scalars, len(rec.Contributors))
		}
		if rec.Valuation == nil || rec.Valuation.Error != "" || len(rec.Valuation.Values) != len(rec.Contributors) {
			t.Errorf("round %d: valuation %+v, want every contributor valued", rec.Round, rec.Valuation)
		}
	}
	chain := s.e.Transcript()
	var batches int
	for _, task := range s.decryptions {
		if !task.Coefficient {
			continue
		}
		batches++
		first, last := -1, -1
		for i := range chain.Len() {
			e, _ := chain.Entry(i)
			for _, br := range task.Batch {
				var req aggregation.DecryptRequest
				if err := req.UnmarshalBinary(br.Request); err != nil {
					t.Fatal(err)
				}
				if e.Request == req.ID() {
					if first < 0 {
						first = i
					}
					last = i
				}
			}
		}
		if last-first+1 != len(task.Batch) {
			t.Fatalf("batch %s: its %d requests are entries %d to %d, want consecutive", task.ID, len(task.Batch), first, last)
		}
		for i := first; i <= last; i++ {
			e, _ := chain.Entry(i)
			if want := map[bool]int{true: 3, false: 0}[i == last]; len(e.Signatures) < want || (i != last && len(e.Signatures) != 0) {
				t.Errorf("batch %s entry %d has %d signatures; the last entry carries the answering members' (≥ 3), the others none", task.ID, i, len(e.Signatures))
			}
		}
	}
	if batches != rounds {
		t.Fatalf("%d batch tasks for %d rounds", batches, rounds)
	}
}

// A member's answer to a batch must carry a share of every request: one
// that leaves a request out (a member withholding the scalar of one client,
// or a part naming no request) is refused with ErrBadEncoding, and the
// honest answers that follow, the same member's included, complete the
// batch.
func TestBatchAnswerMissingAShare(t *testing.T) {
	const rounds = 1
	s := newInfluenceSim(t, rounds)
	tried := false
	s.onPublish = func(task *Task) {
		if !task.Coefficient || tried {
			return
		}
		tried = true
		m := s.members[task.Selected[0]]
		// The answer's shape is checked before its signature or shares:
		// placeholders stand for them (the member answers honestly when
		// its turn comes).
		parts := map[string][]byte{"transcript-signature": make([]byte, 64)}
		for i := range task.Batch {
			parts[fmt.Sprintf("coefficients/%d", i)] = []byte{1}
		}
		for _, bad := range []struct {
			name string
			edit func(map[string][]byte)
		}{
			{"a request left out", func(p map[string][]byte) { delete(p, fmt.Sprintf("coefficients/%d", len(task.Batch)-1)) }},
			{"an index beyond the batch", func(p map[string][]byte) { p[fmt.Sprintf("coefficients/%d", len(task.Batch))] = p["coefficients/0"] }},
		} {
			forged := map[string][]byte{}
			for k, v := range parts {
				forged[k] = v
			}
			bad.edit(forged)
			var refused error
			for _, a := range s.e.Step(EvShares{Client: m.id, TaskID: task.ID, Parts: forged}) {
				if r, ok := a.(ActReply); ok {
					refused = r.Err
				}
			}
			if !errors.Is(refused, ErrBadEncoding) {
				t.Fatalf("%s: reply %v, want ErrBadEncoding", bad.name, refused)
			}
			t.Logf("%s: %v", bad.name, refused)
		}
	}
	s.run(20 * 15 * rounds)
	if !tried {
		t.Fatal("no batch task was published")
	}
	if s.done == nil || s.done.FinalRound != rounds {
		t.Fatalf("job did not complete: %+v", s.done)
	}
	rec := s.records[len(s.records)-1]
	if len(rec.Valuation.Values) != len(rec.Contributors) {
		t.Fatalf("valuation %+v, want every contributor valued", rec.Valuation)
	}
}

// Members that refuse a batch leave it short of t: every scalar of the
// batch is missing, the round still completes (its aggregate was
// decrypted) with no influence value, and no scalar is asked again.
func TestBatchRefusedBelowThreshold(t *testing.T) {
	const rounds = 2
	s := newInfluenceSim(t, rounds)
	refusedIn := 0
	s.onPublish = func(task *Task) {
		if !task.Coefficient || task.Round != 1 {
			return
		}
		refusedIn++
		// Three of five refuse: two answers cannot reach t = 3.
		for _, id := range task.Selected[:3] {
			s.step(EvShares{Client: id, TaskID: task.ID, Parts: map[string][]byte{"refused": []byte("test: refused")}})
		}
	}
	s.run(20 * 15 * rounds)
	if s.done == nil || s.done.FinalRound != rounds {
		t.Fatalf("job did not complete: %+v; timeouts %v", s.done, s.timeouts)
	}
	if refusedIn != 1 {
		t.Fatalf("%d batches of round 1, want 1 (no retry)", refusedIn)
	}
	for _, rec := range s.records {
		switch rec.Round {
		case 1:
			if rec.Valuation == nil || rec.Valuation.Error == "" || len(rec.Valuation.Values) != 0 {
				t.Errorf("round 1: valuation %+v, want no value (every scalar missing)", rec.Valuation)
			}
		case 2:
			if len(rec.Valuation.Values) != len(rec.Contributors) {
				t.Errorf("round 2: valuation %+v, want every contributor valued", rec.Valuation)
			}
		}
		if rec.DecryptTasks != 2 {
			t.Errorf("round %d: %d decrypt tasks, want 2", rec.Round, rec.DecryptTasks)
		}
	}
	if len(s.timeouts) != 0 {
		t.Errorf("timeouts %v: refusals below t must end the batch at once", s.timeouts)
	}
}

// Members that die once a batch is out leave it short of t answers: at
// its deadline every scalar of the batch is missing, the round completes
// with its aggregate (no influence value), and the batch is not retried.
func TestBatchTimesOutBelowThreshold(t *testing.T) {
	const rounds = 1
	s := newInfluenceSim(t, rounds)
	batches := 0
	s.onPublish = func(task *Task) {
		if !task.Coefficient {
			return
		}
		batches++
		for _, id := range task.Selected[:3] {
			s.members[id].dead = true
		}
	}
	s.run(20 * 15 * rounds)
	if s.done == nil || s.done.FinalRound != rounds {
		t.Fatalf("job did not complete: %+v; timeouts %v", s.done, s.timeouts)
	}
	if batches != 1 {
		t.Fatalf("%d batches, want one (no retry)", batches)
	}
	// The round ended at the batch's deadline, not before.
	if took := s.completed[1] - s.openSince; took < s.e.job.Ticks(s.e.job.RoundTimeout) {
		t.Fatalf("round 1 completed %d ticks after the batch went out, before its deadline (%d ticks)", took, s.e.job.Ticks(s.e.job.RoundTimeout))
	}
	rec := s.records[len(s.records)-1]
	if rec.Failed || rec.Valuation == nil || rec.Valuation.Error == "" || len(rec.Valuation.Values) != 0 {
		t.Fatalf("round record %+v, valuation %+v: want a completed round without influence values", rec, rec.Valuation)
	}
}

// A member at work on a batch of coefficient shares does not poll. Two of
// the five take longer than the liveness window, and the batch completes
// with the other three's shares before they answer: the next round must
// still select them, since they took the task and its deadline has not
// passed, and wait for their updates. Before the engine counted a member at
// work as live, each round after the first started without the two slow
// members (round 2 selected 3 of 5), so an honest hospital on the committee
// lost the round after a batch it was slow to answer (seen in `tally simulate`
// on digits under -race on a loaded machine: rounds with 8 of 10 clients,
// the two missing being the slowest committee members).
func TestSlowMemberStaysInTheNextRound(t *testing.T) {
	const rounds = 3
	s := newCommitteeSimWith(t, rounds, func(c *JobConfig) {
		c.Valuation = ValuationConfig{Mode: ModeInfluence, Method: MethodInfluence}
		c.Clients.Liveness = Duration(5 * time.Second)
	})
	s.e.SetValuer(gradValuer{})
	liveness := s.e.job.Ticks(s.e.job.Clients.Liveness)
	for i, id := range s.ids {
		// Three answer after 6 ticks, two after 10: all beyond the
		// 5-tick liveness window, within the 15-tick round timeout.
		s.members[id].batchTicks = map[bool]int{true: 10, false: 6}[i >= 3]
	}
	var trains []*Task
	s.onPublish = func(task *Task) {
		if task.Kind == TaskTrain {
			trains = append(trains, task)
		}
	}
	s.run(20 * 15 * rounds)
	if s.done == nil || s.done.FinalRound != rounds {
		t.Fatalf("job did not complete %d rounds: %+v; timeouts %v", rounds, s.done, s.timeouts)
	}
	for _, task := range trains {
		t.Logf("%s selects %v", task.ID, task.Selected)
		if len(task.Selected) != len(s.ids) {
			t.Errorf("%s selects %d of %d clients (%v): a member at work on the last batch (liveness %d ticks, slowest batch %d) was counted gone", task.ID, len(task.Selected), len(s.ids), task.Selected, liveness, 10)
		}
	}
	for _, rec := range s.records {
		if !rec.Failed && len(rec.Contributors) != len(s.ids) {
			t.Errorf("round %d: %d contributors, want %d", rec.Round, len(rec.Contributors), len(s.ids))
		}
	}
	if len(s.timeouts) > 0 {
		t.Errorf("tasks timed out: %v", s.timeouts)
	}
}

// Issue 19: with spilling submission stores, as the coordinator makes
// them, the clients' influence ciphertexts a batch asks about are not in
// the task nor in the engine: each is in the round's spill file from the
// client's last block, read back (checked, aggregation.ErrProductSpillCorrupt)
// when a member downloads it and when its shares are combined. Every
// scalar still decrypts: the members verified and the engine combined the
// bytes read back.
func TestInfluenceProductsAreReadFromTheSpillFile(t *testing.T) {
	const rounds = 2
	s := newInfluenceSim(t, rounds)
	s.e.SetSubmissionStores(func() *aggregation.SubmissionStore {
		f, err := os.CreateTemp(t.TempDir(), "spill-*")
		if err != nil {
			t.Fatal(err)
		}
		st := aggregation.NewSpillingSubmissionStore(f)
		t.Cleanup(func() { st.Close() })
		return st
	})
	batches := 0
	s.onPublish = func(task *Task) {
		if !task.Coefficient {
			return
		}
		batches++
		if len(task.Ciphertexts) != 0 || len(task.Products) != len(task.Batch) {
			t.Errorf("%s: %d ciphertexts and %d products for %d requests, want only products, one each", task.ID, len(task.Ciphertexts), len(task.Products), len(task.Batch))
		}
		for i, p := range task.Products {
			if !p.Spilled() {
				t.Errorf("%s: the product of %s (ciphertext/%d) is kept in memory, not in the spill file", task.ID, p.Client, i)
			}
		}
		for _, it := range s.e.he.queue {
			if it.product != nil && !it.product.Spilled() {
				t.Errorf("%s: the engine's queue holds %s's product in memory", task.ID, it.client)
			}
		}
	}
	s.run(20 * 15 * rounds)
	if s.done == nil || s.done.FinalRound != rounds {
		t.Fatalf("job did not complete %d rounds: %+v; timeouts %v", rounds, s.done, s.timeouts)
	}
	if batches != rounds {
		t.Fatalf("%d coefficient batches in %d rounds, want one a round", batches, rounds)
	}
	for _, rec := range s.records {
		if rec.Failed || rec.Valuation == nil || rec.Valuation.Error != "" || len(rec.Valuation.Values) != len(rec.Contributors) {
			t.Fatalf("round %d: %+v, valuation %+v: want every contributor valued from the products read back", rec.Round, rec, rec.Valuation)
		}
	}
}
