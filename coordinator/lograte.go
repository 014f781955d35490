package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Refusal logs are rate-limited: each refusal is one cheap call for
// whoever sends it, and an unlimited WARN line per refusal let one
// stranger write 33 MB of log in 40 s (issue 11, defect 7). The counters
// (tally_auth_refused_total, tally_updates_total) still count every one.
const (
	// DefaultLogBurst is how many lines of one kind are written per
	// DefaultLogInterval; the rest are counted and summarised.
	DefaultLogBurst = 20
	// DefaultLogInterval is the window of DefaultLogBurst.
	DefaultLogInterval = 10 * time.Second
)

// logLimiter writes at most burst lines of each kind (a log message) per
// interval; the lines held back in an interval are summarised in one line
// "<msg>: suppressed K similar lines", written when the interval ends.
// Safe for concurrent use.
type logLimiter struct {
	log   *slog.Logger
	burst int
	every time.Duration

	mu    sync.Mutex
	kinds map[string]*logWindow
}

// logWindow is one kind's current interval.
type logWindow struct {
	start  time.Time
	n      int // lines written in this interval
	held   int // lines held back in this interval
	level  slog.Level
	closer *time.Timer
}

func newLogLimiter(log *slog.Logger, burst int, every time.Duration) *logLimiter {
	return &logLimiter{log: log, burst: max(1, burst), every: every, kinds: map[string]*logWindow{}}
}

// Log writes the line msg at level unless burst lines of msg were written
// in the current interval; then it counts it for the interval's summary.
func (l *logLimiter) Log(level slog.Level, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	w := l.kinds[msg]
	if w == nil || now.Sub(w.start) >= l.every {
		if w != nil {
			l.summarise(msg, w)
		}
		w = &logWindow{start: now}
		l.kinds[msg] = w
	}
	if w.n < l.burst {
		w.n++
		l.mu.Unlock()
		l.log.Log(context.Background(), level, msg, args...)
		return
	}
	w.held++
	w.level = max(w.level, level)
	if w.closer == nil {
		// The summary is written when the interval ends even if no
		// further line of the kind comes to close it.
		w.closer = time.AfterFunc(w.start.Add(l.every).Sub(now), func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.kinds[msg] == w {
				l.summarise(msg, w)
				delete(l.kinds, msg)
			}
		})
	}
	l.mu.Unlock()
}

// summarise writes w's summary line, once, if it held any back. Called
// with l.mu held.
func (l *logLimiter) summarise(msg string, w *logWindow) {
	if w.closer != nil {
		w.closer.Stop()
	}
	if w.held == 0 {
		return
	}
	l.log.Log(context.Background(), w.level, fmt.Sprintf("%s: suppressed %d similar lines", msg, w.held),
		"suppressed", w.held, "interval", l.every.String(), "since", w.start.UTC().Format(time.RFC3339))
	w.held = 0
}
