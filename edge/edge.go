package edge

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/internal/auth"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// Errors of an edge.
var (
	// ErrRefused is an upload the edge would not add to its partial: its
	// signed statement does not verify under the client's enrolled key or
	// does not cover its ciphertexts, or the ciphertexts are malformed.
	ErrRefused = errors.New("edge: upload refused")
	// ErrNotCounted is a client the coordinator did not count after the
	// edge forwarded its partial.
	ErrNotCounted = errors.New("edge: the coordinator did not count the upload")
	// ErrNotListed is the coordinator's refusal of the edge's own calls:
	// the job does not list the edge's id with its key (auth.ReasonNotEdge).
	// Such an edge only relays: it sums nothing, and no retry mends it.
	ErrNotListed = errors.New("edge: the coordinator does not list this edge in its job")
)

// service is the coordinator service's name, whose methods an edge relays.
var service = tallyv1.CoordinatorService_ServiceDesc.ServiceName

// DefaultMargin is how long before a task's deadline an edge forwards the
// uploads it holds when some of its clients have not sent theirs.
const DefaultMargin = 2 * time.Second

// chunk bounds one message of an EdgeSubmit stream (gRPC caps messages at
// 4 MiB).
const chunk = 1 << 20

// DefaultUploadSlots is how many client uploads an edge reads, checks and
// sums at once, as the coordinator's DefaultUploadSlots: each is held
// whole (4.6 MB, 7 ciphertexts, at LogN 14 and 100k parameters) until
// it is summed.
const DefaultUploadSlots = 8

// DefaultPartialBytes bounds what one partial holds of its clients before
// it is forwarded: each client's c₁ rows and influence product (the
// partial sum itself is one ciphertext per block, whatever the number of
// clients). At LogN 14 and 100k parameters a client weighs 3.5 MB, so a
// partial carries 19 clients; the coordinator, which reads a whole
// partial before it keeps any of it, holds as much per partial in flight.
const DefaultPartialBytes = 64 << 20

// Config configures an edge.
type Config struct {
	// Upstream is the connection to the coordinator. Relayed calls carry
	// the clients' own signatures; the edge's own calls (EdgeTask,
	// EdgeSubmit) are signed with Key under ID, which the job lists.
	Upstream grpc.ClientConnInterface
	ID       string
	Key      ed25519.PrivateKey
	Job      string
	// Margin is DefaultMargin when zero.
	Margin time.Duration
	// UploadSlots is DefaultUploadSlots when zero, PartialBytes
	// DefaultPartialBytes: together they bound the client bytes an edge
	// holds (Edge.Held).
	UploadSlots  int
	PartialBytes int64
	Log          *slog.Logger
}

// Edge is a keyless edge aggregator: a gRPC front that clients join as
// they join a coordinator.
type Edge struct {
	cfg    Config
	signed tallyv1.CoordinatorServiceClient

	mu     sync.Mutex
	tasks  map[string]*task
	params map[string]aggregation.Parameters
	// seen is when each client last called through this edge: the
	// selected clients seen lately are the ones a partial waits for.
	seen map[string]time.Time
	// waiting is closed when the partial holding the client's upload has
	// been forwarded (or given up): its NextTask calls wait for it.
	waiting map[string]chan struct{}

	// health is the coordinator's last health answer (health.go).
	health upstreamHealth

	// Partials and Summed count the partials forwarded and the client
	// uploads they carried; Relayed the uploads relayed as they were.
	Partials, Summed, Relayed atomic.Int64

	// held is the bytes of client uploads the edge holds in memory, peak
	// the most it held at once (Held, PeakHeld).
	held, peak atomic.Int64
	// slots admits the uploads read at once; sending is taken by the one
	// partial being forwarded (a partial that fills meanwhile waits, and
	// with it the uploads of its task).
	slots, sending chan struct{}

	// notListed is closed, once, when the coordinator refuses the edge's
	// own call as ErrNotListed; notListedErr is that refusal.
	notListed     chan struct{}
	notListedOnce sync.Once
	notListedErr  error
}

// Standing asks the coordinator whether its job lists this edge (an
// EdgeTask call for no task, authenticated as every edge call is). It is
// nil if it does, an error wrapping ErrNotListed and the coordinator's
// reason if the coordinator says it does not, and the call's own error
// otherwise (the coordinator is not reachable: ask again later).
func (e *Edge) Standing(ctx context.Context, opts ...grpc.CallOption) error {
	_, err := e.signed.EdgeTask(ctx, &tallyv1.EdgeTaskRequest{}, opts...)
	return e.refused(err)
}

// NotListed is closed once the coordinator has refused one of the edge's
// own calls as ErrNotListed (Standing, or asking how to aggregate a task,
// or forwarding a partial); NotListedErr is then that refusal.
func (e *Edge) NotListed() <-chan struct{} { return e.notListed }

// NotListedErr is the refusal that closed NotListed, nil before.
func (e *Edge) NotListedErr() error {
	select {
	case <-e.notListed:
		return e.notListedErr
	default:
		return nil
	}
}

// refused is err, or if err is the coordinator's refusal of this edge as
// not listed, ErrNotListed with the coordinator's reason, logged at ERROR
// the first time and closing NotListed.
func (e *Edge) refused(err error) error {
	if err == nil || !auth.HasReason(err, auth.ReasonNotEdge) {
		return err
	}
	cause := err
	err = fmt.Errorf("%w: edge %q: %s", ErrNotListed, e.cfg.ID, status.Convert(cause).Message())
	e.notListedOnce.Do(func() {
		e.notListedErr = err
		e.cfg.Log.Error("the coordinator does not list this edge: its id or key is not the job's, and it can only relay", "edge", e.cfg.ID, "reason", status.Convert(cause).Message())
		close(e.notListed)
	})
	return err
}

// hold adds n (negative: releases) to the bytes of client uploads held.
func (e *Edge) hold(n int64) {
	v := e.held.Add(n)
	for {
		p := e.peak.Load()
		if v <= p || e.peak.CompareAndSwap(p, v) {
			return
		}
	}
}

// Held is the bytes of client uploads the edge holds in memory now: the
// uploads being read and checked, and what waits in partials not yet
// forwarded. PeakHeld is the most it held at once.
func (e *Edge) Held() int64     { return e.held.Load() }
func (e *Edge) PeakHeld() int64 { return e.peak.Load() }

// New returns an edge relaying to cfg.Upstream.
func New(cfg Config) (*Edge, error) {
	if cfg.Upstream == nil || cfg.ID == "" || len(cfg.Key) != ed25519.PrivateKeySize || cfg.Job == "" {
		return nil, fmt.Errorf("edge: an upstream connection, an id, an Ed25519 key and the job id are required")
	}
	if cfg.Margin <= 0 {
		cfg.Margin = DefaultMargin
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.UploadSlots <= 0 {
		cfg.UploadSlots = DefaultUploadSlots
	}
	if cfg.PartialBytes <= 0 {
		cfg.PartialBytes = DefaultPartialBytes
	}
	key := cfg.Key
	conn := auth.Conn(cfg.Upstream, func() (ed25519.PrivateKey, string, string) { return key, cfg.Job, cfg.ID }, nil)
	return &Edge{cfg: cfg, signed: tallyv1.NewCoordinatorServiceClient(conn), tasks: map[string]*task{}, params: map[string]aggregation.Parameters{}, seen: map[string]time.Time{}, waiting: map[string]chan struct{}{},
		slots: make(chan struct{}, cfg.UploadSlots), sending: make(chan struct{}, 1), notListed: make(chan struct{})}, nil
}

// ServerOptions are the options the edge's gRPC server must be built
// with: every coordinator method but SubmitUpdate is relayed byte for byte.
func (e *Edge) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.UnknownServiceHandler(e.relay), grpc.ForceServerCodec(codec{})}
}

// Register registers the edge's own handlers on s, a server built with
// ServerOptions: SubmitUpdate, and the health service for the path
// through the edge (health.go).
func (e *Edge) Register(s *grpc.Server) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: service,
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "SubmitUpdate",
			Handler:       func(_ any, ss grpc.ServerStream) error { return e.submitUpdate(ss) },
			ClientStreams: true,
		}},
		Metadata: "tally/v1/tally.proto",
	}, e)
	healthpb.RegisterHealthServer(s, healthServer{e: e})
}

// frame is a message relayed as it came.
type frame struct{ b []byte }

// codec passes frames through and (un)marshals anything else as protobuf.
type codec struct{}

func (codec) Marshal(v any) ([]byte, error) {
	if f, ok := v.(*frame); ok {
		return f.b, nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("edge: cannot marshal %T", v)
	}
	return proto.Marshal(m)
}

func (codec) Unmarshal(data []byte, v any) error {
	if f, ok := v.(*frame); ok {
		f.b = bytes.Clone(data)
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("edge: cannot unmarshal into %T", v)
	}
	return proto.Unmarshal(data, m)
}

func (codec) Name() string { return "proto" }

// forward copies a client's call signature (and only it) from an incoming
// call to the outgoing one, and says which client it names.
func forward(ctx context.Context) (context.Context, string) {
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range in {
		if strings.HasPrefix(k, "tally-") {
			out[k] = slices.Clone(v)
		}
	}
	client := ""
	if v := in.Get(auth.MDClient); len(v) == 1 {
		client = v[0]
	}
	return metadata.NewOutgoingContext(ctx, out), client
}

// relay handles every call the edge has no handler for: a coordinator
// method is relayed to the coordinator, message for message, under the
// client's own signature; anything else is unimplemented. The edge's own
// methods are not relayed for clients.
func (e *Edge) relay(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok || !strings.HasPrefix(method, "/"+service+"/") || strings.HasPrefix(method, "/"+service+"/Edge") {
		return status.Errorf(codes.Unimplemented, "edge: %s is not relayed", method)
	}
	return e.pipe(ss, method, nil)
}

// pipe relays one call; first, if not nil, is its first message, already
// read.
func (e *Edge) pipe(ss grpc.ServerStream, method string, first proto.Message) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	ctx, client := forward(ctx)
	e.saw(client)
	if method == tallyv1.CoordinatorService_NextTask_FullMethodName {
		e.awaitForwarded(ctx, client)
	}
	cs, err := e.cfg.Upstream.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(codec{}))
	if err != nil {
		return err
	}
	go func() {
		if first != nil {
			if err := cs.SendMsg(first); err != nil {
				return
			}
		}
		for {
			f := new(frame)
			if err := ss.RecvMsg(f); err != nil {
				if err == io.EOF {
					_ = cs.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := cs.SendMsg(f); err != nil {
				return // the upstream's status comes from RecvMsg below
			}
		}
	}()
	for {
		f := new(frame)
		if err := cs.RecvMsg(f); err != nil {
			ss.SetTrailer(cs.Trailer())
			if err == io.EOF {
				return nil
			}
			return err
		}
		if method == tallyv1.CoordinatorService_NextTask_FullMethodName {
			e.observe(client, f.b)
		}
		if err := ss.SendMsg(f); err != nil {
			return err
		}
	}
}

// MaxHold is the longest an edge holds a client's NextTask call while
// the client's upload waits in a partial, well inside the clock skew its
// signature is checked against (auth.DefaultSkew, 2 minutes).
const MaxHold = 30 * time.Second

// awaitForwarded holds a client's poll while its upload waits in a
// partial: until the partial is forwarded, the coordinator, which has not
// counted the client yet, would hand it the same train task again, and
// the client would train, encrypt and upload it again for nothing (a
// duplicate). Nothing else can be handed to it meanwhile: the task stays
// open until the client is counted.
func (e *Edge) awaitForwarded(ctx context.Context, client string) {
	e.mu.Lock()
	ch := e.waiting[client]
	e.mu.Unlock()
	if ch == nil {
		return
	}
	t := time.NewTimer(MaxHold)
	defer t.Stop()
	select {
	case <-ch:
	case <-ctx.Done():
	case <-t.C:
	}
}

// wait marks client's upload as waiting in a partial; the function it
// returns ends the wait.
func (e *Edge) wait(client string) func() {
	ch := make(chan struct{})
	e.mu.Lock()
	e.waiting[client] = ch
	e.mu.Unlock()
	return func() {
		e.mu.Lock()
		if e.waiting[client] == ch {
			delete(e.waiting, client)
		}
		e.mu.Unlock()
		close(ch)
	}
}

// SeenWithin is how recent a client's last call through this edge must be
// for a partial to wait for its upload.
const SeenWithin = time.Minute

func (e *Edge) saw(client string) {
	if client == "" {
		return
	}
	e.mu.Lock()
	e.seen[client] = time.Now()
	e.mu.Unlock()
}

// recent reports which of ids called through this edge lately.
func (e *Edge) recent(ids map[string][]byte) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for id := range ids {
		if at, ok := e.seen[id]; ok && time.Since(at) < SeenWithin {
			out = append(out, id)
		}
	}
	return out
}

// observe notes a train task handed to client through this edge, so that
// the edge knows whose uploads to wait for before it forwards a partial.
func (e *Edge) observe(client string, b []byte) {
	var r tallyv1.NextTaskResponse
	if proto.Unmarshal(b, &r) != nil {
		return
	}
	t := r.GetTrain()
	if t == nil || len(t.GetKeyId()) == 0 || client == "" {
		return
	}
	tk := e.taskFor(t.GetTaskId())
	tk.mu.Lock()
	if !tk.taken[client] {
		tk.expected[client] = true
	}
	if d := t.GetDeadlineUnixMs(); d > 0 {
		tk.deadline = time.UnixMilli(d)
	}
	tk.mu.Unlock()
}

func (e *Edge) taskFor(id string) *task {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.tasks[id]
	if t == nil {
		t = &task{e: e, id: id, expected: map[string]bool{}, taken: map[string]bool{}}
		e.tasks[id] = t
		// Tasks of rounds long gone are dropped: keep the last 16.
		if len(e.tasks) > 16 {
			var oldest *task
			for _, o := range e.tasks {
				if o != t && (oldest == nil || o.created.Before(oldest.created)) {
					oldest = o
				}
			}
			delete(e.tasks, oldest.id)
		}
		t.created = time.Now()
	}
	return t
}

// info asks the coordinator, once per task, how to aggregate it.
func (e *Edge) info(ctx context.Context, t *task) (*tallyv1.EdgeTaskResponse, aggregation.Parameters, error) {
	t.infoMu.Lock()
	defer t.infoMu.Unlock()
	if t.info != nil {
		return t.info, t.params, nil
	}
	r, err := e.signed.EdgeTask(ctx, &tallyv1.EdgeTaskRequest{TaskId: t.id})
	if err != nil {
		return nil, aggregation.Parameters{}, e.refused(err)
	}
	var p aggregation.Parameters
	if r.GetAggregate() {
		if p, err = e.parameters(r.GetHeParams()); err != nil {
			return nil, p, err
		}
		if d := r.GetDeadlineUnixMs(); d > 0 {
			t.mu.Lock()
			t.deadline = time.UnixMilli(d)
			t.mu.Unlock()
		}
	}
	t.info, t.params = r, p
	return r, p, nil
}

// parameters builds (once per parameter set) the job's CKKS parameters.
func (e *Edge) parameters(hp *tallyv1.HEParameters) (aggregation.Parameters, error) {
	raw, _ := proto.MarshalOptions{Deterministic: true}.Marshal(hp)
	e.mu.Lock()
	p, ok := e.params[string(raw)]
	e.mu.Unlock()
	if ok {
		return p, nil
	}
	p, err := aggregation.NewParameters(ParametersConfig(hp))
	if err != nil {
		return p, err
	}
	e.mu.Lock()
	e.params[string(raw)] = p
	e.mu.Unlock()
	return p, nil
}

// ParametersConfig is the aggregation configuration a job's HEParameters
// state.
func ParametersConfig(hp *tallyv1.HEParameters) aggregation.ParametersConfig {
	cfg := aggregation.ParametersConfig{
		LogN: int(hp.GetLogN()), LogDefaultScale: int(hp.GetLogDefaultScale()), EncoderPrecision: int(hp.GetEncoderPrecision()),
		LogNoiseFlooding: int(hp.GetLogNoiseFlooding()), Insecure: hp.GetInsecure(),
	}
	if f := hp.GetFlooding(); f != nil {
		cfg.Flooding = aggregation.FloodingConfig{
			Security: int(f.GetSecurity()), Decryptions: int(f.GetDecryptions()), Scalars: int(f.GetScalars()),
			Contributors: int(f.GetContributors()), Blocks: int(f.GetBlocks()), Committee: int(f.GetCommittee()),
		}
	}
	for _, q := range hp.GetLogQ() {
		cfg.LogQ = append(cfg.LogQ, int(q))
	}
	for _, q := range hp.GetLogP() {
		cfg.LogP = append(cfg.LogP, int(q))
	}
	return cfg
}

// submitUpdate takes a client's upload. An encrypted upload for a task
// the coordinator says to aggregate is checked, added to the edge's
// current partial, and answered once the coordinator has counted the
// partial; anything else is relayed as it is.
func (e *Edge) submitUpdate(ss grpc.ServerStream) error {
	first := new(tallyv1.SubmitUpdateRequest)
	if err := ss.RecvMsg(first); err != nil {
		return err
	}
	h := first.GetHeader()
	_, client := forward(ss.Context())
	e.saw(client)
	if h == nil || h.GetEncoding() != "ckks" || client == "" {
		if h != nil && client != "" {
			// A decline (or a plaintext upload): the client is not one
			// the partial waits for.
			e.taskFor(h.GetTaskId()).forget(client)
		}
		e.Relayed.Add(1)
		return e.pipe(ss, tallyv1.CoordinatorService_SubmitUpdate_FullMethodName, first)
	}
	t := e.taskFor(h.GetTaskId())
	info, params, err := e.info(ss.Context(), t)
	if err != nil || !info.GetAggregate() {
		// The coordinator answers the upload itself (and refuses it if
		// the task is not open).
		e.Relayed.Add(1)
		return e.pipe(ss, tallyv1.CoordinatorService_SubmitUpdate_FullMethodName, first)
	}
	if t.holds(client) {
		// Already taken (the client was handed the task again while its
		// upload waits in a partial): answered without reading the rest.
		return ss.SendMsg(&tallyv1.SubmitUpdateResponse{Accepted: true, Duplicate: true})
	}
	select {
	case e.slots <- struct{}{}:
	case <-ss.Context().Done():
		return status.FromContextError(ss.Context().Err()).Err()
	}
	defer func() { <-e.slots }()
	up, cts, err := e.readUpload(ss, first, client, info, params)
	if err != nil {
		e.cfg.Log.Warn("upload refused", "client", client, "task", t.id, "err", err)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	// The client is answered once its upload is checked and summed, not
	// when the coordinator has counted the partial: a partial waits for
	// every client of the edge (up to PartialBytes), and clients that
	// take turns to upload (tally simulate's, or any client population
	// that bounds its uploads in flight) would otherwise wait on each
	// other until the deadline. An edge can drop what it accepted either
	// way (doc.go).
	dup, err := t.add(up, cts)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return ss.SendMsg(&tallyv1.SubmitUpdateResponse{Accepted: true, Duplicate: dup})
}

// upload is one client's checked upload: whole while it is summed into
// a partial, then what the partial forwards of it.
type upload struct {
	client string
	header *tallyv1.SubmitHeader
	size   int64 // bytes the client sent
	// c1 is the c₁ rows of each of its ciphertexts, in block order, and
	// product its influence product (nil without influence): what waits
	// in the partial once the ciphertexts are summed.
	c1      []byte
	product []byte
	held    int64 // bytes of it counted in Edge.held
	// forwarded ends the client's wait for its partial (Edge.wait).
	forwarded func()
	// err and duplicate are the coordinator's answer for this client.
	err       error
	duplicate bool
}

// readUpload reads the rest of a client's upload and checks it as the
// coordinator would before any ciphertext touches a sum: the digest, the
// signed statement under the client's enrolled key, every ciphertext
// against the statement and its own structure.
//
// It returns the upload with its ciphertexts (which alias one buffer,
// counted in e.held until [task.add] releases it).
func (e *Edge) readUpload(ss grpc.ServerStream, first *tallyv1.SubmitUpdateRequest, client string, info *tallyv1.EdgeTaskResponse, params aggregation.Parameters) (_ *upload, cts [][]byte, err error) {
	h := first.GetHeader()
	blocks := int(info.GetBlocks())
	size := params.CiphertextSize()
	if h.GetLength() != int64(blocks) {
		return nil, nil, fmt.Errorf("%w: client %s announced %d ciphertexts, the task takes %d", ErrRefused, client, h.GetLength(), blocks)
	}
	want := blocks * size
	buf := make([]byte, 0, want)
	e.hold(int64(want))
	defer func() {
		if err != nil {
			e.hold(-int64(want))
		}
	}()
	data := first.GetData()
	for {
		if len(data) > want-len(buf) {
			return nil, nil, fmt.Errorf("%w: client %s sent more than %d bytes", ErrRefused, client, want)
		}
		buf = append(buf, data...)
		m := new(tallyv1.SubmitUpdateRequest)
		err := ss.RecvMsg(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		data = m.GetData()
	}
	if len(buf) != want {
		return nil, nil, fmt.Errorf("%w: client %s sent %d bytes, %d announced", ErrRefused, client, len(buf), want)
	}
	sum := sha256.Sum256(buf)
	if subtle.ConstantTimeCompare(sum[:], h.GetDigest()) != 1 {
		return nil, nil, fmt.Errorf("%w: payload digest of client %s does not match its header", ErrRefused, client)
	}
	sub := new(aggregation.Submission)
	if err := sub.UnmarshalBinary(h.GetSubmission()); err != nil {
		return nil, nil, fmt.Errorf("%w: client %s: %w", ErrRefused, client, err)
	}
	if err := sub.Verify(ed25519.PublicKey(info.GetClientKeys()[client])); err != nil {
		return nil, nil, fmt.Errorf("%w: client %s: not signed by its enrolled key: %w", ErrRefused, client, err)
	}
	var key [32]byte
	copy(key[:], info.GetKeyId())
	switch {
	case sub.Client != client, sub.Job != info.GetJobId(), sub.Round != uint64(info.GetRound()), sub.Attempt != uint64(info.GetAttempt()):
		return nil, nil, fmt.Errorf("%w: client %s signed (client %q, job %q, round %d, attempt %d) for another task", ErrRefused, client, sub.Client, sub.Job, sub.Round, sub.Attempt)
	case sub.Key != key, sub.Blocks() != blocks:
		return nil, nil, fmt.Errorf("%w: client %s signed %d ciphertexts under key %x", ErrRefused, client, sub.Blocks(), sub.Key[:8])
	case h.GetSamples() < 0 || sub.Weight != uint64(h.GetSamples()):
		return nil, nil, fmt.Errorf("%w: client %s signed weight %d, its header says %d samples", ErrRefused, client, sub.Weight, h.GetSamples())
	}
	up := &upload{client: client, header: h, size: int64(want), held: int64(want)}
	for b := range blocks {
		ct := buf[b*size : (b+1)*size]
		if err := sub.CheckCiphertext(params, b, ct); err != nil {
			return nil, nil, fmt.Errorf("%w: client %s ciphertext %d: %w", ErrRefused, client, b, err)
		}
		if err := params.CheckContribution(key, blocks, client, ct); err != nil {
			return nil, nil, fmt.Errorf("%w: client %s ciphertext %d: %w", ErrRefused, client, b, err)
		}
		cts = append(cts, ct)
	}
	return up, cts, nil
}

// task is what an edge knows of one task: the clients it handed the task
// to, the clients whose uploads it took, and the partial being filled.
type task struct {
	e       *Edge
	id      string
	created time.Time

	infoMu sync.Mutex
	info   *tallyv1.EdgeTaskResponse
	params aggregation.Parameters

	mu       sync.Mutex
	deadline time.Time
	expected map[string]bool // handed the task, no upload yet
	taken    map[string]bool // every upload taken (summed or forwarded), by client
	seeded   bool            // expected holds the recent selected clients

	// sumMu serialises what fills and empties the partial: summing an
	// upload into it, and forwarding it. Taken before mu.
	sumMu sync.Mutex
	cur   *partial
	timer *time.Timer
}

// partial is one partial being filled: the running sums of its clients'
// ciphertexts and of their influence products, and what it forwards of
// each client. Its bytes are what it holds of its clients.
type partial struct {
	acc   *aggregation.Accumulator
	inf   *aggregation.Influence
	ups   []*upload
	bytes int64
}

// holds reports whether client's upload was already taken.
func (t *task) holds(client string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.taken[client]
}

// newPartial starts an empty partial of the task.
func (t *task) newPartial() (*partial, error) {
	info, params := t.info, t.params
	var key [32]byte
	copy(key[:], info.GetKeyId())
	acc, err := aggregation.NewAccumulator(params, key, int(info.GetNumParams()))
	if err != nil {
		return nil, err
	}
	p := &partial{acc: acc}
	if g := info.GetGradient(); len(g) > 0 {
		grad, err := aggregation.UnmarshalGradient(g)
		if err != nil {
			return nil, err
		}
		if p.inf, err = aggregation.NewInfluence(params, key, grad, int(info.GetNumParams())); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// add sums up's ciphertexts cts into the current partial as soon as they
// are checked (and its influence product, if the job wants them), keeps
// of them only what the partial forwards (the c₁ rows, the product), and
// forwards the partial when no client the edge awaits is still to upload,
// when it holds PartialBytes, or when the deadline nears. It reports
// whether the client's upload was already taken (a resend). cts is not
// kept: its buffer is released when add returns.
func (t *task) add(up *upload, cts [][]byte) (dup bool, err error) {
	t.sumMu.Lock()
	defer t.sumMu.Unlock()
	t.mu.Lock()
	dup = t.taken[up.client]
	t.mu.Unlock()
	if dup {
		t.e.hold(-up.held)
		return true, nil
	}
	whole := up.held
	defer func() {
		// The upload's buffer goes; what the partial keeps of it stays
		// counted (up.held) until it is forwarded.
		t.e.hold(-whole)
	}()
	if t.cur == nil {
		if t.cur, err = t.newPartial(); err != nil {
			return false, err
		}
	}
	p := t.cur
	for _, ct := range cts {
		// Every ciphertext passed the same checks in readUpload, and the
		// client is not in this partial yet: Add fails only on a broken
		// invariant, and then this partial (some of whose sums may hold
		// part of the upload) is not forwarded.
		if err = p.acc.Add(up.client, ct); err == nil && p.inf != nil {
			err = p.inf.Add(up.client, ct)
		}
		if err != nil {
			t.dropLocked(err)
			return false, err
		}
	}
	if p.inf != nil {
		if up.product, _, err = p.inf.Finalize(up.client); err != nil {
			t.dropLocked(err)
			return false, err
		}
	}
	if len(cts) > 0 {
		n := len(aggregation.ContributionC1(cts[0]))
		up.c1 = make([]byte, 0, n*len(cts))
		for _, ct := range cts {
			up.c1 = append(up.c1, aggregation.ContributionC1(ct)...)
		}
	}
	up.held = int64(len(up.c1) + len(up.product))
	t.e.hold(up.held)
	up.forwarded = t.e.wait(up.client)
	p.ups = append(p.ups, up)
	p.bytes += up.held

	t.mu.Lock()
	if !t.seeded {
		// Every selected client that called through this edge lately is
		// awaited, not only those already handed the task: the clients
		// are handed it one by one, and a partial per client would cost
		// the coordinator what the edge is there to save.
		t.seeded = true
		for _, id := range t.e.recent(t.info.GetClientKeys()) {
			if !t.taken[id] {
				t.expected[id] = true
			}
		}
	}
	t.taken[up.client] = true
	delete(t.expected, up.client)
	awaited, deadline := len(t.expected), t.deadline
	t.mu.Unlock()
	switch {
	case awaited == 0 || p.bytes >= t.e.cfg.PartialBytes:
		t.flushLocked()
	case t.timer == nil:
		wait := time.Until(deadline.Add(-t.e.cfg.Margin))
		if deadline.IsZero() {
			wait = t.e.cfg.Margin
		}
		t.timer = time.AfterFunc(max(wait, 0), func() {
			t.sumMu.Lock()
			defer t.sumMu.Unlock()
			t.timer = nil
			t.flushLocked()
		})
	}
	return false, nil
}

// dropLocked gives up the current partial, whose sums can no longer be
// trusted: its clients (already answered) are not counted, and may be
// taken again if they resend. Called with t.sumMu held.
func (t *task) dropLocked(err error) {
	p := t.cur
	t.cur = nil
	t.mu.Lock()
	for _, up := range p.ups {
		delete(t.taken, up.client)
		t.e.cfg.Log.Warn("upload not counted", "task", t.id, "client", up.client, "err", err)
	}
	t.mu.Unlock()
	for _, up := range p.ups {
		t.e.hold(-up.held)
		up.forwarded()
	}
}

// forget stops waiting for client's upload (it declined the task), and
// forwards the partial if no one else is awaited.
func (t *task) forget(client string) {
	t.sumMu.Lock()
	defer t.sumMu.Unlock()
	t.mu.Lock()
	delete(t.expected, client)
	awaited := len(t.expected)
	t.mu.Unlock()
	if awaited == 0 {
		t.flushLocked()
	}
}

// flushLocked sends the current partial, in the background, once no
// other partial of this edge is being forwarded: until then it waits, and
// so does every upload of its task (the bound on what an edge holds).
// Called with t.sumMu held.
func (t *task) flushLocked() {
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	p := t.cur
	t.cur = nil
	if p == nil || len(p.ups) == 0 {
		return
	}
	t.e.sending <- struct{}{}
	go func() {
		defer func() { <-t.e.sending }()
		t.send(p)
	}()
}

// send forwards p; each upload gets the coordinator's answer, and what p
// held of its clients is released.
func (t *task) send(p *partial) {
	err := t.e.refused(t.forward(p))
	t.mu.Lock()
	for _, up := range p.ups {
		if err != nil && up.err == nil {
			up.err = err
		}
		if up.err != nil {
			// A resend may go into a later partial.
			delete(t.taken, up.client)
			t.e.cfg.Log.Warn("upload not counted", "task", t.id, "client", up.client, "err", up.err)
		}
	}
	t.mu.Unlock()
	for _, up := range p.ups {
		t.e.hold(-up.held)
		up.c1, up.product = nil, nil
		up.forwarded()
	}
}

func (t *task) forward(p *partial) error {
	batch := p.ups
	hdr := &tallyv1.EdgeSubmitHeader{TaskId: t.id}
	for _, up := range batch {
		hdr.Clients = append(hdr.Clients, &tallyv1.EdgeClient{ClientId: up.client, Samples: up.header.GetSamples(),
			Submission: up.header.GetSubmission(), Digest: up.header.GetDigest(), Bytes: up.size})
	}
	agg, err := p.acc.Finalize()
	if err != nil {
		return err
	}
	c1Size := t.params.C1Size()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	first := &tallyv1.EdgeSubmitRequest{Header: hdr}
	stream, err := t.e.signed.EdgeSubmit(auth.WithFirstMessage(ctx, first))
	if err != nil {
		return err
	}
	if err := stream.Send(first); err != nil {
		return closeErr(stream, err)
	}
	send := func(part string, data []byte) error {
		for len(data) > 0 {
			n := min(len(data), chunk)
			if err := stream.Send(&tallyv1.EdgeSubmitRequest{Part: part, Data: data[:n]}); err != nil {
				return err
			}
			data = data[n:]
		}
		return nil
	}
	for b, ct := range agg.Ciphertexts {
		if err := send(fmt.Sprintf("partial/%d", b), ct); err != nil {
			return closeErr(stream, err)
		}
	}
	for _, up := range batch {
		for b := 0; b*c1Size < len(up.c1); b++ {
			if err := send(fmt.Sprintf("c1/%s/%d", up.client, b), up.c1[b*c1Size:(b+1)*c1Size]); err != nil {
				return closeErr(stream, err)
			}
		}
		if up.product != nil {
			if err := send("product/"+up.client, up.product); err != nil {
				return closeErr(stream, err)
			}
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return err
	}
	counted := map[string]bool{}
	for _, c := range resp.GetAccepted() {
		counted[c] = true
	}
	dup := map[string]bool{}
	for _, c := range resp.GetDuplicate() {
		dup[c] = true
	}
	for _, up := range batch {
		up.duplicate = dup[up.client]
		if !counted[up.client] {
			up.err = status.Errorf(codes.FailedPrecondition, "%v: client %s in task %s", ErrNotCounted, up.client, t.id)
		}
	}
	t.e.Partials.Add(1)
	t.e.Summed.Add(int64(len(batch)))
	t.e.cfg.Log.Info("partial forwarded", "task", t.id, "clients", len(batch))
	return nil
}

// closeErr is the coordinator's status for a stream whose Send failed.
func closeErr(stream grpc.ClientStreamingClient[tallyv1.EdgeSubmitRequest, tallyv1.EdgeSubmitResponse], err error) error {
	if _, rerr := stream.CloseAndRecv(); rerr != nil {
		return rerr
	}
	return err
}
