package client

import (
	"context"
	"errors"
	"unicode/utf8"

	"github.com/tallyfl/tally/internal/auth"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// encodingDecline and maxDeclineBytes mirror coordinator.EncodingDecline
// and coordinator.MaxDeclineBytes (the client does not import the
// coordinator).
const (
	encodingDecline = "decline"
	maxDeclineBytes = 4096
)

// ErrDeclined: this client told the coordinator it cannot contribute to
// the task (its trainer failed); it waits for the next one.
var ErrDeclined = errors.New("client: declined the task, waiting for the next")

// decline tells the coordinator that this client will not submit for the
// task, with why, so that the round need not wait for its deadline. A
// failure to say so is only logged: the round then closes at its deadline
// as it would for a client that went away.
func (c *Client) decline(ctx context.Context, t *tallyv1.TrainTask, why error) {
	c.declined = t.GetTaskId()
	reason := why.Error()
	if len(reason) > maxDeclineBytes {
		reason = reason[:maxDeclineBytes]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	msg := &tallyv1.SubmitUpdateRequest{
		Header: &tallyv1.SubmitHeader{TaskId: t.GetTaskId(), Round: t.GetRound(), Encoding: encodingDecline},
		Data:   []byte(reason),
	}
	stream, err := c.api.SubmitUpdate(auth.WithFirstMessage(ctx, msg))
	if err == nil {
		err = stream.Send(msg)
		if _, cerr := stream.CloseAndRecv(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		c.log.Warn("could not tell the coordinator that this client cannot contribute", "task", t.GetTaskId(), "err", err)
		return
	}
	c.log.Error("cannot contribute to this task; the coordinator was told", "task", t.GetTaskId(), "round", t.GetRound(), "err", why)
}
