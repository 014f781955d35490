package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/telemetry"
	"github.com/tallyfl/tally/model"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
	"github.com/tallyfl/tally/valuation"
)

// ModelEvaluator scores parameters with a model on validation data. It
// keeps the standardised copy of the data for the scaler last used, so a
// round's evaluation costs one forward pass, not a copy of the data.
type ModelEvaluator struct {
	Model model.Model
	Data  model.Examples

	scaler *dataset.Scaler
	scaled model.Examples
}

// Evaluate implements Evaluator.
func (m *ModelEvaluator) Evaluate(params []float64, scaler *dataset.Scaler) (model.Metrics, error) {
	data := m.Data
	if scaler != nil {
		if scaler != m.scaler {
			if err := scaler.Validate(m.Data.Features); err != nil {
				return model.Metrics{}, err
			}
			m.scaler, m.scaled = scaler, scaler.Apply(m.Data)
		}
		data = m.scaled
	}
	if err := m.Model.SetParams(params); err != nil {
		return model.Metrics{}, err
	}
	return m.Model.Evaluate(data)
}

// ServerConfig assembles a coordinator.
type ServerConfig struct {
	Job engine.Job
	// Validation is the coordinator's held-out data, unscaled.
	Validation model.Examples
	Store      engine.Store
	Log        *slog.Logger
	// OnRound is called after each round attempt, from the driver goroutine.
	OnRound func(engine.RoundRecord)
	// OnRelease is given every decrypted plaintext (Driver.OnRelease).
	OnRelease func(engine.Release) error
	// Linger is how long the server keeps answering after the job ends, so
	// clients learn that it ended; it stops sooner once every enrolled
	// client has been told.
	Linger time.Duration
	// GRPCOptions are added to the server's options, after the fixed
	// flow-control windows (UploadWindowBytes, ConnWindowBytes), which they
	// may override.
	GRPCOptions []grpc.ServerOption
	// UploadSlots is how many upload messages are read at once, over all
	// clients; 0 means DefaultUploadSlots.
	UploadSlots int
	// Telemetry receives the job's spans and metrics; nil records nothing.
	Telemetry *telemetry.Telemetry
	// TokensFile is the job's tokens file (`tally token create`), reread
	// when it changes; empty admits only the job file's tokens.
	TokensFile string
	// TLS, if set, serves over TLS with this configuration; with
	// ClientAuth set to tls.RequireAndVerifyClientCert and ClientCAs, only
	// clients holding a certificate of those CAs can connect (mutual TLS).
	TLS *tls.Config
	// HealthListener, if set, is where Run also serves the standard health
	// service, alone and in plaintext, reporting what the main server's
	// reports. It is for probes that speak no TLS (the kubelet's gRPC
	// probes take no TLS settings) beside a TLS or mutual-TLS server; it
	// offers nothing else, no reflection and no coordinator service. Run
	// closes it.
	HealthListener net.Listener
	// Model, if set, is the job's model, used as given: an external
	// model's evaluator (extmodel). nil builds the built-in model of the
	// job's spec and seed.
	Model model.Model
	// ExportGames, if set, is a directory where each completed round's
	// valuation game is written as CSV, one row per coalition evaluated
	// (exportGame), so that anyone can recompute the values without tally.
	ExportGames string
	// SpillDir is where each round's c₁ rows are kept, in a file removed
	// from it as soon as it is made (spillStores); empty means
	// os.TempDir(), which $TMPDIR sets.
	SpillDir string
}

// Server is a coordinator: the engine, its driver and the gRPC service.
type Server struct {
	cfg     ServerConfig
	engine  *engine.Engine
	driver  *Driver
	service *Service
	model   model.Model
}

// Outcome is what a finished job leaves behind.
type Outcome struct {
	Global  []float64
	Scaler  *dataset.Scaler
	History []engine.RoundRecord
	Done    *engine.ActJobDone
}

// NewServer builds the model from the job's spec and seed and wires the parts.
func NewServer(cfg ServerConfig) (*Server, error) {
	job := cfg.Job
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Store == nil {
		cfg.Store = NewMemoryStore()
	}
	if cfg.Linger == 0 {
		cfg.Linger = 2 * DefaultPollWait
	}
	if cfg.Validation.Len() == 0 {
		return nil, fmt.Errorf("%w: no validation data", engine.ErrConfig)
	}
	if cfg.Validation.Features != job.Data.Features {
		return nil, fmt.Errorf("%w: validation data has %d features, data.features is %d", engine.ErrConfig, cfg.Validation.Features, job.Data.Features)
	}
	m := cfg.Model
	if m == nil {
		var err error
		if m, err = model.New(job.Model, job.Data.Features, job.Data.Classes, job.Seed); err != nil {
			return nil, fmt.Errorf("%w: %v", engine.ErrConfig, err)
		}
	}
	if cfg.Telemetry == nil {
		cfg.Telemetry = telemetry.Noop()
	}
	// The engine's parts are timed from outside it: the wrappers report to
	// the driver, which runs them inside Step (see Driver.observe).
	var drv *Driver
	note := func(name string, start time.Time) { drv.notePhase(name, start, time.Now()) }
	strategy := timedStrategy{engine.FedAvg{Fraction: job.Clients.Fraction, Min: job.Clients.Min, Mean: aggregation.FedAvg}, note}
	eng := engine.NewEngine(job, strategy, timedEvaluator{&ModelEvaluator{Model: m.Clone(), Data: cfg.Validation}, note}, m.Params())
	var games *gameRecorder
	if job.Valuation.Mode != engine.ModeOff {
		mv := &ModelValuer{Job: job, Model: m.Clone(), Data: cfg.Validation}
		if cfg.ExportGames != "" {
			if err := os.MkdirAll(cfg.ExportGames, 0o755); err != nil {
				return nil, fmt.Errorf("coordinator: --export-games: %w", err)
			}
			games = &gameRecorder{games: map[int]*recordedGame{}}
			mv.games = games
		}
		eng.SetValuer(timedValuer{mv, note})
	}
	if job.Secure() {
		eng.SetSubmissionStores(spillStores(cfg.SpillDir, cfg.Log))
	}
	snap, err := cfg.Store.Load()
	if err != nil {
		return nil, fmt.Errorf("coordinator: load state: %w", err)
	}
	if err := eng.Restore(snap); err != nil {
		return nil, err
	}
	if n := len(snap.Rounds); n > 0 {
		cfg.Log.Info("resuming job from its state file", "rounds_recorded", n, "next_round", eng.Round(), "phase", eng.Phase().String())
	}
	if from := eng.JobCopyCheckFrom(); from > 1 {
		cfg.Log.Warn("the state file holds no accumulated distances between clients' updates (written before they were stored): copies over the job are looked for from round copy_check_from_round on only, and a copy the earlier rounds would have shown is not caught",
			"copy_check_from_round", from)
	}
	drv = NewDriver(eng, cfg.Store, time.Duration(job.Tick), cfg.Log)
	drv.OnRound = cfg.OnRound
	drv.OnRelease = cfg.OnRelease
	if games != nil {
		onRound, dir, log := cfg.OnRound, cfg.ExportGames, cfg.Log
		drv.OnRound = func(r engine.RoundRecord) {
			if g := games.take(r.Round); g != nil {
				if err := exportGame(dir, r, g); err != nil {
					log.Warn("exporting the round's game failed", "round", r.Round, "err", err.Error())
				}
			}
			if onRound != nil {
				onRound(r)
			}
		}
	}
	drv.Telemetry = cfg.Telemetry
	if bs, ok := cfg.Store.(*BoltStore); ok {
		path := bs.DB().Path()
		if err := cfg.Telemetry.Gauge("tally.ledger.size", "By", "Size of the state and ledger file.", func() int64 {
			fi, err := os.Stat(path)
			if err != nil {
				return 0
			}
			return fi.Size()
		}); err != nil {
			return nil, err
		}
	}
	svc := NewService(job, drv, m.NumParams(), cfg.Log)
	svc.tel = cfg.Telemetry
	as, ok := cfg.Store.(AuthStore)
	if !ok {
		as = newMemoryAuth()
	}
	if err := svc.setAuth(as, cfg.TokensFile); err != nil {
		return nil, err
	}
	if rs, ok := cfg.Store.(ReceiptSource); ok {
		svc.receipts = rs
	}
	if cfg.UploadSlots > 0 {
		svc.uploads = newUploadGate(cfg.UploadSlots, UploadLease)
	}
	return &Server{cfg: cfg, engine: eng, driver: drv, service: svc, model: m}, nil
}

// Status is the operator's view of the job, safe to call at any time.
func (s *Server) Status() Status { return s.driver.Status() }

// Model returns a model of the job's architecture, for evaluating outcomes.
func (s *Server) Model() model.Model { return s.model.Clone() }

// Run serves on lis and drives the job until it ends or ctx is cancelled.
// Shutdown order: the driver stops first, and only between two steps, so
// the store write of the step in progress completes and nothing changes
// after it; health then reports NOT_SERVING, the service lingers so polling
// clients learn the job ended, and the gRPC server stops gracefully,
// finishing calls in flight (their events find the driver stopped and
// change nothing). The plaintext health server (HealthListener) stops
// last, at once: its calls are short probes, and it reports NOT_SERVING
// until then.
func (s *Server) Run(ctx context.Context, lis net.Listener) (Outcome, error) {
	// Fixed windows: gRPC's BDP estimator would otherwise grow every
	// stream's window to megabytes on a fast link, and an upload stream
	// waiting at the gate would hold that much (see UploadWindowBytes).
	// The message caps and keepalives are the Wire limits of service.go.
	opts := append([]grpc.ServerOption{
		grpc.StaticStreamWindowSize(UploadWindowBytes),
		grpc.StaticConnWindowSize(ConnWindowBytes),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.StatsHandler(s.cfg.Telemetry.ServerHandler()),
		// Every call but Enroll's is signed by its client (auth.go).
		grpc.ChainUnaryInterceptor(s.service.UnaryAuth),
		grpc.ChainStreamInterceptor(s.service.StreamAuth),
	}, s.cfg.GRPCOptions...)
	if s.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.cfg.TLS)))
	}
	srv := grpc.NewServer(opts...)
	tallyv1.RegisterCoordinatorServiceServer(srv, s.service)
	// The standard health service: SERVING, for the whole server and for
	// the coordinator service by name, until the job stops.
	hs := health.NewServer()
	hs.SetServingStatus(tallyv1.CoordinatorService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	// Reflection, so grpcurl and similar tools list and call the API
	// without the .proto files.
	reflection.Register(srv)
	var wg sync.WaitGroup
	wg.Add(1)
	serveErr := make(chan error, 2)
	go func() {
		defer wg.Done()
		serveErr <- srv.Serve(lis)
	}()
	var probes *grpc.Server
	if s.cfg.HealthListener != nil {
		// The same health server behind both: one status, set in one place.
		probes = grpc.NewServer()
		healthpb.RegisterHealthServer(probes, hs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveErr <- probes.Serve(s.cfg.HealthListener)
		}()
	}
	runErr := s.driver.Run(ctx)
	hs.Shutdown()
	if runErr == nil {
		s.linger(ctx)
	}
	srv.GracefulStop()
	if probes != nil {
		probes.Stop()
	}
	wg.Wait()
	close(serveErr)
	for err := range serveErr {
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) && runErr == nil {
			runErr = err
		}
	}
	st := s.driver.Status()
	return Outcome{Global: s.engine.Global(), Scaler: s.engine.Scaler(), History: st.History, Done: st.Done}, runErr
}

func (s *Server) linger(ctx context.Context) {
	deadline := time.NewTimer(s.cfg.Linger)
	defer deadline.Stop()
	for {
		told, changed := s.service.toldDone()
		if told >= len(s.driver.Status().Clients) {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// phaseNote reports that phase name ran from start until now.
type phaseNote func(name string, start time.Time)

// timedStrategy reports the strategy's select and aggregate phases.
type timedStrategy struct {
	engine.Strategy
	note phaseNote
}

func (s timedStrategy) Select(available []string, rng *rand.Rand) []string {
	defer s.note(telemetry.PhaseSelect, time.Now())
	return s.Strategy.Select(available, rng)
}

func (s timedStrategy) Aggregate(global []float64, results []engine.Result) ([]float64, error) {
	defer s.note(telemetry.PhaseAggregate, time.Now())
	return s.Strategy.Aggregate(global, results)
}

// timedEvaluator reports the evaluation of each next model.
type timedEvaluator struct {
	engine.Evaluator
	note phaseNote
}

func (e timedEvaluator) Evaluate(params []float64, scaler *dataset.Scaler) (model.Metrics, error) {
	defer e.note(telemetry.PhaseEvaluate, time.Now())
	return e.Evaluator.Evaluate(params, scaler)
}

// timedValuer reports each valuation as the valuate phase.
type timedValuer struct {
	engine.Valuer
	note phaseNote
}

func (v timedValuer) Game(round int, base, known []float64, updates [][]float64, weights []float64, scaler *dataset.Scaler) (valuation.Result, error) {
	defer v.note(telemetry.PhaseValuate, time.Now())
	return v.Valuer.Game(round, base, known, updates, weights, scaler)
}

func (v timedValuer) Surrogate(round int, base, known, total, a, weights []float64, scaler *dataset.Scaler) (valuation.Result, error) {
	defer v.note(telemetry.PhaseValuate, time.Now())
	return v.Valuer.Surrogate(round, base, known, total, a, weights, scaler)
}

func (v timedValuer) Gradient(base, known []float64, scaler *dataset.Scaler) ([]float64, error) {
	defer v.note(telemetry.PhaseValuate, time.Now())
	return v.Valuer.Gradient(base, known, scaler)
}

// ProjectionVectors and Projection pass the projection mode through when
// the valuer has it (engine.ProjectionValuer).
func (v timedValuer) ProjectionVectors(base, known, total []float64, scaler *dataset.Scaler) ([][]float64, []float64, error) {
	defer v.note(telemetry.PhaseValuate, time.Now())
	pv, ok := v.Valuer.(engine.ProjectionValuer)
	if !ok {
		return nil, nil, fmt.Errorf("coordinator: the valuer has no projection mode")
	}
	return pv.ProjectionVectors(base, known, total, scaler)
}

func (v timedValuer) Projection(round int, at []float64, vectors, scalars [][]float64, weights []float64, scaler *dataset.Scaler) (valuation.Result, error) {
	defer v.note(telemetry.PhaseValuate, time.Now())
	pv, ok := v.Valuer.(engine.ProjectionValuer)
	if !ok {
		return valuation.Result{}, fmt.Errorf("coordinator: the valuer has no projection mode")
	}
	return pv.Projection(round, at, vectors, scalars, weights, scaler)
}
