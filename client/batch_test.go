package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tallyfl/tally/aggregation"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// batchRun is what runBatchMember saw: the share messages the member sent
// (the key generation's three, then the batch's answer, if any), Run's
// error, the size of one influence ciphertext of the batch and the batch's
// length.
type batchRun struct {
	shares   []map[string][]byte
	err      error
	taskErr  error  // what decryptBatch returned
	stateDir string // the directory of the client's key file
	keyFile  string
	ctSize   int
	requests int
}

// runBatchMember makes the client under test (client-0) a committee member
// of a fake coordinator's job, through the key generation of
// TestManifestRefusesContributor, then hands it one batched decryption
// task (aggregation.CoefficientBatchVersion) of one influence scalar per
// participant — client-0, client-1 and client-2, each with its signed
// encrypted update and its product with one committed vector — and ends
// the job once the member has answered. hooks, if set, watch
// decryptBatch; tamper, if set, changes what the coordinator serves.
func runBatchMember(t *testing.T, hooks *batchHooks, tamper func(objects map[string][]byte)) batchRun {
	t.Helper()
	return runBatchMemberAttempt(t, hooks, tamper, 0)
}

// runBatchMemberAttempt is runBatchMember with the batch's last request
// (client-2's) made for attempt lastAttempt of the round, with client-2's
// submission signed for that attempt; the others are of attempt 0.
func runBatchMemberAttempt(t *testing.T, hooks *batchHooks, tamper func(objects map[string][]byte), lastAttempt uint64) batchRun {
	t.Helper()
	return runCommitteeMember(t, memberRun{hooks: hooks, tamper: tamper,
		task: func(params aggregation.Parameters, inst *aggregation.KeyGenInstance, pkShares map[string][]byte, job string, fx *manifestFixture) (*tallyv1.DecryptTask, map[string][]byte, int, error) {
			return influenceBatch(params, inst, pkShares, job, fx, []string{"client-0", "client-1", "client-2"}, lastAttempt)
		}})
}

// memberRun is what runCommitteeMember does with its member: task makes
// the decryption task it is handed and the objects the coordinator serves
// for it (size, one ciphertext's); tamper, if set, changes those objects;
// hooks, if set, watch decryptBatch; closeWhen, if set, closes the task
// (fakeCoord.closeWhen); log, if set, is the client's.
type memberRun struct {
	task      func(params aggregation.Parameters, inst *aggregation.KeyGenInstance, pkShares map[string][]byte, job string, fx *manifestFixture) (*tallyv1.DecryptTask, map[string][]byte, int, error)
	tamper    func(objects map[string][]byte)
	hooks     *batchHooks
	closeWhen func(name string, times int) bool
	log       *slog.Logger
}

// runCommitteeMember makes the client under test (client-0) a committee
// member of a fake coordinator's job, through the key generation of
// TestManifestRefusesContributor, with client-1 and client-2, then hands
// it the decryption task mr.task makes, and ends the job once the member
// is done with it: answered it, or (decryptBatch) returned, or asked for
// its next task after the task closed.
func runCommitteeMember(t *testing.T, mr memberRun) batchRun {
	t.Helper()
	f := heFake(t, 0)
	f.closeWhen = mr.closeWhen
	fx := newManifestFixture(t, f, f.he.params)
	lis := listen(t, "")
	f.serve(lis)
	c, err := New(Config{Conn: dial(t, lis.Addr().String(), nil), Token: f.token, Data: testData(), PollWait: 50 * time.Millisecond,
		KeyFile: fx.keyFile, Manifest: fx.m, TestOnlyWeakParameters: true, Log: mr.log})
	if err != nil {
		t.Fatal(err)
	}
	hooks := mr.hooks
	if hooks == nil {
		hooks = &batchHooks{}
	}
	var run batchRun
	var finished atomic.Bool
	hooks.done = func(err error) { run.taskErr = err; finished.Store(true) }
	c.batchTest = hooks
	run.stateDir, run.keyFile = filepath.Dir(fx.keyFile), fx.keyFile
	params := f.he.params
	ids := []string{"client-0", "client-1", "client-2"}
	inst, members := committeeOf(t, params, f.job.GetJobId(), c, ids, fx.others)
	blob, _ := inst.MarshalBinary()
	commitments := map[string][]byte{}
	for id, m := range members {
		cm, err := m.Commit(inst)
		if err != nil {
			t.Fatal(err)
		}
		commitments[id] = cm
	}
	pkShares, sealedFor0 := map[string][]byte{}, map[string][]byte{}
	step := 0
	f.script = func() *tallyv1.NextTaskResponse {
		// Called with f.mu held.
		switch {
		case step == 0:
			step++
			return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Keygen{Keygen: &tallyv1.KeyGenTask{TaskId: "keygen/e1", Instance: blob}}}
		case step == 1 && len(f.shares) == 1:
			step++
			commitments["client-0"] = f.shares[0]["commitment"]
			return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Reveal{Reveal: &tallyv1.RevealTask{TaskId: "reveal/e1", Instance: blob, Commitments: commitments}}}
		case step == 2 && len(f.shares) == 2:
			step++
			pkShares["client-0"] = f.shares[1]["public-key-share"]
			for id, m := range members {
				out, err := m.Reveal(inst, commitments)
				if err != nil {
					t.Error(err)
					return nil
				}
				pkShares[id], sealedFor0[id] = out.PublicKeyShare, out.Sealed["client-0"]
			}
			f.objects = map[string][]byte{}
			for id, sh := range pkShares {
				f.objects["public-key-share/"+id] = sh
			}
			id := inst.ID()
			return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Threshold{Threshold: &tallyv1.ThresholdTask{TaskId: "threshold/e1", InstanceId: id[:], Sealed: sealedFor0}}}
		case step == 3 && len(f.shares) == 3:
			step++
			task, objects, size, err := mr.task(params, inst, pkShares, f.job.GetJobId(), fx)
			if err != nil {
				t.Error(err)
				return nil
			}
			if mr.tamper != nil {
				mr.tamper(objects)
			}
			f.objects, run.ctSize, run.requests = objects, size, len(task.GetCoefficientRequests())
			return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Decrypt{Decrypt: task}}
		case step == 4 && (finished.Load() || f.closed || len(f.shares) > 3):
			// The member asks for its next task once it is done with the
			// decryption task: it runs one task at a time.
			step++
			return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Done{Done: &tallyv1.DoneTask{Reason: "done"}}}
		}
		return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Wait{Wait: &tallyv1.WaitTask{}}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run.err = c.Run(ctx)
	f.mu.Lock()
	run.shares = f.shares
	f.mu.Unlock()
	if len(run.shares) < 3 {
		t.Fatalf("Run: %v after %d share messages; the key generation did not complete", run.err, len(run.shares))
	}
	return run
}

// influenceBatch is the batched task of runBatchMember and the objects
// the coordinator serves for it; size is one influence ciphertext's. The
// last request is of attempt lastAttempt, the others of attempt 0.
func influenceBatch(params aggregation.Parameters, inst *aggregation.KeyGenInstance, pkShares map[string][]byte, job string, fx *manifestFixture, ids []string, lastAttempt uint64) (*tallyv1.DecryptTask, map[string][]byte, int, error) {
	pk, err := aggregation.AggregatePublicKey(params, inst, pkShares)
	if err != nil {
		return nil, nil, 0, err
	}
	enc, err := aggregation.NewEncryptor(params, pk, 1)
	if err != nil {
		return nil, nil, 0, err
	}
	grad := []float64{0.5, -0.25, 1, 2}
	gd := aggregation.GradientDigest(grad)
	infl, err := aggregation.NewInfluence(params, enc.KeyID(), grad, len(grad))
	if err != nil {
		return nil, nil, 0, err
	}
	objects := map[string][]byte{"gradient/" + hex.EncodeToString(gd[:]): aggregation.MarshalGradient(grad)}
	task := &tallyv1.DecryptTask{TaskId: "decrypt/batch", CoefficientBatchVersion: aggregation.CoefficientBatchVersion}
	size := 0
	for i, who := range ids {
		cts, err := enc.EncryptUpdate([]float64{1, 2, 3, float64(i)}, 1)
		if err != nil {
			return nil, nil, 0, err
		}
		signer := fx.others[who]
		if who == "client-0" {
			// The fixture's key file holds this seed (manifest_test.go).
			signer = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{42}, ed25519.SeedSize))
		}
		attempt := uint64(0)
		if i == len(ids)-1 {
			attempt = lastAttempt
		}
		sub, err := aggregation.NewSubmission(params, job, who, 1, attempt, 1, cts, signer)
		if err != nil {
			return nil, nil, 0, err
		}
		objects["submission/"+who], _ = sub.MarshalBinary()
		for b, ct := range cts {
			objects["contribution/"+who+"/"+strconv.Itoa(b)] = aggregation.ContributionC1(ct)
			if err := infl.Add(who, ct); err != nil {
				return nil, nil, 0, err
			}
		}
		prod, digest, err := infl.Finalize(who)
		if err != nil {
			return nil, nil, 0, err
		}
		size = len(prod)
		name := "ciphertext/influence/" + who
		objects[name] = prod
		req := aggregation.NewInfluenceRequest(inst.ID(), 1, who, digest, gd, []string{"client-0", "client-1"})
		req.Attempt = attempt
		rb, err := req.MarshalBinary()
		if err != nil {
			return nil, nil, 0, err
		}
		task.CoefficientRequests = append(task.CoefficientRequests, &tallyv1.CoefficientRequest{Request: rb, Client: who, Gradient: gd[:], Ciphertext: name})
	}
	return task, objects, size, nil
}

func itoa(i int) string { return string(rune('0' + i)) }

// TestBatchHoldsOneCiphertext (issue 19): a member answering a batch of
// influence requests holds at most one request's ciphertext in memory at
// a time, not the whole batch's (1.2 GB at 30 clients of 100k
// parameters), and still answers every request of the batch.
func TestBatchHoldsOneCiphertext(t *testing.T) {
	most := 0
	run := runBatchMember(t, &batchHooks{held: func(n int) { most = max(most, n) }}, nil)
	if run.err != nil || run.taskErr != nil {
		t.Fatalf("Run: %v, the batch: %v", run.err, run.taskErr)
	}
	if len(run.shares) != 4 {
		t.Fatalf("%d share messages, want the key generation's 3 and the batch's answer", len(run.shares))
	}
	ans := run.shares[3]
	if ans["transcript-signature"] == nil || ans["refused"] != nil {
		t.Fatalf("the batch's answer has parts %v, want a signature and the shares", keys(ans))
	}
	for i := range run.requests {
		if ans["coefficients/"+strconv.Itoa(i)] == nil {
			t.Errorf("no share of request %d", i)
		}
	}
	t.Logf("batch of %d influence ciphertexts of %d bytes: at most %d bytes of them held at once", run.requests, run.ctSize, most)
	if most > run.ctSize {
		t.Fatalf("decryptBatch held %d bytes of ciphertext at once (%d requests of %d bytes), want at most one ciphertext", most, run.requests, run.ctSize)
	}
}

// TestBatchSpillCorrupt: a spilled ciphertext whose bytes change between
// its verification and its share (on this member's disk) stops the batch
// with ErrBatchSpillCorrupt before any share is made: no share is sent,
// and the coordinator is not told of a refusal (it did nothing wrong).
func TestBatchSpillCorrupt(t *testing.T) {
	var name string
	run := runBatchMember(t, &batchHooks{
		spill: func(f *os.File) { name = f.Name() },
		admitted: func(f *os.File) {
			// A byte of the last request's ciphertext.
			fi, err := f.Stat()
			if err != nil {
				t.Error(err)
				return
			}
			at := fi.Size() - 10
			b := []byte{0}
			if _, err := f.ReadAt(b, at); err != nil {
				t.Error(err)
			}
			b[0] ^= 0xff
			if _, err := f.WriteAt(b, at); err != nil {
				t.Error(err)
			}
		},
	}, nil)
	if !errors.Is(run.taskErr, ErrBatchSpillCorrupt) {
		t.Fatalf("the batch: %v, want %v", run.taskErr, ErrBatchSpillCorrupt)
	}
	t.Logf("the batch: %v", run.taskErr)
	if len(run.shares) != 3 {
		t.Fatalf("%d share messages after the key generation's 3; the last has parts %v, want none", len(run.shares)-3, keys(run.shares[len(run.shares)-1]))
	}
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Errorf("spill file %s left behind (%v)", name, err)
	}
}

// TestBatchSpillRemoved: the spill file is made in the client's state
// directory (beside its key file), and no name of it is left there when
// the task ends, answered or refused (it is removed as soon as it is made,
// TestBatchSpillCrash); a refused batch (request 1's ciphertext is not the
// one its request names) sends no share.
func TestBatchSpillRemoved(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(objects map[string][]byte)
	}{
		{"answered", nil},
		{"refused", func(objects map[string][]byte) {
			ct := bytes.Clone(objects["ciphertext/influence/client-1"])
			ct[len(ct)-1] ^= 1
			objects["ciphertext/influence/client-1"] = ct
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var name string
			var size int64
			run := runBatchMember(t, &batchHooks{
				spill: func(f *os.File) { name = f.Name() },
				admitted: func(f *os.File) {
					fi, err := f.Stat()
					if err != nil {
						t.Error(err)
						return
					}
					size = fi.Size()
				},
			}, tc.tamper)
			if name == "" {
				t.Fatalf("no spill file made (the batch: %v)", run.taskErr)
			}
			if _, err := os.Stat(name); !os.IsNotExist(err) {
				t.Errorf("spill file %s left behind (%v)", name, err)
			}
			if filepath.Dir(name) != run.stateDir {
				t.Errorf("spill file %s in the system's temporary directory, not beside the key file", name)
			}
			if len(run.shares) != 4 {
				t.Fatalf("%d share messages, want the key generation's 3 and the batch's answer", len(run.shares))
			}
			ans := run.shares[3]
			if tc.tamper == nil {
				if run.taskErr != nil || ans["refused"] != nil || size != int64(run.requests*run.ctSize) {
					t.Fatalf("the batch: %v, parts %v, spill of %d bytes; want shares and %d×%d bytes spilled", run.taskErr, keys(ans), size, run.requests, run.ctSize)
				}
				return
			}
			if ans["refused"] == nil || ans["coefficients/0"] != nil || !strings.Contains(string(ans["refused"]), "request 1") {
				t.Fatalf("the batch's answer has parts %v (refused %q), want a refusal naming request 1 and no share", keys(ans), ans["refused"])
			}
		})
	}
}

// TestBatchSpillFails: a spill file this member cannot write (closed
// under it here; a full disk alike) is the member's own error,
// ErrBatchSpill, returned from the task: no share, no refusal sent (the
// coordinator did nothing wrong), and the file is removed.
func TestBatchSpillFails(t *testing.T) {
	var name string
	run := runBatchMember(t, &batchHooks{spill: func(f *os.File) { name = f.Name(); f.Close() }}, nil)
	if !errors.Is(run.taskErr, ErrBatchSpill) {
		t.Fatalf("the batch: %v, want %v", run.taskErr, ErrBatchSpill)
	}
	t.Logf("the batch: %v", run.taskErr)
	if len(run.shares) != 3 {
		t.Fatalf("%d share messages after the key generation's 3; the last has parts %v, want none", len(run.shares)-3, keys(run.shares[len(run.shares)-1]))
	}
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Errorf("spill file %s left behind (%v)", name, err)
	}
}

// byVector groups a batch's requests by vector, in the order each vector
// first appears, so that decryptBatch fetches and holds one at a time.
func TestByVector(t *testing.T) {
	var reqs []aggregation.DecryptRequest
	for _, g := range []byte{1, 2, 1, 3, 2, 1} {
		reqs = append(reqs, aggregation.DecryptRequest{Gradient: [32]byte{g}})
	}
	if got, want := fmt.Sprint(byVector(reqs)), "[0 2 5 1 4 3]"; got != want {
		t.Fatalf("byVector = %s, want %s", got, want)
	}
}

// TestBatchAcrossAttemptsRefused: a batch whose requests are each
// verifiable but not together — the last is of another attempt of the
// round, and a member keeps what it verified for one attempt at a time —
// is refused whole before anything is admitted (Member.AdmitBatch:
// aggregation.ErrNotVerified), and the coordinator is told, naming the
// request: it is the coordinator's batch that cannot be answered, not
// this member's failure. No share is sent and no entry is persisted.
func TestBatchAcrossAttemptsRefused(t *testing.T) {
	run := runBatchMemberAttempt(t, nil, nil, 1)
	if len(run.shares) != 4 {
		t.Fatalf("%d share messages (the batch: %v), want the key generation's 3 and a refusal", len(run.shares), run.taskErr)
	}
	ans := run.shares[3]
	if ans["refused"] == nil || ans["coefficients/0"] != nil || ans["transcript-signature"] != nil ||
		!strings.Contains(string(ans["refused"]), "request 0") || !strings.Contains(string(ans["refused"]), aggregation.ErrNotVerified.Error()) {
		t.Fatalf("the batch's answer has parts %v (refused %q), want a refusal of request 0 as not verified, no share, no signature", keys(ans), ans["refused"])
	}
	t.Logf("refused: %s", ans["refused"])
	raw, err := os.ReadFile(run.keyFile + ".transcript")
	if !errors.Is(err, os.ErrNotExist) {
		if err != nil {
			t.Fatal(err)
		}
		tr, err := aggregation.UnmarshalTranscript(raw)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Len() != 0 {
			t.Fatalf("the refused batch left %d entries in the persisted transcript", tr.Len())
		}
	}
}
