// Package telemetry is tally's one place for OpenTelemetry: the
// instruments a coordinator records (phase durations, bytes on the wire,
// connections, updates accepted and refused, dropouts, decryptions, ledger
// size), the spans of a round and of each client request, and the
// providers that export them — a Prometheus endpoint, and OTLP when the
// standard OTEL_EXPORTER_OTLP_* variables are set.
//
// Nothing here is global (docs/STYLE.md §9): a *Telemetry is built from the
// tracer and meter providers it is given, and Noop returns one that
// records nothing, which is what every coordinator part uses unless told
// otherwise. The round engine never sees telemetry; the driver, which
// performs every action the engine returns, derives the round's phases
// from them (task published → task closed), and the engine's pluggable
// parts (strategy, valuer, evaluator) are timed by wrappers around them.
//
// The names follow the OpenTelemetry semantic conventions where one
// exists (rpc.method, rpc.grpc.status_code) and the Prometheus naming
// rules after translation (tally_phase_duration_seconds,
// tally_updates_total); see the README's Operations section.
//
// References: OpenTelemetry Specification 1.x, "Metrics API" and "Trace
// API"; Prometheus, "Metric and label naming" (prometheus.io/docs/practices/naming).
package telemetry
