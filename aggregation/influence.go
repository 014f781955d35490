package aggregation

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
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
// running ciphertext per client with blocks in flight. A client's running
// ciphertext is finished (lifted and marshalled) as soon as its last block
// is in, and with [Influence.SpillTo] written to a spill file, so that
// what the heap holds between a client's upload and the round's
// decryption does not grow with the number of clients (issue 19: 786 KB
// per client at LogN 14 had made the coordinator's peak grow 2× from 10
// to 100 clients). Add is safe for concurrent use (clients in parallel;
// one client's blocks are serialised); Finalize may run concurrently with
// Add of other clients.
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
	store   *SubmissionStore // SpillTo: where finished ciphertexts go, if it spills
	// parks is set when store spills: then at most influenceResident
	// running ciphertexts stay in memory (resident, least recently used
	// first) and the others are parked in the spill file.
	parks    bool
	resident []*influenceClient
	free     []*rlwe.Ciphertext // running ciphertexts to reuse
}

// influenceResident bounds the running ciphertexts in memory when an
// Influence spills: the coordinator's DefaultUploadSlots, since it adds at
// most 8 upload messages at once, so at most 8 sums are in use at once;
// the others wait in the spill file for their client's next block. In
// BenchmarkPeakMemory's 100-client round about 65 clients were mid-upload
// at the peak, 50 MB of running sums at LogN 14 (786 KB each); 8 are
// 6.3 MB whatever the number of clients. 16 measured a ratio of
// 1.37–1.40 there, 8 of 1.31–1.33, with no slower round.
const influenceResident = 8

type influenceClient struct {
	mu  sync.Mutex
	sum *rlwe.Ciphertext // in memory; nil while parked
	// parked locates the running ciphertext in the spill file while it is
	// not in memory; slot is the place in the file the client writes it
	// to each time (allocated at its first parking).
	parked bool
	slot   spillRef
	// broken is why the client's influence cannot be finished: its parked
	// sum did not read back as it was written. Add and Finalize return it.
	broken error
	got    []bool
	n      int
	done   bool
	// product is a finished influence ciphertext an edge computed
	// (AddProduct) and kept in memory; Finalize returns it as it is. One
	// kept in the spill file is fin from the start. fromEdge marks either:
	// the client delivers no blocks here.
	product  []byte
	fromEdge bool
	// fin is the client's own ciphertext once its last block is in (seal),
	// in memory or in the spill file; nil before.
	fin *Product
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
	if st.done || st.fromEdge {
		return fmt.Errorf("%w: influence of client %q already finalised", ErrState, client)
	}
	if st.broken != nil {
		return st.broken
	}
	if st.got[info.block] {
		return fmt.Errorf("%w: client %q block %d", ErrDuplicate, client, info.block)
	}
	if err := f.load(client, st); err != nil {
		return err
	}
	// c₀ goes in as its wire form c₀' (rows below q_L) and the product
	// sum is lifted once, at Finalize: Σ_b (q_L·c₀'_b)·g_b = q_L·Σ_b c₀'_b·g_b.
	c0, c1 := splitCiphertext(ct)
	f.mulAddRows(st.sum.Value[0], info.block, c0, f.params.c0Rows())
	f.mulAddC1(st.sum.Value[1], info.block, c1)
	st.got[info.block] = true
	st.n++
	if st.n == f.blocks {
		f.unresident(st)
		return f.seal(client, st)
	}
	return nil
}

// load makes client's running ciphertext resident: a fresh one at its
// first block, the one in memory, or the parked one read back, after
// parking the least recently used resident one that is not busy if there
// are influenceResident already. Called with st.mu held.
func (f *Influence) load(client string, st *influenceClient) error {
	if !f.parks {
		if st.sum == nil {
			st.sum = ckks.NewCiphertext(f.params.ckks, 1, f.params.ckks.MaxLevel())
		}
		return nil
	}
	f.mu.Lock()
	if st.sum != nil {
		// Resident already: now the most recently used.
		if i := slices.Index(f.resident, st); i >= 0 {
			f.resident = append(slices.Delete(f.resident, i, i+1), st)
		}
		f.mu.Unlock()
		return nil
	}
	var victim *influenceClient
	if len(f.resident) >= influenceResident {
		for i, v := range f.resident {
			// A client busy with a block of its own keeps its sum (it
			// holds its lock and may wait for f.mu: no waiting here).
			if v.mu.TryLock() {
				victim, f.resident = v, slices.Delete(f.resident, i, i+1)
				break
			}
		}
	}
	f.resident = append(f.resident, st)
	var ct *rlwe.Ciphertext
	if n := len(f.free); victim == nil && n > 0 {
		ct, f.free = f.free[n-1], f.free[:n-1]
	}
	f.mu.Unlock()
	if victim != nil {
		ct = f.park(victim)
		victim.mu.Unlock()
	}
	if ct == nil {
		ct = ckks.NewCiphertext(f.params.ckks, 1, f.params.ckks.MaxLevel())
	}
	if !st.parked {
		for _, pol := range ct.Value {
			for _, row := range pol.Coeffs {
				clear(row)
			}
		}
		st.sum = ct
		return nil
	}
	buf := parkBuffers.Get().(*[]byte)
	defer parkBuffers.Put(buf)
	b, err := f.store.readProduct(st.slot, *buf)
	if err != nil {
		f.unresident(st)
		st.broken = fmt.Errorf("running influence ciphertext of client %q: %w", client, err)
		return st.broken
	}
	*buf = b
	off := readRows(b, ct.Value[0].Coeffs)
	readRows(b[off:], ct.Value[1].Coeffs)
	st.sum, st.parked = ct, false
	return nil
}

// parkBuffers holds the buffers running ciphertexts are parked from and
// read back into: one per park or load in progress, reused, so that
// parking does not feed the garbage collector 786 KB (LogN 14) a block.
var parkBuffers = sync.Pool{New: func() any { return new([]byte) }}

// park writes v's running ciphertext to its slot in the spill file and
// hands its memory on; v.mu is held. A write that fails leaves it in
// memory, resident again, and park returns nil: the bound is exceeded,
// nothing is lost.
func (f *Influence) park(v *influenceClient) *rlwe.Ciphertext {
	ct := v.sum
	rows := append(slices.Clone(ct.Value[0].Coeffs), ct.Value[1].Coeffs...)
	buf := parkBuffers.Get().(*[]byte)
	defer parkBuffers.Put(buf)
	if n := 8 * len(rows) * f.params.ckks.N(); cap(*buf) < n {
		*buf = make([]byte, n)
	} else {
		*buf = (*buf)[:n]
	}
	putRows(*buf, rows)
	slot, err := f.store.keepParked(v.slot, *buf)
	if err != nil {
		f.mu.Lock()
		f.resident = append(f.resident, v)
		f.mu.Unlock()
		return nil
	}
	v.slot, v.parked, v.sum = slot, true, nil
	return ct
}

// unresident drops st from the resident list (its sum is sealed, or lost).
func (f *Influence) unresident(st *influenceClient) {
	if !f.parks {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if i := slices.Index(f.resident, st); i >= 0 {
		f.resident = slices.Delete(f.resident, i, i+1)
	}
}

// seal finishes client's running ciphertext once every block is in: the
// lift of c₀ that Finalize used to do, the marshalled form and its digest,
// written to the spill file when there is one. The running ciphertext is
// released either way. A spill that fails keeps the ciphertext in memory
// and reports the error (the upload is refused; a resend completes it,
// every block a duplicate). Called with st.mu held.
func (f *Influence) seal(client string, st *influenceClient) error {
	liftC0(f.params, st.sum.Value[0])
	if !f.parks {
		out := marshalInfluence(f.params, f.key, f.logScale, f.blocks, st.sum)
		st.sum = nil
		st.fin = &Product{Client: client, Digest: sha256.Sum256(out), Size: len(out), mem: out}
		return nil
	}
	// Spilling: the marshalled form and the running ciphertext are reused
	// for the next clients, not left to the garbage collector (a client's
	// worth of each, 100 times over in a 100-client round, had kept the
	// heap's goal high).
	buf := parkBuffers.Get().(*[]byte)
	defer parkBuffers.Put(buf)
	out := marshalInfluenceTo(*buf, f.params, f.key, f.logScale, f.blocks, st.sum)
	*buf = out
	f.recycle(st.sum)
	st.sum = nil
	p := &Product{Client: client, Digest: sha256.Sum256(out), Size: len(out)}
	st.fin = p
	ref, ok, err := f.store.keepProduct(out)
	if !ok {
		// Not written: kept in memory, and the error (if any) reported.
		p.mem = slices.Clone(out)
		if err != nil {
			return fmt.Errorf("influence of client %q: %w", client, err)
		}
		return nil
	}
	p.store, p.ref = f.store, ref
	return nil
}

// recycle keeps a running ciphertext no client uses any more for the next
// one, as long as those resident and those kept are fewer than
// influenceResident: the bound is on all the running ciphertexts in
// memory, not on each kind.
func (f *Influence) recycle(ct *rlwe.Ciphertext) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.free)+len(f.resident) < influenceResident {
		f.free = append(f.free, ct)
	}
}

// SpillTo makes the finished influence ciphertexts go to st's spill file
// (when st has one, [NewSpillingSubmissionStore]) rather than stay in the
// heap until they are decrypted: the collect task's store, whose file the
// coordinator keeps for the round's decryptions and closes after them.
// Once st is closed, the ciphertexts in it can no longer be read. Call it
// before the first Add.
func (f *Influence) SpillTo(st *SubmissionStore) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.store = st
	st.mu.Lock()
	f.parks = st.spill != nil
	st.mu.Unlock()
}

// Product is one client's finished influence ciphertext, as
// [Influence.FinalizeProduct] hands it out: its digest (for
// [NewInfluenceRequest]) and its size, with the bytes kept in memory or in
// a spill file until they are read. Safe for concurrent use.
type Product struct {
	Client string
	Digest [32]byte
	Size   int

	mem   []byte           // in memory; never changed
	store *SubmissionStore // or in store's spill file, at ref
	ref   spillRef
}

// Spilled reports whether p is kept in a spill file rather than in memory.
func (p *Product) Spilled() bool { return p.store != nil }

// Read returns the ciphertext in buf (grown if short; nil allocates),
// always a copy, so that a caller may reuse buf for any other product. One
// read back from a spill file is checked against the CRC-32C of what was
// written ([ErrProductSpillCorrupt]); members and
// [Decryptor.CombineCoefficient] check it against Digest in any case.
func (p *Product) Read(buf []byte) ([]byte, error) {
	if p.store == nil {
		if cap(buf) < len(p.mem) {
			buf = make([]byte, len(p.mem))
		}
		buf = buf[:len(p.mem)]
		copy(buf, p.mem)
		return buf, nil
	}
	b, err := p.store.readProduct(p.ref, buf)
	if err != nil {
		return nil, fmt.Errorf("influence ciphertext of client %q: %w", p.Client, err)
	}
	return b, nil
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
// second time. It is [Influence.FinalizeProduct] and a Read.
func (f *Influence) Finalize(client string) ([]byte, [32]byte, error) {
	p, err := f.FinalizeProduct(client)
	if err != nil {
		return nil, [32]byte{}, err
	}
	out, err := p.Read(nil)
	if err != nil {
		return nil, [32]byte{}, err
	}
	return out, p.Digest, nil
}

// FinalizeProduct is Finalize without reading the ciphertext: it hands
// out client's finished ciphertext where it is kept (a spill file, with
// [Influence.SpillTo]), to be read when it is needed, and the Influence
// keeps nothing of the client from now on.
func (f *Influence) FinalizeProduct(client string) (*Product, error) {
	f.mu.Lock()
	st := f.clients[client]
	f.mu.Unlock()
	if st == nil {
		return nil, fmt.Errorf("%w: no ciphertext from client %q", ErrIncomplete, client)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return nil, fmt.Errorf("%w: influence of client %q already finalised", ErrState, client)
	}
	if st.broken != nil {
		return nil, st.broken
	}
	if st.n != f.blocks {
		return nil, fmt.Errorf("%w: client %q delivered %d of %d blocks", ErrIncomplete, client, st.n, f.blocks)
	}
	if st.product != nil {
		out, digest := st.finalizeProduct()
		return &Product{Client: client, Digest: digest, Size: len(out), mem: out}, nil
	}
	p := st.fin
	st.done, st.fin = true, nil
	return p, nil
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
	return marshalInfluenceTo(nil, p, key, logScale, blocks, ct)
}

// marshalInfluenceTo is marshalInfluence into buf (grown if short).
func marshalInfluenceTo(buf []byte, p Parameters, key [32]byte, logScale, blocks int, ct *rlwe.Ciphertext) []byte {
	l := p.influenceLayout()
	out := buf
	if n := l.size(p.ckks.N()); cap(out) < n {
		out = make([]byte, n)
	} else {
		out = out[:n]
	}
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
