package coordinator

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/telemetry"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
	"github.com/tallyfl/tally/valuation"
)

// observedJob is a small job (the harness of runSmallJob) whose telemetry
// goes to a Prometheus endpoint on a free port and to a span recorder.
type observedJob struct {
	out     Outcome
	metrics string // the /metrics text scraped after the job
	fams    map[string]*dto.MetricFamily
	spans   []sdktrace.ReadOnlySpan
}

func runObservedJob(t *testing.T, secure, mode, method string) observedJob {
	t.Helper()
	job, fed, store := smallJob(t, "observed", secure, mode, method)
	rec := tracetest.NewSpanRecorder()
	prov, err := telemetry.Start(context.Background(), telemetry.Config{
		MetricsAddr: "127.0.0.1:0", Getenv: func(string) string { return "" },
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Shutdown(context.Background()) })
	srv, err := NewServer(ServerConfig{Job: job, Validation: fed.Validation, Linger: 2 * time.Second, Store: store, Telemetry: prov.Telemetry})
	if err != nil {
		t.Fatal(err)
	}
	out := serveFederation(t, srv, job, fed.Clients, 200*time.Millisecond, nil)
	text, fams := scrapeMetrics(t, prov.Addr().String())
	return observedJob{out: out, metrics: text, fams: fams, spans: rec.Ended()}
}

func scrapeMetrics(t *testing.T, addr string) (string, map[string]*dto.MetricFamily) {
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
		t.Fatalf("parse /metrics: %v", err)
	}
	return string(body), fams
}

// value sums family name's samples whose labels include want (counters,
// gauges), or their observation counts (histograms).
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var v float64
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		for k, w := range want {
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == k && l.GetValue() == w }) {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Histogram != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return v
}

// TestMetricsAfterRounds runs a small job with the metrics endpoint on and
// finds, in /metrics, a histogram sample for every phase the job went
// through and the counters that describe it; and in the spans, a trace per
// round whose children are its phases, and a span per client request.
func TestMetricsAfterRounds(t *testing.T) {
	for _, tc := range []struct {
		secure, mode, method string
		phases               []string
	}{
		{"none", engine.ModePlain, valuation.MethodLOO, []string{"select", "wait_updates", "aggregate", "evaluate", "valuate", "persist"}},
		{"he", engine.ModeInfluence, valuation.MethodLOO, []string{"select", "wait_updates", "aggregate", "evaluate", "valuate", "persist", "keygen", "decrypt"}},
	} {
		t.Run("secure="+tc.secure+"/mode="+tc.mode, func(t *testing.T) {
			j := runObservedJob(t, tc.secure, tc.mode, tc.method)
			if j.out.Done == nil || j.out.Done.FinalRound != 2 {
				t.Fatalf("job ended %+v", j.out.Done)
			}
			fams := j.fams
			for _, p := range tc.phases {
				if v := value(fams, "tally_phase_duration_seconds", map[string]string{"phase": p}); v < 1 {
					t.Errorf("phase %s: %v observations", p, v)
				}
			}
			// 5 clients, 2 rounds, and the feature-scaling moments.
			if v := value(fams, "tally_updates_total", map[string]string{"outcome": "accepted", "task": "train"}); v != 10 {
				t.Errorf("%v updates accepted, want 10", v)
			}
			if v := value(fams, "tally_updates_total", map[string]string{"outcome": "accepted", "task": "moments"}); v != 5 {
				t.Errorf("%v moments accepted, want 5", v)
			}
			if v := value(fams, "tally_rounds_total", map[string]string{"outcome": "completed"}); v != 2 {
				t.Errorf("%v rounds completed, want 2", v)
			}
			if v := value(fams, "tally_dropouts_total", nil); v != 0 {
				t.Errorf("%v dropouts, want 0", v)
			}
			if v := value(fams, "tally_clients_enrolled", nil); v != 5 {
				t.Errorf("%v clients enrolled, want 5", v)
			}
			if v := value(fams, "tally_ledger_size_bytes", nil); v <= 0 {
				t.Errorf("ledger size %v", v)
			}
			submit := map[string]string{"rpc_method": "/tally.v1.CoordinatorService/SubmitUpdate"}
			if v := value(fams, "tally_rpc_received_bytes_total", submit); v <= 0 {
				t.Errorf("%v bytes received by SubmitUpdate", v)
			}
			if v := value(fams, "tally_rpc_sent_bytes_total", nil); v <= 0 {
				t.Errorf("%v bytes sent", v)
			}
			if v := value(fams, "tally_rpc_duration_seconds", map[string]string{"rpc_method": "/tally.v1.CoordinatorService/Enroll", "rpc_grpc_status_code": "OK"}); v != 5 {
				t.Errorf("%v enrolments, want 5", v)
			}
			wantDecrypt := 0.0
			if tc.secure == "he" {
				// Each round decrypts at least its update.
				wantDecrypt = 2
			}
			// -1: no series, the counter never moved.
			if v := value(fams, "tally_decryptions_total", nil); wantDecrypt > 0 && v < wantDecrypt || wantDecrypt == 0 && v > 0 {
				t.Errorf("%v decryptions, want ≥ %v", v, wantDecrypt)
			}

			// Traces: rounds 1 and 2 each have a span whose children
			// include the round's own phases.
			children := map[string][]string{}
			rounds := map[int64]string{}
			enrolls := 0
			for _, s := range j.spans {
				children[s.Parent().SpanID().String()] = append(children[s.Parent().SpanID().String()], s.Name())
				if s.Name() == "tally.round" {
					for _, a := range s.Attributes() {
						if a.Key == "tally.round" {
							rounds[a.Value.AsInt64()] = s.SpanContext().SpanID().String()
						}
					}
				}
				if s.Name() == "/tally.v1.CoordinatorService/Enroll" {
					enrolls++
				}
			}
			for _, r := range []int64{1, 2} {
				id, ok := rounds[r]
				if !ok {
					t.Errorf("no span for round %d", r)
					continue
				}
				for _, p := range []string{"wait_updates", "aggregate", "persist"} {
					if !slices.Contains(children[id], p) {
						t.Errorf("round %d span has no %s child (children %v)", r, p, children[id])
					}
				}
			}
			if id, ok := rounds[2]; ok && !slices.Contains(children[id], "select") {
				t.Errorf("round 2 span has no select child (children %v)", children[id])
			}
			if tc.secure == "he" {
				keygens := 0
				for _, s := range j.spans {
					if s.Name() == "tally.keygen" && slices.Contains(children[s.SpanContext().SpanID().String()], "keygen") {
						keygens++
					}
				}
				if keygens < 1 {
					t.Error("no tally.keygen span with a keygen phase")
				}
			}
			if enrolls != 5 {
				t.Errorf("%d Enroll spans, want 5", enrolls)
			}
			promtoolCheck(t, j.metrics)
		})
	}
}

// promtoolCheck runs `promtool check metrics` on text in a subtest,
// skipped when promtool is not installed (`make promtool` installs it).
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

// TestReflectionAndHealth lists the running server's services through
// the reflection API, as grpcurl does, and asks the health service.
func TestReflectionAndHealth(t *testing.T) {
	ds, err := dataset.Embedded("breast-cancer")
	if err != nil {
		t.Fatal(err)
	}
	fed, err := dataset.Federate(ds, dataset.FederationSpec{Clients: 2, ValFrac: 0.2, TestFrac: 0.2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.JobConfig{
		ID: "hygiene", Seed: 1, Rounds: 1, SecureAggregation: "none",
		Data:    engine.DataConfig{Features: ds.Examples.Features, Classes: 2},
		Clients: engine.ClientsConfig{Min: 1, WaitFor: 1, Enrolment: []engine.EnrolmentConfig{{ID: "c0", Token: "token-hygiene-0"}}},
	}
	job, err := engine.NewJob(cfg, ".")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ServerConfig{Job: job, Validation: fed.Validation})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := srv.Run(ctx, lis)
		done <- err
	}()
	defer func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run after cancel: %v", err)
		}
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	var services []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	for _, want := range []string{tallyv1.CoordinatorService_ServiceDesc.ServiceName, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(services, want) {
			t.Errorf("reflection lists %v, not %s", services, want)
		}
	}

	hc := healthpb.NewHealthClient(conn)
	for _, service := range []string{"", tallyv1.CoordinatorService_ServiceDesc.ServiceName} {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health %q: %v", service, err)
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v, want SERVING", service, r.GetStatus())
		}
	}
}

// TestRefusalReasons checks that each refusal sentinel has its own label
// value, also when wrapped, and that nothing else leaks an error message
// into a label.
func TestRefusalReasons(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: %q", engine.ErrNoTask, "job/train/r1/a1"), "no_task"},
		{engine.ErrNotSelected, "not_selected"},
		{fmt.Errorf("%w: expected 3 values, got 2", engine.ErrWrongLength), "wrong_length"},
		{fmt.Errorf("%w: value 0 is NaN", engine.ErrBadUpdate), "bad_update"},
		{engine.ErrConflict, "conflict"},
		{engine.ErrUnknownClient, "unknown_client"},
		{fmt.Errorf("disk full"), "other"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := refusal(tc.err); got != tc.want {
				t.Errorf("refusal(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}
