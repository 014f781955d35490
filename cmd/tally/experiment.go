package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/tallyfl/tally/experiments"
)

// runExperiment is `tally experiment run SCENARIO… [flags]`.
func runExperiment(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "Usage: tally experiment run SCENARIO.yaml… [--methods m,…] [--modes plain,groups,influence,projection] [--repeats R] [--out DIR] [--export-games DIR]\n\nCompares valuation methods and privacy modes on scenarios with ground truth (see experiments/README.md);\n`tally experiment run --help` lists the flags.\n"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdout, usage)
		return nil
	}
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	fs := newFlagSet("experiment run")
	fs.SetOutput(stderr)
	methods := fs.String("methods", "", "comma-separated methods, NAME or NAME@k (a budget of k·n utility evaluations a round); default: each scenario's list, else "+methodList(experiments.DefaultMethods()))
	modes := fs.String("modes", "", "comma-separated privacy modes (default: plain,groups,influence,projection)")
	repeats := fs.Int("repeats", 0, "seeds per scenario (default: the scenario's seeds)")
	out := fs.String("out", "experiments/results", "directory for tables and plots")
	export := fs.String("export-games", "", "directory to write every round's game as CSV (one row per coalition evaluated)")
	quiet := fs.Bool("quiet", false, "no progress lines")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: tally experiment run SCENARIO.yaml… [flags]\n\nRuns each scenario's FedAvg rounds in process for every seed, values every round with every\nmethod in every privacy mode on the same updates, scores them against the ground truth and\nwrites CSV tables, summary.md, plots and machine.txt into --out.\n\n")
		fs.PrintDefaults()
	}
	// Scenarios and flags may come in any order.
	var paths []string
	rest := args[1:]
	for {
		if err := fs.Parse(rest); err != nil {
			if err == flag.ErrHelp {
				return err
			}
			return errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		paths = append(paths, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(paths) == 0 {
		fmt.Fprintln(stderr, "no scenario given")
		fs.Usage()
		return errUsage
	}
	var scs []experiments.Scenario
	for _, p := range paths {
		sc, err := experiments.LoadScenario(p)
		if err != nil {
			return err
		}
		scs = append(scs, sc)
	}
	opt := experiments.Options{Repeats: *repeats, ExportGames: *export, Progress: stderr}
	if *quiet {
		opt.Progress = nil
	}
	var err error
	if *methods != "" {
		if opt.Methods, err = experiments.ParseMethods([]string{*methods}); err != nil {
			return err
		}
	}
	if *modes != "" {
		if opt.Modes, err = experiments.ParseModes([]string{*modes}); err != nil {
			return err
		}
	}
	start := time.Now()
	runs, err := experiments.Run(ctx, scs, opt)
	if err != nil {
		return err
	}
	if err := experiments.WriteAll(*out, scs, runs); err != nil {
		return err
	}
	wall := time.Since(start)
	if err := os.WriteFile(filepath.Join(*out, "machine.txt"), []byte(machine(start, wall, paths, args[1:])), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d runs of %d scenarios in %s; tables and plots in %s\n", len(runs), len(scs), wall.Round(time.Second), *out)
	return nil
}

func methodList(ms []experiments.Method) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.String()
	}
	return strings.Join(s, ",")
}

// machine describes where and when the results were made.
func machine(start time.Time, wall time.Duration, paths, args []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "date: %s\n", start.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "wall: %s\n", wall.Round(time.Second))
	fmt.Fprintf(&b, "go: %s %s/%s, GOMAXPROCS %d, NumCPU %d\n", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), runtime.NumCPU())
	if cpu, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(cpu), "\n") {
			if strings.HasPrefix(line, "model name") {
				fmt.Fprintf(&b, "cpu: %s\n", strings.TrimSpace(strings.SplitN(line, ":", 2)[1]))
				break
			}
		}
	}
	fmt.Fprintf(&b, "command: tally experiment run %s\n", strings.Join(args, " "))
	return b.String()
}
