package dashboard

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/coordinator"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/ledger"
)

// Source gives the dashboard the job's state. Contract: State is safe for
// concurrent use and returns a value the caller may keep; an error is
// shown to the viewer and logged, and the next poll tries again.
type Source interface {
	State(ctx context.Context) (State, error)
}

// Seen records when each client last made an authenticated call to the
// coordinator: the dashboard's "live" column. Its interceptors go into
// coordinator.ServerConfig.GRPCOptions, inside the service's own
// authentication, so a call is counted for the client that signed it.
// Safe for concurrent use.
type Seen struct {
	mu   sync.Mutex
	last map[string]time.Time
	now  func() time.Time
}

// NewSeen returns an empty record that reads the wall clock.
func NewSeen() *Seen { return &Seen{last: map[string]time.Time{}, now: time.Now} }

func (s *Seen) note(ctx context.Context) {
	if id, ok := coordinator.CallerID(ctx); ok {
		s.mu.Lock()
		s.last[id] = s.now()
		s.mu.Unlock()
	}
}

// ServerOptions are the interceptors that feed s.
func (s *Seen) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			s.note(ctx)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			s.note(ss.Context())
			return h(srv, ss)
		}),
	}
}

func (s *Seen) snapshot() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]time.Time, len(s.last))
	for k, v := range s.last {
		out[k] = v
	}
	return out
}

// Live is the Source of a coordinator running in this process.
type Live struct {
	job  engine.Job
	srv  *coordinator.Server
	db   *ledger.DB
	seen *Seen
	// MetricsURL, if set, is linked from the page.
	MetricsURL string

	mu sync.Mutex
	// gens are the key generations seen start, in order.
	gens   []KeyGeneration
	epochs int
	// receipts caches the ledger's receipts for the number of round
	// records they were read at: they change only when a round ends.
	receiptsAt int
	receipts   []ledger.Receipt
}

// NewLive reads srv's state; db is its ledger (nil when the coordinator
// keeps its state in memory) and seen its record of calls (nil: liveness
// unknown).
func NewLive(job engine.Job, srv *coordinator.Server, db *ledger.DB, seen *Seen) *Live {
	return &Live{job: job, srv: srv, db: db, seen: seen, receiptsAt: -1}
}

// Watch samples the committee every interval until ctx ends, so that each
// key generation is listed with its committee even when no page is open
// while it starts (a re-key takes seconds at least; a generation that
// started and was replaced within one interval is counted, unlisted).
func (l *Live) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		l.observe(l.srv.Status())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (l *Live) observe(st coordinator.Status) []KeyGeneration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st.Epochs > l.epochs {
		l.epochs = st.Epochs
		l.gens = append(l.gens, KeyGeneration{Epoch: st.Epochs, Committee: nonNil(slices.Clone(st.Committee)), Round: st.Round})
	}
	return slices.Clone(l.gens)
}

// State implements Source.
func (l *Live) State(ctx context.Context) (State, error) {
	st := l.srv.Status()
	gens := l.observe(st)
	v := view{info: jobInfo(l.job), enrolled: l.job.ClientIDs(), status: st, activity: l.srv.Activity(),
		liveness: time.Duration(l.job.Clients.Liveness), now: time.Now()}
	if l.seen != nil {
		v.lastSeen = l.seen.snapshot()
	}
	if l.db != nil {
		rs, err := l.ledgerReceipts(len(st.History))
		if err != nil {
			return State{}, err
		}
		v.receipts = rs
	}
	s := build(v)
	s.Source, s.MetricsURL = "live", l.MetricsURL
	s.Keys.Generations = gens
	if len(gens) < st.Epochs {
		s.Keys.Note = fmt.Sprintf("%d key generations started, %d listed: the others were replaced before the dashboard saw them", st.Epochs, len(gens))
	}
	return s, nil
}

func (l *Live) ledgerReceipts(records int) ([]ledger.Receipt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if records == l.receiptsAt {
		return l.receipts, nil
	}
	rs, err := l.db.Receipts(ledger.Filter{Job: l.job.ID})
	if err != nil {
		return nil, fmt.Errorf("dashboard: read the ledger's receipts: %w", err)
	}
	if rs == nil {
		rs = []ledger.Receipt{}
	}
	l.receipts, l.receiptsAt = rs, records
	return rs, nil
}

// File is the Source of a coordinator's state file, for a job that ended
// or whose coordinator stopped. It rereads the file when it changes; while
// a coordinator holds the file it serves what it read last.
type File struct {
	path string
	job  *engine.Job

	mu      sync.Mutex
	modTime time.Time
	state   State
	loaded  bool
}

// OpenFile reads the state file at path. job, if not nil, is the job file
// the state belongs to: it adds the job's settings, its enrolled clients
// and the committee's members to what the page shows.
func OpenFile(path string, job *engine.Job) (*File, error) {
	f := &File{path: path, job: job}
	if _, err := f.State(context.Background()); err != nil {
		return nil, err
	}
	return f, nil
}

// State implements Source.
func (f *File) State(ctx context.Context) (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Stat(f.path)
	if err != nil {
		return State{}, fmt.Errorf("dashboard: state file: %w", err)
	}
	if f.loaded && fi.ModTime().Equal(f.modTime) {
		return f.state, nil
	}
	s, err := f.read()
	if errors.Is(err, ledger.ErrLocked) && f.loaded {
		// A coordinator resumed the job: show what was read last.
		return f.state, nil
	}
	if err != nil {
		return State{}, err
	}
	f.state, f.modTime, f.loaded = s, fi.ModTime(), true
	return s, nil
}

func (f *File) read() (State, error) {
	jobID, snap, db, err := coordinator.ReadStateFile(f.path)
	if err != nil {
		return State{}, err
	}
	defer db.Close()
	if f.job != nil && f.job.ID != jobID {
		return State{}, fmt.Errorf("dashboard: %s holds job %q, the job file names %q", f.path, jobID, f.job.ID)
	}
	rs, err := db.Receipts(ledger.Filter{Job: jobID})
	if err != nil {
		return State{}, fmt.Errorf("dashboard: %s: %w", f.path, err)
	}
	if rs == nil {
		rs = []ledger.Receipt{}
	}
	st := coordinator.Status{Phase: engine.PhaseTraining, History: snap.Rounds, Clients: map[string]int64{}}
	for _, c := range snap.Clients {
		st.Clients[c.ID] = c.Samples
	}
	last := 0
	for _, r := range snap.Rounds {
		if !r.Failed {
			last = max(last, r.Round)
		}
	}
	st.Round = last
	v := view{info: JobInfo{ID: jobID}, status: st, receipts: rs, now: time.Now()}
	var gen *KeyGeneration
	if c := snap.Committee; c != nil {
		gen = &KeyGeneration{Epoch: int(c.Epoch), Committee: []string{}}
	}
	if f.job != nil {
		v.info, v.enrolled = jobInfo(*f.job), f.job.ClientIDs()
		if last >= f.job.Rounds {
			st.Phase = engine.PhaseDone
			st.Done = &engine.ActJobDone{Reason: "all rounds completed", FinalRound: last}
		}
		if gen != nil && f.job.Secure() {
			if inst, err := aggregation.UnmarshalKeyGenInstance(f.job.Params, snap.Committee.Instance); err == nil {
				for _, m := range inst.Members() {
					gen.Committee = append(gen.Committee, m.ID)
				}
				st.Committee = gen.Committee
			}
			if id, err := aggregation.PublicKeyInstance(f.job.Params, snap.Committee.PublicKey); err == nil {
				gen.KeyID = keyID(id)
			}
		}
		v.status = st
	}
	s := build(v)
	s.Source = "state file"
	if f.job == nil {
		// Without the job file the number of rounds, and so whether the
		// job finished, is unknown.
		s.Phase = "stopped"
	}
	if gen != nil {
		s.Keys.Epochs = gen.Epoch
		s.Keys.Generations = []KeyGeneration{*gen}
		s.Keys.Note = "a state file keeps the latest key generation only"
	}
	return s, nil
}
