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

// WithReason is the status code with message msg, naming reason.
func WithReason(code codes.Code, msg, reason string) *status.Status {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: Domain, Reason: reason}); err == nil {
		return d
	}
	return st
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
