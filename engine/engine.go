package engine

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/ledger/payout"
	"github.com/tallyfl/tally/valuation"
)

// Errors a submission can be refused with. The driver maps them to gRPC codes.
var (
	ErrNoTask        = errors.New("coordinator: no open task with that id")
	ErrNotSelected   = errors.New("coordinator: client is not selected for this task")
	ErrWrongLength   = errors.New("coordinator: update has the wrong length")
	ErrConflict      = errors.New("coordinator: a different submission for this task was already accepted")
	ErrBadUpdate     = errors.New("coordinator: update is not finite")
	ErrUnknownClient = errors.New("coordinator: unknown client")
	ErrBadEncoding   = errors.New("coordinator: malformed submission")
	// ErrWeight means a submission claims more samples n_i than its
	// client declared when it joined.
	ErrWeight = errors.New("coordinator: claimed weight exceeds the client's declared samples")
)

// Engine is the coordinator's round engine: a pure state machine. Step
// takes one event and returns the actions the driver must perform, in order.
// It does no I/O, reads no clock and draws randomness only from the job seed.
// It is not safe for concurrent use: one driver goroutine owns it.
type Engine struct {
	job      Job
	strategy Strategy
	eval     Evaluator
	valuer   Valuer           // nil: no valuation
	stores   SubmissionStores // nil: in memory (submissions.go)

	phase        Phase
	now          int
	enrolStart   int
	clients      map[string]*clientState
	round        int // the round being run; rounds are numbered from 1
	attempt      int
	failedInARow int
	global       []float64
	// known is the last completed round's global change, what the server
	// knows before the next round (nil before the first, and after a
	// restart: it is not persisted).
	known    []float64
	scaler   *dataset.Scaler
	task     *Task
	closed   ClosedTask // the task the engine closed last (Closed)
	got      map[string]received
	declined declines // clients of the open task that cannot contribute (decline.go)
	history  []RoundRecord
	he       *heState // nil without secure aggregation
	baskets  map[string]*payout.Basket
	// short is set while a round cannot start for want of clients, since
	// tick shortSince; lastWaitLog is when the engine last said what it
	// waits for.
	short       bool
	shortSince  int
	lastWaitLog int

	// redundancy accumulates how far apart the clients' updates are over
	// the job's completed plain-mode rounds, to value copies as one at
	// settlement (nil until the first). It is stored with every round that
	// feeds it (ActPersist.Redundancy) and restored with the job.
	// pendingRedundancy is it with the open attempt's updates added, which
	// replaces it when the attempt completes and is dropped when it fails,
	// so that a re-run attempt is not counted twice. redundancyFrom is the
	// first round it covers: 1, or after a restart from a state file
	// written before the accumulator was stored, the first round run since.
	redundancy        *valuation.Redundancy
	pendingRedundancy *valuation.Redundancy
	redundancyFrom    int
}

// NewEngine starts a job from initial parameters. A resumed job passes the
// state it recovered through Restore before the first Step.
func NewEngine(job Job, strategy Strategy, eval Evaluator, initial []float64) *Engine {
	e := &Engine{
		job: job, strategy: strategy, eval: eval,
		clients: map[string]*clientState{},
		baskets: map[string]*payout.Basket{},
		round:   1, attempt: 1,
		global:         slices.Clone(initial),
		redundancyFrom: 1,
	}
	if job.Scaling.Mode == "fixed" {
		e.scaler = &dataset.Scaler{Mean: slices.Clone(job.Scaling.Mean), Std: slices.Clone(job.Scaling.Std)}
	}
	if job.Secure() {
		e.he = &heState{params: job.Params}
		ts, err := newTranscriptState(job.ID, job.MinGroupSize, job.ScalarsPerRound())
		if err != nil {
			// The job was validated: min_group_size ≥ 2.
			panic(fmt.Sprintf("coordinator: transcript policy: %v", err))
		}
		e.he.ts = ts
	}
	return e
}

// Restore continues a job from what a Store kept: completed rounds never
// repeat, and a round that was interrupted starts again as a new attempt
// (its ciphertexts, never decrypted, are gone with the old process).
// Clients must join again, as they do by themselves after a restart.
func (e *Engine) Restore(snap Snapshot) error {
	for _, c := range snap.Clients {
		e.clients[c.ID] = &clientState{samples: c.Samples}
	}
	e.history = slices.Clone(snap.Rounds)
	if snap.Global != nil {
		if len(snap.Global) != len(e.global) {
			return fmt.Errorf("coordinator: stored model has %d parameters, the job's model %d", len(snap.Global), len(e.global))
		}
		e.global = slices.Clone(snap.Global)
	}
	if snap.Scaler != nil {
		e.scaler = snap.Scaler
	}
	last := e.lastCompleted()
	e.round, e.attempt, e.failedInARow = last+1, 1, 0
	for _, r := range e.history {
		if r.Round == e.round {
			e.attempt = max(e.attempt, r.Attempt+1)
			if r.Failed {
				e.failedInARow++
			}
		}
		if !r.Failed && r.Valuation != nil {
			for id, b := range r.Valuation.Balance {
				e.baskets[id] = &payout.Basket{Capacity: e.job.Payment.QuotaCapacity, Balance: b}
			}
		}
		// A settlement follows the round it is recorded with.
		if r.Settlement != nil {
			for id, b := range r.Settlement.Balance {
				e.baskets[id] = &payout.Basket{Capacity: e.job.Payment.QuotaCapacity, Balance: b}
			}
		}
	}
	if err := e.restoreRedundancy(snap.Redundancy, last); err != nil {
		return err
	}
	if snap.Committee != nil && e.he != nil {
		if err := e.he.restore(*snap.Committee); err != nil {
			return err
		}
	}
	if len(snap.Transcript) > 0 && e.he != nil {
		if err := e.he.ts.restore(snap.Transcript); err != nil {
			return err
		}
		for _, r := range snap.Rounds {
			e.he.ts.reported = max(e.he.ts.reported, r.TranscriptLen)
		}
	}
	if last >= e.job.Rounds {
		e.round = last
		e.phase = PhaseDone
	}
	return nil
}

// restoreRedundancy restores the job-level redundancy accumulator stored
// with the last round that fed it. A state file written before it was
// stored holds none: the accumulator then starts empty, and if plain-mode
// rounds were completed, copies are looked for over the rounds from the
// next on only (JobCopyCheckFrom, Settlement.ReplicasFrom).
func (e *Engine) restoreRedundancy(rr *RedundancyRecord, last int) error {
	e.redundancy, e.pendingRedundancy, e.redundancyFrom = nil, nil, 1
	if rr == nil {
		for _, r := range e.history {
			if !r.Failed && r.Valuation != nil && r.Valuation.Mode == ModePlain {
				e.redundancyFrom = last + 1
				break
			}
		}
		return nil
	}
	if rr.Through > last || rr.From < 1 || rr.From > rr.Through {
		return fmt.Errorf("coordinator: stored redundancy accumulator covers rounds %d–%d, the last completed round is %d", rr.From, rr.Through, last)
	}
	r := valuation.NewRedundancy()
	if err := r.UnmarshalBinary(rr.Sums); err != nil {
		return fmt.Errorf("coordinator: stored redundancy accumulator of rounds %d–%d: %w", rr.From, rr.Through, err)
	}
	e.redundancy, e.redundancyFrom = r, rr.From
	return nil
}

// JobCopyCheckFrom is the first round whose updates the job-level copy
// check (valuation.Redundancy) covers: 1, unless the job was resumed from a
// state file written before the accumulator was stored.
func (e *Engine) JobCopyCheckFrom() int { return e.redundancyFrom }

// Phase returns the current phase.
func (e *Engine) Phase() Phase { return e.phase }

// Round returns the round being run (or the last one, when done).
func (e *Engine) Round() int { return e.round }

// Global returns the current global model. Callers must not modify it.
func (e *Engine) Global() []float64 { return e.global }

// Scaler returns the feature scaling in force, or nil.
func (e *Engine) Scaler() *dataset.Scaler { return e.scaler }

// History returns the records of every round attempt so far.
func (e *Engine) History() []RoundRecord { return e.history }

// ClientSamples returns the number of training rows of every known
// client, by id.
func (e *Engine) ClientSamples() map[string]int64 {
	out := make(map[string]int64, len(e.clients))
	for id, c := range e.clients {
		out[id] = c.samples
	}
	return out
}

// Task returns the open task, or nil.
func (e *Engine) Task() *Task { return e.task }

// Ending is how a task closed: what the coordinator tells a member that
// asks for the task after it closed, so that a member which was still at
// work on it can say what happened rather than guess.
type Ending string

const (
	// EndedCompleted: the answers the task waited for arrived (every
	// update, t decryption shares, every member's key message).
	EndedCompleted Ending = "completed"
	// EndedGivenUp: closed before its deadline without what it waited
	// for (a member's refusal, a key that did not aggregate); what it
	// asked may be asked again in another task.
	EndedGivenUp Ending = "given_up"
	// EndedTimedOut: its deadline passed first.
	EndedTimedOut Ending = "timed_out"
)

// ClosedTask is a task the engine closed: its id, the clients it
// selected, and how it ended.
type ClosedTask struct {
	ID       string
	Selected []string
	How      Ending
}

// Closed returns the task the engine closed last, with an empty ID if it
// closed none since it was made (an ending is not persisted: after a
// restart it is not known).
func (e *Engine) Closed() ClosedTask { return e.closed }

// endTask closes the open task, noting how (Closed).
func (e *Engine) endTask(how Ending) {
	if e.task != nil {
		e.closed = ClosedTask{ID: e.task.ID, Selected: e.task.Selected, How: how}
	}
	e.task = nil
}

// Step applies one event.
func (e *Engine) Step(ev Event) []Action {
	var out []Action
	switch ev := ev.(type) {
	case EvJoin:
		out = e.join(ev)
	case EvPoll:
		if c, ok := e.clients[ev.Client]; ok {
			e.polled(c, ev.Client)
		}
	case EvLeft:
		if c, ok := e.clients[ev.Client]; ok {
			c.silent = true
		}
	case EvTick:
		e.now++
		out = e.tick()
	case EvSubmit:
		out = e.submit(ev)
	case EvShares:
		out = e.shares(ev)
	case EvDecline:
		out = e.decline(ev)
	}
	return out
}

// maybeStart opens the next task when none is open and enough clients are live.
func (e *Engine) maybeStart() []Action {
	if e.task != nil || e.phase == PhaseDone {
		return nil
	}
	avail := e.available()
	if e.phase == PhaseEnrolling {
		waited := e.now - e.enrolStart
		ready := len(avail) >= e.job.Clients.WaitFor ||
			(len(avail) >= e.job.Clients.Min && waited >= e.job.Ticks(e.job.Clients.EnrolTimeout))
		if !ready {
			return e.enrolWait(avail)
		}
		e.phase = PhaseTraining
		if e.scaler == nil && e.job.Scaling.Mode == "federated" {
			e.phase = PhaseScaling
		}
	}
	if len(avail) < e.need() {
		return e.tooFew(avail)
	}
	e.short = false
	if e.he != nil && !e.keyUsable() {
		return e.startKeyGen()
	}
	t := &Task{Round: e.round, Attempt: e.attempt, Deadline: e.now + e.job.Ticks(e.job.RoundTimeout)}
	if e.phase == PhaseScaling {
		// Every live client contributes to the moments: scaling should
		// describe the whole federation, not a sample of it.
		t.Kind, t.Round, t.Selected = TaskMoments, 0, avail
		t.Length = 1 + 2*e.job.Data.Features
	} else {
		t.Kind = TaskTrain
		t.Selected = e.strategy.Select(avail, e.rng("select"))
		t.Params = e.global
		t.Length = len(e.global)
	}
	t.ID = fmt.Sprintf("%s/%s/r%d/a%d", e.job.ID, t.Kind, t.Round, t.Attempt)
	if e.he != nil {
		if err := e.attachAccumulator(t); err != nil {
			// The parameters and key were validated when they were made: an
			// error here is a broken invariant, not bad input.
			panic(fmt.Sprintf("coordinator: accumulator for %s: %v", t.ID, err))
		}
	}
	e.task = t
	e.got = map[string]received{}
	return []Action{ActPublish{Task: t}}
}

// rng derives a generator from (job seed, round, attempt, purpose), so that
// the same seed makes the same choices whatever happened before.
func (e *Engine) rng(purpose string) *rand.Rand {
	h := sha256.New()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], e.job.Seed)
	h.Write(b[:])
	fmt.Fprintf(h, "|%s|%d|%d", purpose, e.round, e.attempt)
	return newPCG(h.Sum(nil))
}

// newPCG seeds a generator from the first 16 bytes of a hash.
func newPCG(s []byte) *rand.Rand {
	return rand.New(rand.NewPCG(binary.LittleEndian.Uint64(s[:8]), binary.LittleEndian.Uint64(s[8:16])))
}

func (e *Engine) tick() []Action {
	if e.phase == PhaseDone {
		return nil
	}
	if e.task != nil {
		if e.now >= e.task.Deadline {
			switch e.task.Kind {
			case TaskKeyGen, TaskReveal, TaskThreshold:
				return e.keyGenTimeout()
			case TaskDecrypt:
				return e.decryptTimeout()
			}
			return e.close(EndedTimedOut, "deadline")
		}
		return nil
	}
	return e.maybeStart()
}

func (e *Engine) submit(ev EvSubmit) []Action {
	reply := func(dup bool, err error) []Action {
		return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Duplicate: dup, Err: err}}
	}
	c, ok := e.clients[ev.Client]
	if !ok {
		return reply(false, ErrUnknownClient)
	}
	c.answered(e.now)
	t := e.task
	if t == nil || t.ID != ev.TaskID {
		return reply(false, fmt.Errorf("%w: %q", ErrNoTask, ev.TaskID))
	}
	if !t.isSelected(ev.Client) {
		return reply(false, ErrNotSelected)
	}
	if t.Kind != TaskTrain && t.Kind != TaskMoments {
		return reply(false, fmt.Errorf("%w: task %s takes protocol shares, not updates", ErrNoTask, t.ID))
	}
	if ev.Encrypted != t.Encrypted() {
		return reply(false, fmt.Errorf("%w: this job expects %s updates", ErrBadUpdate, map[bool]string{true: "encrypted", false: "plaintext"}[t.Encrypted()]))
	}
	if prev, ok := e.got[ev.Client]; ok {
		if prev.digest == ev.Digest {
			return reply(true, nil)
		}
		return reply(false, ErrConflict)
	}
	if ev.Encrypted {
		if acc := t.AccumulatorFor(ev.Client); acc == nil || !acc.Complete(ev.Client) {
			return reply(false, fmt.Errorf("%w: not every ciphertext block of client %s arrived", ErrBadUpdate, ev.Client))
		}
	} else if len(ev.Update) != t.Length {
		return reply(false, fmt.Errorf("%w: expected %d values, got %d", ErrWrongLength, t.Length, len(ev.Update)))
	}
	for i, v := range ev.Update {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return reply(false, fmt.Errorf("%w: value %d is %v", ErrBadUpdate, i, v))
		}
	}
	if ev.Samples < 1 {
		return reply(false, fmt.Errorf("%w: weight must be ≥ 1, got %d", ErrBadUpdate, ev.Samples))
	}
	// n_i weighs the update in FedAvg, the surrogate and the group split:
	// it may not exceed the data the client declared at join (issue 15).
	if t.Kind == TaskTrain && c.samples > 0 && ev.Samples > c.samples {
		err := fmt.Errorf("%w: client %s claims %d samples in round %d, declared %d when it joined", ErrWeight, ev.Client, ev.Samples, t.Round, c.samples)
		return append(reply(false, err), ActLog{Msg: "submission refused: weight above the declared samples",
			Attrs: []any{"client", ev.Client, "round", t.Round, "claimed", ev.Samples, "declared", c.samples}})
	}
	e.got[ev.Client] = received{samples: ev.Samples, update: ev.Update, digest: ev.Digest, bytes: ev.Bytes}
	out := reply(false, nil)
	if len(e.got)+e.declinedCount() == len(t.Selected) {
		out = append(out, e.close(EndedCompleted, "all submitted")...)
	}
	return out
}

// close ends the open train or moments task. With at least clients.min
// contributions it aggregates them (under secure aggregation: asks the
// committee to decrypt the encrypted sum first); otherwise the attempt fails.
func (e *Engine) close(how Ending, why string) []Action {
	t := e.task
	e.endTask(how)
	contributors := make([]string, 0, len(e.got))
	for id := range e.got {
		contributors = append(contributors, id)
	}
	sort.Strings(contributors)
	rec := RoundRecord{
		Round: t.Round, Attempt: t.Attempt, Selected: t.Selected, Contributors: contributors,
		Samples: map[string]int64{}, Digests: map[string][32]byte{},
	}
	for _, id := range contributors {
		rec.Samples[id] = e.got[id].samples
		rec.Digests[id] = e.got[id].digest
		rec.BytesReceived += e.got[id].bytes
	}
	if t.Kind == TaskTrain {
		e.checkWeights(&rec)
	}
	for _, id := range t.Selected {
		_, declined := e.declined.clients[id]
		declined = declined && e.declined.task == t.ID
		if _, ok := e.got[id]; !ok && !declined {
			// It let the deadline pass: until it is heard from again it is
			// presumed gone (see clientState.silent). A client that
			// declined the task answered it.
			e.clients[id].silent = true
		}
	}
	if why == "deadline" {
		e.markUnheard()
	}
	need := e.need()
	if len(contributors) < need {
		e.got = nil
		return e.fail(t, rec, fmt.Errorf("%d of %d selected clients submitted (%s), %d needed", len(contributors), len(t.Selected), why, need))
	}
	if e.he != nil {
		e.got = nil
		return e.startDecrypt(t, rec)
	}
	var err error
	if t.Kind == TaskMoments {
		sum := make([]float64, t.Length)
		for _, id := range contributors {
			for i, v := range e.got[id].update {
				sum[i] += v
			}
		}
		err = e.setScaler(sum, nil)
	} else {
		results := make([]Result, len(contributors))
		for i, id := range contributors {
			g := e.got[id]
			results[i] = Result{Client: id, Samples: g.samples, Update: g.update}
		}
		var next []float64
		if next, err = e.strategy.Aggregate(e.global, results); err == nil {
			e.valueClear(&rec, t, results)
			err = e.advance(&rec, next)
		}
	}
	e.got = nil
	if err != nil {
		return e.fail(t, rec, err)
	}
	return e.succeed(t, rec)
}

// checkWeights flags every contributor whose claimed weight n_i differs
// from its claim in the last round it contributed to: a client's data do
// not change during a job, so neither may its weight. The claim stands
// (it is within the declared samples, which submit checks); the flag goes
// to the round's record, hence the report, JobStatus and the log.
func (e *Engine) checkWeights(rec *RoundRecord) {
	last := map[string][2]int64{} // client → (round, samples) of its last claim
	for i := len(e.history) - 1; i >= 0; i-- {
		r := e.history[i]
		for id, n := range r.Samples {
			if _, seen := last[id]; !seen && rec.Samples[id] > 0 {
				last[id] = [2]int64{int64(r.Round), n}
			}
		}
		if len(last) == len(rec.Samples) {
			break
		}
	}
	for _, id := range rec.Contributors {
		if p, ok := last[id]; ok && p[1] != rec.Samples[id] {
			rec.WeightFlags = append(rec.WeightFlags, fmt.Sprintf("client %s claims n=%d in round %d, n=%d in round %d", id, rec.Samples[id], rec.Round, p[1], p[0]))
		}
	}
}

// checkDecryptedWeight flags an aggregate whose decrypted total weight
// Σ n_i (the slot every client encrypts its own n_i into) differs from the
// sum of the contributors' header claims by more than the decryption's
// noise could explain: some contributor encrypted a weight other than the
// one it claimed. Which one cannot be told from the sum; the flag names
// the aggregate's contributors.
func (e *Engine) checkDecryptedWeight(rec *RoundRecord, what string, contributors []string, decrypted float64) {
	var claimed int64
	for _, id := range contributors {
		claimed += rec.Samples[id]
	}
	// Weights are whole numbers and the decryption error of one slot is
	// far below 0.5 with the job's parameters (aggregation.SlotNoiseSigma).
	if math.Abs(decrypted-float64(claimed)) > 0.5 {
		rec.WeightFlags = append(rec.WeightFlags, fmt.Sprintf("%s: decrypted Σn = %.2f, the headers of clients %s claim Σn = %d",
			what, decrypted, strings.Join(contributors, ","), claimed))
	}
}

// fail records a failed attempt and retries or stops, as configured.
func (e *Engine) fail(t *Task, rec RoundRecord, err error) []Action {
	rec.Failed, rec.Reason = true, err.Error()
	e.pendingRedundancy = nil // the attempt's updates count only if it is re-run and completes
	e.failedInARow++
	stop := e.job.OnRoundFailure == "stop" || e.failedInARow > e.job.MaxFailedRounds
	if stop && t.Kind == TaskTrain {
		// The job ends here: what its completed rounds earned is owed
		// now, with this attempt's record.
		rec.Settlement = e.settle(e.lastCompleted())
	}
	e.history = append(e.history, rec)
	out := []Action{ActPersist{Round: &rec}, ActRoundDone{Record: rec}}
	if stop {
		return append(out, e.done(fmt.Sprintf("round %d failed: %s", t.Round, rec.Reason)))
	}
	e.attempt++
	return append(out, e.maybeStart()...)
}

// succeed records a completed task and opens the next one.
func (e *Engine) succeed(t *Task, rec RoundRecord) []Action {
	e.failedInARow = 0
	e.attempt = 1
	if t.Kind == TaskMoments {
		e.phase = PhaseTraining
		out := []Action{ActPersist{Scaler: e.scaler}, ActLog{Msg: "feature scaling computed", Attrs: []any{"clients", len(rec.Contributors)}}}
		return append(out, e.maybeStart()...)
	}
	if e.he != nil {
		e.he.ts.report(&rec)
	}
	e.pay(&rec)
	e.accountDP(&rec)
	redundancy, err := e.commitRedundancy(rec.Round)
	if err != nil {
		panic(fmt.Sprintf("engine: round %d: %v", rec.Round, err)) // valuation.Redundancy's encoding does not fail
	}
	if _, end, _ := e.period(); rec.Valuation != nil && e.round >= end {
		// The period ends with this round: the history must hold the
		// round before its values are totalled.
		e.history = append(e.history, rec)
		rec.Settlement = e.settle(e.round)
		e.history[len(e.history)-1] = rec
	} else {
		e.history = append(e.history, rec)
	}
	out := []Action{ActPersist{Round: &rec, Global: e.global, Redundancy: redundancy}, ActRoundDone{Record: rec}}
	if e.round >= e.job.Rounds {
		return append(out, e.done("all rounds completed"))
	}
	e.round++
	return append(out, e.maybeStart()...)
}

// commitRedundancy makes the completed round's redundancy sums the job's,
// and returns them to be stored with the round (nil if the round fed none).
func (e *Engine) commitRedundancy(round int) (*RedundancyRecord, error) {
	if e.pendingRedundancy == nil {
		return nil, nil
	}
	e.redundancy, e.pendingRedundancy = e.pendingRedundancy, nil
	b, err := e.redundancy.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return &RedundancyRecord{From: e.redundancyFrom, Through: round, Sums: b}, nil
}

func (e *Engine) done(reason string) Action {
	e.phase = PhaseDone
	final := e.round
	if n := len(e.history); n == 0 || e.history[n-1].Failed {
		final = e.lastCompleted()
	}
	return ActJobDone{Reason: reason, FinalRound: final}
}

func (e *Engine) lastCompleted() int {
	for i := len(e.history) - 1; i >= 0; i-- {
		if !e.history[i].Failed {
			return e.history[i].Round
		}
	}
	return 0
}

// advance evaluates the next global model and adopts it.
func (e *Engine) advance(rec *RoundRecord, next []float64) error {
	m, err := e.eval.Evaluate(next, e.scaler)
	if err != nil {
		return fmt.Errorf("evaluate: %w", err)
	}
	// What the server knows before the next round: this round's change.
	if e.known == nil {
		e.known = make([]float64, len(next))
	}
	for k := range next {
		e.known[k] = next[k] - e.global[k]
	}
	e.global = next
	rec.ValLoss, rec.ValAccuracy = m.Loss, m.Accuracy
	return nil
}

// setScaler turns the sum of the clients' flattened moments into a
// standardisation. Only the sum is used, so the step is the same in the
// clear and under secure aggregation, except for noise: the standard
// deviation of the error on each entry of sum, given the moments it
// depends on (nil in the clear, no noise; the decryption's noise floor
// under HE, see aggregation.SlotNoiseSigmaAt), below which a variance is
// not told from zero.
func (e *Engine) setScaler(sum []float64, noise func(dataset.Moments) float64) error {
	m, err := dataset.MomentsFromFlat(sum, e.job.Data.Features)
	if err != nil {
		return err
	}
	if m.Count < 2 {
		return fmt.Errorf("scaling needs at least 2 rows in all, got %g", m.Count)
	}
	sigma := 0.0
	if noise != nil {
		sigma = noise(m)
	}
	s := m.ScalerWithNoise(sigma)
	e.scaler = &s
	return nil
}
