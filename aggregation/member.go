package aggregation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/multiparty"
	"github.com/tuneinsight/lattigo/v6/ring"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
)

// Member is one committee client's side of the protocol: its secret share
// of the collective key, its long-term X25519 identity, the Ed25519
// identity key it signs its key-generation messages with, its t-of-c
// threshold share, and its decryption policy with the record of what it
// served. Methods are safe for concurrent use (they are serialised).
//
// Lifecycle per key-generation instance (the coordinator relays each step;
// nothing it relays is trusted unsigned):
//
//	Commit(inst)                      → a signed commitment to its public-key share,
//	                                    with its signed X25519 key
//	Reveal(inst, commitments)         ← all c signed commitments
//	                                  → its public-key share, sealed threshold shares
//	CertifyPublicKey(inst, shares)    ← all c revealed shares, checked against the
//	                                    commitments; → its signature of the collective key
//	ReceiveThresholdShares(inst, …)   ← the sealed shares addressed to this member
//	Admit(req, entries)               ← the transcript entries since this member's head;
//	                                  → its signature of the new head, if the rules allow
//	DecryptShare(req, block, ct)      → a decryption share of an admitted request
//
// A new instance (re-key) replaces the previous key state; the transcript
// is the job's and is kept across instances.
type Member struct {
	mu       sync.Mutex
	params   Parameters
	id       string
	identity *Identity
	signer   ed25519.PrivateKey
	keys     MemberKeys
	policy   Policy
	rand     io.Reader

	// transcript is the job's decryption transcript as this member holds
	// it (transcript.go); admitted maps each request this member admitted
	// since it was made to its signature of the head, served the digests
	// it produced a whole share for since, and blocks and scalars count
	// its own releases over the whole transcript, for the flooding caps.
	transcript *Transcript
	admitted   map[[32]byte][]byte
	served     map[[32]byte]bool
	blocks     int
	scalars    int

	inst       *KeyGenInstance
	sk         *rlwe.SecretKey // from Commit until Reveal
	pkShare    []byte
	commitment []byte
	commits    map[string][32]byte // member → committed share digest, once all were verified
	out        *KeyGenShares
	pk         []byte // the collective key this member aggregated and signed
	pkSig      []byte
	ownShare   multiparty.ShamirSecretShare
	tsk        *multiparty.ShamirSecretShare
	combiner   multiparty.Combiner
	ks         multiparty.KeySwitchProtocol
	zero       *rlwe.SecretKey
	// flood adds the whole-share flooding noise; coef, for the committee
	// shape coefC × coefT, the coefficient-share noise (flooding.go).
	flood        *floodSampler
	coef         *coefNoise
	coefC, coefT int
	// coefZeroNoise, set by tests only, makes coefficient shares carry no
	// noise, so that they can be compared exactly with the key switch.
	coefZeroNoise bool
	// verify is what VerifyAggregate keeps for the current round, and
	// gradients the multiplier vector digests (at most L) of every (key,
	// round) it saw an influence request of (verify.go).
	verify    *verifyState
	gradients map[roundKey][][32]byte
}

// NewMember creates the member id with its long-term X25519 identity and
// its Ed25519 identity key signer (the key its calls are signed with).
// keys is where it finds the other members' identity keys (a pinned
// manifest); nil falls back to the keys each instance lists, which only the
// coordinator vouches for. rand supplies the nonces of sealed messages
// (crypto/rand.Reader); lattigo draws the secret key and Shamir polynomials
// from its own cryptographically secure PRNG. transcript may be nil (a
// fresh one, for the job of the first instance) or one restored with
// [UnmarshalTranscript] (a restart: the rules keep holding over what the
// member took part in before).
func NewMember(params Parameters, id string, identity *Identity, signer ed25519.PrivateKey, keys MemberKeys, policy Policy, transcript *Transcript, rand io.Reader) (*Member, error) {
	if id == "" || len(id) > maxIDLength {
		return nil, fmt.Errorf("%w: member id must have 1 to %d bytes", ErrInvalidInput, maxIDLength)
	}
	if identity == nil || rand == nil {
		return nil, fmt.Errorf("%w: member %q needs an identity and a randomness source", ErrInvalidInput, id)
	}
	if len(signer) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: member %q needs its Ed25519 identity key (%d bytes), has %d bytes", ErrInvalidInput, id, ed25519.PrivateKeySize, len(signer))
	}
	if policy.minContributors == 0 {
		return nil, fmt.Errorf("%w: policy not built with NewPolicy", ErrInvalidInput)
	}
	// The key-switch protocol's own noise is lattigo's error distribution;
	// the flooding noise, far larger, is added by a floodSampler after
	// GenShare (flooding.go: lattigo's sampler is not accurate above 2^53).
	ks, err := multiparty.NewKeySwitchProtocol(params.ckks, rlwe.DefaultXe)
	if err != nil {
		return nil, fmt.Errorf("aggregation: key-switch protocol: %w", err)
	}
	rq := params.ckks.RingQ().AtLevel(params.ckks.MaxLevel())
	flood, err := newFloodSampler(rq, params.AggregateFloodingSigma(), params.aggregateTail(), rand)
	if err != nil {
		return nil, err
	}
	m := &Member{
		params: params, id: id, identity: identity, signer: signer, keys: keys, policy: policy, rand: rand,
		transcript: transcript, admitted: map[[32]byte][]byte{}, served: map[[32]byte]bool{},
		ks: ks, zero: rlwe.NewSecretKey(params.ckks), flood: flood,
	}
	if transcript != nil {
		for _, e := range transcript.entries {
			m.count(&e)
		}
	}
	return m, nil
}

// ID is the member's identity.
func (m *Member) ID() string { return m.id }

// floodingSigmas are the standard deviations of the flooding noise this
// member adds to each coefficient of a whole decryption share and to a
// coefficient share.
func (m *Member) floodingSigmas() (whole, coefficient float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, t := m.params.cfg.Flooding.Committee, 1
	if m.inst != nil {
		c, t = len(m.inst.members), m.inst.t
	}
	return m.flood.sigma, m.params.InfluenceFloodingSigma(c, t)
}

// Info is the public description to register with the coordinator.
func (m *Member) Info() MemberInfo {
	return MemberInfo{ID: m.id, PublicKey: m.identity.PublicKey(), SigningKey: m.signer.Public().(ed25519.PublicKey)}
}

// MarshalTranscript encodes the member's transcript for persistence
// ([Transcript.MarshalBinary]); nil before the first admitted request. The
// client persists it after every [Member.Admit], before any share of the
// request leaves.
func (m *Member) MarshalTranscript() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.transcript == nil {
		return nil, nil
	}
	return m.transcript.MarshalBinary()
}

// TranscriptHead is the position (number of entries) and head of the
// member's transcript; the genesis head of job before it took part in any
// decryption.
func (m *Member) TranscriptHead(job string) (int, [32]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.transcript == nil {
		return 0, GenesisHead(job)
	}
	return m.transcript.Len(), m.transcript.Head()
}

// Ready reports whether the member holds a threshold share for inst.
func (m *Member) Ready(inst [32]byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.inst != nil && m.inst.id == inst && m.tsk != nil
}

// KeyGenShares is what a member reveals once every commitment is in.
type KeyGenShares struct {
	// PublicKeyShare goes to the coordinator, for [AggregatePublicKey],
	// and from it to every other member, who checks it against the
	// member's commitment.
	PublicKeyShare []byte
	// Sealed maps each other member's ID to its sealed threshold share;
	// the coordinator relays each to its recipient unopened.
	Sealed map[string][]byte
}

// Commit starts key generation for inst: it checks that the instance lists
// this member's own keys and that every member's identity key is the pinned
// one, draws a fresh secret share and its public-key share on the common
// reference polynomial, and returns a signed [Commitment] to that share
// (with this member's signature of its X25519 key). The share itself is
// revealed only by [Member.Reveal]. Calling it again for the same instance
// returns the same commitment; a new instance discards the previous key
// state.
func (m *Member) Commit(inst *KeyGenInstance) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if inst == nil {
		return nil, fmt.Errorf("%w: nil instance", ErrInvalidInput)
	}
	if inst.params != m.params.ID() {
		return nil, fmt.Errorf("%w: instance made with parameters %x", ErrParametersMismatch, inst.params)
	}
	self, ok := inst.member(m.id)
	if !ok {
		return nil, fmt.Errorf("%w: %q not in instance %x", ErrNotMember, m.id, inst.id[:8])
	}
	if string(self.PublicKey) != string(m.identity.PublicKey()) {
		return nil, fmt.Errorf("%w: instance lists another X25519 key for %q", ErrMemberKey, m.id)
	}
	if string(self.SigningKey) != string(m.signer.Public().(ed25519.PublicKey)) {
		return nil, fmt.Errorf("%w: instance lists another identity key for %q", ErrMemberKey, m.id)
	}
	for _, peer := range inst.members {
		if _, err := inst.identityKey(m.keys, peer.ID); err != nil {
			return nil, err
		}
	}
	if m.inst != nil && m.inst.id == inst.id && m.commitment != nil {
		return m.commitment, nil
	}

	cp := m.params.ckks
	sk := ckks.NewKeyGenerator(cp).GenSecretKeyNew()
	ckg := multiparty.NewPublicKeyGenProtocol(cp)
	share := ckg.AllocateShare()
	ckg.GenShare(sk, inst.crp(m.params, ckg), &share)
	pkShare := marshalQP(m.params, kindPKShare, inst.id, share.Value)

	c := Commitment{Instance: inst.id, Member: m.id, Share: shareDigest(inst.id, m.id, pkShare)}
	c.X25519Signature = ed25519.Sign(m.signer, x25519Message(inst.job, m.id, self.PublicKey))
	c.Signature = ed25519.Sign(m.signer, commitmentMessage(inst.id, m.id, c.Share))
	b, err := c.MarshalBinary()
	if err != nil {
		return nil, err
	}
	m.inst, m.sk, m.pkShare, m.commitment = inst, sk, pkShare, b
	m.commits, m.out, m.pk, m.pkSig, m.tsk = nil, nil, nil, nil, nil
	return b, nil
}

// Reveal takes every member's commitment (map from member ID) and, only if
// all c are present and validly signed — every X25519 key the instance
// lists signed by its member's identity key, this member's own commitment
// unchanged — returns its public-key share and a Shamir share of its
// secret sealed for each other member (a polynomial of degree t−1
// evaluated at the member's point). Refusals wrap [ErrCommitment] or
// [ErrMemberKey], and nothing is sealed. Calling it again returns the same
// messages (for retransmission).
func (m *Member) Reveal(inst *KeyGenInstance, commitments map[string][]byte) (*KeyGenShares, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if inst == nil || m.inst == nil || m.inst.id != inst.id || m.commitment == nil {
		return nil, fmt.Errorf("%w: reveal for an instance this member has not committed in", ErrState)
	}
	if m.out != nil {
		return m.out, nil
	}
	var missing []string
	for _, peer := range inst.members {
		if _, ok := commitments[peer.ID]; !ok {
			missing = append(missing, peer.ID)
		}
	}
	if len(missing) > 0 || len(commitments) != len(inst.members) {
		return nil, fmt.Errorf("%w: %d commitments for %d members; missing %q: no share is revealed before all are in", ErrCommitment, len(commitments), len(inst.members), missing)
	}
	commits := make(map[string][32]byte, len(inst.members))
	for _, peer := range inst.members {
		c, err := inst.VerifyCommitment(m.keys, peer.ID, commitments[peer.ID])
		if err != nil {
			return nil, err
		}
		commits[peer.ID] = c.Share
	}
	if !bytes.Equal(commitments[m.id], m.commitment) {
		return nil, fmt.Errorf("%w: the commitment relayed as %q's own is not the one it made", ErrCommitment, m.id)
	}

	thr := multiparty.NewThresholdizer(m.params.ckks)
	poly, err := thr.GenShamirPolynomial(inst.t, m.sk)
	if err != nil {
		return nil, fmt.Errorf("aggregation: shamir polynomial: %w", err)
	}
	out := &KeyGenShares{PublicKeyShare: m.pkShare, Sealed: make(map[string][]byte, len(inst.members)-1)}
	share := thr.AllocateThresholdSecretShare()
	for _, peer := range inst.members {
		thr.GenShamirSecretShare(inst.points[peer.ID], poly, &share)
		if peer.ID == m.id {
			m.ownShare = multiparty.ShamirSecretShare{Poly: *share.Poly.CopyNew()}
			continue
		}
		plain := marshalQP(m.params, kindShamirShare, inst.id, share.Poly)
		sealed, err := seal(m.identity, peer.PublicKey, sealContext{instance: inst.id, sender: m.id, recipient: peer.ID}, plain, m.rand)
		clear(plain)
		if err != nil {
			return nil, err
		}
		out.Sealed[peer.ID] = sealed
	}
	// The secret share lives on only in the Shamir shares (its own and
	// those sealed); wipe it rather than leave it to the collector.
	for _, row := range append(m.sk.Value.Q.Coeffs, m.sk.Value.P.Coeffs...) {
		clear(row)
	}
	m.sk = nil
	m.commits, m.out = commits, out
	return out, nil
}

// CertifyPublicKey takes every member's revealed public-key share (map
// from member ID), checks each against the commitment verified in Reveal,
// aggregates the collective key itself and signs (job, instance, SHA-256
// of the marshalled key) with its identity key. It returns the key and the
// signature, which the coordinator hands to clients with the key. A share
// that does not match its commitment is refused with [ErrCommitment], and
// nothing is signed.
func (m *Member) CertifyPublicKey(inst *KeyGenInstance, shares map[string][]byte) (pk, sig []byte, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if inst == nil || m.inst == nil || m.inst.id != inst.id || m.commits == nil {
		return nil, nil, fmt.Errorf("%w: public-key shares for an instance this member has not revealed in", ErrState)
	}
	if m.pkSig != nil {
		return m.pk, m.pkSig, nil
	}
	for _, peer := range inst.members {
		b, ok := shares[peer.ID]
		if !ok {
			return nil, nil, fmt.Errorf("%w: no public-key share from %q", ErrIncomplete, peer.ID)
		}
		if d, want := shareDigest(inst.id, peer.ID, b), m.commits[peer.ID]; d != want {
			return nil, nil, fmt.Errorf("%w: the public-key share revealed for %q hashes to %x, it committed to %x", ErrCommitment, peer.ID, d[:8], want[:8])
		}
	}
	pk, err = AggregatePublicKey(m.params, inst, shares)
	if err != nil {
		return nil, nil, err
	}
	m.pk, m.pkSig = pk, ed25519.Sign(m.signer, keyMessage(inst.job, inst.id, sha256.Sum256(pk)))
	return m.pk, m.pkSig, nil
}

// ReceiveThresholdShares opens the threshold shares sealed for this member
// by every other member of inst (map from sender ID) and sums them with
// its own into its t-of-c threshold share. Every share must be present and
// open; on error the state is unchanged and the call may be repeated.
// Calling it again once the share is assembled is a no-op.
func (m *Member) ReceiveThresholdShares(inst *KeyGenInstance, sealed map[string][]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if inst == nil || m.inst == nil || m.inst.id != inst.id || m.out == nil {
		return fmt.Errorf("%w: threshold shares for an instance this member has not revealed in", ErrState)
	}
	if m.tsk != nil {
		return nil
	}
	if len(sealed) != len(inst.members)-1 {
		return fmt.Errorf("%w: %d threshold shares, expected %d", ErrIncomplete, len(sealed), len(inst.members)-1)
	}
	thr := multiparty.NewThresholdizer(m.params.ckks)
	sum := multiparty.ShamirSecretShare{Poly: *m.ownShare.Poly.CopyNew()}
	for _, peer := range inst.members {
		if peer.ID == m.id {
			continue
		}
		b, ok := sealed[peer.ID]
		if !ok {
			return fmt.Errorf("%w: no threshold share from %q", ErrIncomplete, peer.ID)
		}
		plain, err := open(m.identity, peer.PublicKey, sealContext{instance: inst.id, sender: peer.ID, recipient: m.id}, b)
		if err != nil {
			return fmt.Errorf("threshold share from %q: %w", peer.ID, err)
		}
		polys, err := unmarshalQP(m.params, kindShamirShare, 1, inst.id, plain)
		clear(plain)
		if err != nil {
			return fmt.Errorf("threshold share from %q: %w", peer.ID, err)
		}
		if err := thr.AggregateShares(sum, multiparty.ShamirSecretShare{Poly: polys[0]}, &sum); err != nil {
			return fmt.Errorf("aggregation: threshold share from %q: %w", peer.ID, err)
		}
	}
	points := make([]multiparty.ShamirPublicPoint, 0, len(inst.members))
	for _, p := range inst.members {
		points = append(points, inst.points[p.ID])
	}
	m.combiner = multiparty.NewCombiner(m.params.ckks, inst.points[m.id], points, inst.t)
	m.tsk = &sum
	return nil
}

// checkRequest applies the request-level policy: shape, key instance,
// contributors ≥ k, and participants = exactly t members including self.
func (m *Member) checkRequest(req DecryptRequest) error {
	if err := req.validate(); err != nil {
		return err
	}
	if m.inst == nil || m.tsk == nil {
		return fmt.Errorf("%w: member %q has no threshold share yet", ErrState, m.id)
	}
	if req.Key != m.inst.id {
		return fmt.Errorf("%w: request for key instance %x, member holds %x", ErrKeyMismatch, req.Key[:8], m.inst.id[:8])
	}
	if k := m.policy.minContributors; len(req.Contributors) < k {
		return fmt.Errorf("%w: %d contributors, at least %d required", ErrPolicy, len(req.Contributors), k)
	}
	if len(req.Participants) != m.inst.t {
		return fmt.Errorf("%w: %d participants, the threshold is %d", ErrInvalidInput, len(req.Participants), m.inst.t)
	}
	self := false
	for _, p := range req.Participants {
		if _, ok := m.inst.points[p]; !ok {
			return fmt.Errorf("%w: participant %q", ErrNotMember, p)
		}
		self = self || p == m.id
	}
	if !self {
		return fmt.Errorf("%w: %q is not among the request's participants", ErrNotMember, m.id)
	}
	return nil
}

// DecryptShare returns this member's decryption share of block `block` of
// the aggregate named by req, given that block's marshalled ciphertext.
// The request must have been admitted ([Member.Admit], which applies the
// transcript's rules; else [ErrNotAdmitted]); a second share of the same
// block is refused ([ErrAlreadyServed]); it fails with
// [ErrDigestMismatch] when ct does not hash to req.Digests[block]. The
// share is c1·λᵢ·sᵢ + e with λᵢ the Lagrange coefficient of this member
// for the participant set and e flooding noise of
// σ = [Parameters.AggregateFloodingSigma] (Mouchet et al., ePrint
// 2022/780; doc.go, "Noise flooding"). Beyond the flooding caps (more
// contributors, or more block decryptions than the bound covers) it fails
// with [ErrFloodingBudget] at admission.
func (m *Member) DecryptShare(req DecryptRequest, block int, ct []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if req.Purpose == PurposeInfluence {
		// An influence ciphertext may only ever release its constant
		// coefficient (DecryptCoefficientShare); its whole polynomial
		// would reveal far more than one scalar per client.
		return nil, fmt.Errorf("%w: purpose %q is served only as a coefficient share", ErrPolicy, PurposeInfluence)
	}
	if err := m.checkRequest(req); err != nil {
		return nil, err
	}
	if block < 0 || block >= len(req.Digests) {
		return nil, fmt.Errorf("%w: block %d of %d", ErrInvalidInput, block, len(req.Digests))
	}
	if d := sha256.Sum256(ct); d != req.Digests[block] {
		return nil, fmt.Errorf("%w: block %d hashes to %x, request names %x", ErrDigestMismatch, block, d[:8], req.Digests[block][:8])
	}
	id := req.ID()
	if _, ok := m.admitted[id]; !ok {
		return nil, fmt.Errorf("%w: member %q: request %x (round %d, %s) was not admitted (Member.Admit)", ErrNotAdmitted, m.id, id[:8], req.Round, req.Purpose)
	}
	if m.served[req.Digests[block]] {
		return nil, fmt.Errorf("%w: %w: member %q already produced a share of block %d (digest %x)", ErrPolicy, ErrAlreadyServed, m.id, block, req.Digests[block][:8])
	}
	c, info, err := parseCiphertext(m.params, ct)
	if err != nil {
		return nil, err
	}
	if info.key != m.inst.id {
		return nil, fmt.Errorf("%w: ciphertext under key instance %x", ErrKeyMismatch, info.key[:8])
	}
	if info.block != block || info.blocks != len(req.Digests) {
		return nil, fmt.Errorf("%w: ciphertext is block %d of %d, request asks block %d of %d", ErrBlockMismatch, info.block, info.blocks, block, len(req.Digests))
	}
	// Only a request whose ciphertext VerifyAggregate found to be a sum of
	// client-signed ciphertexts gets a share (verify.go).
	if err := m.requireVerified(req); err != nil {
		return nil, err
	}

	active := make([]multiparty.ShamirPublicPoint, len(req.Participants))
	for i, p := range req.Participants {
		active[i] = m.inst.points[p]
	}
	additive := rlwe.NewSecretKey(m.params.ckks)
	if err := m.combiner.GenAdditiveShare(active, m.inst.points[m.id], *m.tsk, additive); err != nil {
		return nil, fmt.Errorf("aggregation: additive share: %w", err)
	}
	share := m.ks.AllocateShare(c.Level())
	m.ks.GenShare(additive, m.zero, c, &share)
	// GenShare leaves coefficients lazily reduced (below 2q); the wire
	// form requires canonical residues. The flooding noise is drawn in
	// the coefficient domain and added in the NTT domain of the share.
	rq := m.params.ckks.RingQ().AtLevel(c.Level())
	noise := rq.NewPoly()
	m.flood.add(noise)
	rq.NTT(noise, noise)
	rq.Add(share.Value, noise, share.Value)
	rq.Reduce(share.Value, share.Value)
	// Sent divided (rounded) by the primes above the share level, which
	// the combiner would drop before decoding anyway (params.go,
	// shareLevel): after the flooding, so the rounded share is a function
	// of the one it stands for and reveals nothing more.
	for lvl := c.Level(); lvl > m.params.shareLevel(); lvl-- {
		m.params.ckks.RingQ().AtLevel(lvl).DivRoundByLastModulusNTT(share.Value, share.Value)
	}
	// The additive share is the secret scaled by a public constant:
	// wipe it rather than leave it to the garbage collector.
	for _, row := range append(additive.Value.Q.Coeffs, additive.Value.P.Coeffs...) {
		clear(row)
	}

	m.served[req.Digests[block]] = true
	return marshalDecryptShare(m.params, m.inst.id, id, block, len(req.Digests), share.Value), nil
}

// A decryption share is the base header (key = key instance, version
// [shareVersion]) followed by the request ID, the block index and count,
// then one polynomial over the Q primes up to [Parameters.shareLevel]:
// the share c₁·λᵢ·s̃ᵢ + eᵢ divided, rounded, by the primes above it.
const decryptShareExtra = 32 + 8

// shareVersion is the version of the decryption-share kind: 2 since shares
// are sent at the share level (version 1 carried every Q prime).
const shareVersion = 2

func (p Parameters) shareLayout() layout {
	return layout{kind: kindDecryptShare, version: shareVersion, levelQ: p.shareLevel(), polys: 1, extra: decryptShareExtra}
}

func marshalDecryptShare(p Parameters, key, req [32]byte, block, blocks int, poly ring.Poly) []byte {
	l := p.shareLayout()
	out := make([]byte, l.size(p.ckks.N()))
	putHeader(out, p, l, key)
	copy(out[baseHeaderSize:], req[:])
	binary.BigEndian.PutUint32(out[baseHeaderSize+32:], uint32(block))
	binary.BigEndian.PutUint32(out[baseHeaderSize+36:], uint32(blocks))
	putRows(out[baseHeaderSize+decryptShareExtra:], poly.Coeffs[:l.levelQ+1])
	return out
}
