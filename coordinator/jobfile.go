package coordinator

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tallyfl/tally/engine"
)

// LoadJob reads and validates a job file, and binds it to the manifest
// it names (which must exist, verify and agree with it). Unknown fields
// are errors.
func LoadJob(path string) (engine.Job, error) {
	job, err := LoadJobUnbound(path)
	if err != nil {
		return engine.Job{}, err
	}
	if err := bindManifest(&job); err != nil {
		return engine.Job{}, fmt.Errorf("%s: %w", path, err)
	}
	return job, nil
}

// LoadJobUnbound is LoadJob without the manifest: what `tally manifest
// create` reads to write the manifest the job file names.
func LoadJobUnbound(path string) (engine.Job, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return engine.Job{}, fmt.Errorf("%w: %v", engine.ErrConfig, err)
	}
	var cfg engine.JobConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return engine.Job{}, fmt.Errorf("%w: %s: %v", engine.ErrConfig, path, err)
	}
	dir := "."
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		dir = path[:i]
	}
	job, err := engine.NewJob(cfg, dir)
	if cfg.Data.Validation.CSV == "" {
		// A job run from a file has no other source of validation data;
		// simulations hand theirs over in memory.
		err = errors.Join(err, fmt.Errorf("%w: data.validation.csv: is required: the coordinator evaluates every round on it", engine.ErrConfig))
	}
	if err != nil {
		return engine.Job{}, fmt.Errorf("%s: %w", path, err)
	}
	return job, nil
}
