package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/coordinator"
)

func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, `Usage: tally token <create|revoke|list> --job job.yaml [flags]

Enrolment tokens admit data holders to a job. A token is shown once, when it
is created, and stored only as its SHA-256 in the job's tokens file
(JOB_ID.tokens next to the job file, unless --tokens says otherwise), which a
running coordinator rereads when it changes. A token admits one enrolment by
default: at enrolment the client binds a key pair it generated, signs every
later call with it, and resumes with it after a restart.

  create   issue a token for a client of the job (--client), printed on stdout
  revoke   refuse a token (--token-id) or a client (--client) from now on
  list     show the tokens file: ids, clients, expiry, revocations (no secrets)
`)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	fs := newFlagSet("token " + args[0])
	fs.SetOutput(stderr)
	jobFile := fs.String("job", "", "the job file (YAML)")
	tokens := fs.String("tokens", "", "the tokens file (default: JOB_ID.tokens next to the job file)")
	clientID := fs.String("client", "", "create: the client the token enrols; revoke: the client to turn away")
	expires := fs.Duration("expires", 0, "create: the token expires this long after now, e.g. 72h (default: never)")
	uses := fs.Int("uses", coordinator.DefaultTokenUses, "create: how many enrolments the token admits")
	tokenID := fs.String("token-id", "", "revoke: the token to refuse, by its id (see tally token list)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tally token %s --job job.yaml [flags]\n\nFlags:\n", args[0])
		fs.PrintDefaults()
	}
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *jobFile == "" {
		fmt.Fprintln(stderr, "--job is required")
		fs.Usage()
		return errUsage
	}
	job, err := coordinator.LoadJob(*jobFile)
	if err != nil {
		return err
	}
	if *tokens == "" {
		*tokens = coordinator.TokensPath(job)
	}
	now := time.Now()
	switch args[0] {
	case "create":
		if *clientID == "" {
			fmt.Fprintln(stderr, "--client is required")
			fs.Usage()
			return errUsage
		}
		if *expires < 0 || *uses < 1 {
			fmt.Fprintln(stderr, "--expires must be ≥ 0 and --uses ≥ 1")
			return errUsage
		}
		tok, rec, err := coordinator.CreateToken(*tokens, job, *clientID, *expires, *uses, now)
		if err != nil {
			return err
		}
		exp := "never"
		if !rec.Expires.IsZero() {
			exp = rec.Expires.Format(time.RFC3339)
		}
		fmt.Fprintf(stderr, "token %s for %s (job %s): %d enrolment(s), expires %s; its hash is in %s. Give it to the data holder; it is not shown again.\n",
			rec.TokenID, rec.Client, job.ID, rec.Uses, exp, *tokens)
		fmt.Fprintln(stdout, tok)
		return nil
	case "revoke":
		switch {
		case (*tokenID == "") == (*clientID == ""):
			fmt.Fprintln(stderr, "give --token-id or --client")
			return errUsage
		case *tokenID != "":
			if err := coordinator.RevokeToken(*tokens, *tokenID, now); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "token %s revoked\n", *tokenID)
		default:
			if err := coordinator.RevokeClient(*tokens, job, *clientID, now); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "client %s revoked: its calls and tokens are refused from now on\n", *clientID)
		}
		return nil
	case "list":
		recs, err := coordinator.ReadTokens(*tokens)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			fmt.Fprintf(stdout, "%s holds no tokens\n", *tokens)
			return nil
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "OP\tTOKEN\tCLIENT\tCREATED/AT\tEXPIRES\tUSES")
		for _, r := range recs {
			when, exp, uses := r.Created, "never", fmt.Sprint(r.Uses)
			if r.Op == "revoke" {
				when, exp, uses = r.At, "", ""
			} else if !r.Expires.IsZero() {
				exp = r.Expires.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Op, r.TokenID, r.Client, when.Format(time.RFC3339), exp, uses)
		}
		return w.Flush()
	}
	return fmt.Errorf("tally token: unknown subcommand %q; want create, revoke or list", args[0])
}

// tlsFiles are the TLS flags of a command.
type tlsFiles struct {
	cert, key, ca, serverName string
}

func (t tlsFiles) keyPair() ([]tls.Certificate, error) {
	if (t.cert == "") != (t.key == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if t.cert == "" {
		return nil, nil
	}
	c, err := tls.LoadX509KeyPair(t.cert, t.key)
	if err != nil {
		return nil, fmt.Errorf("TLS key pair %s, %s: %w", t.cert, t.key, err)
	}
	return []tls.Certificate{c}, nil
}

func certPool(file, flagName string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flagName, err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", flagName, file)
	}
	return p, nil
}

// serverTLS is the coordinator's TLS configuration: nil without
// --tls-cert; with --client-ca, mutual TLS (a client must present a
// certificate that CA signed).
func (t tlsFiles) serverTLS() (*tls.Config, error) {
	certs, err := t.keyPair()
	if err != nil {
		return nil, err
	}
	if certs == nil {
		if t.ca != "" {
			return nil, errors.New("--client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first")
		}
		return nil, nil
	}
	cfg := &tls.Config{Certificates: certs, MinVersion: tls.VersionTLS12}
	if t.ca != "" {
		if cfg.ClientCAs, err = certPool(t.ca, "--client-ca"); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// dialOption is the client's transport: plaintext unless a TLS flag is
// given; --tls-ca verifies the coordinator against that CA instead of the
// system's roots, --tls-cert/--tls-key present a client certificate.
func (t tlsFiles) dialOption() (grpc.DialOption, error) {
	return t.dialReporting(nil)
}

// dialReporting is dialOption whose TLS reports to fatal the handshake
// failures no retry cures (client.ReportRefusals): a server in plaintext,
// or one that refuses the certificate shown.
func (t tlsFiles) dialReporting(fatal func(error)) (grpc.DialOption, error) {
	certs, err := t.keyPair()
	if err != nil {
		return nil, err
	}
	if certs == nil && t.ca == "" && t.serverName == "" {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	cfg := &tls.Config{Certificates: certs, ServerName: t.serverName, MinVersion: tls.VersionTLS12}
	if t.ca != "" {
		if cfg.RootCAs, err = certPool(t.ca, "--tls-ca"); err != nil {
			return nil, err
		}
	}
	return grpc.WithTransportCredentials(client.ReportRefusals(credentials.NewTLS(cfg), fatal)), nil
}
