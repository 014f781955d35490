package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/tallyfl/tally/dataset"
)

// ErrStopped is returned for events that arrive after the driver stopped.
var ErrStopped = errors.New("coordinator: job is no longer running")

// Driver performs the engine's actions: it owns the engine, feeds it ticks
// from a clock and events from the gRPC service, writes every ActPersist to
// the Store before anything later happens, and publishes a read-only view
// that the service's handlers long-poll.
type Driver struct {
	engine *Engine
	store  Store
	log    *slog.Logger
	tick   time.Duration

	calls   chan call
	stopped chan struct{} // closed when Run returns

	mu      sync.RWMutex
	view    view
	changed chan struct{} // closed and replaced whenever view changes
	// OnRound, if set, is called from the driver goroutine after each round
	// attempt (progress displays, reports).
	OnRound func(RoundRecord)
}

// view is what handlers may read without going through the engine.
type view struct {
	task      *Task
	submitted map[string]bool
	done      *ActJobDone
	phase     Phase
	round     int
	history   []RoundRecord
	clients   map[string]int64
	scaler    *dataset.Scaler
	committee []string // members of the latest key generation
	epochs    int      // key generations started
}

type call struct {
	ev    Event
	reply chan []Action
}

// NewDriver wraps an engine. tick is the wall-clock length of one engine tick.
func NewDriver(engine *Engine, store Store, tick time.Duration, log *slog.Logger) *Driver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Driver{
		engine: engine, store: store, log: log, tick: tick,
		calls:   make(chan call),
		stopped: make(chan struct{}),
		changed: make(chan struct{}),
	}
	d.view.clients = map[string]int64{}
	// A resumed job knows its clients from the store: the view must too, or
	// the server would stop lingering before they learn the job ended.
	for id, c := range engine.clients {
		d.view.clients[id] = c.samples
	}
	d.view.round = engine.Round()
	d.view.scaler = engine.Scaler()
	d.view.history = slices.Clone(engine.History())
	if engine.Phase() == PhaseDone {
		d.view.done = &ActJobDone{Reason: "the job had already completed", FinalRound: engine.Round()}
	}
	return d
}

// Run drives the engine until the job is done or ctx is cancelled. It
// returns nil when the job finished, ctx.Err() when cancelled, and the first
// store error otherwise (state that cannot be persisted stops the job
// rather than running on unrecorded).
func (d *Driver) Run(ctx context.Context) error {
	defer close(d.stopped)
	if d.engine.Phase() == PhaseDone {
		return nil
	}
	t := time.NewTicker(d.tick)
	defer t.Stop()
	for {
		var acts []Action
		var reply chan []Action
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			acts = d.engine.Step(EvTick{})
		case c := <-d.calls:
			acts, reply = d.engine.Step(c.ev), c.reply
		}
		err := d.perform(acts)
		if reply != nil {
			reply <- acts
		}
		if err != nil {
			return err
		}
		if d.engine.Phase() == PhaseDone {
			return nil
		}
	}
}

// Step hands an event to the driver goroutine and waits for its actions.
func (d *Driver) Step(ctx context.Context, ev Event) ([]Action, error) {
	c := call{ev: ev, reply: make(chan []Action, 1)}
	select {
	case d.calls <- c:
	case <-d.stopped:
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

func (d *Driver) perform(acts []Action) error {
	if len(acts) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range acts {
		switch a := a.(type) {
		case ActPersist:
			if err := d.store.Apply(a); err != nil {
				d.log.Error("store write failed; stopping", "err", err)
				return fmt.Errorf("coordinator: persist: %w", err)
			}
			if a.Client != nil {
				d.view.clients[a.Client.ID] = a.Client.Samples
			}
			if a.Scaler != nil {
				d.view.scaler = a.Scaler
			}
		case ActPublish:
			d.view.task = a.Task
			if a.Task.Kind == TaskKeyGen {
				d.view.committee = slices.Clone(a.Task.Selected)
				d.view.epochs++
			}
			d.view.submitted = map[string]bool{}
			d.log.Info("task published", "task", a.Task.ID, "kind", a.Task.Kind.String(), "round", a.Task.Round, "clients", len(a.Task.Selected))
		case ActReply:
			if a.Err == nil && d.view.task != nil && a.TaskID == d.view.task.ID {
				d.view.submitted[a.Client] = true
			}
			switch {
			case errors.Is(a.Err, ErrNoTask):
				// Usually a share that arrived after its decryption had t.
				d.log.Debug("submission for a closed task", "client", a.Client, "task", a.TaskID)
			case a.Err != nil:
				d.log.Warn("submission refused", "client", a.Client, "task", a.TaskID, "err", a.Err)
			}
		case ActRoundDone:
			d.view.history = append(d.view.history, a.Record)
			if a.Record.Failed {
				d.log.Warn("round failed", "round", a.Record.Round, "attempt", a.Record.Attempt, "reason", a.Record.Reason)
			} else {
				d.log.Info("round completed", "round", a.Record.Round, "contributors", len(a.Record.Contributors),
					"val_loss", a.Record.ValLoss, "val_accuracy", a.Record.ValAccuracy)
			}
			if d.OnRound != nil {
				d.OnRound(a.Record)
			}
		case ActJobDone:
			d.view.done = &a
			d.view.task = nil
			d.log.Info("job done", "reason", a.Reason, "final_round", a.FinalRound)
		case ActLog:
			d.log.Info(a.Msg, a.Attrs...)
		}
	}
	d.view.phase = d.engine.Phase()
	d.view.round = d.engine.Round()
	close(d.changed)
	d.changed = make(chan struct{})
	return nil
}

// pending returns the task client should work on now, whether the job is
// done, and a channel closed at the next change of the view.
func (d *Driver) pending(client string) (*Task, *ActJobDone, <-chan struct{}) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	t := d.view.task
	if t != nil && (!slices.Contains(t.Selected, client) || d.view.submitted[client]) {
		t = nil
	}
	return t, d.view.done, d.changed
}

func (d *Driver) engineScaler() *dataset.Scaler {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.view.scaler
}

// Status is a copy of the operator's view of the job.
type Status struct {
	Phase   Phase
	Round   int
	History []RoundRecord
	Clients map[string]int64
	Done    *ActJobDone
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
