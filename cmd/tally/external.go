package main

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"

	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/extmodel"
	"github.com/tallyfl/tally/model"
)

// coordinatorModel starts the evaluator of a job whose model is external
// (model.kind external): the coordinator's validation passes, coalition
// evaluations and gradients run in it. For a built-in model it returns
// nil, and NewServer builds the model. The closer ends the adapter.
func coordinatorModel(job engine.Job, stderr io.Writer, log *slog.Logger) (model.Model, io.Closer, error) {
	if job.Model.Kind != model.KindExternal {
		return nil, noClose{}, nil
	}
	m, closer, err := extmodel.New(job.Model, job.Data.Features, job.Data.Classes, job.Seed,
		extmodel.Options{Role: extmodel.RoleEvaluator, Stderr: stderr, Log: log})
	if err != nil {
		return nil, nil, fmt.Errorf("model.command: %w", err)
	}
	log.Info("external model evaluator started", "command", job.Model.Command, "params", m.NumParams())
	return m, closer, nil
}

// trainers builds a client's model when it joins a job: the --trainer
// adapter if one is given, the built-in model otherwise. A client that
// joins again (a coordinator restart) gets a fresh adapter; Close ends
// the last one.
type trainers struct {
	command string
	stderr  io.Writer
	log     *slog.Logger

	mu   sync.Mutex
	proc *extmodel.Process
}

func (t *trainers) newModel(spec model.Spec, features, classes int, seed uint64) (model.Model, error) {
	if t.command == "" {
		if spec.Kind == model.KindExternal {
			return nil, fmt.Errorf("the job's model is external (an adapter process): start this client with --trainer 'COMMAND', the training side of the job's model")
		}
		return model.New(spec, features, classes, seed)
	}
	spec = model.Spec{Kind: model.KindExternal, Command: t.command}
	m, _, err := extmodel.New(spec, features, classes, seed, extmodel.Options{Role: extmodel.RoleTrainer, Stderr: t.stderr, Log: t.log})
	if err != nil {
		return nil, fmt.Errorf("--trainer: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.proc != nil {
		t.proc.Close()
	}
	t.proc = m.(*extmodel.Model).Process()
	return m, nil
}

// Close ends the adapter.
func (t *trainers) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.proc != nil {
		return t.proc.Close()
	}
	return nil
}

// centralisedExternal is centralised for an external model: the same
// adapter, as a trainer, trains on the union of the clients' data for as
// many epochs as the federation ran, and scores the test set.
func centralisedExternal(job engine.Job, fed *dataset.Federation, scaler *dataset.Scaler, stderr io.Writer) (float64, error) {
	union, test := centralData(fed, scaler)
	m, closer, err := extmodel.New(job.Model, job.Data.Features, job.Data.Classes, job.Seed, extmodel.Options{Role: extmodel.RoleTrainer, Stderr: stderr})
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	cfg := job.Train
	cfg.Epochs = job.Rounds * job.Train.Epochs
	if _, err := m.Train(union, cfg, rand.New(rand.NewPCG(job.Seed, 0x63656e74))); err != nil {
		return 0, err
	}
	met, err := m.Evaluate(test)
	return met.Accuracy, err
}

type noClose struct{}

func (noClose) Close() error { return nil }
