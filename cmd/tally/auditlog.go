package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tallyfl/tally/audit"
	"github.com/tallyfl/tally/engine"
)

// openSimReleaseLog starts a simulation's release log afresh (a
// simulation is one run), with what tally audit job needs to re-derive
// the clients' shards from the seed.
func openSimReleaseLog(o *simOptions, job engine.Job, ids []string) (*audit.ReleaseLog, error) {
	if !job.Secure() {
		return nil, errors.New("--release-log needs --secure-aggregation he: without it nothing is decrypted, the coordinator sees every update")
	}
	if err := os.MkdirAll(filepath.Dir(o.ReleaseLog), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(o.ReleaseLog); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	h := releaseLogHeader(job, "simulate")
	if o.CSV == "" {
		sim := &audit.SimulationSpec{Dataset: o.Dataset, Clients: ids, Partition: o.Partition, ValFrac: o.ValFrac, TestFrac: o.TestFrac}
		if o.Partition == "dirichlet" {
			sim.Alpha = o.Alpha
		}
		for i, c := range o.Corrupt {
			if sim.Corrupt == nil {
				sim.Corrupt = map[int]string{}
			}
			sim.Corrupt[i] = c.String()
		}
		h.Simulation = sim
	}
	return audit.OpenReleaseLog(o.ReleaseLog, h)
}

// openCoordinatorReleaseLog opens (or continues, after a restart) a
// coordinator's release log.
func openCoordinatorReleaseLog(path string, job engine.Job) (*audit.ReleaseLog, error) {
	if !job.Secure() {
		return nil, fmt.Errorf("--release-log: job %s has secure_aggregation %q: nothing is decrypted, the coordinator sees every update", job.ID, job.SecureAggregation)
	}
	return audit.OpenReleaseLog(path, releaseLogHeader(job, "coordinator"))
}

func releaseLogHeader(job engine.Job, source string) audit.ReleaseLogHeader {
	v := job.Valuation
	return audit.ReleaseLogHeader{Job: job.ID, Source: source, Seed: job.Seed, Model: job.Model, Train: job.Train,
		Features: job.Data.Features, Classes: job.Data.Classes, Valuation: &v}
}
