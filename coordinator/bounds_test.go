package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/auth"
	"github.com/tallyfl/tally/internal/telemetry"
	"github.com/tallyfl/tally/model"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// boundsJob is authJob with a round that starts as soon as two clients
// joined, so that a third joins unselected.
func boundsJob(t *testing.T) engine.Job {
	t.Helper()
	cfg := engine.JobConfig{
		ID: "boundsjob", Seed: 1, Rounds: 1,
		Data:         engine.DataConfig{Features: 2, Classes: 2},
		RoundTimeout: engine.Duration(time.Minute), Tick: engine.Duration(10 * time.Millisecond),
		Scaling: engine.ScalingConfig{Mode: "none"}, SecureAggregation: "none",
		Clients: engine.ClientsConfig{Min: 2, WaitFor: 2, Enrolment: []engine.EnrolmentConfig{
			{ID: "a", Token: "token-aaaa"}, {ID: "b", Token: "token-bbbb"}, {ID: "c", Token: "token-cccc"}}},
	}
	job, err := engine.NewJob(cfg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return job
}

// serveBounds runs job's coordinator until the test ends; setup may adjust
// the server before it serves. It returns the server, its address and its
// log.
func serveBounds(t *testing.T, job engine.Job, tel *telemetry.Telemetry, setup func(*Server)) (*Server, string, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	val := model.Examples{X: []float64{1, 0, 0, 1, 1, 1, 0, 0}, Y: []int{0, 1, 1, 0}, Features: 2}
	srv, err := NewServer(ServerConfig{Job: job, Validation: val, Linger: time.Second, Telemetry: tel,
		Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(srv)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := srv.Run(ctx, lis); err != nil && ctx.Err() == nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return srv, lis.Addr().String(), logs
}

// scriptedUpload is an upload stream of client whose messages are given in
// advance; after them Recv blocks on hold (if set) or returns io.EOF.
// received counts the messages handed to the service.
type scriptedUpload struct {
	tallyv1.CoordinatorService_SubmitUpdateServer
	ctx      context.Context
	msgs     []*tallyv1.SubmitUpdateRequest
	hold     chan struct{}
	received atomic.Int32
	reply    *tallyv1.SubmitUpdateResponse
}

func newScriptedUpload(ctx context.Context, client string, msgs ...*tallyv1.SubmitUpdateRequest) *scriptedUpload {
	return &scriptedUpload{ctx: context.WithValue(ctx, callerKey{}, client), msgs: msgs}
}

func (f *scriptedUpload) Context() context.Context { return f.ctx }

func (f *scriptedUpload) Recv() (*tallyv1.SubmitUpdateRequest, error) {
	if n := int(f.received.Load()); n < len(f.msgs) {
		f.received.Add(1)
		return f.msgs[n], nil
	}
	if f.hold != nil {
		<-f.hold
	}
	return nil, io.EOF
}

func (f *scriptedUpload) SendAndClose(r *tallyv1.SubmitUpdateResponse) error {
	f.reply = r
	return nil
}

// scriptedShares is scriptedUpload for SubmitShares.
type scriptedShares struct {
	tallyv1.CoordinatorService_SubmitSharesServer
	ctx      context.Context
	msgs     []*tallyv1.SubmitSharesRequest
	hold     chan struct{}
	received atomic.Int32
	entered  atomic.Int32 // Recv calls begun
}

func (f *scriptedShares) Context() context.Context { return f.ctx }

func (f *scriptedShares) Recv() (*tallyv1.SubmitSharesRequest, error) {
	f.entered.Add(1)
	if n := int(f.received.Load()); n < len(f.msgs) {
		f.received.Add(1)
		return f.msgs[n], nil
	}
	if f.hold != nil {
		<-f.hold
	}
	return nil, io.EOF
}

func (f *scriptedShares) SendAndClose(*tallyv1.SubmitSharesResponse) error { return nil }

// allocated is how many bytes the process allocated while f ran.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// waitTask waits until client has an open task and returns it.
func waitTask(t *testing.T, srv *Server, client string) *engine.Task {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		task, _, changed := srv.driver.pending(client)
		if task != nil {
			return task
		}
		select {
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("no task for client %s after 30 s", client)
	return nil
}

// TestUploadRefusedBeforeAllocation: an upload whose header announces the
// largest length the wire allows (MaxUpdateValues, 1 GiB of values) is
// refused at its header, with the right code and before the service
// allocates anything near what it announced, when no task is open, when
// the client is not selected for the task it names, and when the length
// is not the task's; a shares stream of a client outside every committee
// is refused after its first message. An attack that used to cost the
// coordinator 1 GiB per call (issue 11, defect 7).
func TestUploadRefusedBeforeAllocation(t *testing.T) {
	job := boundsJob(t)
	srv, addr, logs := serveBounds(t, job, nil, nil)
	conn := dialPlain(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	enrol := func(token string) *testClient {
		c := newTestClient(t, conn, job.ID)
		if _, err := c.enroll(ctx, token, 2); err != nil {
			t.Fatal(err)
		}
		return c
	}
	huge := func(taskID, encoding string) *tallyv1.SubmitUpdateRequest {
		return &tallyv1.SubmitUpdateRequest{Header: &tallyv1.SubmitHeader{TaskId: taskID, Round: 1, Samples: 5,
			Encoding: encoding, Length: MaxUpdateValues, Digest: make([]byte, 32)}, Data: make([]byte, 1024)}
	}
	// Far below the 1 GiB announced, far above what a refusal costs.
	const budget = 16 << 20
	check := func(name, client string, msg *tallyv1.SubmitUpdateRequest, want codes.Code) {
		t.Helper()
		var err error
		n := allocated(func() { err = srv.service.SubmitUpdate(newScriptedUpload(ctx, client, msg)) })
		if status.Code(err) != want {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
		if n > budget {
			t.Errorf("%s: the service allocated %d MiB before refusing, want < %d MiB", name, n>>20, budget>>20)
		}
	}
	enrol("token-aaaa")
	check("no task open", "a", huge("boundsjob/train/r1/a1", "f64le"), codes.FailedPrecondition)
	enrol("token-bbbb")
	task := waitTask(t, srv, "a")
	enrol("token-cccc") // after the round started: not selected
	check("client not selected", "c", huge(task.ID, "f64le"), codes.FailedPrecondition)
	check("length not the task's", "a", huge(task.ID, "f64le"), codes.InvalidArgument)
	check("another task", "a", huge(task.ID+"x", "f64le"), codes.FailedPrecondition)
	check("encoding not the job's", "a", huge(task.ID, "ckks"), codes.InvalidArgument)

	shares := &scriptedShares{ctx: context.WithValue(ctx, callerKey{}, "c"), msgs: []*tallyv1.SubmitSharesRequest{
		{Header: &tallyv1.SharesHeader{TaskId: task.ID}, Part: "p", Data: make([]byte, 1024)},
		{Part: "p", Data: make([]byte, 1024)}, {Part: "p", Data: make([]byte, 1024)}}}
	if err := srv.service.SubmitShares(shares); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("shares of a client outside every committee: %v, want FailedPrecondition", err)
	}
	if n := shares.received.Load(); n != 1 {
		t.Errorf("the service read %d messages of a non-member's shares stream, want only the first", n)
	}
	// The honest submissions still complete the round.
	for _, id := range []string{"a", "b"} {
		v := make([]float64, task.Length)
		buf, digest := encode(v)
		up := newScriptedUpload(ctx, id, &tallyv1.SubmitUpdateRequest{Header: &tallyv1.SubmitHeader{TaskId: task.ID, Round: 1, Samples: 5,
			Encoding: "f64le", Length: int64(task.Length), Digest: digest}, Data: buf})
		if err := srv.service.SubmitUpdate(up); err != nil || !up.reply.GetAccepted() {
			t.Fatalf("good submission of %s: %v", id, err)
		}
	}
	// Uploads for no open task of the client are logged at debug level, as
	// the driver logs a late answer; the others are warnings.
	if log := logs.String(); !regexp.MustCompile(`level=WARN msg="upload refused" client=a task=train reason=".*client a announced 134217728 values, task \S+ takes \d+"`).MatchString(log) {
		t.Errorf("the refused upload of the wrong length was not logged with its client and lengths:\n%s", log)
	}
}

// TestEmptyUploadStream: a signed SubmitUpdate or SubmitShares stream that
// ends before its first message is a malformed submission
// (InvalidArgument), not an internal error.
func TestEmptyUploadStream(t *testing.T) {
	job := boundsJob(t)
	_, addr, _ := serveBounds(t, job, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := newTestClient(t, dialPlain(t, addr), job.ID)
	if _, err := a.enroll(ctx, "token-aaaa", 2); err != nil {
		t.Fatal(err)
	}
	// Signed for a first message that never comes.
	up, err := a.api.SubmitUpdate(auth.WithFirstMessage(ctx, &tallyv1.SubmitUpdateRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty SubmitUpdate stream: %v, want InvalidArgument", err)
	}
	sh, err := a.api.SubmitShares(auth.WithFirstMessage(ctx, &tallyv1.SubmitSharesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sh.CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty SubmitShares stream: %v, want InvalidArgument", err)
	}
}

// TestOneUploadStreamPerClient: while a client's upload stream is open, a
// second one of the same client is refused (ResourceExhausted, which a
// client retries), another client's is not, and once the first ends the
// client may open one again.
func TestOneUploadStreamPerClient(t *testing.T) {
	job := boundsJob(t)
	srv, addr, _ := serveBounds(t, job, nil, nil)
	conn := dialPlain(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tok := range []string{"token-aaaa", "token-bbbb"} {
		if _, err := newTestClient(t, conn, job.ID).enroll(ctx, tok, 2); err != nil {
			t.Fatal(err)
		}
	}
	task := waitTask(t, srv, "a")
	v := make([]float64, task.Length)
	buf, digest := encode(v)
	msg := func() *tallyv1.SubmitUpdateRequest {
		return &tallyv1.SubmitUpdateRequest{Header: &tallyv1.SubmitHeader{TaskId: task.ID, Round: 1, Samples: 5,
			Encoding: "f64le", Length: int64(task.Length), Digest: digest}, Data: buf}
	}
	first := newScriptedUpload(ctx, "a", msg())
	first.hold = make(chan struct{})
	firstErr := make(chan error, 1)
	go func() { firstErr <- srv.service.SubmitUpdate(first) }()
	for first.received.Load() == 0 {
		runtime.Gosched()
	}
	second := newScriptedUpload(ctx, "a", msg())
	if err := srv.service.SubmitUpdate(second); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a second upload stream of a while its first is open: %v, want ResourceExhausted", err)
	}
	if n := second.received.Load(); n != 0 {
		t.Errorf("the service read %d messages of the refused stream, want none", n)
	}
	sharesHeld := &scriptedShares{ctx: context.WithValue(ctx, callerKey{}, "b"), hold: make(chan struct{})}
	sharesErr := make(chan error, 1)
	go func() { sharesErr <- srv.service.SubmitShares(sharesHeld) }()
	for sharesHeld.entered.Load() == 0 { // b's first stream holds its place and waits for a message
		runtime.Gosched()
	}
	if err := srv.service.SubmitShares(&scriptedShares{ctx: context.WithValue(ctx, callerKey{}, "b")}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a second shares stream of b while its first is open: %v, want ResourceExhausted", err)
	}
	close(sharesHeld.hold)
	<-sharesErr
	// b's upload is not held up by a's open stream.
	if err := srv.service.SubmitUpdate(newScriptedUpload(ctx, "b", msg())); err != nil {
		t.Errorf("b's upload while a's stream is open: %v", err)
	}
	close(first.hold)
	if err := <-firstErr; err != nil || !first.reply.GetAccepted() {
		t.Fatalf("a's first stream: %v", err)
	}
}

// TestRefusalsDoNotTellWhichClientsExist: a call signed as a client with
// no enrolled key, as a client of the job that never enrolled, as an
// enrolled client with the wrong key and as a revoked client with the
// wrong key all get the same answer; the operator's log says which it was.
func TestRefusalsDoNotTellWhichClientsExist(t *testing.T) {
	job := boundsJob(t)
	tokens := t.TempDir() + "/boundsjob.tokens"
	if err := RevokeClient(tokens, job, "c", time.Now()); err != nil {
		t.Fatal(err)
	}
	_, addr, logs := serveBounds(t, job, nil, func(s *Server) {
		if err := s.service.setAuth(newMemoryAuth(), tokens); err != nil {
			t.Fatal(err)
		}
	})
	conn := dialPlain(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := newTestClient(t, conn, job.ID).enroll(ctx, "token-aaaa", 2); err != nil {
		t.Fatal(err)
	}
	answers := map[string]string{}
	for _, id := range []string{"a", "b", "c", "zzz"} {
		stranger := newTestClient(t, conn, job.ID)
		stranger.id = id
		_, err := stranger.api.NextTask(ctx, &tallyv1.NextTaskRequest{WaitMs: 10})
		answers[id] = fmt.Sprintf("%v: %s", status.Code(err), status.Convert(err).Message())
	}
	for _, id := range []string{"b", "c", "zzz"} {
		if answers[id] != answers["a"] {
			t.Errorf("signed as %q: %q; signed as enrolled client a with a wrong key: %q; want the same", id, answers[id], answers["a"])
		}
	}
	if !strings.HasPrefix(answers["a"], "Unauthenticated") {
		t.Errorf("wrong key: %s, want Unauthenticated", answers["a"])
	}
	if log := logs.String(); !strings.Contains(log, `no key is enrolled for client \"zzz\"`) {
		t.Errorf("the log does not say that zzz has no key:\n%s", log)
	}
}

// TestSchemaRefusalLogged: a client whose data does not fit the job is
// told, and the coordinator logs it with the client and what was wrong.
func TestSchemaRefusalLogged(t *testing.T) {
	job := boundsJob(t)
	_, addr, logs := serveBounds(t, job, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := dialPlain(t, addr)
	if _, err := newTestClient(t, conn, job.ID).enroll(ctx, "token-aaaa", 3); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("enrolment with 3 features: %v, want InvalidArgument", err)
	}
	b := newTestClient(t, conn, job.ID)
	if _, err := b.enroll(ctx, "token-bbbb", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := b.api.Resume(ctx, &tallyv1.ResumeRequest{Samples: 0, Features: 2}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("resume with no rows: %v, want InvalidArgument", err)
	}
	log := logs.String()
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`level=WARN msg="join refused" client=a .*reason=".*client a has 3 features, the job expects 2"`),
		regexp.MustCompile(`level=WARN msg="join refused" client=b call=resume .*reason=".*client b has no training rows"`),
	} {
		if !want.MatchString(log) {
			t.Errorf("no log line matches %s; log:\n%s", want, log)
		}
	}
}

// TestRefusedEnrolmentFloodLogBounded: a flood of refused enrolments
// writes a bounded number of log lines (the first of each interval, then a
// summary saying how many were held back), while the refusal counter
// counts every one.
func TestRefusedEnrolmentFloodLogBounded(t *testing.T) {
	const flood, burst = 300, 5
	prov, err := telemetry.Start(context.Background(), telemetry.Config{MetricsAddr: "127.0.0.1:0", Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Shutdown(context.Background()) })
	job := boundsJob(t)
	var limiter *logLimiter
	_, addr, logs := serveBounds(t, job, prov.Telemetry, func(s *Server) {
		// An interval long enough that the flood fits in one or two.
		limiter = newLogLimiter(s.service.log, burst, 2*time.Second)
		s.service.logs = limiter
	})
	api := tallyv1.NewCoordinatorServiceClient(dialPlain(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < flood; i += 4 {
				_, key, _ := ed25519.GenerateKey(rand.Reader)
				_, err := api.Enroll(ctx, &tallyv1.EnrollRequest{Token: "tly_guess" + strconv.Itoa(i), Samples: 5, Features: 2, AuthKey: key.Public().(ed25519.PublicKey)})
				if status.Code(err) != codes.Unauthenticated {
					t.Errorf("guessed token %d: %v, want Unauthenticated", i, err)
				}
			}
		}()
	}
	wg.Wait()
	_, fams := scrapeMetrics(t, prov.Addr().String())
	if v := value(fams, "tally_auth_refused_total", map[string]string{"method": tallyv1.CoordinatorService_Enroll_FullMethodName}); v != flood {
		t.Errorf("tally_auth_refused_total = %v, want %d", v, flood)
	}
	// Every refusal is either a line of its own or counted in a summary,
	// which the interval's end writes.
	lineRE := regexp.MustCompile(`(?m)^.*msg="enrolment refused".*$`)
	summaryRE := regexp.MustCompile(`(?m)^.*msg="enrolment refused: suppressed (\d+) similar lines".*$`)
	var lines, summarised int
	deadline := time.Now().Add(30 * time.Second)
	for {
		log := logs.String()
		lines, summarised = len(lineRE.FindAllString(log, -1)), 0
		for _, m := range summaryRE.FindAllStringSubmatch(log, -1) {
			n, _ := strconv.Atoi(m[1])
			summarised += n
		}
		if lines+summarised == flood || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if lines+summarised != flood {
		t.Errorf("%d enrolment refusals logged and %d summarised, want %d in all", lines, summarised, flood)
	}
	// The flood took a few intervals at most (it is a few hundred local
	// calls): burst lines and one summary per interval.
	if lines > 10*(burst+1) {
		t.Errorf("%d log lines for %d refused enrolments, want at most %d", lines, flood, 10*(burst+1))
	}
	t.Logf("%d refused enrolments: %d lines written, %d summarised", flood, lines, summarised)
}
