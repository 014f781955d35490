package coordinator

import (
	"errors"
	"log/slog"
	"os"
	"testing"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/engine"
)

// closeSpy is a spill file that records whether it was closed.
type closeSpy struct{ closed bool }

func (f *closeSpy) ReadAt(p []byte, off int64) (int, error)  { return 0, errors.New("empty") }
func (f *closeSpy) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
func (f *closeSpy) Close() error                             { f.closed = true; return nil }

// The driver closes a collect task's store once its decryptions are over
// (its round attempt recorded, a later collect task published, the job
// ended, Run returning), and never while a decryption task of the same
// round may still read it.
func TestDriverReleasesSubmissionStores(t *testing.T) {
	d := &Driver{log: slog.New(slog.DiscardHandler)}
	collect := func(round, attempt int) (*engine.Task, *closeSpy) {
		f := &closeSpy{}
		return &engine.Task{ID: "collect", Kind: engine.TaskTrain, Round: round, Attempt: attempt, Submissions: aggregation.NewSpillingSubmissionStore(f)}, f
	}
	decrypt := func(c *engine.Task) engine.Action {
		return engine.ActPublish{Task: &engine.Task{ID: "decrypt", Kind: engine.TaskDecrypt, Round: c.Round, Attempt: c.Attempt, Submissions: c.Submissions}}
	}
	done := func(round, attempt int) engine.Action {
		return engine.ActRoundDone{Record: engine.RoundRecord{Round: round, Attempt: attempt}}
	}
	a, fa := collect(1, 1)
	b, fb := collect(2, 1)
	c, fc := collect(2, 2)
	e, fe := collect(3, 1)
	steps := []struct {
		name string
		act  engine.Action
		// open lists the stores that must still be open after act.
		open, closed []*closeSpy
	}{
		{"publish collect r1", engine.ActPublish{Task: a}, []*closeSpy{fa}, nil},
		{"publish decrypt r1", decrypt(a), []*closeSpy{fa}, nil},
		{"another decrypt r1", decrypt(a), []*closeSpy{fa}, nil},
		{"a round that is not r1's done", done(0, 1), []*closeSpy{fa}, nil},
		{"r1 done", done(1, 1), nil, []*closeSpy{fa}},
		{"publish collect r2", engine.ActPublish{Task: b}, []*closeSpy{fb}, nil},
		{"publish decrypt r2", decrypt(b), []*closeSpy{fb}, nil},
		// An attempt given up without a record of its own: the next
		// attempt's collect ends the first's decryptions.
		{"publish collect r2 attempt 2", engine.ActPublish{Task: c}, []*closeSpy{fc}, []*closeSpy{fb}},
		{"job done", engine.ActJobDone{Reason: "test"}, nil, []*closeSpy{fc}},
		{"publish collect r3", engine.ActPublish{Task: e}, []*closeSpy{fe}, nil},
		{"Run returns", nil, nil, []*closeSpy{fe}},
	}
	for _, s := range steps {
		d.releaseStores(s.act)
		for _, f := range s.open {
			if f.closed {
				t.Fatalf("after %s: a store still in use was closed", s.name)
			}
		}
		for _, f := range s.closed {
			if !f.closed {
				t.Fatalf("after %s: a store whose decryptions are over is still open", s.name)
			}
		}
	}
}

// spillStores makes stores whose file has no name left in the directory
// (a crash leaves nothing behind), and stores in memory when it cannot
// make a file.
func TestSpillStoresLeaveNoName(t *testing.T) {
	dir := t.TempDir()
	st := spillStores(dir, slog.New(slog.DiscardHandler))()
	defer st.Close()
	if n := openSpillFiles(t, dir); n != 1 {
		t.Fatalf("%d spill files open, want 1", n)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the spill directory holds %d entries, want none", len(entries))
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openSpillFiles(t, dir); n != 0 {
		t.Fatalf("%d spill files open after Close, want 0", n)
	}
	mem := spillStores(dir+"/missing", slog.New(slog.DiscardHandler))()
	if n := openSpillFiles(t, dir); n != 0 || mem == nil {
		t.Fatalf("an unusable directory: %d files open, store %v; want a store in memory", n, mem)
	}
}
