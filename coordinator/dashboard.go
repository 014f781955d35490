package coordinator

import (
	"context"
	"fmt"
	"slices"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/ledger"
)

// This file holds the read-only accessors the dashboard
// (internal/dashboard) needs beyond Status; it changes nothing.

// Activity is the open task: what it asks, of whom, and who has answered.
type Activity struct {
	// Task is the open task's ID, "" when none is open.
	Task  string
	Kind  string
	Round int
	// Selected are the clients the task asks, Submitted those whose
	// answer was accepted, both sorted.
	Selected, Submitted []string
}

// Activity returns the open task as the handlers see it.
func (s *Server) Activity() Activity {
	d := s.driver
	d.mu.RLock()
	defer d.mu.RUnlock()
	t := d.view.task
	if t == nil {
		return Activity{}
	}
	a := Activity{Task: t.ID, Kind: t.Kind.String(), Round: t.Round, Selected: slices.Clone(t.Selected)}
	for id := range d.view.submitted {
		a.Submitted = append(a.Submitted, id)
	}
	slices.Sort(a.Selected)
	slices.Sort(a.Submitted)
	return a
}

// CallerID returns the client a call was authenticated as, for gRPC
// interceptors added with ServerConfig.GRPCOptions (which run inside the
// service's own authentication); ok is false for calls that carry no
// client signature (Enroll, JobStatus).
func CallerID(ctx context.Context) (id string, ok bool) {
	id, err := caller(ctx)
	return id, err == nil
}

// ReadStateFile opens a coordinator's state file read-only and returns the
// job it belongs to, its stored state and its ledger, which the caller
// closes. It fails (ledger.ErrLocked) while a coordinator holds the file.
func ReadStateFile(path string) (job string, snap engine.Snapshot, db *ledger.DB, err error) {
	db, err = ledger.Open(path, ledger.Options{ReadOnly: true})
	if err != nil {
		return "", engine.Snapshot{}, nil, err
	}
	err = db.View(func(tx *ledger.Tx) error {
		ok, err := tx.Get(bucketState, keyJob, &job)
		if err == nil && !ok {
			err = fmt.Errorf("coordinator: %s names no job: not a coordinator's state file", path)
		}
		return err
	})
	if err == nil {
		snap, err = (&BoltStore{db: db, job: job}).Load()
	}
	if err != nil {
		db.Close()
		return "", engine.Snapshot{}, nil, fmt.Errorf("coordinator: state file %s: %w", path, err)
	}
	return job, snap, db, nil
}
