package aggregation

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/ring"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
)

// PurposeInfluence is the purpose of a [DecryptRequest] for one client's
// influence scalar aᵢ = ⟨∇L_val(w_r), nᵢ·Δᵢ⟩ (docs/DESIGN.md §3). Members serve it
// only as a coefficient share ([Member.DecryptCoefficientShare]) and
// refuse it for a whole decryption ([Member.DecryptShare]).
const PurposeInfluence = "influence"

// influenceGradientBits fixes the gradient's encoding scale Δ_g: the
// largest gradient entry is encoded at 2^25 ≤ max|g|·Δ_g < 2^26 (see the
// modulus budget in doc.go and [Parameters.InfluenceMaxL1]). The product
// with a client ciphertext then has scale 2^LogDefaultScale·Δ_g and is not
// rescaled: with the default set its constant coefficient stays below Q/8
// whenever D·‖nᵢΔᵢ‖₁ ≤ 2^61, while the rounding of the gradient costs a
// relative error of about 2^-25·√N in the slots (TestInfluencePrecision).
const influenceGradientBits = 26

// Range of the gradient's log scale: entries above 2^30 are refused (no
// trained model has them), and a gradient below 2^-60 is encoded as if its
// largest entry were 2^-60 rather than at an unbounded scale.
const (
	maxGradientLog   = 30
	minLogGradScale  = influenceGradientBits - maxGradientLog - 1
	maxLogGradScale  = influenceGradientBits + 60
	influenceExtra   = 8
	influenceHeader  = baseHeaderSize + influenceExtra
	influenceMaxLogD = 16
)

// InfluenceMaxL1 is the budget of the influence mode: a client's scalar aᵢ
// decodes exactly when D·‖nᵢ·Δᵢ‖₁·max|g|/2^⌈log₂max|g|⌉ stays below it,
// with D ≥ 1 the common denominator of the Lagrange coefficients of the
// committee members whose coefficient shares are combined (1 for t
// consecutive members, at most 2^11.5 for committees of up to 12). With the
// default parameters (Q ≈ 2^180, scale 2^104) it is 2^61 ≈ 2.3e18; P = 1e5 parameters with
// nᵢ ≤ 1e4 and |Δ| ≤ 1 give ‖nᵢΔᵢ‖₁ ≤ 1e9 ≈ 2^30.
func (p Parameters) InfluenceMaxL1() float64 {
	// |D·c₀| < Q/8 with c₀ ≤ 2^scale·2^bits·‖x‖₁/slots.
	logQ := 0.0
	for _, q := range p.ckks.Q() {
		logQ += math.Log2(float64(q))
	}
	return math.Exp2(math.Floor(logQ) - 3 - float64(p.cfg.LogDefaultScale) - influenceGradientBits + math.Log2(float64(p.Slots())))
}

// Influence computes, homomorphically and streaming, each client's
// influence ciphertext: for every block b it multiplies the client's
// ciphertext by the plaintext of the validation gradient's block b (zero in
// the weight slot and in unused slots) and adds the product into that
// client's running ciphertext. The constant coefficient of the result is
// Δ·Δ_g·aᵢ/slots (the scaled mean of the slot products, see doc.go), which
// [Member.DecryptCoefficientShare] and [Decryptor.CombineCoefficient]
// decrypt without ever decrypting anything else. No rotation keys.
//
// Memory: the gradient plaintexts (one polynomial per block) plus one
// ciphertext per client with blocks in flight. Add is safe for concurrent
// use (clients in parallel; one client's blocks are serialised); Finalize
// may run concurrently with Add of other clients.
type Influence struct {
	params    Parameters
	key       [32]byte
	numParams int
	blocks    int
	logScale  int
	grad      []ring.Poly // per block, NTT and Montgomery form, top level
	moduli    []uint64
	mred      []uint64

	mu      sync.Mutex
	clients map[string]*influenceClient
}

type influenceClient struct {
	mu   sync.Mutex
	sum  *rlwe.Ciphertext
	got  []bool
	n    int
	done bool
	// product is a finished influence ciphertext an edge computed
	// (AddProduct); Finalize returns it as it is.
	product []byte
}

// NewInfluence encodes the validation gradient grad (length numParams,
// finite, entries at most 2^30 in magnitude) block by block as plaintexts,
// for ciphertexts under the key of key-generation instance key.
func NewInfluence(params Parameters, key [32]byte, grad []float64, numParams int) (*Influence, error) {
	if numParams <= 0 || len(grad) != numParams {
		return nil, fmt.Errorf("%w: gradient of %d entries for %d parameters", ErrInvalidInput, len(grad), numParams)
	}
	maxAbs := 0.0
	for j, g := range grad {
		if math.IsNaN(g) || math.IsInf(g, 0) {
			return nil, fmt.Errorf("%w: gradient entry %d is %v", ErrInvalidInput, j, g)
		}
		maxAbs = max(maxAbs, math.Abs(g))
	}
	if maxAbs > math.Exp2(maxGradientLog) {
		return nil, fmt.Errorf("%w: gradient entry of magnitude %g above 2^%d", ErrInvalidInput, maxAbs, maxGradientLog)
	}
	logScale := maxLogGradScale
	if maxAbs > 0 {
		// maxAbs = f·2^e with f in [0.5, 1): max|g|·2^(bits−e) in [2^(bits−1), 2^bits).
		_, e := math.Frexp(maxAbs)
		logScale = min(influenceGradientBits-e, maxLogGradScale)
	}
	cp := params.ckks
	level := cp.MaxLevel()
	inf := &Influence{
		params:    params,
		key:       key,
		numParams: numParams,
		blocks:    params.Blocks(numParams),
		logScale:  logScale,
		moduli:    cp.RingQ().ModuliChain()[:level+1],
		mred:      cp.RingQ().MRedConstants()[:level+1],
		clients:   map[string]*influenceClient{},
	}
	ecd := ckks.NewEncoder(cp, uint(params.cfg.EncoderPrecision))
	rq := cp.RingQ().AtLevel(level)
	slots := params.Slots()
	vals := make([]float64, slots)
	inf.grad = make([]ring.Poly, inf.blocks)
	for b := range inf.grad {
		clear(vals)
		if start := b * slots; start < numParams {
			copy(vals, grad[start:])
		}
		pt := ckks.NewPlaintext(cp, level)
		pt.Scale = rlwe.NewScale(math.Exp2(float64(logScale)))
		if err := ecd.Encode(vals, pt); err != nil {
			return nil, fmt.Errorf("aggregation: encode gradient block %d: %w", b, err)
		}
		rq.MForm(pt.Value, pt.Value)
		inf.grad[b] = pt.Value
	}
	return inf, nil
}

// Blocks is the number of ciphertexts each client sends.
func (f *Influence) Blocks() int { return f.blocks }

// LogGradientScale is log₂ Δ_g, the scale the gradient was encoded at.
func (f *Influence) LogGradientScale() int { return f.logScale }

// Add validates one marshalled ciphertext from client exactly as
// [Accumulator.Add] does, multiplies it by the gradient plaintext of its
// block and adds the product into client's running ciphertext. A second
// ciphertext for the same (client, block) fails with [ErrDuplicate] and
// changes nothing; a ciphertext for a client already finalised fails with
// [ErrState].
func (f *Influence) Add(client string, ct []byte) error {
	info, err := checkContribution(f.params, f.key, f.blocks, client, ct)
	if err != nil {
		return err
	}
	f.mu.Lock()
	st := f.clients[client]
	if st == nil {
		st = &influenceClient{got: make([]bool, f.blocks)}
		f.clients[client] = st
	}
	f.mu.Unlock()

	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done || st.product != nil {
		return fmt.Errorf("%w: influence of client %q already finalised", ErrState, client)
	}
	if st.got[info.block] {
		return fmt.Errorf("%w: client %q block %d", ErrDuplicate, client, info.block)
	}
	if st.sum == nil {
		st.sum = ckks.NewCiphertext(f.params.ckks, 1, f.params.ckks.MaxLevel())
	}
	// c₀ goes in as its wire form c₀' (rows below q_L) and the product
	// sum is lifted once, at Finalize: Σ_b (q_L·c₀'_b)·g_b = q_L·Σ_b c₀'_b·g_b.
	c0, c1 := splitCiphertext(ct)
	f.mulAddRows(st.sum.Value[0], info.block, c0, f.params.c0Rows())
	f.mulAddC1(st.sum.Value[1], info.block, c1)
	st.got[info.block] = true
	st.n++
	return nil
}

// mulAddC1 adds into acc the product of one ciphertext polynomial (its
// marshalled rows, src) with the gradient's block b. Members use it on c₁
// alone to recompute a client's product (verify.go), exactly as Add does.
func (f *Influence) mulAddC1(acc ring.Poly, b int, src []byte) {
	f.mulAddRows(acc, b, src, len(f.moduli))
}

// mulAddRows is mulAddC1 over the first rows Q rows of src.
func (f *Influence) mulAddRows(acc ring.Poly, b int, src []byte, rows int) {
	n := f.params.ckks.N()
	g := f.grad[b].Coeffs
	for r, q := range f.moduli[:rows] {
		// Fused read, Montgomery product with the gradient (stored as
		// g·2^64 mod q, so MRed gives x·g mod q) and reduced add: the
		// ciphertext is never copied into a lattigo polynomial.
		row := src[r*n*8:]
		out, gr, mred := acc.Coeffs[r], g[r], f.mred[r]
		for i := range out {
			s := out[i] + ring.MRed(binary.LittleEndian.Uint64(row[8*i:]), gr[i], q, mred)
			if s >= q {
				s -= q
			}
			out[i] = s
		}
	}
}

// Finalize returns client's influence ciphertext, marshalled, and its
// SHA-256 digest (for [NewInfluenceRequest]) once every block of the client
// is in; it fails with [ErrIncomplete] before, and with [ErrState] the
// second time. The running ciphertext is released.
func (f *Influence) Finalize(client string) ([]byte, [32]byte, error) {
	f.mu.Lock()
	st := f.clients[client]
	f.mu.Unlock()
	if st == nil {
		return nil, [32]byte{}, fmt.Errorf("%w: no ciphertext from client %q", ErrIncomplete, client)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return nil, [32]byte{}, fmt.Errorf("%w: influence of client %q already finalised", ErrState, client)
	}
	if st.n != f.blocks {
		return nil, [32]byte{}, fmt.Errorf("%w: client %q delivered %d of %d blocks", ErrIncomplete, client, st.n, f.blocks)
	}
	if st.product != nil {
		out, digest := st.finalizeProduct()
		return out, digest, nil
	}
	liftC0(f.params, st.sum.Value[0])
	out := marshalInfluence(f.params, f.key, f.logScale, f.blocks, st.sum)
	st.done, st.sum = true, nil
	return out, sha256.Sum256(out), nil
}

// NewInfluenceRequest is the canonical request for client's influence
// ciphertext (digest from [Influence.Finalize]) in round, committed to the
// multiplier vector whose [GradientDigest] is gradient, addressed to
// participants: every committee member asked, at least t of them. Unlike a
// whole decryption, any t of their coefficient shares combine, so the
// coordinator asks all the members it can reach at once.
func NewInfluenceRequest(key [32]byte, round uint64, client string, digest, gradient [32]byte, participants []string) DecryptRequest {
	return DecryptRequest{
		Key:          key,
		Purpose:      PurposeInfluence,
		Round:        round,
		Digests:      [][32]byte{digest},
		Contributors: []string{client},
		Participants: participants,
		Gradient:     gradient,
	}.Canonical()
}

// An influence ciphertext is the base header (key = key instance), the
// gradient's log scale (big-endian int32) and the number of blocks summed
// (uint32), then c0 and c1 over Q at the top level.
func (p Parameters) influenceLayout() layout {
	return layout{kind: kindInfluence, levelQ: p.ckks.MaxLevel(), polys: 2, extra: influenceExtra}
}

func marshalInfluence(p Parameters, key [32]byte, logScale, blocks int, ct *rlwe.Ciphertext) []byte {
	l := p.influenceLayout()
	out := make([]byte, l.size(p.ckks.N()))
	putHeader(out, p, l, key)
	binary.BigEndian.PutUint32(out[baseHeaderSize:], uint32(int32(logScale)))
	binary.BigEndian.PutUint32(out[baseHeaderSize+4:], uint32(blocks))
	off := influenceHeader
	off += putRows(out[off:], ct.Value[0].Coeffs)
	putRows(out[off:], ct.Value[1].Coeffs)
	return out
}

// influenceInfo is what an influence ciphertext's header says.
type influenceInfo struct {
	key      [32]byte
	logScale int
	blocks   int
}

// parseInfluence validates the whole of b and decodes it (NTT domain, top
// level).
func parseInfluence(p Parameters, b []byte) (*rlwe.Ciphertext, influenceInfo, error) {
	l := p.influenceLayout()
	h, err := checkHeader(b, p, l)
	if err != nil {
		return nil, influenceInfo{}, err
	}
	info := influenceInfo{
		key:      h.key,
		logScale: int(int32(binary.BigEndian.Uint32(b[baseHeaderSize:]))),
		blocks:   int(binary.BigEndian.Uint32(b[baseHeaderSize+4:])),
	}
	if info.logScale < minLogGradScale || info.logScale > maxLogGradScale {
		return nil, info, fmt.Errorf("%w: %v: gradient log scale %d outside [%d, %d]", ErrMalformed, l.kind, info.logScale, minLogGradScale, maxLogGradScale)
	}
	if info.blocks < 1 || info.blocks > maxBlocks {
		return nil, info, fmt.Errorf("%w: %v: %d blocks", ErrMalformed, l.kind, info.blocks)
	}
	if err := checkCoeffs(b[influenceHeader:], p.moduliRows(l), p.ckks.N(), 2, l.kind); err != nil {
		return nil, info, err
	}
	ct := ckks.NewCiphertext(p.ckks, 1, p.ckks.MaxLevel())
	off := influenceHeader
	off += readRows(b[off:], ct.Value[0].Coeffs)
	readRows(b[off:], ct.Value[1].Coeffs)
	return ct, info, nil
}
