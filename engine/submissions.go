package engine

import "github.com/tallyfl/tally/aggregation"

// SubmissionStores makes the stores in which collect tasks keep their
// clients' signed submissions and c₁ rows (Task.Submissions). The engine
// only creates them; whoever performs its actions (the coordinator's
// driver) closes each once the decryptions that read it are over, since a
// store may hold a file (aggregation.NewSpillingSubmissionStore). It
// cannot fail: a maker that cannot open a file returns a store in memory.
type SubmissionStores func() *aggregation.SubmissionStore

// SetSubmissionStores replaces the engine's stores, in memory by default.
// Call it before the first Step.
func (e *Engine) SetSubmissionStores(f SubmissionStores) { e.stores = f }

// newSubmissionStore is a fresh store for a collect task.
func (e *Engine) newSubmissionStore() *aggregation.SubmissionStore {
	if e.stores == nil {
		return aggregation.NewSubmissionStore()
	}
	return e.stores()
}
