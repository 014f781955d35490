package valuation

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// countingGame counts Utility calls per coalition and tracks the largest
// number of calls in flight at once.
type countingGame struct {
	n        int
	calls    sync.Map // Coalition → *atomic.Int64
	total    atomic.Int64
	inFlight atomic.Int64
	maxSeen  atomic.Int64
	gate     chan struct{} // if non-nil, every call waits for it to close
}

func (g *countingGame) Players() int { return g.n }

func (g *countingGame) Utility(ctx context.Context, s Coalition) (float64, error) {
	cur := g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	for {
		m := g.maxSeen.Load()
		if cur <= m || g.maxSeen.CompareAndSwap(m, cur) {
			break
		}
	}
	c, _ := g.calls.LoadOrStore(s, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
	g.total.Add(1)
	if g.gate != nil {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	// Some arithmetic so that calls overlap on a multi-core machine.
	x := float64(s)
	for range 2000 {
		x = x*0.999 + 1
	}
	return float64(s.Size()) + 0*x, nil
}

func TestEvaluatorMemoises(t *testing.T) {
	g := &countingGame{n: 5}
	ev, err := NewEvaluator(g, 4)
	if err != nil {
		t.Fatal(err)
	}
	ss := []Coalition{Of(0), Of(0), Of(1, 2), Grand(5), Of(1, 2), 0, Of(0)}
	out := make([]float64, len(ss))
	if err := ev.Batch(t.Context(), ss, out); err != nil {
		t.Fatal(err)
	}
	for k, s := range ss {
		if out[k] != float64(s.Size()) {
			t.Errorf("out[%d] = %v, want %d", k, out[k], s.Size())
		}
	}
	if ev.Evaluations() != 4 || g.total.Load() != 4 || ev.Cached() != 4 {
		t.Errorf("evaluations %d, game calls %d, cached %d; want 4 distinct", ev.Evaluations(), g.total.Load(), ev.Cached())
	}
	if v, err := ev.Utility(t.Context(), Of(1, 2)); err != nil || v != 2 || ev.Evaluations() != 4 {
		t.Errorf("cached Utility = %v, %v after %d evaluations", v, err, ev.Evaluations())
	}
}

// TestEvaluatorConcurrent runs many goroutines asking for overlapping
// coalitions; under -race it also checks the locking. Every coalition must
// be computed exactly once and the pool bound must hold.
func TestEvaluatorConcurrent(t *testing.T) {
	const n, workers = 8, 3
	g := &countingGame{n: n}
	ev, err := NewEvaluator(g, workers)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for r := range 16 {
		wg.Go(func() {
			ss := make([]Coalition, 1<<n)
			for k := range ss {
				ss[k] = Coalition((k*(2*r+1) + r) % (1 << n)) // a different order per goroutine
			}
			out := make([]float64, len(ss))
			if err := ev.Batch(context.Background(), ss, out); err != nil {
				t.Error(err)
				return
			}
			for k, s := range ss {
				if out[k] != float64(s.Size()) {
					t.Errorf("U(%v) = %v", s, out[k])
				}
			}
		})
	}
	wg.Wait()
	if ev.Evaluations() != 1<<n || ev.Cached() != 1<<n {
		t.Errorf("evaluations %d, cached %d; want %d", ev.Evaluations(), ev.Cached(), 1<<n)
	}
	g.calls.Range(func(k, v any) bool {
		if c := v.(*atomic.Int64).Load(); c != 1 {
			t.Errorf("coalition %v computed %d times", k, c)
		}
		return true
	})
	if m := g.maxSeen.Load(); m > workers {
		t.Errorf("%d utility calls in flight, pool bound %d", m, workers)
	}
}

// TestEvaluatorDeduplicatesInFlight: while the first request for a coalition
// is blocked inside the game, later requests wait for it instead of calling
// the game again.
func TestEvaluatorDeduplicatesInFlight(t *testing.T) {
	g := &countingGame{n: 3, gate: make(chan struct{})}
	ev, err := NewEvaluator(g, 4)
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan float64, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			v, err := ev.Utility(context.Background(), Of(0, 2))
			if err != nil {
				t.Error(err)
			}
			results <- v
		})
	}
	// Wait (without sleeping) until one call is inside the game, then
	// release it; the other seven either wait on it or hit the cache.
	for g.total.Load() == 0 {
		runtimeGosched()
	}
	close(g.gate)
	wg.Wait()
	close(results)
	for v := range results {
		if v != 2 {
			t.Errorf("got %v, want 2", v)
		}
	}
	if c := g.total.Load(); c != 1 {
		t.Errorf("game called %d times for one coalition", c)
	}
}

func TestEvaluatorErrors(t *testing.T) {
	t.Run("failure-not-cached", func(t *testing.T) {
		fail := true
		g := GameFunc{N: 2, F: func(s Coalition) float64 {
			if fail {
				fail = false
				panic("flaky")
			}
			return 7
		}}
		ev, _ := NewEvaluator(g, 1)
		if _, err := ev.Utility(t.Context(), Of(1)); !errors.Is(err, ErrUtilityPanic) {
			t.Fatalf("first call: err = %v, want ErrUtilityPanic", err)
		}
		if v, err := ev.Utility(t.Context(), Of(1)); err != nil || v != 7 {
			t.Fatalf("retry: %v, %v", v, err)
		}
		if ev.Evaluations() != 2 {
			t.Errorf("evaluations %d, want 2 (failure and retry)", ev.Evaluations())
		}
	})
	t.Run("not-finite", func(t *testing.T) {
		ev, _ := NewEvaluator(GameFunc{N: 2, F: func(Coalition) float64 { return zero / zero }}, 1)
		if _, err := ev.Utility(t.Context(), 0); !errors.Is(err, ErrNotFinite) {
			t.Errorf("err = %v, want ErrNotFinite", err)
		}
	})
	t.Run("outside-game", func(t *testing.T) {
		ev, _ := NewEvaluator(additiveGame([]float64{1, 2}), 1)
		if _, err := ev.Utility(t.Context(), Of(2)); !errors.Is(err, ErrCoalition) {
			t.Errorf("err = %v, want ErrCoalition", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ev, _ := NewEvaluator(additiveGame([]float64{1, 2, 3}), 2)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		out := make([]float64, 8)
		if err := ev.Batch(ctx, []Coalition{0, 1, 2, 3, 4, 5, 6, 7}, out); !errors.Is(err, context.Canceled) {
			t.Errorf("Batch: err = %v, want context.Canceled", err)
		}
		est, _ := NewEstimator(MethodTMC, Config{})
		if _, err := est.Estimate(ctx, ev); !errors.Is(err, context.Canceled) {
			t.Errorf("Estimate: err = %v, want context.Canceled", err)
		}
	})
	// A cancelled context must stop a run that only hits the cache: those
	// lookups never look at ctx, so a spinning sampling loop on one worker
	// once ignored cancellation.
	for _, workers := range []int{1, 2} {
		t.Run("cancelled-cached/workers="+strconv.Itoa(workers), func(t *testing.T) {
			ev, _ := NewEvaluator(additiveGame([]float64{1, 2, 3}), workers)
			if err := ev.Batch(t.Context(), []Coalition{0, 1, 2, 3, 4, 5, 6, 7}, make([]float64, 8)); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			for _, m := range Methods() {
				est, _ := NewEstimator(m, Config{})
				if _, err := est.Estimate(ctx, ev); !errors.Is(err, context.Canceled) {
					t.Errorf("%s: err = %v, want context.Canceled", m, err)
				}
			}
		})
	}
	t.Run("players", func(t *testing.T) {
		for _, n := range []int{0, MaxPlayers + 1} {
			if _, err := NewEvaluator(GameFunc{N: n}, 1); !errors.Is(err, ErrPlayers) {
				t.Errorf("n=%d: err = %v, want ErrPlayers", n, err)
			}
		}
	})
}

var zero = 0.0

func TestCoalition(t *testing.T) {
	s := Of(0, 3, 5)
	if s.Size() != 3 || !s.Has(3) || s.Has(1) || s.With(1) != Of(0, 1, 3, 5) || s.Without(3) != Of(0, 5) {
		t.Errorf("set operations on %v wrong", s)
	}
	if got := s.String(); got != "{0,3,5}" {
		t.Errorf("String = %q", got)
	}
	if Grand(63) != 1<<63-1 || Grand(0) != 0 {
		t.Errorf("Grand wrong")
	}
}
