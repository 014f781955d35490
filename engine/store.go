package engine

import (
	"fmt"
	"slices"
	"sync"

	"github.com/tallyfl/tally/dataset"
)

// Store keeps the engine's state so that a restarted coordinator can
// resume a job. The driver applies every ActPersist to it, in order, before
// it performs any later action: state is written before anyone is told.
//
// Contract: methods are safe for concurrent use; a method that returns nil
// has made its write durable (for the in-memory store: visible to Load);
// slices passed in are not retained after the call returns.
type Store interface {
	// Apply writes the records of one ActPersist atomically.
	Apply(p ActPersist) error
	// Load returns everything stored, or an empty Snapshot for a new job.
	Load() (Snapshot, error)
}

// Snapshot is the stored state of a job.
type Snapshot struct {
	Clients []ClientRecord
	Rounds  []RoundRecord
	// Global is the model after the last completed round, nil if none.
	Global    []float64
	Scaler    *dataset.Scaler
	Committee *CommitteeRecord
	// Transcript is the decryption transcript's entries in order
	// (aggregation.TranscriptEntry, binary).
	Transcript [][]byte
	// Redundancy is the job-level redundancy accumulator stored with the
	// last completed round that fed it; nil if none fed it, or if the
	// state was written before the accumulator was stored.
	Redundancy *RedundancyRecord
}

// MemoryStore is a Store in memory, for tests and simulations.
type MemoryStore struct {
	mu   sync.Mutex
	snap Snapshot
	// Writes counts applied ActPersist actions.
	Writes int
}

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore { return &MemoryStore{} }

// Apply implements Store.
func (m *MemoryStore) Apply(p ActPersist) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Writes++
	if p.Client != nil {
		i := slices.IndexFunc(m.snap.Clients, func(c ClientRecord) bool { return c.ID == p.Client.ID })
		if i >= 0 {
			m.snap.Clients[i] = *p.Client
		} else {
			m.snap.Clients = append(m.snap.Clients, *p.Client)
		}
	}
	if p.Round != nil {
		m.snap.Rounds = append(m.snap.Rounds, *p.Round)
	}
	if p.Global != nil {
		m.snap.Global = slices.Clone(p.Global)
	}
	if p.Committee != nil {
		c := *p.Committee
		m.snap.Committee = &c
	}
	if t := p.Transcript; t != nil {
		switch {
		case t.Seq < len(m.snap.Transcript):
			m.snap.Transcript[t.Seq] = slices.Clone(t.Entry)
		case t.Seq == len(m.snap.Transcript):
			m.snap.Transcript = append(m.snap.Transcript, slices.Clone(t.Entry))
		default:
			return fmt.Errorf("coordinator: transcript entry %d stored after %d entries", t.Seq, len(m.snap.Transcript))
		}
	}
	if p.Redundancy != nil {
		r := *p.Redundancy
		r.Sums = slices.Clone(r.Sums)
		m.snap.Redundancy = &r
	}
	if p.Scaler != nil {
		s := dataset.Scaler{Mean: slices.Clone(p.Scaler.Mean), Std: slices.Clone(p.Scaler.Std), Clip: p.Scaler.Clip}
		m.snap.Scaler = &s
	}
	return nil
}

// Load implements Store.
func (m *MemoryStore) Load() (Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.snap
	s.Clients = slices.Clone(s.Clients)
	s.Rounds = slices.Clone(s.Rounds)
	s.Global = slices.Clone(s.Global)
	s.Transcript = slices.Clone(s.Transcript)
	return s, nil
}
