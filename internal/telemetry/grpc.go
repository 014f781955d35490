package telemetry

import (
	"context"
	"sync"
	"sync/atomic"
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

// serverHandler keeps, per method, the attribute set its measurements
// carry. Building one (metric.WithAttributes sorts and hashes) for every
// stats event cost the coordinator 5% of its CPU in BenchmarkScale: a
// member's download of a contributor's c1 alone is a dozen payload events.
type serverHandler struct {
	t       *Telemetry
	methods sync.Map // full method name → *methodAttrs
	// cached counts the entries of methods, which stops growing at
	// maxCachedMethods: a peer may name methods the server does not have.
	cached atomic.Int64
}

const maxCachedMethods = 256

type methodAttrs struct {
	method attribute.KeyValue
	// add is the option list of the byte counters, kept as a slice so
	// that passing it allocates no variadic one per event.
	add []metric.AddOption
}

func (h *serverHandler) attrsFor(name string) *methodAttrs {
	if m, ok := h.methods.Load(name); ok {
		return m.(*methodAttrs)
	}
	method := attribute.String("rpc.method", name)
	m := &methodAttrs{method: method, add: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(method))}}
	if h.cached.Load() >= maxCachedMethods {
		return m
	}
	got, loaded := h.methods.LoadOrStore(name, m)
	if !loaded {
		h.cached.Add(1)
	}
	return got.(*methodAttrs)
}

type rpcKey struct{}

// rpcInfo travels in the request's context from TagRPC to HandleRPC.
type rpcInfo struct {
	method *methodAttrs
	start  time.Time
	span   trace.Span
}

func (h *serverHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	method := h.attrsFor(info.FullMethodName)
	ctx, span := h.t.tracer.Start(ctx, info.FullMethodName, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("rpc.system", "grpc"), method.method))
	return context.WithValue(ctx, rpcKey{}, &rpcInfo{method: method, start: time.Now(), span: span})
}

func (h *serverHandler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	info, ok := ctx.Value(rpcKey{}).(*rpcInfo)
	if !ok {
		return
	}
	switch s := s.(type) {
	case *stats.InPayload:
		h.t.bytesIn.Add(ctx, int64(s.WireLength), info.method.add...)
	case *stats.OutPayload:
		h.t.bytesOut.Add(ctx, int64(s.WireLength), info.method.add...)
	case *stats.End:
		code := status.Code(s.Error)
		h.t.rpcDuration.Record(ctx, s.EndTime.Sub(info.start).Seconds(),
			metric.WithAttributes(info.method.method, attribute.String("rpc.grpc.status_code", code.String())))
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
