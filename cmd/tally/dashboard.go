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
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/tallyfl/tally/coordinator"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/dashboard"
	"github.com/tallyfl/tally/ledger"
)

// dashFlags are the dashboard flags of tally coordinator and tally
// simulate.
type dashFlags struct {
	addr, tokenFile string
	linger          time.Duration

	seen *dashboard.Seen
	lis  net.Listener
	url  string
	stop context.CancelFunc
	wg   sync.WaitGroup
}

func addDashFlags(fs *flag.FlagSet) *dashFlags {
	d := &dashFlags{}
	fs.StringVar(&d.addr, "dashboard-addr", "", "serve a read-only web dashboard of the job on this address (default: off); beyond loopback it needs --dashboard-token-file")
	fs.StringVar(&d.tokenFile, "dashboard-token-file", "", "the dashboard's viewer token, created (random, mode 0600) if the file does not exist; viewers open /?token=TOKEN once")
	fs.DurationVar(&d.linger, "dashboard-linger", 0, "after the job ends, keep the dashboard serving for this long (Ctrl-C stops it sooner)")
	return d
}

// grpcOptions are the coordinator's extra gRPC options: the interceptors
// that tell the dashboard which clients are live.
func (d *dashFlags) grpcOptions() []grpc.ServerOption {
	if d == nil || d.addr == "" {
		return nil
	}
	d.seen = dashboard.NewSeen()
	return d.seen.ServerOptions()
}

// start serves the dashboard of srv (db is its ledger, nil if in memory)
// until close; it does nothing when --dashboard-addr is unset.
func (d *dashFlags) start(ctx context.Context, job engine.Job, srv *coordinator.Server, db *ledger.DB, metricsAddr net.Addr, log *slog.Logger) error {
	if d == nil || d.addr == "" {
		return nil
	}
	src := dashboard.NewLive(job, srv, db, d.seen)
	if metricsAddr != nil {
		src.MetricsURL = "http://" + metricsAddr.String() + "/metrics"
	}
	lis, cfg, err := listenDashboard(d.addr, d.tokenFile, log)
	if err != nil {
		return err
	}
	d.lis, d.url = lis, dashURL(lis, d.tokenFile)
	ctx, d.stop = context.WithCancel(context.WithoutCancel(ctx))
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		src.Watch(ctx, 250*time.Millisecond)
	}()
	go func() {
		defer d.wg.Done()
		if err := dashboard.NewCoordinator(cfg, src).Serve(ctx, lis); err != nil {
			// The job goes on without its dashboard.
			log.Error("dashboard stopped", "err", err)
		}
	}()
	log.Info("dashboard serving", "url", d.url, "token_file", d.tokenFile)
	return nil
}

// wait keeps the dashboard up for --dashboard-linger after the job, or
// until ctx ends.
func (d *dashFlags) wait(ctx context.Context, stdout io.Writer) {
	if d == nil || d.lis == nil || d.linger <= 0 {
		return
	}
	fmt.Fprintf(stdout, "job over; the dashboard at %s serves it for %v more (Ctrl-C stops it)\n", d.url, d.linger)
	t := time.NewTimer(d.linger)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// close stops the dashboard and waits for it; safe to call when it never
// started.
func (d *dashFlags) close() {
	if d != nil && d.stop != nil {
		d.stop()
		d.wg.Wait()
	}
}

// listenDashboard listens on addr with the viewer token of tokenFile ("":
// none, which Serve allows on loopback only).
func listenDashboard(addr, tokenFile string, log *slog.Logger) (net.Listener, dashboard.Config, error) {
	cfg := dashboard.Config{Log: log}
	if tokenFile != "" {
		tok, created, err := dashboard.TokenFromFile(tokenFile)
		if err != nil {
			return nil, cfg, err
		}
		if created {
			log.Info("dashboard viewer token created", "file", tokenFile)
		}
		cfg.Token = tok
	}
	// Refused before listening, so that no socket beyond loopback is ever
	// open without a token; checked again on the address bound, for a host
	// name that resolves elsewhere.
	if cfg.Token == "" && !dashboard.LoopbackHost(addr) {
		return nil, cfg, fmt.Errorf("%w: %s; give a token file (it is created if missing)", dashboard.ErrOpen, addr)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, cfg, fmt.Errorf("dashboard: listen on %s: %w", addr, err)
	}
	if cfg.Token == "" && !dashboard.Loopback(lis.Addr()) {
		lis.Close()
		return nil, cfg, fmt.Errorf("%w: %s; give a token file (it is created if missing)", dashboard.ErrOpen, addr)
	}
	return lis, cfg, nil
}

func dashURL(lis net.Listener, tokenFile string) string {
	u := "http://" + lis.Addr().String() + "/"
	if tokenFile != "" {
		u += "?token=<the token in " + tokenFile + ">"
	}
	return u
}

func runDashboard(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dashboard")
	fs.SetOutput(stderr)
	state := fs.String("state", "", "a coordinator's state file (bbolt)")
	config := fs.String("config", "", "the job file the state belongs to (optional: adds the job's settings, its enrolled clients and the committee's members)")
	addr := fs.String("addr", "127.0.0.1:8080", "address to serve on; beyond loopback it needs --token-file")
	tokenFile := fs.String("token-file", "", "the viewer token, created (random, mode 0600) if the file does not exist")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: tally dashboard --state FILE [--config job.yaml] [--addr ADDR] [--token-file FILE]

Serves the coordinator dashboard of a job from its state file: the loss
and accuracy per round, the clients, the contribution table of the signed
receipts, the decryption audit and the latest key generation. For a job
that has ended (or whose coordinator stopped): a running coordinator holds
the file, and serves the live dashboard itself with --dashboard-addr.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *state == "" {
		fmt.Fprintln(stderr, "--state is required")
		fs.Usage()
		return errUsage
	}
	var job *engine.Job
	if *config != "" {
		j, err := coordinator.LoadJob(*config)
		if err != nil {
			return err
		}
		job = &j
	}
	src, err := dashboard.OpenFile(*state, job)
	if err != nil {
		return err
	}
	log := newLogger(stderr, false)
	lis, cfg, err := listenDashboard(*addr, *tokenFile, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "dashboard of %s at %s\n", *state, dashURL(lis, *tokenFile))
	return ignoreCancel(ctx, dashboard.NewCoordinator(cfg, src).Serve(ctx, lis))
}

// ignoreCancel turns the end of a server stopped by Ctrl-C into success.
func ignoreCancel(ctx context.Context, err error) error {
	if err == nil && ctx.Err() != nil {
		return nil
	}
	return err
}

func runReceipts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "render" && args[0] != "serve") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprint(stdout, receiptsUsage)
			return nil
		}
		fmt.Fprint(stderr, receiptsUsage)
		return errUsage
	}
	verb := args[0]
	fs := newFlagSet("receipts " + verb)
	fs.SetOutput(stderr)
	file := fs.String("receipts", "", "this client's receipts file (JSON lines, as tally client keeps it)")
	pubHex := fs.String("public-key", "", "the coordinator's receipt-signing key (hex), as the job published it")
	client := fs.String("client", "", "this client's id: every receipt must name it")
	out := fs.String("out", "receipts.html", "render: the HTML file to write")
	addr := fs.String("addr", "127.0.0.1:8081", "serve: address to serve on; beyond loopback it needs --token-file")
	tokenFile := fs.String("token-file", "", "serve: the viewer token, created if the file does not exist")
	fs.Usage = func() { fmt.Fprint(fs.Output(), receiptsUsage); fs.PrintDefaults() }
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *file == "" || *pubHex == "" || *client == "" {
		fmt.Fprintln(stderr, "--receipts, --public-key and --client are required")
		return errUsage
	}
	pub, err := ledger.ParsePublicKey(*pubHex)
	if err != nil {
		return err
	}
	rs, err := dashboard.VerifyReceipts(*file, pub, *client)
	if err != nil {
		return err
	}
	if verb == "serve" {
		lis, cfg, err := listenDashboard(*addr, *tokenFile, newLogger(stderr, false))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "receipts of %s (%d, %d failing) at %s\n", *client, len(rs.Rows), rs.Failing, dashURL(lis, *tokenFile))
		return ignoreCancel(ctx, dashboard.NewReceipts(cfg, *file, pub, *client).Serve(ctx, lis))
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := dashboard.WriteReceiptsPage(f, rs); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %d receipts of %s, %d verified, %d failing\n", *out, len(rs.Rows), *client, rs.Verified, rs.Failing)
	if rs.Failing > 0 {
		return fmt.Errorf("%w: %d of the %d receipts in %s fail verification (see %s)", errReceiptsFail, rs.Failing, len(rs.Rows), *file, *out)
	}
	return nil
}

// errReceiptsFail makes tally receipts render exit non-zero when a
// receipt fails, after writing the page that shows which.
var errReceiptsFail = errors.New("receipts do not verify")

const receiptsUsage = `Usage: tally receipts render|serve --receipts FILE --public-key HEX --client ID [--out page.html | --addr ADDR]

A data holder's view of its own receipts file: each receipt verified on
its own against the coordinator's public key (hash, signature, client id,
order), its values and payouts per round as charts, and every decryption
its round's receipt lists. render writes one self-contained HTML file
(it exits non-zero if a receipt fails, after writing the page); serve
serves the page, rebuilt from the file at every request. Nothing but this
file is read.

`
