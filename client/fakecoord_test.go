package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/internal/auth"
	"github.com/tallyfl/tally/ledger"
	"github.com/tallyfl/tally/model"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// fakeCoord is a coordinator reduced to what a client's loop sees: it
// admits one token, checks that every later call is signed by the key the
// client enrolled with, hands out one plaintext training task per round
// (the model to be downloaded in chunks), takes the updates, issues a
// signed receipt for each, and says the job is done after the last round.
// It implements the generated server interface, so the client under test
// talks real gRPC to it.
type fakeCoord struct {
	tallyv1.UnimplementedCoordinatorServiceServer

	t        *testing.T
	token    string
	clientID string
	job      *tallyv1.JobSpec
	global   []float64 // the model every round trains from
	receipt  ed25519.PrivateKey
	verifier *auth.Verifier

	mu          sync.Mutex
	key         ed25519.PublicKey // the enrolled client's auth key; nil before
	enrolls     int               // Enroll calls, admitted or not
	resumes     int               // Resume calls that were admitted
	round       int               // the round being trained; job.Rounds means done
	submissions []fakeSubmission
	receipts    []ledger.Receipt
	// failNext makes the next n NextTask calls fail as Unavailable, as a
	// coordinator that is restarting does.
	failNext int
	failed   int // NextTask calls failed so far
	// hold, if set, keeps every NextTask waiting until it is closed or
	// the call is cancelled, so that a test can act while the client is
	// enrolled but has not finished.
	hold chan struct{}
	// he, if set, makes the job's updates travel under a collective
	// CKKS key (see he_test.go).
	he *fakeHE
	// polling is closed when the first signed NextTask arrives: the client
	// has its enrolment's answer and has bound its key to its identity.
	polling  chan struct{}
	pollOnce sync.Once
	// script, if set, is asked first by NextTask (with f.mu held) and
	// its task served unless it returns nil; objects are what Download
	// serves besides the public key, by name; shares records every
	// SubmitShares (manifest_test.go).
	script  func() *tallyv1.NextTaskResponse
	objects map[string][]byte
	shares  []map[string][]byte
	// closeWhen, if set, is asked (with f.mu held) at every Download of
	// a decryption task, with the object's name and how many times it has
	// been asked for, this time included: once it says true the task is
	// closed, and that download and every later one of the task are
	// refused as the coordinator refuses a closed task's (TASK_CLOSED,
	// ended=given_up).
	closeWhen func(name string, times int) bool
	downloads map[string]int
	closed    bool
	// wrong records calls that broke the protocol (unsigned, signed by
	// another key, a header that does not match the task); the test fails
	// on any.
	wrong []string
}

// fakeSubmission is one SubmitUpdate as the fake received it.
type fakeSubmission struct {
	Header *tallyv1.SubmitHeader
	Data   []byte
	// Messages are the data of each message as sent; an encrypted update
	// sends one ciphertext per message.
	Messages [][]byte
}

// fakeJob is a small plaintext job: logistic regression on 3 features and
// 2 classes, trained for rounds rounds.
func fakeJob(t *testing.T, rounds int) *tallyv1.JobSpec {
	t.Helper()
	m, err := model.New(model.Spec{Kind: model.KindLogReg}, 3, 2, 7)
	if err != nil {
		t.Fatal(err)
	}
	return &tallyv1.JobSpec{
		JobId: "job-fake", Seed: 7, Features: 3, Classes: 2, ClassNames: []string{"0", "1"},
		Model:     &tallyv1.ModelSpec{Kind: model.KindLogReg},
		Train:     &tallyv1.TrainConfig{Epochs: 2, BatchSize: 4, LearningRate: 0.5},
		Rounds:    int32(rounds),
		NumParams: int32(m.NumParams()), SecureAggregation: "none",
	}
}

func newFakeCoord(t *testing.T, rounds int) *fakeCoord {
	t.Helper()
	_, rk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	job := fakeJob(t, rounds)
	global := make([]float64, job.GetNumParams())
	for i := range global {
		// Far from the model's initial parameters, so that an update
		// trained from anything but the downloaded model differs.
		global[i] = 0.25 * float64(i+1)
	}
	return &fakeCoord{
		t: t, token: "tly_good", clientID: "client-0", job: job, global: global, receipt: rk,
		verifier: auth.NewVerifier(job.GetJobId(), 0), polling: make(chan struct{}),
	}
}

// serve starts a gRPC server for f on lis and stops it at the end of the
// test; it returns the server so that a test can stop it earlier.
func (f *fakeCoord) serve(lis net.Listener) *grpc.Server {
	srv := grpc.NewServer()
	tallyv1.RegisterCoordinatorServiceServer(srv, f)
	go srv.Serve(lis)
	f.t.Cleanup(srv.Stop)
	return srv
}

// listen opens a loopback listener, on addr if it is not empty.
func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// dial connects to addr with gRPC's reconnection backoff cut to a few
// milliseconds (its default starts at a second), so that a test whose
// coordinator comes back does not wait on gRPC rather than on the client.
// Every call's code is passed to observe, if set.
func dial(t *testing.T, addr string, observe func(method string, code codes.Code)) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 5 * time.Millisecond, Multiplier: 1.5, MaxDelay: 20 * time.Millisecond}, MinConnectTimeout: time.Second}),
	}
	if observe != nil {
		opts = append(opts, grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
			err := invoker(ctx, method, req, reply, cc, o...)
			observe(method, status.Code(err))
			return err
		}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (f *fakeCoord) wrongf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wrong = append(f.wrong, fmt.Sprintf(format, args...))
}

// signed checks that a call of method carries a signature of the enrolled
// client's key, as the real coordinator does.
func (f *fakeCoord) signed(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	call, err := auth.Parse(md)
	if err != nil {
		f.wrongf("%s: %v", method, err)
		return status.Error(codes.Unauthenticated, err.Error())
	}
	f.mu.Lock()
	key := f.key
	f.mu.Unlock()
	if key == nil || call.Client != f.clientID {
		f.wrongf("%s: signed as %q before any enrolment", method, call.Client)
		return status.Errorf(codes.Unauthenticated, "fake: unknown client %q", call.Client)
	}
	if err := f.verifier.Verify(call, key, method, time.Now()); err != nil {
		f.wrongf("%s: %v", method, err)
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return nil
}

// Schema is open, as the real coordinator's: a client asks it before it
// spends its token.
func (f *fakeCoord) Schema(context.Context, *tallyv1.SchemaRequest) (*tallyv1.SchemaResponse, error) {
	return &tallyv1.SchemaResponse{JobId: f.job.GetJobId(), Features: f.job.GetFeatures(), ClassNames: f.job.GetClassNames()}, nil
}

func (f *fakeCoord) Enroll(ctx context.Context, req *tallyv1.EnrollRequest) (*tallyv1.EnrollResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enrolls++
	if req.GetToken() != f.token {
		return nil, status.Error(codes.Unauthenticated, "fake: unknown enrolment token")
	}
	if f.key != nil {
		return nil, status.Error(codes.PermissionDenied, "fake: the token was used already")
	}
	if len(req.GetAuthKey()) != ed25519.PublicKeySize {
		return nil, status.Errorf(codes.InvalidArgument, "fake: auth_key of %d bytes", len(req.GetAuthKey()))
	}
	if req.GetFeatures() != f.job.GetFeatures() || req.GetSamples() < 1 {
		return nil, status.Errorf(codes.InvalidArgument, "fake: %d features, %d samples", req.GetFeatures(), req.GetSamples())
	}
	f.key = ed25519.PublicKey(append([]byte(nil), req.GetAuthKey()...))
	return &tallyv1.EnrollResponse{ClientId: f.clientID, Job: f.job, ReceiptPublicKey: f.receipt.Public().(ed25519.PublicKey)}, nil
}

func (f *fakeCoord) Resume(ctx context.Context, req *tallyv1.ResumeRequest) (*tallyv1.ResumeResponse, error) {
	if err := f.signed(ctx, tallyv1.CoordinatorService_Resume_FullMethodName); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resumes++
	return &tallyv1.ResumeResponse{ClientId: f.clientID, Job: f.job, ReceiptPublicKey: f.receipt.Public().(ed25519.PublicKey)}, nil
}

func (f *fakeCoord) taskID(round int) string { return fmt.Sprintf("train/%d", round) }

func (f *fakeCoord) NextTask(ctx context.Context, req *tallyv1.NextTaskRequest) (*tallyv1.NextTaskResponse, error) {
	if err := f.signed(ctx, tallyv1.CoordinatorService_NextTask_FullMethodName); err != nil {
		return nil, err
	}
	f.pollOnce.Do(func() { close(f.polling) })
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failNext > 0 {
		f.failNext--
		f.failed++
		return nil, status.Error(codes.Unavailable, "fake: restarting")
	}
	if f.script != nil {
		if t := f.script(); t != nil {
			return t, nil
		}
	}
	if f.round >= int(f.job.GetRounds()) {
		return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Done{Done: &tallyv1.DoneTask{
			// The fake numbers its rounds from 0; the real coordinator's
			// are 1 … rounds, and a finished job's final round is rounds.
			Reason: "rounds done", FinalRound: int32(f.round), Receipts: f.receiptsAfter(req.GetReceiptsAfter()),
		}}}, nil
	}
	task := &tallyv1.TrainTask{Round: int32(f.round), NumParams: f.job.GetNumParams(), TaskId: f.taskID(f.round)}
	if f.he != nil {
		task.KeyId = f.he.keyID[:]
	}
	return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Train{Train: task}}, nil
}

// DownloadModel sends the global model in two chunks, so that the client
// has to put it together by offset.
func (f *fakeCoord) DownloadModel(req *tallyv1.DownloadModelRequest, stream grpc.ServerStreamingServer[tallyv1.DownloadModelResponse]) error {
	if err := f.signed(stream.Context(), tallyv1.CoordinatorService_DownloadModel_FullMethodName); err != nil {
		return err
	}
	f.mu.Lock()
	want := f.taskID(f.round)
	f.mu.Unlock()
	if req.GetTaskId() != want {
		return status.Errorf(codes.FailedPrecondition, "fake: download for task %q, current task %q", req.GetTaskId(), want)
	}
	half := len(f.global) / 2
	for _, part := range [][2]int{{0, half}, {half, len(f.global)}} {
		msg := &tallyv1.DownloadModelResponse{Offset: int64(part[0]), Values: f.global[part[0]:part[1]], Total: int64(len(f.global))}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	return nil
}

// SubmitUpdate takes a plaintext update, checks its header against the
// current task and its digest against the bytes, and issues a receipt.
func (f *fakeCoord) SubmitUpdate(stream grpc.ClientStreamingServer[tallyv1.SubmitUpdateRequest, tallyv1.SubmitUpdateResponse]) error {
	if err := f.signed(stream.Context(), tallyv1.CoordinatorService_SubmitUpdate_FullMethodName); err != nil {
		return err
	}
	var hdr *tallyv1.SubmitHeader
	var data []byte
	var msgs [][]byte
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if hdr == nil {
			hdr = msg.GetHeader()
		}
		data = append(data, msg.GetData()...)
		msgs = append(msgs, msg.GetData())
	}
	if hdr == nil {
		f.wrongf("SubmitUpdate without a header")
		return status.Error(codes.InvalidArgument, "fake: no header")
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(hdr.GetDigest()) != hex.EncodeToString(sum[:]) {
		f.wrongf("SubmitUpdate: header digest %x, data hashes to %x", hdr.GetDigest(), sum)
		return status.Error(codes.InvalidArgument, "fake: digest mismatch")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if hdr.GetTaskId() != f.taskID(f.round) || int(hdr.GetRound()) != f.round {
		f.wrong = append(f.wrong, fmt.Sprintf("SubmitUpdate for task %q round %d, current round %d", hdr.GetTaskId(), hdr.GetRound(), f.round))
		return status.Error(codes.FailedPrecondition, "fake: not the current task")
	}
	f.submissions = append(f.submissions, fakeSubmission{Header: hdr, Data: data, Messages: msgs})
	f.sign(ledger.Receipt{
		Job: f.job.GetJobId(), Round: f.round, Client: f.clientID, SubmissionDigest: hex.EncodeToString(sum[:]),
		Method: "fake", Mode: "plain", Value: 0.5,
	})
	f.round++
	return stream.SendAndClose(&tallyv1.SubmitUpdateResponse{Accepted: true})
}

// sign completes r as the ledger would (sequence, chain, hash, Ed25519
// signature) and keeps it. The caller holds f.mu.
func (f *fakeCoord) sign(r ledger.Receipt) {
	r.Seq = uint64(len(f.receipts)) + 1
	if n := len(f.receipts); n > 0 {
		r.PrevHash = f.receipts[n-1].Hash
	}
	r.Hash = r.ComputeHash()
	h, _ := hex.DecodeString(r.Hash)
	r.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(f.receipt, h))
	f.receipts = append(f.receipts, r)
}

// receiptsAfter returns the JSON of the receipts with Seq > after. The
// caller holds f.mu.
func (f *fakeCoord) receiptsAfter(after uint64) [][]byte {
	var out [][]byte
	for _, r := range f.receipts {
		if r.Seq > after {
			b, err := json.Marshal(r)
			if err != nil {
				panic(err) // a Receipt always encodes
			}
			out = append(out, b)
		}
	}
	return out
}

func (f *fakeCoord) Receipts(ctx context.Context, req *tallyv1.ReceiptsRequest) (*tallyv1.ReceiptsResponse, error) {
	if err := f.signed(ctx, tallyv1.CoordinatorService_Receipts_FullMethodName); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &tallyv1.ReceiptsResponse{Receipts: f.receiptsAfter(req.GetAfterSeq())}, nil
}

// fakeCounts is what a test reads of the fake after the fact.
type fakeCounts struct {
	enrolls, resumes, failed int
	submissions              []fakeSubmission
}

func (f *fakeCoord) counts() fakeCounts {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fakeCounts{f.enrolls, f.resumes, f.failed, append([]fakeSubmission(nil), f.submissions...)}
}

// checkProtocol fails the test for every call that broke the protocol.
func (f *fakeCoord) checkProtocol() {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.wrong {
		f.t.Errorf("protocol: %s", w)
	}
}

// decodeF64 decodes an "f64le" payload.
func decodeF64(b []byte) ([]float64, error) {
	if len(b)%8 != 0 {
		return nil, errors.New("payload is not a whole number of float64")
	}
	v := make([]float64, len(b)/8)
	for i := range v {
		v[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return v, nil
}
