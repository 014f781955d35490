package ledger

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Sentinel errors of receipt appends.
var (
	// ErrInvalidReceipt means a receipt handed to AppendReceipts breaks a
	// rule of its fields (see AppendReceipts).
	ErrInvalidReceipt = errors.New("ledger: invalid receipt")
	// ErrDuplicateReceipt means a receipt for the same (job, round, client)
	// is already stored or appears twice in one batch.
	ErrDuplicateReceipt = errors.New("ledger: duplicate receipt")
)

// Decryption records one decryption the coordinator obtained in a round.
type Decryption struct {
	// Purpose says what was decrypted: "total", "group", "influence", ...
	Purpose string `json:"purpose"`
	// Contributors is the number of client updates summed in the plaintext.
	Contributors int `json:"contributors"`
	// Digest is the hex SHA-256 of the decrypted ciphertext, when known.
	Digest string `json:"digest,omitempty"`
	// Gradient is, for an influence scalar, the hex digest
	// (aggregation.GradientDigest) of the multiplier vector the committee
	// was given in the clear and checked the product against: what a
	// client's scalar is the inner product of its update with.
	Gradient string `json:"gradient,omitempty"`
	// The decryption's entry in the job's decryption transcript (receipts
	// with a TranscriptHead, v3): its position Seq, the round and attempt
	// it was requested for, the hex ID of the request, and its Status,
	// "decrypted" or "failed" (asked, not completed: its shares may still
	// have reached the coordinator). An item without Status is not a
	// decryption of the committee (an update valued in the clear).
	Seq     uint64 `json:"seq,omitempty"`
	Round   int    `json:"round,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	Request string `json:"request,omitempty"`
	Status  string `json:"status,omitempty"`
}

// Receipt is the coordinator's signed statement about one client in one
// round. Seq, PrevHash, Hash and Signature are set by AppendReceipts.
type Receipt struct {
	Seq    uint64 `json:"seq"`
	Job    string `json:"job"`
	Round  int    `json:"round"`
	Client string `json:"client"`
	// SubmissionDigest is the hex SHA-256 of the client's submission as the
	// coordinator received it; the client compares it with its own.
	SubmissionDigest string `json:"submission_digest"`
	// Decrypted lists every decryption of the round, so that a client can
	// check that no plaintext with fewer contributors than the policy allows
	// was produced.
	Decrypted []Decryption `json:"decrypted"`
	Method    string       `json:"method"`
	Mode      string       `json:"mode"`
	Value     float64      `json:"value"`
	StdErr    float64      `json:"stderr"`
	Payout    float64      `json:"payout"`
	Quota     float64      `json:"quota"`
	// Kind is "" for a round's receipt and KindSettlement for the
	// settlement of a payment period: then Round is the period's last
	// round, FromRound its first, Value the client's netted, decayed total
	// over the period, and Payout and Quota what the settlement paid and
	// credited (the value part, held until then).
	Kind      string `json:"kind,omitempty"`
	FromRound int    `json:"from_round,omitempty"`
	// Decay is the job's freshness decay (valuation.decay), so that totals
	// over receipts (Standings) weigh rounds as the coordinator does; 0 in
	// receipts written before it was recorded, which means 1.
	Decay float64 `json:"decay,omitempty"`
	// DPEpsilon is, in a job with differential privacy, the accountant's
	// ε at DPDelta over the rounds the client took part in up to this
	// one; both 0 without DP, and in receipts written before they existed.
	DPEpsilon float64 `json:"dp_epsilon,omitempty"`
	DPDelta   float64 `json:"dp_delta,omitempty"`
	// TranscriptHead is, under secure aggregation, the hex head of the
	// job's decryption transcript after the decryptions this receipt lists
	// (every one since the previous round's receipts: failed attempts, the
	// feature moments and influence scalars included), and TranscriptLen
	// its number of entries. A client keeps the last head it saw and
	// refuses a receipt whose head does not extend it. Receipts with them
	// are v3.
	TranscriptHead string `json:"transcript_head,omitempty"`
	TranscriptLen  uint64 `json:"transcript_len,omitempty"`
	// PrevHash is the Hash of the receipt with Seq-1, "" for Seq 1.
	PrevHash string `json:"prev_hash"`
	// IssuedAt is when the coordinator issued the receipt, in milliseconds
	// since 1970 (UTC), by its clock; 0 in receipts written before it
	// existed, which keep their v1 encoding.
	IssuedAt int64 `json:"issued_at,omitempty"`
	// Hash is the hex SHA-256 of Canonical().
	Hash string `json:"hash"`
	// Signature is the standard base64 Ed25519 signature of the 32 bytes
	// that Hash encodes.
	Signature string `json:"signature"`
}

// canonicalTag separates receipt hashes from anything else the key might
// ever sign; a new encoding must change it.
const canonicalTag = "tally-receipt-v1\x00"

// canonicalTagV2 is the tag of a receipt that carries IssuedAt.
const canonicalTagV2 = "tally-receipt-v2\x00"

// canonicalTagV3 is the tag of a receipt that carries a transcript head.
const canonicalTagV3 = "tally-receipt-v3\x00"

// Canonical returns the deterministic encoding that Hash covers: every
// field except Hash and Signature, in this order, with no separators:
//
//	"tally-receipt-v1\x00"             17-byte domain tag
//	Seq                                 uint64
//	Job                                 string
//	Round                               int64
//	Client, SubmissionDigest            string
//	len(Decrypted)                      uint32, then for each entry:
//	    Purpose string, Contributors int64, Digest string
//	Method, Mode                        string
//	Value, StdErr, Payout, Quota        float64 as IEEE-754 binary64 bits
//	PrevHash                            string
//	IssuedAt                            int64, v2 only
//	then, only if Kind, FromRound or Decay is set:
//	Kind string, FromRound int64, Decay float64 bits
//
// A receipt with a TranscriptHead is v3: the tag "tally-receipt-v3\x00",
// IssuedAt, the settlement and DP fields always, then for each decryption
// Seq uint64, Round int64, Attempt int64, Request and Status strings, and
// last TranscriptHead string and TranscriptLen uint64.
//
// A receipt with IssuedAt set is encoded as v2: the tag
// "tally-receipt-v2\x00" and IssuedAt after PrevHash. One without is v1,
// as every receipt was before timestamps, so old ledgers still verify.
// The settlement fields come last and only when set, so receipts from
// before them hash as they always did.
//
// Integers are big-endian; a string is its byte length as a big-endian
// uint32 followed by its bytes. Length prefixes make the encoding
// injective (no two receipts share it), and raw float bits avoid any
// question of decimal formatting; JSON round-trips float64 exactly, so the
// JSON form carries the same bits.
func (r *Receipt) Canonical() []byte {
	var b bytes.Buffer
	v3 := r.TranscriptHead != ""
	if v3 {
		b.WriteString(canonicalTagV3)
	} else if r.IssuedAt != 0 {
		b.WriteString(canonicalTagV2)
	} else {
		b.WriteString(canonicalTag)
	}
	u64 := func(v uint64) { b.Write(binary.BigEndian.AppendUint64(nil, v)) }
	str := func(s string) {
		b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s))))
		b.WriteString(s)
	}
	u64(r.Seq)
	str(r.Job)
	u64(uint64(int64(r.Round)))
	str(r.Client)
	str(r.SubmissionDigest)
	b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(r.Decrypted))))
	for _, d := range r.Decrypted {
		str(d.Purpose)
		u64(uint64(int64(d.Contributors)))
		str(d.Digest)
	}
	str(r.Method)
	str(r.Mode)
	for _, f := range []float64{r.Value, r.StdErr, r.Payout, r.Quota} {
		u64(math.Float64bits(f))
	}
	str(r.PrevHash)
	if v3 {
		u64(uint64(r.IssuedAt))
		str(r.Kind)
		u64(uint64(int64(r.FromRound)))
		u64(math.Float64bits(r.Decay))
		u64(math.Float64bits(r.DPEpsilon))
		u64(math.Float64bits(r.DPDelta))
		for _, d := range r.Decrypted {
			u64(d.Seq)
			u64(uint64(int64(d.Round)))
			u64(uint64(int64(d.Attempt)))
			str(d.Request)
			str(d.Status)
			str(d.Gradient)
		}
		str(r.TranscriptHead)
		u64(r.TranscriptLen)
		return b.Bytes()
	}
	if r.IssuedAt != 0 {
		u64(uint64(r.IssuedAt))
	}
	// Receipts from before these fields hash as they always did; a
	// receipt that has them is longer, so the encoding stays injective.
	dp := r.DPEpsilon != 0 || r.DPDelta != 0
	grads := false
	for _, d := range r.Decrypted {
		grads = grads || d.Gradient != ""
	}
	if r.Kind != "" || r.FromRound != 0 || r.Decay != 0 || dp || grads {
		str(r.Kind)
		u64(uint64(int64(r.FromRound)))
		u64(math.Float64bits(r.Decay))
	}
	// The DP fields follow the settlement fields, which are then always
	// written: the length-prefixed kind keeps the parse unique.
	if dp || grads {
		u64(math.Float64bits(r.DPEpsilon))
		u64(math.Float64bits(r.DPDelta))
	}
	// The multiplier-vector digests, one per decryption, follow the DP
	// fields, which are then always written; receipts without them hash
	// as before.
	if grads {
		for _, d := range r.Decrypted {
			str(d.Gradient)
		}
	}
	return b.Bytes()
}

// ComputeHash returns the hex SHA-256 of r.Canonical().
func (r *Receipt) ComputeHash() string {
	h := sha256.Sum256(r.Canonical())
	return hex.EncodeToString(h[:])
}

// validate checks the fields a caller supplies.
func (r *Receipt) validate() error {
	var errs []string
	if r.Job == "" || strings.ContainsRune(r.Job, 0) {
		errs = append(errs, "job must be non-empty without NUL")
	}
	if r.Client == "" || strings.ContainsRune(r.Client, 0) {
		errs = append(errs, "client must be non-empty without NUL")
	}
	if !roundInRange(r.Round) {
		errs = append(errs, "round must be within [0, 9999999999]")
	}
	if r.SubmissionDigest != "" && !isHexSHA256(r.SubmissionDigest) {
		errs = append(errs, "submission digest must be 64 lower-case hex digits")
	}
	for i, d := range r.Decrypted {
		if d.Purpose == "" || d.Contributors < 0 {
			errs = append(errs, fmt.Sprintf("decryption %d needs a purpose and contributors ≥ 0", i))
		}
		if d.Digest != "" && !isHexSHA256(d.Digest) {
			errs = append(errs, fmt.Sprintf("decryption %d digest must be 64 lower-case hex digits", i))
		}
		if r.TranscriptHead == "" && (d.Seq != 0 || d.Round != 0 || d.Attempt != 0 || d.Request != "" || d.Status != "") {
			errs = append(errs, fmt.Sprintf("decryption %d has transcript fields but the receipt no transcript head", i))
		}
		if r.TranscriptHead != "" && d.Status != "" {
			if !isHexSHA256(d.Request) {
				errs = append(errs, fmt.Sprintf("decryption %d request must be 64 lower-case hex digits", i))
			}
			if d.Status != StatusDecrypted && d.Status != StatusFailed {
				errs = append(errs, fmt.Sprintf("decryption %d status must be %q or %q, got %q", i, StatusDecrypted, StatusFailed, d.Status))
			}
			if d.Seq >= r.TranscriptLen {
				errs = append(errs, fmt.Sprintf("decryption %d is transcript entry %d, beyond the transcript's %d entries", i, d.Seq, r.TranscriptLen))
			}
		}
	}
	if r.TranscriptHead != "" && !isHexSHA256(r.TranscriptHead) {
		errs = append(errs, "transcript head must be 64 lower-case hex digits")
	}
	switch r.Kind {
	case "":
		if r.FromRound != 0 {
			errs = append(errs, "from_round is only for settlements")
		}
	case KindSettlement:
		if r.FromRound < 1 || r.FromRound > r.Round {
			errs = append(errs, fmt.Sprintf("settlement from_round %d must be within [1, round %d]", r.FromRound, r.Round))
		}
	default:
		errs = append(errs, fmt.Sprintf("kind must be empty or %q, got %q", KindSettlement, r.Kind))
	}
	if math.IsNaN(r.Decay) || r.Decay < 0 || r.Decay > 1 {
		errs = append(errs, "decay must be within [0, 1]")
	}
	if r.DPEpsilon != 0 || r.DPDelta != 0 {
		if !(r.DPEpsilon >= 0) || math.IsInf(r.DPEpsilon, 0) {
			errs = append(errs, fmt.Sprintf("dp_epsilon must be finite and ≥ 0, got %v", r.DPEpsilon))
		}
		if !(r.DPDelta > 0 && r.DPDelta < 1) {
			errs = append(errs, fmt.Sprintf("dp_delta must be in (0, 1) when dp_epsilon is given, got %v", r.DPDelta))
		}
	}
	// JSON cannot carry NaN or infinities, and a client could not store a
	// receipt it cannot write.
	for _, f := range []float64{r.Value, r.StdErr, r.Payout, r.Quota} {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			errs = append(errs, "value, stderr, payout and quota must be finite")
			break
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: round %d client %q: %s", ErrInvalidReceipt, r.Round, r.Client, strings.Join(errs, "; "))
	}
	return nil
}

func isHexSHA256(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// KindSettlement marks a settlement's receipt (Receipt.Kind).
const KindSettlement = "settlement"

// Statuses of a decryption in a v3 receipt.
const (
	StatusDecrypted = "decrypted"
	StatusFailed    = "failed"
)

// indexKey is a receipt's key in the (job, round, client) index; a
// settlement's carries its kind after the client, so that a period ending
// with a round holds both the round's receipt and the settlement's.
func indexKey(job string, round int, client, kind string) []byte {
	k := job + "\x00" + RoundKey(round) + "\x00" + client
	if kind != "" {
		k += "\x00" + kind
	}
	return []byte(k)
}

func roundIndexPrefix(job string, round int) []byte {
	return []byte(job + "\x00" + RoundKey(round) + "\x00")
}

// AppendReceipts completes and stores rs inside the caller's transaction,
// so the receipts of a round commit together with the round's state or not
// at all. For each receipt in order it assigns Seq (one more than the last
// stored receipt, 1 for the first), sets PrevHash to the previous
// receipt's Hash (the chain is global, across jobs, rounds and clients),
// computes Hash and signs it with key. Values the caller put in those four
// fields are ignored. It returns the stored receipts.
//
// It refuses the whole batch (ErrInvalidReceipt) if a receipt has an empty
// job or client, a negative round, a non-finite number, or a digest that
// is not lower-case hex SHA-256, and (ErrDuplicateReceipt) if a receipt for
// the same (job, round, client) exists already or twice in rs. The caller
// must then return the error so that Update rolls back.
func (t *Tx) AppendReceipts(key ed25519.PrivateKey, rs []Receipt) ([]Receipt, error) {
	if err := t.writable(); err != nil {
		return nil, err
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: signing key has %d bytes", ErrInvalidReceipt, len(key))
	}
	recs := t.tx.Bucket([]byte(bucketReceipts))
	idx := t.tx.Bucket([]byte(bucketReceiptIdx))
	seen := make(map[string]bool, len(rs))
	for i := range rs {
		if err := rs[i].validate(); err != nil {
			return nil, err
		}
		k := string(indexKey(rs[i].Job, rs[i].Round, rs[i].Client, rs[i].Kind))
		if seen[k] || idx.Get([]byte(k)) != nil {
			return nil, fmt.Errorf("%w: job %q round %d client %q%s", ErrDuplicateReceipt, rs[i].Job, rs[i].Round, rs[i].Client, map[bool]string{true: " (settlement)"}[rs[i].Kind != ""])
		}
		seen[k] = true
	}

	var seq uint64
	prev := ""
	if k, v := recs.Cursor().Last(); k != nil {
		var last Receipt
		if err := json.Unmarshal(v, &last); err != nil {
			return nil, fmt.Errorf("ledger: decode last receipt: %w", err)
		}
		seq, prev = last.Seq, last.Hash
	}
	out := make([]Receipt, len(rs))
	for i, r := range rs {
		seq++
		r.Seq = seq
		r.PrevHash = prev
		r.Decrypted = append([]Decryption(nil), r.Decrypted...)
		r.Hash = r.ComputeHash()
		h, _ := hex.DecodeString(r.Hash)
		r.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, h))
		v, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("ledger: encode receipt %d: %w", seq, err)
		}
		if err := recs.Put(seqKey(seq), v); err != nil {
			return nil, fmt.Errorf("ledger: store receipt %d: %w", seq, err)
		}
		if err := idx.Put(indexKey(r.Job, r.Round, r.Client, r.Kind), seqKey(seq)); err != nil {
			return nil, fmt.Errorf("ledger: index receipt %d: %w", seq, err)
		}
		prev = r.Hash
		out[i] = r
	}
	return out, nil
}

// Filter selects receipts. Its zero value selects all of them.
type Filter struct {
	// Job and Client, when non-empty, must match exactly.
	Job, Client string
	// ByRound restricts the selection to Round.
	ByRound bool
	Round   int
}

func (f Filter) match(r *Receipt) bool {
	return (f.Job == "" || r.Job == f.Job) &&
		(f.Client == "" || r.Client == f.Client) &&
		(!f.ByRound || r.Round == f.Round)
}

// Receipts returns the stored receipts that f selects, in Seq order.
func (t *Tx) Receipts(f Filter) ([]Receipt, error) {
	if f.Job != "" && f.Client != "" {
		return t.clientReceipts(f)
	}
	var out []Receipt
	err := t.tx.Bucket([]byte(bucketReceipts)).ForEach(func(k, v []byte) error {
		var r Receipt
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("ledger: decode receipt %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if f.match(&r) {
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// clientReceipts answers a filter naming a job and a client from the
// (job, round, client) index: it compares index keys and decodes only
// the client's own receipts. Decoding every receipt of the ledger for each
// query, as a scan of the receipts does, made a round of n clients
// quadratic: every client fetches its receipts with each training task
// and when the job ends (measured: 1,000 clients kept a coordinator busy
// for minutes after its last round).
func (t *Tx) clientReceipts(f Filter) ([]Receipt, error) {
	recs := t.tx.Bucket([]byte(bucketReceipts))
	prefix := []byte(f.Job + "\x00")
	var out []Receipt
	c := t.tx.Bucket([]byte(bucketReceiptIdx)).Cursor()
	for k, seq := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, seq = c.Next() {
		rest := k[len(prefix):]
		if len(rest) <= roundKeyDigits || rest[roundKeyDigits] != 0 {
			continue
		}
		if c := string(rest[roundKeyDigits+1:]); c != f.Client && c != f.Client+"\x00"+KindSettlement {
			continue
		}
		v := recs.Get(seq)
		if v == nil {
			return nil, fmt.Errorf("ledger: index names receipt %d, which is not stored", binary.BigEndian.Uint64(seq))
		}
		var r Receipt
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("ledger: decode receipt %d: %w", binary.BigEndian.Uint64(seq), err)
		}
		if f.match(&r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Receipt) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, nil
}

// HasReceiptsForRound reports whether any receipt of job's round is stored.
// The coordinator asks it before appending a round's receipts, so that a
// step replayed after a crash does not write them twice.
func (t *Tx) HasReceiptsForRound(job string, round int) bool {
	p := roundIndexPrefix(job, round)
	k, _ := t.tx.Bucket([]byte(bucketReceiptIdx)).Cursor().Seek(p)
	return k != nil && bytes.HasPrefix(k, p)
}

// HasSettlement reports whether the settlement of job's period ending with
// round is stored, so that a step replayed after a crash does not settle
// twice.
func (t *Tx) HasSettlement(job string, round int) bool {
	p := roundIndexPrefix(job, round)
	c := t.tx.Bucket([]byte(bucketReceiptIdx)).Cursor()
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		if bytes.HasSuffix(k, []byte("\x00"+KindSettlement)) {
			return true
		}
	}
	return false
}

// Receipts returns the stored receipts that f selects, in Seq order.
func (db *DB) Receipts(f Filter) (rs []Receipt, err error) {
	err = db.View(func(t *Tx) error {
		rs, err = t.Receipts(f)
		return err
	})
	return rs, err
}

// ReceiptsForClient returns every stored receipt of client, in Seq order.
func (db *DB) ReceiptsForClient(client string) ([]Receipt, error) {
	return db.Receipts(Filter{Client: client})
}

// HasReceiptsForRound reports whether any receipt of job's round is stored.
func (db *DB) HasReceiptsForRound(job string, round int) (has bool, err error) {
	err = db.View(func(t *Tx) error {
		has = t.HasReceiptsForRound(job, round)
		return nil
	})
	return has, err
}

// bucket helper used by Verify; kept here beside the layout it reads.
func receiptsBucket(tx *bolt.Tx) *bolt.Bucket { return tx.Bucket([]byte(bucketReceipts)) }
