package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Errors of Start. ErrEndpoint, when the metrics address cannot be
// listened on, lets a caller whose address was only a default carry on
// without the endpoint.
var (
	ErrSetup    = errors.New("telemetry: setup")
	ErrEndpoint = errors.New("telemetry: metrics endpoint")
)

// Config says where telemetry goes.
type Config struct {
	// MetricsAddr is the address of the Prometheus endpoint (/metrics);
	// empty for none. "127.0.0.1:0" picks a free port, see Provider.Addr.
	MetricsAddr string
	// Service is the service.name resource attribute; "tally" when empty.
	Service string
	// Getenv reads the environment (os.Getenv when nil): OTLP export is on
	// when OTEL_EXPORTER_OTLP_ENDPOINT, or its _TRACES_ or _METRICS_
	// variant, is set; the exporters read the rest of the standard
	// variables (headers, protocol options, timeouts) themselves.
	Getenv func(string) string
	// TracerProvider, if set, receives the spans instead of an OTLP
	// exporter: an embedding program's own provider, or a test's recorder.
	TracerProvider trace.TracerProvider
	Log            *slog.Logger
}

// Provider owns the exporters and the metrics endpoint behind a Telemetry.
type Provider struct {
	Telemetry *Telemetry

	meters   *sdkmetric.MeterProvider
	tracers  *sdktrace.TracerProvider // nil when no trace exporter
	server   *http.Server
	addr     net.Addr
	serveErr chan error
}

// Start builds the providers cfg asks for and starts the metrics endpoint.
// With no endpoint and no OTLP variables the Telemetry records nothing.
// The caller must call Shutdown.
func Start(ctx context.Context, cfg Config) (*Provider, error) {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	service := cfg.Service
	if service == "" {
		service = "tally"
	}
	res := resource.NewSchemaless(attribute.String("service.name", service))
	otlpAll := getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	otlpTraces := otlpAll || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	otlpMetrics := otlpAll || getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != ""

	p := &Provider{}
	mopts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	var reg *prometheus.Registry
	if cfg.MetricsAddr != "" {
		// A registry of our own: nothing global, and only tally's
		// metrics (plus the Go runtime's) on the endpoint.
		reg = prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
		exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
		if err != nil {
			return nil, fmt.Errorf("%w: prometheus exporter: %w", ErrSetup, err)
		}
		mopts = append(mopts, sdkmetric.WithReader(exp))
	}
	if otlpMetrics {
		exp, err := otlpmetricgrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: OTLP metric exporter: %w", ErrSetup, err)
		}
		mopts = append(mopts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
		log.Info("exporting metrics over OTLP")
	}
	if cfg.MetricsAddr != "" || otlpMetrics {
		p.meters = sdkmetric.NewMeterProvider(mopts...)
	}
	if otlpTraces && cfg.TracerProvider == nil {
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: OTLP trace exporter: %w", ErrSetup, err)
		}
		p.tracers = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		log.Info("exporting traces over OTLP")
	}
	// Typed nils would not read as nil inside New.
	var tp trace.TracerProvider
	switch {
	case cfg.TracerProvider != nil:
		tp = cfg.TracerProvider
	case p.tracers != nil:
		tp = p.tracers
	}
	var mp metric.MeterProvider
	if p.meters != nil {
		mp = p.meters
	}
	var err error
	if p.Telemetry, err = New(tp, mp); err != nil {
		p.Shutdown(ctx)
		return nil, err
	}
	if reg != nil {
		lis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			p.Shutdown(ctx)
			return nil, fmt.Errorf("%w: %w", ErrEndpoint, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		p.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		p.addr = lis.Addr()
		p.serveErr = make(chan error, 1)
		go func() { p.serveErr <- p.server.Serve(lis) }()
		log.Info("metrics endpoint listening", "addr", "http://"+lis.Addr().String()+"/metrics")
	}
	return p, nil
}

// Addr is the metrics endpoint's address, nil when there is none.
func (p *Provider) Addr() net.Addr { return p.addr }

// Shutdown stops the endpoint and flushes the exporters: metrics and spans
// recorded before it are exported (as far as ctx allows).
func (p *Provider) Shutdown(ctx context.Context) error {
	var errs []error
	if p.server != nil {
		errs = append(errs, p.server.Shutdown(ctx))
		if err := <-p.serveErr; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	if p.tracers != nil {
		errs = append(errs, p.tracers.Shutdown(ctx))
	}
	if p.meters != nil {
		errs = append(errs, p.meters.Shutdown(ctx))
	}
	return errors.Join(errs...)
}
