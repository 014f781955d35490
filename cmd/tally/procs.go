package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/term"
	"google.golang.org/grpc"
	"gopkg.in/yaml.v3"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/coordinator"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/internal/telemetry"
	"github.com/tallyfl/tally/ledger"
	"github.com/tallyfl/tally/model"
)

// newLogger logs text on a terminal and JSON otherwise.
func newLogger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func runCoordinator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("coordinator")
	fs.SetOutput(stderr)
	config := fs.String("config", "", "job file (YAML); see the README's job-file reference")
	listen := fs.String("listen", "", "gRPC listen address (default: the job file's listen, else 127.0.0.1:7070)")
	report := fs.String("report", "", "write a JSON report to this file when the job ends")
	state := fs.String("state", "", "the coordinator's state file (bbolt): jobs, rounds, model, receipts; a restarted coordinator resumes from it (default: JOB_ID.db next to the job file)")
	verbose := fs.Bool("verbose", false, "debug logging")
	metricsAddr := fs.String("metrics-addr", defaultMetricsAddr, "Prometheus endpoint (/metrics) address; empty to turn it off. OTLP export is on when OTEL_EXPORTER_OTLP_ENDPOINT is set")
	tokens := fs.String("tokens", "", "the job's tokens file, written by tally token create and reread when it changes (default: JOB_ID.tokens next to the job file)")
	var tf tlsFiles
	fs.StringVar(&tf.cert, "tls-cert", "", "serve TLS with this certificate (PEM); needs --tls-key")
	fs.StringVar(&tf.key, "tls-key", "", "the private key of --tls-cert (PEM)")
	fs.StringVar(&tf.ca, "client-ca", "", "mutual TLS: admit only connections with a client certificate signed by this CA (PEM)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: tally coordinator --config job.yaml [flags]

Runs a job's coordinator: it admits the clients listed in the job file
that enrol with a valid token (tally token create), and authenticates
every later call by the key each client bound at enrolment,
sends them training tasks round after round, aggregates their updates,
evaluates the global model on its validation set after every round and
logs the progress (text on a terminal, JSON otherwise) to stderr.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *config == "" {
		fmt.Fprintln(stderr, "--config is required")
		fs.Usage()
		return errUsage
	}
	job, err := coordinator.LoadJob(*config)
	if err != nil {
		return err
	}
	if *listen != "" {
		job.Listen = *listen
	}
	val, err := loadSource(job, job.Data.Validation, "data.validation")
	if err != nil {
		return err
	}
	var test *model.Examples
	if job.Data.Test.CSV != "" {
		t, err := loadSource(job, job.Data.Test, "data.test")
		if err != nil {
			return err
		}
		test = &t
	}
	log := newLogger(stderr, *verbose)
	if *state == "" {
		*state = filepath.Join(job.Dir, job.ID+".db")
	}
	store, err := coordinator.OpenBoltStore(*state, job.ID)
	if err != nil {
		return err
	}
	defer store.Close()
	log.Info("receipts are signed with this key", "public_key", ledger.FormatPublicKey(store.PublicKey()), "state", *state)
	metricsSet := false
	fs.Visit(func(f *flag.Flag) { metricsSet = metricsSet || f.Name == "metrics-addr" })
	tel, err := startTelemetry(ctx, *metricsAddr, !metricsSet, log)
	if err != nil {
		return err
	}
	// After the server: the last round's metrics and spans are flushed.
	defer shutdownTelemetry(tel, log)
	tlsCfg, err := tf.serverTLS()
	if err != nil {
		return err
	}
	if *tokens == "" {
		*tokens = coordinator.TokensPath(job)
	}
	evaluator, closeEvaluator, err := coordinatorModel(job, stderr, log)
	if err != nil {
		return err
	}
	defer closeEvaluator.Close()
	srv, err := coordinator.NewServer(coordinator.ServerConfig{Job: job, Validation: val, Log: log, Store: store, Telemetry: tel.Telemetry,
		TokensFile: *tokens, TLS: tlsCfg, Model: evaluator})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", job.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", job.Listen, err)
	}
	log.Info("coordinator listening", "addr", lis.Addr().String(), "job", job.ID, "clients", len(job.Clients.Enrolment), "rounds", job.Rounds,
		"tls", tlsCfg != nil, "mutual_tls", tlsCfg != nil && tlsCfg.ClientCAs != nil, "tokens", *tokens)
	out, err := srv.Run(ctx, lis)
	if err != nil {
		return err
	}
	contribs, err := coordinator.Contributions(job, out.History)
	if err != nil {
		return err
	}
	rep := map[string]any{"job": job.ID, "seed": job.Seed, "rounds": out.History, "final_model": out.Global, "contributions": contribs,
		"receipt_public_key": ledger.FormatPublicKey(store.PublicKey())}
	if test != nil {
		m := srv.Model()
		data := *test
		if out.Scaler != nil {
			data = out.Scaler.Apply(data)
		}
		if err := m.SetParams(out.Global); err != nil {
			return err
		}
		met, err := m.Evaluate(data)
		if err != nil {
			return err
		}
		rep["test_accuracy"], rep["test_loss"] = met.Accuracy, met.Loss
		fmt.Fprintf(stdout, "job %s done after round %d: test accuracy %.4f (loss %.4f)\n", job.ID, out.Done.FinalRound, met.Accuracy, met.Loss)
	} else {
		fmt.Fprintf(stdout, "job %s done after round %d\n", job.ID, out.Done.FinalRound)
	}
	if *report != "" {
		return writeJSON(*report, rep)
	}
	return nil
}

// defaultMetricsAddr is where `tally coordinator` serves /metrics unless
// told otherwise: Prometheus exporters conventionally take ports from 9090
// up, and loopback keeps the endpoint private until an operator opens it.
const defaultMetricsAddr = "127.0.0.1:9090"

// startTelemetry starts the metrics endpoint and, when the OTLP variables
// are set, the OTLP exporters. An address that was only the default and is
// taken (a second coordinator on the host, a Prometheus server) is not
// worth failing for: the coordinator runs on without the endpoint.
func startTelemetry(ctx context.Context, addr string, isDefault bool, log *slog.Logger) (*telemetry.Provider, error) {
	p, err := telemetry.Start(ctx, telemetry.Config{MetricsAddr: addr, Log: log})
	if err != nil && isDefault && errors.Is(err, telemetry.ErrEndpoint) {
		log.Warn("no metrics endpoint: the default address is taken; set --metrics-addr", "addr", addr, "err", err)
		p, err = telemetry.Start(ctx, telemetry.Config{Log: log})
	}
	return p, err
}

// shutdownTelemetry flushes the exporters, also after a signal cancelled
// the job's context.
func shutdownTelemetry(p *telemetry.Provider, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		log.Warn("telemetry shutdown", "err", err)
	}
}

func loadSource(job coordinator.Job, src coordinator.SourceConfig, field string) (model.Examples, error) {
	path := src.CSV
	if !filepath.IsAbs(path) {
		path = filepath.Join(job.Dir, path)
	}
	ds, err := dataset.LoadCSV(path, dataset.CSVOptions{Label: src.Label})
	if err != nil {
		return model.Examples{}, fmt.Errorf("%s: %w", field, err)
	}
	if ds.Examples.Features != job.Data.Features {
		return model.Examples{}, fmt.Errorf("%s: %s has %d feature columns, data.features is %d", field, path, ds.Examples.Features, job.Data.Features)
	}
	for i, y := range ds.Examples.Y {
		if y >= job.Data.Classes {
			return model.Examples{}, fmt.Errorf("%s: %s: row %d has label %d, data.classes is %d", field, path, i+1, y, job.Data.Classes)
		}
	}
	return ds.Examples, nil
}

func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("client")
	fs.SetOutput(stderr)
	join := fs.String("join", "", "coordinator address, host:port")
	token := fs.String("token", "", "enrolment token issued by the ML team")
	data := fs.String("data", "", "local training data (CSV); it never leaves this process")
	label := fs.String("label", "", "label column, by name or index (default: last)")
	name := fs.String("name", "", "a name for the coordinator's logs (optional)")
	receipts := fs.String("receipts", "", "file this client keeps its verified receipts in, as JSON lines (default: the data file's name + .receipts.jsonl)")
	keyFile := fs.String("key", "", "file this client keeps its Ed25519 key and enrolled identity in, created at first start, mode 0600 (default: the data file's name + .key)")
	verbose := fs.Bool("verbose", false, "debug logging")
	trainer := fs.String("trainer", "", "train with this adapter command instead of the built-in model (an external model's training side; protocol in docs/external-models.md), e.g. '/usr/bin/python3 examples/pytorch/digits_cnn.py'")
	var tf tlsFiles
	fs.StringVar(&tf.ca, "tls-ca", "", "connect over TLS and verify the coordinator against this CA (PEM); without it, TLS flags verify against the system's roots")
	fs.StringVar(&tf.cert, "tls-cert", "", "connect over TLS presenting this client certificate (PEM), for a coordinator with --client-ca; needs --tls-key")
	fs.StringVar(&tf.key, "tls-key", "", "the private key of --tls-cert (PEM)")
	fs.StringVar(&tf.serverName, "tls-server-name", "", "the name the coordinator's certificate must carry (default: the host of --join)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: tally client --join ADDR --token T --data FILE.csv [flags]

Joins a job as a data holder: enrols with the token, binding a key pair it
generates (kept in --key) to its identity, waits for tasks, trains on the
local CSV file and submits model updates (never rows), signing every call
with that key. If the coordinator goes away the client reconnects with
backoff; a restarted client resumes with its key, without the token. It
exits when the job ends.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	var missing []string
	if *keyFile == "" && *data != "" {
		*keyFile = *data + ".key"
	}
	required := map[string]string{"--join": *join, "--data": *data}
	// A client that enrolled before resumes with its key file; the token
	// is needed only the first time.
	if _, err := os.Stat(*keyFile); err != nil {
		required["--token"] = *token
	}
	for n, v := range required {
		if v == "" {
			missing = append(missing, n)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		fmt.Fprintf(stderr, "missing required flags: %v\n", missing)
		fs.Usage()
		return errUsage
	}
	ds, err := dataset.LoadCSV(*data, dataset.CSVOptions{Label: *label})
	if err != nil {
		return err
	}
	transport, err := tf.dialOption()
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(*join, transport)
	if err != nil {
		return err
	}
	defer conn.Close()
	if *receipts == "" {
		*receipts = *data + ".receipts.jsonl"
	}
	log := newLogger(stderr, *verbose)
	tr := &trainers{command: *trainer, stderr: stderr, log: log}
	defer tr.Close()
	c, err := client.New(client.Config{Conn: conn, Token: *token, Name: *name, Data: ds.Examples, Log: log, MaxBackoff: 5 * time.Second, ReceiptsFile: *receipts, KeyFile: *keyFile,
		NewModel: tr.newModel})
	if err != nil {
		return err
	}
	if err := c.Run(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "job finished; %d model updates submitted; receipts in %s\n", c.Submitted, *receipts)
	return nil
}

func runData(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("data")
	fs.SetOutput(stderr)
	name := fs.String("dataset", "breast-cancer", "embedded dataset to split")
	clients := fs.Int("clients", 3, "number of client shards")
	out := fs.String("out", "", "directory to write into (created if missing)")
	seed := fs.Uint64("seed", 1, "seed of the split and partition")
	partition := fs.String("partition", "iid", "iid, dirichlet or size-skew")
	rounds := fs.Int("rounds", 10, "rounds in the generated job file")
	listen := fs.String("listen", "127.0.0.1:7070", "listen address in the generated job file")
	modelCommand := fs.String("model-command", "", "the job's model is external: the coordinator evaluates with this adapter command (clients then need --trainer)")
	scaling := fs.String("scaling", "federated", "feature scaling in the generated job file: federated or none")
	lr := fs.Float64("lr", 0.05, "the clients' learning rate in the generated job file")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: tally data --out DIR [flags]

Writes an embedded dataset as separate CSV files, for running a coordinator
and clients as separate processes: client-0.csv … client-N.csv (one shard
each), validation.csv and test.csv (the coordinator's), job.yaml, a job
file naming the clients, and one fresh single-use enrolment token per
client, issued as by tally token create: its hash in JOB_ID.tokens for the
coordinator, the token itself in tokens.txt (id, token, CSV file) to hand
out.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintln(stderr, "--out is required")
		fs.Usage()
		return errUsage
	}
	ds, err := dataset.Embedded(*name)
	if err != nil {
		return err
	}
	fed, err := dataset.Federate(ds, dataset.FederationSpec{Clients: *clients, Partition: dataset.PartitionSpec{Kind: *partition}, ValFrac: 0.2, TestFrac: 0.2, Seed: *seed})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	write := func(file string, e model.Examples) error {
		f, err := os.Create(filepath.Join(*out, file))
		if err != nil {
			return err
		}
		d := &dataset.Dataset{Name: file, FeatureNames: ds.FeatureNames, ClassNames: ds.ClassNames, Examples: e}
		if err := dataset.WriteCSV(f, d); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", file, err)
		}
		return f.Close()
	}
	cfg := coordinator.JobConfig{
		ID: *name + "-job", Seed: *seed, Rounds: *rounds,
		Model: model.Spec{Kind: "logreg"},
		Train: model.TrainConfig{Epochs: 1, BatchSize: 16, LearningRate: *lr, Momentum: 0.9},
		Data: coordinator.DataConfig{Features: ds.Examples.Features, Classes: ds.Classes(),
			Validation: coordinator.SourceConfig{CSV: "validation.csv"}, Test: coordinator.SourceConfig{CSV: "test.csv"}},
		Clients:      coordinator.ClientsConfig{Min: max(1, *clients-1), WaitFor: *clients},
		RoundTimeout: coordinator.Duration(30 * time.Second),
		Scaling:      coordinator.ScalingConfig{Mode: *scaling},
		Listen:       *listen,
	}
	if *modelCommand != "" {
		cfg.Model = model.Spec{Kind: model.KindExternal, Command: *modelCommand}
	}
	for i, c := range fed.Clients {
		file := fmt.Sprintf("client-%d.csv", i)
		if err := write(file, c); err != nil {
			return err
		}
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, coordinator.EnrolmentConfig{ID: fmt.Sprintf("client-%d", i)})
	}
	if err := write("validation.csv", fed.Validation); err != nil {
		return err
	}
	if err := write("test.csv", fed.Test); err != nil {
		return err
	}
	job, err := coordinator.NewJob(cfg, *out)
	if err != nil {
		return fmt.Errorf("generated job file is invalid (a bug): %w", err)
	}
	// Fresh tokens: those of an earlier run in the same directory would be
	// bound already, in a state file of that run.
	if err := os.Remove(coordinator.TokensPath(job)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var tokens string
	for i, e := range cfg.Clients.Enrolment {
		tok, _, err := coordinator.CreateToken(coordinator.TokensPath(job), job, e.ID, 0, 1, time.Now())
		if err != nil {
			return err
		}
		tokens += fmt.Sprintf("%s %s client-%d.csv\n", e.ID, tok, i)
	}
	y, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "job.yaml"), y, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "tokens.txt"), []byte(tokens), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d client shards, validation.csv, test.csv, job.yaml, %s and tokens.txt to %s\n", len(fed.Clients), filepath.Base(coordinator.TokensPath(job)), *out)
	return nil
}
