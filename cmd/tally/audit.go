package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tallyfl/tally/audit"
	"github.com/tallyfl/tally/extmodel"
	"github.com/tallyfl/tally/model"
)

// runAudit plays the coordinator against the releases of a simulated job
// (package audit) and writes the results table, CSV and pictures.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "dp" {
		return runAuditDP(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "job" {
		return runAuditJob(ctx, args[1:], stdout, stderr)
	}
	fs := newFlagSet("audit")
	fs.SetOutput(stderr)
	datasets := fs.String("datasets", "digits,breast-cancer", "embedded datasets to attack: digits (images) and/or breast-cancer (tabular)")
	models := fs.String("models", "logreg,mlp,cnn", "model kinds: logreg, mlp and/or cnn (examples/pytorch/digits_cnn.py on digits, attacked with PyTorch by audit/cnn_attack.py)")
	hidden := fs.String("hidden", "32", "mlp hidden layer widths, comma-separated")
	epochs := fs.Int("epochs", 2, "local epochs per round (the job's train.epochs)")
	batch := fs.Int("batch-size", 16, "local mini-batch size")
	lr := fs.Float64("lr", 0.1, "local learning rate")
	momentum := fs.Float64("momentum", 0.9, "local SGD momentum")
	seed := fs.Uint64("seed", 1, "seed of every random choice of the audit")
	trials := fs.Int("trials", 5, "repetitions of the small-client releases")
	rows := fs.Int("rows", 8, "rows of each client in the small-client releases")
	ks := fs.String("k", "2,3,5,10", "numbers of updates summed, comma-separated")
	clients := fs.Int("clients", 10, "clients of the job-sized federation (and of the groups mode)")
	rounds := fs.Int("rounds", 20, "rounds of the job-sized federation, whose influence and projection scalars are attacked")
	alpha := fs.Float64("alpha", 0.5, "Dirichlet label skew of the job-sized federation")
	match := fs.Int("match-iters", 600, "Adam steps of the gradient-matching attack (0: analytic attacks only)")
	out := fs.String("out", "audit/results", "directory for results.md, results.csv, utility.csv and the PNG pictures")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: tally audit [flags]\n       tally audit dp [flags]   (what DP costs a job's accuracy and valuation; tally audit dp -h)\n       tally audit job [flags]  (attack what a job actually released, from its release log; tally audit job -h)\n\nSimulates what tally's clients release (plaintext updates, sums of k updates, group sums,\ninfluence scalars, the projection mode's m scalars a round) with the real local training, attacks each release as the coordinator\nwould, and writes the similarity of the reconstructions, label and membership inference\nbeside random guessing into --out.\n\n")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg := audit.Config{
		Datasets: splitList(*datasets), Models: splitList(*models),
		Train: model.TrainConfig{Epochs: *epochs, BatchSize: *batch, LearningRate: *lr, Momentum: *momentum},
		Seed:  *seed, Trials: *trials, SmallRows: *rows, Clients: *clients, Rounds: *rounds, Alpha: *alpha,
		MatchIters: *match,
	}
	if *match == 0 {
		cfg.MatchIters = -1
	}
	if slices.Contains(cfg.Models, audit.KindCNN) {
		// Loudly: a results table without the CNN's rows must be asked for.
		py, err := extmodel.FindPython("torch", "numpy")
		if err != nil {
			return fmt.Errorf("tally audit: the cnn model needs Python with PyTorch: %w; install Debian's python3-torch and python3-numpy (make torch), or leave the CNN out with --models logreg,mlp", err)
		}
		cfg.CNN = audit.PythonCNN{Python: py}
	}
	var err error
	if cfg.Hidden, err = intList("--hidden", *hidden); err != nil {
		return err
	}
	if cfg.Ks, err = intList("--k", *ks); err != nil {
		return err
	}
	start := time.Now()
	res, err := audit.Run(cfg)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	meta := audit.Meta{
		Date:    start.UTC().Format("2006-01-02 15:04 UTC") + fmt.Sprintf(" (%s wall)", time.Since(start).Round(time.Second)),
		Machine: auditMachine(),
		Command: "tally audit " + strings.Join(args, " "),
	}
	write := func(name string, f func(io.Writer) error) error {
		path := filepath.Join(*out, name)
		file, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := f(file); err != nil {
			file.Close()
			return fmt.Errorf("audit: writing %s: %w", path, err)
		}
		return file.Close()
	}
	if err := write("results.md", func(w io.Writer) error { return audit.WriteMarkdown(w, res, meta) }); err != nil {
		return err
	}
	if err := write("results.csv", func(w io.Writer) error { return audit.WriteCSV(w, res) }); err != nil {
		return err
	}
	if err := write("utility.csv", func(w io.Writer) error { return audit.WriteUtilityCSV(w, res) }); err != nil {
		return err
	}
	for _, p := range res.Pictures {
		if err := write(p.Name+".png", func(w io.Writer) error { return audit.WritePNG(w, p) }); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%d releases attacked in %s; results in %s\n", len(res.Rows), time.Since(start).Round(time.Second), *out)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func intList(flag, s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		v, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not an integer", flag, f)
		}
		out = append(out, v)
	}
	return out, nil
}

// auditMachine names the CPU, core count and Go version.
func auditMachine() string {
	cpu := runtime.GOARCH
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores, %s %s/%s", cpu, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
