package engine

import (
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/dataset"
	"github.com/tallyfl/tally/model"
)

// Phase is where the job stands.
type Phase int

// The phases of a job, in order.
const (
	PhaseEnrolling Phase = iota
	PhaseScaling
	PhaseTraining
	PhaseDone
)

func (p Phase) String() string {
	return [...]string{"enrolling", "scaling", "training", "done"}[p]
}

// TaskKind says what a task asks of a client.
type TaskKind int

// Task kinds.
const (
	TaskTrain TaskKind = iota
	TaskMoments
	TaskKeyGen
	TaskThreshold
	TaskDecrypt
	// TaskReveal follows TaskKeyGen: with every member's signed commitment
	// in hand, each reveals its public-key share and seals its Shamir
	// shares (it was added after the others, hence its place).
	TaskReveal
)

func (k TaskKind) String() string {
	return [...]string{"train", "moments", "keygen", "threshold", "decrypt", "reveal"}[k]
}

// Task is one unit of work sent to the selected clients of a round.
type Task struct {
	ID       string
	Kind     TaskKind
	Round    int
	Attempt  int
	Params   []float64 // the global model (train) — shared, read-only
	Length   int       // expected update length
	Deadline int       // tick at which the task closes
	Selected []string

	// Under secure aggregation:
	// KeyID names the collective key updates are encrypted under, and
	// PublicKey is that key (train and moments tasks); KeyCertificate is
	// the committee's signatures of it (aggregation.KeyCertificate), which
	// a client checks before it encrypts anything.
	KeyID          [32]byte
	PublicKey      []byte
	KeyCertificate []byte
	// Acc accumulates the encrypted submissions of a train or moments
	// task. It is safe for concurrent use: the service adds ciphertexts
	// to it as they arrive, the engine finalises it when the task closes.
	Acc *aggregation.Accumulator
	// Blob is the key-generation instance (keygen) or the decryption
	// request (decrypt), in binary form.
	Blob []byte
	// Sealed maps recipient → sender → the Shamir share sender sealed for
	// recipient (threshold).
	Sealed map[string]map[string][]byte
	// Commitments maps each member to its signed commitment to its
	// public-key share (reveal and threshold), and PublicKeyShares to the
	// share it revealed (threshold): every member checks every share
	// against its commitment before it signs the collective key.
	Commitments     map[string][]byte
	PublicKeyShares map[string][]byte
	// Ciphertexts are the aggregate's blocks (a whole decryption); a
	// coefficient task has Products instead, the clients' influence
	// ciphertexts, read back (from the collect task's spill file, when it
	// has one) only as members download them. Ciphertext reads either.
	Ciphertexts [][]byte
	Products    []*aggregation.Product
	// Influence turns each client's ciphertexts, as they arrive, into a
	// ciphertext of ⟨∇L_val, n_i·Δ_i⟩ (the influence valuation mode), and
	// Gradient is that ∇L_val, which members get in the clear with the
	// decrypt tasks of the round (its digest is in each influence request).
	Influence *aggregation.Influence
	Gradient  []float64
	// Kept keeps every client's ciphertexts in the projection mode, whose
	// products with the round's public vectors are computed after the
	// total is decrypted (projection.go), in Submissions' spill file when
	// it has one.
	Kept *CiphertextStore
	// Submissions keeps each client's signed submission and the c1 of its
	// ciphertexts (train and moments tasks; the decrypt tasks of their
	// aggregates share it), which members check every sum against.
	Submissions *aggregation.SubmissionStore
	// Coefficient marks a decrypt task for influence scalars: Batch lists
	// its requests, in transcript order (aggregation's
	// CoefficientBatchVersion), each with its product ciphertext among
	// Products, and Gradients holds every multiplier vector they name,
	// by digest ("gradient/<hex digest>").
	Coefficient bool
	Batch       []CoefficientRequest
	Gradients   map[[32]byte][]float64
	// Transcript maps each participant of a decrypt task to the
	// transcript entries (binary, signed) it has not seen; it checks them
	// before it answers (transcript.go).
	Transcript map[string][][]byte
	// Groups is the seeded partition of the selected clients in the groups
	// valuation mode, with one accumulator per group instead of Acc.
	Groups   [][]string
	GroupAcc []*aggregation.Accumulator
	groupOf  map[string]int

	// selected is Selected as a set, made on first use by the goroutine
	// that owns the task (the engine's; the driver makes its own view):
	// with a thousand clients, a linear search per submission or per poll
	// made rounds quadratic in the number of clients.
	selected map[string]bool
}

// NumCiphertexts is how many ciphertexts a decrypt task names
// ("ciphertext/<i>"): its Products in a coefficient task, else its
// Ciphertexts.
func (t *Task) NumCiphertexts() int {
	if t.Coefficient {
		return len(t.Products)
	}
	return len(t.Ciphertexts)
}

// Ciphertext returns the task's ciphertext i: a whole decryption's block
// as it is kept (not to be changed), or a coefficient task's product read
// into buf (grown if short), checked as it is read back
// (aggregation.ErrProductSpillCorrupt). Safe for concurrent use.
func (t *Task) Ciphertext(i int, buf []byte) ([]byte, error) {
	if i < 0 || i >= t.NumCiphertexts() {
		return nil, fmt.Errorf("%w: task %s has no ciphertext %d of %d", ErrNoTask, t.ID, i, t.NumCiphertexts())
	}
	if t.Coefficient {
		return t.Products[i].Read(buf)
	}
	return t.Ciphertexts[i], nil
}

// isSelected reports whether client is one of the task's selected clients.
// Only the engine's goroutine may call it.
func (t *Task) isSelected(client string) bool {
	if t.selected == nil {
		t.selected = make(map[string]bool, len(t.Selected))
		for _, id := range t.Selected {
			t.selected[id] = true
		}
	}
	return t.selected[client]
}

// AccumulatorFor returns the accumulator client's ciphertexts go into, or
// nil when the task takes no ciphertexts from it.
func (t *Task) AccumulatorFor(client string) *aggregation.Accumulator {
	if t.GroupAcc != nil {
		if g, ok := t.groupOf[client]; ok {
			return t.GroupAcc[g]
		}
		return nil
	}
	return t.Acc
}

// Encrypted reports whether the task collects ciphertexts.
func (t *Task) Encrypted() bool { return t.Acc != nil || t.GroupAcc != nil }

// Evaluator scores a parameter vector on the coordinator's validation data,
// standardised with scaler when it is not nil. It is pure computation: the
// engine calls it synchronously.
type Evaluator interface {
	Evaluate(params []float64, scaler *dataset.Scaler) (model.Metrics, error)
}

// Event is an input to the engine.
type Event interface{ event() }

// EvJoin: a client enrolled, or came back after a disconnect.
// IdentityKey is its X25519 public key, for committee duty; SigningKey is
// the Ed25519 key it signs its calls with, which the members of its
// committee check its key-generation signatures against when no manifest
// pins them.
type EvJoin struct {
	Client      string
	Samples     int64
	IdentityKey []byte
	SigningKey  ed25519.PublicKey
}

// EvPoll: a client asked for work; it is alive.
type EvPoll struct{ Client string }

// EvLeft: a client's long poll was cut off by its connection closing (it
// stopped, crashed or lost its network). Until it is heard from again it is
// presumed gone: neither selected nor asked to decrypt.
type EvLeft struct{ Client string }

// EvTick: one tick of the driver's clock passed.
type EvTick struct{}

// EvSubmit: a complete submission arrived. Digest is the SHA-256 of its payload.
// Under secure aggregation Encrypted is set, Update is nil and the
// ciphertexts are already in the task's accumulator.
type EvSubmit struct {
	Client    string
	TaskID    string
	Samples   int64
	Update    []float64
	Digest    [32]byte
	Encrypted bool
	Bytes     int64 // payload size, for the round's accounting
}

// EvShares: a committee member's protocol messages for a task, by part
// name ("public-key-share", "sealed/<recipient>", "ack", "share/<block>").
type EvShares struct {
	Client string
	TaskID string
	Parts  map[string][]byte
}

func (EvJoin) event() {}

func (EvPoll) event() {}

func (EvLeft) event() {}

func (EvTick) event() {}

func (EvSubmit) event() {}

func (EvShares) event() {}

// Action is an output of the engine for the driver to perform, in order.
type Action interface{ action() }

// ActPersist asks the driver to write records to the store before any later action.
type ActPersist struct {
	Client *ClientRecord
	Round  *RoundRecord
	// Global is the model after Round (set with Round when it completed).
	Global    []float64
	Scaler    *dataset.Scaler
	Committee *CommitteeRecord
	// Transcript is an entry of the decryption transcript, new or with
	// more signatures (it replaces the stored entry of its Seq).
	Transcript *TranscriptRecord
	// Redundancy is the job-level redundancy accumulator after Round (set
	// with Round when the round's updates fed it; it replaces the stored
	// one), so that the stored accumulator always sums exactly the stored
	// completed rounds.
	Redundancy *RedundancyRecord
}

// RedundancyRecord is the job-level redundancy accumulator
// (valuation.Redundancy: how far apart every pair of clients' updates
// were, summed over the job's plain-mode rounds) as stored after a round.
type RedundancyRecord struct {
	// From is the first round the sums cover: 1, unless the job was
	// resumed from a state file written before the accumulator was stored
	// (then the first round run after that restart).
	From int `json:"from"`
	// Through is the round whose record it was written with, the last one
	// added.
	Through int `json:"through"`
	// Sums is valuation.Redundancy.MarshalBinary: 18 bytes a pair of
	// clients up to 128 clients, O(n²) in all.
	Sums []byte `json:"sums"`
}

// CommitteeRecord is a completed key generation: enough, with the members'
// own key shares, to decrypt again after a coordinator restart.
type CommitteeRecord struct {
	Epoch     uint64 `json:"epoch"`
	Instance  []byte `json:"instance"`
	PublicKey []byte `json:"public_key"`
	// Certificate is every member's signature of PublicKey
	// (aggregation.KeyCertificate); clients use no key without it.
	Certificate []byte `json:"certificate"`
}

// ActPublish makes Task the current task of each of its selected clients.
type ActPublish struct{ Task *Task }

// ActReply answers the submission of Client for TaskID.
type ActReply struct {
	Client    string
	TaskID    string
	Duplicate bool
	Err       error // nil when accepted
}

// ActRoundDone reports a completed or failed round attempt.
type ActRoundDone struct{ Record RoundRecord }

// ActJobDone ends the job.
type ActJobDone struct {
	Reason     string
	FinalRound int
}

// ActLog is a notable event for the job log.
type ActLog struct {
	Msg   string
	Attrs []any
}

func (ActPersist) action() {}

func (ActPublish) action() {}

func (ActReply) action() {}

func (ActRoundDone) action() {}

func (ActJobDone) action() {}

func (ActLog) action() {}

// ClientRecord is a client as the store keeps it.
type ClientRecord struct {
	ID      string `json:"id"`
	Samples int64  `json:"samples"`
}

// RoundRecord is the outcome of one round attempt.
type RoundRecord struct {
	Round        int      `json:"round"`
	Attempt      int      `json:"attempt"`
	Failed       bool     `json:"failed,omitempty"`
	Reason       string   `json:"reason,omitempty"`
	Selected     []string `json:"selected"`
	Contributors []string `json:"contributors"`
	// Samples maps each contributor to its weight n_i.
	Samples     map[string]int64 `json:"samples"`
	ValLoss     float64          `json:"val_loss"`
	ValAccuracy float64          `json:"val_accuracy"`
	// Digests maps each contributor to the SHA-256 of its submission.
	Digests map[string][32]byte `json:"-"`
	// BytesReceived counts the payload bytes of the accepted submissions.
	BytesReceived int64 `json:"bytes_received"`
	// Decryptions lists what the committee decrypted for this round, and
	// DecryptTasks counts the decrypt tasks published for it (a whole
	// decryption and its retries one each, a batch of influence scalars
	// one).
	Decryptions  []DecryptionRecord `json:"decryptions,omitempty"`
	DecryptTasks int                `json:"decrypt_tasks,omitempty"`
	// Valuation scores the contributors of this round.
	Valuation *RoundValuation `json:"valuation,omitempty"`
	// WeightFlags lists the round's inconsistent weights, each naming the
	// client (or the clients of an aggregate): a claim that changed since
	// the client's last round, or a decrypted Σn_i unlike the claims.
	WeightFlags []string `json:"weight_flags,omitempty"`
	// DPEpsilon maps each contributor, under privacy.dp, to the
	// accountant's ε at the job's δ over every completed round it has
	// taken part in, this one included.
	DPEpsilon map[string]float64 `json:"dp_epsilon,omitempty"`
	DPDelta   float64            `json:"dp_delta,omitempty"`
	// Settlement, on the record of the round that ended a payment period
	// (or on the failed attempt that stopped the job), pays the period's
	// value part.
	Settlement *Settlement `json:"settlement,omitempty"`
	// Transcript lists, on a completed round's record, every decryption
	// request of the job's transcript since the previous completed
	// round's record — failed attempts, the feature moments, influence
	// scalars — and TranscriptHead (hex) and TranscriptLen the chain's
	// head and length after them; the round's receipts carry both.
	Transcript     []TranscriptDecryption `json:"transcript,omitempty"`
	TranscriptHead string                 `json:"transcript_head,omitempty"`
	TranscriptLen  int                    `json:"transcript_len,omitempty"`
}

// TranscriptDecryption is one entry of the decryption transcript as a
// round's record and receipts list it.
type TranscriptDecryption struct {
	Seq          int    `json:"seq"`
	Round        int    `json:"round"`
	Attempt      int    `json:"attempt"`
	Purpose      string `json:"purpose"`
	Contributors int    `json:"contributors"`
	// Request is the hex ID of the decryption request.
	Request string `json:"request"`
	// Status is StatusDecrypted or StatusFailed.
	Status string `json:"status"`
	// Gradient is, for an influence scalar, the hex digest of the
	// committed multiplier vector the entry records
	// (aggregation.GradientDigest); empty otherwise.
	Gradient string `json:"gradient,omitempty"`
}

// Statuses of a transcript entry: decrypted (the shares combined), or
// failed (timed out, refused or not combined; shares may still have
// reached the coordinator, which is why the entry counts for the rules).
const (
	StatusDecrypted = "decrypted"
	StatusFailed    = "failed"
)

// CoefficientRequest is one influence scalar of a batched decrypt task:
// its request (aggregation.DecryptRequest, binary), the client whose
// product it is, the digest of its multiplier vector, and the download
// name of its ciphertext.
type CoefficientRequest struct {
	Request    []byte
	Client     string
	Gradient   [32]byte
	Ciphertext string
}

// DecryptionRecord is one aggregate the committee decrypted: what for, and
// how many client updates it summed.
type DecryptionRecord struct {
	Purpose      string `json:"purpose"`
	Contributors int    `json:"contributors"`
	// Clients are the contributors summed in what was decrypted.
	Clients      []string `json:"clients"`
	Participants []string `json:"participants"`
	// Gradient is, for an influence scalar, the hex digest of the
	// multiplier vector the members were given and checked against.
	Gradient string `json:"gradient,omitempty"`
}

// Strategy chooses a round's participants and combines their results.
type Strategy interface {
	// Select returns the participants of a round from the available
	// clients (sorted), using only rng for randomness.
	Select(available []string, rng *rand.Rand) []string
	// Aggregate returns the next global model from the current one and
	// the accepted results, given in client-id order.
	Aggregate(global []float64, results []Result) ([]float64, error)
}

// Result is one accepted update.
type Result struct {
	Client  string
	Samples int64
	Update  []float64 // Δ_i = local − global
}

type clientState struct {
	samples  int64
	lastSeen int
	joined   bool
	identity []byte
	signing  ed25519.PublicKey
	// silent: the client let the last task it was given close without
	// answering (a train or moments update missing at the deadline, a
	// decryption share missing at its timeout), and has not been heard
	// from since. It is neither selected nor asked to decrypt until it
	// polls, joins or submits again: a dead client would otherwise cost
	// a round timeout in every round of its liveness window.
	silent bool
	// busyUntil: the client took a task it owes an answer to (its poll
	// was answered with it) and works on it until this tick, the task's
	// deadline, at the latest. A client at work does not poll: a member
	// computing a batch of coefficient shares under -race took 60 s, and
	// counted by its last poll alone it fell out of the liveness window
	// and out of the next round, though it was doing what it was asked.
	// Answering (a submission, shares, a decline) ends it.
	busyUntil int
}

// heard notes that a client is alive now.
func (c *clientState) heard(now int) {
	c.lastSeen, c.silent = now, false
}

// answered notes that a client answered a task: it is alive now and no
// longer at work on what it was given.
func (c *clientState) answered(now int) {
	c.heard(now)
	c.busyUntil = 0
}

type received struct {
	samples int64
	update  []float64
	digest  [32]byte
	bytes   int64
}
