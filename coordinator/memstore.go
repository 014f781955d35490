package coordinator

import (
	"sync"

	"github.com/tallyfl/tally/engine"
)

// MemoryStore is a Store and an AuthStore in memory, for tests and
// simulations: the engine's in-memory store with the enrolments beside it.
type MemoryStore struct {
	engine.MemoryStore
	authMu sync.Mutex
	auth   *memoryAuth
}

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore { return &MemoryStore{} }

// Bind implements AuthStore: a MemoryStore keeps enrolments too, like a
// BoltStore, so that a server restarted on the same store (in tests)
// admits the clients it admitted before.
func (m *MemoryStore) Bind(tokenID string, uses int, b Binding) error {
	return m.authStore().Bind(tokenID, uses, b)
}

// Bindings implements AuthStore.
func (m *MemoryStore) Bindings() ([]Binding, error) { return m.authStore().Bindings() }

// authStore returns the enrolments, created on first use so that a zero
// MemoryStore works.
func (m *MemoryStore) authStore() *memoryAuth {
	m.authMu.Lock()
	defer m.authMu.Unlock()
	if m.auth == nil {
		m.auth = newMemoryAuth()
	}
	return m.auth
}
