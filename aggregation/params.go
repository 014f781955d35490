package aggregation

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/tuneinsight/lattigo/v6/ring"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
)

// ParametersConfig is the literal, YAML-tagged form of the CKKS parameters.
// Zero fields take the defaults of docs/DESIGN.md §6 when passed to [NewParameters].
type ParametersConfig struct {
	// LogN is log2 of the ring degree; the conjugate-invariant ring gives
	// 2^LogN real slots per ciphertext.
	LogN int `yaml:"log_n"`
	// LogQ are the bit sizes of the ciphertext moduli.
	LogQ []int `yaml:"log_q"`
	// LogP are the bit sizes of the auxiliary moduli used by public-key
	// encryption and collective key generation.
	LogP []int `yaml:"log_p"`
	// LogDefaultScale is log2 of the encoding scale.
	LogDefaultScale int `yaml:"log_default_scale"`
	// EncoderPrecision is the float precision of the encoder in bits, at
	// most 53: above that lattigo switches to big.Float and is ~17× slower
	// (docs/DESIGN.md §6 measurement).
	EncoderPrecision int `yaml:"encoder_precision"`
	// LogNoiseFlooding, when set, is a floor on log2 of the standard
	// deviation of the noise each member adds to its decryption shares;
	// the noise itself is derived from Flooding, and this can only raise
	// it.
	LogNoiseFlooding int `yaml:"log_noise_flooding"`
	// Flooding is the bound the flooding noise is derived from: the
	// statistical security level and the caps on what a job releases
	// (doc.go, "Noise flooding").
	Flooding FloodingConfig `yaml:"flooding"`
	// Insecure must be set to accept a set below 128-bit security (see
	// [MaxLogQP]). Only tests should ever set it.
	Insecure bool `yaml:"insecure"`
}

// DefaultConfig returns the default parameter literal (doc.go,
// "Parameters and security"): LogN 14, three 60-bit Q primes, one 61-bit P
// prime, scale 2^104, a 53-bit encoder and decryption noise flooding
// derived from [DefaultFlooding] (λ = 40).
func DefaultConfig() ParametersConfig {
	return ParametersConfig{
		LogN:             14,
		LogQ:             []int{60, 60, 60},
		LogP:             []int{61},
		LogDefaultScale:  104,
		EncoderPrecision: 53,
		Flooding:         DefaultFlooding(),
	}
}

// heStandard128 is the largest log2(QP) giving 128-bit classical security
// for a uniform ternary secret and σ = 3.2, from Table 1 of the Homomorphic
// Encryption Standard (Albrecht et al., 2018), indexed by LogN.
var heStandard128 = map[int]int{10: 27, 11: 54, 12: 109, 13: 218, 14: 438, 15: 881}

// MaxLogQP returns the largest modulus size (bits) that the Homomorphic
// Encryption Standard rates at 128-bit classical security for ring degree
// 2^logN, and false when the table has no entry for logN.
func MaxLogQP(logN int) (int, bool) {
	v, ok := heStandard128[logN]
	return v, ok
}

// Parameters is a validated, immutable parameter set. The zero value is not
// usable; obtain one from [NewParameters] or [DefaultParameters].
type Parameters struct {
	ckks ckks.Parameters
	cfg  ParametersConfig
	id   [8]byte
	// floodAgg and floodInf are the flooding σ of whole shares and the
	// target σ of influence scalars, derived from cfg.Flooding.
	floodAgg, floodInf float64
	// c0Drop is 1 when ciphertexts carry c₀ rounded to a multiple of the
	// last Q prime, without that prime's row ([Parameters.C0Rounded]).
	c0Drop int
}

// DefaultParameters returns the parameters of [DefaultConfig].
func DefaultParameters() Parameters {
	p, err := NewParameters(DefaultConfig())
	if err != nil {
		// The default literal is a constant of this package; failing to
		// build it is a broken invariant, not a user error.
		panic(err)
	}
	return p
}

// NewParameters fills the zero fields of cfg with the defaults, validates
// the result and returns every problem at once, joined, each wrapping
// [ErrInvalidConfig].
//
// Small LogN (10–13 with the default moduli) is insecure and rejected
// unless cfg.Insecure is set; tests use it for speed.
func NewParameters(cfg ParametersConfig) (Parameters, error) {
	def := DefaultConfig()
	if cfg.LogN == 0 {
		cfg.LogN = def.LogN
	}
	if len(cfg.LogQ) == 0 {
		cfg.LogQ = def.LogQ
	}
	if len(cfg.LogP) == 0 {
		cfg.LogP = def.LogP
	}
	if cfg.LogDefaultScale == 0 {
		cfg.LogDefaultScale = def.LogDefaultScale
	}
	if cfg.EncoderPrecision == 0 {
		cfg.EncoderPrecision = def.EncoderPrecision
	}
	cfg.Flooding = cfg.Flooding.withDefaults()
	cfg.LogQ = append([]int(nil), cfg.LogQ...)
	cfg.LogP = append([]int(nil), cfg.LogP...)

	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...))
	}
	if cfg.LogN < 10 || cfg.LogN > 15 {
		bad("log_n %d outside [10, 15]", cfg.LogN)
	}
	sumQ, sumP := 0, 0
	for i, q := range cfg.LogQ {
		if q < 30 || q > 61 {
			bad("log_q[%d] = %d outside [30, 61]", i, q)
		}
		sumQ += q
	}
	if len(cfg.LogQ) > 8 {
		bad("log_q has %d primes, at most 8", len(cfg.LogQ))
	}
	for i, p := range cfg.LogP {
		if p < 30 || p > 61 {
			bad("log_p[%d] = %d outside [30, 61]", i, p)
		}
		sumP += p
	}
	if len(cfg.LogP) > 4 {
		bad("log_p has %d primes, at most 4", len(cfg.LogP))
	}
	// The aggregate must fit below Q/2 once scaled; 20 bits of headroom
	// leave room for |Σ nᵢ·Δᵢ| up to 2^19 at the smallest allowed Q.
	if cfg.LogDefaultScale < 20 || cfg.LogDefaultScale > sumQ-20 {
		bad("log_default_scale %d outside [20, Σlog_q−20 = %d]", cfg.LogDefaultScale, sumQ-20)
	}
	if cfg.EncoderPrecision < 24 || cfg.EncoderPrecision > 53 {
		bad("encoder_precision %d outside [24, 53]", cfg.EncoderPrecision)
	}
	// A floor above scale/2^20 would cost more than 20 bits of precision.
	if cfg.LogNoiseFlooding != 0 && (cfg.LogNoiseFlooding < 10 || cfg.LogNoiseFlooding > cfg.LogDefaultScale-20) {
		bad("log_noise_flooding %d outside [10, log_default_scale−20 = %d] (or 0: derived from flooding)", cfg.LogNoiseFlooding, cfg.LogDefaultScale-20)
	}
	cfg.Flooding.validate(bad)
	if maxQP, ok := MaxLogQP(cfg.LogN); ok && sumQ+sumP > maxQP && !cfg.Insecure {
		bad("log(QP) = %d bits exceeds the 128-bit bound %d for log_n %d (set insecure: true for tests only)", sumQ+sumP, maxQP, cfg.LogN)
	}
	if len(errs) > 0 {
		return Parameters{}, errors.Join(errs...)
	}

	cp, err := ckks.NewParametersFromLiteral(ckks.ParametersLiteral{
		LogN:            cfg.LogN,
		LogQ:            cfg.LogQ,
		LogP:            cfg.LogP,
		RingType:        ring.ConjugateInvariant,
		LogDefaultScale: cfg.LogDefaultScale,
	})
	if err != nil {
		return Parameters{}, fmt.Errorf("%w: lattigo: %v", ErrInvalidConfig, err)
	}
	p := Parameters{ckks: cp, cfg: cfg}
	p.floodAgg, p.floodInf = p.deriveFlooding(cfg.Flooding)
	floor := math.Exp2(float64(cfg.LogNoiseFlooding))
	p.floodAgg, p.floodInf = max(p.floodAgg, floor), max(p.floodInf, floor)
	if err := p.checkFlooding(); err != nil {
		return Parameters{}, err
	}
	if p.c0RoundingFits() {
		p.c0Drop = 1
	}
	p.id = p.computeID()
	return p, nil
}

// checkFlooding refuses a bound whose noise the modulus cannot carry: the
// slot noise of a decryption by a whole committee must stay 20 bits below
// one (2^-20 on a decrypted sum), and the largest flooding of an influence
// scalar, grown by the combiner's Σ|cᵢ| ≤ 2^17 and six standard
// deviations, must stay below Q/16, half the budget of
// [Parameters.InfluenceMaxL1].
func (p Parameters) checkFlooding() error {
	f := p.cfg.Flooding
	n := float64(p.ckks.N())
	slot := math.Sqrt(2*n*float64(f.Committee)) * p.floodAgg
	var errs []error
	if lim := math.Exp2(float64(p.cfg.LogDefaultScale - 20)); slot > lim {
		errs = append(errs, fmt.Errorf("%w: flooding: σ = 2^%.1f for λ = %d over %d block decryptions of up to %d contributors gives slot noise 2^%.1f, above 2^-20; raise log_default_scale to at least %d (and log_q with it) or lower the caps",
			ErrInvalidConfig, math.Log2(p.floodAgg), f.Security, f.Decryptions, f.Contributors, math.Log2(slot)-float64(p.cfg.LogDefaultScale), int(math.Ceil(math.Log2(slot)))+20))
	}
	logQ := 0.0
	for _, q := range p.ckks.Q() {
		logQ += math.Log2(float64(q))
	}
	inf := p.floodInf * maxInfluenceAmplification(f.Committee) * 6 * math.Exp2(17)
	if math.Log2(inf) > logQ-4 {
		errs = append(errs, fmt.Errorf("%w: flooding: influence σ = 2^%.1f for λ = %d over %d scalars of up to %d blocks (committees up to %d) does not fit below Q/16 = 2^%.1f; add log_q primes or lower the caps",
			ErrInvalidConfig, math.Log2(p.floodInf), f.Security, f.Scalars, f.Blocks, f.Committee, logQ-4))
	}
	return errors.Join(errs...)
}

// computeID fingerprints everything that changes the meaning of a message:
// the moduli themselves (not only their sizes), the ring, scale and noise.
func (p Parameters) computeID() [8]byte {
	h := sha256.New()
	h.Write([]byte("tally/aggregation/params/v1"))
	var b [8]byte
	put := func(v uint64) {
		binary.LittleEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	put(uint64(p.cfg.LogN))
	put(uint64(p.ckks.RingType()))
	for _, q := range p.ckks.Q() {
		put(q)
	}
	put(0)
	for _, q := range p.ckks.P() {
		put(q)
	}
	put(uint64(p.cfg.LogDefaultScale))
	put(uint64(p.cfg.EncoderPrecision))
	put(uint64(p.cfg.LogNoiseFlooding))
	f := p.cfg.Flooding
	for _, v := range []int{f.Security, f.Decryptions, f.Scalars, f.Contributors, f.Blocks, f.Committee} {
		put(uint64(v))
	}
	put(math.Float64bits(p.floodAgg))
	put(math.Float64bits(p.floodInf))
	var id [8]byte
	copy(id[:], h.Sum(nil))
	return id
}

// Config returns the validated literal, defaults filled in.
func (p Parameters) Config() ParametersConfig {
	c := p.cfg
	c.LogQ = append([]int(nil), c.LogQ...)
	c.LogP = append([]int(nil), c.LogP...)
	return c
}

// CKKS returns the underlying lattigo parameters.
func (p Parameters) CKKS() ckks.Parameters { return p.ckks }

// ID is a fingerprint of the parameters carried in every message header.
func (p Parameters) ID() [8]byte { return p.id }

// Slots is the number of real values one ciphertext carries.
func (p Parameters) Slots() int { return p.ckks.MaxSlots() }

// Blocks returns the number of ciphertexts that carry an update of
// numParams values plus the weight slot: ceil((numParams+1)/Slots).
func (p Parameters) Blocks(numParams int) int {
	return (numParams + 1 + p.Slots() - 1) / p.Slots()
}

// CiphertextSize is the size in bytes of one marshalled ciphertext.
func (p Parameters) CiphertextSize() int {
	return p.ctLayout().size(p.ckks.N())
}

// shareLevel is the highest Q level of a whole decryption share on the
// wire: the combiner decodes only after dividing the decrypted sum by
// every top prime the scale exceeds by 2^40 (combine.go), so members send
// their shares already divided by those primes, rounded (member.go), and
// each share adds at most 1/2 at the reduced scale, 2^-40 of one slot's
// unit or less. For the default set the share carries two of the three
// primes.
func (p Parameters) shareLevel() int {
	lvl := p.ckks.MaxLevel()
	scale := p.ckks.DefaultScale().Float64()
	for ; lvl > 0; lvl-- {
		q := float64(p.ckks.Q()[lvl])
		if scale/q < 1<<40 {
			break
		}
		scale /= q
	}
	return lvl
}

// c0RoundingMargin is how far below the flooding σ of one share the
// rounding of c₀ must stay, in standard deviation, summed over the most
// contributors the bound allows: 1/4 adds at most 1/16 to the variance of
// a decrypted coefficient (3% to the noise floor of a single share).
const c0RoundingMargin = 4

// C0Rounded reports whether ciphertexts carry c₀ rounded to a multiple of
// the last Q prime q_L, sent as c₀/q_L over the other rows (encrypt.go): a
// sixth fewer bytes for three primes. It holds when the rounding of the
// most contributors the flooding bound allows
// ([Parameters.C0RoundingSigma]) stays c0RoundingMargin times below the
// flooding σ of one share; otherwise c₀ is sent whole. Rounding c₀ does
// not change what the flooding hides: c₀' is a function of c₀, and
// members' shares depend on c₁ alone (doc.go, "Wire formats").
func (p Parameters) C0Rounded() bool { return p.c0Drop > 0 }

// c0RoundingFits is the condition of [Parameters.C0Rounded].
func (p Parameters) c0RoundingFits() bool {
	if p.ckks.MaxLevel() < 1 {
		return false
	}
	return p.c0Rounding(p.cfg.Flooding.Contributors) <= p.floodAgg/c0RoundingMargin
}

// c0Rounding is the standard deviation, per coefficient, of the rounding
// of c₀ by q_L summed over contributors ciphertexts: each is uniform in
// [−q_L/2, q_L/2] (c₀ mod q_L is uniform), variance q_L²/12.
func (p Parameters) c0Rounding(contributors int) float64 {
	q := p.ckks.Q()
	return math.Sqrt(float64(max(contributors, 0))/12) * float64(q[len(q)-1])
}

// C0RoundingSigma is the standard deviation of the rounding of c₀ on each
// coefficient of a sum of contributors ciphertexts, 0 when c₀ is sent
// whole.
func (p Parameters) C0RoundingSigma(contributors int) float64 {
	if p.c0Drop == 0 {
		return 0
	}
	return p.c0Rounding(contributors)
}

// LogQP is the total modulus size in bits.
func (p Parameters) LogQP() float64 { return p.ckks.LogQP() }

// Insecure reports whether the set exceeds the 128-bit bound of [MaxLogQP].
func (p Parameters) Insecure() bool {
	maxQP, ok := MaxLogQP(p.cfg.LogN)
	return !ok || p.ckks.LogQP() > float64(maxQP)
}

// NoiseFloodingSigma is the standard deviation of the noise a member adds
// to each coefficient of a whole decryption share
// ([Parameters.AggregateFloodingSigma]).
func (p Parameters) NoiseFloodingSigma() float64 { return p.floodAgg }

// MaxAbsValue bounds |nᵢ·Δᵢ| accepted by the encryptor. It keeps a sum of
// up to 2^16 such values below 2^(log Q − scale − 4), far from the Q/2
// wrap-around that would silently corrupt the aggregate.
func (p Parameters) MaxAbsValue() float64 {
	sumQ := 0
	for _, q := range p.cfg.LogQ {
		sumQ += q
	}
	return math.Exp2(float64(sumQ - p.cfg.LogDefaultScale - 20))
}

// SlotNoiseSigma returns the standard deviation of the error on each
// decoded slot of an aggregate sum: contributors ciphertexts encrypted under
// the key of a committee of members, decrypted from participants shares
// (the threshold t). It is the noise floor below which a decrypted sum
// cannot be told from zero; the values are sums Σ nᵢ·xᵢ, before [Assemble]
// divides by the total weight.
//
// Derivation. Decryption adds to c₀ + c₁·s the participants' shares, each
// carrying fresh Gaussian flooding noise of σ_f =
// [Parameters.NoiseFloodingSigma] on every coefficient (the Lagrange
// coefficients multiply the secret shares, not the noise), so the
// coefficients of the decrypted plaintext carry noise of variance t·σ_f².
// Each contributor adds the noise of one fresh public-key encryption and
// the rounding of its encoding, [Parameters.FreshNoiseVariance] per
// coefficient, about 2^-120 of the flooding term for the default set, and
// the rounding of its c₀ on the wire, q_L²/12 ([Parameters.C0RoundingSigma];
// 2^-28 of the flooding term per contributor for the default set, t = 3).
// Decoding evaluates the polynomial at the slots' roots of unity and
// divides by the scale Δ = 2^LogDefaultScale: a slot is a signed sum of
// the N coefficients, one of them with weight 1 and the others with
// weight 2·cos(·) for the conjugate-invariant ring, so its variance is
// about 2N times the coefficient variance (measured by TestSlotNoiseSigma:
// the ratio of measured to predicted standard deviation is close to 1).
// Hence
//
//	σ_slot = √(2N·(t·σ_f² + contributors·(σ_fresh² + q_L²/12))) / Δ.
//
// For the default set with t = 3 that is √(2^15·3·2^143.2)/2^104 ≈ 5.6e-8.
// It leaves out the float64 round-off of encoding and decoding, which
// grows with the block's magnitude: [Parameters.SlotNoiseSigmaAt] adds it.
// Both encoding and flooding noise are independent across slots.
func (p Parameters) SlotNoiseSigma(contributors, members, participants int) float64 {
	n := float64(p.ckks.N())
	flood := p.NoiseFloodingSigma()
	fresh := p.FreshNoiseVariance(members)
	r := p.C0RoundingSigma(contributors)
	v := float64(max(participants, 1))*flood*flood + float64(max(contributors, 0))*fresh + r*r
	return math.Sqrt(2*n*v) / math.Exp2(float64(p.cfg.LogDefaultScale))
}

// SlotNoiseSigmaAt is [Parameters.SlotNoiseSigma] plus the float64
// round-off of encoding and decoding ([Parameters.RoundoffSigma]), whose
// size depends on the vectors: sumSquares bounds the sum of the squared
// slots of every vector that went through a float64 transform, each
// contributor's encoded block and the decoded aggregate. It is the noise
// floor of a block whose slots are large beside others that are zero,
// such as the sums of squares of large features beside a constant one.
func (p Parameters) SlotNoiseSigmaAt(contributors, members, participants int, sumSquares float64) float64 {
	s := p.SlotNoiseSigma(contributors, members, participants)
	r := p.RoundoffSigma(sumSquares)
	return math.Sqrt(s*s + r*r)
}

// RoundoffSigma bounds the standard deviation of the float64 round-off on
// each decoded slot, given sumSquares, the sum over the vectors that were
// transformed (each contributor's encoded block and the decoded
// aggregate) of their squared slots. The encoder's and decoder's FFT work
// in float64: each of its log₂ N butterfly levels rounds to 2^-53 of the
// running values, so a slot's error is about 2^-53·√(log₂ N) times the
// root mean square of the block's slots, whatever the scale. An
// encode-decode round trip measures 2^-51.0 of the root mean square for
// logN = 10 and 2^-50.6 for logN = 14; the bound counts 2·2^-53·√(log₂ N)
// for each transformed vector, independent across vectors. The encoding
// also rounds the coefficients to integers at its scale 2^k, which
// [encode] picks with 2^-k < 8‖v‖₁/(N·2^encodeBits): with ‖v‖₁² ≤ N‖v‖₂²
// and the 2N of decoding, a slot variance of at most (64/6)·2^-122·N times
// the mean square, 2^-52.3 of the root mean square for logN = 14, added
// here. The division by the last prime before decoding, of c₀ by the
// combiner and of each of the t shares by its member (shareLevel), rounds
// by at most (t+1)/2 at the remaining scale, itself at least 2^40.
func (p Parameters) RoundoffSigma(sumSquares float64) float64 {
	fft := 4 * math.Exp2(-106) * float64(p.cfg.LogN)
	rounding := 64.0 / 6 * math.Exp2(-2*encodeBits) * float64(p.ckks.N())
	return math.Sqrt((fft + rounding) * max(sumSquares, 0) / float64(p.Slots()))
}
