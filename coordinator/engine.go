package coordinator

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
	"time"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/ledger"
	"github.com/tallyfl/tally/model"
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
)

// Phase is where the job stands.
type Phase int

// The phases of a job, in order.
const (
	PhaseEnrolling Phase = iota
	PhaseScaling
	PhaseTraining
	PhaseDone
)

func (p Phase) String() string {
	return [...]string{"enrolling", "scaling", "training", "done"}[p]
}

// TaskKind says what a task asks of a client.
type TaskKind int

// Task kinds.
const (
	TaskTrain TaskKind = iota
	TaskMoments
	TaskKeyGen
	TaskThreshold
	TaskDecrypt
)

func (k TaskKind) String() string {
	return [...]string{"train", "moments", "keygen", "threshold", "decrypt"}[k]
}

// Task is one unit of work sent to the selected clients of a round.
type Task struct {
	ID       string
	Kind     TaskKind
	Round    int
	Attempt  int
	Params   []float64 // the global model (train) — shared, read-only
	Length   int       // expected update length
	Deadline int       // tick at which the task closes
	Selected []string

	// Under secure aggregation:
	// KeyID names the collective key updates are encrypted under, and
	// PublicKey is that key (train and moments tasks).
	KeyID     [32]byte
	PublicKey []byte
	// Acc accumulates the encrypted submissions of a train or moments
	// task. It is safe for concurrent use: the service adds ciphertexts
	// to it as they arrive, the engine finalises it when the task closes.
	Acc *aggregation.Accumulator
	// Blob is the key-generation instance (keygen) or the decryption
	// request (decrypt), in binary form.
	Blob []byte
	// Sealed maps recipient → sender → the Shamir share sender sealed for
	// recipient (threshold).
	Sealed map[string]map[string][]byte
	// Ciphertexts are the aggregate's blocks (decrypt).
	Ciphertexts [][]byte
	// Influence turns each client's ciphertexts, as they arrive, into a
	// ciphertext of ⟨∇L_val, n_i·Δ_i⟩ (the influence valuation mode).
	Influence *aggregation.Influence
	// Coefficient marks a decrypt task for an influence scalar.
	Coefficient bool
	// Groups is the seeded partition of the selected clients in the groups
	// valuation mode, with one accumulator per group instead of Acc.
	Groups   [][]string
	GroupAcc []*aggregation.Accumulator
	groupOf  map[string]int

	// selected is Selected as a set, made on first use by the goroutine
	// that owns the task (the engine's; the driver makes its own view):
	// with a thousand clients, a linear search per submission or per poll
	// made rounds quadratic in the number of clients.
	selected map[string]bool
}

// isSelected reports whether client is one of the task's selected clients.
// Only the engine's goroutine may call it.
func (t *Task) isSelected(client string) bool {
	if t.selected == nil {
		t.selected = make(map[string]bool, len(t.Selected))
		for _, id := range t.Selected {
			t.selected[id] = true
		}
	}
	return t.selected[client]
}

// AccumulatorFor returns the accumulator client's ciphertexts go into, or
// nil when the task takes no ciphertexts from it.
func (t *Task) AccumulatorFor(client string) *aggregation.Accumulator {
	if t.GroupAcc != nil {
		if g, ok := t.groupOf[client]; ok {
			return t.GroupAcc[g]
		}
		return nil
	}
	return t.Acc
}

// Encrypted reports whether the task collects ciphertexts.
func (t *Task) Encrypted() bool { return t.Acc != nil || t.GroupAcc != nil }

// Evaluator scores a parameter vector on the coordinator's validation data,
// standardised with scaler when it is not nil. It is pure computation: the
// engine calls it synchronously.
type Evaluator interface {
	Evaluate(params []float64, scaler *dataset.Scaler) (model.Metrics, error)
}

// Event is an input to the engine.
type Event interface{ event() }

// EvJoin: a client enrolled, or came back after a disconnect.
// IdentityKey is its X25519 public key, for committee duty.
type EvJoin struct {
	Client      string
	Samples     int64
	IdentityKey []byte
}

// EvPoll: a client asked for work; it is alive.
type EvPoll struct{ Client string }

// EvLeft: a client's long poll was cut off by its connection closing (it
// stopped, crashed or lost its network). Until it is heard from again it is
// presumed gone: neither selected nor asked to decrypt.
type EvLeft struct{ Client string }

// EvTick: one tick of the driver's clock passed.
type EvTick struct{}

// EvSubmit: a complete submission arrived. Digest is the SHA-256 of its payload.
// Under secure aggregation Encrypted is set, Update is nil and the
// ciphertexts are already in the task's accumulator.
type EvSubmit struct {
	Client    string
	TaskID    string
	Samples   int64
	Update    []float64
	Digest    [32]byte
	Encrypted bool
	Bytes     int64 // payload size, for the round's accounting
}

// EvShares: a committee member's protocol messages for a task, by part
// name ("public-key-share", "sealed/<recipient>", "ack", "share/<block>").
type EvShares struct {
	Client string
	TaskID string
	Parts  map[string][]byte
}

func (EvJoin) event()   {}
func (EvPoll) event()   {}
func (EvLeft) event()   {}
func (EvTick) event()   {}
func (EvSubmit) event() {}
func (EvShares) event() {}

// Action is an output of the engine for the driver to perform, in order.
type Action interface{ action() }

// ActPersist asks the driver to write records to the store before any later action.
type ActPersist struct {
	Client *ClientRecord
	Round  *RoundRecord
	// Global is the model after Round (set with Round when it completed).
	Global    []float64
	Scaler    *dataset.Scaler
	Committee *CommitteeRecord
}

// CommitteeRecord is a completed key generation: enough, with the members'
// own key shares, to decrypt again after a coordinator restart.
type CommitteeRecord struct {
	Epoch     uint64 `json:"epoch"`
	Instance  []byte `json:"instance"`
	PublicKey []byte `json:"public_key"`
}

// ActPublish makes Task the current task of each of its selected clients.
type ActPublish struct{ Task *Task }

// ActReply answers the submission of Client for TaskID.
type ActReply struct {
	Client    string
	TaskID    string
	Duplicate bool
	Err       error // nil when accepted
}

// ActRoundDone reports a completed or failed round attempt.
type ActRoundDone struct{ Record RoundRecord }

// ActJobDone ends the job.
type ActJobDone struct {
	Reason     string
	FinalRound int
}

// ActLog is a notable event for the job log.
type ActLog struct {
	Msg   string
	Attrs []any
}

func (ActPersist) action()   {}
func (ActPublish) action()   {}
func (ActReply) action()     {}
func (ActRoundDone) action() {}
func (ActJobDone) action()   {}
func (ActLog) action()       {}

// ClientRecord is a client as the store keeps it.
type ClientRecord struct {
	ID      string `json:"id"`
	Samples int64  `json:"samples"`
}

// RoundRecord is the outcome of one round attempt.
type RoundRecord struct {
	Round        int      `json:"round"`
	Attempt      int      `json:"attempt"`
	Failed       bool     `json:"failed,omitempty"`
	Reason       string   `json:"reason,omitempty"`
	Selected     []string `json:"selected"`
	Contributors []string `json:"contributors"`
	// Samples maps each contributor to its weight n_i.
	Samples     map[string]int64 `json:"samples"`
	ValLoss     float64          `json:"val_loss"`
	ValAccuracy float64          `json:"val_accuracy"`
	// Digests maps each contributor to the SHA-256 of its submission.
	Digests map[string][32]byte `json:"-"`
	// BytesReceived counts the payload bytes of the accepted submissions.
	BytesReceived int64 `json:"bytes_received"`
	// Decryptions lists what the committee decrypted for this round.
	Decryptions []DecryptionRecord `json:"decryptions,omitempty"`
	// Valuation scores the contributors of this round.
	Valuation *RoundValuation `json:"valuation,omitempty"`
}

// DecryptionRecord is one aggregate the committee decrypted: what for, and
// how many client updates it summed.
type DecryptionRecord struct {
	Purpose      string `json:"purpose"`
	Contributors int    `json:"contributors"`
	// Clients are the contributors summed in what was decrypted.
	Clients      []string `json:"clients"`
	Participants []string `json:"participants"`
}

// Strategy chooses a round's participants and combines their results.
type Strategy interface {
	// Select returns the participants of a round from the available
	// clients (sorted), using only rng for randomness.
	Select(available []string, rng *rand.Rand) []string
	// Aggregate returns the next global model from the current one and
	// the accepted results, given in client-id order.
	Aggregate(global []float64, results []Result) ([]float64, error)
}

// Result is one accepted update.
type Result struct {
	Client  string
	Samples int64
	Update  []float64 // Δ_i = local − global
}

type clientState struct {
	samples  int64
	lastSeen int
	joined   bool
	identity []byte
	// silent: the client let the last task it was given close without
	// answering (a train or moments update missing at the deadline, a
	// decryption share missing at its timeout), and has not been heard
	// from since. It is neither selected nor asked to decrypt until it
	// polls, joins or submits again: a dead client would otherwise cost
	// a round timeout in every round of its liveness window.
	silent bool
}

// heard notes that a client is alive now.
func (c *clientState) heard(now int) {
	c.lastSeen, c.silent = now, false
}

type received struct {
	samples int64
	update  []float64
	digest  [32]byte
	bytes   int64
}

// Engine is the coordinator's round engine: a pure state machine. Step
// takes one event and returns the actions the driver must perform, in order.
// It does no I/O, reads no clock and draws randomness only from the job seed.
// It is not safe for concurrent use: one driver goroutine owns it.
type Engine struct {
	job      Job
	strategy Strategy
	eval     Evaluator
	valuer   Valuer // nil: no valuation

	phase        Phase
	now          int
	enrolStart   int
	clients      map[string]*clientState
	round        int // the round being run; rounds are numbered from 1
	attempt      int
	failedInARow int
	global       []float64
	scaler       *dataset.Scaler
	task         *Task
	got          map[string]received
	declined     declines // clients of the open task that cannot contribute (decline.go)
	history      []RoundRecord
	he           *heState // nil without secure aggregation
	baskets      map[string]*ledger.Basket
	// short is set while a round cannot start for want of clients, since
	// tick shortSince; lastWaitLog is when the engine last said what it
	// waits for.
	short       bool
	shortSince  int
	lastWaitLog int
}

// NewEngine starts a job from initial parameters. A resumed job passes the
// state it recovered through Restore before the first Step.
func NewEngine(job Job, strategy Strategy, eval Evaluator, initial []float64) *Engine {
	e := &Engine{
		job: job, strategy: strategy, eval: eval,
		clients: map[string]*clientState{},
		baskets: map[string]*ledger.Basket{},
		round:   1, attempt: 1,
		global: slices.Clone(initial),
	}
	if job.Scaling.Mode == "fixed" {
		e.scaler = &dataset.Scaler{Mean: slices.Clone(job.Scaling.Mean), Std: slices.Clone(job.Scaling.Std)}
	}
	if job.Secure() {
		e.he = &heState{params: job.Params}
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
				e.baskets[id] = &ledger.Basket{Capacity: e.job.Payment.QuotaCapacity, Balance: b}
			}
		}
	}
	if snap.Committee != nil && e.he != nil {
		if err := e.he.restore(*snap.Committee); err != nil {
			return err
		}
	}
	if last >= e.job.Rounds {
		e.round = last
		e.phase = PhaseDone
	}
	return nil
}

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

// Task returns the open task, or nil.
func (e *Engine) Task() *Task { return e.task }

// Step applies one event.
func (e *Engine) Step(ev Event) []Action {
	var out []Action
	switch ev := ev.(type) {
	case EvJoin:
		out = e.join(ev)
	case EvPoll:
		if c, ok := e.clients[ev.Client]; ok {
			c.heard(e.now)
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

func (e *Engine) join(ev EvJoin) []Action {
	if e.phase == PhaseDone {
		return nil
	}
	c, known := e.clients[ev.Client]
	if !known {
		c = &clientState{}
		e.clients[ev.Client] = c
		if len(e.clients) == 1 {
			e.enrolStart = e.now
		}
	}
	c.heard(e.now)
	if ev.IdentityKey != nil {
		c.identity = slices.Clone(ev.IdentityKey)
	}
	var out []Action
	if !known || c.samples != ev.Samples {
		c.samples = ev.Samples
		out = append(out, ActPersist{Client: &ClientRecord{ID: ev.Client, Samples: ev.Samples}})
	}
	c.joined = true
	return append(out, e.maybeStart()...)
}

// available returns the live clients, sorted.
func (e *Engine) available() []string {
	var ids []string
	for id := range e.clients {
		if e.live(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// live reports whether client has joined, was heard from within the
// liveness window and is not known to be silent (see clientState.silent).
// It is O(1): the committee checks its members with it for every
// decryption, which with a thousand clients must not cost a pass over all
// of them (as available does).
func (e *Engine) live(client string) bool {
	c, ok := e.clients[client]
	return ok && c.joined && !c.silent && e.now-c.lastSeen <= e.job.Ticks(e.job.Clients.Liveness)
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

// pollGap bounds, in ticks, the time between two polls of a client that
// is there and idle: the service holds a long poll for at most
// DefaultPollWait, and the client polls again at once; 2 s more absorb a
// slow network or a busy client machine.
func (e *Engine) pollGap() int { return e.job.Ticks(Duration(DefaultPollWait + 2*time.Second)) }

// markUnheard presumes gone every client not heard from for longer than
// pollGap: it is not polling (it died after its last answer, or lost its
// network without its connection being seen to close). It is called only
// when a task times out, when the clients that are there have been heard
// from, and so that its pass over the clients is not paid per event.
func (e *Engine) markUnheard() {
	for _, c := range e.clients {
		if e.now-c.lastSeen > e.pollGap() {
			c.silent = true
		}
	}
}

// waitLogTicks is how often, in ticks, the engine says what it waits for
// while it cannot start a task: every 10 s, often enough for an operator
// watching the log, rare enough not to bury the rest of it.
func (e *Engine) waitLogTicks() int { return e.job.Ticks(Duration(10 * time.Second)) }

// need is how many contributions a round needs: clients.min, and under
// secure aggregation at least min_group_size, since no aggregate of fewer
// updates is ever decrypted.
func (e *Engine) need() int {
	if e.he != nil {
		return max(e.job.Clients.Min, e.job.MinGroupSize)
	}
	return e.job.Clients.Min
}

// missing lists the enrolment ids that are not available now, at most
// limit of them, and how many there are in all.
func (e *Engine) missing(avail []string, limit int) (string, int) {
	have := make(map[string]bool, len(avail))
	for _, id := range avail {
		have[id] = true
	}
	var out []string
	n := 0
	for _, id := range e.job.ClientIDs() {
		if have[id] {
			continue
		}
		n++
		if len(out) < limit {
			out = append(out, id)
		}
	}
	s := strings.Join(out, ",")
	if n > len(out) {
		s += fmt.Sprintf(" and %d more", n-len(out))
	}
	return s, n
}

// enrolWait says, once per waitLogTicks, who has not enrolled yet and when
// the enrolment timeout lets the job start without them.
func (e *Engine) enrolWait(avail []string) []Action {
	if e.now-e.lastWaitLog < e.waitLogTicks() {
		return nil
	}
	e.lastWaitLog = e.now
	missing, n := e.missing(avail, 20)
	attrs := []any{"available", len(avail), "wait_for", e.job.Clients.WaitFor, "min", e.job.Clients.Min, "missing", n, "missing_ids", missing}
	if len(e.clients) == 0 {
		attrs = append(attrs, "enrol_timeout", "counts from the first enrolment")
	} else {
		left := max(0, e.job.Ticks(e.job.Clients.EnrolTimeout)-(e.now-e.enrolStart))
		attrs = append(attrs, "enrol_timeout_in", (time.Duration(left) * time.Duration(e.job.Tick)).String())
	}
	return []Action{ActLog{Msg: "waiting for clients to enrol", Attrs: attrs}}
}

// tooFew handles a round that cannot start for want of available clients
// (dead, silent or gone from the liveness window). Waiting for ever would
// leave the job "training" with nothing happening: after one round timeout
// without enough clients, the attempt fails, and the job retries or stops
// as on_round_failure says.
func (e *Engine) tooFew(avail []string) []Action {
	missing, n := e.missing(avail, 20)
	attrs := []any{"round", e.round, "available", len(avail), "needed", e.need(), "missing", n, "missing_ids", missing}
	if !e.short {
		e.short, e.shortSince, e.lastWaitLog = true, e.now, e.now
		return []Action{ActLog{Msg: "too few clients available to start a round; waiting one round timeout", Attrs: attrs}}
	}
	if e.now-e.shortSince >= e.job.Ticks(e.job.RoundTimeout) {
		e.short = false
		round := e.round
		if e.phase == PhaseScaling {
			round = 0
		}
		t := &Task{Round: round, Attempt: e.attempt}
		rec := RoundRecord{Round: round, Attempt: e.attempt, Samples: map[string]int64{}}
		return e.fail(t, rec, fmt.Errorf("a round timeout passed with %d clients available, %d needed (%d missing: %s)", len(avail), e.need(), n, missing))
	}
	if e.now-e.lastWaitLog >= e.waitLogTicks() {
		e.lastWaitLog = e.now
		return []Action{ActLog{Msg: "too few clients available to start a round; waiting", Attrs: attrs}}
	}
	return nil
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
			case TaskKeyGen, TaskThreshold:
				return e.keyGenTimeout()
			case TaskDecrypt:
				return e.decryptTimeout()
			}
			return e.close("deadline")
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
	c.heard(e.now)
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
	e.got[ev.Client] = received{samples: ev.Samples, update: ev.Update, digest: ev.Digest, bytes: ev.Bytes}
	out := reply(false, nil)
	if len(e.got)+e.declinedCount() == len(t.Selected) {
		out = append(out, e.close("all submitted")...)
	}
	return out
}

// close ends the open train or moments task. With at least clients.min
// contributions it aggregates them (under secure aggregation: asks the
// committee to decrypt the encrypted sum first); otherwise the attempt fails.
func (e *Engine) close(why string) []Action {
	t := e.task
	e.task = nil
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
	for _, id := range t.Selected {
		_, declined := e.declined.clients[id]
		declined = declined && e.declined.task == t.ID
		if _, ok := e.got[id]; !ok && !declined {
			// It let the deadline pass: until it is heard from again it is
			// presumed gone (see clientState.silent). A client that
			// declined answered: it is there, only its trainer failed.
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
		err = e.setScaler(sum, 0)
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

// fail records a failed attempt and retries or stops, as configured.
func (e *Engine) fail(t *Task, rec RoundRecord, err error) []Action {
	rec.Failed, rec.Reason = true, err.Error()
	e.history = append(e.history, rec)
	e.failedInARow++
	out := []Action{ActPersist{Round: &rec}, ActRoundDone{Record: rec}}
	if e.job.OnRoundFailure == "stop" || e.failedInARow > e.job.MaxFailedRounds {
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
	e.pay(&rec)
	e.history = append(e.history, rec)
	out := []Action{ActPersist{Round: &rec, Global: e.global}, ActRoundDone{Record: rec}}
	if e.round >= e.job.Rounds {
		return append(out, e.done("all rounds completed"))
	}
	e.round++
	return append(out, e.maybeStart()...)
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

// SetValuer makes the engine score every round's contributors.
func (e *Engine) SetValuer(v Valuer) { e.valuer = v }

// valueClear scores a round whose updates the coordinator holds in the
// clear (secure_aggregation: none), in the job's valuation mode. A
// valuation error is recorded, not fatal: the model still advances.
func (e *Engine) valueClear(rec *RoundRecord, t *Task, results []Result) {
	if e.valuer == nil {
		return
	}
	for _, r := range results {
		// Without encryption the coordinator sees each update: say so.
		rec.Decryptions = append(rec.Decryptions, DecryptionRecord{Purpose: "cleartext-update", Contributors: 1, Clients: []string{r.Client}})
	}
	cfg := e.job.Valuation
	rv := &RoundValuation{Mode: cfg.Mode, Method: cfg.Method, Values: map[string]float64{}, StdErr: map[string]float64{}}
	rec.Valuation = rv
	var res valuation.Result
	var err error
	switch cfg.Mode {
	case ModePlain:
		updates, weights := make([][]float64, len(results)), make([]float64, len(results))
		for i, r := range results {
			updates[i], weights[i] = r.Update, float64(r.Samples)
		}
		if res, err = e.valuer.Game(t.Round, e.global, updates, weights, e.scaler); err == nil {
			for i, r := range results {
				rv.Values[r.Client], rv.StdErr[r.Client] = res.Values[i], at(res.StdErr, i)
			}
		}
	case ModeGroups:
		byID := map[string]Result{}
		for _, r := range results {
			byID[r.Client] = r
		}
		rv.Groups = partition(sortedIDs(results), e.job.MinGroupSize, e.job.Seed, t.Round, t.Attempt)
		updates, weights := make([][]float64, len(rv.Groups)), make([]float64, len(rv.Groups))
		for g, members := range rv.Groups {
			var us [][]float64
			var ws []float64
			for _, id := range members {
				us, ws = append(us, byID[id].Update), append(ws, float64(byID[id].Samples))
				weights[g] += float64(byID[id].Samples)
			}
			if updates[g], err = aggregation.FedAvg(us, ws); err != nil {
				break
			}
		}
		if err == nil {
			if res, err = e.valuer.Game(t.Round, e.global, updates, weights, e.scaler); err == nil {
				err = e.splitGroups(rv, res, func(id string) float64 { return float64(byID[id].Samples) })
			}
		}
	case ModeInfluence:
		var g []float64
		if g, err = e.valuer.Gradient(e.global, e.scaler); err == nil {
			updates, weights := make([][]float64, len(results)), make([]float64, len(results))
			for i, r := range results {
				updates[i], weights[i] = r.Update, float64(r.Samples)
			}
			var a []float64
			if a, err = valuation.InfluenceCoefficients(g, updates, weights); err == nil {
				if res, err = e.valuer.Surrogate(t.Round, a, weights); err == nil {
					for i, r := range results {
						rv.Values[r.Client], rv.StdErr[r.Client] = res.Values[i], at(res.StdErr, i)
					}
				}
			}
		}
	}
	rv.Evaluations = res.Evaluations
	if err != nil {
		rv.Error = err.Error()
	}
}

// splitGroups shares each group's value among its members by weight.
func (e *Engine) splitGroups(rv *RoundValuation, res valuation.Result, weight func(string) float64) error {
	for g, members := range rv.Groups {
		ws := make([]float64, len(members))
		for i, id := range members {
			ws[i] = weight(id)
		}
		vals, ses, err := valuation.SplitByWeight(res.Values[g], at(res.StdErr, g), ws)
		if err != nil {
			return err
		}
		for i, id := range members {
			rv.Values[id], rv.StdErr[id] = vals[i], ses[i]
		}
	}
	return nil
}

func at(v []float64, i int) float64 {
	if i < len(v) {
		return v[i]
	}
	return 0
}

func sortedIDs(results []Result) []string {
	ids := make([]string, len(results))
	for i, r := range results {
		ids[i] = r.Client
	}
	sort.Strings(ids)
	return ids
}

// advance evaluates the next global model and adopts it.
func (e *Engine) advance(rec *RoundRecord, next []float64) error {
	m, err := e.eval.Evaluate(next, e.scaler)
	if err != nil {
		return fmt.Errorf("evaluate: %w", err)
	}
	e.global = next
	rec.ValLoss, rec.ValAccuracy = m.Loss, m.Accuracy
	return nil
}

// setScaler turns the sum of the clients' flattened moments into a
// standardisation. Only the sum is used, so the step is the same in the
// clear and under secure aggregation, except for noise: the standard
// deviation of the error on each entry of sum (0 in the clear; the
// decryption's noise floor under HE, see aggregation.SlotNoiseSigma), below
// which a variance is not told from zero.
func (e *Engine) setScaler(sum []float64, noise float64) error {
	m, err := dataset.MomentsFromFlat(sum, e.job.Data.Features)
	if err != nil {
		return err
	}
	if m.Count < 2 {
		return fmt.Errorf("scaling needs at least 2 rows in all, got %g", m.Count)
	}
	s := m.ScalerWithNoise(noise)
	e.scaler = &s
	return nil
}
