package aggregation

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/ring"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
)

// A marshalled ciphertext is the base header (key = key-generation
// instance ID, version [ciphertextVersion]) followed by the block index
// and the block count, both big-endian uint32, then c₀ and c₁ at the top
// level, NTT domain. c₁ carries every Q row. When the parameters round c₀
// ([Parameters.C0Rounded]), c₀ is sent as c₀' = round(c₀/q_L) over the Q
// rows below the last prime q_L, one row fewer: the ciphertext it stands
// for is (q_L·c₀', c₁), whose c₀ differs from the encryptor's by at most
// q_L/2 per coefficient (doc.go, "Wire formats"). Sums of such
// ciphertexts are sums of c₀' row by row, so the coordinator adds them as
// they come, as before; only [parseCiphertext] lifts c₀' back.
const ciphertextHeaderSize = baseHeaderSize + 8

// ciphertextVersion is the version of the ciphertext kind: 2 since c₀ may
// be rounded (version 1 always carried c₀ whole); the other kinds are at
// [wireVersion].
const ciphertextVersion = 2

func (p Parameters) ctLayout() layout {
	return layout{kind: kindCiphertext, version: ciphertextVersion, levelQ: p.ckks.MaxLevel(), polys: 2, extra: 8, dropFirst: p.c0Drop}
}

// c0Rows is the number of Q rows of c₀ on the wire.
func (p Parameters) c0Rows() int { return p.ckks.MaxLevel() + 1 - p.c0Drop }

// splitCiphertext returns the c₀ and c₁ rows of a marshalled ciphertext,
// c₁ being the last (levelQ+1)·N words as its header states them. A
// buffer too short for its header gives c₀ empty and c₁ the rest; the
// callers have checked the size, or let the checks that follow name the
// problem.
func splitCiphertext(ct []byte) (c0, c1 []byte) {
	if len(ct) < ciphertextHeaderSize {
		return nil, nil
	}
	data := ct[ciphertextHeaderSize:]
	if ct[4] > 20 {
		return nil, data
	}
	n1 := (int(ct[5]) + 1) * (1 << ct[4]) * 8
	if n1 > len(data) {
		return nil, data
	}
	return data[:len(data)-n1], data[len(data)-n1:]
}

// ctInfo is what a ciphertext header says about itself.
type ctInfo struct {
	key           [32]byte
	block, blocks int
}

// checkCiphertext validates the whole of b (header, size and reduction of
// every coefficient) and returns its header fields.
func checkCiphertext(p Parameters, b []byte) (ctInfo, error) {
	l := p.ctLayout()
	h, err := checkHeader(b, p, l)
	if err != nil {
		return ctInfo{}, err
	}
	info := ctInfo{
		key:    h.key,
		block:  int(binary.BigEndian.Uint32(b[baseHeaderSize:])),
		blocks: int(binary.BigEndian.Uint32(b[baseHeaderSize+4:])),
	}
	if info.blocks == 0 || info.block >= info.blocks {
		return info, fmt.Errorf("%w: ciphertext block %d of %d", ErrBlockMismatch, info.block, info.blocks)
	}
	moduli := p.moduliRows(l)
	c0, c1 := splitCiphertext(b)
	if err := checkCoeffs(c0, moduli[:p.c0Rows()], p.ckks.N(), 1, kindCiphertext); err != nil {
		return info, err
	}
	if err := checkCoeffs(c1, moduli, p.ckks.N(), 1, kindCiphertext); err != nil {
		return info, fmt.Errorf("c1: %w", err)
	}
	return info, nil
}

// parseCiphertext validates b and decodes it into a lattigo ciphertext
// carrying the metadata every ciphertext of this package has: default
// scale, full slots, NTT domain; a rounded c₀ is lifted back to q_L·c₀'.
func parseCiphertext(p Parameters, b []byte) (*rlwe.Ciphertext, ctInfo, error) {
	info, err := checkCiphertext(p, b)
	if err != nil {
		return nil, info, err
	}
	ct := ckks.NewCiphertext(p.ckks, 1, p.ckks.MaxLevel())
	c0, c1 := splitCiphertext(b)
	readRows(c0, ct.Value[0].Coeffs[:p.c0Rows()])
	liftC0(p, ct.Value[0])
	readRows(c1, ct.Value[1].Coeffs)
	return ct, info, nil
}

// liftC0 turns c₀' (rows below q_L, row q_L ignored) into q_L·c₀' over
// every Q row, in place: the c₀ the wire form stands for. It does nothing
// when the parameters do not round c₀.
func liftC0(p Parameters, c0 ring.Poly) {
	if p.c0Drop == 0 {
		return
	}
	rq := p.ckks.RingQ()
	last := p.ckks.Q()[p.ckks.MaxLevel()]
	for i, s := range rq.SubRings[:p.c0Rows()] {
		s.MulScalarMontgomery(c0.Coeffs[i], ring.MForm(last%s.Modulus, s.Modulus, s.BRedConstant), c0.Coeffs[i])
	}
	for _, row := range c0.Coeffs[p.c0Rows():] {
		clear(row)
	}
}

// marshalCiphertext writes ct (top level, NTT domain, c₀ whole) in the
// wire form, rounding c₀ when the parameters say so: it overwrites ct's
// c₀ with c₀' in that case. For a c₀ that is already a multiple of q_L (a
// parsed aggregate, a sum of parsed ones) the division is exact.
func marshalCiphertext(p Parameters, key [32]byte, block, blocks int, ct *rlwe.Ciphertext, out []byte) []byte {
	if p.c0Drop > 0 {
		p.ckks.RingQ().AtLevel(p.ckks.MaxLevel()).DivRoundByLastModulusNTT(ct.Value[0], ct.Value[0])
	}
	return marshalCiphertextRows(p, key, block, blocks, ct.Value[0].Coeffs[:p.c0Rows()], ct.Value[1].Coeffs, out)
}

// marshalCiphertextRows writes a ciphertext whose c₀ rows are already in
// the wire form (c₀' when rounded), as the accumulator keeps its sums.
func marshalCiphertextRows(p Parameters, key [32]byte, block, blocks int, c0, c1 [][]uint64, out []byte) []byte {
	l := p.ctLayout()
	size := l.size(p.ckks.N())
	if cap(out) < size {
		out = make([]byte, size)
	}
	out = out[:size]
	putHeader(out, p, l, key)
	binary.BigEndian.PutUint32(out[baseHeaderSize:], uint32(block))
	binary.BigEndian.PutUint32(out[baseHeaderSize+4:], uint32(blocks))
	off := ciphertextHeaderSize
	off += putRows(out[off:], c0)
	putRows(out[off:], c1)
	return out
}

// Encryptor turns a client's update into ciphertexts under the collective
// public key. It is safe for concurrent use; each worker owns its lattigo
// encoder, encryptor and buffers, which are reused across calls.
type Encryptor struct {
	params  Parameters
	key     [32]byte
	pk      *rlwe.PublicKey
	workers chan *encWorker
	n       int
}

type encWorker struct {
	ecd  *ckks.Encoder
	enc  *rlwe.Encryptor
	pt   *rlwe.Plaintext
	ct   *rlwe.Ciphertext
	vals []float64
}

// NewEncryptor validates the marshalled collective public key (from
// [AggregatePublicKey]) and prepares workers encryptors (≤ 0: GOMAXPROCS).
func NewEncryptor(params Parameters, publicKey []byte, workers int) (*Encryptor, error) {
	pk, key, err := parsePublicKey(params, publicKey)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	e := &Encryptor{params: params, key: key, pk: pk, workers: make(chan *encWorker, workers), n: workers}
	for i := 0; i < workers; i++ {
		e.workers <- e.newWorker()
	}
	return e, nil
}

func (e *Encryptor) newWorker() *encWorker {
	cp := e.params.ckks
	return &encWorker{
		ecd:  ckks.NewEncoder(cp, uint(e.params.cfg.EncoderPrecision)),
		enc:  ckks.NewEncryptor(cp, e.pk),
		pt:   ckks.NewPlaintext(cp, cp.MaxLevel()),
		ct:   ckks.NewCiphertext(cp, 1, cp.MaxLevel()),
		vals: make([]float64, e.params.Slots()),
	}
}

// KeyID is the key-generation instance the public key belongs to.
func (e *Encryptor) KeyID() [32]byte { return e.key }

// validateUpdate checks the caller's update before any work is done.
func (e *Encryptor) validateUpdate(delta []float64, weight float64) error {
	if len(delta) == 0 {
		return fmt.Errorf("%w: empty update", ErrInvalidInput)
	}
	limit := e.params.MaxAbsValue()
	if !(weight > 0) || weight > limit {
		return fmt.Errorf("%w: weight %v outside (0, %g]", ErrInvalidInput, weight, limit)
	}
	for j, v := range delta {
		w := math.Abs(v * weight)
		// NaN fails the comparison, ±Inf exceeds the limit.
		if !(w <= limit) {
			return fmt.Errorf("%w: weight × value %d = %v outside [−%g, %g]", ErrInvalidInput, j, v*weight, limit, limit)
		}
	}
	return nil
}

// fill writes the slots of block b: weight·delta for parameter slots, the
// weight itself in the slot after the last parameter, zeros after it.
func fill(vals, delta []float64, weight float64, b int) {
	slots := len(vals)
	start := b * slots
	n := 0
	if start < len(delta) {
		n = copy(vals, delta[start:])
		for i := range vals[:n] {
			vals[i] *= weight
		}
	}
	for i := n; i < slots; i++ {
		vals[i] = 0
	}
	if w := len(delta) - start; w >= 0 && w < slots {
		vals[w] = weight
	}
}

// encodeBits bounds the encoded coefficients: values are encoded at the
// scale that keeps |coefficient| below 2^encodeBits, then multiplied by a
// power of two up to the default scale. lattigo's encoder falls back to
// big.Float for each coefficient beyond 2^64, which at scale 2^104 made
// encryption 4.4 times slower (BenchmarkClientEncrypt); a float64 carries
// 53 bits in either case, so the message is as precise.
const encodeBits = 61

// encode writes into pt (top level, NTT domain, default scale) the
// plaintext of vals at the default scale, encoded at 2^k ≤ scale with
// every coefficient below 2^encodeBits and multiplied by 2^(scale−k).
// A coefficient is (1/N)·Σⱼ vⱼ·wⱼ with |wⱼ| ≤ 2 (the constant one is the
// mean of the slots), so |coefficient| ≤ 2‖v‖₁/N; the bound used, 4‖v‖₁/N,
// leaves a factor 2 for the float64 transform. Bounding by max|v| instead
// would encode a block holding one large value (a count among moments) at
// a scale up to N/2 times coarser than needed, an error above the noise
// floor of [Parameters.SlotNoiseSigma] (TestFederatedScalingNoiseFloor).
func encode(p Parameters, ecd *ckks.Encoder, vals []float64, pt *rlwe.Plaintext) error {
	l1 := 0.0
	for _, v := range vals {
		l1 += math.Abs(v)
	}
	logScale := p.cfg.LogDefaultScale
	if bound := 4 * l1 / float64(p.ckks.N()); bound > 0 {
		// bound < 2^e.
		_, e := math.Frexp(bound)
		logScale = min(logScale, encodeBits-e)
	}
	pt.Scale = rlwe.NewScale(math.Exp2(float64(logScale)))
	if err := ecd.Encode(vals, pt); err != nil {
		return err
	}
	rq := p.ckks.RingQ().AtLevel(pt.Level())
	for shift := p.cfg.LogDefaultScale - logScale; shift > 0; shift -= 62 {
		rq.MulScalar(pt.Value, 1<<min(shift, 62), pt.Value)
	}
	pt.Scale = p.ckks.DefaultScale()
	return nil
}

func (e *Encryptor) encryptBlock(w *encWorker, delta []float64, weight float64, b, blocks int, out []byte) ([]byte, error) {
	fill(w.vals, delta, weight, b)
	if err := encode(e.params, w.ecd, w.vals, w.pt); err != nil {
		return nil, fmt.Errorf("aggregation: encode block %d: %w", b, err)
	}
	if err := w.enc.Encrypt(w.pt, w.ct); err != nil {
		return nil, fmt.Errorf("aggregation: encrypt block %d: %w", b, err)
	}
	return marshalCiphertext(e.params, e.key, b, blocks, w.ct, out), nil
}

// EncryptBlock encrypts block b of weight·delta (plus the weight slot) and
// returns its marshalled ciphertext; callers that stream can encrypt and
// send one block at a time with it.
func (e *Encryptor) EncryptBlock(delta []float64, weight float64, b int) ([]byte, error) {
	if err := e.validateUpdate(delta, weight); err != nil {
		return nil, err
	}
	blocks := e.params.Blocks(len(delta))
	if b < 0 || b >= blocks {
		return nil, fmt.Errorf("%w: block %d of %d", ErrInvalidInput, b, blocks)
	}
	w := <-e.workers
	defer func() { e.workers <- w }()
	return e.encryptBlock(w, delta, weight, b, blocks, nil)
}

// EncryptUpdate encodes weight·delta and the weight into
// params.Blocks(len(delta)) ciphertexts, encrypted in parallel, and returns
// one marshalled ciphertext per block, in block order. The caller owns the
// returned slices. delta is not modified.
func (e *Encryptor) EncryptUpdate(delta []float64, weight float64) ([][]byte, error) {
	return e.EncryptUpdateInto(nil, delta, weight)
}

// EncryptUpdateInto is EncryptUpdate writing into the buffers of dst when
// they are large enough (typically the result of the previous round, once
// sent): 32 MB of fresh memory per 1M parameters otherwise costs page
// faults comparable to a tenth of the encryption time.
func (e *Encryptor) EncryptUpdateInto(dst [][]byte, delta []float64, weight float64) ([][]byte, error) {
	if err := e.validateUpdate(delta, weight); err != nil {
		return nil, err
	}
	blocks := e.params.Blocks(len(delta))
	size := e.params.CiphertextSize()
	out := make([][]byte, blocks)
	var arena []byte
	for b := range out {
		if b < len(dst) && cap(dst[b]) >= size {
			out[b] = dst[b][:size]
			continue
		}
		if arena == nil {
			// One contiguous allocation for the missing blocks: the
			// allocator is hit once instead of per block.
			arena = make([]byte, size*(blocks-b))
		}
		out[b], arena = arena[:size:size], arena[size:]
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, blocks)
	for g := 0; g < min(e.n, blocks); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := <-e.workers
			defer func() { e.workers <- w }()
			for {
				b := int(next.Add(1) - 1)
				if b >= blocks {
					return
				}
				out[b], errs[b] = e.encryptBlock(w, delta, weight, b, blocks, out[b])
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
