package client

import (
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/internal/auth"
	"github.com/tallyfl/tally/manifest"
	"github.com/tallyfl/tally/model"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// chunkBytes is the payload of one SubmitUpdate message, well under gRPC's
// 4 MiB default message cap.
const chunkBytes = 1 << 20

// ciphertextMessageBytes is the largest ciphertext sent whole in one
// SubmitUpdate message: gRPC's 4 MiB cap less ample room for the header
// that rides on the first message and the framing. The default parameters'
// ciphertexts (512 KiB) and LogN 15's (2 MiB) fit.
const ciphertextMessageBytes = 3 << 20

// Errors of the client.
var (
	ErrRefused = errors.New("client: the coordinator refused this client")
	ErrJob     = errors.New("client: the job does not fit this client")
	// ErrJobStopped: the coordinator ended the job before its last round.
	ErrJobStopped = errors.New("client: the job stopped before its last round")
)

// UpdateHook may replace the update a client is about to submit. The
// simulator uses it to model free riders; a real client has none.
// round is the task's round, global the model it trained from, update the
// honest Δ. It returns the Δ to submit.
type UpdateHook func(round int, global, update []float64) []float64

// Config describes one participant.
type Config struct {
	// Conn is a connection to the coordinator; the client does not close it.
	Conn grpc.ClientConnInterface
	// Token is the enrolment token the ML team issued to this data holder.
	Token string
	// Name is an optional label for the coordinator's logs.
	Name string
	// Data is the local training data; it never leaves the client.
	Data model.Examples
	// Labels, if set, labels the local data for the job: before the client
	// enrols or resumes, it is given the job's class names (label k is
	// classes[k]) and returns the data with its label fields mapped onto
	// them by name, or an error naming the file, line and value of a label
	// the job does not have. Data is then what it returns. A client
	// reading a CSV file sets it; without it, Data is already labelled.
	Labels func(classes []string) (model.Examples, error)
	// Hook, if set, replaces updates before submission (simulation only).
	Hook UpdateHook
	// Log receives progress; nil discards it.
	Log *slog.Logger
	// Backoff bounds the wait between reconnection attempts.
	MinBackoff, MaxBackoff time.Duration
	// PollWait is the long-poll duration requested from the coordinator.
	PollWait time.Duration
	// ReceiptsFile, if set, receives this client's verified receipts as
	// JSON lines (see `tally ledger verify --receipts`).
	ReceiptsFile string
	// KeyFile, if set, keeps the Ed25519 key this client enrols with and
	// signs every later call with, and the identity it was enrolled as; it
	// is created (mode 0600) if missing. A client restarted with the same
	// KeyFile resumes without its token, which admits one enrolment. Empty
	// keeps the key in memory: such a client cannot rejoin after a restart
	// unless its token admits another enrolment.
	KeyFile string
	// Shared, if set, is state this client shares with the other clients
	// of its process (simulations); see Shared. nil: nothing is shared.
	Shared *Shared
	// NewModel, if set, builds the job's model instead of model.New: an
	// external trainer (extmodel) for `tally client --trainer`. The model
	// may implement BeginTask(client, task string, deadline time.Time),
	// which is called before each training task.
	NewModel func(spec model.Spec, features, classes int, seed uint64) (model.Model, error)
	// MemberKeys is where the client finds a committee member's Ed25519
	// identity key (the key each client signs its calls with): the job
	// manifest its data holder pinned. Every key-generation signature —
	// a member's X25519 key, its commitment, the collective key — is
	// checked against it, and a collective public key is used only with a
	// valid signature of every committee member. nil falls back to the
	// identity keys the coordinator reports for the members, with a loud
	// warning: the checks still run, but a coordinator that invents a
	// whole committee is not caught. New sets it to Manifest when only
	// that is given.
	MemberKeys interface {
		IdentityKey(id string) (ed25519.PublicKey, bool)
	}
	// Manifest, if set, is the job manifest this data holder pinned: the
	// client refuses any task, parameter, committee, identity or receipt
	// that contradicts it (client/manifest.go), and checks receipts with
	// its receipt key. nil trusts the coordinator's word (tests, and the
	// in-process simulation of issue 13's past).
	Manifest *manifest.Manifest
	// TestOnlyWeakParameters lifts the local floor (no insecure HE set, no
	// log_n below 14, no k below 3) so that tests can use small, fast,
	// insecure parameters. TEST ONLY: nothing in cmd/ sets it, and no flag
	// or environment variable does.
	TestOnlyWeakParameters bool
}

// Client is a participant's loop: enrol, wait for tasks, train, submit.
type Client struct {
	cfg Config
	api tallyv1.CoordinatorServiceClient
	log *slog.Logger
	sig *signer
	job *tallyv1.JobSpec
	mdl model.Model
	// dp, when the job adds differential privacy, is how this client
	// clips and noises its updates; noise is its secret noise source.
	dp    *dpSettings
	noise *rand.Rand
	// classes are the job's class names the local data was checked
	// against before joining; nil until then.
	classes []string

	// Secure aggregation. identity is the long-term X25519 key committee
	// shares are sealed to; member holds this client's key share when it
	// sits on the committee of instance inst; transcript is the job's
	// decryption transcript as this member holds it, across committees
	// and restarts (transcript.go).
	identity   *aggregation.Identity
	params     aggregation.Parameters
	policy     aggregation.Policy
	member     *aggregation.Member
	inst       *aggregation.KeyGenInstance
	transcript *aggregation.Transcript
	// observed is the job's decryption transcript as the coordinator
	// showed it with the receipts (receipts.go), in memory.
	observed *aggregation.Transcript
	enc      *aggregation.Encryptor
	encBuf   [][]byte
	// grad is the last influence multiplier vector a decrypt task sent
	// this member, kept for the round's other requests (by digest).
	grad       []float64
	gradDigest [32]byte
	// batchTest, set only by tests, watches decryptBatch (batch.go).
	batchTest *batchHooks
	book      *receiptBook
	declined  string // the task this client declined (decline.go)
	unpinned  sync.Once
	// Submitted counts accepted model updates (for tests and reports).
	Submitted int
}

// New checks cfg and returns a client.
func New(cfg Config) (*Client, error) {
	if cfg.Conn == nil {
		return nil, errors.New("client: no connection")
	}
	if cfg.Data.Len() == 0 && cfg.Labels == nil {
		return nil, errors.New("client: no local training data")
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.PollWait == 0 {
		cfg.PollWait = 5 * time.Second
	}
	if cfg.MemberKeys == nil && cfg.Manifest != nil {
		// The pinned manifest lists every participant's identity key: the
		// committee's key-generation signatures are checked against it.
		cfg.MemberKeys = cfg.Manifest
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id, err := aggregation.NewIdentity(crand.Reader)
	if err != nil {
		return nil, err
	}
	sig, err := loadSigner(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, api: tallyv1.NewCoordinatorServiceClient(sig.conn(cfg.Conn)), sig: sig, log: log, identity: id}
	// Batch spill files are unlinked when made; one left by an older
	// version, or where that cannot be done, goes now (batchspill.go).
	c.removeStaleSpills()
	if c.transcript, err = loadTranscript(c.transcriptPath()); err != nil {
		return nil, err
	}
	if cfg.ReceiptsFile != "" {
		if c.book, err = openReceiptBook(cfg.ReceiptsFile); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// retryable reports whether err is a transport failure worth retrying:
// the coordinator may be restarting.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
		return true
	}
	return false
}

// Run works until the job is done (nil), ctx is cancelled, or the
// coordinator refuses the client for good. Transport failures are retried
// with exponential backoff. A client that enrolled before (its KeyFile
// names its identity) resumes with its key instead of enrolling; a call
// refused as unauthenticated (a coordinator that lost its state) leads to
// a Resume, and failing that to an enrolment with the token.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.cfg.MinBackoff
	sleep := func() error {
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(2*backoff, c.cfg.MaxBackoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.redial()
		return nil
	}
	for {
		if c.job == nil {
			if err := c.join(ctx); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if retryable(err) {
					c.log.Warn("coordinator unreachable, retrying", "err", err, "in", backoff.String())
					if err := sleep(); err != nil {
						return err
					}
					continue
				}
				return err
			}
		}
		done, err := c.step(ctx)
		if done {
			return err
		}
		if errors.Is(err, aggregation.ErrUnsignedKey) || errors.Is(err, aggregation.ErrMemberKey) {
			// The coordinator served a collective key the committee did
			// not sign: it deviates, and nothing it asks is safe to do.
			c.log.Error("refusing the coordinator's collective public key; stopping", "err", err)
			return err
		}
		if err == nil {
			backoff = c.cfg.MinBackoff
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case violation(err):
			// The coordinator contradicted the manifest or this client's
			// floor: it is not to be worked for any further.
			c.log.Error("refusing the coordinator", "err", err)
			return err
		case status.Code(err) == codes.Unauthenticated:
			c.log.Warn("call refused as unauthenticated, joining again", "err", err)
			c.job = nil
		case retryable(err):
			c.log.Warn("coordinator unreachable, retrying", "err", err, "in", backoff.String())
		case closedRefusal(err):
			// The task moved on while this client worked on it (a
			// decryption that already had its t shares, a round closed by
			// its deadline): nothing is wrong, the next poll brings the
			// current task. A refusal naming NO_OBJECT is not this: the
			// task is open and lacks what it names, a failure (default).
			_, how := refusalOf(err)
			c.log.Debug("task closed before this client answered", "ended", how, "err", err)
			continue
		default:
			c.log.Warn("task failed", "err", err)
		}
		if err := sleep(); err != nil {
			return err
		}
	}
}

// redial makes a connection that is waiting out gRPC's own reconnect
// backoff dial again now. That backoff grows to 120 s, and while it waits
// every call fails at once without dialling, so a coordinator that came
// back would wait up to two minutes for its clients however short the
// client's own retry interval; measured, a 30 s outage left a client
// refused for 11 s after the coordinator listened again. With the reset,
// the client's backoff (MaxBackoff) is the longest a restarted
// coordinator waits. A connection that is not a *grpc.ClientConn (a test
// double) is left alone.
func (c *Client) redial() {
	if r, ok := c.cfg.Conn.(interface{ ResetConnectBackoff() }); ok {
		r.ResetConnectBackoff()
	}
}

// join resumes if this client's key was enrolled before, else enrols with
// the token.
func (c *Client) join(ctx context.Context) error {
	if err := c.checkData(ctx); err != nil {
		return err
	}
	if _, id := c.sig.identity(); id != "" {
		resp, err := c.api.Resume(ctx, &tallyv1.ResumeRequest{
			Samples: int64(c.cfg.Data.Len()), Features: int32(c.cfg.Data.Features), Name: c.cfg.Name,
			IdentityKey: c.identity.PublicKey(),
		})
		switch {
		case err == nil:
			return c.joined(resp.GetClientId(), resp.GetJob(), resp.GetReceiptPublicKey(), "resumed")
		case retryable(err):
			return err
		case status.Code(err) != codes.Unauthenticated || c.cfg.Token == "":
			return fmt.Errorf("%w: resume as %s: %v", ErrRefused, id, err)
		}
		c.log.Warn("the coordinator does not know this client's key; enrolling with the token", "client", id, "err", err)
	}
	if c.cfg.Token == "" {
		return fmt.Errorf("%w: no enrolment token, and no enrolled key to resume with", ErrRefused)
	}
	c.sig.bind("", "")
	resp, err := c.api.Enroll(ctx, &tallyv1.EnrollRequest{
		Token: c.cfg.Token, Samples: int64(c.cfg.Data.Len()), Features: int32(c.cfg.Data.Features), Name: c.cfg.Name,
		IdentityKey: c.identity.PublicKey(), AuthKey: c.sig.publicKey(),
	})
	if err != nil {
		if retryable(err) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return c.joined(resp.GetClientId(), resp.GetJob(), resp.GetReceiptPublicKey(), "enrolled")
}

// checkData learns the job's schema (an open call that spends nothing)
// and checks the local data against it before the client enrols: a file
// whose labels or columns the job cannot use fails here, its token unspent,
// and not after enrolment, when the committee may already count this client.
func (c *Client) checkData(ctx context.Context) error {
	if c.classes != nil {
		return nil
	}
	schema, err := c.api.Schema(ctx, &tallyv1.SchemaRequest{})
	if err != nil {
		if retryable(err) {
			return err
		}
		return fmt.Errorf("%w: schema: %v", ErrRefused, err)
	}
	if err := c.checkSchema(schema); err != nil {
		return err
	}
	classes := schema.GetClassNames()
	if len(classes) < 2 {
		return fmt.Errorf("%w: job %s names %d classes, want at least 2", ErrJob, schema.GetJobId(), len(classes))
	}
	if c.cfg.Labels != nil {
		data, err := c.cfg.Labels(classes)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrJob, err)
		}
		c.cfg.Data = data
	}
	if c.cfg.Data.Len() == 0 {
		return errors.New("client: no local training data")
	}
	if int(schema.GetFeatures()) != c.cfg.Data.Features {
		return fmt.Errorf("%w: job %s has %d features, local data %d", ErrJob, schema.GetJobId(), schema.GetFeatures(), c.cfg.Data.Features)
	}
	for i, y := range c.cfg.Data.Y {
		if y < 0 || y >= len(classes) {
			return fmt.Errorf("%w: row %d has label %d, job %s has %d classes", ErrJob, i, y, schema.GetJobId(), len(classes))
		}
	}
	c.classes = classes
	return nil
}

// joined checks the job against the local data and sets the client up for
// it; enrolled or resumed, the client then signs its calls as id.
func (c *Client) joined(id string, job *tallyv1.JobSpec, receiptKey []byte, how string) error {
	if id == "" || job == nil {
		return fmt.Errorf("%w: the coordinator's answer names no client or job", ErrRefused)
	}
	if int(job.GetFeatures()) != c.cfg.Data.Features {
		return fmt.Errorf("%w: job has %d features, local data %d", ErrJob, job.GetFeatures(), c.cfg.Data.Features)
	}
	if !slices.Equal(job.GetClassNames(), c.classes) {
		return fmt.Errorf("%w: the job's classes %q are not those the local data was labelled with, %q", ErrJob, job.GetClassNames(), c.classes)
	}
	for i, y := range c.cfg.Data.Y {
		if y < 0 || y >= int(job.GetClasses()) {
			return fmt.Errorf("%w: row %d has label %d, the job has %d classes", ErrJob, i, y, job.GetClasses())
		}
	}
	spec := model.Spec{Kind: job.GetModel().GetKind(), Activation: job.GetModel().GetActivation()}
	for _, h := range job.GetModel().GetHidden() {
		spec.Hidden = append(spec.Hidden, int(h))
	}
	newModel := model.New
	if c.cfg.NewModel != nil {
		newModel = c.cfg.NewModel
	}
	m, err := newModel(spec, int(job.GetFeatures()), int(job.GetClasses()), job.GetSeed())
	if err != nil {
		return fmt.Errorf("%w: %v", ErrJob, err)
	}
	if m.NumParams() != int(job.GetNumParams()) {
		return fmt.Errorf("%w: model has %d parameters here, %d at the coordinator", ErrJob, m.NumParams(), job.GetNumParams())
	}
	if job.GetSecureAggregation() == "he" {
		hp := job.GetHeParams()
		cfg := aggregation.ParametersConfig{
			LogN: int(hp.GetLogN()), LogDefaultScale: int(hp.GetLogDefaultScale()), EncoderPrecision: int(hp.GetEncoderPrecision()),
			LogNoiseFlooding: int(hp.GetLogNoiseFlooding()), Insecure: hp.GetInsecure(),
		}
		// Members derive their flooding σ from the bound the job states;
		// absent (an older coordinator), the defaults apply.
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
		if c.params, err = c.cfg.Shared.parameters(cfg); err != nil {
			return fmt.Errorf("%w: HE parameters: %v", ErrJob, err)
		}
		pc := aggregation.PolicyConfig{MinContributors: int(job.GetMinGroupSize())}
		if m := c.cfg.Manifest; m != nil {
			// L, the influence scalars a member releases per client and
			// round, is the manifest's (0: the default, 1); a job asking
			// for more is refused (checkJob, ErrScalars).
			pc.MaxScalarsPerRound = m.Security.MaxScalarsPerClientRound
		} else {
			// Without a manifest the coordinator's word is all there is
			// (tests, in-process simulations): the job's declared count.
			pc.MaxScalarsPerRound = int(job.GetScalarsPerRound())
		}
		if c.policy, err = aggregation.NewPolicy(pc); err != nil {
			return fmt.Errorf("%w: %v", ErrJob, err)
		}
		if err := c.checkFloor(job, c.params); err != nil {
			return err
		}
	}
	if err := c.checkJob(id, job, c.params); err != nil {
		return err
	}
	dp, err := dpFromSpec(job.GetDp(), int(job.GetRounds()))
	if err != nil {
		return err
	}
	if dp != nil && c.noise == nil {
		if c.noise, err = newNoiseRNG(); err != nil {
			return err
		}
	}
	c.dp = dp
	c.sig.bind(job.GetJobId(), id)
	if c.cfg.KeyFile != "" {
		if err := c.sig.save(c.cfg.KeyFile); err != nil {
			return err
		}
	}
	c.job, c.mdl = job, m
	if c.book != nil {
		if err := c.book.useKey(c.receiptKey(receiptKey)); err != nil {
			return err
		}
	}
	c.log.Info(how, "client", id, "job", job.GetJobId())
	return nil
}

// clientID is the identity this client signs its calls as.
func (c *Client) clientID() string {
	_, id := c.sig.identity()
	return id
}

// step polls once and performs the task it gets. done is true when the
// job has ended.
func (c *Client) step(ctx context.Context) (done bool, err error) {
	req := &tallyv1.NextTaskRequest{WaitMs: int32(c.cfg.PollWait / time.Millisecond), ReceiptsAfter: c.lastSeq()}
	if c.observed != nil {
		req.TranscriptAfter = uint64(c.observed.Len())
	}
	resp, err := c.api.NextTask(ctx, req)
	if err != nil {
		return false, err
	}
	switch t := resp.GetTask().(type) {
	case *tallyv1.NextTaskResponse_Done:
		c.log.Info("job done", "reason", t.Done.GetReason(), "final_round", t.Done.GetFinalRound())
		// The last receipts name the transcript's last head: the entries
		// up to it ride on the answer (the server may stop right after),
		// else they are fetched first (and any receipt not yet kept).
		if err := c.observeTranscript(t.Done.GetTranscriptEntries()); err != nil {
			return true, err
		}
		if err := c.syncReceipts(ctx); violation(err) {
			return true, err
		} else if err != nil {
			c.log.Warn("could not fetch the last receipts and transcript", "err", err)
		}
		if err := c.keepReceipts(t.Done.GetReceipts()); violation(err) {
			return true, err
		} else if err != nil {
			c.log.Warn("could not keep the last receipts", "err", err)
		}
		if final, rounds := t.Done.GetFinalRound(), c.job.GetRounds(); final < rounds {
			return true, fmt.Errorf("%w: job %s stopped after round %d of %d: %s", ErrJobStopped, c.job.GetJobId(), final, rounds, t.Done.GetReason())
		}
		return true, nil
	case *tallyv1.NextTaskResponse_Wait:
		return false, nil
	case *tallyv1.NextTaskResponse_Moments:
		m := dataset.ComputeMoments(c.cfg.Data)
		if key := t.Moments.GetKeyId(); len(key) > 0 {
			// Weight 1: the coordinator learns the sum of the moments, and
			// from the total weight only the number of clients.
			_, err := c.submitEncrypted(ctx, t.Moments.GetTaskId(), key, int(t.Moments.GetRound()), int(t.Moments.GetAttempt()), 1, m.Flatten())
			return false, err
		}
		_, err := c.submit(ctx, t.Moments.GetTaskId(), 0, int64(c.cfg.Data.Len()), m.Flatten())
		return false, err
	case *tallyv1.NextTaskResponse_Train:
		if err := c.syncReceipts(ctx); violation(err) {
			return false, err
		} else if err != nil {
			c.log.Warn("could not fetch receipts", "err", err)
		}
		return false, c.train(ctx, t.Train)
	case *tallyv1.NextTaskResponse_Keygen:
		return false, c.keyGen(ctx, t.Keygen)
	case *tallyv1.NextTaskResponse_Reveal:
		return false, c.reveal(ctx, t.Reveal)
	case *tallyv1.NextTaskResponse_Threshold:
		return false, c.threshold(ctx, t.Threshold)
	case *tallyv1.NextTaskResponse_Decrypt:
		return false, c.decrypt(ctx, t.Decrypt)
	}
	return false, fmt.Errorf("client: unknown task %T", resp.GetTask())
}

func (c *Client) train(ctx context.Context, t *tallyv1.TrainTask) error {
	if t.GetTaskId() == c.declined {
		return fmt.Errorf("%w (task %s)", ErrDeclined, t.GetTaskId())
	}
	global := t.GetParams()
	if len(global) == 0 && t.GetNumParams() > 0 {
		var err error
		if global, err = c.download(ctx, t.GetTaskId(), int(t.GetNumParams())); err != nil {
			return err
		}
	}
	if err := c.mdl.SetParams(global); err != nil {
		return fmt.Errorf("client: task %s: %w", t.GetTaskId(), err)
	}
	data := c.cfg.Data
	if sc := t.GetScaler(); sc != nil {
		s := dataset.Scaler{Mean: sc.GetMean(), Std: sc.GetStd()}
		if err := s.Validate(data.Features); err != nil {
			return fmt.Errorf("client: task %s: %w", t.GetTaskId(), err)
		}
		data = s.Apply(data)
	}
	tc := c.job.GetTrain()
	cfg := model.TrainConfig{
		Epochs: int(tc.GetEpochs()), BatchSize: int(tc.GetBatchSize()), LearningRate: tc.GetLearningRate(),
		Momentum: tc.GetMomentum(), WeightDecay: tc.GetWeightDecay(),
	}
	if b, ok := c.mdl.(interface {
		BeginTask(client, task string, deadline time.Time)
	}); ok {
		var deadline time.Time
		if ms := t.GetDeadlineUnixMs(); ms > 0 {
			deadline = time.UnixMilli(ms)
		}
		b.BeginTask(c.clientID(), t.GetTaskId(), deadline)
	}
	stats, err := c.mdl.Train(data, cfg, c.rng(int(t.GetRound())))
	if err != nil {
		err = fmt.Errorf("client: task %s: train: %w", t.GetTaskId(), err)
		c.decline(ctx, t, err)
		return err
	}
	local := c.mdl.Params()
	update := make([]float64, len(local))
	for i := range local {
		update[i] = local[i] - global[i]
	}
	if c.cfg.Hook != nil {
		update = c.cfg.Hook(int(t.GetRound()), global, update)
	}
	// Privatised after the hook (which tests use to play a deviating
	// client) and before encryption, so that everything computed from
	// the update, the valuation scalars included, is post-processing.
	if c.dp != nil && data.Len() > 0 {
		privatize(update, update, float64(data.Len()), *c.dp, c.noise)
	}
	c.log.Debug("trained", "round", t.GetRound(), "loss", stats.Loss, "samples", stats.Samples)
	var digest []byte
	var err2 error
	if key := t.GetKeyId(); len(key) > 0 {
		digest, err2 = c.submitEncrypted(ctx, t.GetTaskId(), key, int(t.GetRound()), int(t.GetAttempt()), float64(data.Len()), update)
	} else {
		digest, err2 = c.submit(ctx, t.GetTaskId(), int(t.GetRound()), int64(data.Len()), update)
	}
	if err2 != nil {
		return err2
	}
	if c.book != nil {
		c.book.digests[int(t.GetRound())] = hex.EncodeToString(digest)
	}
	c.Submitted++
	return nil
}

// rng derives the local training randomness from (job seed, client,
// round): the same job seed gives the same local shuffles, and a round that
// is retried (after a failure or a coordinator restart) from the same
// global model gives the same update.
func (c *Client) rng(round int) *rand.Rand {
	h := sha256.New()
	fmt.Fprintf(h, "%d|train|%s|%d", c.job.GetSeed(), c.clientID(), round)
	s := h.Sum(nil)
	return rand.New(rand.NewPCG(binary.LittleEndian.Uint64(s[:8]), binary.LittleEndian.Uint64(s[8:16])))
}

func (c *Client) download(ctx context.Context, taskID string, n int) ([]float64, error) {
	req := &tallyv1.DownloadModelRequest{TaskId: taskID}
	stream, err := c.api.DownloadModel(auth.WithFirstMessage(ctx, req), req)
	if err != nil {
		return nil, err
	}
	out := make([]float64, 0, n)
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if int(msg.GetOffset()) != len(out) {
			return nil, fmt.Errorf("client: model chunk at offset %d, expected %d", msg.GetOffset(), len(out))
		}
		out = append(out, msg.GetValues()...)
	}
	if len(out) != n {
		return nil, fmt.Errorf("client: downloaded %d parameters, expected %d", len(out), n)
	}
	return out, nil
}

// submit streams a vector in chunks with its SHA-256 in the header.
func (c *Client) submit(ctx context.Context, taskID string, round int, samples int64, v []float64) ([]byte, error) {
	buf := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(buf[8*i:], math.Float64bits(x))
	}
	digest := sha256.Sum256(buf)
	header := &tallyv1.SubmitHeader{
		TaskId: taskID, Round: int32(round), Samples: samples,
		Encoding: "f64le", Length: int64(len(v)), Digest: digest[:],
	}
	// The first message is made before the stream: its signature covers it.
	first := &tallyv1.SubmitUpdateRequest{Header: header, Data: buf[:min(chunkBytes, len(buf))]}
	stream, err := c.api.SubmitUpdate(auth.WithFirstMessage(ctx, first))
	if err != nil {
		return nil, err
	}
	for off := 0; off == 0 || off < len(buf); off += chunkBytes {
		msg := first
		if off > 0 {
			msg = &tallyv1.SubmitUpdateRequest{Data: buf[off:min(off+chunkBytes, len(buf))]}
		}
		if err := stream.Send(msg); err != nil {
			break // the real error comes from CloseAndRecv
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	c.log.Info("submitted", "task", taskID, "duplicate", resp.GetDuplicate())
	return digest[:], nil
}
