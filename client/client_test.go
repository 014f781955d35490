package client

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tallyfl/tally/ledger"
	"github.com/tallyfl/tally/model"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// testData is 24 rows of 3 features with labels from a fixed linear rule,
// so that training moves the model.
func testData() model.Examples {
	rng := rand.New(rand.NewPCG(1, 2))
	d := model.Examples{Features: 3}
	for range 24 {
		x := []float64{rng.NormFloat64(), rng.NormFloat64(), rng.NormFloat64()}
		y := 0
		if x[0]+0.5*x[1]-x[2] > 0 {
			y = 1
		}
		d.X = append(d.X, x...)
		d.Y = append(d.Y, y)
	}
	return d
}

// runClient runs c until it returns or the test's generous deadline
// passes, and returns Run's error.
func runClient(t *testing.T, ctx context.Context, c *Client) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return c.Run(ctx)
}

// expectedUpdate trains the job's model from global on data with the
// randomness the package documents, (job seed, client, round), and
// returns the update an honest client submits for round.
func expectedUpdate(t *testing.T, job *tallyv1.JobSpec, client string, round int, global []float64, data model.Examples) []float64 {
	t.Helper()
	m, err := model.New(model.Spec{Kind: job.GetModel().GetKind()}, int(job.GetFeatures()), int(job.GetClasses()), job.GetSeed())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetParams(global); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%d|train|%s|%d", job.GetSeed(), client, round)
	s := h.Sum(nil)
	rng := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(s[:8]), binary.LittleEndian.Uint64(s[8:16])))
	tc := job.GetTrain()
	if _, err := m.Train(data, model.TrainConfig{Epochs: int(tc.GetEpochs()), BatchSize: int(tc.GetBatchSize()), LearningRate: tc.GetLearningRate()}, rng); err != nil {
		t.Fatal(err)
	}
	local := m.Params()
	for i := range local {
		local[i] -= global[i]
	}
	return local
}

// TestRunPlainJob drives a client through a two-round plaintext job: it
// enrols with its token, downloads the model of each round, submits the
// update it trained from that model, keeps both receipts (one fetched
// before the second round, one riding on the job's end) and returns nil
// when the coordinator says the job is done.
func TestRunPlainJob(t *testing.T) {
	const rounds = 2
	f := newFakeCoord(t, rounds)
	lis := listen(t, "")
	f.serve(lis)
	dir := t.TempDir()
	data := testData()
	c, err := New(Config{
		Conn: dial(t, lis.Addr().String(), nil), Token: f.token, Data: data, PollWait: 50 * time.Millisecond,
		ReceiptsFile: filepath.Join(dir, "receipts.jsonl"), KeyFile: filepath.Join(dir, "client.key"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := runClient(t, context.Background(), c); err != nil {
		t.Fatalf("Run: %v, want nil at the job's end", err)
	}
	f.checkProtocol()
	n := f.counts()

	if n.enrolls != 1 || n.resumes != 0 {
		t.Errorf("%d enrolments and %d resumes, want 1 and 0", n.enrolls, n.resumes)
	}
	if c.Submitted != rounds || len(n.submissions) != rounds {
		t.Fatalf("client counts %d submissions, coordinator received %d, want %d", c.Submitted, len(n.submissions), rounds)
	}
	digests := map[int]string{}
	for r, s := range n.submissions {
		h := s.Header
		if h.GetEncoding() != "f64le" || h.GetLength() != int64(f.job.GetNumParams()) || h.GetSamples() != int64(data.Len()) {
			t.Errorf("round %d: header encoding %q length %d samples %d, want f64le, %d, %d",
				r, h.GetEncoding(), h.GetLength(), h.GetSamples(), f.job.GetNumParams(), data.Len())
		}
		got, err := decodeF64(s.Data)
		if err != nil || len(got) != int(h.GetLength()) {
			t.Fatalf("round %d: payload of %d bytes does not decode to the announced %d values (%v)", r, len(s.Data), h.GetLength(), err)
		}
		want := expectedUpdate(t, f.job, f.clientID, r, f.global, data)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("round %d: update[%d] = %v, want %v (trained from the downloaded model)", r, i, got[i], want[i])
			}
		}
		sum := sha256.Sum256(s.Data)
		digests[r] = hex.EncodeToString(sum[:])
	}

	// Both receipts are in the file, and they verify against the digests
	// of what the client submitted.
	rf, err := os.Open(filepath.Join(dir, "receipts.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	rs, err := ledger.VerifyClientFile(rf, f.receipt.Public().(ed25519.PublicKey), f.clientID, digests)
	if err != nil {
		t.Fatalf("receipts file: %v", err)
	}
	if len(rs) != rounds || rs[0].Seq != 1 || rs[1].Seq != 2 {
		t.Fatalf("receipts file holds %d receipts %+v, want seq 1 and 2", len(rs), rs)
	}

	// The key file names the identity the key was bound to.
	var kf keyFile
	b, err := os.ReadFile(filepath.Join(dir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &kf); err != nil || kf.Job != f.job.GetJobId() || kf.Client != f.clientID {
		t.Fatalf("key file %s: job %q client %q (%v), want %q and %q", b, kf.Job, kf.Client, err, f.job.GetJobId(), f.clientID)
	}
}

// TestRunBadToken: a token the coordinator refuses ends Run at once with
// ErrRefused; the client does not try again and again.
func TestRunBadToken(t *testing.T) {
	f := newFakeCoord(t, 1)
	lis := listen(t, "")
	f.serve(lis)
	c, err := New(Config{Conn: dial(t, lis.Addr().String(), nil), Token: "tly_wrong", Data: testData(), MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = runClient(t, context.Background(), c)
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("Run: %v, want ErrRefused", err)
	}
	n := f.counts()
	if n.enrolls != 1 {
		t.Fatalf("%d enrolment attempts, want exactly 1", n.enrolls)
	}
	t.Logf("Run: %v", err)
}

// callLog records the code and time of every call of one method.
type callLog struct {
	mu    sync.Mutex
	codes []codes.Code
	times []time.Time
	// unavailable receives a value at each Unavailable answer, without
	// blocking.
	unavailable chan struct{}
}

func newCallLog() *callLog { return &callLog{unavailable: make(chan struct{}, 100)} }

func (l *callLog) observer(method string) func(string, codes.Code) {
	return func(m string, code codes.Code) {
		if m != method {
			return
		}
		l.mu.Lock()
		l.codes, l.times = append(l.codes, code), append(l.times, time.Now())
		l.mu.Unlock()
		if code == codes.Unavailable {
			select {
			case l.unavailable <- struct{}{}:
			default:
			}
		}
	}
}

// TestRunUnreachableThenUp starts a client before its coordinator
// listens: the enrolment fails as unavailable, is retried with a backoff
// that doubles from MinBackoff up to MaxBackoff, and succeeds once the
// coordinator is up; the job then runs to its end.
func TestRunUnreachableThenUp(t *testing.T) {
	lis := listen(t, "")
	addr := lis.Addr().String()
	lis.Close() // nothing listens there until the test says so

	f := newFakeCoord(t, 1)
	log := newCallLog()
	const minB, maxB = 20 * time.Millisecond, 80 * time.Millisecond
	c, err := New(Config{
		// Joining starts with the open Schema call, which checks the local
		// labels before the token is spent: it is the call retried here.
		Conn: dial(t, addr, log.observer(tallyv1.CoordinatorService_Schema_FullMethodName)), Token: f.token, Data: testData(),
		MinBackoff: minB, MaxBackoff: maxB, PollWait: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- runClient(t, context.Background(), c) }()
	const failures = 5
	for range failures {
		select {
		case <-log.unavailable:
		case err := <-done:
			t.Fatalf("Run returned %v while the coordinator was down", err)
		case <-time.After(time.Minute):
			t.Fatal("no enrolment attempt within a minute")
		}
	}
	f.serve(listen(t, addr))
	if err := <-done; err != nil {
		t.Fatalf("Run: %v, want nil once the coordinator came up", err)
	}
	f.checkProtocol()
	n := f.counts()
	if len(n.submissions) != 1 || n.enrolls != 1 {
		t.Fatalf("%d submissions and %d enrolments, want 1 and 1", len(n.submissions), n.enrolls)
	}

	log.mu.Lock()
	defer log.mu.Unlock()
	if last := log.codes[len(log.codes)-1]; last != codes.OK {
		t.Fatalf("last enrolment attempt: %v, want OK", last)
	}
	// The wait before attempt k+1 is at least min(2^k·MinBackoff,
	// MaxBackoff): a load can make it longer, nothing makes it shorter.
	wait := minB
	for k := 1; k < failures; k++ {
		if gap := log.times[k].Sub(log.times[k-1]); gap < wait {
			t.Errorf("attempt %d came %v after attempt %d, want ≥ %v (backoff)", k+1, gap, k, wait)
		}
		wait = min(2*wait, maxB)
	}
}

// TestRunCoordinatorRestarts stops the coordinator's server while the
// enrolled client waits on a task, and starts it again on the same
// address: the client retries, carries on with the identity it has (no
// second enrolment; its token would not admit one) and finishes the job.
func TestRunCoordinatorRestarts(t *testing.T) {
	f := newFakeCoord(t, 1)
	f.hold = make(chan struct{})
	lis := listen(t, "")
	addr := lis.Addr().String()
	srv := f.serve(lis)
	log := newCallLog()
	c, err := New(Config{
		Conn: dial(t, addr, log.observer(tallyv1.CoordinatorService_NextTask_FullMethodName)), Token: f.token, Data: testData(),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, PollWait: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- runClient(t, context.Background(), c) }()
	select {
	case <-f.polling:
	case err := <-done:
		t.Fatalf("Run returned %v before polling", err)
	}
	srv.Stop()
	select {
	case <-log.unavailable:
	case err := <-done:
		t.Fatalf("Run returned %v while the coordinator was down", err)
	}
	close(f.hold)
	f.serve(listen(t, addr))
	if err := <-done; err != nil {
		t.Fatalf("Run: %v, want nil after the coordinator came back", err)
	}
	f.checkProtocol()
	n := f.counts()
	if n.enrolls != 1 || len(n.submissions) != 1 {
		t.Fatalf("%d enrolments and %d submissions, want 1 and 1", n.enrolls, len(n.submissions))
	}
}

// TestRunNextTaskUnavailable: a coordinator that answers "unavailable" a
// few times in the middle of a job (as one does while it restarts) is
// polled again until it answers; the client neither gives up nor enrols
// again.
func TestRunNextTaskUnavailable(t *testing.T) {
	f := newFakeCoord(t, 2)
	f.failNext = 4
	lis := listen(t, "")
	f.serve(lis)
	c, err := New(Config{Conn: dial(t, lis.Addr().String(), nil), Token: f.token, Data: testData(), MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, PollWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := runClient(t, context.Background(), c); err != nil {
		t.Fatalf("Run: %v, want nil", err)
	}
	f.checkProtocol()
	n := f.counts()
	if n.failed != 4 || n.enrolls != 1 || len(n.submissions) != 2 {
		t.Fatalf("%d failed polls, %d enrolments, %d submissions; want 4, 1, 2", n.failed, n.enrolls, len(n.submissions))
	}
}

// TestRunResumesWithKeyFile: a client process killed after enrolling is
// started again with the same key file and no token (it admitted one
// enrolment). It resumes with the stored key, which the coordinator
// recognises by its signature, and finishes the job.
func TestRunResumesWithKeyFile(t *testing.T) {
	f := newFakeCoord(t, 1)
	f.hold = make(chan struct{})
	lis := listen(t, "")
	f.serve(lis)
	conn := dial(t, lis.Addr().String(), nil)
	keyPath := filepath.Join(t.TempDir(), "client.key")
	data := testData()

	first, err := New(Config{Conn: conn, Token: f.token, Data: data, KeyFile: keyPath, PollWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, kill := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runClient(t, ctx, first) }()
	select {
	case <-f.polling:
	case err := <-done:
		t.Fatalf("first Run returned %v before polling", err)
	}
	kill()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("first Run: %v, want context.Canceled", err)
	}
	close(f.hold)

	second, err := New(Config{Conn: conn, Data: data, KeyFile: keyPath, PollWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := runClient(t, context.Background(), second); err != nil {
		t.Fatalf("restarted Run: %v, want nil", err)
	}
	f.checkProtocol()
	n := f.counts()
	if n.enrolls != 1 || n.resumes != 1 || len(n.submissions) != 1 {
		t.Fatalf("%d enrolments, %d resumes, %d submissions; want 1, 1, 1", n.enrolls, n.resumes, len(n.submissions))
	}
}
