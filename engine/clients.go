package engine

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

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
	if ev.SigningKey != nil {
		c.signing = slices.Clone(ev.SigningKey)
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
// liveness window or is at work on a task it took (clientState.busyUntil),
// and is not known to be silent (see clientState.silent).
// It is O(1): the committee checks its members with it for every
// decryption, which with a thousand clients must not cost a pass over all
// of them (as available does).
func (e *Engine) live(client string) bool {
	c, ok := e.clients[client]
	return ok && c.joined && !c.silent && (e.now-c.lastSeen <= e.job.Ticks(e.job.Clients.Liveness) || e.now <= c.busyUntil)
}

// polled notes a client's poll: it is alive, and if the open task selects
// it and it still owes its answer, the poll hands it the task, so it is at
// work on it until the task's deadline or its answer (see
// clientState.busyUntil). The service also reports a poll when a task is
// handed over at the end of a long poll, so the task is the one it took.
func (e *Engine) polled(c *clientState, id string) {
	c.heard(e.now)
	t := e.task
	if t == nil || !t.isSelected(id) {
		return
	}
	switch t.Kind {
	case TaskTrain, TaskMoments:
		if _, ok := e.got[id]; ok {
			return
		}
		if e.declined.task == t.ID {
			if _, ok := e.declined.clients[id]; ok {
				return
			}
		}
	case TaskDecrypt:
		if _, ok := e.he.shares[id]; ok {
			return
		}
	}
	c.busyUntil = max(c.busyUntil, t.Deadline)
}

// DefaultPollWait is how long the service holds a NextTask request with
// nothing to do; pollGap counts on it.
const DefaultPollWait = 10 * time.Second

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
