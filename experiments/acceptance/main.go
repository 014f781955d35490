// Command acceptance checks the acceptance items of issue 15 (pay what the
// data was worth) over seeds and prints each as PASS or FAIL with its
// figures:
//
//   - inversions: in the setups of both runs of make demo (demo-bc8, and
//     demo-corrupt-bc8 with a label flipper and a random free rider), no
//     pair of clients is paid against the order of their total values, and
//     every client whose total value is ≤ 0 is paid the baseline only;
//   - free riders: in free-riders-bc8 (zero, random of the honest norm,
//     echo) and demo-corrupt-bc8 (random) each free rider is paid the
//     baseline only, and the zero and random ones have a total value ≤ 0;
//   - duplicate: in duplicates-retrained-bc5 (a copy trained with its own
//     shuffles, as tally simulate's duplicate:0 is) and duplicates-bc5 (a
//     bit-identical copy) the original and its copy are paid together at
//     most 1.1× what the original is paid in the same job without the copy;
//   - sybil: in sybil-bc5 the client split into three identities gains at
//     most +0.02 of the budget;
//   - spearman: in demo-corrupt-bc8 the honest clients' payouts have a
//     Spearman ρ ≥ 0.9 against the plaintext exact-Shapley totals,
//     credited by the job's rule (a round that made the model no better
//     credits nobody: payout.Totals), as the plain job's report gives
//     them; ρ against the rounds' uncredited sums is printed beside it.
//     Under none/plain the payouts follow those totals by construction,
//     so that setup checks the payout alone.
//
// Each item is checked in every setup (secure aggregation and valuation
// mode: none/plain, he/influence, he/groups, …) and on every seed. By
// default the jobs run in process as the experiments run them
// (experiments.Run: FedAvg, every round valued by exact Shapley in the
// setup's mode, paid by experiments.JobPay, the coordinator's payout
// code); with --simulate each job is a real `tally simulate` run (a
// coordinator and its clients over gRPC in one process, CKKS under he, as
// make demo runs), its contributions read from the report. Payment: a
// baseline share of 0.1 (experiments.PayBaselineShare), the rest settled at
// the end of the job (--baseline-share).
//
// Exit status 1 when an item fails.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/tallyfl/tally/experiments"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errFailed):
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "acceptance:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("acceptance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seeds := fs.String("seeds", "1-5", "seeds: a list (1,2,3) or a range (1-5)")
	secure := fs.String("secure", "he,none", "secure aggregation schemes to check, comma-separated: he, none")
	modes := fs.String("modes", "", "valuation modes, comma-separated: plain (none only), groups, influence, projection; default: each scheme's default (projection under he, plain under none)")
	simulate := fs.Bool("simulate", false, "run every job as a real tally simulate (coordinator and clients over gRPC, CKKS under he) instead of in process")
	tally := fs.String("tally", "", "with --simulate: the tally binary (default: go build ./cmd/tally into a temporary directory)")
	rounds := fs.Int("rounds", 0, "override every scenario's rounds (0: the scenarios' own: 20 for the demo, 10 for the others)")
	scenarios := fs.String("scenarios", "", "directory of the shipped scenarios (default: experiments/scenarios above the working directory)")
	only := fs.String("items", "", "check only these items, comma-separated: inversions, free-riders, duplicate, sybil, spearman (default: all)")
	share := fs.Float64("baseline-share", experiments.PayBaselineShare, "payment.baseline_share of every job: the part of the budget paid every round, split among the submissions by their rows")
	verbose := fs.Bool("v", false, "print each job's progress to stderr")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: go run ./experiments/acceptance [flags]

Checks issue 15's acceptance items (payouts follow total value, free riders
get the baseline only, a copy earns no more than its data once, a Sybil gains
nothing, honest payouts follow exact Shapley) on every seed and setup, and
prints each as PASS or FAIL with its figures. Exit status 1 if one fails.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if !(*share >= 0 && *share < 1) {
		return fmt.Errorf("--baseline-share must be in [0, 1), got %g", *share)
	}
	o := options{rounds: *rounds, simulate: *simulate, tally: *tally, share: *share, out: stdout}
	var err error
	if o.seeds, err = parseSeeds(*seeds); err != nil {
		return err
	}
	if o.setups, err = parseSetups(*secure, *modes); err != nil {
		return err
	}
	if o.items, err = parseItems(*only); err != nil {
		return err
	}
	if o.scenarios, err = scenarioDir(*scenarios); err != nil {
		return err
	}
	if *verbose {
		o.progress = stderr
	}
	return check(ctx, o)
}
