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
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"golang.org/x/term"
	"google.golang.org/grpc"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/coordinator"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
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

// coordinatorGCPercent is the coordinator's default GOGC. What the
// coordinator allocates per client is mostly short-lived (each upload
// message decoded, added and dropped), so with Go's default of 100 its
// peak resident memory was about twice its live heap, and the part that
// grows with the number of clients doubled with it. At 50, on this
// project's 2-core machine (BenchmarkPeakMemory, influence valuation,
// three runs alternated, 2026-12-03), the peak went from 226–236 MiB to
// 180–182 MiB at 100 clients and from 180–184 to 152–161 MiB at 10 (the
// ratio from 1.26–1.29 to 1.12–1.19), for a coordinator CPU time over
// the 100-client job of 4.49–4.73 s against 4.41–4.66 s: collections
// cost little when most of the heap is a few large buffers.
const coordinatorGCPercent = 50

func runCoordinator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("coordinator")
	fs.SetOutput(stderr)
	config := fs.String("config", "", "job file (YAML); see the README's job-file reference")
	listen := fs.String("listen", "", "gRPC listen address (default: the job file's listen, else 127.0.0.1:7070)")
	report := fs.String("report", "", "write a JSON report to this file when the job ends")
	state := fs.String("state", "", "the coordinator's state file (bbolt): jobs, rounds, model, receipts; a restarted coordinator resumes from it (default: JOB_ID.db next to the job file)")
	backup := fs.String("backup", "", "after every completed round, write a consistent copy of the state file to this file (replaced atomically); see the README, \"Recovering a damaged state file\"")
	verbose := fs.Bool("verbose", false, "debug logging")
	metricsAddr := fs.String("metrics-addr", defaultMetricsAddr, "Prometheus endpoint (/metrics) address; empty to turn it off. OTLP export is on when OTEL_EXPORTER_OTLP_ENDPOINT is set")
	exportGames := fs.String("export-games", "", "directory to write each round's valuation game as CSV, round-RRR.csv: bitmask,players,clients,utility, one row per coalition evaluated")
	tokens := fs.String("tokens", "", "the job's tokens file, written by tally token create and reread when it changes (default: JOB_ID.tokens next to the job file)")
	healthAddr := fs.String("health-addr", "", "also serve the gRPC health service (grpc.health.v1), alone and in plaintext, on this address, for probes that speak no TLS such as Kubernetes' gRPC probes (default: off)")
	afterDone := fs.String("after-done", "exit", "exit or wait: when the job is done, exit, or keep the health service (SERVING) and the dashboard up until a stop signal; a Kubernetes StatefulSet restarts a pod that exits, so the chart passes wait")
	dash := addDashFlags(fs)
	var tf tlsFiles
	fs.StringVar(&tf.cert, "tls-cert", "", "serve TLS with this certificate (PEM); needs --tls-key")
	fs.StringVar(&tf.key, "tls-key", "", "the private key of --tls-cert (PEM)")
	fs.StringVar(&tf.ca, "client-ca", "", "mutual TLS: admit only connections with a client certificate signed by this CA (PEM)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the coordinator, from start to exit, to this file, for go tool pprof")
	memProfile := fs.String("memprofile", "", "write a heap profile (allocations since start, and what is live) to this file when the coordinator exits, for go tool pprof")
	releaseLog := fs.String("release-log", "", "keep every plaintext the coordinator decrypts, keyed to its transcript entry, in this append-only file (continued after a restart), for tally audit job: what the threat model's curious coordinator holds")
	plaintext := fs.Bool("insecure-plaintext", false, "INSECURE: serve plaintext gRPC without TLS (the job file's tls_cert is ignored); every client must pass --insecure-plaintext too. For loopback tests only")
	gcPercent := fs.Int("gc-percent", coordinatorGCPercent, "the Go garbage collector's target (GOGC) for the coordinator: heap growth allowed over the live heap, in percent; lower holds less memory at the price of more collections. Default: GOGC from the environment if set, else this")
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
	if !slices.Contains(afterDoneModes, *afterDone) {
		fmt.Fprintf(stderr, "--after-done %q: want one of %v\n", *afterDone, afterDoneModes)
		return errUsage
	}
	gcSet := false
	fs.Visit(func(f *flag.Flag) { gcSet = gcSet || f.Name == "gc-percent" })
	if *gcPercent < 1 {
		fmt.Fprintf(stderr, "--gc-percent %d: want a percentage of at least 1\n", *gcPercent)
		return errUsage
	}
	if _, env := os.LookupEnv("GOGC"); gcSet || !env {
		defer debug.SetGCPercent(debug.SetGCPercent(*gcPercent))
	}
	stopProfiles, err := startProfiles(*cpuProfile, *memProfile, stderr)
	if err != nil {
		return err
	}
	defer stopProfiles()
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
	store, err := coordinator.OpenJobStore(*state, job, log)
	if err != nil {
		return err
	}
	defer store.Close()
	if *backup != "" {
		store.BackupEachRound(*backup)
	}
	log.Info("receipts are signed with this key", "public_key", ledger.FormatPublicKey(store.PublicKey()), "state", *state)
	metricsSet := false
	fs.Visit(func(f *flag.Flag) { metricsSet = metricsSet || f.Name == "metrics-addr" })
	tel, err := startTelemetry(ctx, *metricsAddr, !metricsSet, log)
	if err != nil {
		return err
	}
	// After the server: the last round's metrics and spans are flushed.
	defer shutdownTelemetry(tel, log)
	tlsCfg, err := coordinatorTLS(job, tf, *plaintext, stderr, log)
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
	var probes net.Listener
	if *healthAddr != "" {
		if probes, err = net.Listen("tcp", *healthAddr); err != nil {
			return fmt.Errorf("--health-addr: listen on %s: %w", *healthAddr, err)
		}
		// srv.Run closes it; this covers a return before Run.
		defer probes.Close()
		log.Info("health service in plaintext for probes", "addr", probes.Addr().String())
	}
	var onRelease func(engine.Release) error
	if *releaseLog != "" {
		rl, err := openCoordinatorReleaseLog(*releaseLog, job)
		if err != nil {
			return err
		}
		defer rl.Close()
		onRelease = rl.Append
	}
	srv, err := coordinator.NewServer(coordinator.ServerConfig{Job: job, Validation: val, Log: log, Store: store, Telemetry: tel.Telemetry,
		TokensFile: *tokens, TLS: tlsCfg, GRPCOptions: dash.grpcOptions(), Model: evaluator, HealthListener: probes, OnRelease: onRelease, ExportGames: *exportGames})
	if err != nil {
		return err
	}
	if err := dash.start(ctx, job, srv, store.DB(), tel.Addr(), log); err != nil {
		return err
	}
	defer dash.close()
	lis, err := net.Listen("tcp", job.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", job.Listen, err)
	}
	log.Info("coordinator listening", "addr", lis.Addr().String(), "job", job.ID, "clients", len(job.Clients.Enrolment), "rounds", job.Rounds,
		"tls", tlsCfg != nil, "mutual_tls", tlsCfg != nil && tlsCfg.ClientCAs != nil, "tokens", *tokens)
	// Said at start, on stdout and in the log: how many clients the job
	// can lose. A job that can lose none runs (small demos are like that),
	// but its operator is told before a lost client stops it.
	tol := job.DropoutTolerance()
	if tol.Dropouts == 0 {
		log.Warn("the job tolerates no dropout: one client lost for good stops it", "dropouts", tol.Dropouts, "needed", tol.Needed,
			"enrolled", tol.Enrolled, "committee_dropouts", tol.CommitteeDropouts)
		fmt.Fprintf(stdout, "job %s %s\nwarning: one client lost for good stops this job; enrol more clients or lower clients.min / min_group_size\n", job.ID, tol)
	} else {
		log.Info("dropout tolerance", "dropouts", tol.Dropouts, "needed", tol.Needed, "enrolled", tol.Enrolled, "committee_dropouts", tol.CommitteeDropouts)
		fmt.Fprintf(stdout, "job %s %s\n", job.ID, tol)
	}
	out, err := srv.Run(ctx, lis)
	if err != nil {
		return err
	}
	contribs, err := engine.Contributions(job, out.History)
	if err != nil {
		return err
	}
	printContributions(stdout, contributionTable(job, out, srv.Status().Clients, contribs))
	rep := map[string]any{"job": job.ID, "seed": job.Seed, "rounds": out.History, "final_model": out.Global, "contributions": contribs,
		"receipt_public_key": ledger.FormatPublicKey(store.PublicKey())}
	if d := dpReport(job, out.History); d != nil {
		rep["dp"] = d
	}
	if out.Done == nil || out.Done.FinalRound < job.Rounds {
		// A job that stopped early is a failure of the command, with its
		// reason; the report still records what was done.
		final, reason := 0, "no reason recorded"
		if out.Done != nil {
			final, reason = out.Done.FinalRound, out.Done.Reason
		}
		rep["stopped"] = reason
		fmt.Fprintf(stdout, "job %s stopped after round %d of %d: %s\n", job.ID, final, job.Rounds, reason)
		if *report != "" {
			if err := writeJSON(*report, rep); err != nil {
				return err
			}
		}
		return fmt.Errorf("job %s stopped after round %d of %d: %s", job.ID, final, job.Rounds, reason)
	}
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
		if err := writeJSON(*report, rep); err != nil {
			return err
		}
	}
	if *afterDone == "wait" {
		return waitAfterDone(ctx, *healthAddr, stdout, log)
	}
	dash.wait(ctx, stdout)
	return nil
}

// contributionTable is the table simulate prints, for a coordinator's job:
// samples as the clients announced them, and no corruption column.
func contributionTable(job engine.Job, out coordinator.Outcome, samples map[string]int64, contribs []engine.Contribution) *simReport {
	rep := &simReport{Valuation: valuationRep{Mode: job.Valuation.Mode, Method: job.Valuation.Method}}
	for _, r := range out.History {
		if !r.Failed && r.Valuation != nil {
			rep.Valuation.UtilityEvaluations += r.Valuation.Evaluations
		}
	}
	for _, c := range contribs {
		rep.Contributions = append(rep.Contributions, contribRep{Client: c.Client, Samples: int(samples[c.Client]),
			Value: c.Value, StdErr: c.StdErr, Rank: c.Rank, Payout: c.Payout, Quota: c.Quota})
	}
	return rep
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

func loadSource(job engine.Job, src engine.SourceConfig, field string) (model.Examples, error) {
	path := src.CSV
	if !filepath.IsAbs(path) {
		path = filepath.Join(job.Dir, path)
	}
	// Labels map onto the job's class names, as the clients' do: a label
	// the job does not have is an error naming its line.
	ds, err := dataset.LoadCSV(path, dataset.CSVOptions{Label: src.Label, Classes: job.Data.ClassNames})
	if err != nil {
		return model.Examples{}, fmt.Errorf("%s: %w", field, err)
	}
	if ds.Examples.Features != job.Data.Features {
		return model.Examples{}, fmt.Errorf("%s: %s has %d feature columns, data.features is %d", field, path, ds.Examples.Features, job.Data.Features)
	}
	return ds.Examples, nil
}

func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "keygen" {
		return runClientKeygen(args[1:], stdout, stderr)
	}
	fs := newFlagSet("client")
	fs.SetOutput(stderr)
	join := fs.String("join", "", "coordinator or edge address, host:port; several, comma-separated (edges of the job, then the coordinator), to fail over from one that dies to the next")
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
	manifestFile := fs.String("manifest", "", "the job manifest this client holds the coordinator to (default: job.manifest.json next to --data, if there)")
	manifestSHA := fs.String("manifest-sha256", "", "fetch the manifest from the coordinator and accept it only with this fingerprint (hex, as the ML team gave it to you)")
	noManifest := fs.Bool("insecure-no-manifest", false, "INSECURE: run without a manifest, taking the job, its HE parameters, the committee and the receipt key on the coordinator's word")
	plaintext := fs.Bool("insecure-plaintext", false, "INSECURE: connect without TLS, only to a coordinator started with --insecure-plaintext")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: tally client --join ADDR --token T --data FILE.csv [flags]
       tally client keygen --key FILE

Joins a job as a data holder: enrols with the token, binding a key pair it
generates (kept in --key) to its identity, waits for tasks, trains on the
local CSV file and submits model updates (never rows), signing every call
with that key. Before it enrols it asks the coordinator for the job's
class names and maps its labels onto them by name (numbers are read as
class indices); a label the job does not have fails there, naming the
file, line and value, with the token unspent. If the coordinator goes away the client reconnects with
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
	// The file is read now, so that a malformed one fails at once; its
	// labels are mapped onto the job's class names, by name, once the
	// client has asked the coordinator for them, before it enrols.
	table, err := dataset.LoadTable(*data, dataset.CSVOptions{Label: *label})
	if err != nil {
		return err
	}
	labels := func(classes []string) (model.Examples, error) {
		ds, err := table.Label(classes)
		if err != nil {
			return model.Examples{}, err
		}
		return ds.Examples, nil
	}
	if *manifestFile == "" && *manifestSHA == "" {
		if def := filepath.Join(filepath.Dir(*data), "job.manifest.json"); fileExists(def) {
			*manifestFile = def
		}
	}
	ctx, fatal := context.WithCancelCause(ctx)
	defer fatal(nil)
	addrs := strings.Split(*join, ",")
	m, transport, err := clientTransport(ctx, addrs[0], tf, *manifestFile, *manifestSHA, *noManifest, *plaintext, fatal)
	if err != nil {
		return err
	}
	if m != nil {
		if err := checkKeyListed(m, *keyFile); err != nil {
			return err
		}
	}
	var conns []grpc.ClientConnInterface
	for _, a := range addrs {
		cc, err := grpc.NewClient(strings.TrimSpace(a), transport)
		if err != nil {
			return err
		}
		defer cc.Close()
		conns = append(conns, cc)
	}
	var conn grpc.ClientConnInterface = conns[0]
	if len(conns) > 1 {
		conn = client.NewFailover(conns, addrs, newLogger(stderr, *verbose))
	}
	if *receipts == "" {
		*receipts = *data + ".receipts.jsonl"
	}
	log := newLogger(stderr, *verbose)
	tr := &trainers{command: *trainer, stderr: stderr, log: log}
	defer tr.Close()
	c, err := client.New(client.Config{Conn: conn, Token: *token, Name: *name, Labels: labels, Log: log, MaxBackoff: 5 * time.Second, ReceiptsFile: *receipts, KeyFile: *keyFile,
		NewModel: tr.newModel, Manifest: m})
	if err != nil {
		return err
	}
	if m != nil {
		log.Info("holding the coordinator to the manifest", "job", m.Job, "sha256", m.FingerprintHex(), "participants", len(m.Participants))
	}
	if err := c.Run(ctx); err != nil {
		if cause := refusedCause(ctx); cause != nil {
			return cause
		}
		return err
	}
	fmt.Fprintf(stdout, "job finished; %d model updates submitted; receipts in %s\n", c.Submitted, *receipts)
	return nil
}
