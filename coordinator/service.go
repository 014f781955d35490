package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/auth"
	"github.com/tallyfl/tally/internal/telemetry"
	"github.com/tallyfl/tally/ledger"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// Wire limits, stated once. gRPC caps a message at 4 MiB by default
// (MaxMessageBytes); nothing here raises the cap, so every message stays
// below it with room for headers and framing.
const (
	// MaxMessageBytes is gRPC's default cap on one received message, which
	// the coordinator keeps.
	MaxMessageBytes = 4 << 20
	// ChunkBytes is the largest payload of one plaintext SubmitUpdate
	// message, and the piece size of a ciphertext too large for one message.
	// A ciphertext that fits (LogN 14 with two Q primes: 512 KiB) travels
	// alone in one message, which the service adds without copying it.
	ChunkBytes = 1 << 20
	// SendChunkBytes is the payload of one Download or DownloadModel
	// message. gRPC marshals each message into a buffer from a pool with
	// tiers of 32 KiB and then 1 MiB, and a server stream queues about its
	// 64 KiB write quota before Send blocks; messages that fit the 32 KiB
	// tier keep a hundred clients fetching the model or the public key at
	// once to a few MiB. (Measured, 100 clients, 100k parameters: the model
	// sent whole kept ~75 MB in send buffers; in 64 KiB pieces, each drawn
	// from the 1 MiB tier, ~200 MB.) 32 KiB less room for the fields.
	SendChunkBytes = 32<<10 - 64
	// InlineModelBytes is the largest model sent inside a NextTask
	// response, so that the response too fits the 32 KiB tier; larger
	// models are fetched with DownloadModel, for the reason above.
	InlineModelBytes = 24 << 10
	// UploadWindowBytes is the server's fixed HTTP/2 flow-control window per
	// stream. A fixed window turns off gRPC's BDP estimator, which grows
	// windows to megabytes on fast links; an upload stream waiting for a slot
	// (DefaultUploadSlots) then holds at most this much. A stream that is
	// being read is granted its whole message, so uploads are not slowed.
	UploadWindowBytes = 64 << 10
	// ConnWindowBytes is the fixed per-connection window: one ciphertext
	// message in flight per round trip on a long link.
	ConnWindowBytes = 1 << 20
	// DefaultUploadSlots is how many SubmitUpdate messages are read and
	// added at once, over all clients. A slot holds about two messages (gRPC's
	// received bytes and the decoded copy), so the uploads cost about
	// slots × 2 × 512 KiB whatever the number of clients; on slow links it
	// also bounds how many clients upload at once (slots × per-client rate).
	DefaultUploadSlots = 8
	// UploadLease is how long a stream may hold a slot while its next
	// message has not arrived; then the slot goes to the next stream and the
	// slow one reads on without it. A client that stalls thus delays others
	// by at most UploadLease per message, and the bound on memory holds for
	// streams that keep pace (512 KiB in 15 s is 280 kbit/s).
	UploadLease = 15 * time.Second
	// MaxUpdateValues bounds the length a submission header may announce.
	MaxUpdateValues = 1 << 27
	// DefaultPollWait is how long NextTask holds a request with nothing to do.
	DefaultPollWait = engine.DefaultPollWait
	// KeepaliveTime is how long a connection may be silent before the
	// server pings it, and KeepaliveTimeout how long the ping may go
	// unanswered before the connection is closed: a client that vanished
	// (a laptop closed, a NAT entry expired) is noticed within about a
	// round timeout instead of holding its stream for the TCP timeout.
	KeepaliveTime    = time.Minute
	KeepaliveTimeout = 20 * time.Second
	// KeepaliveMinTime is the shortest interval of client pings the server
	// tolerates, also on connections with no call open: long polls idle up
	// to DefaultPollWait between calls, so clients that ping every 10 s or
	// less often are never sent away for "too many pings".
	KeepaliveMinTime = 10 * time.Second
)

// Errors of the service layer.
var (
	ErrBadToken    = errors.New("coordinator: unknown enrolment token")
	ErrBadSession  = errors.New("coordinator: call not authenticated")
	ErrBadSchema   = errors.New("coordinator: client data does not match the job's schema")
	ErrBadEncoding = engine.ErrBadEncoding
	// ErrBadSubmission refuses encrypted ciphertexts whose signed
	// statement (SubmitHeader.submission) is missing, does not verify
	// under the client's enrolled key, names another task, or does not
	// cover them: members would refuse every sum that includes them.
	ErrBadSubmission = errors.New("coordinator: ciphertexts not covered by the client's signed submission")
	// ErrBusy refuses a second upload stream of a client while its first
	// is open: each stream may hold up to a task's expected size, so one
	// per client and method bounds what a client can make the coordinator
	// hold. It maps to ResourceExhausted, on which a client retries later.
	ErrBusy = errors.New("coordinator: client already has an upload stream open")
)

// Service implements the CoordinatorService gRPC API on top of a Driver.
type Service struct {
	tallyv1.UnimplementedCoordinatorServiceServer

	job    engine.Job
	driver *Driver
	log    *slog.Logger
	spec   *tallyv1.JobSpec

	receipts ReceiptSource
	uploads  *uploadGate
	tel      *telemetry.Telemetry

	tokens   *tokenBook
	auth     AuthStore
	verifier *auth.Verifier
	// logs writes refusals, rate-limited: a refusal is cheap to provoke.
	logs *logLimiter

	mu      sync.Mutex
	keys    map[string]ed25519.PublicKey // client id → its enrolled call-signing key
	edges   map[string]ed25519.PublicKey // edge id → the key the job lists for it (edge.go)
	streams map[string]bool              // client id + method → an upload stream is open
	joined  map[string]bool              // clients that enrolled or resumed in this process
	told    map[string]bool              // clients that have been told the job ended
	tellCh  chan struct{}                // closed and replaced when told grows
}

// toldDone returns how many clients know the job ended, and a channel
// closed when that number next changes.
func (s *Service) toldDone() (int, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.told), s.tellCh
}

// NewService returns the gRPC service of a job. numParams is the model's size.
func NewService(job engine.Job, driver *Driver, numParams int, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	spec := &tallyv1.JobSpec{
		JobId: job.ID, Seed: job.Seed, Features: int32(job.Data.Features), Classes: int32(job.Data.Classes),
		Model: &tallyv1.ModelSpec{Kind: job.Model.Kind, Activation: job.Model.Activation},
		Train: &tallyv1.TrainConfig{
			Epochs: int32(job.Train.Epochs), BatchSize: int32(job.Train.BatchSize),
			LearningRate: job.Train.LearningRate, Momentum: job.Train.Momentum, WeightDecay: job.Train.WeightDecay,
		},
		Rounds: int32(job.Rounds), Scaling: job.Scaling.Mode, NumParams: int32(numParams),
		SecureAggregation: job.SecureAggregation, MinGroupSize: int32(job.MinGroupSize),
		ScalarsPerRound: int32(job.Valuation.Scalars),
		ClassNames:      job.Data.ClassNames,
	}
	if job.Secure() {
		hp := job.Params.Config()
		spec.HeParams = &tallyv1.HEParameters{
			LogN: int32(hp.LogN), LogDefaultScale: int32(hp.LogDefaultScale), EncoderPrecision: int32(hp.EncoderPrecision),
			LogNoiseFlooding: int32(hp.LogNoiseFlooding), Insecure: hp.Insecure,
			Flooding: &tallyv1.HEFlooding{
				Security: int32(hp.Flooding.Security), Decryptions: int64(hp.Flooding.Decryptions), Scalars: int64(hp.Flooding.Scalars),
				Contributors: int64(hp.Flooding.Contributors), Blocks: int64(hp.Flooding.Blocks), Committee: int32(hp.Flooding.Committee),
			},
		}
		for _, q := range hp.LogQ {
			spec.HeParams.LogQ = append(spec.HeParams.LogQ, int32(q))
		}
		for _, q := range hp.LogP {
			spec.HeParams.LogP = append(spec.HeParams.LogP, int32(q))
		}
	}
	if d := job.DP; d != nil {
		spec.Dp = &tallyv1.DPSpec{
			Epsilon: d.Epsilon, Delta: d.Delta, Clip: d.Clip, Sigma: d.Sigma,
			Contributors: int32(d.Contributors), NoiseStd: d.NoiseStd(),
		}
	}
	for _, h := range job.Model.Hidden {
		spec.Model.Hidden = append(spec.Model.Hidden, int32(h))
	}
	if job.Scaling.Mode == "fixed" {
		spec.Scaler = &tallyv1.Scaler{Mean: job.Scaling.Mean, Std: job.Scaling.Std}
	}
	// The job's edge list was validated with the job (engine.NewJob).
	edges, _ := edgeKeys(job)
	return &Service{
		job: job, driver: driver, log: log, spec: spec, edges: edges, uploads: newUploadGate(DefaultUploadSlots, UploadLease), tel: telemetry.Noop(),
		tokens: newTokenBook(job, ""), auth: newMemoryAuth(), verifier: auth.NewVerifier(job.ID, auth.DefaultSkew),
		logs: newLogLimiter(log, DefaultLogBurst, DefaultLogInterval), streams: map[string]bool{},
		keys: map[string]ed25519.PublicKey{}, joined: map[string]bool{}, told: map[string]bool{}, tellCh: make(chan struct{}),
	}
}

// setAuth makes the service admit the tokens of the job file and of the
// tokens file at tokensPath (none if empty), and keep enrolments in store,
// whose bindings it loads: clients enrolled before a restart go on signing
// their calls with the keys they enrolled.
func (s *Service) setAuth(store AuthStore, tokensPath string) error {
	bs, err := store.Bindings()
	if err != nil {
		return fmt.Errorf("coordinator: load enrolments: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.auth, s.tokens = store, newTokenBook(s.job, tokensPath)
	for _, b := range bs {
		s.keys[b.Client] = b.Key
	}
	return nil
}

// uploadGate bounds how many upload messages are in the coordinator's
// memory at once. gRPC reads a stream's message only when the handler asks
// for it (beyond the fixed UploadWindowBytes), so a handler that waits here
// keeps its client's bytes on the client. Slots are granted in arrival
// order (a channel's blocked senders are served first in, first out).
type uploadGate struct {
	slots chan struct{}
	lease time.Duration
}

func newUploadGate(slots int, lease time.Duration) *uploadGate {
	return &uploadGate{slots: make(chan struct{}, max(1, slots)), lease: lease}
}

// uploadSlot is one message's claim on the gate. release is idempotent:
// the lease timer may have released it already.
type uploadSlot struct {
	gate  *uploadGate
	once  sync.Once
	timer *time.Timer
}

func (u *uploadSlot) release() {
	u.timer.Stop()
	u.once.Do(func() { <-u.gate.slots })
}

// recv waits for a slot, then reads one message of stream. The caller
// releases the slot once it is done with the message's bytes, also when
// recv fails.
func (g *uploadGate) recv(stream tallyv1.CoordinatorService_SubmitUpdateServer) (*tallyv1.SubmitUpdateRequest, *uploadSlot, error) {
	select {
	case g.slots <- struct{}{}:
	case <-stream.Context().Done():
		return nil, nil, stream.Context().Err()
	}
	u := &uploadSlot{gate: g}
	u.timer = time.AfterFunc(g.lease, func() { u.once.Do(func() { <-g.slots }) })
	msg, err := stream.Recv()
	if err != nil {
		u.release()
		return nil, nil, err
	}
	return msg, u, nil
}

// ReceiptSource serves a client its receipts; BoltStore is one.
type ReceiptSource interface {
	Receipts(client string, after uint64) ([]ledger.Receipt, error)
	PublicKey() ed25519.PublicKey
}

// toStatus maps package errors to gRPC status codes, in one place.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrBadToken), errors.Is(err, ErrBadSession), errors.Is(err, engine.ErrUnknownClient), errors.Is(err, ErrTokenExpired), errors.Is(err, ErrNotJoined):
		code = codes.Unauthenticated
	case errors.Is(err, engine.ErrNotSelected), errors.Is(err, ErrTokenUsed), errors.Is(err, ErrRevoked), errors.Is(err, ErrNotParticipant):
		code = codes.PermissionDenied
	case errors.Is(err, engine.ErrWrongLength), errors.Is(err, engine.ErrBadUpdate), errors.Is(err, engine.ErrWeight), errors.Is(err, ErrBadEncoding), errors.Is(err, ErrBadSchema), errors.Is(err, ErrBadKey), errors.Is(err, ErrBadSubmission):
		code = codes.InvalidArgument
	case errors.Is(err, engine.ErrConflict):
		code = codes.AlreadyExists
	case errors.Is(err, engine.ErrNoTask), errors.Is(err, ErrEnded):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrStopped):
		code = codes.Unavailable
	case errors.Is(err, ErrBusy), errors.Is(err, auth.ErrTooManyCalls):
		code = codes.ResourceExhausted
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	var closed closedTask
	var absent noObject
	switch {
	case errors.Is(err, ErrNotEdge):
		return auth.WithReason(code, err.Error(), auth.ReasonNotEdge).Err()
	case errors.As(err, &absent):
		return auth.WithReason(code, err.Error(), auth.ReasonNoObject).Err()
	case errors.As(err, &closed):
		meta := map[string]string{auth.MetaTask: closed.id}
		if closed.ended != "" {
			meta[auth.MetaEnded] = closed.ended
		}
		return auth.WithInfo(code, err.Error(), auth.ReasonTaskClosed, meta).Err()
	}
	return status.Error(code, err.Error())
}

// closedTask is the refusal of a call for task id, which is not open for
// the caller, ended as Driver.ended says ("" when not known): sent naming
// auth.ReasonTaskClosed, so that a member tells it from noObject, which
// shares its code.
type closedTask struct {
	err   error
	id    string
	ended string
}

func (e closedTask) Error() string { return e.err.Error() }
func (e closedTask) Unwrap() error { return e.err }

// closedFor is the closedTask refusal of client's call for task id,
// detail the message's end.
func (s *Service) closedFor(client, id, detail string) error {
	how := s.driver.ended(client, id)
	msg := fmt.Sprintf("%q%s", id, detail)
	if how != "" {
		msg += " (" + strings.ReplaceAll(how, "_", " ") + ")"
	}
	return closedTask{err: fmt.Errorf("%w: %s", engine.ErrNoTask, msg), id: id, ended: how}
}

// noObject is the refusal of a download of an object the open task does
// not have: sent naming auth.ReasonNoObject.
type noObject struct{ err error }

func (e noObject) Error() string { return e.err.Error() }
func (e noObject) Unwrap() error { return e.err }

// absent is the refusal of client's download from task t, which had no
// such object, its message format and args: noObject if t is still open
// for client, else closedFor. Asked again because an object can fail to
// read as its task closes (the round's spill file is closed with the
// round), and a member told NO_OBJECT takes the task to be open.
func (s *Service) absent(client string, t *engine.Task, format string, args ...any) error {
	if p, _, _ := s.driver.pending(client); p == nil || p.ID != t.ID {
		return s.closedFor(client, t.ID, "")
	}
	return noObject{fmt.Errorf("%w: "+format, append([]any{engine.ErrNoTask}, args...)...)}
}

// Enroll implements CoordinatorService: it admits a client that presents a
// valid enrolment token and binds the client's identity to the Ed25519 key
// it sent, consuming one use of the token. Later calls are signed with
// that key (see auth.go); a client that restarts calls Resume instead.
func (s *Service) Enroll(ctx context.Context, req *tallyv1.EnrollRequest) (*tallyv1.EnrollResponse, error) {
	now := time.Now()
	s.tokens.refresh(now, true, s.log)
	e, ok, revoked := s.tokens.lookup(req.GetToken())
	switch {
	case !ok:
		return nil, s.refuseEnrol(ctx, "", ErrBadToken)
	case revoked:
		return nil, s.refuseEnrol(ctx, e.client, fmt.Errorf("%w: token %s of client %s", ErrRevoked, e.id, e.client))
	case !e.expires.IsZero() && now.After(e.expires):
		return nil, s.refuseEnrol(ctx, e.client, fmt.Errorf("%w: token %s of client %s expired at %s", ErrTokenExpired, e.id, e.client, e.expires.UTC().Format(time.RFC3339)))
	}
	id := e.client
	if err := s.checkJoin(id, req.GetSamples(), req.GetFeatures(), req.GetIdentityKey()); err != nil {
		return nil, s.refuseJoin(ctx, id, "enrol", err)
	}
	if len(req.GetAuthKey()) != ed25519.PublicKeySize {
		return nil, toStatus(fmt.Errorf("%w: client %s sent a %d-byte auth_key, want its %d-byte Ed25519 public key", ErrBadKey, id, len(req.GetAuthKey()), ed25519.PublicKeySize))
	}
	key := ed25519.PublicKey(slices.Clone(req.GetAuthKey()))
	if err := checkParticipant(s.job, id, key); err != nil {
		return nil, s.refuseEnrol(ctx, id, err)
	}
	if err := s.auth.Bind(e.id, e.uses, Binding{Client: id, Key: key, Token: e.id, At: now.UTC()}); err != nil {
		if errors.Is(err, ErrTokenUsed) {
			return nil, s.refuseEnrol(ctx, id, err)
		}
		return nil, toStatus(err)
	}
	s.mu.Lock()
	s.keys[id] = key
	s.mu.Unlock()
	resp, err := s.join(ctx, id, req.GetSamples(), req.GetIdentityKey(), req.GetName(), "client enrolled")
	if err != nil {
		return nil, err
	}
	return &tallyv1.EnrollResponse{ClientId: resp.ClientId, Job: resp.Job, ReceiptPublicKey: resp.ReceiptPublicKey}, nil
}

// Resume implements CoordinatorService: a client that enrolled before, and
// whose call is signed by its bound key, announces its data and identity
// key again after a restart.
func (s *Service) Resume(ctx context.Context, req *tallyv1.ResumeRequest) (*tallyv1.ResumeResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.checkJoin(id, req.GetSamples(), req.GetFeatures(), req.GetIdentityKey()); err != nil {
		return nil, s.refuseJoin(ctx, id, "resume", err)
	}
	return s.join(ctx, id, req.GetSamples(), req.GetIdentityKey(), req.GetName(), "client resumed")
}

// refuseEnrol logs a refused enrolment and returns its status.
func (s *Service) refuseEnrol(ctx context.Context, client string, err error) error {
	s.logs.Log(slog.LevelWarn, "enrolment refused", "client", client, "peer", peerAddr(ctx), "reason", err.Error())
	s.tel.Refused(tallyv1.CoordinatorService_Enroll_FullMethodName, refusedReason(err))
	return toStatus(err)
}

// refuseJoin logs a client whose data does not fit the job (checkJoin)
// and returns its status: the client is told, and so is the operator,
// who may have to fix a job file or a client's data.
func (s *Service) refuseJoin(ctx context.Context, client, call string, err error) error {
	s.logs.Log(slog.LevelWarn, "join refused", "client", client, "call", call, "peer", peerAddr(ctx), "reason", err.Error())
	return toStatus(err)
}

// refuseUpload logs and counts an upload the service refused before the
// engine saw it, and returns its status. task is the task's kind, or
// "closed" when the upload names no open task of the client.
func (s *Service) refuseUpload(client, task string, err error) error {
	if errors.Is(err, engine.ErrNoTask) {
		// Usually an honest answer that came after its task closed (a
		// decryption share after the decryption had t), as the driver
		// logs its own.
		s.logs.Log(slog.LevelDebug, "upload for a closed task", "client", client, "reason", err.Error())
	} else {
		s.logs.Log(slog.LevelWarn, "upload refused", "client", client, "task", task, "reason", err.Error())
	}
	s.tel.Update(task, telemetry.OutcomeRejected, refusal(err))
	return toStatus(err)
}

// openStream claims client's one upload stream of method, or returns
// ErrBusy; release gives it back.
func (s *Service) openStream(client, method string) (release func(), err error) {
	key := client + "\x00" + method
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams[key] {
		return nil, fmt.Errorf("%w: client %s, %s", ErrBusy, client, method)
	}
	s.streams[key] = true
	return func() {
		s.mu.Lock()
		delete(s.streams, key)
		s.mu.Unlock()
	}, nil
}

// uploadTask returns client's open task that taskID names, checked before
// a byte of the upload is buffered: a stream for no open task of the
// client (none is open, the client is not selected, or it has answered
// already) is refused at its header. protocol says whether the upload
// carries committee shares (SubmitShares) rather than an update.
func (s *Service) uploadTask(client, taskID string, protocol bool) (*engine.Task, error) {
	t, _, _ := s.driver.pending(client)
	if t == nil || t.ID != taskID {
		return nil, s.closedFor(client, taskID, " is not an open task of client "+client)
	}
	switch takesUpdates := t.Kind == engine.TaskTrain || t.Kind == engine.TaskMoments; {
	case takesUpdates && protocol:
		return nil, fmt.Errorf("%w: task %s takes model updates, not protocol shares", engine.ErrNoTask, t.ID)
	case !takesUpdates && !protocol:
		return nil, fmt.Errorf("%w: task %s takes protocol shares, not model updates", engine.ErrNoTask, t.ID)
	}
	return t, nil
}

// checkJoin checks what a client announces about its data against the job.
func (s *Service) checkJoin(id string, samples int64, features int32, identityKey []byte) error {
	if int(features) != s.job.Data.Features {
		return fmt.Errorf("%w: client %s has %d features, the job expects %d", ErrBadSchema, id, features, s.job.Data.Features)
	}
	if samples < 1 {
		return fmt.Errorf("%w: client %s has no training rows", ErrBadSchema, id)
	}
	if s.job.Secure() && len(identityKey) != 32 {
		return fmt.Errorf("%w: client %s sent a %d-byte identity key, secure aggregation needs its 32-byte X25519 public key", ErrBadSchema, id, len(identityKey))
	}
	return nil
}

// join tells the engine that client id is here, with its data size and
// identity key.
func (s *Service) join(ctx context.Context, id string, samples int64, identityKey []byte, name, msg string) (*tallyv1.ResumeResponse, error) {
	// After the job ended the driver no longer takes events, but a client
	// that joins then (it restarted) must still be answered, to learn from
	// its next poll that the job is done.
	// The key the client's calls are verified with is the identity key its
	// committee's signatures are checked against when no manifest pins it.
	s.mu.Lock()
	signing := s.keys[id]
	s.mu.Unlock()
	if _, err := s.driver.Step(ctx, engine.EvJoin{Client: id, Samples: samples, IdentityKey: identityKey, SigningKey: signing}); err != nil && !errors.Is(err, ErrStopped) && !errors.Is(err, ErrEnded) {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	s.joined[id] = true
	s.mu.Unlock()
	s.log.Info(msg, "client", id, "samples", samples, "name", name)
	resp := &tallyv1.ResumeResponse{ClientId: id, Job: s.spec}
	if s.receipts != nil {
		resp.ReceiptPublicKey = s.receipts.PublicKey()
	}
	return resp, nil
}

// NextTask implements CoordinatorService as a long poll.
func (s *Service) NextTask(ctx context.Context, req *tallyv1.NextTaskRequest) (*tallyv1.NextTaskResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.driver.Step(ctx, engine.EvPoll{Client: id}); err != nil && !errors.Is(err, ErrStopped) && !errors.Is(err, ErrEnded) {
		return nil, toStatus(err)
	}
	wait := DefaultPollWait
	if w := req.GetWaitMs(); w > 0 && time.Duration(w)*time.Millisecond < wait {
		wait = time.Duration(w) * time.Millisecond
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	s.tel.Polling(1)
	defer s.tel.Polling(-1)
	waited := false
	for {
		task, done, changed := s.driver.pending(id)
		switch {
		case done != nil:
			s.mu.Lock()
			if !s.told[id] {
				s.told[id] = true
				close(s.tellCh)
				s.tellCh = make(chan struct{})
			}
			s.mu.Unlock()
			dt := &tallyv1.DoneTask{Reason: done.Reason, FinalRound: int32(done.FinalRound)}
			// The last receipts ride on the answer: the server may stop
			// right after every client has been told.
			if rr, err := s.receiptsJSON(id, req.GetReceiptsAfter()); err == nil {
				dt.Receipts = rr
			}
			// And the transcript entries they name, within a budget.
			if ents := s.driver.transcriptAfter(req.GetTranscriptAfter()); entriesSize(ents) <= doneTranscriptBytes {
				dt.TranscriptEntries = ents
			}
			return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Done{Done: dt}}, nil
		case task != nil:
			if waited {
				// The task came during the long poll, after the poll the
				// engine saw: it learns now that the client took it (and
				// counts the client at work on it, not gone, until it
				// answers or the task's deadline passes).
				if _, err := s.driver.Step(ctx, engine.EvPoll{Client: id}); err != nil && !errors.Is(err, ErrStopped) && !errors.Is(err, ErrEnded) {
					return nil, toStatus(err)
				}
			}
			return s.taskMessage(task, id), nil
		}
		select {
		case <-changed:
			waited = true
		case <-timer.C:
			return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Wait{Wait: &tallyv1.WaitTask{Reason: "no task for this client yet"}}}, nil
		case <-ctx.Done():
			// The client's connection closed under its long poll: it
			// stopped or crashed (a SIGKILL closes its sockets at once).
			// The engine should know before it asks it for anything.
			_, _ = s.driver.Step(context.WithoutCancel(ctx), engine.EvLeft{Client: id})
			return nil, toStatus(ctx.Err())
		}
	}
}

func (s *Service) taskMessage(t *engine.Task, client string) *tallyv1.NextTaskResponse {
	var keyID []byte
	if t.Encrypted() {
		keyID = t.KeyID[:]
	}
	switch t.Kind {
	case engine.TaskMoments:
		return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Moments{Moments: &tallyv1.MomentsTask{TaskId: t.ID, KeyId: keyID, Round: int32(t.Round), Attempt: int32(t.Attempt)}}}
	case engine.TaskKeyGen:
		return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Keygen{Keygen: &tallyv1.KeyGenTask{TaskId: t.ID, Instance: t.Blob}}}
	case engine.TaskReveal:
		// Commitments are small (under 250 bytes each): they ride on the task.
		return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Reveal{Reveal: &tallyv1.RevealTask{TaskId: t.ID, Instance: t.Blob, Commitments: t.Commitments}}}
	case engine.TaskThreshold:
		tt := &tallyv1.ThresholdTask{TaskId: t.ID}
		if sealedBytes(t.Sealed[client]) <= InlineModelBytes {
			tt.Sealed = t.Sealed[client]
		}
		return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Threshold{Threshold: tt}}
	case engine.TaskDecrypt:
		dt := &tallyv1.DecryptTask{TaskId: t.ID, Request: t.Blob, Blocks: int32(t.NumCiphertexts()), Coefficient: t.Coefficient, TranscriptEntries: t.Transcript[client]}
		if len(t.Batch) > 0 {
			// A batch of influence scalars: the requests ride on the task,
			// their ciphertexts and vectors are downloads.
			dt.Request, dt.Blocks, dt.CoefficientBatchVersion = nil, 0, aggregation.CoefficientBatchVersion
			for _, r := range t.Batch {
				dt.CoefficientRequests = append(dt.CoefficientRequests, &tallyv1.CoefficientRequest{Request: r.Request, Client: r.Client, Gradient: r.Gradient[:], Ciphertext: r.Ciphertext})
			}
		}
		return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Decrypt{Decrypt: dt}}
	}
	tt := &tallyv1.TrainTask{Round: int32(t.Round), Attempt: int32(t.Attempt), NumParams: int32(len(t.Params)), TaskId: t.ID, KeyId: keyID}
	if len(t.Params)*8 <= InlineModelBytes {
		tt.Params = t.Params
	}
	if sc := s.driver.engineScaler(); sc != nil {
		tt.Scaler = &tallyv1.Scaler{Mean: sc.Mean, Std: sc.Std}
	}
	// A train task closes RoundTimeout after it opened (engine): a client
	// (or its external trainer, model.BeginTask) can stop in time.
	s.driver.mu.RLock()
	if v := s.driver.view; v.task != nil && v.task.ID == t.ID && !v.opened.IsZero() {
		tt.DeadlineUnixMs = v.opened.Add(time.Duration(s.job.RoundTimeout)).UnixMilli()
	}
	s.driver.mu.RUnlock()
	return &tallyv1.NextTaskResponse{Task: &tallyv1.NextTaskResponse_Train{Train: tt}}
}

// sealedBytes is the size of the shares sealed for one member. Each is a
// secret-key polynomial (LogN 14, two Q primes and one P: about 393 KiB),
// so a committee of more than ten members exceeds MaxMessageBytes in one
// ThresholdTask; measured at 16 members, 5.9 MB. Shares too large to send
// with the task, as models are (InlineModelBytes), are left out of it and
// the member downloads each as "sealed/<sender>".
func sealedBytes(m map[string][]byte) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

// SubmitUpdate implements CoordinatorService: it reassembles the chunks,
// checks the digest, and hands the update to the engine. Everything the
// header says is checked against the client's open task before a byte of
// the payload is kept: the task is open and the client selected for it,
// the encoding is the job's, and the length is the task's; the payload
// buffer then grows as bytes arrive, up to that length. One stream per
// client is read at a time (openStream). An announced length used to size
// the buffer outright, before any of these checks: four calls announcing
// 2^27 values took a coordinator from 48 MB to 2.1 GB (issue 11).
func (s *Service) SubmitUpdate(stream tallyv1.CoordinatorService_SubmitUpdateServer) error {
	id, err := caller(stream.Context())
	if err != nil {
		return toStatus(err)
	}
	done, err := s.openStream(id, tallyv1.CoordinatorService_SubmitUpdate_FullMethodName)
	if err != nil {
		return s.refuseUpload(id, "closed", err)
	}
	defer done()
	first, slot, err := s.uploads.recv(stream)
	if err == io.EOF {
		return s.refuseUpload(id, "closed", fmt.Errorf("%w: client %s closed its stream before sending a header", ErrBadEncoding, id))
	}
	if err != nil {
		return toStatus(err)
	}
	h := first.GetHeader()
	if h == nil {
		slot.release()
		return s.refuseUpload(id, "closed", fmt.Errorf("%w: the first chunk of client %s carries no header", ErrBadEncoding, id))
	}
	task, err := s.uploadTask(id, h.GetTaskId(), false)
	if err != nil {
		slot.release()
		return s.refuseUpload(id, "closed", err)
	}
	// A decline carries a reason, not an update: it is checked against the
	// open task like an upload, and before the encodings of updates are.
	if h.GetEncoding() == EncodingDecline {
		slot.release()
		return s.submitDecline(stream, id, h, first.GetData())
	}
	kind := task.Kind.String()
	switch {
	case h.GetEncoding() == "ckks" && task.Encrypted():
		return s.submitEncrypted(stream, id, h, task, first.GetData(), slot)
	case h.GetEncoding() == "ckks":
		slot.release()
		return s.refuseUpload(id, kind, fmt.Errorf("%w: this job takes plaintext updates (\"f64le\"), client %s sent \"ckks\"", ErrBadEncoding, id))
	case h.GetEncoding() != "f64le":
		slot.release()
		return s.refuseUpload(id, kind, fmt.Errorf("%w: encoding %q, want \"f64le\" or \"ckks\"", ErrBadEncoding, h.GetEncoding()))
	case task.Encrypted():
		slot.release()
		return s.refuseUpload(id, kind, fmt.Errorf("%w: this job expects encrypted updates (\"ckks\"), client %s sent \"f64le\"", engine.ErrBadUpdate, id))
	case h.GetLength() != int64(task.Length):
		slot.release()
		return s.refuseUpload(id, kind, fmt.Errorf("%w: client %s announced %d values, task %s takes %d", engine.ErrWrongLength, id, h.GetLength(), task.ID, task.Length))
	}
	// A plaintext update is reassembled whole (the engine averages whole
	// vectors), so the gate bounds only how many messages are being read.
	slot.release()
	want := task.Length * 8
	var buf []byte
	appendData := func(data []byte) error {
		if len(data) > want-len(buf) {
			return fmt.Errorf("%w: client %s sent more than the %d bytes the header announced", ErrBadEncoding, id, want)
		}
		if buf == nil {
			buf = make([]byte, 0, min(want, max(len(data), ChunkBytes)))
		}
		buf = append(buf, data...)
		return nil
	}
	if err := appendData(first.GetData()); err != nil {
		return s.refuseUpload(id, kind, err)
	}
	for {
		msg, slot, err := s.uploads.recv(stream)
		if err == io.EOF {
			break
		}
		if err != nil {
			return toStatus(err)
		}
		err = appendData(msg.GetData())
		slot.release()
		if err != nil {
			return s.refuseUpload(id, kind, err)
		}
	}
	if len(buf) != want {
		return s.refuseUpload(id, kind, fmt.Errorf("%w: client %s sent %d bytes, the header announced %d", ErrBadEncoding, id, len(buf), want))
	}
	digest := sha256.Sum256(buf)
	if subtle.ConstantTimeCompare(digest[:], h.GetDigest()) != 1 {
		return s.refuseUpload(id, kind, fmt.Errorf("%w: payload digest of client %s does not match the header", ErrBadEncoding, id))
	}
	update := make([]float64, h.GetLength())
	for i := range update {
		update[i] = math.Float64frombits(binary.LittleEndian.Uint64(buf[8*i:]))
	}
	acts, err := s.driver.Step(stream.Context(), engine.EvSubmit{Client: id, TaskID: h.GetTaskId(), Samples: h.GetSamples(), Update: update, Digest: digest})
	if err != nil {
		return toStatus(err)
	}
	return replyFor(acts, id, func(r engine.ActReply) error {
		return stream.SendAndClose(&tallyv1.SubmitUpdateResponse{Accepted: true, Duplicate: r.Duplicate})
	})
}

// replyFor finds the engine's answer to client among acts.
func replyFor(acts []engine.Action, client string, ok func(engine.ActReply) error) error {
	for _, a := range acts {
		if r, isReply := a.(engine.ActReply); isReply && r.Client == client {
			if r.Err != nil {
				return toStatus(r.Err)
			}
			return ok(r)
		}
	}
	return toStatus(errors.New("coordinator: the engine did not answer the submission"))
}

// submitEncrypted streams ciphertexts into the task's accumulator as they
// arrive: each block is added and dropped, so the coordinator's memory does
// not grow with the number of clients. A ciphertext that came in one
// message is added straight from it; one split over messages (a client
// with ciphertexts over ChunkBytes, or one that does not align its chunks)
// is reassembled first. A client may resend a whole stream after an
// interruption; blocks already added are skipped. slot holds the first
// message's place at the gate; each later message waits for its own.
func (s *Service) submitEncrypted(stream tallyv1.CoordinatorService_SubmitUpdateServer, id string, h *tallyv1.SubmitHeader, task *engine.Task, first []byte, slot *uploadSlot) error {
	defer func() { slot.release() }()
	kind := task.Kind.String()
	acc := task.AccumulatorFor(id)
	if acc == nil {
		return s.refuseUpload(id, kind, fmt.Errorf("%w: client %s has no accumulator in task %s", engine.ErrNotSelected, id, task.ID))
	}
	blocks := acc.Blocks()
	if h.GetLength() != int64(blocks) {
		return s.refuseUpload(id, kind, fmt.Errorf("%w: client %s announced %d ciphertexts, task %s takes %d", engine.ErrWrongLength, id, h.GetLength(), task.ID, blocks))
	}
	// The signed statement is checked before any ciphertext touches a sum:
	// members decrypt only sums of ciphertexts their clients signed.
	sub, err := s.checkSubmission(id, h, task, blocks)
	if err != nil {
		return s.refuseUpload(id, kind, err)
	}
	digest := sha256.New()
	cts := ciphertextCutter{size: s.job.Params.CiphertextSize()}
	var total int64
	added := 0
	add := func(ct []byte) error {
		if added == blocks {
			return fmt.Errorf("%w: more ciphertexts than the %d announced", ErrBadEncoding, blocks)
		}
		if err := sub.CheckCiphertext(s.job.Params, added, ct); err != nil {
			return fmt.Errorf("%w: client %s ciphertext %d: %w", ErrBadSubmission, id, added, err)
		}
		if err := acc.Add(id, ct); err != nil && !errors.Is(err, aggregation.ErrDuplicate) {
			return fmt.Errorf("%w: ciphertext %d: %v", ErrBadEncoding, added, err)
		}
		if err := task.Submissions.AddBlock(id, added, ct); err != nil {
			return fmt.Errorf("%w: client %s ciphertext %d: %w", ErrBadSubmission, id, added, err)
		}
		if task.Influence != nil {
			if err := task.Influence.Add(id, ct); err != nil && !errors.Is(err, aggregation.ErrDuplicate) {
				return fmt.Errorf("%w: ciphertext %d: %v", ErrBadEncoding, added, err)
			}
		}
		if task.Kept != nil {
			// A failure here is the coordinator's own (its spill file),
			// not the client's: Internal, not InvalidArgument.
			if err := task.Kept.Add(id, added, ct); err != nil {
				return err
			}
		}
		added++
		return nil
	}
	feed := func(data []byte) error {
		digest.Write(data)
		total += int64(len(data))
		return cts.feed(data, add)
	}
	if err := feed(first); err != nil {
		return toStatus(err)
	}
	for {
		slot.release()
		msg, next, err := s.uploads.recv(stream)
		if err == io.EOF {
			break
		}
		if err != nil {
			return toStatus(err)
		}
		slot = next
		if err := feed(msg.GetData()); err != nil {
			return toStatus(err)
		}
	}
	if added != blocks || cts.pending() != 0 {
		return toStatus(fmt.Errorf("%w: %d whole ciphertexts and %d stray bytes received, %d announced", ErrBadEncoding, added, cts.pending(), blocks))
	}
	var sum [32]byte
	copy(sum[:], digest.Sum(nil))
	if subtle.ConstantTimeCompare(sum[:], h.GetDigest()) != 1 {
		return toStatus(fmt.Errorf("%w: payload digest does not match the header", ErrBadEncoding))
	}
	acts, err := s.driver.Step(stream.Context(), engine.EvSubmit{Client: id, TaskID: h.GetTaskId(), Samples: h.GetSamples(), Digest: sum, Encrypted: true, Bytes: total})
	if err != nil {
		return toStatus(err)
	}
	return replyFor(acts, id, func(r engine.ActReply) error {
		return stream.SendAndClose(&tallyv1.SubmitUpdateResponse{Accepted: true, Duplicate: r.Duplicate})
	})
}

// checkSubmission verifies the signed submission in an encrypted upload's
// header against client id's enrolled key and the task, and records it in
// the task's store (a resent upload must carry the same one).
func (s *Service) checkSubmission(id string, h *tallyv1.SubmitHeader, task *engine.Task, blocks int) (*aggregation.Submission, error) {
	sub, err := s.verifySubmission(id, h, task, blocks)
	if err != nil {
		return nil, err
	}
	if err := task.Submissions.Put(id, h.GetSubmission(), sub); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSubmission, err)
	}
	return sub, nil
}

// verifySubmission is checkSubmission without recording: the statement in
// h verifies under client id's enrolled key and names the task (an edge's
// partial is checked for every client before anything is kept).
func (s *Service) verifySubmission(id string, h *tallyv1.SubmitHeader, task *engine.Task, blocks int) (*aggregation.Submission, error) {
	if task.Submissions == nil {
		return nil, fmt.Errorf("%w: task %s keeps no submissions", ErrBadSubmission, task.ID)
	}
	raw := h.GetSubmission()
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: client %s sent no signed submission with its ciphertexts for task %s", ErrBadSubmission, id, task.ID)
	}
	sub := new(aggregation.Submission)
	if err := sub.UnmarshalBinary(raw); err != nil {
		return nil, fmt.Errorf("%w: client %s: %w", ErrBadSubmission, id, err)
	}
	s.mu.Lock()
	key := s.keys[id]
	s.mu.Unlock()
	if err := sub.Verify(key); err != nil {
		return nil, fmt.Errorf("%w: client %s: not signed by its enrolled key: %w", ErrBadSubmission, id, err)
	}
	switch {
	case sub.Client != id, sub.Job != s.job.ID, sub.Round != uint64(task.Round), sub.Attempt != uint64(task.Attempt):
		return nil, fmt.Errorf("%w: client %s signed (client %q, job %q, round %d, attempt %d) for task %s (job %q, round %d, attempt %d)",
			ErrBadSubmission, id, sub.Client, sub.Job, sub.Round, sub.Attempt, task.ID, s.job.ID, task.Round, task.Attempt)
	case sub.Key != task.KeyID:
		return nil, fmt.Errorf("%w: client %s signed ciphertexts under key %x, task %s takes key %x", ErrBadSubmission, id, sub.Key[:8], task.ID, task.KeyID[:8])
	case sub.Blocks() != blocks:
		return nil, fmt.Errorf("%w: client %s signed %d ciphertexts, task %s takes %d", ErrBadSubmission, id, sub.Blocks(), task.ID, blocks)
	case h.GetSamples() < 0 || sub.Weight != uint64(h.GetSamples()):
		return nil, fmt.Errorf("%w: client %s signed weight %d, its header says %d samples", ErrBadSubmission, id, sub.Weight, h.GetSamples())
	}
	return sub, nil
}

// ciphertextCutter cuts a stream of messages into ciphertexts of size
// bytes. A message that is exactly one ciphertext, starting where the last
// one ended, is handed on as it is: the usual case costs no copy. Pieces
// of ciphertexts split over messages are gathered into a buffer, allocated
// only when a split one comes.
type ciphertextCutter struct {
	size int
	buf  []byte
}

// feed calls add with every ciphertext data completes, in order; add must
// not keep its argument, which may be reused.
func (c *ciphertextCutter) feed(data []byte, add func([]byte) error) error {
	if len(c.buf) == 0 && len(data) == c.size {
		return add(data)
	}
	if c.buf == nil {
		c.buf = make([]byte, 0, c.size)
	}
	for len(data) > 0 {
		n := min(c.size-len(c.buf), len(data))
		c.buf = append(c.buf, data[:n]...)
		data = data[n:]
		if len(c.buf) < c.size {
			continue
		}
		if err := add(c.buf); err != nil {
			return err
		}
		c.buf = c.buf[:0]
	}
	return nil
}

// pending is the number of bytes of an incomplete ciphertext held.
func (c *ciphertextCutter) pending() int { return len(c.buf) }

// maxSharesBytes bounds one SubmitShares stream: a committee of 64 members
// at LogN 16 stays well below it. Only a member of the task's committee
// gets this far (SubmitShares checks the sender at the header), one
// stream per member at a time.
const maxSharesBytes = 256 << 20

// SubmitShares implements CoordinatorService for committee members. The
// sender and the task are checked at the header, before any part is
// buffered: a stream of a client that is not a member of the open
// protocol task's committee is refused there, and each member has one
// stream at a time (openStream).
func (s *Service) SubmitShares(stream tallyv1.CoordinatorService_SubmitSharesServer) error {
	id, err := caller(stream.Context())
	if err != nil {
		return toStatus(err)
	}
	done, err := s.openStream(id, tallyv1.CoordinatorService_SubmitShares_FullMethodName)
	if err != nil {
		return s.refuseUpload(id, "closed", err)
	}
	defer done()
	first, err := stream.Recv()
	if err == io.EOF {
		return s.refuseUpload(id, "closed", fmt.Errorf("%w: client %s closed its stream before sending a header", ErrBadEncoding, id))
	}
	if err != nil {
		return toStatus(err)
	}
	h := first.GetHeader()
	if h == nil {
		return s.refuseUpload(id, "closed", fmt.Errorf("%w: the first message of client %s carries no header", ErrBadEncoding, id))
	}
	if _, err := s.uploadTask(id, h.GetTaskId(), true); err != nil {
		return s.refuseUpload(id, "closed", err)
	}
	parts := map[string][]byte{}
	var total int
	add := func(m *tallyv1.SubmitSharesRequest) error {
		if m.GetPart() == "" {
			return fmt.Errorf("%w: a chunk without a part name", ErrBadEncoding)
		}
		total += len(m.GetData())
		if total > maxSharesBytes {
			return fmt.Errorf("%w: more than %d bytes of shares", ErrBadEncoding, maxSharesBytes)
		}
		parts[m.GetPart()] = append(parts[m.GetPart()], m.GetData()...)
		return nil
	}
	if err := add(first); err != nil {
		return toStatus(err)
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return toStatus(err)
		}
		if err := add(msg); err != nil {
			return toStatus(err)
		}
	}
	acts, err := s.driver.Step(stream.Context(), engine.EvShares{Client: id, TaskID: h.GetTaskId(), Parts: parts})
	if err != nil {
		return toStatus(err)
	}
	return replyFor(acts, id, func(engine.ActReply) error {
		return stream.SendAndClose(&tallyv1.SubmitSharesResponse{Accepted: true})
	})
}

// Download implements CoordinatorService: the collective public key and
// the members' signatures of it ("public-key-certificate"), a member's
// revealed public-key share ("public-key-share/<member>") or a Shamir share
// sealed for the caller ("sealed/<sender>") in threshold tasks, or a block
// of the aggregate a decryption task names.
func (s *Service) Download(req *tallyv1.DownloadRequest, stream tallyv1.CoordinatorService_DownloadServer) error {
	id, err := caller(stream.Context())
	if err != nil {
		return toStatus(err)
	}
	t, _, _ := s.driver.pending(id)
	if t == nil || t.ID != req.GetTaskId() {
		return toStatus(s.closedFor(id, req.GetTaskId(), ""))
	}
	var data []byte
	switch name := req.GetName(); {
	case name == "public-key" && t.PublicKey != nil && t.Encrypted():
		data = t.PublicKey
	case name == "public-key-certificate" && t.KeyCertificate != nil && t.Encrypted():
		data = t.KeyCertificate
	case strings.HasPrefix(name, "public-key-share/") && t.Kind == engine.TaskThreshold:
		v, ok := t.PublicKeyShares[strings.TrimPrefix(name, "public-key-share/")]
		if !ok {
			return toStatus(s.absent(id, t, "task %s has no %q", t.ID, name))
		}
		data = v
	case strings.HasPrefix(name, "sealed/") && t.Kind == engine.TaskThreshold:
		v, ok := t.Sealed[id][strings.TrimPrefix(name, "sealed/")]
		if !ok {
			return toStatus(s.absent(id, t, "task %s has no %q for %s", t.ID, name, id))
		}
		data = v
	case strings.HasPrefix(name, "ciphertext/") && t.Kind == engine.TaskDecrypt:
		b, err := strconv.Atoi(strings.TrimPrefix(name, "ciphertext/"))
		if err != nil || b < 0 || b >= t.NumCiphertexts() {
			return toStatus(s.absent(id, t, "task %s has no %q", t.ID, name))
		}
		// A coefficient task's products are read back from the round's
		// spill file, one download at a time, into a reused buffer.
		buf := productBuffers.Get().(*[]byte)
		defer productBuffers.Put(buf)
		ct, err := t.Ciphertext(b, *buf)
		if err != nil {
			return toStatus(s.absent(id, t, "task %s has no %q: %w", t.ID, name, err))
		}
		if t.Coefficient {
			*buf = ct
		}
		data = ct
	case strings.HasPrefix(name, "submission/") && t.Kind == engine.TaskDecrypt && t.Submissions != nil:
		// What members check a sum against: each contributor's signed
		// statement and the c1 of its ciphertexts.
		raw, _, ok := t.Submissions.Submission(strings.TrimPrefix(name, "submission/"))
		if !ok {
			return toStatus(s.absent(id, t, "task %s has no %q", t.ID, name))
		}
		data = raw
	case strings.HasPrefix(name, "contribution/") && t.Kind == engine.TaskDecrypt && t.Submissions != nil:
		rest := strings.TrimPrefix(name, "contribution/")
		i := strings.LastIndexByte(rest, '/')
		b, err := strconv.Atoi(rest[i+1:])
		if i < 0 || err != nil {
			return toStatus(s.absent(id, t, "task %s has no %q", t.ID, name))
		}
		buf := c1Buffers.Get().(*[]byte)
		defer c1Buffers.Put(buf)
		c1, err := t.Submissions.ReadContribution(rest[:i], b, *buf)
		if err != nil {
			return toStatus(s.absent(id, t, "task %s has no %q: %w", t.ID, name, err))
		}
		*buf, data = c1, c1
	case strings.HasPrefix(name, "contributions/") && t.Kind == engine.TaskDecrypt && t.Submissions != nil:
		client, first, count, err := contributions(t, strings.TrimPrefix(name, "contributions/"))
		if err != nil {
			return toStatus(s.absent(id, t, "task %s has no %q: %v", t.ID, name, err))
		}
		// One block is read at a time, into a buffer reused across
		// downloads: the store may keep them in a file (spillStores), and
		// a member's call asks for eight.
		buf := c1Buffers.Get().(*[]byte)
		defer c1Buffers.Put(buf)
		if err := sendParts(stream, [][]byte{binary.BigEndian.AppendUint32(nil, uint32(count))}); err != nil {
			return err
		}
		for b := first; b < first+count; b++ {
			c1, err := t.Submissions.ReadContribution(client, b, *buf)
			if err != nil {
				return toStatus(s.absent(id, t, "task %s: block %d of client %q: %w", t.ID, b, client, err))
			}
			*buf = c1
			if err := sendParts(stream, [][]byte{c1}); err != nil {
				return err
			}
		}
		return nil
	case name == "gradient" && t.Kind == engine.TaskDecrypt && t.Gradient != nil:
		data = aggregation.MarshalGradient(t.Gradient)
	case strings.HasPrefix(name, "gradient/") && t.Kind == engine.TaskDecrypt && t.Gradients != nil:
		// A batch's multiplier vectors, by digest.
		var d [32]byte
		raw, err := hex.DecodeString(strings.TrimPrefix(name, "gradient/"))
		if err != nil || len(raw) != len(d) {
			return toStatus(s.absent(id, t, "task %s has no %q", t.ID, name))
		}
		copy(d[:], raw)
		g, ok := t.Gradients[d]
		if !ok {
			return toStatus(s.absent(id, t, "task %s has no %q", t.ID, name))
		}
		data = aggregation.MarshalGradient(g)
	default:
		return toStatus(s.absent(id, t, "task %s has no %q", t.ID, name))
	}
	return sendParts(stream, [][]byte{data})
}

// sendParts streams the concatenation of parts in pieces of at most
// SendChunkBytes, without copying them into one buffer first.
func sendParts(stream tallyv1.CoordinatorService_DownloadServer, parts [][]byte) error {
	for _, data := range parts {
		for off := 0; off < len(data); off += SendChunkBytes {
			if err := stream.Send(&tallyv1.DownloadResponse{Data: data[off:min(off+SendChunkBytes, len(data))]}); err != nil {
				return err
			}
		}
	}
	return nil
}

// contributions parses "contributions/<client>/<first>/<count>", which is
// answered with the c1 of blocks first … first+count−1 of client's upload
// (fewer when the upload has fewer), as a big-endian uint32 number of
// blocks followed by their rows, all of the same length, and returns the
// blocks to send. It is "contribution/<client>/<block>"
// for many blocks in one call: each call costs the coordinator a
// signature verification and a stream, which made the per-block form a
// third of its CPU per client in BenchmarkScale (16 members × every
// contributor × every block). The member checks each block against its
// client's signed digest as before.
func contributions(t *engine.Task, rest string) (client string, first, count int, err error) {
	f := strings.Split(rest, "/")
	if len(f) < 3 {
		return "", 0, 0, errors.New("want contributions/<client>/<first>/<count>")
	}
	client = strings.Join(f[:len(f)-2], "/")
	first, err1 := strconv.Atoi(f[len(f)-2])
	count, err2 := strconv.Atoi(f[len(f)-1])
	if err1 != nil || err2 != nil || first < 0 || count < 1 {
		return "", 0, 0, errors.New("first and count must be integers, first ≥ 0 and count ≥ 1")
	}
	_, sub, ok := t.Submissions.Submission(client)
	if !ok {
		return "", 0, 0, fmt.Errorf("no submission of client %q", client)
	}
	if first >= sub.Blocks() {
		return "", 0, 0, fmt.Errorf("block %d of client %q's %d", first, client, sub.Blocks())
	}
	count = min(count, sub.Blocks()-first)
	// Every block asked for must have been received before any is sent:
	// the answer is all of them or an error.
	for b := first; b < first+count; b++ {
		if !t.Submissions.Kept(client, b) {
			return "", 0, 0, fmt.Errorf("block %d of client %q was not received", b, client)
		}
	}
	return client, first, count, nil
}

// c1Buffers holds the buffers downloads read spilled c₁ rows into.
var c1Buffers = sync.Pool{New: func() any { return new([]byte) }}

// productBuffers holds the buffers downloads read spilled influence
// ciphertexts into (786 KB at LogN 14, several c₁ rows), kept apart so
// that c₁ downloads do not carry buffers of that size.
var productBuffers = sync.Pool{New: func() any { return new([]byte) }}

// DownloadModel implements CoordinatorService for models too large to
// inline, in SendChunkBytes pieces so that concurrent downloads hold
// little each.
func (s *Service) DownloadModel(req *tallyv1.DownloadModelRequest, stream tallyv1.CoordinatorService_DownloadModelServer) error {
	id, err := caller(stream.Context())
	if err != nil {
		return toStatus(err)
	}
	t, _, _ := s.driver.pending(id)
	if t == nil || t.ID != req.GetTaskId() {
		return toStatus(s.closedFor(id, req.GetTaskId(), ""))
	}
	if t.Kind != engine.TaskTrain {
		return toStatus(fmt.Errorf("%w: task %s has no model", engine.ErrNoTask, t.ID))
	}
	const per = SendChunkBytes / 8
	for off := 0; off < len(t.Params); off += per {
		end := min(off+per, len(t.Params))
		if err := stream.Send(&tallyv1.DownloadModelResponse{Offset: int64(off), Values: t.Params[off:end], Total: int64(len(t.Params))}); err != nil {
			return err
		}
	}
	return nil
}

// JobStatus implements CoordinatorService.
func (s *Service) JobStatus(ctx context.Context, _ *tallyv1.JobStatusRequest) (*tallyv1.JobStatusResponse, error) {
	st := s.driver.Status()
	resp := &tallyv1.JobStatusResponse{JobId: s.job.ID, Phase: st.Phase.String(), Round: int32(st.Round), Rounds: int32(s.job.Rounds)}
	contributed := map[string]int32{}
	for _, r := range st.History {
		if r.Failed {
			continue
		}
		for _, c := range r.Contributors {
			contributed[c]++
		}
		resp.History = append(resp.History, &tallyv1.RoundMetrics{Round: int32(r.Round), ValLoss: r.ValLoss, ValAccuracy: r.ValAccuracy, Contributors: int32(len(r.Contributors)), WeightFlags: r.WeightFlags})
	}
	if s.receipts != nil {
		resp.ReceiptPublicKey = s.receipts.PublicKey()
	}
	if s.job.DP != nil {
		resp.DpDelta = s.job.DP.Delta
	}
	for _, id := range s.job.ClientIDs() {
		if n, ok := st.Clients[id]; ok {
			cs := &tallyv1.ClientStatus{ClientId: id, Samples: n, RoundsContributed: contributed[id]}
			if s.job.DP != nil {
				eps, err := s.job.DP.EpsilonAfter(int(contributed[id]))
				if err != nil {
					return nil, toStatus(fmt.Errorf("coordinator: client %s: dp accounting: %w", id, err))
				}
				cs.DpEpsilon = eps
			}
			resp.Clients = append(resp.Clients, cs)
		}
	}
	return resp, nil
}

// Receipts implements CoordinatorService.
func (s *Service) Receipts(ctx context.Context, req *tallyv1.ReceiptsRequest) (*tallyv1.ReceiptsResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	rr, err := s.receiptsJSON(id, req.GetAfterSeq())
	if err != nil {
		return nil, toStatus(err)
	}
	return &tallyv1.ReceiptsResponse{Receipts: rr, TranscriptEntries: s.driver.transcriptAfter(req.GetTranscriptAfter())}, nil
}

func (s *Service) receiptsJSON(client string, after uint64) ([][]byte, error) {
	if s.receipts == nil {
		return nil, nil
	}
	rs, err := s.receipts.Receipts(client, after)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(rs))
	for _, r := range rs {
		b, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// doneTranscriptBytes bounds the transcript entries a DoneTask carries,
// well inside the 4 MiB message: a client that held none of a long job's
// transcript fetches it with Receipts instead.
const doneTranscriptBytes = 2 << 20

func entriesSize(ents [][]byte) int {
	n := 0
	for _, e := range ents {
		n += len(e)
	}
	return n
}
