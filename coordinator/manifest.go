package coordinator

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/manifest"
)

// Errors of a job bound to a manifest.
var (
	// ErrManifest: the job file contradicts the manifest it names.
	ErrManifest = errors.New("coordinator: the job file contradicts its manifest")
	// ErrNotParticipant refuses an enrolment whose key is not the
	// manifest's key for the token's client: a token is a way in, not an
	// identity.
	ErrNotParticipant = errors.New("coordinator: the enrolling key is not the manifest's key for this client")
	// ErrReceiptKey: the receipt key file is unreadable, or its key is not
	// the manifest's.
	ErrReceiptKey = errors.New("coordinator: receipt key")
)

// resolve names path relative to the job file's folder.
func resolve(job engine.Job, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(job.Dir, path)
}

// bindManifest loads and verifies the manifest the job names, checks the
// job against it and gives the engine the committee seed it commits to.
func bindManifest(job *engine.Job) error {
	if job.JobConfig.Manifest == "" {
		return nil
	}
	path := resolve(*job, job.JobConfig.Manifest)
	m, err := manifest.Load(path)
	if err != nil {
		return fmt.Errorf("%w: manifest: %w", engine.ErrConfig, err)
	}
	if err := CheckManifest(*job, m); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	job.Pinned = m
	job.Committee.Seed = slices.Clone(m.Committee.Seed)
	return nil
}

// CheckManifest returns every job-file field that contradicts m, each
// wrapping ErrManifest and naming the field, the job file's value and the
// manifest's.
func CheckManifest(job engine.Job, m *manifest.Manifest) error {
	var errs []error
	bad := func(field string, job, want any) {
		errs = append(errs, fmt.Errorf("%w: %s is %v, the manifest's is %v", ErrManifest, field, job, want))
	}
	if job.ID != m.Job {
		bad("id", fmt.Sprintf("%q", job.ID), fmt.Sprintf("%q", m.Job))
	}
	if job.Data.Features != m.Schema.Features {
		bad("data.features", job.Data.Features, m.Schema.Features)
	}
	if !slices.Equal([]string(job.Data.ClassNames), m.Schema.Classes) {
		bad("data.classes", fmt.Sprintf("%q", []string(job.Data.ClassNames)), fmt.Sprintf("%q", m.Schema.Classes))
	}
	if job.Model.Kind != m.Schema.ModelKind {
		bad("model.kind", job.Model.Kind, m.Schema.ModelKind)
	}
	if !slices.Equal(job.Model.Hidden, m.Schema.Hidden) {
		bad("model.hidden", job.Model.Hidden, m.Schema.Hidden)
	}
	if job.Model.Activation != m.Schema.Activation {
		bad("model.activation", fmt.Sprintf("%q", job.Model.Activation), fmt.Sprintf("%q", m.Schema.Activation))
	}
	if job.SecureAggregation != m.Security.SecureAggregation {
		bad("secure_aggregation", job.SecureAggregation, m.Security.SecureAggregation)
	} else {
		cfg := job.Params.Config()
		id := job.Params.ID()
		if got := hex.EncodeToString(id[:]); got != m.Security.HEParams {
			bad("he_params (parameter-set id)", got, m.Security.HEParams)
		}
		if cfg.LogN < m.Security.MinLogN {
			bad("he_params.log_n", cfg.LogN, fmt.Sprintf("at least %d", m.Security.MinLogN))
		}
		if lf := manifest.LogFlooding(job.Params.NoiseFloodingSigma()); lf < m.Security.MinLogNoiseFlooding {
			bad("the flooding noise (log2 σ)", lf, fmt.Sprintf("at least %d", m.Security.MinLogNoiseFlooding))
		}
	}
	if l := max(m.Security.MaxScalarsPerClientRound, 1); job.SecureAggregation == "he" && job.ScalarsPerRound() > l {
		errs = append(errs, fmt.Errorf("%w: valuation.scalars_per_round is %d, the manifest's security.max_scalars_per_client_round %d", engine.ErrScalars, job.ScalarsPerRound(), l))
	}
	if job.MinGroupSize < m.Security.MinGroupSize {
		bad("min_group_size", job.MinGroupSize, fmt.Sprintf("at least %d", m.Security.MinGroupSize))
	}
	if job.Committee.Size != m.Committee.Size {
		bad("committee.size", job.Committee.Size, m.Committee.Size)
	}
	if job.Committee.Threshold != m.Committee.Threshold {
		bad("committee.threshold", job.Committee.Threshold, m.Committee.Threshold)
	}
	for i, id := range job.ClientIDs() {
		if _, ok := m.IdentityKey(id); !ok {
			bad(fmt.Sprintf("clients.enrolment[%d].id", i), fmt.Sprintf("%q", id), "not a participant")
		}
	}
	// A pinned edge the job does not list would be refused at its first
	// call: the manifest names an edge that cannot serve.
	for i, e := range m.Edges {
		if !slices.ContainsFunc(job.Edges, func(c engine.EdgeConfig) bool { return c.ID == e.ID }) {
			errs = append(errs, fmt.Errorf("%w: the manifest's edges[%d] pins a certificate for edge %q, which the job's edges list does not name", ErrManifest, i, e.ID))
		}
	}
	return errors.Join(errs...)
}

// LoadReceiptKey reads a receipt-signing key file: a PEM "PRIVATE KEY"
// block holding an Ed25519 key in PKCS #8.
func LoadReceiptKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReceiptKey, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: %s holds no PEM PRIVATE KEY block", ErrReceiptKey, path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrReceiptKey, path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s holds a %T, want an Ed25519 key", ErrReceiptKey, path, k)
	}
	return key, nil
}

// WriteKeyFile writes key as a PEM PKCS #8 file readable by its owner
// only; an existing file is refused, never overwritten.
func WriteKeyFile(path string, key ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// jobReceiptKey is the receipt key the job names, checked against its
// manifest; nil when the job names none.
func jobReceiptKey(job engine.Job) (ed25519.PrivateKey, error) {
	if job.JobConfig.ReceiptKey == "" {
		if job.Pinned != nil {
			return nil, fmt.Errorf("%w: the job names a manifest but no receipt_key file; the manifest pins receipt key %x", ErrReceiptKey, []byte(job.Pinned.Coordinator.ReceiptKey))
		}
		return nil, nil
	}
	path := resolve(job, job.JobConfig.ReceiptKey)
	key, err := LoadReceiptKey(path)
	if err != nil {
		return nil, err
	}
	if m := job.Pinned; m != nil && !key.Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(m.Coordinator.ReceiptKey)) {
		return nil, fmt.Errorf("%w: %s holds the key %x, the manifest pins %x", ErrReceiptKey, path, []byte(key.Public().(ed25519.PublicKey)), []byte(m.Coordinator.ReceiptKey))
	}
	return key, nil
}

// checkParticipant refuses an enrolment of client with key when the job's
// manifest gives client another key, or does not list it.
func checkParticipant(job engine.Job, client string, key ed25519.PublicKey) error {
	m := job.Pinned
	if m == nil {
		return nil
	}
	want, ok := m.IdentityKey(client)
	if !ok {
		return fmt.Errorf("%w: client %s is not a participant of the manifest", ErrNotParticipant, client)
	}
	if !want.Equal(key) {
		return fmt.Errorf("%w: client %s enrolled with key %x, the manifest's is %x", ErrNotParticipant, client, []byte(key)[:8], []byte(want)[:8])
	}
	return nil
}
