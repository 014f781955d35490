package coordinator

import (
	"log/slog"
	"os"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/engine"
)

// spillStores makes each collect task's submission store keep its c₁ rows
// in a file of dir (os.TempDir() if empty) instead of the heap: every
// client's c₁ (half its ciphertext, 1.6 MB at 100k parameters) stayed in
// memory until the round's decryptions were done, which made the
// coordinator's peak grow with the clients (issue 19). The influence mode
// keeps its clients' running and finished influence ciphertexts in the
// same file (aggregation.Influence.SpillTo, engine's attachAccumulator),
// which members download from it during the round's decryptions, and the
// projection mode its clients' whole ciphertexts, read back when their
// products are computed (engine.CiphertextStore).
//
// The file is removed from dir as soon as it is created: the store holds
// it open, the kernel frees it when the store closes it or when the
// process ends, so a crash leaves nothing behind and no other process can
// open it by name. Nothing is lost that a restart would need: a round
// interrupted by a restart starts again as a new attempt, with new
// ciphertexts (Engine.Restore). What the store serves is checked against
// what it wrote (aggregation.ErrSpillCorrupt), and members check every c₁
// against its client's signature. A file that cannot be made leaves the
// rows in memory, with an error logged: the round still runs.
func spillStores(dir string, log *slog.Logger) engine.SubmissionStores {
	return func() *aggregation.SubmissionStore {
		f, err := os.CreateTemp(dir, "tally-c1-*")
		if err == nil {
			if err = os.Remove(f.Name()); err != nil {
				f.Close()
			}
		}
		if err != nil {
			log.Error("cannot make a spill file for the round's c1; keeping them in memory", "dir", dir, "err", err)
			return aggregation.NewSubmissionStore()
		}
		return aggregation.NewSpillingSubmissionStore(f)
	}
}

// releaseStores closes the submission store of a collect task once its
// decryptions are over: when its round attempt is recorded, when the next
// collect task is published (the engine runs one task at a time, and a
// round's decryptions come before the next collect), and when the job
// ends. A download still reading it then fails, for a task that is
// closed. Called from perform, with d.mu held.
func (d *Driver) releaseStores(a engine.Action) {
	closeCollect := func() {
		if d.collect == nil {
			return
		}
		if err := d.collect.Submissions.Close(); err != nil {
			d.log.Warn("closing a round's spill file", "task", d.collect.ID, "err", err)
		}
		d.collect = nil
	}
	switch a := a.(type) {
	case engine.ActPublish:
		if s := a.Task.Submissions; s != nil && (d.collect == nil || d.collect.Submissions != s) {
			closeCollect()
			d.collect = a.Task
		}
	case engine.ActRoundDone:
		if d.collect != nil && d.collect.Round == a.Record.Round && d.collect.Attempt == a.Record.Attempt {
			closeCollect()
		}
	case engine.ActJobDone:
		closeCollect()
	case nil:
		// Run is returning.
		closeCollect()
	}
}
