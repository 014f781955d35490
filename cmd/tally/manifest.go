package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tallyfl/tally/client"
	"github.com/tallyfl/tally/coordinator"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/manifest"
)

func runManifest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, `Usage: tally manifest <create|show|verify> [flags]

A job manifest is the trust anchor the data holders pin: the ML team signs
it before anyone joins, and every client holds the coordinator to it (the
job, the HE parameters, k, the committee rule, the receipt key, the TLS
certificate, the participants' identity keys). tally data writes one for
its job; create writes one for yours.

  create   sign a manifest for a job file (--job) and its participants
  show     print a manifest and its fingerprint
  verify   check a manifest's signature (and --sha256, the fingerprint you were given)
`)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	switch args[0] {
	case "create":
		return manifestCreate(args[1:], stdout, stderr)
	case "show", "verify":
		fs := newFlagSet("manifest " + args[0])
		fs.SetOutput(stderr)
		pin := fs.String("sha256", "", "verify: the fingerprint the manifest must have (hex)")
		fs.Usage = func() {
			fmt.Fprintf(fs.Output(), "Usage: tally manifest %s [--sha256 HEX] FILE\n\nFlags:\n", args[0])
			fs.PrintDefaults()
		}
		// FILE first or last: tally manifest verify FILE --sha256 X reads
		// as well as the other order.
		rest, file := args[1:], ""
		if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			file, rest = rest[0], rest[1:]
		}
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return errUsage
		}
		if file == "" && fs.NArg() == 1 {
			file = fs.Arg(0)
		} else if fs.NArg() > 0 {
			file = ""
		}
		if file == "" {
			fs.Usage()
			return errUsage
		}
		m, err := manifest.Load(file)
		if err != nil {
			return err
		}
		if *pin != "" {
			if err := m.CheckFingerprint(*pin); err != nil {
				return err
			}
		}
		if args[0] == "show" {
			printManifest(stdout, m)
		}
		fmt.Fprintf(stdout, "manifest %s verifies: job %s, signed by %s\nsha256 %s\n", file, m.Job, hex.EncodeToString(m.Owner), m.FingerprintHex())
		return nil
	}
	return fmt.Errorf("tally manifest: unknown subcommand %q; want create, show or verify", args[0])
}

func printManifest(w io.Writer, m *manifest.Manifest) {
	fmt.Fprintf(w, "job          %s (manifest version %d)\n", m.Job, m.Version)
	fmt.Fprintf(w, "schema       %d features, classes %q, model %s", m.Schema.Features, m.Schema.Classes, m.Schema.ModelKind)
	if len(m.Schema.Hidden) > 0 {
		fmt.Fprintf(w, " hidden %v %s", m.Schema.Hidden, m.Schema.Activation)
	}
	fmt.Fprintln(w)
	s := m.Security
	fmt.Fprintf(w, "security     %s, HE parameter set %s (log_n ≥ %d, log_noise_flooding ≥ %d), k ≥ %d\n", s.SecureAggregation, s.HEParams, s.MinLogN, s.MinLogNoiseFlooding, s.MinGroupSize)
	fmt.Fprintf(w, "committee    %d members, threshold %d, rule %s, seed %s\n", m.Committee.Size, m.Committee.Threshold, m.Committee.Rule, hex.EncodeToString(m.Committee.Seed))
	fmt.Fprintf(w, "coordinator  receipt key %s\n             TLS certificate sha256 %s\n", hex.EncodeToString(m.Coordinator.ReceiptKey), hex.EncodeToString(m.Coordinator.TLSCertSHA256))
	fmt.Fprintf(w, "participants %d\n", len(m.Participants))
	for _, p := range m.Participants {
		fmt.Fprintf(w, "  %-20s %s\n", p.ID, hex.EncodeToString(p.Key))
	}
	if len(m.Edges) > 0 {
		fmt.Fprintf(w, "edges        %d with a TLS certificate of their own (others show the coordinator's)\n", len(m.Edges))
		for _, e := range m.Edges {
			fmt.Fprintf(w, "  %-20s TLS certificate sha256 %s\n", e.ID, hex.EncodeToString(e.TLSCertSHA256))
		}
	}
}

// keyList is a repeatable ID=VALUE flag.
type keyList map[string]string

func (k keyList) String() string { return fmt.Sprint(map[string]string(k)) }
func (k keyList) Set(s string) error {
	id, v, ok := strings.Cut(s, "=")
	if !ok || id == "" || v == "" {
		return fmt.Errorf("want ID=VALUE, got %q", s)
	}
	if _, dup := k[id]; dup {
		return fmt.Errorf("%s given twice", id)
	}
	k[id] = v
	return nil
}

func manifestCreate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("manifest create")
	fs.SetOutput(stderr)
	jobFile := fs.String("job", "", "the job file (YAML); it names the manifest (manifest:), the receipt key (receipt_key:), the TLS certificate (tls_cert:) and the edges' own (edges[].tls_cert:)")
	ownerKey := fs.String("owner-key", "", "the ML team's Ed25519 signing key (PEM); created if missing. Keep it off the coordinator's host")
	seedHex := fs.String("committee-seed", "", "the committee seed, 64 hex digits (default: 32 fresh random bytes)")
	participants := keyList{}
	keyFiles := keyList{}
	fs.Var(participants, "participant", "ID=PUBKEY: a participant and the Ed25519 public key it printed with tally client keygen (hex); repeatable")
	fs.Var(keyFiles, "participant-key", "ID=FILE: a participant and its client key file (tally client keygen --key FILE); repeatable")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: tally manifest create --job job.yaml --owner-key owner.key --participant ID=PUBKEY ... 

Signs a manifest for the job: its id, schema and model, the HE parameter
set, k, the committee size, threshold and rule, the coordinator's receipt
key (the job's receipt_key file, created if missing) and TLS certificate
(the job's tls_cert), the TLS certificate of each edge whose entry in the
job's edges names one (tls_cert: a PEM file; an edge without it shows the
coordinator's), and the participants' identity keys. Every client of
the job's enrolment must be a participant. Writes the file the job names
in manifest: and prints its fingerprint for the data holders.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *jobFile == "" || *ownerKey == "" {
		fmt.Fprintln(stderr, "--job and --owner-key are required")
		fs.Usage()
		return errUsage
	}
	job, err := coordinator.LoadJobUnbound(*jobFile)
	if err != nil {
		return err
	}
	var ps []manifest.Participant
	for id, v := range participants {
		k, err := hex.DecodeString(v)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("--participant %s: want a %d-byte Ed25519 public key in hex", id, ed25519.PublicKeySize)
		}
		ps = append(ps, manifest.Participant{ID: id, Key: k})
	}
	for id, path := range keyFiles {
		if _, dup := participants[id]; dup {
			return fmt.Errorf("participant %s given by --participant and --participant-key", id)
		}
		k, err := client.KeyFilePublicKey(path)
		if err != nil {
			return fmt.Errorf("--participant-key %s: %w", id, err)
		}
		ps = append(ps, manifest.Participant{ID: id, Key: manifest.HexBytes(k)})
	}
	var seed []byte
	if *seedHex != "" {
		if seed, err = hex.DecodeString(*seedHex); err != nil || len(seed) != 32 {
			return fmt.Errorf("--committee-seed: want 64 hex digits")
		}
	}
	owner, created, err := loadOrCreateKey(*ownerKey)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(stdout, "created the owner key %s\n", *ownerKey)
	}
	m, path, err := writeJobManifest(job, owner, ps, seed)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s for job %s with %d participants\nsha256 %s\n", path, m.Job, len(m.Participants), m.FingerprintHex())
	return nil
}

// writeJobManifest builds, signs and writes the manifest job names, from
// the job's own files: its receipt key (created if missing) and its TLS
// certificate. seed nil draws a fresh committee seed.
func writeJobManifest(job engine.Job, owner ed25519.PrivateKey, ps []manifest.Participant, seed []byte) (*manifest.Manifest, string, error) {
	cfg := job.JobConfig
	var missing []string
	for field, v := range map[string]string{"manifest": cfg.Manifest, "receipt_key": cfg.ReceiptKey, "tls_cert": cfg.TLSCert} {
		if v == "" {
			missing = append(missing, field)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, "", fmt.Errorf("the job file names no %s: a manifest pins them", strings.Join(missing, ", "))
	}
	if !job.Secure() {
		return nil, "", errors.New("the job's secure_aggregation is not he: a manifest requires it")
	}
	receipt, _, err := loadOrCreateKey(jobPath(job, cfg.ReceiptKey))
	if err != nil {
		return nil, "", err
	}
	pin, err := certFingerprint(jobPath(job, cfg.TLSCert))
	if err != nil {
		return nil, "", err
	}
	edges, err := edgePins(job)
	if err != nil {
		return nil, "", err
	}
	m, err := buildManifest(job, owner, receipt.Public().(ed25519.PublicKey), pin, edges, ps, seed)
	if err != nil {
		return nil, "", err
	}
	path := jobPath(job, cfg.Manifest)
	if err := m.Save(path); err != nil {
		return nil, "", err
	}
	return m, path, nil
}

// edgePins pins the certificate of each of the job's edges that names one
// (edges[].tls_cert), so that the edge shows its clients its own rather
// than the coordinator's.
func edgePins(job engine.Job) ([]manifest.Edge, error) {
	var edges []manifest.Edge
	for i, e := range job.Edges {
		if e.TLSCert == "" {
			continue
		}
		pin, err := certFingerprint(jobPath(job, e.TLSCert))
		if err != nil {
			return nil, fmt.Errorf("edges[%d].tls_cert (edge %s): %w", i, e.ID, err)
		}
		edges = append(edges, manifest.Edge{ID: e.ID, TLSCertSHA256: pin})
	}
	return edges, nil
}

// buildManifest signs the manifest of job with owner, pinning the
// coordinator's certificate pin and the edges'; seed nil draws a fresh
// committee seed. It checks the job against it, as the coordinator will.
func buildManifest(job engine.Job, owner ed25519.PrivateKey, receipt ed25519.PublicKey, pin []byte, edges []manifest.Edge, ps []manifest.Participant, seed []byte) (*manifest.Manifest, error) {
	if seed == nil {
		seed = make([]byte, 32)
		if _, err := rand.Read(seed); err != nil {
			return nil, err
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].ID < ps[j].ID })
	pid := job.Params.ID()
	pc := job.Params.Config()
	m := &manifest.Manifest{
		Version: manifest.Version, Job: job.ID,
		Schema: manifest.Schema{Features: job.Data.Features, Classes: job.Data.ClassNames, ModelKind: job.Model.Kind,
			Hidden: job.Model.Hidden, Activation: job.Model.Activation},
		Security: manifest.Security{SecureAggregation: job.SecureAggregation, HEParams: hex.EncodeToString(pid[:]),
			MinLogN: pc.LogN, MinLogNoiseFlooding: manifest.LogFlooding(job.Params.NoiseFloodingSigma()), MinGroupSize: job.MinGroupSize,
			// L, what the job's valuation mode releases per client and
			// round (projection mode: its public vectors); 0 means 1.
			MaxScalarsPerClientRound: scalarsForManifest(job)},
		Committee:    manifest.Committee{Size: job.Committee.Size, Threshold: job.Committee.Threshold, Rule: manifest.RuleSHA256Rank, Seed: seed},
		Coordinator:  manifest.Coordinator{ReceiptKey: manifest.HexBytes(receipt), TLSCertSHA256: pin},
		Participants: ps,
		Edges:        edges,
	}
	if err := m.Sign(owner); err != nil {
		return nil, err
	}
	if err := coordinator.CheckManifest(job, m); err != nil {
		return nil, err
	}
	return m, nil
}

// jobPath resolves a path of the job file against its folder.
func jobPath(job engine.Job, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(job.Dir, p)
}

// loadOrCreateKey reads an Ed25519 key file (PEM, PKCS #8), or creates it
// with a fresh key, readable by its owner only.
func loadOrCreateKey(path string) (ed25519.PrivateKey, bool, error) {
	if _, err := os.Stat(path); err == nil {
		k, err := coordinator.LoadReceiptKey(path)
		return k, false, err
	}
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, err
	}
	if err := coordinator.WriteKeyFile(path, k); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// certFingerprint is the SHA-256 of the first certificate (DER) in a PEM file.
func certFingerprint(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	sum := sha256.Sum256(blk.Bytes)
	return sum[:], nil
}

// writePKI creates a CA and a coordinator certificate it signs, valid for
// hosts (names or IP addresses) and 127.0.0.1 and localhost, for a year,
// in dir: ca.pem, ca.key, coordinator.pem, coordinator.key (keys mode
// 0600). Clients pin the coordinator's certificate by its fingerprint in
// the manifest; the CA is for tools that verify by chain (curl, a proxy).
func writePKI(dir string, hosts []string) (certFile, keyFile string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	now := time.Now()
	serial := func() *big.Int {
		n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		return n
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	ca := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "tally job CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	leaf := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "tally coordinator"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range append([]string{"127.0.0.1", "localhost"}, hosts...) {
		if ip := net.ParseIP(h); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else if h != "" {
			leaf.DNSNames = append(leaf.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	write := func(name, typ string, b []byte, mode os.FileMode) error {
		return os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), mode)
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	for _, f := range []struct {
		name, typ string
		b         []byte
		mode      os.FileMode
	}{{"ca.pem", "CERTIFICATE", caDER, 0o644}, {"ca.key", "EC PRIVATE KEY", caKeyDER, 0o600},
		{"coordinator.pem", "CERTIFICATE", der, 0o644}, {"coordinator.key", "EC PRIVATE KEY", keyDER, 0o600}} {
		if err := write(f.name, f.typ, f.b, f.mode); err != nil {
			return "", "", err
		}
	}
	return filepath.Join(dir, "coordinator.pem"), filepath.Join(dir, "coordinator.key"), nil
}

// runClientKeygen is `tally client keygen`: a data holder's identity key,
// made before the job, its public half printed for the ML team.
func runClientKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("client keygen")
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "the key file to create (mode 0600); pass the same file to tally client --key (its default is the data file's name + .key)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: tally client keygen --key FILE

Creates this data holder's identity key and prints its public half. Send
that line to the ML team: the job's manifest lists it as your identity,
and your client proves it on every call. An existing file is not replaced.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *keyFile == "" {
		fmt.Fprintln(stderr, "--key is required")
		fs.Usage()
		return errUsage
	}
	pub, err := client.CreateKeyFile(*keyFile)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created %s\npublic key %s\n", *keyFile, hex.EncodeToString(pub))
	return nil
}

// scalarsForManifest is the L a job's manifest pins: the scalars its
// valuation declares per client and round, 0 (the default, 1) when it
// declares at most one, so that manifests of older jobs keep their digest.
func scalarsForManifest(job engine.Job) int {
	if l := job.ScalarsPerRound(); l > 1 {
		return l
	}
	return 0
}
