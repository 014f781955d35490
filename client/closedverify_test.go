package client

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/internal/auth"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// closedTaskCase is one decryption task of TestForgedRequestThenClosed and
// TestMissingEvidenceOfClosedTask: the single request of
// TestManifestRefusesContributor or the batch of runBatchMember.
type closedTaskCase struct {
	name   string
	taskID string
	task   func(params aggregation.Parameters, inst *aggregation.KeyGenInstance, pkShares map[string][]byte, job string, fx *manifestFixture) (*tallyv1.DecryptTask, map[string][]byte, int, error)
	// forge makes the task's request fail verification as a forged one
	// does (aggregation.ErrNotASum); firstSubmission is the first
	// contributor's submission the member downloads.
	forge           func(objects map[string][]byte)
	firstSubmission string
}

var closedTaskCases = []closedTaskCase{
	{
		name: "single", taskID: "decrypt/1", firstSubmission: "submission/client-1",
		// One update relabelled with two contributors: not the sum of
		// their signed c₁.
		task: func(params aggregation.Parameters, inst *aggregation.KeyGenInstance, pkShares map[string][]byte, job string, fx *manifestFixture) (*tallyv1.DecryptTask, map[string][]byte, int, error) {
			task, objects, err := totalTask(params, inst, pkShares, job, fx, []string{"client-1", "client-2"}, true)
			return task, objects, 0, err
		},
	},
	{
		name: "batch", taskID: "decrypt/batch", firstSubmission: "submission/client-0",
		task: func(params aggregation.Parameters, inst *aggregation.KeyGenInstance, pkShares map[string][]byte, job string, fx *manifestFixture) (*tallyv1.DecryptTask, map[string][]byte, int, error) {
			return influenceBatch(params, inst, pkShares, job, fx, []string{"client-0", "client-1", "client-2"}, 0)
		},
		// Client-0's c₁ served as client-1's: not what client-0 signed.
		forge: func(objects map[string][]byte) {
			objects["contribution/client-0/0"] = objects["contribution/client-1/0"]
		},
	},
}

// runClosedTask runs tc's task for a member whose coordinator closes it
// when closeWhen says (fakeCoord.closeWhen), and returns the run and the
// member's log at INFO. It fails the test unless the member sent nothing
// for the task and said at INFO that the task was given up without it.
func runClosedTask(t *testing.T, tc closedTaskCase, forge bool, closeWhen func(name string, times int) bool) (batchRun, string) {
	t.Helper()
	// Read once Run has returned; slog's handler serialises the writes.
	var buf bytes.Buffer
	mr := memberRun{task: tc.task, closeWhen: closeWhen, log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	if forge {
		mr.tamper = tc.forge
	}
	run := runCommitteeMember(t, mr)
	log := buf.String()
	if run.err != nil {
		t.Errorf("Run: %v, want nil", run.err)
	}
	if len(run.shares) != 3 {
		t.Errorf("%d share messages (the last: %v), want the key generation's 3 and nothing for the closed task", len(run.shares), keys(run.shares[len(run.shares)-1]))
	}
	if !strings.Contains(log, "decryption task given up without this member") || !strings.Contains(log, "task="+tc.taskID) {
		t.Errorf("the member did not log that task %s was given up without it; its log:\n%s", tc.taskID, log)
	}
	return run, log
}

// loudLines is the lines of log at WARN or above that name task id (the
// key generation before it warns of the fake's absent participants).
func loudLines(log, id string) []string {
	var out []string
	for l := range strings.Lines(log) {
		if (strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR")) && strings.Contains(l, "task="+id+" ") {
			out = append(out, l)
		}
	}
	return out
}

// TestForgedRequestThenClosed: the coordinator sends a request that fails
// verification for what it is — a ciphertext that is not the sum (or
// product) of its contributors' signed c₁, aggregation.ErrNotASum — and
// closes the task once the member has downloaded everything it checks,
// so that the member's question whether the task closed meanwhile
// (taskClosed) says it has. The member sends nothing, and still logs at
// WARN or above, naming the task and the verification error: a closed
// task does not make a forged request benign. Before the fix the single
// request was logged at INFO only, as a task given up without the member
// (470c704 fixed the batch).
func TestForgedRequestThenClosed(t *testing.T) {
	for _, tc := range closedTaskCases {
		t.Run(tc.name, func(t *testing.T) {
			// Asked again for an object it served: the member's probe,
			// after every download of its check.
			_, log := runClosedTask(t, tc, true, func(_ string, times int) bool { return times > 1 })
			found := false
			for _, l := range loudLines(log, tc.taskID) {
				found = found || strings.Contains(l, aggregation.ErrNotASum.Error())
			}
			if !found {
				t.Errorf("no WARN or ERROR line names task %s and %q; the member's log:\n%s", tc.taskID, aggregation.ErrNotASum, log)
			}
		})
	}
}

// TestMissingEvidenceOfClosedTask: the benign case. The task closes while
// the member downloads the evidence it checks the request against — the
// contributors' signed submissions, or their c₁ — so the rest of it is
// refused as for a closed task and verification fails for want of it.
// The member says at INFO that the task was given up without it, sends
// nothing, and logs nothing at WARN or above. Before the fix the batch
// logged a c₁ refused so at WARN as an unverified request.
func TestMissingEvidenceOfClosedTask(t *testing.T) {
	for _, tc := range closedTaskCases {
		for _, missing := range []struct {
			name      string
			closeWhen func(name string, times int) bool
		}{
			{"submissions", func(name string, _ int) bool { return name == tc.firstSubmission }},
			{"contributions", func(name string, _ int) bool { return strings.HasPrefix(name, "contribution") }},
		} {
			t.Run(tc.name+"/"+missing.name, func(t *testing.T) {
				_, log := runClosedTask(t, tc, false, missing.closeWhen)
				if loud := loudLines(log, tc.taskID); len(loud) > 0 {
					t.Errorf("the member logged at WARN or above for a task that closed while it downloaded its evidence:\n%s", strings.Join(loud, ""))
				}
			})
		}
	}
}

// TestEvidenceGapsMissing: a verification failure is taken for want of
// evidence only when the evidence it names was refused: a submission or
// the vector the coordinator did not serve, or a c₁ whose download was
// refused (the refusal wrapped in the failure). A forged request's
// failures are not, whatever the gaps.
func TestEvidenceGapsMissing(t *testing.T) {
	closedC1 := fmt.Errorf("aggregation: contribution client-1/0: %w", refused(t, auth.ReasonTaskClosed, map[string]string{"task": "t", auth.MetaEnded: "given_up"}))
	for _, c := range []struct {
		name string
		gaps evidenceGaps
		err  error
		want bool
	}{
		{"submission not served", evidenceGaps{submission: true}, fmt.Errorf("%w: no signed submission of contributor %q", aggregation.ErrUnknownContributor, "c1"), true},
		{"unknown contributor, every submission served", evidenceGaps{}, fmt.Errorf("%w: contributor %q is not a participant", aggregation.ErrUnknownContributor, "m"), false},
		{"c1 refused", evidenceGaps{}, closedC1, true},
		{"c1 not there", evidenceGaps{}, fmt.Errorf("aggregation: contribution client-1/0: %w", status.Error(codes.NotFound, "no")), true},
		{"c1 download failed otherwise", evidenceGaps{}, fmt.Errorf("aggregation: contribution client-1/0: %w", status.Error(codes.Unavailable, "down")), false},
		{"vector not served", evidenceGaps{gradient: true}, fmt.Errorf("%w: an influence request must commit to its multiplier vector and carry it", aggregation.ErrGradientMismatch), true},
		{"vector served, not the committed one", evidenceGaps{submission: true}, fmt.Errorf("%w: the vector sent hashes to", aggregation.ErrGradientMismatch), false},
		{"not a sum, with gaps", evidenceGaps{submission: true, gradient: true}, fmt.Errorf("%w: forged", aggregation.ErrNotASum), false},
		{"product mismatch", evidenceGaps{}, fmt.Errorf("%w: forged", aggregation.ErrProductMismatch), false},
	} {
		if got := c.gaps.missing(c.err); got != c.want {
			t.Errorf("%s: %+v.missing(%v) = %v, want %v", c.name, c.gaps, c.err, got, c.want)
		}
	}
}
