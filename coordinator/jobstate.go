package coordinator

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tallyfl/tally/accountant"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/ledger"
)

// ErrJobChanged is returned when the job file's defining fields differ
// from those recorded in the state file: resuming would mix two jobs'
// rounds, receipts and payouts under one name.
var ErrJobChanged = errors.New("coordinator: the job file differs from the job in the state file")

// ErrDPRoundsRaised is returned when the job file raises the rounds of a
// job under privacy.dp after rounds have run: its σ was derived for the
// rounds it had, and the rounds added would take a client's ε past
// privacy.dp.epsilon.
var ErrDPRoundsRaised = errors.New("coordinator: rounds raised beyond the privacy.dp budget")

// keyJobIdentity holds the JobIdentity of the job a state file belongs to.
const keyJobIdentity = "job_identity"

// operationalFields are the job-file fields that do not enter the job's
// identity: changing them and restarting resumes the same job. Every other
// field is defining, including any field added to JobConfig later, so
// that a new setting is checked unless someone decides here that it may
// change mid-job. The reasons, field by field:
//
//   - listen, round_timeout, tick, clients.wait_for, clients.enrol_timeout,
//     clients.liveness, on_round_failure, max_failed_rounds: where and how
//     long the coordinator waits, and what it does after a failed round.
//     They decide when a round closes, never what a completed round
//     computes from the updates it has; the rounds already stored keep
//     their results.
//   - rounds: raising it extends a finished or running job, which is
//     legitimate (the rounds done keep their receipts and the next ones
//     continue from the stored model); lowering it ends the job sooner.
//     The value recorded is updated and the change logged. Under
//     privacy.dp, whose σ is derived from the rounds, a raise after
//     rounds have run is refused (ErrDPRoundsRaised, checkDPRaise).
//   - edges[].tls_cert: the file of a certificate the manifest pins, as
//     tls_cert is (IdentityOf clears it).
//   - clients.enrolment[].token, token_sha256, uses: credentials, which
//     are rotated (tally token create) without changing the job; who may
//     take part (the ids) is defining.
//   - data.validation, data.test: file paths, resolved against the job
//     file's folder, so a folder moved elsewhere resumes. Their contents
//     are not fingerprinted: replacing the validation CSV changes the
//     valuation of later rounds and is not detected.
//   - valuation.estimator.workers: parallelism; estimates depend on the
//     seed, not on the number of workers.
//   - id: checked on its own (ErrOtherJob), before the identity.
//   - manifest, receipt_key, tls_cert, tls_key: file paths. What the manifest pins is checked
//     against the job's defining fields at every start (CheckManifest),
//     and the receipt key against the state file's (ErrOtherKey).
var operationalFields = []string{
	"id", "rounds", "listen", "round_timeout", "tick", "on_round_failure", "max_failed_rounds",
	"clients.wait_for", "clients.enrol_timeout", "clients.liveness", "clients.enrolment",
	"data.validation", "data.test", "valuation.estimator.workers", "manifest", "receipt_key", "tls_cert", "tls_key",
}

// JobIdentity is what a state file records of the job it belongs to: the
// defining fields of the job file after defaults, each as canonical JSON
// under its dotted YAML path, and the SHA-256 of their canonical encoding.
type JobIdentity struct {
	Digest string            `json:"digest"`
	Fields map[string]string `json:"fields"`
	// Rounds is the job's rounds when last opened (operational, logged
	// when it changes).
	Rounds int `json:"rounds"`
}

// IdentityOf computes the identity of a validated job.
func IdentityOf(job engine.Job) (JobIdentity, error) {
	cfg := job.JobConfig
	ids := job.ClientIDs()
	cfg.Clients.Enrolment = nil
	// An edge's certificate file is operational, as the coordinator's
	// tls_cert is (a renewed certificate is a new manifest, not a new
	// job); the edges' ids and keys are defining.
	cfg.Edges = slices.Clone(cfg.Edges)
	for i := range cfg.Edges {
		cfg.Edges[i].TLSCert = ""
	}
	raw, err := yaml.Marshal(cfg)
	if err != nil {
		return JobIdentity{}, fmt.Errorf("coordinator: job identity: %w", err)
	}
	var tree map[string]any
	if err := yaml.Unmarshal(raw, &tree); err != nil {
		return JobIdentity{}, fmt.Errorf("coordinator: job identity: %w", err)
	}
	fields := map[string]string{}
	if err := flatten("", tree, fields); err != nil {
		return JobIdentity{}, err
	}
	for k := range fields {
		for _, op := range operationalFields {
			if k == op || strings.HasPrefix(k, op+".") {
				delete(fields, k)
			}
		}
	}
	b, _ := json.Marshal(ids)
	fields["clients.enrolment.ids"] = string(b)
	return JobIdentity{Digest: digestFields(fields), Fields: fields, Rounds: job.Rounds}, nil
}

func flatten(prefix string, v any, out map[string]string) error {
	if m, ok := v.(map[string]any); ok {
		for k, x := range m {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			if err := flatten(p, x, out); err != nil {
				return err
			}
		}
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("coordinator: job identity: %s: %w", prefix, err)
	}
	out[prefix] = string(b)
	return nil
}

// digestFields hashes the fields in key order, each key and value length
// prefixed, so that no two different sets of fields encode alike.
func digestFields(fields map[string]string) string {
	h := sha256.New()
	fmt.Fprintf(h, "tally-job-identity/1\n")
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		fmt.Fprintf(h, "%d:%s=%d:%s\n", len(k), k, len(fields[k]), fields[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// diffIdentity lists the defining fields that differ, in key order.
func diffIdentity(stored, now map[string]string) []string {
	keys := map[string]bool{}
	for k := range stored {
		keys[k] = true
	}
	for k := range now {
		keys[k] = true
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		s, inS := stored[k]
		n, inN := now[k]
		switch {
		case inS && inN && s == n:
		case !inS:
			out = append(out, fmt.Sprintf("%s: state file has no such field, job file has %s", k, n))
		case !inN:
			out = append(out, fmt.Sprintf("%s: state file has %s, job file has no such field", k, s))
		default:
			out = append(out, fmt.Sprintf("%s: state file has %s, job file has %s", k, s, n))
		}
	}
	return out
}

// OpenJobStore opens (or creates) the state file of job at path, as
// OpenBoltStore does, and checks that the file belongs to this job: a new
// file records the job's identity; a file that has one must match it, or
// ErrJobChanged names every defining field that differs; a file written
// before identities were recorded (by an older tally) is accepted, its
// identity recorded now and a line logged, since refusing would strand
// every job started before the upgrade and its job id is still checked.
func OpenJobStore(path string, job engine.Job, log *slog.Logger) (*BoltStore, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id, err := IdentityOf(job)
	if err != nil {
		return nil, err
	}
	key, err := jobReceiptKey(job)
	if err != nil {
		return nil, err
	}
	s, err := openBoltStore(path, job.ID, key)
	if err != nil {
		return nil, err
	}
	var stored JobIdentity
	var had bool
	err = s.db.Update(func(tx *ledger.Tx) error {
		var err error
		if had, err = tx.Get(bucketState, keyJobIdentity, &stored); err != nil {
			return err
		}
		if had && stored.Digest != id.Digest {
			diff := diffIdentity(stored.Fields, id.Fields)
			if len(diff) == 0 {
				diff = []string{fmt.Sprintf("digest %s recorded, %s computed", stored.Digest, id.Digest)}
			}
			return fmt.Errorf("%w: %s was written by job %q with other settings: %s; "+
				"to resume, restore those settings; to start a new job, give another state file "+
				"(tally coordinator --state NEW.db) or move %s aside",
				ErrJobChanged, path, job.ID, strings.Join(diff, "; "), path)
		}
		if had && stored.Rounds == id.Rounds {
			return nil
		}
		// Checked before the new rounds are recorded, so that a refused
		// raise is refused again at the next start.
		if had && id.Rounds > stored.Rounds && job.DP != nil {
			if err := checkDPRaise(tx, job, stored.Rounds); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrDPRoundsRaised, path, err)
			}
		}
		return tx.Put(bucketState, keyJobIdentity, id)
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	s.log = log
	switch {
	case !had && s.hadState:
		log.Warn("the state file records no job identity (written by an older tally): recording the job file's now; "+
			"changes made to the job file before this start cannot be detected", "state", path, "job", job.ID, "digest", id.Digest)
	case had && stored.Rounds != id.Rounds:
		log.Info("rounds changed in the job file", "state", path, "from", stored.Rounds, "to", id.Rounds)
	}
	return s, nil
}

// checkDPRaise refuses to raise a DP job's rounds from was to job.Rounds
// once rounds have run. The σ of a DP job is derived from (ε, δ, rounds),
// so the job file raised derives a larger σ for the rounds left while the
// rounds done ran at the smaller one derived for was: a client in all of
// them would compose beyond ε (and the accountant, reckoning every round
// at the new σ, would report less than that). The ε named is that of the
// client with the most rounds done, if it also took part in every round
// left: its rounds done at σ(was), the rest at σ(job.Rounds). A raise
// before any round has run spends nothing and passes.
//
// Re-deriving a larger σ for the rounds left, so that the total stays
// within ε, is not done: clients check the σ of the spec against ε over
// the job's rounds at one σ, and the accountant reports ε at one σ, so a
// job's σ is one number for all its rounds. The rounds done are counted
// at σ(was) even if an earlier start had lowered rounds (and so ran its
// first rounds at a larger σ), which overstates their cost: the check
// errs towards refusing.
func checkDPRaise(tx *ledger.Tx, job engine.Job, was int) error {
	done := map[string]int{}
	last := 0
	if err := tx.ForEach(bucketRounds, func(_ string, v []byte) error {
		var r engine.RoundRecord
		if err := jsonUnmarshal(v, &r); err != nil {
			return err
		}
		if r.Failed {
			return nil
		}
		last = max(last, r.Round)
		for _, id := range r.Contributors {
			done[id]++
		}
		return nil
	}); err != nil {
		return err
	}
	worst, n := "", 0
	for _, id := range slices.Sorted(maps.Keys(done)) {
		if done[id] > n {
			worst, n = id, done[id]
		}
	}
	if n == 0 {
		return nil
	}
	d := job.DP
	if was < 1 {
		return fmt.Errorf("rounds raised to %d under privacy.dp after %d rounds, and the state file does not record the rounds its σ was derived for; "+
			"start a new job with another state file", job.Rounds, last)
	}
	before, err := d.SigmaFor(was)
	if err != nil {
		return err
	}
	left := max(job.Rounds-last, 0)
	a, err := accountant.New()
	if err != nil {
		return err
	}
	if err := a.Compose(1, before, n); err != nil {
		return err
	}
	if err := a.Compose(1, d.Sigma, left); err != nil {
		return err
	}
	eps, _, err := a.Epsilon(d.Delta)
	if err != nil {
		return err
	}
	// dpSigma's bisection stops within a relative 1e-6 of σ, on the side
	// of ε ≤ target; the margin only absorbs rounding in the accountant.
	if eps <= d.Epsilon*(1+1e-9) {
		return nil
	}
	return fmt.Errorf("rounds raised from %d to %d under privacy.dp after %d rounds: client %s took part in %d of them at σ = %.4g "+
		"(derived for %d rounds); with σ = %.4g derived for %d rounds over the %d rounds left, its ε would reach %.3f at δ = %g, "+
		"above privacy.dp.epsilon %g; keep rounds at %d, or start a new job with another state file",
		was, job.Rounds, last, worst, n, before, was, d.Sigma, job.Rounds, left, eps, d.Delta, d.Epsilon, was)
}
