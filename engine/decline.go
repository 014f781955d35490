package engine

import "fmt"

// EvDecline: a selected client says it will not submit for TaskID (its
// trainer failed even after a restart). The round then stops waiting for
// it: the task closes as soon as every other selected client has
// submitted or declined, not at its deadline. This file is part of the
// round engine: pure, like engine.go.
type EvDecline struct {
	Client string
	TaskID string
	Reason string
}

func (EvDecline) event() {}

// declines are the clients that declined the open task.
type declines struct {
	task    string
	clients map[string]string
}

// declinedCount is how many selected clients declined the open task.
func (e *Engine) declinedCount() int {
	if e.task == nil || e.declined.task != e.task.ID {
		return 0
	}
	return len(e.declined.clients)
}

// decline records that a selected client of the open train or moments
// task will not submit, and closes the task if nobody else is awaited. A
// client that already submitted cannot take it back.
func (e *Engine) decline(ev EvDecline) []Action {
	reply := func(dup bool, err error) []Action {
		return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Duplicate: dup, Err: err}}
	}
	c, ok := e.clients[ev.Client]
	if !ok {
		return reply(false, ErrUnknownClient)
	}
	c.answered(e.now)
	t := e.task
	switch {
	case t == nil || t.ID != ev.TaskID:
		return reply(false, fmt.Errorf("%w: %q", ErrNoTask, ev.TaskID))
	case !t.isSelected(ev.Client):
		return reply(false, ErrNotSelected)
	case t.Kind != TaskTrain && t.Kind != TaskMoments:
		return reply(false, fmt.Errorf("%w: task %s takes protocol shares, not updates", ErrNoTask, t.ID))
	}
	if _, ok := e.got[ev.Client]; ok {
		return reply(false, ErrConflict)
	}
	if e.declined.task != t.ID {
		e.declined = declines{task: t.ID, clients: map[string]string{}}
	}
	if _, ok := e.declined.clients[ev.Client]; ok {
		return reply(true, nil)
	}
	e.declined.clients[ev.Client] = ev.Reason
	out := []Action{ActLog{Msg: "client cannot contribute to its task", Attrs: []any{"client", ev.Client, "task", t.ID, "round", t.Round, "reason", ev.Reason}}}
	out = append(out, reply(false, nil)...)
	if len(e.got)+e.declinedCount() == len(t.Selected) {
		out = append(out, e.close(EndedCompleted, "every other selected client submitted")...)
	}
	return out
}
