package aggregation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/ring"
	"github.com/tuneinsight/lattigo/v6/utils/sampling"
)

// Errors of verified decryption: what an honest member says when the
// coordinator names a ciphertext that is not what its labels claim
// (doc.go, "What members check").
var (
	// ErrSubmissionSignature reports a client submission whose signature
	// does not verify under the client's identity key.
	ErrSubmissionSignature = errors.New("aggregation: client submission signature does not verify")
	// ErrUnknownContributor reports a contributor that is not a
	// participant of the pinned manifest, or whose signed submission is
	// missing.
	ErrUnknownContributor = errors.New("aggregation: contributor unknown or without a signed submission")
	// ErrSubmissionMismatch reports a signed submission that names another
	// job, round, attempt, key instance or block count than the request,
	// or a ciphertext that does not hash to the digest its client signed.
	ErrSubmissionMismatch = errors.New("aggregation: signed submission does not match")
	// ErrNotASum reports an aggregate whose c₁ is not exactly the sum of
	// its contributors' signed c₁ (plus the public re-randomisation of a
	// retry): a single update relabelled, a related c₁, a forged sum.
	ErrNotASum = errors.New("aggregation: ciphertext is not the sum of its contributors' signed ciphertexts")
	// ErrGradientMismatch reports an influence request whose multiplier
	// vector is not the one its digest commits to, or not the one the
	// member saw for that round already.
	ErrGradientMismatch = errors.New("aggregation: influence multiplier vector not the committed one")
	// ErrProductMismatch reports an influence ciphertext whose c₁ is not
	// the product of the client's signed ciphertexts with the committed
	// multiplier vector.
	ErrProductMismatch = errors.New("aggregation: influence ciphertext is not the product of the signed update and the committed vector")
	// ErrNotVerified reports a decryption share, or an admission into
	// the transcript ([Member.Admit], [Member.AdmitBatch]), asked for a
	// request the member has not verified with [Member.VerifyAggregate].
	ErrNotVerified = errors.New("aggregation: decryption request not verified")
)

// Domain-separation prefixes of verified decryption.
const (
	domainSubmission  = "tally/aggregation/submission/v1"
	domainC0          = "tally/aggregation/c0/v1"
	domainC1          = "tally/aggregation/c1/v1"
	domainRerandomize = "tally/aggregation/rerandomize/v1"
	domainGradient    = "tally/aggregation/gradient/v1"
)

// maxRetries bounds a request's re-randomisation counter: far more
// retries than any round makes (the engine gives up after a handful).
const maxRetries = 1 << 10

// Submission is what a client signs about the ciphertexts it submits: the
// job, round and attempt it trained in, the key instance it encrypted
// under, its claimed weight nᵢ, and per block the SHA-256 of c₀ and of c₁,
// hashed separately so that a member can fetch c₁ alone and check it. The
// signature is by the client's Ed25519 identity key (the one the job
// manifest lists for it) over a domain-separated canonical encoding.
type Submission struct {
	Job     string
	Client  string
	Round   uint64
	Attempt uint64
	Key     [32]byte
	Weight  uint64
	C0, C1  [][32]byte
	// PublicKey is the key the signature verifies under. A member with a
	// pinned manifest uses the manifest's key instead; without one this is
	// only as trustworthy as the coordinator that relays it.
	PublicKey ed25519.PublicKey
	Signature []byte
}

var submissionMagic = []byte{'T', 'A', 'S', 'B', wireVersion}

func (s *Submission) message() []byte {
	b := []byte(domainSubmission)
	b = appendBytes(b, []byte(s.Job))
	b = appendBytes(b, []byte(s.Client))
	b = binary.BigEndian.AppendUint64(b, s.Round)
	b = binary.BigEndian.AppendUint64(b, s.Attempt)
	b = append(b, s.Key[:]...)
	b = binary.BigEndian.AppendUint64(b, s.Weight)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.C1)))
	for i := range s.C1 {
		b = append(b, s.C0[i][:]...)
		b = append(b, s.C1[i][:]...)
	}
	return b
}

// Blocks is the number of ciphertexts the submission covers.
func (s *Submission) Blocks() int { return len(s.C1) }

// ciphertextHalves returns the c₀ and c₁ rows of a marshalled ciphertext
// whose size was checked.
func ciphertextHalves(ct []byte) (c0, c1 []byte) {
	return splitCiphertext(ct)
}

func digestPart(domain string, b []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(domain))
	h.Write(b)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// ContributionC1 returns the c₁ rows of a client ciphertext, the part a
// member fetches to check a sum (it aliases ct). ct must have passed the
// coordinator's checks ([Accumulator.Add]).
func ContributionC1(ct []byte) []byte {
	_, c1 := ciphertextHalves(ct)
	return c1
}

// C1Digest is the digest of the c₁ half of a marshalled ciphertext (one
// block of an aggregate, or a client's), as [DecryptRequest.C1] and the
// transcript record it. ct must have a ciphertext's size.
func C1Digest(ct []byte) [32]byte {
	return digestPart(domainC1, ContributionC1(ct))
}

// NewSubmission signs the statement of client about its ciphertexts cts
// (one per block, in block order, as [Encryptor.EncryptUpdate] returns
// them) for round and attempt of job, with weight nᵢ.
func NewSubmission(params Parameters, job, client string, round, attempt, weight uint64, cts [][]byte, signer ed25519.PrivateKey) (*Submission, error) {
	if len(signer) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: client %q: an Ed25519 identity key is needed to sign a submission", ErrInvalidInput, client)
	}
	if len(cts) == 0 || len(cts) > maxBlocks {
		return nil, fmt.Errorf("%w: client %q: %d ciphertexts", ErrInvalidInput, client, len(cts))
	}
	s := &Submission{Job: job, Client: client, Round: round, Attempt: attempt, Weight: weight,
		C0: make([][32]byte, len(cts)), C1: make([][32]byte, len(cts)), PublicKey: signer.Public().(ed25519.PublicKey)}
	size := params.CiphertextSize()
	for b, ct := range cts {
		if len(ct) != size {
			return nil, fmt.Errorf("%w: client %q ciphertext %d has %d bytes, want %d", ErrInvalidInput, client, b, len(ct), size)
		}
		h, err := checkHeader(ct, params, params.ctLayout())
		if err != nil {
			return nil, err
		}
		if b == 0 {
			s.Key = h.key
		} else if h.key != s.Key {
			return nil, fmt.Errorf("%w: client %q ciphertexts under two key instances", ErrKeyMismatch, client)
		}
		if blk, n := int(binary.BigEndian.Uint32(ct[baseHeaderSize:])), int(binary.BigEndian.Uint32(ct[baseHeaderSize+4:])); blk != b || n != len(cts) {
			return nil, fmt.Errorf("%w: client %q ciphertext %d says block %d of %d", ErrBlockMismatch, client, b, blk, n)
		}
		c0, c1 := ciphertextHalves(ct)
		s.C0[b], s.C1[b] = digestPart(domainC0, c0), digestPart(domainC1, c1)
	}
	s.Signature = ed25519.Sign(signer, s.message())
	return s, nil
}

// Verify checks the signature under pub (the enrolled or pinned identity
// key of s.Client).
func (s *Submission) Verify(pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, s.message(), s.Signature) {
		return fmt.Errorf("%w: submission of client %q (round %d, attempt %d)", ErrSubmissionSignature, s.Client, s.Round, s.Attempt)
	}
	return nil
}

// CheckCiphertext checks that ct is block `block` of the submission: its
// header names the submission's key instance, block and block count, and
// its c₀ and c₁ hash to the signed digests. The size is checked; the
// reduction of the coefficients is left to [Accumulator.Add].
func (s *Submission) CheckCiphertext(params Parameters, block int, ct []byte) error {
	if block < 0 || block >= len(s.C1) {
		return fmt.Errorf("%w: client %q: block %d of a submission of %d", ErrSubmissionMismatch, s.Client, block, len(s.C1))
	}
	if len(ct) != params.CiphertextSize() {
		return fmt.Errorf("%w: client %q block %d: %d bytes, want %d", ErrMalformed, s.Client, block, len(ct), params.CiphertextSize())
	}
	h, err := checkHeader(ct, params, params.ctLayout())
	if err != nil {
		return err
	}
	if h.key != s.Key {
		return fmt.Errorf("%w: client %q block %d under key instance %x, its submission names %x", ErrSubmissionMismatch, s.Client, block, h.key[:8], s.Key[:8])
	}
	if blk, n := int(binary.BigEndian.Uint32(ct[baseHeaderSize:])), int(binary.BigEndian.Uint32(ct[baseHeaderSize+4:])); blk != block || n != len(s.C1) {
		return fmt.Errorf("%w: client %q ciphertext says block %d of %d, expected %d of %d", ErrSubmissionMismatch, s.Client, blk, n, block, len(s.C1))
	}
	c0, c1 := ciphertextHalves(ct)
	if d := digestPart(domainC0, c0); d != s.C0[block] {
		return fmt.Errorf("%w: client %q block %d: c0 hashes to %x, the client signed %x", ErrSubmissionMismatch, s.Client, block, d[:8], s.C0[block][:8])
	}
	if d := digestPart(domainC1, c1); d != s.C1[block] {
		return fmt.Errorf("%w: client %q block %d: c1 hashes to %x, the client signed %x", ErrSubmissionMismatch, s.Client, block, d[:8], s.C1[block][:8])
	}
	return nil
}

// MarshalBinary encodes the submission with its signature.
func (s *Submission) MarshalBinary() ([]byte, error) {
	if len(s.C0) != len(s.C1) || len(s.C1) == 0 || len(s.C1) > maxBlocks {
		return nil, fmt.Errorf("%w: submission with %d/%d digests", ErrInvalidInput, len(s.C0), len(s.C1))
	}
	if len(s.PublicKey) != ed25519.PublicKeySize || len(s.Signature) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: submission of %q without its key or signature", ErrInvalidInput, s.Client)
	}
	b := append([]byte(nil), submissionMagic...)
	b = append(b, s.message()[len(domainSubmission):]...)
	b = append(b, s.PublicKey...)
	return append(b, s.Signature...), nil
}

// UnmarshalBinary decodes a submission (it does not verify the signature:
// see [Submission.Verify]).
func (s *Submission) UnmarshalBinary(b []byte) error {
	rd := reader{b: b}
	if !bytes.Equal(rd.take(len(submissionMagic)), submissionMagic) {
		return fmt.Errorf("%w: submission: bad magic or version", ErrMalformed)
	}
	var out Submission
	out.Job = string(rd.bytes(maxJobLen))
	out.Client = string(rd.bytes(maxIDLength))
	out.Round = rd.u64()
	out.Attempt = rd.u64()
	copy(out.Key[:], rd.take(32))
	out.Weight = rd.u64()
	n := rd.u32()
	if rd.err == nil && (n == 0 || n > maxBlocks || int64(n)*64 > int64(len(rd.b))) {
		return fmt.Errorf("%w: submission: %d blocks", ErrMalformed, n)
	}
	for i := uint32(0); i < n && rd.err == nil; i++ {
		var c0, c1 [32]byte
		copy(c0[:], rd.take(32))
		copy(c1[:], rd.take(32))
		out.C0, out.C1 = append(out.C0, c0), append(out.C1, c1)
	}
	out.PublicKey = ed25519.PublicKey(bytes.Clone(rd.take(ed25519.PublicKeySize)))
	out.Signature = bytes.Clone(rd.take(ed25519.SignatureSize))
	if rd.err != nil {
		return fmt.Errorf("%w: submission: %v", ErrMalformed, rd.err)
	}
	if len(rd.b) != 0 {
		return fmt.Errorf("%w: submission: %d trailing bytes", ErrMalformed, len(rd.b))
	}
	if out.Client == "" {
		return fmt.Errorf("%w: submission: empty client id", ErrMalformed)
	}
	*s = out
	return nil
}

// SubmissionStore keeps, for one collect task, each client's signed
// submission and the c₁ of each of its ciphertexts, which the coordinator
// serves to committee members until the task's decryptions are done. In
// memory it holds half of every client ciphertext: n·blocks·[Parameters.CiphertextSize]/2
// bytes; [NewSpillingSubmissionStore] keeps those rows in a file instead.
// Safe for concurrent use.
type SubmissionStore struct {
	mu    sync.Mutex
	subs  map[string]*storedSubmission
	spill *spill // nil: the c₁ rows are kept in memory
}

type storedSubmission struct {
	raw     []byte
	sub     *Submission
	c1      [][]byte   // in memory
	spilled []spillRef // in the spill file, where spilled[b].n > 0 marks block b kept
}

// kept reports whether block b's c₁ was kept.
func (s *storedSubmission) kept(b int) bool {
	if s.spilled != nil {
		return s.spilled[b].n > 0
	}
	return s.c1[b] != nil
}

// NewSubmissionStore returns an empty store.
func NewSubmissionStore() *SubmissionStore {
	return &SubmissionStore{subs: map[string]*storedSubmission{}}
}

// Put records client's signed submission (already verified by the
// caller). The same one again is a no-op. Another one replaces it while no
// block of the first was kept (an upload broken off before its first
// ciphertext, resent re-encrypted); after that it is refused with
// [ErrSubmissionMismatch], since the blocks kept are covered by the first
// one only.
func (st *SubmissionStore) Put(client string, raw []byte, sub *Submission) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if old, ok := st.subs[client]; ok {
		if bytes.Equal(old.raw, raw) {
			return nil
		}
		for b := range old.c1 {
			if old.kept(b) {
				return fmt.Errorf("%w: client %q already uploaded blocks under another signed statement in this task; a resent upload must carry the same ciphertexts", ErrSubmissionMismatch, client)
			}
		}
	}
	s := &storedSubmission{raw: bytes.Clone(raw), sub: sub, c1: make([][]byte, sub.Blocks())}
	if st.spill != nil {
		s.spilled = make([]spillRef, sub.Blocks())
	}
	st.subs[client] = s
	return nil
}

// Submission returns client's submission as it was received, or false.
func (st *SubmissionStore) Submission(client string) (raw []byte, sub *Submission, ok bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.subs[client]
	if !ok {
		return nil, nil, false
	}
	return s.raw, s.sub, true
}

// AddBlock keeps a copy of the c₁ of client's ciphertext ct for block
// (checked against its submission by the caller). The first one kept
// stays, as in the accumulator.
func (st *SubmissionStore) AddBlock(client string, block int, ct []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.subs[client]
	if !ok || block < 0 || block >= len(s.c1) {
		return fmt.Errorf("%w: no submission of client %q covers block %d", ErrUnknownContributor, client, block)
	}
	return st.keep(s, block, ContributionC1(ct), true)
}

// keep keeps c1 as block's rows of s unless some are kept already: in the
// spill file, or in memory (a copy when clone is set). st.mu is held.
func (st *SubmissionStore) keep(s *storedSubmission, block int, c1 []byte, clone bool) error {
	switch {
	case s.kept(block):
	case st.spill != nil:
		ref, err := st.spill.keep(c1)
		if err != nil {
			return err
		}
		s.spilled[block] = ref
	case clone:
		s.c1[block] = bytes.Clone(c1)
	default:
		s.c1[block] = c1
	}
	return nil
}

// Contribution returns the c₁ rows kept for client's block, or false (also
// when a spilled one cannot be read back intact: [SubmissionStore.ReadContribution]
// says why).
func (st *SubmissionStore) Contribution(client string, block int) ([]byte, bool) {
	c1, err := st.ReadContribution(client, block, nil)
	return c1, err == nil
}

// GradientDigest is the commitment to an influence multiplier vector: the
// SHA-256 of its length and its entries' IEEE-754 bits. It is part of the
// influence [DecryptRequest] (so of its ID) and of the receipts.
func GradientDigest(grad []float64) [32]byte {
	h := sha256.New()
	h.Write([]byte(domainGradient))
	var w [8]byte
	binary.BigEndian.PutUint64(w[:], uint64(len(grad)))
	h.Write(w[:])
	// The values go to the hash 512 at a time: one Write per 8 bytes
	// made this hash run at about a fifth of SHA-256's speed here. The
	// bytes hashed, hence the digest, are the same.
	var buf [4096]byte
	for len(grad) > 0 {
		k := min(len(grad), len(buf)/8)
		for i, g := range grad[:k] {
			binary.LittleEndian.PutUint64(buf[8*i:], math.Float64bits(g))
		}
		h.Write(buf[:8*k])
		grad = grad[k:]
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// MarshalGradient is the wire form of a multiplier vector: little-endian
// float64s.
func MarshalGradient(grad []float64) []byte {
	out := make([]byte, 8*len(grad))
	for i, g := range grad {
		binary.LittleEndian.PutUint64(out[8*i:], math.Float64bits(g))
	}
	return out
}

// UnmarshalGradient decodes [MarshalGradient].
func UnmarshalGradient(b []byte) ([]float64, error) {
	if len(b) == 0 || len(b)%8 != 0 {
		return nil, fmt.Errorf("%w: gradient of %d bytes", ErrMalformed, len(b))
	}
	out := make([]float64, len(b)/8)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out, nil
}

// rerandomizationSeed is the public seed of the encryption of zero a
// retried request adds to block `block` of its aggregate: a hash of what
// names the aggregate (key, purpose, round, attempt, contributors) and the
// retry counter. Anyone can recompute it, so the zero it derives is no
// choice of the coordinator's.
func rerandomizationSeed(req DecryptRequest, block int) [32]byte {
	b := []byte(domainRerandomize)
	b = append(b, req.Key[:]...)
	b = appendBytes(b, []byte(req.Purpose))
	b = binary.BigEndian.AppendUint64(b, req.Round)
	b = binary.BigEndian.AppendUint64(b, req.Attempt)
	b = binary.BigEndian.AppendUint32(b, req.Retry)
	b = binary.BigEndian.AppendUint32(b, uint32(block))
	b = binary.BigEndian.AppendUint32(b, uint32(len(req.Contributors)))
	for _, id := range req.Contributors {
		b = appendBytes(b, []byte(id))
	}
	return sha256.Sum256(b)
}

// seededZero writes into c0, c1 (top level, NTT domain, canonical) the
// encryption of zero under pk whose randomness (u ternary, e₀, e₁ from the
// scheme's error distribution) is drawn from a PRNG keyed with seed:
// (u·pk₀ + e₀, u·pk₁ + e₁). c₁ is drawn first, so a member that checks only
// c₁ computes the same one.
func seededZero(p Parameters, pk *rlwe.PublicKey, seed [32]byte, c0, c1 ring.Poly) error {
	rq := p.ckks.RingQ().AtLevel(p.ckks.MaxLevel())
	prng, err := sampling.NewKeyedPRNG(seed[:])
	if err != nil {
		return fmt.Errorf("aggregation: keyed prng: %w", err)
	}
	us, err := ring.NewSampler(prng, rq, p.ckks.Xs(), false)
	if err != nil {
		return fmt.Errorf("aggregation: ternary sampler: %w", err)
	}
	es, err := ring.NewSampler(prng, rq, p.ckks.Xe(), false)
	if err != nil {
		return fmt.Errorf("aggregation: error sampler: %w", err)
	}
	u, e := rq.NewPoly(), rq.NewPoly()
	us.Read(u)
	rq.NTT(u, u)
	for k, out := range []ring.Poly{c1, c0} {
		rq.MulCoeffsMontgomery(u, pk.Value[1-k].Q, out)
		es.Read(e)
		rq.NTT(e, e)
		rq.Add(out, e, out)
		rq.Reduce(out, out)
	}
	return nil
}

// RerandomizeAggregate returns base with, in every block, the encryption of
// zero derived from the public seed of (base, purpose, round, attempt,
// retry) added: the fresh digest a retry needs (members never serve one
// twice), in a form every member recomputes and checks (retry ≥ 1, at most
// 2^10). Unlike [Encryptor.Rerandomize] the zero is not secret; it need
// not be, since it only has to make the digest new, and a member checks
// that the coordinator did not choose it.
func (e *Encryptor) RerandomizeAggregate(base *Aggregate, purpose string, round, attempt uint64, retry uint32) (*Aggregate, error) {
	if retry == 0 || retry > maxRetries {
		return nil, fmt.Errorf("%w: retry %d outside [1, %d]", ErrInvalidInput, retry, maxRetries)
	}
	if base.Key != e.key {
		return nil, fmt.Errorf("%w: aggregate under key instance %x, encryptor has %x", ErrKeyMismatch, base.Key[:8], e.key[:8])
	}
	tmpl := DecryptRequest{Key: base.Key, Purpose: purpose, Round: round, Attempt: attempt, Retry: retry, Contributors: base.Contributors}
	fresh := &Aggregate{Key: base.Key, NumParams: base.NumParams, Contributors: base.Contributors,
		Ciphertexts: make([][]byte, len(base.Ciphertexts)), Digests: make([][32]byte, len(base.Ciphertexts))}
	rq := e.params.ckks.RingQ().AtLevel(e.params.ckks.MaxLevel())
	z0, z1 := rq.NewPoly(), rq.NewPoly()
	for b, ct := range base.Ciphertexts {
		c, info, err := parseCiphertext(e.params, ct)
		if err != nil {
			return nil, err
		}
		if err := seededZero(e.params, e.pk, rerandomizationSeed(tmpl, b), z0, z1); err != nil {
			return nil, err
		}
		rq.Add(c.Value[0], z0, c.Value[0])
		rq.Add(c.Value[1], z1, c.Value[1])
		fresh.Ciphertexts[b] = marshalCiphertext(e.params, e.key, info.block, info.blocks, c, nil)
		fresh.Digests[b] = sha256.Sum256(fresh.Ciphertexts[b])
	}
	return fresh, nil
}

// Evidence is what a member checks a decryption request against before it
// produces any share ([Member.VerifyAggregate]).
type Evidence struct {
	// Ciphertexts are the request's ciphertexts in block order: the
	// aggregate's blocks, or the one influence ciphertext.
	Ciphertexts [][]byte
	// Submissions maps every contributor to its signed submission
	// ([Submission.MarshalBinary]), as the coordinator relays it.
	Submissions map[string][]byte
	// Contribution returns the c₁ rows of block b of client's signed
	// ciphertext ([ContributionC1]); the member checks each against the
	// signed digest. It is called at most once per (client, block) per
	// request, and for an influence request not at all for a client whose
	// product the member already derived in the round's total.
	Contribution func(client string, block int) ([]byte, error)
	// Gradient is the influence multiplier vector in the clear: required
	// for an influence request, optional for the round's total (a member
	// given it there derives every contributor's product c₁ in the same
	// pass and keeps only its digest).
	Gradient []float64
}

// verifyState is what a member keeps between the requests of one (key
// instance, round, attempt): the submissions it verified, the product
// digests it derived, and the request IDs it verified. Its size is
// bounded by the number of contributors (a few dozen bytes each) plus one
// encoded multiplier vector; it is dropped when another round starts.
type verifyState struct {
	key            [32]byte
	round, attempt uint64
	subs           map[string]*Submission
	infls          map[[32]byte]*Influence
	products       map[productRef][32]byte
	verified       map[[32]byte]bool
	// c1s holds the contributions' c₁ this member fetched and checked in
	// the round (size, residues, signed digest), by client and block, so
	// that the several products of one client (one per committed vector)
	// fetch and hash each c₁ once; c1Bytes is their size, at most
	// maxC1Cache (beyond it, c₁ are fetched and checked again).
	c1s     map[c1Ref][]byte
	c1Bytes int
	// cts holds a copy of each influence ciphertext verified and not yet
	// served, by request ID (at most maxVerifiedCTs bytes), so that
	// DecryptCoefficientShare compares the ciphertext it is given with
	// the one verified instead of hashing it again.
	cts     map[[32]byte][]byte
	ctBytes int
	// grad is a copy of the last multiplier vector this member hashed in
	// the round and gradDigest its digest: a round's many influence
	// requests carry the same vector, and comparing it bit for bit with
	// the copy costs a fraction of hashing it again.
	grad       []float64
	gradDigest [32]byte
}

// gradientDigest is GradientDigest(grad), through v's copy of the last
// vector hashed.
func (v *verifyState) gradientDigest(grad []float64) [32]byte {
	if v.grad != nil && sameBits(v.grad, grad) {
		return v.gradDigest
	}
	d := GradientDigest(grad)
	v.grad, v.gradDigest = append(v.grad[:0:0], grad...), d
	return d
}

// sameBits reports whether a and b hold the same float64 bit patterns
// (NaNs of the same payload equal, −0 and +0 not), as GradientDigest
// distinguishes them.
func sameBits(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			return false
		}
	}
	return true
}

// maxVerifiedCTs bounds verifyState.cts: 32 MiB, 42 influence
// ciphertexts of the default set; beyond it the ciphertext is hashed.
const maxVerifiedCTs = 32 << 20

// c1Ref names block b of a client's contribution.
type c1Ref struct {
	client string
	block  int
}

// maxC1Cache bounds the c₁ a member keeps for a round: 64 MiB, 170 blocks
// of the default set (e.g. 8 clients of 21 blocks).
const maxC1Cache = 64 << 20

func (m *Member) verifyStateFor(req DecryptRequest) *verifyState {
	v := m.verify
	if v == nil || v.key != req.Key || v.round != req.Round || v.attempt != req.Attempt {
		v = &verifyState{key: req.Key, round: req.Round, attempt: req.Attempt,
			subs: map[string]*Submission{}, infls: map[[32]byte]*Influence{}, products: map[productRef][32]byte{}, verified: map[[32]byte]bool{}, c1s: map[c1Ref][]byte{}, cts: map[[32]byte][]byte{}}
		m.verify = v
	}
	return v
}

// requireVerified is the gate of DecryptShare and DecryptCoefficientShare.
func (m *Member) requireVerified(req DecryptRequest) error {
	if v := m.verify; v != nil && v.verified[req.ID()] {
		return nil
	}
	id := req.ID()
	return fmt.Errorf("%w: request %x (%s, round %d): call VerifyAggregate with its evidence first", ErrNotVerified, id[:8], req.Purpose, req.Round)
}

// VerifyAggregate checks that the ciphertext req names is what its labels
// say, from the client-signed submissions of its contributors, and only
// then lets [Member.DecryptShare] (or [Member.DecryptCoefficientShare] for
// an influence request) serve req. It checks that every contributor is a
// participant of the pinned manifest (ErrUnknownContributor), that its
// submission verifies under its identity key (ErrSubmissionSignature) and
// names this job, round, attempt, key instance and block count, that no two
// contributors share an identity key (ErrSubmissionMismatch), the
// request-level policy (≥ k distinct contributors), that every ciphertext
// hashes to the request's digest (ErrDigestMismatch) and every fetched c₁ to
// its signed digest, and that the aggregate's c₁ is exactly Σᵢ c₁ᵢ — plus
// the public encryption of zero of a retry — modulo every prime
// (ErrNotASum). For an influence request it checks instead that the
// multiplier vector is the committed one, the same for the whole round
// (ErrGradientMismatch), and that the ciphertext's c₁ is
// Σ_b c₁ᵢ,b·pt(g_b) (ErrProductMismatch). c₀ is not checked: a forged c₀
// only falsifies what the coordinator itself decrypts (doc.go).
func (m *Member) VerifyAggregate(req DecryptRequest, ev Evidence) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inst == nil || m.tsk == nil || m.pk == nil {
		return fmt.Errorf("%w: verification before this member holds a certified key", ErrState)
	}
	if req.Retry > maxRetries {
		return fmt.Errorf("%w: retry %d above %d", ErrNotASum, req.Retry, maxRetries)
	}
	if req.Purpose == PurposeInfluence {
		return m.verifyInfluence(req, ev)
	}
	if err := m.checkRequest(req); err != nil {
		return err
	}
	if req.Gradient != ([32]byte{}) {
		return fmt.Errorf("%w: a %q request commits to a multiplier vector", ErrInvalidInput, req.Purpose)
	}
	if len(ev.Ciphertexts) != len(req.Digests) {
		return fmt.Errorf("%w: %d ciphertexts for %d digests", ErrInvalidInput, len(ev.Ciphertexts), len(req.Digests))
	}
	blocks := len(req.Digests)
	for b, ct := range ev.Ciphertexts {
		if d := sha256.Sum256(ct); d != req.Digests[b] {
			return fmt.Errorf("%w: block %d hashes to %x, request names %x", ErrDigestMismatch, b, d[:8], req.Digests[b][:8])
		}
		info, err := checkCiphertext(m.params, ct)
		if err != nil {
			return fmt.Errorf("block %d: %w", b, err)
		}
		if info.key != m.inst.id || info.block != b || info.blocks != blocks {
			return fmt.Errorf("%w: ciphertext %d is block %d of %d under key %x", ErrBlockMismatch, b, info.block, info.blocks, info.key[:8])
		}
		// The request names each block's c₁ digest, which goes into the
		// transcript: one c₁ is decrypted once, job-wide (transcript.go).
		if len(req.C1) != blocks {
			return fmt.Errorf("%w: a %q request must name the c1 digest of each of its %d blocks, it names %d", ErrDigestMismatch, req.Purpose, blocks, len(req.C1))
		}
		if d := C1Digest(ct); d != req.C1[b] {
			return fmt.Errorf("%w: block %d's c1 hashes to %x, request names %x", ErrDigestMismatch, b, d[:8], req.C1[b][:8])
		}
	}
	v := m.verifyStateFor(req)
	if err := m.verifySubmissions(v, req, ev, blocks); err != nil {
		return err
	}
	var infl *Influence
	if ev.Gradient != nil {
		var err error
		if infl, err = m.influenceFor(v, req, ev.Gradient); err != nil {
			return err
		}
		if infl.blocks != blocks {
			return fmt.Errorf("%w: multiplier vector of %d blocks for an aggregate of %d", ErrGradientMismatch, infl.blocks, blocks)
		}
	}

	rq := m.params.ckks.RingQ().AtLevel(m.params.ckks.MaxLevel())
	moduli := m.params.moduliRows(m.params.ctLayout())
	sums := make([]ring.Poly, blocks)
	for b := range sums {
		sums[b] = rq.NewPoly()
	}
	var prod ring.Poly
	var vector [32]byte
	if infl != nil {
		prod = rq.NewPoly()
		vector = GradientDigest(ev.Gradient)
	}
	for _, id := range req.Contributors {
		sub := v.subs[id]
		if infl != nil {
			prod.Zero()
		}
		for b := 0; b < blocks; b++ {
			c1, err := m.cachedC1(v, ev, sub, b)
			if err != nil {
				return err
			}
			addRowsMod(sums[b].Coeffs, moduli, c1)
			if infl != nil {
				infl.mulAddC1(prod, b, c1)
			}
		}
		if infl != nil {
			v.products[productRef{id, vector}] = digestRows(m.params, prod)
		}
	}
	if req.Retry > 0 {
		pk, _, err := parsePublicKey(m.params, m.pk)
		if err != nil {
			return fmt.Errorf("aggregation: certified public key: %w", err)
		}
		z0, z1 := rq.NewPoly(), rq.NewPoly()
		for b := range sums {
			if err := seededZero(m.params, pk, rerandomizationSeed(req, b), z0, z1); err != nil {
				return err
			}
			rq.Add(sums[b], z1, sums[b])
		}
	}
	buf := make([]byte, len(ContributionC1(ev.Ciphertexts[0])))
	for b, ct := range ev.Ciphertexts {
		putRows(buf, sums[b].Coeffs)
		if !bytes.Equal(buf, ContributionC1(ct)) {
			return fmt.Errorf("%w: block %d of the %q aggregate of %d contributors (retry %d) differs from the sum of their signed c1", ErrNotASum, b, req.Purpose, len(req.Contributors), req.Retry)
		}
	}
	// c₀ is not checked, so the same c₁ could come again under another c₀
	// (another digest) and other participants: two shares of one c₁ with
	// different Lagrange weights give c₁·s̃ᵢ exactly by lattice reduction
	// (doc.go, "Dropouts"), hence the key share. The c₁ digests checked
	// above are in the request, so in its transcript entry, and
	// [Member.Admit] refuses a c₁ digest the job's transcript already
	// holds, whoever decrypted it — across attempts, re-keys and restarts;
	// a c₁ already in this member's transcript is refused here already.
	if m.transcript != nil {
		for b, d := range req.C1 {
			if j, ok := m.transcript.c1[d]; ok {
				if o := m.transcript.entries[j]; o.Request != req.ID() {
					return fmt.Errorf("%w: %w: block %d's c1 %x was decrypted in transcript entry %d (request %x, participants %q); the same c1 under another c0 or participant set is not served again",
						ErrPolicy, ErrAlreadyServed, b, d[:8], o.Seq, o.Request[:8], o.Participants)
				}
			}
		}
	}
	v.verified[req.ID()] = true
	return nil
}

// verifySubmissions checks the signed submission of every contributor of
// req (once per round: verified ones are kept in v).
func (m *Member) verifySubmissions(v *verifyState, req DecryptRequest, ev Evidence, blocks int) error {
	keys := make(map[string]string, len(req.Contributors))
	for _, id := range req.Contributors {
		sub, ok := v.subs[id]
		if !ok {
			raw, ok := ev.Submissions[id]
			if !ok {
				return fmt.Errorf("%w: no signed submission of contributor %q", ErrUnknownContributor, id)
			}
			sub = new(Submission)
			if err := sub.UnmarshalBinary(raw); err != nil {
				return fmt.Errorf("contributor %q: %w", id, err)
			}
			if sub.Client != id {
				return fmt.Errorf("%w: the submission relayed for %q is %q's", ErrSubmissionMismatch, id, sub.Client)
			}
			pub := sub.PublicKey
			if m.keys != nil {
				pinned, ok := m.keys.IdentityKey(id)
				if !ok {
					return fmt.Errorf("%w: contributor %q is not a participant of the manifest", ErrUnknownContributor, id)
				}
				pub = pinned
			}
			if err := sub.Verify(pub); err != nil {
				return err
			}
			sub.PublicKey = pub
			if sub.Job != m.inst.job || sub.Round != req.Round || sub.Attempt != req.Attempt || sub.Key != req.Key {
				return fmt.Errorf("%w: contributor %q signed job %q round %d attempt %d key %x; the request is job %q round %d attempt %d key %x",
					ErrSubmissionMismatch, id, sub.Job, sub.Round, sub.Attempt, sub.Key[:8], m.inst.job, req.Round, req.Attempt, req.Key[:8])
			}
			if len(v.subs) >= maxContributors {
				return fmt.Errorf("%w: more than %d submissions in one round", ErrInvalidInput, maxContributors)
			}
			v.subs[id] = sub
		}
		if sub.Blocks() != blocks {
			return fmt.Errorf("%w: contributor %q signed %d blocks, the request has %d", ErrSubmissionMismatch, id, sub.Blocks(), blocks)
		}
		if other, dup := keys[string(sub.PublicKey)]; dup {
			return fmt.Errorf("%w: contributors %q and %q have the same identity key", ErrSubmissionMismatch, other, id)
		}
		keys[string(sub.PublicKey)] = id
	}
	return nil
}

// fetchC1 gets block b of sub's client's c₁ and checks it: exact size,
// canonical residues, and its signed digest.
func (m *Member) fetchC1(ev Evidence, sub *Submission, b int) ([]byte, error) {
	if ev.Contribution == nil {
		return nil, fmt.Errorf("%w: no way to fetch contributions", ErrInvalidInput)
	}
	c1, err := ev.Contribution(sub.Client, b)
	if err != nil {
		return nil, fmt.Errorf("aggregation: contribution %s/%d: %w", sub.Client, b, err)
	}
	l := m.params.ctLayout()
	moduli := m.params.moduliRows(l)
	n := m.params.ckks.N()
	if len(c1) != len(moduli)*n*8 {
		return nil, fmt.Errorf("%w: contribution %s/%d has %d bytes, want %d", ErrMalformed, sub.Client, b, len(c1), len(moduli)*n*8)
	}
	if d := digestPart(domainC1, c1); d != sub.C1[b] {
		return nil, fmt.Errorf("%w: contribution %s/%d hashes to %x, the client signed %x", ErrNotASum, sub.Client, b, d[:8], sub.C1[b][:8])
	}
	if err := checkCoeffs(c1, moduli, n, 1, kindCiphertext); err != nil {
		return nil, fmt.Errorf("contribution %s/%d: %w", sub.Client, b, err)
	}
	return c1, nil
}

// cachedC1 is fetchC1 through the round's cache v.c1s: a c₁ checked once
// in the round is not fetched and hashed again for another product of
// the same client. What is kept is a copy, so the bytes checked are the
// bytes used.
func (m *Member) cachedC1(v *verifyState, ev Evidence, sub *Submission, b int) ([]byte, error) {
	ref := c1Ref{sub.Client, b}
	if c1, ok := v.c1s[ref]; ok {
		return c1, nil
	}
	c1, err := m.fetchC1(ev, sub, b)
	if err != nil {
		return nil, err
	}
	if v.c1Bytes+len(c1) <= maxC1Cache {
		c1 = append([]byte(nil), c1...)
		v.c1s[ref] = c1
		v.c1Bytes += len(c1)
	}
	return c1, nil
}

// influenceFor returns the round's encoded multiplier vector, checking
// that grad is the one committed in req (if req commits to one) and the
// one seen before in this (key, round).
func (m *Member) influenceFor(v *verifyState, req DecryptRequest, grad []float64) (*Influence, error) {
	d := v.gradientDigest(grad)
	if req.Gradient != ([32]byte{}) && d != req.Gradient {
		return nil, fmt.Errorf("%w: the vector sent hashes to %x, the request commits to %x", ErrGradientMismatch, d[:8], req.Gradient[:8])
	}
	if m.gradients == nil {
		m.gradients = map[roundKey][][32]byte{}
	}
	// At most L = PolicyConfig.MaxScalarsPerRound distinct committed
	// vectors per (key, round): a valuation mode may release up to L
	// scalars per client and round, each the product with one vector; the
	// transcript applies the same bound job-wide ([Transcript.Check]).
	rk := roundKey{req.Key, req.Round}
	seen := m.gradients[rk]
	if !slices.Contains(seen, d) && len(seen) >= m.policy.MaxScalarsPerRound() {
		return nil, fmt.Errorf("%w: round %d already had %d multiplier vectors (at most %d per round, security.max_scalars_per_client_round), this one is %x", ErrGradientMismatch, req.Round, len(seen), m.policy.MaxScalarsPerRound(), d[:8])
	}
	if infl, ok := v.infls[d]; ok {
		return infl, nil
	}
	infl, err := NewInfluence(m.params, m.inst.id, grad, len(grad))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGradientMismatch, err)
	}
	if !slices.Contains(seen, d) {
		m.gradients[rk] = append(seen, d)
	}
	v.infls[d] = infl
	return infl, nil
}

func (m *Member) verifyInfluence(req DecryptRequest, ev Evidence) error {
	if err := checkInfluenceRequest(req, m.inst); err != nil {
		return err
	}
	if len(ev.Ciphertexts) != 1 {
		return fmt.Errorf("%w: %d ciphertexts for an influence request", ErrInvalidInput, len(ev.Ciphertexts))
	}
	if req.Gradient == ([32]byte{}) || ev.Gradient == nil {
		return fmt.Errorf("%w: an influence request must commit to its multiplier vector and carry it", ErrGradientMismatch)
	}
	ct := ev.Ciphertexts[0]
	if d := sha256.Sum256(ct); d != req.Digests[0] {
		return fmt.Errorf("%w: influence ciphertext hashes to %x, request names %x", ErrDigestMismatch, d[:8], req.Digests[0][:8])
	}
	v := m.verifyStateFor(req)
	infl, err := m.influenceFor(v, req, ev.Gradient)
	if err != nil {
		return err
	}
	_, info, err := parseInfluence(m.params, ct)
	if err != nil {
		return err
	}
	if info.key != m.inst.id || info.blocks != infl.blocks || info.logScale != infl.logScale {
		return fmt.Errorf("%w: influence ciphertext under key %x, %d blocks, gradient scale 2^%d; the committed vector gives %d blocks at 2^%d",
			ErrProductMismatch, info.key[:8], info.blocks, info.logScale, infl.blocks, infl.logScale)
	}
	if err := m.verifySubmissions(v, req, ev, infl.blocks); err != nil {
		return err
	}
	client := req.Contributors[0]
	pr := productRef{client, req.Gradient}
	got := ct[influenceHeader+(len(ct)-influenceHeader)/2:]
	if want, ok := v.products[pr]; ok {
		if d := digestPart(domainC1, got); d != want {
			return fmt.Errorf("%w: client %q: c1 hashes to %x, the product of its signed ciphertexts with vector %x gives %x", ErrProductMismatch, client, d[:8], req.Gradient[:8], want[:8])
		}
	} else {
		// Computed here: compared byte for byte, no digest needed.
		rq := m.params.ckks.RingQ().AtLevel(m.params.ckks.MaxLevel())
		prod := rq.NewPoly()
		for b := 0; b < infl.blocks; b++ {
			c1, err := m.cachedC1(v, ev, v.subs[client], b)
			if err != nil {
				return err
			}
			infl.mulAddC1(prod, b, c1)
		}
		buf := make([]byte, len(prod.Coeffs)*m.params.ckks.N()*8)
		putRows(buf, prod.Coeffs)
		if !bytes.Equal(buf, got) {
			return fmt.Errorf("%w: client %q: c1 is not the product of its signed ciphertexts with vector %x (first differing byte %d)", ErrProductMismatch, client, req.Gradient[:8], firstDiff(buf, got))
		}
	}
	id := req.ID()
	v.verified[id] = true
	if _, ok := v.cts[id]; !ok && v.ctBytes+len(ct) <= maxVerifiedCTs {
		v.cts[id] = append([]byte(nil), ct...)
		v.ctBytes += len(ct)
	}
	return nil
}

// isVerifiedCiphertext reports whether ct is, byte for byte, the
// influence ciphertext VerifyAggregate verified for request id in the
// current round (and so hashes to its digest), and forgets that copy.
func (m *Member) isVerifiedCiphertext(id [32]byte, ct []byte) bool {
	v := m.verify
	if v == nil {
		return false
	}
	kept, ok := v.cts[id]
	if !ok {
		return false
	}
	delete(v.cts, id)
	v.ctBytes -= len(kept)
	return bytes.Equal(kept, ct)
}

// productRef names a client's influence product with one committed
// multiplier vector.
type productRef struct {
	client string
	vector [32]byte
}

// firstDiff is the index of the first byte where a and b differ.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// digestRows is the c₁ digest of a polynomial over Q at the top level.
func digestRows(p Parameters, poly ring.Poly) [32]byte {
	buf := make([]byte, len(poly.Coeffs)*p.ckks.N()*8)
	putRows(buf, poly.Coeffs)
	return digestPart(domainC1, buf)
}
