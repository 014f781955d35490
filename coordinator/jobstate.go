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

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/ledger"
)

// ErrJobChanged is returned when the job file's defining fields differ
// from those recorded in the state file: resuming would mix two jobs'
// rounds, receipts and payouts under one name.
var ErrJobChanged = errors.New("coordinator: the job file differs from the job in the state file")

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
//     The value recorded is updated and the change logged.
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
