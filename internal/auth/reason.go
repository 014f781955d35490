package auth

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the google.rpc.ErrorInfo domain of the reasons a coordinator
// names in a refusal, for a caller that must tell one refusal from another
// without reading the message.
const Domain = "tally.v1"

// ReasonNotEdge names the refusal of an edge's own call (EdgeTask,
// EdgeSubmit) whose signature does not verify under the key the job lists
// for the edge id it names, or that names an id the job does not list: the
// edge's id or key is wrong, which no retry mends. It does not say which
// of the two: a stranger learns from it no more than whether it holds a
// listed edge's key.
const ReasonNotEdge = "NOT_EDGE"

// ReasonTaskClosed names the refusal of a download or an answer for a
// task that is not open for the caller: it closed, it was never the
// caller's, or the caller has answered it already. The ErrorInfo's
// metadata says which task (MetaTask) and, when the coordinator still
// knows, how it ended for the caller (MetaEnded: "completed", "given_up",
// "timed_out", "answered", "job_ended"; absent when not known). The code
// stays FailedPrecondition, as before reasons were named.
const ReasonTaskClosed = "TASK_CLOSED"

// ReasonNoObject names the refusal of a download of an object the open
// task does not have (a submission that never came, a block past the
// last): the task itself is still open for the caller. The code stays
// FailedPrecondition, as before reasons were named.
const ReasonNoObject = "NO_OBJECT"

// The ErrorInfo metadata keys of ReasonTaskClosed.
const (
	MetaTask  = "task"
	MetaEnded = "ended"
)

// WithReason is the status code with message msg, naming reason.
func WithReason(code codes.Code, msg, reason string) *status.Status {
	return WithInfo(code, msg, reason, nil)
}

// WithInfo is WithReason with metadata meta in the ErrorInfo.
func WithInfo(code codes.Code, msg, reason string, meta map[string]string) *status.Status {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: Domain, Reason: reason, Metadata: meta}); err == nil {
		return d
	}
	return st
}

// Reason returns the reason err names (WithReason, WithInfo) and its
// metadata, or "" when err names none: a peer that predates reasons sends
// the code alone.
func Reason(err error) (string, map[string]string) {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return "", nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info.GetReason(), info.GetMetadata()
		}
	}
	return "", nil
}

// HasReason reports whether err is a status naming reason (WithReason).
func HasReason(err error, reason string) bool {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain && info.GetReason() == reason {
			return true
		}
	}
	return false
}
