package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/telemetry"
)

// ErrStopped is returned for events that arrive after the driver stopped
// before the job ended (a coordinator shutting down: the client retries).
// ErrEnded is returned for events that arrive after the job ended: a share
// or update that raced the last round's close, which the client's next
// poll answers with the job's end.
var (
	ErrStopped = errors.New("coordinator: job is no longer running")
	ErrEnded   = errors.New("coordinator: the job has ended")
)

// Driver performs the engine's actions: it owns the engine, feeds it ticks
// from a clock and events from the gRPC service, writes every ActPersist to
// the Store before anything later happens, and publishes a read-only view
// that the service's handlers long-poll.
type Driver struct {
	engine *engine.Engine
	store  engine.Store
	log    *slog.Logger
	tick   time.Duration

	calls   chan call
	stopped chan struct{} // closed when Run returns

	mu   sync.RWMutex
	view view
	// wake holds, for each client waiting in a long poll, a channel closed
	// when what pending returns for it may have changed: a task that
	// selects it was published, or the job ended. Waking only those
	// clients, rather than every poller on every change of the view, keeps
	// a round linear in the number of clients: with one shared channel a
	// thousand pollers woke for each of a thousand submissions (measured:
	// pending was 6% of a 1,000-client simulation's CPU, O(n) each time).
	// Guarded by wakeMu, taken inside mu so that a poller gets its channel
	// in the same critical section as the state it read.
	wakeMu sync.Mutex
	wake   map[string]chan struct{}
	// OnRound, if set, is called from the driver goroutine after each round
	// attempt (progress displays, reports).
	OnRound func(engine.RoundRecord)
	// OnRelease, if set, is given every plaintext the engine obtained from
	// a decryption (engine.ActRelease), from the driver goroutine, after
	// the actions before it; an error stops the driver as a failed store
	// write does (tally coordinator --release-log).
	OnRelease func(engine.Release) error
	// Telemetry, if set before Run, receives the round's spans and metrics;
	// nil records nothing.
	Telemetry *telemetry.Telemetry

	trace roundTrace // owned by the driver goroutine
	// collect is the latest collect task whose submission store is open
	// (releaseStores); guarded by mu.
	collect *engine.Task
}

// roundTrace is the driver's telemetry state: the open round span, the
// open task, and the phases the engine's timed parts reported during the
// current step. The engine does not know about it: phases are derived
// from the actions (a task runs from its ActPublish to the step that
// publishes the next one or ends the round) and from the wrappers around
// the strategy, valuer and evaluator (see timedStrategy).
type roundTrace struct {
	round  *telemetry.Round
	keygen *telemetry.Round // the open key generation, a trace of its own
	task   *engine.Task
	opened time.Time
	// phases are reported during one engine step, and attributed to a
	// round once the step's actions are known.
	phases []timedPhase
}

type timedPhase struct {
	name       string
	start, end time.Time
}

// notePhase records a phase that ran during the current engine step. Only
// the driver goroutine calls it (the engine's parts run inside Step).
func (d *Driver) notePhase(name string, start, end time.Time) {
	d.trace.phases = append(d.trace.phases, timedPhase{name, start, end})
}

// taskPhase names what an open task of kind k waits for.
func taskPhase(k engine.TaskKind) string {
	switch k {
	case engine.TaskKeyGen, engine.TaskReveal, engine.TaskThreshold:
		return telemetry.PhaseKeyGen
	case engine.TaskDecrypt:
		return telemetry.PhaseDecrypt
	}
	return telemetry.PhaseWait
}

// refusal names the reason an engine refused a submission, for the
// updates counter: one label value per sentinel, never the message.
func refusal(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{engine.ErrNoTask, "no_task"}, {engine.ErrNotSelected, "not_selected"}, {engine.ErrWrongLength, "wrong_length"},
		{engine.ErrBadUpdate, "bad_update"}, {engine.ErrConflict, "conflict"}, {engine.ErrUnknownClient, "unknown_client"},
		{engine.ErrWeight, "weight"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}

// observe turns one step's actions into spans and metrics. start and end
// bound the engine's Step; done is when its actions were performed. The
// phases the step reported belong to the round open when it began (the
// round a closing task belonged to), except select, which starts the
// round the step opened.
func (d *Driver) observe(acts []engine.Action, start, end, done time.Time) {
	tel, tr := d.Telemetry, &d.trace
	before := tr.round
	var begun *telemetry.Round
	var finished []func()
	closeTask := func(next *engine.Task) {
		t := tr.task
		if t == nil {
			return
		}
		parent := tr.round
		if t.Kind == engine.TaskKeyGen || t.Kind == engine.TaskReveal || t.Kind == engine.TaskThreshold {
			parent = tr.keygen
		}
		tel.Phase(parent, taskPhase(t.Kind), tr.opened, start, attribute.String("tally.task", t.ID))
		if next != nil && next.Kind == engine.TaskDecrypt && (t.Kind == engine.TaskTrain || t.Kind == engine.TaskMoments) {
			// Under secure aggregation the step that closes a train task
			// finalises the encrypted sum and asks for its decryption.
			tel.Phase(tr.round, telemetry.PhaseAggregate, start, end, attribute.String("tally.task", t.ID))
		}
		tr.task = nil
	}
	for _, a := range acts {
		switch a := a.(type) {
		case engine.ActPublish:
			closeTask(a.Task)
			tr.task, tr.opened = a.Task, start
			if a.Task.Kind == engine.TaskKeyGen || a.Task.Kind == engine.TaskReveal || a.Task.Kind == engine.TaskThreshold {
				if tr.keygen == nil {
					tr.keygen = tel.StartKeyGen(start)
				}
				continue
			}
			if k := tr.keygen; k != nil {
				finished = append(finished, func() { k.Abandon(start) })
				tr.keygen = nil
			}
			if tr.round != nil && tr.round.Number != a.Task.Round {
				// Feature scaling (round 0) ends when round 1 begins.
				r := tr.round
				finished = append(finished, func() { r.Abandon(start) })
				tr.round = nil
			}
			if tr.round == nil {
				tr.round = tel.StartRound(a.Task.Round, a.Task.Attempt, start)
				begun = tr.round
			}
		case engine.ActReply:
			// A reply comes before the actions that close its task, so
			// the open task is the one it answers, if any is.
			task := "closed"
			if tr.task != nil && tr.task.ID == a.TaskID {
				task = tr.task.Kind.String()
			}
			switch {
			case a.Err != nil:
				tel.Update(task, telemetry.OutcomeRejected, refusal(a.Err))
			case a.Duplicate:
				tel.Update(task, telemetry.OutcomeDuplicate, "")
			default:
				tel.Update(task, telemetry.OutcomeAccepted, "")
			}
		case engine.ActRoundDone:
			closeTask(nil)
			rec := a.Record
			o := telemetry.RoundOutcome{Round: rec.Round, Attempt: rec.Attempt, Failed: rec.Failed, Reason: rec.Reason,
				Dropouts: len(rec.Selected) - len(rec.Contributors)}
			for _, dr := range rec.Decryptions {
				// Records without participants are what the coordinator
				// saw in the clear (plain valuation), not decryptions.
				if len(dr.Participants) > 0 {
					o.Decryptions = append(o.Decryptions, dr.Purpose)
				}
			}
			if r := tr.round; r != nil {
				finished = append(finished, func() { r.End(o, done) })
			} else {
				finished = append(finished, func() { tel.StartRound(rec.Round, rec.Attempt, start).End(o, done) })
			}
			tr.round = nil
		case engine.ActJobDone:
			closeTask(nil)
			for _, r := range []*telemetry.Round{tr.round, tr.keygen} {
				if r != nil {
					finished = append(finished, func() { r.Abandon(done) })
				}
			}
			tr.round, tr.keygen = nil, nil
		}
	}
	// The strategy's select is the first thing a new round does, so what
	// ran inside the step from it on belongs to the round it began (an
	// influence gradient, say); what ran before it, or after the step
	// (persist), to the round that was open.
	var selected time.Time
	for _, p := range tr.phases {
		if p.name == telemetry.PhaseSelect {
			selected = p.start
		}
	}
	for _, p := range tr.phases {
		parent := before
		if begun != nil && (parent == nil || !selected.IsZero() && !p.start.Before(selected) && p.start.Before(end)) {
			parent = begun
		}
		tel.Phase(parent, p.name, p.start, p.end)
	}
	tr.phases = tr.phases[:0]
	for _, f := range finished {
		f()
	}
}

// view is what handlers may read without going through the engine.
type view struct {
	task      *engine.Task
	opened    time.Time       // when task was first published (edges' deadline)
	selected  map[string]bool // task.Selected as a set
	submitted map[string]bool
	done      *engine.ActJobDone
	phase     engine.Phase
	round     int
	history   []engine.RoundRecord
	clients   map[string]int64
	scaler    *dataset.Scaler
	committee []string // members of the latest key generation
	epochs    int      // key generations started
	// transcript is the decryption transcript's entries (binary), as
	// persisted: what clients cross-check their receipts' heads with.
	transcript [][]byte
	// endings is how each of the last keptEndings tasks the engine closed
	// ended (engine.Closed), oldest first, for the refusal of a member's
	// download or answer that came after (closedTask).
	endings []engine.ClosedTask
}

// keptEndings is how many tasks' endings the driver remembers: a member
// asks about the task it was working on, one of the last few.
const keptEndings = 32

type call struct {
	ev    engine.Event
	reply chan []engine.Action
}

// NewDriver wraps an engine. tick is the wall-clock length of one engine tick.
func NewDriver(eng *engine.Engine, store engine.Store, tick time.Duration, log *slog.Logger) *Driver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Driver{
		engine: eng, store: store, log: log, tick: tick,
		calls:   make(chan call),
		stopped: make(chan struct{}),
		wake:    map[string]chan struct{}{},
	}
	d.view.clients = map[string]int64{}
	// A resumed job knows its clients from the store: the view must too, or
	// the server would stop lingering before they learn the job ended.
	for id, n := range eng.ClientSamples() {
		d.view.clients[id] = n
	}
	d.view.round = eng.Round()
	d.view.scaler = eng.Scaler()
	d.view.history = slices.Clone(eng.History())
	d.view.transcript = eng.TranscriptEntries()
	if eng.Phase() == engine.PhaseDone {
		d.view.done = &engine.ActJobDone{Reason: "the job had already completed", FinalRound: eng.Round()}
	}
	return d
}

// Run drives the engine until the job is done or ctx is cancelled. It
// returns nil when the job finished, ctx.Err() when cancelled, and the first
// store error otherwise (state that cannot be persisted stops the job
// rather than running on unrecorded).
func (d *Driver) Run(ctx context.Context) error {
	defer close(d.stopped)
	defer func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.releaseStores(nil)
	}()
	if d.engine.Phase() == engine.PhaseDone {
		return nil
	}
	if d.Telemetry == nil {
		d.Telemetry = telemetry.Noop()
	}
	if err := d.Telemetry.Gauge("tally.clients.enrolled", "{client}", "Clients enrolled in the job.", func() int64 {
		d.mu.RLock()
		defer d.mu.RUnlock()
		return int64(len(d.view.clients))
	}); err != nil {
		d.log.Warn("no enrolled-clients gauge", "err", err)
	}
	t := time.NewTicker(d.tick)
	defer t.Stop()
	for {
		var acts []engine.Action
		var reply chan []engine.Action
		var start time.Time
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			start = time.Now()
			acts = d.engine.Step(engine.EvTick{})
		case c := <-d.calls:
			start = time.Now()
			acts, reply = d.engine.Step(c.ev), c.reply
		}
		end := time.Now()
		err := d.perform(acts)
		d.observe(acts, start, end, time.Now())
		if reply != nil {
			reply <- acts
		}
		if err != nil {
			return err
		}
		if d.engine.Phase() == engine.PhaseDone {
			return nil
		}
	}
}

// Step hands an event to the driver goroutine and waits for its actions.
func (d *Driver) Step(ctx context.Context, ev engine.Event) ([]engine.Action, error) {
	c := call{ev: ev, reply: make(chan []engine.Action, 1)}
	select {
	case d.calls <- c:
	case <-d.stopped:
		// Run has returned, so the view is no longer written.
		d.mu.RLock()
		ended := d.view.done != nil
		d.mu.RUnlock()
		if ended {
			return nil, ErrEnded
		}
		return nil, ErrStopped
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case acts := <-c.reply:
		return acts, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (d *Driver) perform(acts []engine.Action) error {
	if len(acts) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range acts {
		d.releaseStores(a)
		switch a := a.(type) {
		case engine.ActPersist:
			start := time.Now()
			err := d.store.Apply(a)
			d.notePhase(telemetry.PhasePersist, start, time.Now())
			if err != nil {
				d.log.Error("store write failed; stopping", "err", err)
				return fmt.Errorf("coordinator: persist: %w", err)
			}
			if a.Client != nil {
				d.view.clients[a.Client.ID] = a.Client.Samples
			}
			if a.Scaler != nil {
				d.view.scaler = a.Scaler
			}
			if t := a.Transcript; t != nil {
				if t.Seq < len(d.view.transcript) {
					d.view.transcript[t.Seq] = t.Entry
				} else {
					d.view.transcript = append(d.view.transcript, t.Entry)
				}
			}
		case engine.ActPublish:
			if d.view.task == nil || d.view.task.ID != a.Task.ID {
				d.view.opened = time.Now()
			}
			d.view.task = a.Task
			d.view.selected = make(map[string]bool, len(a.Task.Selected))
			for _, id := range a.Task.Selected {
				d.view.selected[id] = true
			}
			d.wakeUp(a.Task.Selected)
			if a.Task.Kind == engine.TaskKeyGen {
				d.view.committee = slices.Clone(a.Task.Selected)
				d.view.epochs++
			}
			d.view.submitted = map[string]bool{}
			d.log.Info("task published", "task", a.Task.ID, "kind", a.Task.Kind.String(), "round", a.Task.Round, "clients", len(a.Task.Selected))
		case engine.ActReply:
			if a.Err == nil && d.view.task != nil && a.TaskID == d.view.task.ID {
				d.view.submitted[a.Client] = true
			}
			switch {
			case errors.Is(a.Err, engine.ErrNoTask):
				// Usually a share that arrived after its decryption had t.
				d.log.Debug("submission for a closed task", "client", a.Client, "task", a.TaskID)
			case a.Err != nil:
				d.log.Warn("submission refused", "client", a.Client, "task", a.TaskID, "err", a.Err)
			}
		case engine.ActRoundDone:
			d.view.history = append(d.view.history, a.Record)
			if a.Record.Failed {
				d.log.Warn("round failed", "round", a.Record.Round, "attempt", a.Record.Attempt, "reason", a.Record.Reason)
			} else {
				d.log.Info("round completed", "round", a.Record.Round, "contributors", len(a.Record.Contributors),
					"val_loss", a.Record.ValLoss, "val_accuracy", a.Record.ValAccuracy)
			}
			for _, f := range a.Record.WeightFlags {
				d.log.Warn("inconsistent weight", "round", a.Record.Round, "flag", f)
			}
			if d.OnRound != nil {
				d.OnRound(a.Record)
			}
		case engine.ActJobDone:
			d.view.done = &a
			d.view.task, d.view.selected = nil, nil
			d.wakeUp(nil)
			d.log.Info("job done", "reason", a.Reason, "final_round", a.FinalRound)
		case engine.ActLog:
			d.log.Info(a.Msg, a.Attrs...)
		case engine.ActRelease:
			if d.OnRelease != nil {
				if err := d.OnRelease(a.Release); err != nil {
					d.log.Error("release log write failed; stopping", "err", err)
					return fmt.Errorf("coordinator: release log: %w", err)
				}
			}
		}
	}
	// A task the engine closed without publishing another (a batch that
	// completed with t of its c members, at the end of a round the next
	// of which cannot start yet) is no longer pending for anyone: its
	// downloads and answers are refused as for no open task, so that a
	// member still at work on it learns that it closed and stops
	// (client.taskClosed), and nobody is handed it again.
	if t := d.view.task; t != nil {
		if cur := d.engine.Task(); cur == nil || cur.ID != t.ID {
			d.view.task, d.view.selected = nil, nil
		}
	}
	if c := d.engine.Closed(); c.ID != "" {
		if n := len(d.view.endings); n == 0 || d.view.endings[n-1].ID != c.ID {
			if n == keptEndings {
				d.view.endings = slices.Delete(d.view.endings, 0, 1)
			}
			d.view.endings = append(d.view.endings, c)
		}
	}
	d.view.phase = d.engine.Phase()
	d.view.round = d.engine.Round()
	return nil
}

// wakeUp closes the wake channels of clients, or of every waiting client
// when clients is nil. The caller holds d.mu for writing.
func (d *Driver) wakeUp(clients []string) {
	d.wakeMu.Lock()
	defer d.wakeMu.Unlock()
	if clients == nil {
		for id, ch := range d.wake {
			close(ch)
			delete(d.wake, id)
		}
		return
	}
	for _, id := range clients {
		if ch, ok := d.wake[id]; ok {
			close(ch)
			delete(d.wake, id)
		}
	}
}

// pending returns the task client should work on now, whether the job is
// done, and a channel closed when either may have changed for client. A
// task can only appear for a client when one that selects it is
// published (a submission only ever takes the task away), so the channel
// is not closed for changes that cannot concern it.
func (d *Driver) pending(client string) (*engine.Task, *engine.ActJobDone, <-chan struct{}) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	t := d.view.task
	if t != nil && (!d.view.selected[client] || d.view.submitted[client]) {
		t = nil
	}
	d.wakeMu.Lock()
	defer d.wakeMu.Unlock()
	ch, ok := d.wake[client]
	if !ok {
		ch = make(chan struct{})
		d.wake[client] = ch
	}
	return t, d.view.done, ch
}

// ended says how task id ended for client, when the driver knows and
// client was selected for it: the engine closed it (engine.Ending),
// client's own answer to it was accepted while it stays open for others
// ("answered"), or the job ended ("job_ended"). "" means not known (an
// id never published, one closed too long ago or before a restart) or
// not client's to know: a client learns how only its own tasks ended.
func (d *Driver) ended(client, id string) string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	for i := len(d.view.endings) - 1; i >= 0; i-- {
		if c := d.view.endings[i]; c.ID == id {
			if !slices.Contains(c.Selected, client) {
				return ""
			}
			return string(c.How)
		}
	}
	switch {
	case d.view.task != nil && d.view.task.ID == id && d.view.submitted[client]:
		return EndedAnswered
	case d.view.done != nil:
		return EndedJob
	}
	return ""
}

// The endings of a task for one member that the engine does not name.
const (
	// EndedAnswered: the member's own answer to the task was accepted;
	// the task may still be open for the others.
	EndedAnswered = "answered"
	// EndedJob: the job ended.
	EndedJob = "job_ended"
)

// transcriptAfter returns the transcript's entries after the first n.
func (d *Driver) transcriptAfter(n uint64) [][]byte {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if n >= uint64(len(d.view.transcript)) {
		return nil
	}
	return slices.Clone(d.view.transcript[n:])
}

func (d *Driver) engineScaler() *dataset.Scaler {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.view.scaler
}

// Status is a copy of the operator's view of the job.
type Status struct {
	Phase   engine.Phase
	Round   int
	History []engine.RoundRecord
	Clients map[string]int64
	Done    *engine.ActJobDone
	// Committee is the decryption committee of the latest key generation,
	// and Epochs the number of key generations started.
	Committee []string
	Epochs    int
}

// Status returns the current operator view.
func (d *Driver) Status() Status {
	d.mu.RLock()
	defer d.mu.RUnlock()
	s := Status{Phase: d.view.phase, Round: d.view.round, History: slices.Clone(d.view.history), Clients: map[string]int64{}, Done: d.view.done,
		Committee: slices.Clone(d.view.committee), Epochs: d.view.epochs}
	for k, v := range d.view.clients {
		s.Clients[k] = v
	}
	return s
}
