package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/audit"
	"github.com/tallyfl/tally/coordinator"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/model"
)

// runAuditJob checks a job's release log against the decryption
// transcript in its state file and attacks every release (audit.AuditJob).
func runAuditJob(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit job")
	fs.SetOutput(stderr)
	logPath := fs.String("release-log", "", "the coordinator's release log (tally coordinator|simulate --release-log)")
	state := fs.String("state", "", "the job's state file (tally coordinator --state, tally simulate --db), holding its decryption transcript")
	report := fs.String("report", "", "also write the results as markdown to this file")
	match := fs.Int("match-iters", 600, "Adam steps of the gradient-matching attack (0: analytic attacks only)")
	matchRounds := fs.Int("match-rounds", 1, "run gradient matching on the releases of this many first rounds (it costs far more than the analytic attacks)")
	seed := fs.Uint64("seed", 1, "seed of the attacker's guesses and of gradient matching's starting points")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: tally audit job --release-log FILE --state STATE.db [flags]

Plays the coordinator against what a job actually released: checks every
plaintext of the release log against the job's decryption transcript (a
release with no matching entry, and an entry decrypted without a release,
are each reported by name), then attacks each release: the decrypted sums
of k updates and the group sums (update inversion, label inference,
membership), each client's influence scalars over all rounds (label
inference and membership from the scalars), and, for a projection job,
each client's projection scalars over all rounds: each scalar held to
the digest of one of its round's public vectors, rebuilt from the round's
model and total, then the update's least-squares component in their span
inverted, and label shares and membership fitted from it. The metrics stand beside
random guessing. For a tally simulate job the truth they are scored
against is re-derived from the job's seed. Exits non-zero when a release
and the transcript disagree.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *logPath == "" || *state == "" {
		fmt.Fprintln(stderr, "--release-log and --state are required")
		fs.Usage()
		return errUsage
	}
	start := time.Now()
	log, err := audit.ReadReleaseLog(*logPath)
	if err != nil {
		return err
	}
	job, snap, db, err := coordinator.ReadStateFile(*state)
	if err != nil {
		return err
	}
	defer db.Close()
	if job != log.Header.Job {
		return fmt.Errorf("tally audit job: %s is job %q's state, %s job %q's release log", *state, job, *logPath, log.Header.Job)
	}
	var findings []audit.Finding
	if _, err := coordinator.VerifyTranscript(db); err != nil {
		findings = append(findings, audit.Finding{Seq: -1, What: "the state's decryption transcript does not verify: " + err.Error()})
	}
	entries := make([]aggregation.TranscriptEntry, len(snap.Transcript))
	for i, raw := range snap.Transcript {
		if err := entries[i].UnmarshalBinary(raw); err != nil {
			return fmt.Errorf("tally audit job: %s: transcript entry %d: %w", *state, i, err)
		}
	}
	status := map[int]string{}
	decrypted := 0
	for _, r := range snap.Rounds {
		for _, t := range r.Transcript {
			status[t.Seq] = t.Status
			if t.Status == "decrypted" {
				decrypted++
			}
		}
	}
	findings = append(findings, audit.CheckReleases(entries, status, log.Releases)...)
	if log.Torn {
		fmt.Fprintf(stdout, "%s: its last line is torn (a write a crash cut short) and is ignored\n", *logPath)
	}
	var data *audit.JobData
	if log.Header.Simulation != nil {
		if data, err = audit.SimulationData(log.Header); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%s is a coordinator's log: its releases are checked against the transcript, not attacked (the attacks are scored against the clients' data, which only a simulate job's seed re-derives)\n\n", *logPath)
	}
	cfg := audit.JobConfig{MatchIters: *match, MatchRounds: *matchRounds, Seed: *seed, Entries: entries}
	if v := log.Header.Valuation; v != nil && v.Mode == engine.ModeProjection && data != nil {
		// The projection mode's public vectors, rebuilt by the valuer the
		// job ran (coordinator.ModelValuer) on its validation set.
		h := log.Header
		m, err := model.New(h.Model, h.Features, h.Classes, h.Seed)
		if err != nil {
			return err
		}
		job := engine.Job{JobConfig: engine.JobConfig{ID: h.Job, Seed: h.Seed, Model: h.Model, Train: h.Train, Valuation: *v}}
		job.Data.Features, job.Data.Classes = h.Features, h.Classes
		mv := &coordinator.ModelValuer{Job: job, Model: m, Data: data.Validation}
		cfg.Vectors = func(base, known, total []float64) ([][]float64, error) {
			vs, _, err := mv.ProjectionVectors(base, known, total, snap.Scaler)
			return vs, err
		}
	}
	res, err := audit.AuditJob(log, findings, snap.Scaler, data, cfg)
	if err != nil {
		return err
	}
	res.Entries, res.Decrypted = len(entries), decrypted
	if err := ctx.Err(); err != nil {
		return err
	}
	meta := audit.Meta{
		Date:    start.UTC().Format("2006-01-02 15:04 UTC") + fmt.Sprintf(" (%s wall)", time.Since(start).Round(time.Second)),
		Machine: auditMachine(),
		Command: "tally audit job " + strings.Join(args, " "),
	}
	if err := audit.WriteJobMarkdown(stdout, res, cfg, meta); err != nil {
		return err
	}
	if *report != "" {
		if err := os.MkdirAll(filepath.Dir(*report), 0o755); err != nil {
			return err
		}
		f, err := os.Create(*report)
		if err != nil {
			return err
		}
		if err := audit.WriteJobMarkdown(f, res, cfg, meta); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if n := len(res.Findings); n > 0 {
		return fmt.Errorf("tally audit job: %d disagreement(s) between the release log and the transcript (listed above)", n)
	}
	return nil
}
