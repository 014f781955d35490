package telemetry

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// ServerHandler returns a gRPC stats handler that gives every client
// request a span and counts its duration, its bytes on the wire and the
// open connections. A stats handler rather than interceptors: it sees
// unary and streaming calls alike, each message's wire size, and the
// connections, which interceptors do not.
func (t *Telemetry) ServerHandler() stats.Handler { return &serverHandler{t: t} }

type serverHandler struct{ t *Telemetry }

type rpcKey struct{}

// rpcInfo travels in the request's context from TagRPC to HandleRPC.
type rpcInfo struct {
	method attribute.KeyValue
	start  time.Time
	span   trace.Span
}

func (h *serverHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	method := attribute.String("rpc.method", info.FullMethodName)
	ctx, span := h.t.tracer.Start(ctx, info.FullMethodName, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("rpc.system", "grpc"), method))
	return context.WithValue(ctx, rpcKey{}, &rpcInfo{method: method, start: time.Now(), span: span})
}

func (h *serverHandler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	info, ok := ctx.Value(rpcKey{}).(*rpcInfo)
	if !ok {
		return
	}
	attrs := metric.WithAttributes(info.method)
	switch s := s.(type) {
	case *stats.InPayload:
		h.t.bytesIn.Add(ctx, int64(s.WireLength), attrs)
	case *stats.OutPayload:
		h.t.bytesOut.Add(ctx, int64(s.WireLength), attrs)
	case *stats.End:
		code := status.Code(s.Error)
		h.t.rpcDuration.Record(ctx, s.EndTime.Sub(info.start).Seconds(),
			metric.WithAttributes(info.method, attribute.String("rpc.grpc.status_code", code.String())))
		info.span.SetAttributes(attribute.Int("rpc.grpc.status_code", int(code)))
		if s.Error != nil {
			info.span.SetStatus(otelcodes.Error, s.Error.Error())
		}
		info.span.End(trace.WithTimestamp(s.EndTime))
	}
}

func (h *serverHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (h *serverHandler) HandleConn(ctx context.Context, s stats.ConnStats) {
	switch s.(type) {
	case *stats.ConnBegin:
		h.t.conns.Add(ctx, 1)
	case *stats.ConnEnd:
		h.t.conns.Add(ctx, -1)
	}
}
