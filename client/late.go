package client

import (
	"context"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/internal/auth"
)

// closedPoll is how often a member making the shares of a batched
// decryption task asks the coordinator whether the task is still open for
// it (watchTask). A batch completes once t of the c members have answered;
// a slower member learns within this long that its answer is not needed,
// and stops making shares nobody will take (in BenchmarkScale, 5 of 16
// members made a 1,000-client batch's shares for nothing every round).
const closedPoll = time.Second

// refusal is what a refused download or answer says of its task.
type refusal int

const (
	notRefused refusal = iota // another error, or none
	// refusedClosed: the coordinator names auth.ReasonTaskClosed, the
	// task is not open for this member.
	refusedClosed
	// refusedNoObject: it names auth.ReasonNoObject, the task is open and
	// has no such object.
	refusedNoObject
	// refusedUnnamed: FailedPrecondition naming no reason, as a
	// coordinator that predates reasons answers both of the above.
	refusedUnnamed
)

// refusalOf reads err, a refused download or answer, and for a closed
// task how the coordinator says it ended (auth.MetaEnded; "" when it does
// not say). The code is FailedPrecondition in every case; the reason,
// where there is one, says which.
func refusalOf(err error) (refusal, string) {
	if status.Code(err) != codes.FailedPrecondition {
		return notRefused, ""
	}
	switch reason, meta := auth.Reason(err); reason {
	case auth.ReasonTaskClosed:
		return refusedClosed, meta[auth.MetaEnded]
	case auth.ReasonNoObject:
		return refusedNoObject, ""
	}
	return refusedUnnamed, ""
}

// closedRefusal reports whether err is a refusal as for a closed task:
// one naming auth.ReasonTaskClosed, or FailedPrecondition naming no
// reason (an older coordinator's, which may also mean a missing object).
func closedRefusal(err error) bool {
	r, _ := refusalOf(err)
	return r == refusedClosed || r == refusedUnnamed
}

// taskClosed reports whether the coordinator no longer holds task id open
// for this member, and how it says the task ended: a download of probe,
// an object of the task this member downloaded before, is refused as for
// a closed task (auth.ReasonTaskClosed; from a coordinator that names no
// reason, FailedPrecondition alone: the task completed, was given up or
// replaced, or the job ended). NO_OBJECT says the task is open; any other
// answer, a transport failure included, is not taken to mean closed. It
// asks the coordinator's existing Download, so that a coordinator that
// predates this check, and an edge, which relays every download, answer it.
func (c *Client) taskClosed(ctx context.Context, id, probe string) (bool, string) {
	if probe == "" {
		return false, ""
	}
	_, err := c.fetch(ctx, id, probe)
	_, how := refusalOf(err)
	return closedRefusal(err), how
}

// closedBy reports whether err, a refused download of task id, says that
// the task closed, and how it ended: from the reason it names, or, when
// it names none (an older coordinator, whose refusal is the same for an
// object the open task lacks), from a download of probe (taskClosed).
func (c *Client) closedBy(ctx context.Context, id, probe string, err error) (bool, string) {
	switch r, how := refusalOf(err); r {
	case refusedClosed:
		return true, how
	case refusedUnnamed:
		return c.taskClosed(ctx, id, probe)
	}
	return false, ""
}

// taskWatch asks, every closedPoll until stopped, whether a task is still
// open for this member (taskClosed).
type taskWatch struct {
	closed atomic.Bool
	how    string // how the task ended, once closed is set
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
			if closed, how := c.taskClosed(ctx, id, probe); closed {
				w.how = how
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

// closedWithout logs that decryption task id of round closed before this
// member answered, ended as how says (the coordinator's auth.MetaEnded;
// "" when it did not say), having made made of the shares its answer
// holds: nothing is wrong (t other members answered it, or it was given
// up or timed out and what it asked is the coordinator's to ask again),
// so it is said at INFO, not as a refusal, and nothing more is made or
// sent for it.
func (c *Client) closedWithout(id string, round uint64, how string, made, of int) error {
	msg := "decryption task closed without this member (how, the coordinator did not say)"
	switch how {
	case "completed":
		msg = "decryption task completed without this member"
	case "given_up":
		msg = "decryption task given up without this member"
	case "timed_out":
		msg = "decryption task timed out without this member"
	case "answered":
		msg = "decryption task already answered by this member"
	case "job_ended":
		msg = "decryption task ended with the job without this member"
	default:
		how = "unknown"
	}
	c.log.Info(msg+"; the rest of its answer is neither made nor sent",
		"task", id, "round", round, "ended", how, "shares_made", made, "answer_shares", of)
	return nil
}

// answered is err, what sending this member's answer of shares shares to
// decryption task id of round returned, unless it is a refusal as for a
// closed task (auth.ReasonTaskClosed, or FailedPrecondition naming no
// reason): the task closed between the member's last look and its answer,
// which is logged (closedWithout), not an error.
func (c *Client) answered(err error, id string, round uint64, shares int) error {
	if closedRefusal(err) {
		_, how := refusalOf(err)
		return c.closedWithout(id, round, how, shares, shares)
	}
	return err
}
