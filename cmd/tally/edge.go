package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/edge"
	"github.com/tallyfl/tally/manifest"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// runEdge is `tally edge`: a keyless edge aggregator between clients and
// their coordinator (package edge).
func runEdge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "keygen" {
		return runEdgeKeygen(args[1:], stdout, stderr)
	}
	fs := newFlagSet("edge")
	fs.SetOutput(stderr)
	listen := fs.String("listen", "0.0.0.0:7071", "address the clients join, host:port")
	coord := fs.String("coordinator", "", "the coordinator's address, host:port")
	id := fs.String("id", "", "this edge's id, as the job's edges list names it")
	keyFile := fs.String("key", "", "this edge's Ed25519 key (tally edge keygen --key FILE), whose public half the job's edges list holds")
	healthAddr := fs.String("health-addr", "", "also serve the gRPC health service alone in plaintext on this address, for probes (default: off)")
	margin := fs.Duration("margin", edge.DefaultMargin, "forward what the edge holds this long before a round's deadline when some of its clients have not uploaded")
	verbose := fs.Bool("verbose", false, "debug logging")
	var up, serve tlsFiles
	fs.StringVar(&up.ca, "tls-ca", "", "verify the coordinator against this CA (PEM)")
	pinFile := fs.String("tls-pin", "", "verify the coordinator by its certificate (PEM), as clients holding the manifest do, instead of a CA")
	fs.StringVar(&up.serverName, "tls-server-name", "", "the name the coordinator's certificate must carry (default: the host of --coordinator)")
	fs.StringVar(&serve.cert, "tls-cert", "", "the certificate (PEM) this edge shows its clients: its own, which the job's manifest pins for --id (edges[].tls_cert in the job file), or the coordinator's")
	fs.StringVar(&serve.key, "tls-key", "", "the private key of --tls-cert (PEM)")
	fs.StringVar(&serve.ca, "client-ca", "", "mutual TLS: admit only clients with a certificate signed by this CA (PEM), as the coordinator's --client-ca does")
	fs.StringVar(&up.cert, "tls-client-cert", "", "the client certificate (PEM) this edge shows the coordinator, for a coordinator with --client-ca; needs --tls-client-key")
	fs.StringVar(&up.key, "tls-client-key", "", "the private key of --tls-client-cert (PEM)")
	plaintext := fs.Bool("insecure-plaintext", false, "INSECURE: no TLS, neither to the clients nor to the coordinator")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: tally edge --coordinator ADDR --id ID --key FILE [--listen ADDR] [flags]
       tally edge keygen --key FILE

Runs a keyless edge aggregator. Clients join it exactly as they join the
coordinator (tally client --join EDGE[,OTHER,...]); it relays every call
under the client's own signature, and adds its clients' encrypted updates
itself, with no key share: after checking each client's signed statement
and ciphertexts, it forwards one partial sum per batch, with each client's
statement and c1 so that committee members check the sum as they check
a flat round's, and (influence valuation) each client's product with the
round's validation gradient. It can drop or delay its clients' uploads;
it cannot read them.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *coord == "" || *id == "" || *keyFile == "" {
		fmt.Fprintln(stderr, "missing required flags: --coordinator, --id and --key")
		fs.Usage()
		return errUsage
	}
	key, err := readEdgeKey(*keyFile)
	if err != nil {
		return err
	}
	log := newLogger(stderr, *verbose)
	// A coordinator that refuses the edge's client certificate, shows
	// another certificate than --tls-pin's or answers in plaintext will do
	// so at every retry: the edge stops, naming why (fatal's cause), where
	// it used to retry until the minute's wait for the job ran out, or,
	// mid-job, for ever, relaying nothing.
	ctx, fatal := context.WithCancelCause(ctx)
	defer fatal(nil)
	dial := grpc.WithTransportCredentials(insecure.NewCredentials())
	var serverOpts []grpc.ServerOption
	var shown []byte // the certificate (DER) the clients are shown
	switch {
	case (up.cert == "") != (up.key == ""):
		return errors.New("--tls-client-cert and --tls-client-key go together")
	case *plaintext && (up.cert != "" || serve.ca != ""):
		return errors.New("--insecure-plaintext and --tls-client-cert/--client-ca: choose one")
	}
	if *plaintext {
		fmt.Fprintln(stderr, "WARNING: --insecure-plaintext: no TLS to the clients or to the coordinator")
	} else {
		switch {
		case *pinFile != "":
			pin, err := certFingerprint(*pinFile)
			if err != nil {
				return err
			}
			certs, err := up.keyPair()
			if err != nil {
				return err
			}
			dial = grpc.WithTransportCredentials(client.PinnedTLS([][]byte{pin}, certs, fatal))
		case up.ca != "":
			if dial, err = up.dialReporting(fatal); err != nil {
				return err
			}
		default:
			return errors.New("no way to verify the coordinator: give --tls-pin or --tls-ca (or --insecure-plaintext)")
		}
		if serve.cert == "" {
			return errors.New("no certificate to show the clients: give --tls-cert and --tls-key (or --insecure-plaintext)")
		}
		cfg, err := serve.serverTLS()
		if err != nil {
			return err
		}
		shown = cfg.Certificates[0].Certificate[0]
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	conn, err := grpc.NewClient(*coord, dial)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The job id the edge signs its calls for: the coordinator's open
	// Schema call says it.
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	schema, err := tallyv1.NewCoordinatorServiceClient(conn).Schema(sctx, &tallyv1.SchemaRequest{}, grpc.WaitForReady(true))
	cancel()
	if err != nil {
		if cause := refusedCause(ctx); cause != nil {
			return fmt.Errorf("edge %s: %w", *id, cause)
		}
		return fmt.Errorf("ask the coordinator at %s for its job: %w", *coord, err)
	}
	if shown != nil && len(schema.GetManifest()) > 0 {
		if err := checkEdgeCert(schema.GetManifest(), *coord, *id, serve.cert, shown); err != nil {
			return err
		}
	}
	e, err := edge.New(edge.Config{Upstream: conn, ID: *id, Key: key, Job: schema.GetJobId(), Margin: *margin, Log: log.With("coordinator", *coord)})
	if err != nil {
		return err
	}
	// An edge the job does not list would only relay, all job long: it
	// does not start. A coordinator that cannot say (unreachable) is asked
	// again at the first task, and the edge stops then if refused.
	sctx, cancel = context.WithTimeout(ctx, time.Minute)
	err = e.Standing(sctx, grpc.WaitForReady(true))
	cancel()
	switch {
	case errors.Is(err, edge.ErrNotListed):
		return notListed(*id, *coord, err)
	case err != nil:
		log.Warn("could not ask the coordinator whether it lists this edge; asking again at the first task", "edge", *id, "coordinator", *coord, "err", err)
	}
	gs := grpc.NewServer(append(e.ServerOptions(), serverOpts...)...)
	e.Register(gs)
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *healthAddr != "" {
		probes, err := net.Listen("tcp", *healthAddr)
		if err != nil {
			return fmt.Errorf("--health-addr: %w", err)
		}
		hs := grpc.NewServer()
		h := health.NewServer()
		healthpb.RegisterHealthServer(hs, h)
		go func() { _ = hs.Serve(probes) }()
		defer hs.Stop()
	}
	fmt.Fprintf(stdout, "tally edge %s: job %s, clients join %s, relaying to %s\n", *id, schema.GetJobId(), lis.Addr(), *coord)
	go func() {
		select {
		case <-ctx.Done():
			if refusedCause(ctx) != nil {
				gs.Stop()
				return
			}
			gs.GracefulStop()
		case <-e.NotListed():
			gs.Stop()
		}
	}()
	if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	log.Info("edge stopped", "partials", e.Partials.Load(), "summed", e.Summed.Load(), "relayed", e.Relayed.Load())
	if err := e.NotListedErr(); err != nil {
		return notListed(*id, *coord, err)
	}
	if cause := refusedCause(ctx); cause != nil {
		log.Error("edge stopped: the coordinator's TLS refuses it", "edge", *id, "coordinator", *coord, "err", cause)
		return fmt.Errorf("edge %s: %w", *id, cause)
	}
	return nil
}

// refusedCause is the TLS failure that stopped ctx (the fatal of tally
// edge's or tally client's transport), or nil when ctx was not stopped by
// one.
func refusedCause(ctx context.Context) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, client.ErrPlaintextCoordinator) || errors.Is(cause, client.ErrCertPin) || errors.Is(cause, client.ErrClientCertRefused) {
		return cause
	}
	return nil
}

// checkEdgeCert refuses to serve a certificate the job's manifest (as
// the coordinator serves it) pins neither for the coordinator nor for
// edge id: every client holding the manifest would refuse it.
func checkEdgeCert(raw []byte, coord, id, file string, der []byte) error {
	m, err := manifest.Parse(raw, "the manifest served by "+coord)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(der)
	own, listed := m.EdgePin(id)
	if bytes.Equal(sum[:], m.Coordinator.TLSCertSHA256) || (listed && bytes.Equal(sum[:], own)) {
		return nil
	}
	want := "it pins none for edge " + id
	if listed {
		want = fmt.Sprintf("for edge %s it pins %x", id, own)
	}
	return fmt.Errorf("%w: --tls-cert %s has sha256 %x; the manifest of job %s pins the coordinator's %x, and %s: its clients would refuse it",
		client.ErrCertPin, file, sum, m.Job, []byte(m.Coordinator.TLSCertSHA256), want)
}

// notListed is the coordinator's refusal of edge id as not listed in its
// job (which the edge logged at ERROR), as tally edge fails with it.
func notListed(id, coord string, err error) error {
	return fmt.Errorf("edge %s refused by the coordinator at %s: check --id and the public half of --key against the job's edges list: %w", id, coord, err)
}

// runEdgeKeygen is `tally edge keygen`: a fresh Ed25519 key for an edge,
// its seed in hex in FILE (mode 0600), its public half printed for the
// job's edges list.
func runEdgeKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("edge keygen")
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "the key file to create (mode 0600)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: tally edge keygen --key FILE

Creates an edge's Ed25519 key and prints its public half, for the job
file's edges list (edges: [{id: ..., public_key: ...}]). An existing file
is not replaced.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *keyFile == "" {
		fs.Usage()
		return errUsage
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, hex.EncodeToString(key.Seed())); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, hex.EncodeToString(pub))
	return nil
}

func readEdgeKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s: not an edge key (64 hex digits, from tally edge keygen)", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
