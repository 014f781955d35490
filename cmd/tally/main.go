// Command tally runs federated-learning jobs with contribution accounting:
// a coordinator, its clients, and an all-in-one simulator.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand of tally.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"simulate", "run a coordinator and N clients in one process over loopback gRPC", runSimulate},
		{"coordinator", "run a coordinator for a job file", runCoordinator},
		{"client", "join a job as a data holder and train on a local CSV file", runClient},
		{"edge", "run a keyless edge aggregator between clients and their coordinator (tally edge keygen for its key)", runEdge},
		{"manifest", "create, show and verify a job manifest, the trust anchor clients pin (tally manifest create --job J)", runManifest},
		{"token", "issue, revoke and list a job's enrolment tokens (tally token create --job J --client C)", runToken},
		{"data", "write CSV files (client shards, validation, test) and a job file from an embedded dataset or your own CSV (--csv)", runData},
		{"ledger", "verify a coordinator's state file and ledger, or a client's receipts, offline; copy a state file (tally ledger verify, tally ledger backup)", runLedger},
		{"scores", "print each client's contribution from a coordinator's signed receipts", runScores},
		{"payouts", "print every payout and quota credit from a coordinator's signed receipts", runPayouts},
		{"dashboard", "serve the web dashboard of a job from its state file (tally dashboard --state FILE)", runDashboard},
		{"receipts", "a data holder's page of its own receipts, each verified (tally receipts render|serve)", runReceipts},
		{"experiment", "benchmark valuation methods and privacy modes on scenario files against ground truth", runExperiment},
		{"audit", "attack what a coordinator sees (updates, sums, group sums, influence scalars) and measure the reconstructions against random guessing", runAudit},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `tally trains a model on data that never leaves its owners and values each
owner's contribution.

Usage: tally <command> [flags]   (tally <command> --help for its flags)

Commands:
`)
	cmds := commands()
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process exit, so tests can call it.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, stderr)
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.Is(err, errUsage):
				return 2
			case errors.Is(err, context.Canceled):
				fmt.Fprintln(stderr, "tally: interrupted")
				return 130
			default:
				fmt.Fprintf(stderr, "tally %s: %v\n", c.name, err)
				return 1
			}
		}
	}
	fmt.Fprintf(stderr, "tally: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// errUsage marks a flag error already printed by the flag package.
var errUsage = errors.New("usage")

// parse parses flags, turning flag errors into errUsage.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	return nil
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}
