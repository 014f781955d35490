package coordinator

import (
	"fmt"
	"unicode/utf8"

	"github.com/tallyfl/tally/engine"
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

// submitDecline turns a decline upload into the engine's event.
func (s *Service) submitDecline(stream tallyv1.CoordinatorService_SubmitUpdateServer, id string, h *tallyv1.SubmitHeader, reason []byte) error {
	if len(reason) > MaxDeclineBytes || !utf8.Valid(reason) {
		return toStatus(fmt.Errorf("%w: a decline's reason must be UTF-8 of at most %d bytes", ErrBadEncoding, MaxDeclineBytes))
	}
	acts, err := s.driver.Step(stream.Context(), engine.EvDecline{Client: id, TaskID: h.GetTaskId(), Reason: string(reason)})
	if err != nil {
		return toStatus(err)
	}
	return replyFor(acts, id, func(r engine.ActReply) error {
		return stream.SendAndClose(&tallyv1.SubmitUpdateResponse{Accepted: true, Duplicate: r.Duplicate})
	})
}
