package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
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
	Job Job
	// Validation is the coordinator's held-out data, unscaled.
	Validation model.Examples
	Store      Store
	Log        *slog.Logger
	// OnRound is called after each round attempt, from the driver goroutine.
	OnRound func(RoundRecord)
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
}

// Server is a coordinator: the engine, its driver and the gRPC service.
type Server struct {
	cfg     ServerConfig
	engine  *Engine
	driver  *Driver
	service *Service
	model   model.Model
}

// Outcome is what a finished job leaves behind.
type Outcome struct {
	Global  []float64
	Scaler  *dataset.Scaler
	History []RoundRecord
	Done    *ActJobDone
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
		return nil, fmt.Errorf("%w: no validation data", ErrConfig)
	}
	if cfg.Validation.Features != job.Data.Features {
		return nil, fmt.Errorf("%w: validation data has %d features, data.features is %d", ErrConfig, cfg.Validation.Features, job.Data.Features)
	}
	m, err := model.New(job.Model, job.Data.Features, job.Data.Classes, job.Seed)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	strategy := FedAvg{Fraction: job.Clients.Fraction, Min: job.Clients.Min, Mean: aggregation.FedAvg}
	eng := NewEngine(job, strategy, &ModelEvaluator{Model: m.Clone(), Data: cfg.Validation}, m.Params())
	if job.Valuation.Mode != ModeOff {
		eng.SetValuer(&ModelValuer{Job: job, Model: m.Clone(), Data: cfg.Validation})
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
	drv := NewDriver(eng, cfg.Store, time.Duration(job.Tick), cfg.Log)
	drv.OnRound = cfg.OnRound
	svc := NewService(job, drv, m.NumParams(), cfg.Log)
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
// Shutdown order: the driver stops first (no state changes after it), the
// service lingers so polling clients learn the job ended, then the gRPC
// server stops gracefully, finishing calls in flight.
func (s *Server) Run(ctx context.Context, lis net.Listener) (Outcome, error) {
	// Fixed windows: gRPC's BDP estimator would otherwise grow every
	// stream's window to megabytes on a fast link, and an upload stream
	// waiting at the gate would hold that much (see UploadWindowBytes).
	opts := append([]grpc.ServerOption{
		grpc.StaticStreamWindowSize(UploadWindowBytes),
		grpc.StaticConnWindowSize(ConnWindowBytes),
	}, s.cfg.GRPCOptions...)
	srv := grpc.NewServer(opts...)
	tallyv1.RegisterCoordinatorServiceServer(srv, s.service)
	var wg sync.WaitGroup
	wg.Add(1)
	serveErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		serveErr <- srv.Serve(lis)
	}()
	runErr := s.driver.Run(ctx)
	if runErr == nil {
		s.linger(ctx)
	}
	srv.GracefulStop()
	wg.Wait()
	if err := <-serveErr; err != nil && !errors.Is(err, grpc.ErrServerStopped) && runErr == nil {
		runErr = err
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
