package telemetry

import (
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/stats"
)

// recorded is a Telemetry over in-memory providers.
func recorded(t *testing.T) (*Telemetry, *tracetest.SpanRecorder, *sdkmetric.ManualReader) {
	t.Helper()
	spans := tracetest.NewSpanRecorder()
	reader := sdkmetric.NewManualReader()
	tel, err := New(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)), sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	if err != nil {
		t.Fatal(err)
	}
	return tel, spans, reader
}

// collect returns the metrics reader holds, by name.
func collect(t *testing.T, reader *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

func sum(t *testing.T, m metricdata.Metrics) int64 {
	t.Helper()
	s, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s is a %T, not an int64 sum", m.Name, m.Data)
	}
	var n int64
	for _, dp := range s.DataPoints {
		n += dp.Value
	}
	return n
}

// TestRoundSpans checks that phases become children of their round's
// span, with the times they were given, and that the round's outcome
// reaches the counters.
func TestRoundSpans(t *testing.T) {
	tel, spans, reader := recorded(t)
	t0 := time.Unix(1_700_000_000, 0)
	r := tel.StartRound(3, 1, t0)
	tel.Phase(r, PhaseSelect, t0, t0.Add(time.Millisecond))
	tel.Phase(r, PhaseWait, t0.Add(time.Millisecond), t0.Add(2*time.Second))
	tel.Phase(nil, PhasePersist, t0, t0.Add(3*time.Millisecond)) // counted, no span
	r.End(RoundOutcome{Round: 3, Attempt: 1, Dropouts: 2, Decryptions: []string{"update", "update"}}, t0.Add(3*time.Second))

	ended := spans.Ended()
	if len(ended) != 3 {
		t.Fatalf("%d spans ended, want 3 (round, select, wait)", len(ended))
	}
	var round sdktrace.ReadOnlySpan
	for _, s := range ended {
		if s.Name() == "tally.round" {
			round = s
		}
	}
	if round == nil {
		t.Fatal("no tally.round span")
	}
	if !round.StartTime().Equal(t0) || !round.EndTime().Equal(t0.Add(3*time.Second)) {
		t.Errorf("round span %v–%v, want the given times", round.StartTime(), round.EndTime())
	}
	for _, s := range ended {
		if s == round {
			continue
		}
		if s.Parent().SpanID() != round.SpanContext().SpanID() {
			t.Errorf("phase %s is not a child of the round", s.Name())
		}
		if s.Name() == PhaseWait && s.EndTime().Sub(s.StartTime()) != 2*time.Second-time.Millisecond {
			t.Errorf("wait span lasted %v", s.EndTime().Sub(s.StartTime()))
		}
	}

	ms := collect(t, reader)
	h, ok := ms["tally.phase.duration"].Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("tally.phase.duration is %T", ms["tally.phase.duration"].Data)
	}
	phases := map[string]uint64{}
	for _, dp := range h.DataPoints {
		v, _ := dp.Attributes.Value("phase")
		phases[v.AsString()] += dp.Count
	}
	for _, p := range []string{PhaseSelect, PhaseWait, PhasePersist} {
		if phases[p] != 1 {
			t.Errorf("phase %s recorded %d times, want 1", p, phases[p])
		}
	}
	if n := sum(t, ms["tally.dropouts"]); n != 2 {
		t.Errorf("dropouts %d, want 2", n)
	}
	if n := sum(t, ms["tally.decryptions"]); n != 2 {
		t.Errorf("decryptions %d, want 2", n)
	}
	if n := sum(t, ms["tally.rounds"]); n != 1 {
		t.Errorf("rounds %d, want 1", n)
	}
}

// TestUpdateReasons checks that a refusal's reason is an attribute and
// that accepted updates carry none.
func TestUpdateReasons(t *testing.T) {
	tel, _, reader := recorded(t)
	tel.Update("train", OutcomeAccepted, "ignored")
	tel.Update("train", OutcomeRejected, "conflict")
	tel.Update("train", OutcomeRejected, "conflict")
	s := collect(t, reader)["tally.updates"].Data.(metricdata.Sum[int64])
	got := map[string]int64{}
	for _, dp := range s.DataPoints {
		o, _ := dp.Attributes.Value("outcome")
		r, _ := dp.Attributes.Value("reason")
		got[o.AsString()+"/"+r.AsString()] += dp.Value
	}
	want := map[string]int64{"accepted/": 1, "rejected/conflict": 2}
	if len(got) != len(want) || got["accepted/"] != 1 || got["rejected/conflict"] != 2 {
		t.Errorf("updates %v, want %v", got, want)
	}
}

// TestServerHandler runs a real gRPC call through the stats handler.
func TestServerHandler(t *testing.T) {
	tel, spans, reader := recorded(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.StatsHandler(tel.ServerHandler()))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	// A refused call: the status code must reach the span and the histogram.
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "nope"}); err == nil {
		t.Fatal("health check of an unknown service succeeded")
	}
	srv.GracefulStop()

	const method = "/grpc.health.v1.Health/Check"
	var calls, failed int
	for _, s := range spans.Ended() {
		if s.Name() == method {
			calls++
			if s.Status().Code == otelcodes.Error {
				failed++
			}
		}
	}
	if calls != 2 || failed != 1 {
		t.Errorf("%d %s spans, %d failed; want 2 and 1", calls, method, failed)
	}
	ms := collect(t, reader)
	if n := sum(t, ms["tally.rpc.received"]); n <= 0 {
		t.Errorf("received %d bytes", n)
	}
	if n := sum(t, ms["tally.rpc.sent"]); n <= 0 {
		t.Errorf("sent %d bytes", n)
	}
	codes := map[string]uint64{}
	for _, dp := range ms["tally.rpc.duration"].Data.(metricdata.Histogram[float64]).DataPoints {
		c, _ := dp.Attributes.Value("rpc.grpc.status_code")
		codes[c.AsString()] += dp.Count
	}
	if codes["OK"] != 1 || codes["NotFound"] != 1 {
		t.Errorf("calls by code %v, want one OK and one NotFound", codes)
	}
}

// TestNoop checks that the no-op Telemetry takes every call.
func TestNoop(t *testing.T) {
	tel := Noop()
	r := tel.StartRound(1, 1, time.Now())
	tel.Phase(r, PhaseAggregate, time.Now(), time.Now())
	tel.Phase(nil, PhasePersist, time.Now(), time.Now())
	tel.Update("decrypt", OutcomeRejected, "other")
	tel.Polling(1)
	if err := tel.Gauge("tally.test", "1", "a test gauge", func() int64 { return 1 }); err != nil {
		t.Fatal(err)
	}
	r.End(RoundOutcome{Failed: true, Reason: "test"}, time.Now())
}

// Scrape reads a Prometheus text endpoint; it is shared by this package's
// tests only (the coordinator's tests parse their own scrape).
func scrape(t *testing.T, addr string) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return string(body), fams
}

// TestEndpoint starts the Prometheus endpoint on a free port and finds
// what was recorded, under the names the README documents; promtool, when
// installed, finds nothing to complain about.
func TestEndpoint(t *testing.T) {
	p, err := Start(context.Background(), Config{MetricsAddr: "127.0.0.1:0", Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	tel := p.Telemetry
	tel.Phase(nil, PhaseSelect, time.Now(), time.Now().Add(time.Millisecond))
	tel.Update("train", OutcomeRejected, "bad_update")
	if err := tel.Gauge("tally.clients.enrolled", "{client}", "Clients enrolled in the job.", func() int64 { return 7 }); err != nil {
		t.Fatal(err)
	}
	text, fams := scrape(t, p.Addr().String())
	for _, name := range []string{"tally_phase_duration_seconds", "tally_updates_total", "tally_clients_enrolled"} {
		if fams[name] == nil {
			t.Errorf("no %s in /metrics", name)
		}
	}
	if g := fams["tally_clients_enrolled"]; g != nil && g.GetMetric()[0].GetGauge().GetValue() != 7 {
		t.Errorf("tally_clients_enrolled = %v, want 7", g.GetMetric()[0].GetGauge().GetValue())
	}
	promtoolCheck(t, text)
}

// promtoolCheck runs `promtool check metrics` on text in a subtest,
// skipped when promtool is not installed (`make promtool` installs
// Debian's prometheus package, which has it).
func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	t.Run("promtool", func(t *testing.T) {
		path, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip("promtool not installed: skipping `promtool check metrics` (run `make promtool`, or apt-get install prometheus)")
		}
		cmd := exec.Command(path, "check", "metrics")
		cmd.Stdin = strings.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	})
}

// TestNoEndpoint checks that without an address or OTLP variables
// nothing listens and nothing is exported.
func TestNoEndpoint(t *testing.T) {
	p, err := Start(context.Background(), Config{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	if p.Addr() != nil || p.meters != nil || p.tracers != nil {
		t.Errorf("providers built with nothing configured: addr %v", p.Addr())
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestServerHandlerPayloadAllocs checks that a payload event, of which a
// streamed download has one per message, builds no attribute set: the
// method's is made once (it cost the coordinator 5% of its CPU in
// BenchmarkScale when made per event).
func TestServerHandlerPayloadAllocs(t *testing.T) {
	h := Noop().ServerHandler()
	ctx := h.TagRPC(context.Background(), &stats.RPCTagInfo{FullMethodName: "/tally.v1.CoordinatorService/Download"})
	out := &stats.OutPayload{WireLength: 32 << 10}
	if n := testing.AllocsPerRun(100, func() { h.HandleRPC(ctx, out) }); n != 0 {
		t.Errorf("%v allocations per payload event, want 0", n)
	}
}
