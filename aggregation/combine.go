package aggregation

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sync"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/ring"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
)

// Decryptor is the coordinator's side of decryption: it combines the t
// shares of a request with the aggregate and decodes the slots. Safe for
// concurrent use.
type Decryptor struct {
	params Parameters
	inst   *KeyGenInstance
	mu     sync.Mutex
	ecd    *ckks.Encoder
}

// NewDecryptor prepares decryption of aggregates under inst's key.
func NewDecryptor(params Parameters, inst *KeyGenInstance) (*Decryptor, error) {
	if inst == nil || inst.params != params.ID() {
		return nil, fmt.Errorf("%w: instance missing or made with other parameters", ErrParametersMismatch)
	}
	return &Decryptor{params: params, inst: inst, ecd: ckks.NewEncoder(params.ckks, uint(params.cfg.EncoderPrecision))}, nil
}

// CombineBlock validates block `block` of the aggregate (its digest must be
// the request's) and the shares, one from each of req.Participants (map
// from member ID, all bound to this request and block), sums them into
// the ciphertext and decodes the Slots() values of the block.
func (d *Decryptor) CombineBlock(req DecryptRequest, block int, ct []byte, shares map[string][]byte) ([]float64, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	if req.Key != d.inst.id {
		return nil, fmt.Errorf("%w: request for key instance %x, decryptor has %x", ErrKeyMismatch, req.Key[:8], d.inst.id[:8])
	}
	if len(req.Participants) != d.inst.t {
		return nil, fmt.Errorf("%w: %d participants, the threshold is %d", ErrInvalidInput, len(req.Participants), d.inst.t)
	}
	for _, p := range req.Participants {
		if _, ok := d.inst.points[p]; !ok {
			return nil, fmt.Errorf("%w: participant %q", ErrNotMember, p)
		}
	}
	if block < 0 || block >= len(req.Digests) {
		return nil, fmt.Errorf("%w: block %d of %d", ErrInvalidInput, block, len(req.Digests))
	}
	if h := sha256.Sum256(ct); h != req.Digests[block] {
		return nil, fmt.Errorf("%w: block %d hashes to %x, request names %x", ErrDigestMismatch, block, h[:8], req.Digests[block][:8])
	}
	c, info, err := parseCiphertext(d.params, ct)
	if err != nil {
		return nil, err
	}
	if info.key != d.inst.id || info.block != block || info.blocks != len(req.Digests) {
		return nil, fmt.Errorf("%w: ciphertext is block %d of %d under %x", ErrBlockMismatch, info.block, info.blocks, info.key[:8])
	}
	if len(shares) != len(req.Participants) {
		return nil, fmt.Errorf("%w: %d shares for %d participants", ErrIncomplete, len(shares), len(req.Participants))
	}
	id := req.ID()
	ordered := make([][]byte, 0, len(shares))
	for _, p := range req.Participants {
		b, ok := shares[p]
		if !ok {
			return nil, fmt.Errorf("%w: no share from participant %q", ErrIncomplete, p)
		}
		if err := d.checkShare(b, id, block, len(req.Digests)); err != nil {
			return nil, fmt.Errorf("share from %q: %w", p, err)
		}
		ordered = append(ordered, b)
	}
	return d.combine(c, ordered)
}

func (d *Decryptor) checkShare(b []byte, req [32]byte, block, blocks int) error {
	l := d.params.shareLayout()
	h, err := checkHeader(b, d.params, l)
	if err != nil {
		return err
	}
	if h.key != d.inst.id {
		return fmt.Errorf("%w: share under key instance %x", ErrKeyMismatch, h.key[:8])
	}
	var got [32]byte
	copy(got[:], b[baseHeaderSize:])
	if got != req {
		return fmt.Errorf("%w: share for request %x, expected %x", ErrInvalidInput, got[:8], req[:8])
	}
	gb := int(binary.BigEndian.Uint32(b[baseHeaderSize+32:]))
	gn := int(binary.BigEndian.Uint32(b[baseHeaderSize+36:]))
	if gb != block || gn != blocks {
		return fmt.Errorf("%w: share for block %d of %d, expected %d of %d", ErrBlockMismatch, gb, gn, block, blocks)
	}
	return checkCoeffs(b[baseHeaderSize+decryptShareExtra:], d.params.moduliRows(l), d.params.ckks.N(), 1, kindDecryptShare)
}

// sumShares adds validated shares to c₀ (divided, as the shares are, by
// the primes above the share level): the plaintext c₀ + c₁·s plus the
// members' flooding noise, not yet decoded.
func (d *Decryptor) sumShares(c *rlwe.Ciphertext, shares [][]byte) *rlwe.Plaintext {
	l := d.params.shareLayout()
	moduli := d.params.moduliRows(l)
	pt := ckks.NewPlaintext(d.params.ckks, c.Level())
	pt.Value = c.Value[0]
	// Shares come divided by the primes above the share level
	// (member.go); c₀ is divided the same way, rounded (exactly, for a
	// c₀ rounded on the wire, encrypt.go), and the sum decodes at the
	// scale divided by those primes.
	for lvl := c.Level(); lvl > l.levelQ; lvl-- {
		q := d.params.ckks.RingQ().ModuliChain()[lvl]
		out := ckks.NewPlaintext(d.params.ckks, lvl-1)
		d.params.ckks.RingQ().AtLevel(lvl).DivRoundByLastModulusNTT(pt.Value, out.Value)
		out.Scale = pt.Scale.Div(rlwe.NewScale(float64(q)))
		pt = out
	}
	for _, b := range shares {
		addRowsMod(pt.Value.Coeffs, moduli, b[baseHeaderSize+decryptShareExtra:])
	}
	return pt
}

// combine adds validated shares to c₀ and decodes (sumShares, then
// decode). It does not check how many shares there are; tests use it to
// show that t−1 shares decrypt to garbage.
func (d *Decryptor) combine(c *rlwe.Ciphertext, shares [][]byte) ([]float64, error) {
	pt := d.sumShares(c, shares)
	// Decoding reconstructs every coefficient from its residues with
	// big integers, a cost that grows with the primes. While the scale
	// exceeds the last prime by 2^40, divide by it (rounded): 2^-40 of
	// rounding on the slots, far below the flooding noise's 2^-20 at most
	// (checkFlooding), and one prime fewer to reconstruct.
	for lvl := pt.Level(); lvl > 0; lvl-- {
		q := d.params.ckks.RingQ().ModuliChain()[lvl]
		if pt.Scale.Float64()/float64(q) < 1<<40 {
			break
		}
		rq := d.params.ckks.RingQ().AtLevel(lvl)
		out := ckks.NewPlaintext(d.params.ckks, lvl-1)
		rq.DivRoundByLastModulusNTT(pt.Value, out.Value)
		out.Scale = pt.Scale.Div(rlwe.NewScale(float64(q)))
		pt = out
	}
	vals := make([]float64, d.params.Slots())
	if err := d.decode(pt, vals); err != nil {
		return nil, fmt.Errorf("aggregation: decode: %w", err)
	}
	// An honest aggregate of fewer than 2^16 clients stays below
	// 2^16·MaxAbsValue; a wrong key leaves values spread over ±Q/(2·scale).
	limit := d.params.MaxAbsValue() * (1 << 16)
	for i, v := range vals {
		if !(math.Abs(v) <= limit) {
			return nil, fmt.Errorf("%w: slot %d decodes to %g, beyond any aggregate", ErrDecryption, i, v)
		}
	}
	return vals, nil
}

// Assemble turns the decoded blocks of an aggregate of numParams
// parameters into the FedAvg update Σ nᵢ·Δᵢ / Σ nᵢ and the total weight
// Σ nᵢ (read from the slot after the last parameter).
func Assemble(numParams int, blocks [][]float64) (avg []float64, weight float64, err error) {
	if numParams <= 0 || len(blocks) == 0 {
		return nil, 0, fmt.Errorf("%w: %d parameters in %d blocks", ErrInvalidInput, numParams, len(blocks))
	}
	slots := len(blocks[0])
	if want := (numParams + slots) / slots; len(blocks) != want {
		return nil, 0, fmt.Errorf("%w: %d blocks of %d slots for %d parameters, expected %d", ErrInvalidInput, len(blocks), slots, numParams, want)
	}
	for i, b := range blocks {
		if len(b) != slots {
			return nil, 0, fmt.Errorf("%w: block %d has %d slots, block 0 has %d", ErrInvalidInput, i, len(b), slots)
		}
	}
	weight = blocks[numParams/slots][numParams%slots]
	if !(weight > 0) || math.IsInf(weight, 0) {
		return nil, 0, fmt.Errorf("%w: total weight decodes to %v", ErrDecryption, weight)
	}
	avg = make([]float64, numParams)
	for j := range avg {
		avg[j] = blocks[j/slots][j%slots] / weight
	}
	return avg, weight, nil
}

// decode decodes pt's slots into vals. A plaintext over two primes, which
// is what combine leaves with the default parameters, is decoded here
// with 128-bit integer arithmetic; anything else goes to lattigo's
// encoder. lattigo reconstructs each coefficient of a multi-prime
// plaintext as a big.Int (ring.PolyToBigint, then Mod, Cmp and a
// big.Float conversion per coefficient): about 20 ms a block at LogN 14,
// most of a 1M-parameter round's combine (123 blocks). Two residues fit
// in 128 bits, so the same centred integer is obtained with math/bits in
// a few nanoseconds, then converted to float64 and transformed by the
// encoder's own FFT, as lattigo does. The values agree with lattigo's to
// the rounding of one float64 conversion (TestDecodeTwoPrimes).
func (d *Decryptor) decode(pt *rlwe.Plaintext, vals []float64) error {
	if pt.Level() != 1 || !pt.IsNTT || !pt.IsBatched || d.params.cfg.EncoderPrecision > 53 {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.ecd.Decode(pt, vals)
	}
	cp := d.params.ckks
	rq := cp.RingQ().AtLevel(1)
	logSlots := pt.LogDimensions.Cols
	slots := 1 << logSlots
	maxCols := int(rq.NthRoot() >> 2)
	if slots > maxCols || len(vals) > slots {
		return fmt.Errorf("%w: %d slots of at most %d, %d values", ErrInvalidInput, slots, maxCols, len(vals))
	}
	gap := maxCols / slots
	isreal := cp.RingType() == ring.ConjugateInvariant
	coeffs := rq.NewPoly()
	rq.INTT(pt.Value, coeffs)
	crt := newCRT2(rq.ModuliChain()[0], rq.ModuliChain()[1])
	inv := 1 / pt.Scale.Float64()
	z := make([]complex128, slots)
	c0, c1 := coeffs.Coeffs[0], coeffs.Coeffs[1]
	for i, idx := 0, 0; i < slots; i, idx = i+1, idx+gap {
		z[i] = complex(crt.centred(c0[idx], c1[idx])*inv, 0)
	}
	if !isreal {
		for i, idx := 0, maxCols; i < slots; i, idx = i+1, idx+gap {
			z[i] += complex(0, crt.centred(c0[idx], c1[idx])*inv)
		}
	} else {
		// [X]/(X^N+1) to [X+X^-1]/(X^N+1), as lattigo's encoder does.
		for i := 1; i < slots; i++ {
			z[i] -= complex(0, real(z[slots-i]))
		}
	}
	// The encoder's FFT only reads its precomputed roots: safe without
	// d.mu.
	if err := d.ecd.FFT(z, logSlots); err != nil {
		return err
	}
	for i := range vals {
		vals[i] = real(z[i])
	}
	return nil
}

// crt2 reconstructs x mod q0·q1 from x mod q0 and x mod q1 (Garner:
// x = a0 + q0·((a1 − a0)·q0⁻¹ mod q1)), centred in (−q0q1/2, q0q1/2].
// Both primes are below 2^62, so the product and x fit in 128 bits.
type crt2 struct {
	q0, q1, q0inv  uint64 // q0inv = q0⁻¹ mod q1
	qHi, qLo       uint64 // q0·q1
	halfHi, halfLo uint64 // ⌊q0·q1 / 2⌋
}

func newCRT2(q0, q1 uint64) crt2 {
	c := crt2{q0: q0, q1: q1, q0inv: ring.ModExp(q0%q1, q1-2, q1)}
	c.qHi, c.qLo = bits.Mul64(q0, q1)
	c.halfLo = c.qLo>>1 | c.qHi<<63
	c.halfHi = c.qHi >> 1
	return c
}

// centred returns the centred x of residues a0 < q0 and a1 < q1 as a
// float64, as lattigo's encoder does (a value of at least ⌊Q/2⌋ is taken
// as negative).
func (c crt2) centred(a0, a1 uint64) float64 {
	t := a1 + c.q1 - a0%c.q1 // in (0, 2·q1)
	hi, lo := bits.Mul64(t, c.q0inv)
	_, k := bits.Div64(hi, lo, c.q1) // hi < q1: t·q0inv < 2·q1² < q1·2^64
	hi, lo = bits.Mul64(c.q0, k)
	var carry uint64
	lo, carry = bits.Add64(lo, a0, 0)
	hi += carry
	neg := hi > c.halfHi || (hi == c.halfHi && lo >= c.halfLo)
	if neg {
		var borrow uint64
		lo, borrow = bits.Sub64(c.qLo, lo, 0)
		hi = c.qHi - hi - borrow
	}
	f := float64(hi)*0x1p64 + float64(lo)
	if neg {
		return -f
	}
	return f
}
