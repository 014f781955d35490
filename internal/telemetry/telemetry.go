package telemetry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of every span and instrument.
const ScopeName = "github.com/tallyfl/tally"

// Phase names, the values of the "phase" attribute. They name what an
// operator waits for in a round, as the round lifecycle of docs/DESIGN.md §2
// does.
const (
	PhaseSelect    = "select"       // the strategy picks the round's clients
	PhaseWait      = "wait_updates" // a train or moments task is open
	PhaseAggregate = "aggregate"    // updates are combined into the next model
	PhaseKeyGen    = "keygen"       // the committee generates a collective key
	PhaseDecrypt   = "decrypt"      // the committee decrypts an aggregate
	PhaseValuate   = "valuate"      // contributions are valued
	PhaseEvaluate  = "evaluate"     // the next model is scored on validation data
	PhasePersist   = "persist"      // a record is written to the store
)

// Reasons an update is counted under, besides the refusal reasons the
// coordinator names.
const (
	OutcomeAccepted  = "accepted"
	OutcomeDuplicate = "duplicate"
	OutcomeRejected  = "rejected"
)

// ErrInstrument is returned when an instrument cannot be created.
var ErrInstrument = errors.New("telemetry: cannot create instrument")

// phaseBuckets are the histogram bounds of phase and request durations,
// in seconds: from a millisecond (a persist, a select) to five minutes (a
// round timeout of a slow federation), about three per decade.
var phaseBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// Telemetry records a coordinator's spans and metrics. Its methods are
// safe for concurrent use; the zero value is not usable, use New or Noop.
type Telemetry struct {
	tracer trace.Tracer
	meter  metric.Meter

	phase       metric.Float64Histogram
	rpcDuration metric.Float64Histogram
	bytesIn     metric.Int64Counter
	bytesOut    metric.Int64Counter
	conns       metric.Int64UpDownCounter
	polling     metric.Int64UpDownCounter
	updates     metric.Int64Counter
	dropouts    metric.Int64Counter
	decryptions metric.Int64Counter
	rounds      metric.Int64Counter
	refused     metric.Int64Counter
}

// Noop returns a Telemetry that records nothing.
func Noop() *Telemetry {
	t, err := New(nil, nil)
	if err != nil {
		// The no-op providers cannot fail.
		panic(err)
	}
	return t
}

// New returns a Telemetry recording through tp and mp; a nil provider
// records nothing.
func New(tp trace.TracerProvider, mp metric.MeterProvider) (*Telemetry, error) {
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	t := &Telemetry{tracer: tp.Tracer(ScopeName), meter: mp.Meter(ScopeName)}
	m := t.meter
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	t.phase, err = m.Float64Histogram("tally.phase.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of a phase of a round (attribute phase)."),
		metric.WithExplicitBucketBoundaries(phaseBuckets...))
	add(err)
	t.rpcDuration, err = m.Float64Histogram("tally.rpc.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of a client request, by method and status code."),
		metric.WithExplicitBucketBoundaries(phaseBuckets...))
	add(err)
	t.bytesIn, err = m.Int64Counter("tally.rpc.received", metric.WithUnit("By"),
		metric.WithDescription("Bytes received from clients on the wire, by method."))
	add(err)
	t.bytesOut, err = m.Int64Counter("tally.rpc.sent", metric.WithUnit("By"),
		metric.WithDescription("Bytes sent to clients on the wire, by method."))
	add(err)
	t.conns, err = m.Int64UpDownCounter("tally.connections",
		metric.WithDescription("Open client connections (HTTP/2; clients in one process may share one)."))
	add(err)
	t.polling, err = m.Int64UpDownCounter("tally.clients.polling",
		metric.WithDescription("Clients waiting in a NextTask long poll."))
	add(err)
	t.updates, err = m.Int64Counter("tally.updates",
		metric.WithDescription("Submissions answered (model updates, and committee shares), by the kind of task they were for, outcome (accepted, duplicate, rejected) and the reason of a rejection."))
	add(err)
	t.dropouts, err = m.Int64Counter("tally.dropouts",
		metric.WithDescription("Selected clients that did not contribute to a round attempt."))
	add(err)
	t.decryptions, err = m.Int64Counter("tally.decryptions",
		metric.WithDescription("Aggregates decrypted by the committee, by purpose."))
	add(err)
	t.rounds, err = m.Int64Counter("tally.rounds",
		metric.WithDescription("Round attempts, by outcome (completed, failed)."))
	add(err)
	t.refused, err = m.Int64Counter("tally.auth.refused",
		metric.WithDescription("Calls and enrolments refused for their credentials, by method and reason (unauthenticated, permission_denied)."))
	add(err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInstrument, err)
	}
	return t, nil
}

// Gauge registers an observable gauge whose value f reports at each
// collection. f must be safe to call from another goroutine.
func (t *Telemetry) Gauge(name, unit, description string, f func() int64) error {
	_, err := t.meter.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(description),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(f())
			return nil
		}))
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInstrument, name, err)
	}
	return nil
}

// Update counts one answered submission for a task of kind task (train
// and moments tasks take model updates, the others committee shares).
// reason is ignored unless outcome is OutcomeRejected.
func (t *Telemetry) Update(task, outcome, reason string) {
	attrs := []attribute.KeyValue{attribute.String("task", task), attribute.String("outcome", outcome)}
	if outcome == OutcomeRejected {
		attrs = append(attrs, attribute.String("reason", reason))
	}
	t.updates.Add(context.Background(), 1, metric.WithAttributes(attrs...))
}

// Refused counts a call or enrolment refused for its credentials.
func (t *Telemetry) Refused(method, reason string) {
	t.refused.Add(context.Background(), 1, metric.WithAttributes(attribute.String("method", method), attribute.String("reason", reason)))
}

// Polling counts a client entering (+1) or leaving (-1) a long poll.
func (t *Telemetry) Polling(delta int64) {
	t.polling.Add(context.Background(), delta)
}

// RoundOutcome is what a finished round attempt contributes to the counters.
type RoundOutcome struct {
	Round, Attempt int
	Failed         bool
	Reason         string
	Dropouts       int
	// Decryptions lists the purpose of each aggregate decrypted.
	Decryptions []string
}

// Round is the span of one round of a job, the parent of its phases. A
// nil *Round is valid: its phases are counted but have no parent span.
type Round struct {
	t    *Telemetry
	ctx  context.Context
	span trace.Span
	// Number is the round's number.
	Number int
}

// StartRound opens the span of round (attempt is its first attempt) at at.
func (t *Telemetry) StartRound(round, attempt int, at time.Time) *Round {
	ctx, span := t.tracer.Start(context.Background(), "tally.round", trace.WithTimestamp(at),
		trace.WithNewRoot(), trace.WithAttributes(attribute.Int("tally.round", round), attribute.Int("tally.attempt", attempt)))
	return &Round{t: t, ctx: ctx, span: span, Number: round}
}

// StartKeyGen opens the span of a key generation of the decryption
// committee at at: a trace of its own, since a key serves many rounds.
func (t *Telemetry) StartKeyGen(at time.Time) *Round {
	ctx, span := t.tracer.Start(context.Background(), "tally.keygen", trace.WithTimestamp(at), trace.WithNewRoot())
	return &Round{t: t, ctx: ctx, span: span, Number: -1}
}

// Phase records a phase that ran from start to end: its duration in the
// histogram, and a child span of r when r is not nil.
func (t *Telemetry) Phase(r *Round, name string, start, end time.Time, attrs ...attribute.KeyValue) {
	t.phase.Record(context.Background(), end.Sub(start).Seconds(), metric.WithAttributes(attribute.String("phase", name)))
	if r == nil {
		return
	}
	_, span := t.tracer.Start(r.ctx, name, trace.WithTimestamp(start), trace.WithAttributes(attrs...))
	span.End(trace.WithTimestamp(end))
}

// End closes the round's span at at and counts its outcome.
func (r *Round) End(o RoundOutcome, at time.Time) {
	t := r.t
	ctx := context.Background()
	outcome := "completed"
	if o.Failed {
		outcome = "failed"
		r.span.SetStatus(codes.Error, o.Reason)
	}
	t.rounds.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome)))
	t.dropouts.Add(ctx, int64(o.Dropouts))
	for _, p := range o.Decryptions {
		t.decryptions.Add(ctx, 1, metric.WithAttributes(attribute.String("purpose", p)))
	}
	r.span.SetAttributes(attribute.Int("tally.attempt", o.Attempt), attribute.Int("tally.dropouts", o.Dropouts),
		attribute.Int("tally.decryptions", len(o.Decryptions)))
	r.span.End(trace.WithTimestamp(at))
}

// Abandon closes the span without counting a round outcome: the job
// stopped, or the span covered work (feature scaling) that is no round.
func (r *Round) Abandon(at time.Time) {
	r.span.End(trace.WithTimestamp(at))
}
