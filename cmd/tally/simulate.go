package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/coordinator"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/ledger"
	"github.com/tallyfl/tally/manifest"
	"github.com/tallyfl/tally/model"
)

// corruptFlag collects repeated --corrupt i=spec flags.
type corruptFlag map[int]dataset.Corruption

func (c corruptFlag) String() string {
	keys := make([]int, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d=%s", k, c[k]))
	}
	return strings.Join(parts, ",")
}

func (c corruptFlag) Set(s string) error {
	i, spec, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want CLIENT=KIND[:ARG], e.g. 6=label-flip:0.5, got %q", s)
	}
	n, err := strconv.Atoi(i)
	if err != nil || n < 0 {
		return fmt.Errorf("client index %q is not a number ≥ 0", i)
	}
	cor, err := dataset.ParseCorruption(spec)
	if err != nil {
		return err
	}
	c[n] = cor
	return nil
}

// simOptions are the simulate command's settings.
type simOptions struct {
	MetricsAddr         string
	Dataset, CSV, Label string
	Clients, Rounds     int
	Model               string
	Hidden              string
	Partition           string
	Alpha               float64
	Seed                uint64
	Corrupt             corruptFlag
	Epochs, Batch       int
	LR, Momentum        float64
	MinClients          int
	Fraction            float64
	ValFrac, TestFrac   float64
	Scaling             string
	Report              string
	Quiet, Verbose      bool
	RoundTimeout        time.Duration
	CentralisedBaseline bool
	Secure              string
	CommitteeSize       int
	Threshold           int
	MinGroupSize        int
	ValuationMode       string
	ValuationMethod     string
	ExportGames         string
	Utility             string
	Decay               float64
	// DPEpsilon > 0 adds privacy.dp {DPEpsilon, DPDelta, DPClip}.
	DPEpsilon, DPDelta, DPClip float64
	Budget                     float64
	BaselineShare              float64
	DB                         string
	ReceiptsDir                string
	ReleaseLog                 string
	CPUProfile                 string
	Dashboard                  *dashFlags
	ModelCommand               string
	// Edges > 0 puts that many edge aggregators between the clients and
	// the coordinator; KillEdgeAfter > 0 stops the first edge once that
	// round is done (its clients fail over).
	Edges, KillEdgeAfter int
}

// simReport is the JSON report of a simulation. Field names are a stable
// interface: later features add fields, they do not rename these.
type simReport struct {
	Seed      uint64     `json:"seed"`
	Dataset   string     `json:"dataset"`
	Model     model.Spec `json:"model"`
	Partition string     `json:"partition"`
	// Edges are the simulation's edge aggregators (--edges).
	Edges                   []edgeRep     `json:"edges,omitempty"`
	Rounds                  []roundReport `json:"rounds"`
	TestAccuracy            float64       `json:"test_accuracy"`
	TestLoss                float64       `json:"test_loss"`
	CentralisedTestAccuracy *float64      `json:"centralised_test_accuracy,omitempty"`
	Clients                 []clientInfo  `json:"clients"`
	WallSeconds             float64       `json:"wall_seconds"`
	SecureAggregation       string        `json:"secure_aggregation"`
	Committee               *committeeRep `json:"committee,omitempty"`
	Valuation               valuationRep  `json:"valuation"`
	Contributions           []contribRep  `json:"contributions"`
	Decryptions             []decryptRep  `json:"decryptions"`
	DP                      *dpRep        `json:"dp,omitempty"`
}

// dpRep is a job's differential privacy as the reports give it: the
// target, the derived noise, and each client's ε spent at δ.
type dpRep struct {
	Epsilon      float64            `json:"epsilon"`
	Delta        float64            `json:"delta"`
	Clip         float64            `json:"clip"`
	Sigma        float64            `json:"sigma"`
	Contributors int                `json:"contributors"`
	Spent        map[string]float64 `json:"epsilon_spent"`
}

// dpReport reads each client's ε from the last completed round it took
// part in; nil without DP.
func dpReport(job engine.Job, history []engine.RoundRecord) *dpRep {
	d := job.DP
	if d == nil {
		return nil
	}
	rep := &dpRep{Epsilon: d.Epsilon, Delta: d.Delta, Clip: d.Clip, Sigma: d.Sigma, Contributors: d.Contributors, Spent: map[string]float64{}}
	for _, r := range history {
		if r.Failed {
			continue
		}
		for id, e := range r.DPEpsilon {
			rep.Spent[id] = e
		}
	}
	return rep
}

type valuationRep struct {
	Mode               string `json:"mode"`
	Method             string `json:"method"`
	UtilityEvaluations int    `json:"utility_evaluations"`
}

type contribRep struct {
	Client     string  `json:"client"`
	Samples    int     `json:"samples"`
	Corruption string  `json:"corruption"`
	Value      float64 `json:"value"`
	StdErr     float64 `json:"stderr"`
	Rank       int     `json:"rank"`
	Payout     float64 `json:"payout"`
	Quota      float64 `json:"quota"`
}

type decryptRep struct {
	Round        int    `json:"round"`
	Purpose      string `json:"purpose"`
	Contributors int    `json:"contributors"`
}

type committeeRep struct {
	Size      int `json:"size"`
	Threshold int `json:"threshold"`
}

type roundReport struct {
	Round        int     `json:"round"`
	ValLoss      float64 `json:"val_loss"`
	ValAccuracy  float64 `json:"val_accuracy"`
	Contributors int     `json:"contributors"`
	// BytesReceived is the payload the coordinator received for the
	// round's accepted updates (ciphertexts under "he").
	BytesReceived int64                     `json:"bytes_received"`
	Decryptions   []engine.DecryptionRecord `json:"decryptions,omitempty"`
	// DecryptTasks counts the decrypt tasks the committee was given for
	// the round (a batch of influence scalars is one).
	DecryptTasks int `json:"decrypt_tasks,omitempty"`
	// WeightFlags names the clients whose weights n_i were inconsistent.
	WeightFlags []string `json:"weight_flags,omitempty"`
	// ValuationError says why the round could not be valued (its
	// clients then score nothing for it); empty when it was.
	ValuationError string `json:"valuation_error,omitempty"`
}

type clientInfo struct {
	ID         string `json:"id"`
	Samples    int    `json:"samples"`
	Corruption string `json:"corruption"`
}

func simFlags(fs *flag.FlagSet) *simOptions {
	o := &simOptions{Corrupt: corruptFlag{}}
	fs.StringVar(&o.Dataset, "dataset", "breast-cancer", "embedded dataset: "+strings.Join(dataset.EmbeddedNames(), ", ")+" (ignored with --csv)")
	fs.StringVar(&o.CSV, "csv", "", "CSV file to use instead of an embedded dataset")
	fs.StringVar(&o.Label, "label", "", "label column of --csv, by name or index (default: last)")
	fs.IntVar(&o.Clients, "clients", 8, "number of simulated clients")
	fs.IntVar(&o.Rounds, "rounds", 20, "rounds to run")
	fs.StringVar(&o.Model, "model", "logreg", "model kind: logreg or mlp (see --model-command for any other)")
	fs.StringVar(&o.ModelCommand, "model-command", "", "an external model: the adapter command (extmodel's protocol) every client trains with and the coordinator evaluates with, e.g. '/usr/bin/python3 examples/pytorch/digits_cnn.py'; replaces --model")
	fs.StringVar(&o.Hidden, "hidden", "32", "mlp hidden layer widths, comma-separated")
	fs.StringVar(&o.Partition, "partition", "iid", "how training rows are dealt to clients: iid, dirichlet (see --alpha) or size-skew")
	fs.Float64Var(&o.Alpha, "alpha", 0.5, "Dirichlet concentration for --partition dirichlet (smaller: more label skew)")
	fs.Uint64Var(&o.Seed, "seed", 1, "job seed: fixes splits, partitions, corruptions, sampling and initial weights")
	fs.Var(o.Corrupt, "corrupt", "make a client misbehave, repeatable: CLIENT=label-flip:RATE, feature-noise:SIGMA, duplicate:OTHER, free-rider:zero|random|echo (clients are numbered from 0)")
	fs.IntVar(&o.Epochs, "epochs", 2, "local epochs per round")
	fs.IntVar(&o.Batch, "batch-size", 16, "local mini-batch size")
	fs.Float64Var(&o.LR, "lr", 0.1, "local learning rate")
	fs.Float64Var(&o.Momentum, "momentum", 0.9, "local SGD momentum")
	fs.IntVar(&o.MinClients, "min-clients", 0, "updates a round needs (default: half the clients, at least 1)")
	fs.Float64Var(&o.Fraction, "fraction", 1, "fraction of clients selected per round")
	fs.Float64Var(&o.ValFrac, "val-frac", 0.2, "share of rows held out for the coordinator's validation set")
	fs.Float64Var(&o.TestFrac, "test-frac", 0.2, "share of rows held out for the final test")
	fs.StringVar(&o.Scaling, "scaling", "federated", "feature scaling: none or federated (computed from client aggregates)")
	fs.StringVar(&o.Report, "report", "", "write a JSON report to this file")
	fs.Float64Var(&o.DPEpsilon, "dp-epsilon", 0, "differential privacy: each client's ε over the job (privacy.dp.epsilon; default 0: off)")
	fs.Float64Var(&o.DPDelta, "dp-delta", 1e-5, "differential privacy: δ (privacy.dp.delta), with --dp-epsilon")
	fs.Float64Var(&o.DPClip, "dp-clip", 10, "differential privacy: L2 bound C on a client's contribution n_i·Δ_i (privacy.dp.clip), with --dp-epsilon")
	fs.BoolVar(&o.Quiet, "quiet", false, "print only the summary: final and centralised test accuracy")
	fs.BoolVar(&o.Verbose, "verbose", false, "log every coordinator and client event to stderr")
	fs.DurationVar(&o.RoundTimeout, "round-timeout", time.Minute, "close a round after this long with the updates received")
	fs.BoolVar(&o.CentralisedBaseline, "centralised", true, "also train the same model centrally on the union of the clients' data, for comparison")
	fs.IntVar(&o.Edges, "edges", 0, "edge aggregators between the clients and the coordinator (tally edge, in process); each client is given its edge, the others, then the coordinator, and fails over in that order")
	fs.IntVar(&o.KillEdgeAfter, "kill-edge-after", 0, "with --edges: stop the first edge once this round is done (a fail-over rehearsal)")
	fs.StringVar(&o.Secure, "secure-aggregation", "he", "he (updates encrypted under a multiparty CKKS key; the coordinator decrypts only aggregates with a committee) or none (updates in the clear)")
	fs.IntVar(&o.CommitteeSize, "committee-size", 0, "decryption committee size c (default: min(5, clients))")
	fs.IntVar(&o.Threshold, "committee-threshold", 0, "decryption threshold t (default: a majority of the committee)")
	fs.IntVar(&o.MinGroupSize, "min-group-size", 3, "k: no aggregate of fewer than k updates is ever decrypted")
	fs.StringVar(&o.ValuationMode, "valuation-mode", "", "plain (updates in the clear; needs --secure-aggregation none), groups (sums over random groups of ≥ k) influence (one scalar per client) or projection (the true loss along each coalition's step projected onto public vectors, 6 scalars per client a round on breast-cancer, 9 on digits); default: projection with he up to 63 clients a round, influence above (a coalition game holds at most 63 players), plain with none")
	fs.StringVar(&o.ExportGames, "export-games", "", "directory to write each round's valuation game as CSV, round-RRR.csv: bitmask,players,clients,utility, one row per coalition evaluated")
	fs.StringVar(&o.ValuationMethod, "valuation-method", "", "exact-shapley, exact-banzhaf, loo, monte-carlo, tmc, gtg, banzhaf, cgsv or influence (default: exact-shapley up to 16 clients, monte-carlo up to 63 players a round, influence above: coalition games hold at most 63)")
	fs.StringVar(&o.Utility, "utility", "loss", "what a coalition's model is scored by: loss (negative validation loss) or accuracy")
	fs.Float64Var(&o.Decay, "decay", 1, "freshness decay of the job's totals: round r of R counts decay^(R−r) (valuation.decay)")
	fs.Float64Var(&o.Budget, "budget", 100, "payout budget per round (payment.budget_per_round): the job pays this × rounds, the baseline share every round and the rest at the end, in proportion to positive total value")
	fs.Float64Var(&o.BaselineShare, "baseline-share", 0, "share of the budget split equally among every valid submission")
	fs.StringVar(&o.DB, "db", "", "keep the coordinator's state and signed receipts in this bbolt file (default: in memory)")
	fs.StringVar(&o.ReceiptsDir, "receipts-dir", "", "with --db: each client keeps its verified receipts in DIR/CLIENT.jsonl")
	fs.StringVar(&o.ReleaseLog, "release-log", "", "keep every plaintext the coordinator decrypts, keyed to its transcript entry, in this file (replaced; with --secure-aggregation he), for tally audit job")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the whole simulation (coordinator and clients) to this file, for go tool pprof")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", "", "serve the coordinator's Prometheus metrics (/metrics) on this address while the simulation runs (default: off)")
	o.Dashboard = addDashFlags(fs)
	return o
}

func parseHidden(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, fmt.Errorf("--hidden: %q is not a whole number", p)
		}
		out = append(out, n)
	}
	return out, nil
}

func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("simulate")
	fs.SetOutput(stderr)
	o := simFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: tally simulate [flags]

Runs a coordinator and --clients clients in one process; they talk real
gRPC over loopback, exactly as separate processes would. The dataset is split
into the coordinator's validation and test sets and the clients' training
shards. Prints per-round validation loss and accuracy, the final test
accuracy and, for comparison, the test accuracy of the same model trained
centrally on the union of the clients' data.

Example:
  tally simulate --dataset breast-cancer --clients 8 --rounds 20 \
      --corrupt 6=label-flip:0.5 --corrupt 7=free-rider:random --report out/report.json

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	_, err := simulate(ctx, o, stdout, stderr)
	return err
}

func writeJSON(path string, v any) error {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	// Write then rename, so a crash never leaves half a report.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func loadDataset(name, csvPath, label string) (*dataset.Dataset, error) {
	if csvPath != "" {
		return dataset.LoadCSV(csvPath, dataset.CSVOptions{Label: label})
	}
	return dataset.Embedded(name)
}

func simulate(ctx context.Context, o *simOptions, stdout, stderr io.Writer) (*simReport, error) {
	start := time.Now()
	// The simulated clients hold the job to client.FloorMinGroupSize and
	// refuse a smaller k; the coordinator would then wait for clients
	// that never come, round after round (it did, until interrupted).
	if o.Secure == "he" && o.MinGroupSize < client.FloorMinGroupSize {
		return nil, fmt.Errorf("--min-group-size %d: clients refuse to decrypt aggregates of fewer than %d updates, so the job could never run; use at least %d", o.MinGroupSize, client.FloorMinGroupSize, client.FloorMinGroupSize)
	}
	ds, err := loadDataset(o.Dataset, o.CSV, o.Label)
	if err != nil {
		return nil, err
	}
	hidden, err := parseHidden(o.Hidden)
	if err != nil {
		return nil, err
	}
	spec := model.Spec{Kind: o.Model}
	if o.Model == "mlp" {
		spec.Hidden = hidden
	}
	if o.ModelCommand != "" {
		spec = model.Spec{Kind: model.KindExternal, Command: o.ModelCommand}
	}
	part := dataset.PartitionSpec{Kind: o.Partition}
	if o.Partition == dataset.PartitionDirichlet {
		part.Alpha = o.Alpha
	}
	fed, err := dataset.Federate(ds, dataset.FederationSpec{
		Clients: o.Clients, Partition: part, ValFrac: o.ValFrac, TestFrac: o.TestFrac, Seed: o.Seed, Corruptions: o.Corrupt,
	})
	if err != nil {
		return nil, tooFewRows(err, o)
	}
	minClients := o.MinClients
	if minClients == 0 {
		minClients = max(1, o.Clients/2)
	}
	ids := make([]string, o.Clients)
	width := len(strconv.Itoa(max(o.Clients-1, 1)))
	cfg := engine.JobConfig{
		ID: "simulation", Seed: o.Seed, Rounds: o.Rounds, Model: spec,
		Train: model.TrainConfig{Epochs: o.Epochs, BatchSize: o.Batch, LearningRate: o.LR, Momentum: o.Momentum},
		Data:  engine.DataConfig{Features: ds.Examples.Features, Classes: ds.Classes()},
		Clients: engine.ClientsConfig{
			Min: minClients, WaitFor: o.Clients, Fraction: o.Fraction,
		},
		RoundTimeout:      engine.Duration(o.RoundTimeout),
		Tick:              engine.Duration(50 * time.Millisecond),
		Scaling:           engine.ScalingConfig{Mode: o.Scaling},
		SecureAggregation: o.Secure, MinGroupSize: o.MinGroupSize,
		Committee: engine.CommitteeConfig{Size: o.CommitteeSize, Threshold: o.Threshold},
		Valuation: engine.ValuationConfig{Mode: o.ValuationMode, Method: o.ValuationMethod, Utility: o.Utility, Decay: o.Decay},
		Payment:   engine.PaymentConfig{BudgetPerRound: o.Budget, BaselineShare: o.BaselineShare},
	}
	if o.DPEpsilon != 0 {
		cfg.Privacy.DP = &engine.DPConfig{Epsilon: o.DPEpsilon, Delta: o.DPDelta, Clip: o.DPClip}
	}
	for i := range ids {
		ids[i] = fmt.Sprintf("client-%0*d", width, i)
		cfg.Clients.Enrolment = append(cfg.Clients.Enrolment, engine.EnrolmentConfig{ID: ids[i], Token: fmt.Sprintf("sim-token-%d-%d", o.Seed, i)})
	}
	var edges *simEdges
	if o.Edges > 0 {
		if edges, err = newSimEdges(o.Edges, &cfg); err != nil {
			return nil, err
		}
	}
	job, err := engine.NewJob(cfg, ".")
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.DiscardHandler)
	if o.Verbose {
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	// Under he the clients hold the coordinator to a manifest and pin its
	// TLS certificate, as separate processes would (simtrust.go).
	var trust *simTrust
	if job.Secure() {
		if trust, err = newSimTrust(&job, o.DB); err != nil {
			return nil, err
		}
		defer trust.close()
	}
	rep := &simReport{Seed: o.Seed, Dataset: ds.Name, Model: job.Model, Partition: o.Partition, SecureAggregation: job.SecureAggregation}
	if job.Secure() {
		rep.Committee = &committeeRep{Size: job.Committee.Size, Threshold: job.Committee.Threshold}
	}
	for i, id := range ids {
		rep.Clients = append(rep.Clients, clientInfo{ID: id, Samples: fed.Clients[i].Len(), Corruption: fed.Corruptions[i].String()})
	}
	if !o.Quiet {
		fmt.Fprintf(stdout, "tally simulate: %s (%d rows, %d features, %d classes), %d clients, %d rounds, model %s, seed %d\n",
			ds.Name, ds.Examples.Len(), ds.Examples.Features, ds.Classes(), o.Clients, o.Rounds, spec.Kind, o.Seed)
		if job.Secure() {
			fmt.Fprintf(stdout, "secure aggregation: multiparty CKKS (LogN %d), committee of %d with threshold %d, aggregates of ≥ %d clients only\n",
				job.Params.Config().LogN, job.Committee.Size, job.Committee.Threshold, job.MinGroupSize)
			fmt.Fprintf(stdout, "clients hold the coordinator to manifest %s…, over TLS pinned to its certificate\n", trust.m.FingerprintHex()[:16])
		} else {
			fmt.Fprintln(stdout, "secure aggregation: none (the coordinator sees every update)")
		}
	}
	progress := func(r engine.RoundRecord) {
		if r.Failed {
			if !o.Quiet {
				fmt.Fprintf(stdout, "round %3d/%d  attempt %d failed: %s\n", r.Round, o.Rounds, r.Attempt, r.Reason)
			}
			return
		}
		if edges != nil && o.KillEdgeAfter > 0 && r.Round == o.KillEdgeAfter {
			go edges.kill(0)
		}
		rep.Rounds = append(rep.Rounds, roundReport{Round: r.Round, ValLoss: r.ValLoss, ValAccuracy: r.ValAccuracy, Contributors: len(r.Contributors), BytesReceived: r.BytesReceived, Decryptions: r.Decryptions, DecryptTasks: r.DecryptTasks, WeightFlags: r.WeightFlags})
		if !o.Quiet {
			fmt.Fprintf(stdout, "round %3d/%d  val_loss %.4f  val_accuracy %.4f  clients %d  received %s  %5.1fs\n",
				r.Round, o.Rounds, r.ValLoss, r.ValAccuracy, len(r.Contributors), humanBytes(r.BytesReceived), time.Since(start).Seconds())
		}
	}
	var store engine.Store
	if o.DB != "" {
		if err := os.MkdirAll(filepath.Dir(o.DB), 0o755); err != nil {
			return nil, err
		}
		bs, err := coordinator.OpenJobStore(o.DB, job, log)
		if err != nil {
			return nil, err
		}
		defer bs.Close()
		store = bs
		if !o.Quiet {
			fmt.Fprintf(stdout, "state and receipts in %s, signed with %s\n", o.DB, ledger.FormatPublicKey(bs.PublicKey()))
		}
	}
	if o.ReceiptsDir != "" {
		if err := os.MkdirAll(o.ReceiptsDir, 0o755); err != nil {
			return nil, err
		}
	}
	tel, err := startTelemetry(ctx, o.MetricsAddr, false, log)
	if err != nil {
		return nil, err
	}
	defer shutdownTelemetry(tel, log)
	evaluator, closeEvaluator, err := coordinatorModel(job, stderr, log)
	if err != nil {
		return nil, err
	}
	defer closeEvaluator.Close()
	scfg := coordinator.ServerConfig{Job: job, Validation: fed.Validation, Log: log, OnRound: progress, Store: store, Telemetry: tel.Telemetry,
		GRPCOptions: o.Dashboard.grpcOptions(), Model: evaluator, ExportGames: o.ExportGames}
	if o.ReleaseLog != "" {
		rl, err := openSimReleaseLog(o, job, ids)
		if err != nil {
			return nil, err
		}
		defer rl.Close()
		scfg.OnRelease = rl.Append
	}
	if trust != nil {
		scfg.TLS = trust.serverTLS()
	}
	srv, err := coordinator.NewServer(scfg)
	if err != nil {
		return nil, err
	}
	if err := o.Dashboard.start(ctx, job, srv, ledgerOf(store), tel.Addr(), log); err != nil {
		return nil, err
	}
	defer o.Dashboard.close()
	if o.Dashboard != nil && o.Dashboard.lis != nil {
		fmt.Fprintf(stdout, "dashboard at %s\n", o.Dashboard.url)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if edges != nil {
		dial := grpc.WithTransportCredentials(insecure.NewCredentials())
		var stls *tls.Config
		if trust != nil {
			// The clients pin the manifest's certificate: in the
			// simulation the edges show the coordinator's.
			dial, stls = trust.dial(), trust.serverTLS()
		}
		if err := edges.start(ctx, job, lis.Addr().String(), dial, stls, log); err != nil {
			return nil, err
		}
		defer edges.close()
	}
	var wg sync.WaitGroup
	clientErrs := make([]error, o.Clients)
	// The clients share an encryptor and take turns to hold ciphertexts,
	// which bounds this process's memory by the cores rather than by the
	// number of clients; the coordinator sees the same calls either way.
	shared := client.NewShared(0)
	for i := range ids {
		// Each client dials its own connection, as a client in another
		// process would: the coordinator cannot tell that they share one.
		transport := grpc.WithTransportCredentials(insecure.NewCredentials())
		var m *manifest.Manifest
		var keyFile string
		if trust != nil {
			transport, m, keyFile = trust.dial(), trust.m, trust.keyFiles[ids[i]]
		}
		var conn grpc.ClientConnInterface
		if edges == nil {
			cc, err := grpc.NewClient(lis.Addr().String(), transport)
			if err != nil {
				return nil, err
			}
			defer cc.Close()
			conn = cc
		} else {
			addrs := edges.order(i, lis.Addr().String())
			var conns []grpc.ClientConnInterface
			for _, a := range addrs {
				cc, err := grpc.NewClient(a, transport)
				if err != nil {
					return nil, err
				}
				defer cc.Close()
				conns = append(conns, cc)
			}
			conn = client.NewFailover(conns, addrs, log.With("client", ids[i]))
		}
		tr := &trainers{command: o.ModelCommand, stderr: stderr, log: log.With("client", ids[i])}
		defer tr.Close()
		c, err := client.New(client.Config{
			Conn: conn, Token: job.Clients.Enrolment[i].Token, Name: ids[i], Data: fed.Clients[i],
			Hook: freeRiderHook(fed.Corruptions[i], o.Seed, i), Log: log.With("client", ids[i]),
			PollWait: time.Second, ReceiptsFile: receiptsPath(o.ReceiptsDir, ids[i]), Shared: shared,
			NewModel: tr.newModel, Manifest: m, KeyFile: keyFile,
		})
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go pprof.Do(ctx, pprof.Labels("tally", "client"), func(ctx context.Context) {
			defer wg.Done()
			clientErrs[i] = c.Run(ctx)
		})
	}
	// The profile's samples carry who spent them (tally=coordinator,
	// edge, client): go tool pprof -tags FILE.
	var out coordinator.Outcome
	var runErr error
	pprof.Do(ctx, pprof.Labels("tally", "coordinator"), func(ctx context.Context) { out, runErr = srv.Run(ctx, lis) })
	if runErr != nil {
		cancel()
	}
	wg.Wait()
	if runErr != nil {
		return nil, runErr
	}
	// Before the clients' errors: when the job stopped early each client
	// says so too (client.ErrJobStopped), and the coordinator's reason is
	// the one to give.
	if out.Done != nil && out.Done.FinalRound < o.Rounds {
		return nil, fmt.Errorf("the job stopped early: %s", out.Done.Reason)
	}
	for i, err := range clientErrs {
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ids[i], err)
		}
	}
	if err := trust.checkTranscripts(store, stdout); err != nil {
		return nil, fmt.Errorf("decryption transcripts: %w", err)
	}

	// Final test accuracy of the federated model.
	m := srv.Model()
	test := fed.Test
	if out.Scaler != nil {
		test = out.Scaler.Apply(test)
	}
	if err := m.SetParams(out.Global); err != nil {
		return nil, err
	}
	tm, err := m.Evaluate(test)
	if err != nil {
		return nil, err
	}
	rep.TestAccuracy, rep.TestLoss = tm.Accuracy, tm.Loss
	// The summary: printed with --quiet too.
	fmt.Fprintf(stdout, "final test accuracy %.4f (loss %.4f)\n", tm.Accuracy, tm.Loss)
	if o.CentralisedBaseline {
		centralise := centralised
		if job.Model.Kind == model.KindExternal {
			centralise = func(job engine.Job, fed *dataset.Federation, sc *dataset.Scaler) (float64, error) {
				return centralisedExternal(job, fed, sc, stderr)
			}
		}
		acc, err := centralise(job, fed, out.Scaler)
		if err != nil {
			return nil, fmt.Errorf("centralised baseline: %w", err)
		}
		rep.CentralisedTestAccuracy = &acc
		fmt.Fprintf(stdout, "centralised test accuracy %.4f (same model, union of the clients' data, %d epochs)\n", acc, job.Rounds*job.Train.Epochs)
	}
	if edges != nil {
		rep.Edges = edges.report(job)
	}
	rep.Valuation = valuationRep{Mode: job.Valuation.Mode, Method: job.Valuation.Method}
	for _, r := range out.History {
		if r.Failed {
			continue
		}
		if r.Valuation != nil {
			rep.Valuation.UtilityEvaluations += r.Valuation.Evaluations
			if r.Valuation.Error != "" {
				fmt.Fprintf(stderr, "round %d: valuation failed: %s\n", r.Round, r.Valuation.Error)
				for i := range rep.Rounds {
					if rep.Rounds[i].Round == r.Round {
						rep.Rounds[i].ValuationError = r.Valuation.Error
					}
				}
			}
		}
		for _, d := range r.Decryptions {
			rep.Decryptions = append(rep.Decryptions, decryptRep{Round: r.Round, Purpose: d.Purpose, Contributors: d.Contributors})
		}
	}
	contribs, err := engine.Contributions(job, out.History)
	if err != nil {
		return nil, err
	}
	index := map[string]int{}
	for i, id := range ids {
		index[id] = i
	}
	for _, c := range contribs {
		i := index[c.Client]
		rep.Contributions = append(rep.Contributions, contribRep{Client: c.Client, Samples: fed.Clients[i].Len(), Corruption: fed.Corruptions[i].String(),
			Value: c.Value, StdErr: c.StdErr, Rank: c.Rank, Payout: c.Payout, Quota: c.Quota})
	}
	if rep.DP = dpReport(job, out.History); rep.DP != nil {
		fmt.Fprintf(stdout, "differential privacy: target ε %g at δ %g, clip %g, σ %.4f over sums of ≥ %d; ε spent: %s\n",
			rep.DP.Epsilon, rep.DP.Delta, rep.DP.Clip, rep.DP.Sigma, rep.DP.Contributors, formatSpent(rep.DP.Spent))
	}
	if !o.Quiet {
		printContributions(stdout, rep)
	}
	rep.WallSeconds = time.Since(start).Seconds()
	if o.Report != "" {
		if err := writeJSON(o.Report, rep); err != nil {
			return nil, err
		}
		if !o.Quiet {
			fmt.Fprintf(stdout, "report written to %s\n", o.Report)
		}
	}
	o.Dashboard.wait(ctx, stdout)
	return rep, nil
}

// ledgerOf is the ledger of a BoltStore, nil for a store in memory.
func ledgerOf(s engine.Store) *ledger.DB {
	if bs, ok := s.(*coordinator.BoltStore); ok {
		return bs.DB()
	}
	return nil
}

// tooFewRows explains a partition that failed for want of rows: every
// client needs at least one training row, so the number of clients is
// bounded by the dataset's training share. It names the embedded datasets
// that are large enough (wsn's 18,914 rows hold 11,348 clients at the
// default fractions), rather than inventing data: a synthetic dataset
// would measure the protocol just as well but say nothing about learning.
func tooFewRows(err error, o *simOptions) error {
	if !errors.Is(err, dataset.ErrPartition) {
		return err
	}
	var fit []string
	for _, name := range dataset.EmbeddedNames() {
		ds, lerr := dataset.Embedded(name)
		if lerr != nil {
			continue
		}
		train, _, _, serr := dataset.Split(ds.Examples, o.ValFrac, o.TestFrac, o.Seed)
		if serr == nil && train.Len() >= o.Clients*dataset.MinClientRows {
			fit = append(fit, fmt.Sprintf("%s (%d training rows)", name, train.Len()))
		}
	}
	hint := "no embedded dataset has that many; give a larger --csv"
	if len(fit) > 0 {
		hint = "use --dataset " + strings.Join(fit, " or ") + ", or a larger --csv"
	}
	return fmt.Errorf("%w; %s", err, hint)
}

// centralData is the centralised yardstick's data: the union of the
// clients' training rows and the test set, both scaled as the federation's
// were.
func centralData(fed *dataset.Federation, scaler *dataset.Scaler) (union, test model.Examples) {
	union = model.Examples{Features: fed.Test.Features}
	for _, c := range fed.Clients {
		union.X = append(union.X, c.X...)
		union.Y = append(union.Y, c.Y...)
	}
	test = fed.Test
	if scaler != nil {
		union, test = scaler.Apply(union), scaler.Apply(test)
	}
	return union, test
}

// centralised trains the job's model on the union of the clients' training
// data for as many epochs as the federation ran in all, and returns its
// test accuracy: the yardstick the federated model is compared with.
func centralised(job engine.Job, fed *dataset.Federation, scaler *dataset.Scaler) (float64, error) {
	union, test := centralData(fed, scaler)
	m, err := model.New(job.Model, job.Data.Features, job.Data.Classes, job.Seed)
	if err != nil {
		return 0, err
	}
	cfg := job.Train
	cfg.Epochs = job.Rounds * job.Train.Epochs
	if _, err := m.Train(union, cfg, rand.New(rand.NewPCG(job.Seed, 0x63656e74))); err != nil {
		return 0, err
	}
	met, err := m.Evaluate(test)
	return met.Accuracy, err
}

// freeRiderHook turns a client into the free rider its corruption names.
func freeRiderHook(c dataset.Corruption, seed uint64, i int) client.UpdateHook {
	if !c.IsFreeRider() {
		return nil
	}
	rng := rand.New(rand.NewPCG(seed, uint64(i)<<32|0x6672))
	var prevGlobal, lastDelta []float64
	var mu sync.Mutex
	return func(round int, global, update []float64) []float64 {
		mu.Lock()
		defer mu.Unlock()
		if prevGlobal != nil && len(prevGlobal) == len(global) {
			lastDelta = make([]float64, len(global))
			for j := range global {
				lastDelta[j] = global[j] - prevGlobal[j]
			}
		}
		prevGlobal = append(prevGlobal[:0], global...)
		var norm float64
		for _, v := range update {
			norm += v * v
		}
		return dataset.FreeRiderUpdate(c, math.Sqrt(norm), lastDelta, len(update), rng)
	}
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// printContributions writes the job's contribution table; without any
// corruption (a coordinator's job, whose clients are not simulated) it has
// no corruption column.
func printContributions(w io.Writer, rep *simReport) {
	corrupt := slices.ContainsFunc(rep.Contributions, func(c contribRep) bool { return c.Corruption != "" })
	fmt.Fprintf(w, "\ncontributions (%s mode, %s, %d utility evaluations):\n", rep.Valuation.Mode, rep.Valuation.Method, rep.Valuation.UtilityEvaluations)
	if corrupt {
		fmt.Fprintf(w, "%-10s %7s  %-18s %22s %5s %9s %8s\n", "client", "samples", "corruption", "value ± stderr", "rank", "payout", "quota")
	} else {
		fmt.Fprintf(w, "%-10s %7s  %22s %5s %9s %8s\n", "client", "samples", "value ± stderr", "rank", "payout", "quota")
	}
	// A thousand clients make an unreadable table: the top and the bottom
	// of the ranking are shown, and the report keeps every row.
	const head, tail = 20, 10
	for i, c := range rep.Contributions {
		if n := len(rep.Contributions); n > head+tail+1 && i >= head && i < n-tail {
			if i == head {
				fmt.Fprintf(w, "%-10s (%d more; --report keeps them all)\n", "…", n-head-tail)
			}
			continue
		}
		if corrupt {
			fmt.Fprintf(w, "%-10s %7d  %-18s %12.5f ± %-7.5f %5d %9.2f %8.1f\n", c.Client, c.Samples, c.Corruption, c.Value, c.StdErr, c.Rank, c.Payout, c.Quota)
		} else {
			fmt.Fprintf(w, "%-10s %7d  %12.5f ± %-7.5f %5d %9.2f %8.1f\n", c.Client, c.Samples, c.Value, c.StdErr, c.Rank, c.Payout, c.Quota)
		}
	}
}

func receiptsPath(dir, id string) string {
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, id+".jsonl")
}

// formatSpent lists the clients' ε in client order.
func formatSpent(spent map[string]float64) string {
	ids := make([]string, 0, len(spent))
	for id := range spent {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%s %.3f", id, spent[id])
	}
	return strings.Join(parts, ", ")
}
