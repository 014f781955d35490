package valuation

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// Evaluator is the memoising evaluation layer between estimators and a Game.
// It remembers every utility it has computed, runs utility calls on a bounded
// worker pool, computes a coalition at most once even when several goroutines
// ask for it at the same time (later askers wait for the first), and counts the
// utility calls it makes.
//
// An Evaluator is itself a Game whose Utility is memoised, and it is safe for
// concurrent use. Share one Evaluator between estimators run on the same round
// so that they reuse each other's coalitions; Result.Evaluations still counts,
// per estimator, the distinct coalitions it used.
//
// Failed utility calls are not remembered: the error goes to the caller and to
// everyone waiting on the same coalition, and a later request tries again.
// That keeps a cancelled context from poisoning the cache.
type Evaluator struct {
	game    Game
	n       int
	grand   Coalition
	workers int
	sem     chan struct{} // one token per utility call in flight

	mu       sync.Mutex
	done     map[Coalition]float64
	inflight map[Coalition]*pending

	calls atomic.Int64
}

// pending is a utility call in flight; done is closed once v and err are set.
type pending struct {
	done chan struct{}
	v    float64
	err  error
}

// NewEvaluator wraps g. workers bounds the number of utility calls in flight
// at once; 0 means runtime.GOMAXPROCS(0). If g is already an *Evaluator it is
// wrapped again (with its own cache); use AsEvaluator to reuse one.
func NewEvaluator(g Game, workers int) (*Evaluator, error) {
	n := g.Players()
	if err := checkPlayers(n); err != nil {
		return nil, err
	}
	if workers < 0 {
		return nil, fmt.Errorf("%w: workers %d is negative", ErrConfig, workers)
	}
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	return &Evaluator{
		game:     g,
		n:        n,
		grand:    Grand(n),
		workers:  workers,
		sem:      make(chan struct{}, workers),
		done:     make(map[Coalition]float64),
		inflight: make(map[Coalition]*pending),
	}, nil
}

// AsEvaluator returns g itself if it is an *Evaluator, so that its cache is
// shared, and otherwise a new Evaluator over g with the given workers.
func AsEvaluator(g Game, workers int) (*Evaluator, error) {
	if ev, ok := g.(*Evaluator); ok {
		return ev, nil
	}
	return NewEvaluator(g, workers)
}

// Players returns the wrapped game's player count.
func (e *Evaluator) Players() int { return e.n }

// Workers returns the size of the worker pool.
func (e *Evaluator) Workers() int { return e.workers }

// Utility returns the memoised utility of s.
func (e *Evaluator) Utility(ctx context.Context, s Coalition) (float64, error) {
	v, _, err := e.get(ctx, s)
	return v, err
}

// Batch evaluates every coalition of ss in parallel on the worker pool and
// writes U(ss[k]) into out[k]. Duplicates in ss are computed once. On error
// the remaining work is cancelled and the first error is returned; out is
// then partially written.
func (e *Evaluator) Batch(ctx context.Context, ss []Coalition, out []float64) error {
	if len(out) != len(ss) {
		return fmt.Errorf("%w: %d coalitions, %d outputs", ErrLength, len(ss), len(out))
	}
	return e.parallel(ctx, len(ss), func(ctx context.Context, k int) error {
		v, _, err := e.get(ctx, ss[k])
		out[k] = v
		return err
	})
}

// Evaluations is the number of calls made to the wrapped game's Utility,
// failed ones included. Memoisation makes it the number of distinct
// coalitions computed, plus retries after failures.
func (e *Evaluator) Evaluations() int { return int(e.calls.Load()) }

// Cached is the number of coalitions whose utility is remembered.
func (e *Evaluator) Cached() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.done)
}

// get returns U(s) and whether this call computed it (rather than finding it
// cached or waiting for another caller's computation).
func (e *Evaluator) get(ctx context.Context, s Coalition) (float64, bool, error) {
	if s&^e.grand != 0 {
		return 0, false, fmt.Errorf("%w: %v in a game of %d players", ErrCoalition, s, e.n)
	}
	e.mu.Lock()
	if v, ok := e.done[s]; ok {
		e.mu.Unlock()
		return v, false, nil
	}
	if p, ok := e.inflight[s]; ok {
		e.mu.Unlock()
		select {
		case <-p.done:
			return p.v, false, p.err
		case <-ctx.Done():
			return 0, false, ctx.Err()
		}
	}
	p := &pending{done: make(chan struct{})}
	e.inflight[s] = p
	e.mu.Unlock()

	p.v, p.err = e.call(ctx, s)

	e.mu.Lock()
	delete(e.inflight, s)
	if p.err == nil {
		e.done[s] = p.v
	}
	e.mu.Unlock()
	close(p.done)
	return p.v, p.err == nil, p.err
}

// call runs the game's Utility under a worker token. A panic in the game is
// turned into an error so that it cannot leave waiters blocked forever.
func (e *Evaluator) call(ctx context.Context, s Coalition) (v float64, err error) {
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-e.sem }()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	e.calls.Add(1)
	defer func() {
		if r := recover(); r != nil {
			v, err = 0, fmt.Errorf("%w: coalition %v: %v", ErrUtilityPanic, s, r)
		}
	}()
	v, err = e.game.Utility(ctx, s)
	if err != nil {
		return 0, fmt.Errorf("valuation: utility of %v: %w", s, err)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%w: coalition %v gave %v", ErrNotFinite, s, v)
	}
	return v, nil
}

// parallel runs f(ctx, 0) … f(ctx, tasks−1) on at most e.workers goroutines.
// The first error cancels the rest and is returned. ctx is checked before
// each task and once more at the end, on one worker as on many: a task that
// only hits the cache never looks at ctx, and a sampling loop of cached
// batches must still end when ctx does.
func (e *Evaluator) parallel(ctx context.Context, tasks int, f func(ctx context.Context, k int) error) error {
	if tasks == 0 {
		return ctx.Err()
	}
	w := min(e.workers, tasks)
	if w == 1 {
		for k := range tasks {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := f(ctx, k); err != nil {
				return err
			}
		}
		return ctx.Err()
	}
	inner, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for range w {
		wg.Go(func() {
			for inner.Err() == nil {
				k := int(next.Add(1) - 1)
				if k >= tasks {
					return
				}
				if err := f(inner, k); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// tracker is one estimator run's view of an Evaluator: it records the
// distinct coalitions the run used and how many of them it had to compute.
type tracker struct {
	ev    *Evaluator
	mu    sync.Mutex
	seen  map[Coalition]struct{}
	fresh atomic.Int64
}

func newTracker(ev *Evaluator) *tracker {
	return &tracker{ev: ev, seen: make(map[Coalition]struct{})}
}

func (t *tracker) get(ctx context.Context, s Coalition) (float64, error) {
	v, computed, err := t.ev.get(ctx, s)
	if err != nil {
		return 0, err
	}
	if computed {
		t.fresh.Add(1)
	}
	t.mu.Lock()
	t.seen[s] = struct{}{}
	t.mu.Unlock()
	return v, nil
}

func (t *tracker) distinct() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.seen)
}
