package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// refusingAPI answers every Download with err.
type refusingAPI struct {
	tallyv1.CoordinatorServiceClient
	err error
}

func (a refusingAPI) Download(context.Context, *tallyv1.DownloadRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[tallyv1.DownloadResponse], error) {
	return nil, a.err
}

// refused is a FailedPrecondition refusal naming reason, with meta, in
// the wire form a coordinator sends (a google.rpc.ErrorInfo of domain
// tally.v1), or naming none when reason is "", as an older coordinator
// refuses.
func refused(t *testing.T, reason string, meta map[string]string) error {
	t.Helper()
	st := status.New(codes.FailedPrecondition, "coordinator: no open task with that id: test")
	if reason == "" {
		return st.Err()
	}
	st, err := st.WithDetails(&errdetails.ErrorInfo{Domain: "tally.v1", Reason: reason, Metadata: meta})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// A member watching its task (watchTask) takes a download refused as for
// a closed task (TASK_CLOSED) to mean closed, and one refused because
// the open task lacks the object (NO_OBJECT) not to: the task is open.
// From a coordinator that names no reason it cannot tell them apart and
// takes the refusal to mean closed, as before reasons were named. Before,
// the member read the code alone, and NO_OBJECT read as closed too.
func TestWatchTellsClosedFromNoObject(t *testing.T) {
	for _, c := range []struct {
		name   string
		err    error
		closed bool
	}{
		{"TASK_CLOSED", refused(t, "TASK_CLOSED", map[string]string{"task": "t", "ended": "completed"}), true},
		{"NO_OBJECT", refused(t, "NO_OBJECT", nil), false},
		{"no reason (older coordinator)", refused(t, "", nil), true},
		{"another code", status.Error(codes.Unavailable, "down"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cl := &Client{api: refusingAPI{err: c.err}, log: slog.New(slog.DiscardHandler)}
			w := cl.watchTask(context.Background(), "t", "submission/x")
			// closedPoll is 1 s: two polls.
			deadline := time.Now().Add(2*closedPoll + closedPoll/2)
			for !w.closed.Load() && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			w.stop()
			if got := w.closed.Load(); got != c.closed {
				t.Errorf("watch of a task whose probe is refused with %v: closed %v, want %v", c.err, got, c.closed)
			}
		})
	}
}

// The late member's INFO line says how the task ended, as the coordinator
// named it, and "unknown" (not "completed") when it did not; an answer
// refused as NO_OBJECT is not a closed task, and is returned.
func TestClosedWithoutNamesTheEnding(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want []string // in the log line; nil: err returned, nothing logged
	}{
		{"completed", refused(t, "TASK_CLOSED", map[string]string{"task": "t", "ended": "completed"}), []string{"decryption task completed without this member", "ended=completed"}},
		{"given up", refused(t, "TASK_CLOSED", map[string]string{"task": "t", "ended": "given_up"}), []string{"decryption task given up without this member", "ended=given_up"}},
		{"timed out", refused(t, "TASK_CLOSED", map[string]string{"task": "t", "ended": "timed_out"}), []string{"decryption task timed out without this member", "ended=timed_out"}},
		{"closed, how not said", refused(t, "TASK_CLOSED", map[string]string{"task": "t"}), []string{"closed without this member", "ended=unknown"}},
		{"no reason (older coordinator)", refused(t, "", nil), []string{"closed without this member", "ended=unknown"}},
		{"NO_OBJECT", refused(t, "NO_OBJECT", nil), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			cl := &Client{log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
			err := cl.answered(c.err, "t", 1, 3)
			line := logs.String()
			if c.want == nil {
				if !errors.Is(err, c.err) || line != "" {
					t.Fatalf("answered = %v, logged %q; want the refusal returned and nothing logged", err, line)
				}
				return
			}
			if err != nil {
				t.Fatalf("answered = %v, want nil (a closed task is not an error)", err)
			}
			for _, w := range c.want {
				if !strings.Contains(line, w) {
					t.Errorf("log %q lacks %q", line, w)
				}
			}
			if c.name != "completed" && strings.Contains(line, "completed") {
				t.Errorf("log %q says completed", line)
			}
			if !strings.Contains(line, "level=INFO") {
				t.Errorf("log %q is not at INFO", line)
			}
		})
	}
}

// probeAPI answers every Download with err (nil: an empty object) and
// counts the calls.
type probeAPI struct {
	tallyv1.CoordinatorServiceClient
	err   error
	calls *int
}

func (a probeAPI) Download(context.Context, *tallyv1.DownloadRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[tallyv1.DownloadResponse], error) {
	*a.calls++
	if a.err != nil {
		return nil, a.err
	}
	return emptyDownload{}, nil
}

// emptyDownload is a download of no bytes.
type emptyDownload struct{ grpc.ClientStream }

func (emptyDownload) Recv() (*tallyv1.DownloadResponse, error) { return nil, io.EOF }

// A refused download says by its reason whether the task closed, without
// another call; one naming no reason (an older coordinator) is asked
// about again with the probe, whose answer decides: refused as before,
// closed; served, open.
func TestClosedByFallsBackToProbe(t *testing.T) {
	older := refused(t, "", nil)
	for _, c := range []struct {
		name          string
		err, probeErr error
		closed        bool
		how           string
		calls         int
	}{
		{"TASK_CLOSED", refused(t, "TASK_CLOSED", map[string]string{"task": "t", "ended": "given_up"}), nil, true, "given_up", 0},
		{"NO_OBJECT", refused(t, "NO_OBJECT", nil), older, false, "", 0},
		{"no reason, probe refused", older, older, true, "", 1},
		{"no reason, probe served", older, nil, false, "", 1},
		{"no reason, probe names TASK_CLOSED", older, refused(t, "TASK_CLOSED", map[string]string{"task": "t", "ended": "timed_out"}), true, "timed_out", 1},
		{"another code", status.Error(codes.Unavailable, "down"), older, false, "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			calls := 0
			cl := &Client{api: probeAPI{err: c.probeErr, calls: &calls}, log: slog.New(slog.DiscardHandler)}
			closed, how := cl.closedBy(context.Background(), "t", "submission/x", c.err)
			if closed != c.closed || how != c.how || calls != c.calls {
				t.Errorf("closedBy(%v) = %v, %q after %d probes; want %v, %q after %d", c.err, closed, how, calls, c.closed, c.how, c.calls)
			}
		})
	}
}
