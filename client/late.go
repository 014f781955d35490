package client

import (
	"context"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// closedPoll is how often a member making the shares of a batched
// decryption task asks the coordinator whether the task is still open for
// it (watchTask). A batch completes once t of the c members have answered;
// a slower member learns within this long that its answer is not needed,
// and stops making shares nobody will take (in BenchmarkScale, 5 of 16
// members made a 1,000-client batch's shares for nothing every round).
const closedPoll = time.Second

// taskClosed reports whether the coordinator no longer holds task id open
// for this member: a download of probe, an object of the task this member
// downloaded before, is refused as for no open task (FailedPrecondition:
// the task completed, was given up or replaced, or the job ended). Any
// other answer, a transport failure included, is not taken to mean closed.
// It asks the coordinator's existing Download, so that a coordinator that
// predates this check, and an edge, which relays every download, answer it.
func (c *Client) taskClosed(ctx context.Context, id, probe string) bool {
	if probe == "" {
		return false
	}
	_, err := c.fetch(ctx, id, probe)
	return status.Code(err) == codes.FailedPrecondition
}

// taskWatch asks, every closedPoll until stopped, whether a task is still
// open for this member (taskClosed).
type taskWatch struct {
	closed atomic.Bool
	cancel context.CancelFunc
	done   chan struct{}
}

// watchTask starts a taskWatch of task id, asking with probe.
func (c *Client) watchTask(ctx context.Context, id, probe string) *taskWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &taskWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(closedPoll)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if c.taskClosed(ctx, id, probe) {
				w.closed.Store(true)
				return
			}
		}
	}()
	return w
}

// stop ends the watch and waits for its last question.
func (w *taskWatch) stop() {
	w.cancel()
	<-w.done
}

// completedWithout logs that decryption task id of round closed before
// this member answered, having made made of the shares its answer holds:
// nothing is wrong (t other members answered it), so it is said at INFO,
// not as a refusal, and nothing more is made or sent for it.
func (c *Client) completedWithout(id string, round uint64, made, of int) error {
	c.log.Info("decryption task completed without this member; the rest of its answer is neither made nor sent",
		"task", id, "round", round, "shares_made", made, "answer_shares", of)
	return nil
}

// answered is err, what sending this member's answer of shares shares to
// decryption task id of round returned, unless it is a refusal as for no
// open task (FailedPrecondition): the task closed between the member's
// last look and its answer, which is logged (completedWithout), not an
// error.
func (c *Client) answered(err error, id string, round uint64, shares int) error {
	if status.Code(err) == codes.FailedPrecondition {
		return c.completedWithout(id, round, shares, shares)
	}
	return err
}
