package aggregation

import (
	"crypto/sha256"
	"fmt"
	"math"
	"math/big"
	"math/bits"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/ring"
)

// A coefficient share is the base header (key = key instance) followed by
// the request ID, then one word per Q modulus of the ciphertext's level:
// the constant coefficient of c₁·s̃ᵢ + eᵢ and nothing else (56 bytes of
// payload header + 8·(level+1) bytes; 96 bytes with the default set,
// against 256 KiB for a whole decryption share).
const coefficientShareExtra = 32

func (p Parameters) coefficientShareLayout() layout {
	return layout{kind: kindCoefficientShare, levelQ: p.ckks.MaxLevel(), polys: 1, extra: coefficientShareExtra, coeffs: 1}
}

// CoefficientShareSize is the size in bytes of one marshalled coefficient
// share.
func (p Parameters) CoefficientShareSize() int {
	return p.coefficientShareLayout().size(p.ckks.N())
}

// coefficientShare is a decoded coefficient share.
type coefficientShare struct {
	key, request [32]byte
	values       []uint64 // one per Q modulus, reduced
}

func (s coefficientShare) marshal(p Parameters) []byte {
	l := p.coefficientShareLayout()
	out := make([]byte, l.size(p.ckks.N()))
	putHeader(out, p, l, s.key)
	copy(out[baseHeaderSize:], s.request[:])
	putRows(out[baseHeaderSize+coefficientShareExtra:], [][]uint64{s.values})
	return out
}

// parseCoefficientShare validates b completely (header, parameters, level,
// exact size, every word reduced) and decodes it.
func parseCoefficientShare(p Parameters, b []byte) (coefficientShare, error) {
	l := p.coefficientShareLayout()
	h, err := checkHeader(b, p, l)
	if err != nil {
		return coefficientShare{}, err
	}
	data := b[baseHeaderSize+coefficientShareExtra:]
	if err := checkCoeffs(data, p.moduliRows(l), 1, 1, l.kind); err != nil {
		return coefficientShare{}, err
	}
	s := coefficientShare{key: h.key, values: make([]uint64, l.levelQ+1)}
	copy(s.request[:], b[baseHeaderSize:])
	readRows(data, [][]uint64{s.values})
	return s, nil
}

// checkInfluenceRequest is the shape every influence request must have,
// for members and the decryptor alike: purpose "influence", exactly one
// digest and one contributor (the client whose scalar it is: the one case
// below k contributors, allowed because only one coefficient is released),
// and between t and c participants, all committee members.
func checkInfluenceRequest(req DecryptRequest, inst *KeyGenInstance) error {
	if err := req.validate(); err != nil {
		return err
	}
	if req.Purpose != PurposeInfluence {
		return fmt.Errorf("%w: coefficient shares are only for purpose %q, not %q", ErrPolicy, PurposeInfluence, req.Purpose)
	}
	if len(req.Digests) != 1 || len(req.Contributors) != 1 {
		return fmt.Errorf("%w: an influence request names one digest and one contributor, not %d and %d", ErrPolicy, len(req.Digests), len(req.Contributors))
	}
	if req.Key != inst.id {
		return fmt.Errorf("%w: request for key instance %x, committee holds %x", ErrKeyMismatch, req.Key[:8], inst.id[:8])
	}
	if len(req.Participants) < inst.t {
		return fmt.Errorf("%w: %d participants, the threshold is %d", ErrInvalidInput, len(req.Participants), inst.t)
	}
	for _, p := range req.Participants {
		if _, ok := inst.points[p]; !ok {
			return fmt.Errorf("%w: participant %q", ErrNotMember, p)
		}
	}
	return nil
}

// DecryptCoefficientShare returns this member's share of the constant
// coefficient of an influence ciphertext ([Influence.Finalize]) and of
// nothing else: (c₁·s̃ᵢ)₀ + eᵢ modulo each Q prime of the ciphertext's
// level, s̃ᵢ the member's Shamir share of the key and eᵢ one Gaussian
// sample of σ = [Parameters.InfluenceFloodingSigma] for the committee
// (fails with [ErrFloodingBudget] beyond the flooding caps). The Lagrange coefficient is not applied, so
// the share does not depend on which members answer and the coordinator
// combines any t of them (see doc.go, "Influence").
//
// Policy: purpose [PurposeInfluence] only; exactly one contributor and one
// digest; ct must hash to the digest; the member must be among the
// participants; and the request must have been admitted ([Member.Admit]),
// which allows at most L scalars per (job, round, client), ever: across
// retries, attempts, participant sets, digests and key instances, from the
// job's transcript ([ErrScalarBudget]), and no scalar for a round before
// the transcript's latest ([ErrStaleRound]). The digest is in the
// transcript, so no whole share of it can follow.
func (m *Member) DecryptCoefficientShare(req DecryptRequest, ct []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inst == nil || m.tsk == nil {
		return nil, fmt.Errorf("%w: member %q has no threshold share yet", ErrState, m.id)
	}
	if err := checkInfluenceRequest(req, m.inst); err != nil {
		return nil, err
	}
	self := false
	for _, p := range req.Participants {
		self = self || p == m.id
	}
	if !self {
		return nil, fmt.Errorf("%w: %q is not among the request's participants", ErrNotMember, m.id)
	}
	// The ciphertext VerifyAggregate verified for this request hashes to
	// the digest; any other is hashed.
	if !m.isVerifiedCiphertext(req.ID(), ct) {
		if d := sha256.Sum256(ct); d != req.Digests[0] {
			return nil, fmt.Errorf("%w: influence ciphertext hashes to %x, request names %x", ErrDigestMismatch, d[:8], req.Digests[0][:8])
		}
	}
	if _, ok := m.admitted[req.ID()]; !ok {
		return nil, fmt.Errorf("%w: member %q: influence request for %q round %d was not admitted (Member.Admit)", ErrNotAdmitted, m.id, req.Contributors[0], req.Round)
	}
	if m.served[req.Digests[0]] {
		return nil, fmt.Errorf("%w: %w: member %q already produced a coefficient share of digest %x", ErrPolicy, ErrAlreadyServed, m.id, req.Digests[0][:8])
	}
	c, info, err := parseInfluence(m.params, ct)
	if err != nil {
		return nil, err
	}
	if info.key != m.inst.id {
		return nil, fmt.Errorf("%w: influence ciphertext under key instance %x", ErrKeyMismatch, info.key[:8])
	}
	if err := m.checkCoefficientBudget(info.blocks); err != nil {
		return nil, err
	}
	// Only an influence ciphertext VerifyAggregate found to be the product
	// of the client's signed ciphertexts with the committed vector.
	if err := m.requireVerified(req); err != nil {
		return nil, err
	}
	level := c.Level()
	noise, err := m.coefficientNoise(level)
	if err != nil {
		return nil, err
	}

	// Only the constant coefficient of the key-switch share towards the
	// zero key is released, so only it is computed: (c₁·s̃ᵢ)₀ =
	// N⁻¹·Σⱼ ĉ₁ⱼ·ŝⱼ mod q, the trace of the NTT-domain product (the
	// evaluations of a polynomial at the N roots of its ring sum to N
	// times its constant coefficient), O(N) per prime and no inverse NTT;
	// plus one sample of lattigo's key-switch error and one of the
	// flooding noise of σ = [Parameters.InfluenceFloodingSigma] for this
	// committee, each one integer reduced at every prime (see doc.go,
	// "Influence", computing only what is released).
	out := coefficientShare{key: m.inst.id, request: req.ID(), values: make([]uint64, level+1)}
	e := noise.sample()
	rq := m.params.ckks.RingQ()
	mred := rq.MRedConstants()
	n := uint64(m.params.ckks.N())
	for l, q := range rq.ModuliChain()[:level+1] {
		c1, sk := c.Value[1].Coeffs[l], m.tsk.Poly.Q.Coeffs[l]
		// A 128-bit sum (N terms below 2^64), reduced once: no branch on
		// the secret.
		var hi, lo, carry uint64
		for j, x := range c1 {
			// ŝ is in Montgomery form: MRed gives ĉ₁ⱼ·ŝⱼ mod q.
			lo, carry = bits.Add64(lo, ring.MRed(x, sk[j], q, mred[l]), 0)
			hi += carry
		}
		acc := bits.Rem64(hi, lo, q)
		ninv := new(big.Int).ModInverse(new(big.Int).SetUint64(n%q), new(big.Int).SetUint64(q)).Uint64()
		hi, lo = bits.Mul64(acc, ninv)
		v, _ := bits.Add64(bits.Rem64(hi, lo, q), e[l]%q, 0)
		out.values[l] = v % q
		hi, lo, acc = 0, 0, 0
	}
	clear(e)

	m.served[req.Digests[0]] = true
	return out.marshal(m.params), nil
}

// CombineCoefficient returns client req.Contributors[0]'s influence scalar
// aᵢ = ⟨∇L_val, nᵢ·Δᵢ⟩ from its influence ciphertext ct and the
// coefficient shares of at least t of req.Participants (map from member ID;
// any t suffice, extra ones are ignored). It picks, deterministically, the
// t answering members whose integer Lagrange coefficients have the
// smallest common denominator D, and fails with [ErrDecryption] when the
// combination lands outside the modulus budget (wrong shares, or
// D·‖nᵢΔᵢ‖₁ beyond [Parameters.InfluenceMaxL1]).
func (d *Decryptor) CombineCoefficient(req DecryptRequest, ct []byte, shares map[string][]byte) (float64, error) {
	if err := checkInfluenceRequest(req, d.inst); err != nil {
		return 0, err
	}
	if h := sha256.Sum256(ct); h != req.Digests[0] {
		return 0, fmt.Errorf("%w: influence ciphertext hashes to %x, request names %x", ErrDigestMismatch, h[:8], req.Digests[0][:8])
	}
	c, info, err := parseInfluence(d.params, ct)
	if err != nil {
		return 0, err
	}
	if info.key != d.inst.id {
		return 0, fmt.Errorf("%w: influence ciphertext under key instance %x", ErrKeyMismatch, info.key[:8])
	}
	id := req.ID()
	var points []int64
	var values [][]uint64
	for _, p := range req.Participants {
		b, ok := shares[p]
		if !ok {
			continue
		}
		s, err := parseCoefficientShare(d.params, b)
		if err != nil {
			return 0, fmt.Errorf("share from %q: %w", p, err)
		}
		if s.key != d.inst.id {
			return 0, fmt.Errorf("share from %q: %w: under key instance %x", p, ErrKeyMismatch, s.key[:8])
		}
		if s.request != id {
			return 0, fmt.Errorf("share from %q: %w: for request %x, expected %x", p, ErrInvalidInput, s.request[:8], id[:8])
		}
		points = append(points, int64(d.inst.points[p]))
		values = append(values, s.values)
	}
	if len(shares) != len(points) {
		return 0, fmt.Errorf("%w: shares from members not among the participants", ErrInvalidInput)
	}
	if len(points) < d.inst.t {
		return 0, fmt.Errorf("%w: %d coefficient shares, the threshold is %d", ErrIncomplete, len(points), d.inst.t)
	}
	pick := bestSubset(points, d.inst.t)
	ps, vs := make([]int64, len(pick)), make([][]uint64, len(pick))
	for i, j := range pick {
		ps[i], vs[i] = points[j], values[j]
	}
	return d.combineCoefficient(c, info.logScale, ps, vs)
}

// combineCoefficient interpolates the shares at the given Shamir points
// (however many) and decodes. Tests call it with t−1 shares.
func (d *Decryptor) combineCoefficient(c *rlwe.Ciphertext, logScale int, points []int64, values [][]uint64) (float64, error) {
	coeffs, den := lagrangeAtZero(points)
	if den.BitLen() > influenceMaxLogD {
		return 0, fmt.Errorf("%w: Lagrange denominator of %d bits for points %v", ErrDecryption, den.BitLen(), points)
	}
	level := c.Level()
	moduli := d.params.ckks.RingQ().ModuliChain()[:level+1]
	rq := d.params.ckks.RingQ().AtLevel(level)
	c0 := rq.NewPoly()
	rq.INTT(c.Value[0], c0)
	// D·c₀[0] + Σ (D·λᵢ)·shareᵢ ≡ D·(m₀ + e) + Σ (D·λᵢ)·eᵢ (mod Q): every
	// factor is a small integer, so the flooding noise stays small.
	residues := make([]uint64, len(moduli))
	var acc, q, t big.Int
	for l, ql := range moduli {
		q.SetUint64(ql)
		acc.Mul(den, t.SetUint64(c0.Coeffs[l][0]))
		for i, v := range values {
			acc.Add(&acc, t.Mul(coeffs[i], t.SetUint64(v[l])))
		}
		residues[l] = acc.Mod(&acc, &q).Uint64()
	}
	v := centeredCRT(moduli, func(l int) uint64 { return residues[l] })
	// Q/8 is the budget's bound: beyond it the value is not an honest
	// combination of honest shares.
	bigQ := big.NewInt(1)
	for _, ql := range moduli {
		bigQ.Mul(bigQ, q.SetUint64(ql))
	}
	if v.CmpAbs(bigQ.Rsh(bigQ, 3)) >= 0 {
		return 0, fmt.Errorf("%w: constant coefficient of %d bits beyond the budget", ErrDecryption, v.BitLen())
	}
	f, _ := new(big.Float).Quo(new(big.Float).SetInt(v), new(big.Float).SetInt(den)).Float64()
	// The constant coefficient is Δ·Δ_g·(mean of the slot products).
	return math.Ldexp(f, -(d.params.cfg.LogDefaultScale+logScale)) * float64(d.params.Slots()), nil
}

// lagrangeAtZero returns integers cᵢ and D > 0 such that cᵢ/D are the
// Lagrange coefficients at zero of the distinct non-zero points:
// f(0) = Σ (cᵢ/D)·f(xᵢ) for every polynomial f of degree < len(points).
func lagrangeAtZero(points []int64) ([]*big.Int, *big.Int) {
	lambda := make([]*big.Rat, len(points))
	den := big.NewInt(1)
	for i, xi := range points {
		num, dn := big.NewInt(1), big.NewInt(1)
		for j, xj := range points {
			if j != i {
				num.Mul(num, big.NewInt(xj))
				dn.Mul(dn, big.NewInt(xj-xi))
			}
		}
		lambda[i] = new(big.Rat).SetFrac(num, dn)
		d := lambda[i].Denom()
		g := new(big.Int).GCD(nil, nil, den, d)
		den.Mul(den, new(big.Int).Quo(d, g))
	}
	coeffs := make([]*big.Int, len(points))
	for i, l := range lambda {
		c := new(big.Rat).Mul(l, new(big.Rat).SetInt(den))
		coeffs[i] = new(big.Int).Set(c.Num())
	}
	return coeffs, den
}

// maxSubsets caps the search of bestSubset; C(12, 6) = 924 fits.
const maxSubsets = 4096

// bestSubset returns the indices of the t points (among the sorted
// distinct points) whose Lagrange coefficients have the smallest common
// denominator, then the smallest Σ|cᵢ| (the flooding noise's growth), the
// lexicographically first on ties, looking at most at maxSubsets subsets.
// Consecutive points have D = 1.
func bestSubset(points []int64, t int) []int {
	idx := make([]int, t)
	for i := range idx {
		idx[i] = i
	}
	best := append([]int(nil), idx...)
	var bestD, bestAmp *big.Int
	for n := 0; n < maxSubsets; n++ {
		ps := make([]int64, t)
		for i, j := range idx {
			ps[i] = points[j]
		}
		coeffs, den := lagrangeAtZero(ps)
		amp := new(big.Int)
		for _, c := range coeffs {
			amp.Add(amp, new(big.Int).Abs(c))
		}
		if bestD == nil || den.Cmp(bestD) < 0 || (den.Cmp(bestD) == 0 && amp.Cmp(bestAmp) < 0) {
			bestD, bestAmp = den, amp
			copy(best, idx)
		}
		// Next combination in lexicographic order.
		i := t - 1
		for i >= 0 && idx[i] == len(points)-t+i {
			i--
		}
		if i < 0 {
			break
		}
		idx[i]++
		for j := i + 1; j < t; j++ {
			idx[j] = idx[j-1] + 1
		}
	}
	return best
}

// centeredCRT reconstructs, from its residues modulo moduli, the integer
// in (−Q/2, Q/2].
func centeredCRT(moduli []uint64, residue func(l int) uint64) *big.Int {
	bigQ := big.NewInt(1)
	for _, q := range moduli {
		bigQ.Mul(bigQ, new(big.Int).SetUint64(q))
	}
	v := new(big.Int)
	for l, q := range moduli {
		ql := new(big.Int).SetUint64(q)
		hat := new(big.Int).Quo(bigQ, ql)
		inv := new(big.Int).ModInverse(new(big.Int).Mod(hat, ql), ql)
		term := new(big.Int).Mul(new(big.Int).SetUint64(residue(l)), inv)
		term.Mod(term, ql).Mul(term, hat)
		v.Add(v, term)
	}
	v.Mod(v, bigQ)
	if v.Cmp(new(big.Int).Rsh(bigQ, 1)) > 0 {
		v.Sub(v, bigQ)
	}
	return v
}
