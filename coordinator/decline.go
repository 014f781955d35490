package coordinator

import (
	"fmt"
	"unicode/utf8"

	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// EncodingDecline is the SubmitHeader encoding of a client that cannot
// contribute to its task (its trainer failed even after a restart): the
// payload is the reason, UTF-8, at most MaxDeclineBytes. The round then
// stops waiting for that client: it closes as soon as every other
// selected client has submitted or declined, instead of at its deadline.
const EncodingDecline = "decline"

// MaxDeclineBytes bounds a decline's reason: enough for an error message
// that names the task and quotes a trainer's last stderr lines.
const MaxDeclineBytes = 4096

// EvDecline: a selected client says it will not submit for TaskID.
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
	c.lastSeen = e.now
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
		out = append(out, e.close("every other selected client submitted")...)
	}
	return out
}

// submitDecline turns a decline upload into the engine's event.
func (s *Service) submitDecline(stream tallyv1.CoordinatorService_SubmitUpdateServer, id string, h *tallyv1.SubmitHeader, reason []byte) error {
	if len(reason) > MaxDeclineBytes || !utf8.Valid(reason) {
		return toStatus(fmt.Errorf("%w: a decline's reason must be UTF-8 of at most %d bytes", ErrBadEncoding, MaxDeclineBytes))
	}
	acts, err := s.driver.Step(stream.Context(), EvDecline{Client: id, TaskID: h.GetTaskId(), Reason: string(reason)})
	if err != nil {
		return toStatus(err)
	}
	return replyFor(acts, id, func(r ActReply) error {
		return stream.SendAndClose(&tallyv1.SubmitUpdateResponse{Accepted: true, Duplicate: r.Duplicate})
	})
}
