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
)

// service is the coordinator service's name, whose methods an edge relays.
var service = tallyv1.CoordinatorService_ServiceDesc.ServiceName

// DefaultMargin is how long before a task's deadline an edge forwards the
// uploads it holds when some of its clients have not sent theirs.
const DefaultMargin = 2 * time.Second

// chunk bounds one message of an EdgeSubmit stream (gRPC caps messages at
// 4 MiB).
const chunk = 1 << 20

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
	Log    *slog.Logger
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

	// Partials and Summed count the partials forwarded and the client
	// uploads they carried; Relayed the uploads relayed as they were.
	Partials, Summed, Relayed atomic.Int64

	// held is the bytes of client uploads the edge holds in memory, peak
	// the most it held at once (Held, PeakHeld).
	held, peak atomic.Int64
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
	key := cfg.Key
	conn := auth.Conn(cfg.Upstream, func() (ed25519.PrivateKey, string, string) { return key, cfg.Job, cfg.ID }, nil)
	return &Edge{cfg: cfg, signed: tallyv1.NewCoordinatorServiceClient(conn), tasks: map[string]*task{}, params: map[string]aggregation.Parameters{}, seen: map[string]time.Time{}}, nil
}

// ServerOptions are the options the edge's gRPC server must be built
// with: every coordinator method but SubmitUpdate is relayed byte for byte.
func (e *Edge) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.UnknownServiceHandler(e.relay), grpc.ForceServerCodec(codec{})}
}

// Register registers the edge's own handler (SubmitUpdate) on s, a server
// built with ServerOptions.
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
	if _, sent := tk.uploads[client]; !sent {
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
		t = &task{e: e, id: id, expected: map[string]bool{}, uploads: map[string]*upload{}}
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
		return nil, aggregation.Parameters{}, err
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
	up, err := e.readUpload(ss, first, client, info, params)
	if err != nil {
		e.cfg.Log.Warn("upload refused", "client", client, "task", t.id, "err", err)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	// The client is answered once its upload is checked and held, not
	// when the coordinator has counted the partial: a partial waits for
	// every client of the edge, and clients that take turns to upload
	// (tally simulate's, or any client population that bounds its
	// uploads in flight) would otherwise wait on each other until the
	// deadline. An edge can drop what it accepted either way (doc.go).
	dup := t.add(up)
	if dup {
		t.e.hold(-up.size)
	}
	return ss.SendMsg(&tallyv1.SubmitUpdateResponse{Accepted: true, Duplicate: dup})
}

// upload is one client's checked upload, waiting in a partial.
type upload struct {
	client  string
	header  *tallyv1.SubmitHeader
	size    int64
	cts     [][]byte
	product []byte
	// err and duplicate are the coordinator's answer for this client.
	err       error
	duplicate bool
}

// readUpload reads the rest of a client's upload and checks it as the
// coordinator would before any ciphertext touches a sum: the digest, the
// signed statement under the client's enrolled key, every ciphertext
// against the statement and its own structure.
func (e *Edge) readUpload(ss grpc.ServerStream, first *tallyv1.SubmitUpdateRequest, client string, info *tallyv1.EdgeTaskResponse, params aggregation.Parameters) (_ *upload, err error) {
	h := first.GetHeader()
	blocks := int(info.GetBlocks())
	size := params.CiphertextSize()
	if h.GetLength() != int64(blocks) {
		return nil, fmt.Errorf("%w: client %s announced %d ciphertexts, the task takes %d", ErrRefused, client, h.GetLength(), blocks)
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
			return nil, fmt.Errorf("%w: client %s sent more than %d bytes", ErrRefused, client, want)
		}
		buf = append(buf, data...)
		m := new(tallyv1.SubmitUpdateRequest)
		err := ss.RecvMsg(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		data = m.GetData()
	}
	if len(buf) != want {
		return nil, fmt.Errorf("%w: client %s sent %d bytes, %d announced", ErrRefused, client, len(buf), want)
	}
	sum := sha256.Sum256(buf)
	if subtle.ConstantTimeCompare(sum[:], h.GetDigest()) != 1 {
		return nil, fmt.Errorf("%w: payload digest of client %s does not match its header", ErrRefused, client)
	}
	sub := new(aggregation.Submission)
	if err := sub.UnmarshalBinary(h.GetSubmission()); err != nil {
		return nil, fmt.Errorf("%w: client %s: %w", ErrRefused, client, err)
	}
	if err := sub.Verify(ed25519.PublicKey(info.GetClientKeys()[client])); err != nil {
		return nil, fmt.Errorf("%w: client %s: not signed by its enrolled key: %w", ErrRefused, client, err)
	}
	var key [32]byte
	copy(key[:], info.GetKeyId())
	switch {
	case sub.Client != client, sub.Job != info.GetJobId(), sub.Round != uint64(info.GetRound()), sub.Attempt != uint64(info.GetAttempt()):
		return nil, fmt.Errorf("%w: client %s signed (client %q, job %q, round %d, attempt %d) for another task", ErrRefused, client, sub.Client, sub.Job, sub.Round, sub.Attempt)
	case sub.Key != key, sub.Blocks() != blocks:
		return nil, fmt.Errorf("%w: client %s signed %d ciphertexts under key %x", ErrRefused, client, sub.Blocks(), sub.Key[:8])
	case h.GetSamples() < 0 || sub.Weight != uint64(h.GetSamples()):
		return nil, fmt.Errorf("%w: client %s signed weight %d, its header says %d samples", ErrRefused, client, sub.Weight, h.GetSamples())
	}
	up := &upload{client: client, header: h, size: int64(want)}
	for b := range blocks {
		ct := buf[b*size : (b+1)*size]
		if err := sub.CheckCiphertext(params, b, ct); err != nil {
			return nil, fmt.Errorf("%w: client %s ciphertext %d: %w", ErrRefused, client, b, err)
		}
		if err := params.CheckContribution(key, blocks, client, ct); err != nil {
			return nil, fmt.Errorf("%w: client %s ciphertext %d: %w", ErrRefused, client, b, err)
		}
		up.cts = append(up.cts, ct)
	}
	return up, nil
}

// task is what an edge knows of one task: the clients it handed the task
// to, their uploads, and the partial being filled.
type task struct {
	e       *Edge
	id      string
	created time.Time

	infoMu sync.Mutex
	info   *tallyv1.EdgeTaskResponse
	params aggregation.Parameters

	mu       sync.Mutex
	deadline time.Time
	expected map[string]bool    // handed the task, no upload yet
	uploads  map[string]*upload // every upload taken, by client
	pending  []*upload          // the current partial's
	seeded   bool               // expected holds the recent selected clients
	timer    *time.Timer
}

// add puts up into the current partial and forwards the partial when no
// client the edge awaits is still to upload, or when the deadline nears.
// It reports whether the client's upload was already held (a resend).
func (t *task) add(up *upload) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.uploads[up.client]; ok {
		return true
	}
	if !t.seeded {
		// Every selected client that called through this edge lately is
		// awaited, not only those already handed the task: the clients
		// are handed it one by one, and a partial per client would cost
		// the coordinator what the edge is there to save.
		t.seeded = true
		for _, id := range t.e.recent(t.info.GetClientKeys()) {
			if _, sent := t.uploads[id]; !sent {
				t.expected[id] = true
			}
		}
	}
	t.uploads[up.client] = up
	delete(t.expected, up.client)
	t.pending = append(t.pending, up)
	switch {
	case len(t.expected) == 0:
		t.flushLocked()
	case t.timer == nil:
		wait := time.Until(t.deadline.Add(-t.e.cfg.Margin))
		if t.deadline.IsZero() {
			wait = t.e.cfg.Margin
		}
		t.timer = time.AfterFunc(max(wait, 0), func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			t.timer = nil
			t.flushLocked()
		})
	}
	return false
}

// forget stops waiting for client's upload (it declined the task), and
// forwards the partial if no one else is awaited.
func (t *task) forget(client string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.expected, client)
	if len(t.expected) == 0 {
		t.flushLocked()
	}
}

// flushLocked sends the pending uploads as one partial, in the
// background. Called with t.mu held.
func (t *task) flushLocked() {
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	if len(t.pending) == 0 {
		return
	}
	batch := t.pending
	t.pending = nil
	go t.send(batch)
}

// send sums batch, computes the influence products if the job wants them,
// and forwards the partial; each upload gets the coordinator's answer.
func (t *task) send(batch []*upload) {
	err := t.forward(batch)
	for _, up := range batch {
		// Forwarded (or failed): no longer waiting in a partial (though
		// t.uploads still refers to every upload).
		t.e.hold(-up.size)
	}
	t.mu.Lock()
	for _, up := range batch {
		if err != nil && up.err == nil {
			up.err = err
		}
		if up.err != nil {
			// A resend may go into a later partial.
			delete(t.uploads, up.client)
			t.e.cfg.Log.Warn("upload not counted", "task", t.id, "client", up.client, "err", up.err)
		}
	}
	t.mu.Unlock()
}

func (t *task) forward(batch []*upload) error {
	info, params := t.info, t.params
	var key [32]byte
	copy(key[:], info.GetKeyId())
	acc, err := aggregation.NewAccumulator(params, key, int(info.GetNumParams()))
	if err != nil {
		return err
	}
	var inf *aggregation.Influence
	if g := info.GetGradient(); len(g) > 0 {
		grad, err := aggregation.UnmarshalGradient(g)
		if err != nil {
			return err
		}
		if inf, err = aggregation.NewInfluence(params, key, grad, int(info.GetNumParams())); err != nil {
			return err
		}
	}
	hdr := &tallyv1.EdgeSubmitHeader{TaskId: t.id}
	for _, up := range batch {
		for _, ct := range up.cts {
			if err := acc.Add(up.client, ct); err != nil {
				return err
			}
			if inf != nil {
				if err := inf.Add(up.client, ct); err != nil {
					return err
				}
			}
		}
		if inf != nil {
			if up.product, _, err = inf.Finalize(up.client); err != nil {
				return err
			}
		}
		hdr.Clients = append(hdr.Clients, &tallyv1.EdgeClient{ClientId: up.client, Samples: up.header.GetSamples(),
			Submission: up.header.GetSubmission(), Digest: up.header.GetDigest(), Bytes: up.size})
	}
	agg, err := acc.Finalize()
	if err != nil {
		return err
	}
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
		for b, ct := range up.cts {
			if err := send(fmt.Sprintf("c1/%s/%d", up.client, b), aggregation.ContributionC1(ct)); err != nil {
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
