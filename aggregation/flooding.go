package aggregation

import (
	"fmt"
	"io"
	"math"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/ring"
	"github.com/tuneinsight/lattigo/v6/utils/sampling"
)

// FloodingConfig states what the flooding noise of decryption shares is
// sized for (see doc.go, "Noise flooding"): the statistical security level
// and caps on everything a job releases and on the shape of what it
// releases. Members refuse a request beyond a cap (ErrFloodingBudget), so
// the bound holds whatever the coordinator asks. Zero fields take the
// defaults of [DefaultFlooding].
type FloodingConfig struct {
	// Security is λ: over the whole job, the statistical distance between
	// what the coordinator (with up to t−1 members) sees and what a
	// simulator knowing only the released values produces is at most
	// 2^-λ.
	Security int `yaml:"security"`
	// Decryptions caps the whole-ciphertext block decryptions of a key
	// ([Member.DecryptShare]), retries and moments included; each releases
	// N coefficients.
	Decryptions int `yaml:"decryptions"`
	// Scalars caps the influence scalars released per key
	// ([Member.DecryptCoefficientShare]).
	Scalars int `yaml:"scalars"`
	// Contributors caps the clients summed into one aggregate.
	Contributors int `yaml:"contributors"`
	// Blocks caps the blocks summed into one influence ciphertext.
	Blocks int `yaml:"blocks"`
	// Committee caps the committee size c (the collective key sums c
	// secrets, and the influence amplification grows with c).
	Committee int `yaml:"committee"`
}

// DefaultFlooding is the bound of the default parameter set: λ = 40 over
// 2^12 block decryptions (2^26 released coefficients: e.g. 100 rounds of
// 40 blocks, 650k parameters, or 4 attempts of 10 blocks) and 2^16
// influence scalars (1,000 clients for 65 rounds), aggregates of up to
// 1,024 clients, influence ciphertexts of up to 64 blocks (1M parameters),
// committees of up to 12.
func DefaultFlooding() FloodingConfig {
	return FloodingConfig{Security: 40, Decryptions: 1 << 12, Scalars: 1 << 16, Contributors: 1 << 10, Blocks: 64, Committee: 12}
}

func (f FloodingConfig) withDefaults() FloodingConfig {
	d := DefaultFlooding()
	if f.Security == 0 {
		f.Security = d.Security
	}
	if f.Decryptions == 0 {
		f.Decryptions = d.Decryptions
	}
	if f.Scalars == 0 {
		f.Scalars = d.Scalars
	}
	if f.Contributors == 0 {
		f.Contributors = d.Contributors
	}
	if f.Blocks == 0 {
		f.Blocks = d.Blocks
	}
	if f.Committee == 0 {
		f.Committee = d.Committee
	}
	return f
}

func (f FloodingConfig) validate(bad func(string, ...any)) {
	if f.Security < 16 || f.Security > 128 {
		bad("flooding.security %d outside [16, 128]", f.Security)
	}
	for _, c := range []struct {
		name string
		v    int
	}{{"decryptions", f.Decryptions}, {"scalars", f.Scalars}, {"contributors", f.Contributors}, {"blocks", f.Blocks}} {
		if c.v < 1 || c.v > 1<<40 {
			bad("flooding.%s %d outside [1, 2^40]", c.name, c.v)
		}
	}
	if f.Committee < 1 || f.Committee > maxCommitteeFlooding {
		bad("flooding.committee %d outside [1, %d]", f.Committee, maxCommitteeFlooding)
	}
}

// maxCommitteeFlooding bounds flooding.committee: the amplification of
// [influenceAmplification] is searched over all t−1 subsets of c points.
const maxCommitteeFlooding = 16

// lattigo's error distribution (rlwe.DefaultXe) and the density of its
// ternary secrets (rlwe.DefaultXs: P = 2/3 non-zero).
const (
	sigmaErr       = 3.2
	ternaryDensity = 2.0 / 3
)

// FreshNoiseVariance is the variance of one coefficient of the noise of a
// fresh public-key encryption under the key of a committee of members
// (the secret s = Σ sᵢ sums members ternary secrets), encoding rounding
// included. lattigo encrypts over QP and divides by P, so what is left is
// the rounding of that division, r₀ + r₁·s, plus (e₀ + u·e_pk + e₁·s)/P
// and the rounding of the encoded message (1/12). TestCiphertextNoise
// measures it.
func (p Parameters) FreshNoiseVariance(members int) float64 {
	n := float64(p.ckks.N())
	c := float64(max(members, 1))
	pk := sigmaErr * sigmaErr * (1 + 2*n*ternaryDensity*c)
	if len(p.ckks.P()) == 0 {
		return pk + 1.0/12
	}
	logP := 0.0
	for _, q := range p.ckks.P() {
		logP += math.Log2(float64(q))
	}
	// The rounding of lattigo's division by P measures at about twice the
	// 1/12 of a centred rounding (TestCiphertextNoise: 2^8.06 rms for 8
	// ciphertexts, c = 5, against 2^7.58 with 1/12); it counts as 1/4, a
	// margin of 1.5 in variance over the measurement.
	return 1.0/12 + (1+n*c*ternaryDensity)/4 + pk*math.Exp2(-2*logP)
}

// InfluenceNoiseVariance bounds the variance of the ciphertext noise on an
// influence scalar's constant coefficient: the noise e of each of blocks
// fresh ciphertexts times the gradient plaintext g of its block,
// (Σ_b e_b·g_b)₀, whose variance is Σ_b var(e)·‖g_b‖₂². The gradient is
// encoded with max|g|·Δ_g < 2^influenceGradientBits, so its N slots have
// ‖v‖₂² < N·2^(2·bits) and, decoding multiplying squared norms by 2N for
// the conjugate-invariant ring (as in [Parameters.SlotNoiseSigma]), its
// coefficients ‖g_b‖₂² < 2^(2·bits)/2, plus N/12 of rounding.
func (p Parameters) InfluenceNoiseVariance(members, blocks int) float64 {
	n := float64(p.ckks.N())
	g := math.Exp2(2*influenceGradientBits)/2 + n/12
	return float64(max(blocks, 1)) * p.FreshNoiseVariance(members) * g
}

// tailFactor is k with P(|X| > kσ) ≤ 2^-bits for each of count Gaussian
// values, by the union bound on 2·exp(−k²/2): k = √(2·ln(2·count·2^bits)).
func tailFactor(count float64, bits int) float64 {
	return math.Sqrt(2 * (math.Log(2*count) + float64(bits)*math.Ln2))
}

// floodingSigma is the flooding σ that hides count values, each of noise
// standard deviation noise, within statistical distance 2^-(λ+2), given a
// tail event of probability at most 2^-(λ+2). With |eⱼ| ≤ B = k·noise for
// every value (the tail), the Kullback–Leibler divergence between the
// honest member's flooding Gaussians shifted by the eⱼ and unshifted is
// Σ eⱼ²/(2σ²) ≤ count·B²/(2σ²), and Pinsker's inequality bounds the
// statistical distance by √(KL/2) = √count·B/(2σ). Hence
// σ = 2^(λ+1)·√count·B.
func floodingSigma(lambda int, count, noise float64) float64 {
	b := tailFactor(count, lambda+2) * noise
	return math.Exp2(float64(lambda+1)) * math.Sqrt(count) * b
}

// AggregateFloodingSigma is the standard deviation of the flooding noise
// each participant adds to every coefficient of a whole decryption share.
// Each participant adds all of it, not a 1/√t part: the threat model
// allows t−1 participants to collude with the coordinator, who then
// subtract their own noise, and the one honest share must hide the
// ciphertext noise alone. A whole share carries λᵢ·s̃ᵢ, the Lagrange
// coefficient applied to the secret, so the honest noise is not scaled.
func (p Parameters) AggregateFloodingSigma() float64 { return p.floodAgg }

// InfluenceFloodingSigma is the standard deviation of the flooding noise a
// member of a committee of c with threshold t adds to a coefficient share:
// the target σ of the bound times [influenceAmplification](c, t), because
// coefficient shares carry s̃ᵢ without λᵢ and the coordinator weighs them
// itself.
func (p Parameters) InfluenceFloodingSigma(c, t int) float64 {
	return p.floodInf * influenceAmplification(c, t)
}

// InfluenceFloodingTarget is the flooding σ the released influence scalar
// must carry against its ciphertext noise, before amplification.
func (p Parameters) InfluenceFloodingTarget() float64 { return p.floodInf }

// influenceAmplification is A(c, t) = max over sets C of t−1 colluding
// members of √(Σ_{h∉C} λ_{h,C}^-2), λ_{h,C} the Lagrange coefficient at 0
// of h in C ∪ {h}, the Shamir points being 1..c. Knowing s̃_j for j ∈ C,
// the coordinator writes each honest coefficient share as
// ⟨a, s⟩/λ_{h,C} + known + e_h, i.e. ⟨a, s⟩ with noise λ_{h,C}·e_h, and
// the best combination of the honest shares leaves flooding of standard
// deviation σ/A on c₀ + ⟨a, s⟩ = m₀ + e (the scalar plus its ciphertext
// noise). So each member floods with A times the target. A = 1 for t = c;
// 6.8 for c = 5, t = 3; at most 2^9.1 for c ≤ 12.
func influenceAmplification(c, t int) float64 {
	if t < 1 || c < t {
		return 1
	}
	best := 0.0
	set := make([]int, 0, t-1)
	var walk func(next int)
	walk = func(next int) {
		if len(set) == t-1 {
			s := 0.0
			for h := 1; h <= c; h++ {
				l, in := 1.0, false
				for _, j := range set {
					in = in || j == h
					l *= float64(j) / float64(j-h)
				}
				if !in {
					s += 1 / (l * l)
				}
			}
			best = max(best, math.Sqrt(s))
			return
		}
		for x := next; x <= c; x++ {
			set = append(set, x)
			walk(x + 1)
			set = set[:len(set)-1]
		}
	}
	walk(1)
	return best
}

// maxInfluenceAmplification is the largest A(c, t) for c up to committee.
func maxInfluenceAmplification(committee int) float64 {
	a := 1.0
	for c := 1; c <= committee; c++ {
		for t := 1; t <= c; t++ {
			a = max(a, influenceAmplification(c, t))
		}
	}
	return a
}

// deriveFlooding computes the flooding σ of aggregates and the target σ
// of influence scalars from the bound f. The statistical distance 2^-λ is
// split in four: the tail events and the smudging of each kind of value,
// 2^-(λ+2) each. The caps are what each member serves; every release
// takes t ≥ 1 of the c members, so the job releases at most c/t ≤ c times
// a member's count, and the bound counts c times.
func (p Parameters) deriveFlooding(f FloodingConfig) (agg, inf float64) {
	aggNoise := math.Sqrt(float64(f.Contributors) * p.FreshNoiseVariance(f.Committee))
	agg = floodingSigma(f.Security, p.aggregateReleases(f), aggNoise)
	infNoise := math.Sqrt(p.InfluenceNoiseVariance(f.Committee, f.Blocks))
	inf = floodingSigma(f.Security, influenceReleases(f), infNoise)
	return agg, inf
}

// aggregateReleases is the number of values whole decryptions may release
// over the job: N coefficients per block decryption, c/t ≤ c times a
// member's cap.
func (p Parameters) aggregateReleases(f FloodingConfig) float64 {
	return float64(f.Decryptions) * float64(p.ckks.N()) * float64(f.Committee)
}

// influenceReleases is the number of influence scalars the job may
// release: c/t ≤ c times a member's cap.
func influenceReleases(f FloodingConfig) float64 {
	return float64(f.Scalars) * float64(f.Committee)
}

// Flooding noise sampler. lattigo's Gaussian sampler draws round(σ·z) with
// a float64 z: above σ = 2^53 the low bits of every sample are zero (or,
// with a bound above 2^64, filled by a uniform value covering part of the
// gap), so a share e_h + e would show the low bits of the ciphertext noise
// e it exists to hide. The flooding noise is therefore the convolution
// Σᵢ Kⁱ·yᵢ of samples yᵢ of σ_b ≤ 2^26, where the float sampler is
// accurate (Micciancio and Walter, "Gaussian Sampling over the Integers:
// Efficient, Generic, Constant-Time", CRYPTO 2017; Peikert, CRYPTO 2010,
// Theorem 3.1): each level's σ_b = 4K exceeds the smoothing parameter of
// KZ for ε = 2^-128 (about 2.1K), so the sum is within 2^-127 per sample
// of a discrete Gaussian of variance Σᵢ K²ⁱσᵢ² ≥ σ².
const (
	floodLogBase  = 26 // log₂ σ_b of the lower levels
	floodLogRadix = 24 // log₂ K = σ_b/4
)

// floodSampler adds flooding noise of a given σ to polynomials over Q.
type floodSampler struct {
	sigma  float64
	levels []ring.Sampler // the lowest level first
	radix  uint64
	rq     *ring.Ring
}

// newFloodSampler prepares noise of standard deviation at least sigma for
// polynomials of rq, each level truncated at tail·σ_level (the tail
// factor of the job's bound, so that truncation is inside it). rand seeds
// lattigo's keyed PRNG.
func newFloodSampler(rq *ring.Ring, sigma, tail float64, rand io.Reader) (*floodSampler, error) {
	var key [32]byte
	if _, err := io.ReadFull(rand, key[:]); err != nil {
		return nil, fmt.Errorf("aggregation: flooding seed: %w", err)
	}
	prng, err := sampling.NewKeyedPRNG(key[:])
	clear(key[:])
	if err != nil {
		return nil, fmt.Errorf("aggregation: flooding PRNG: %w", err)
	}
	fs := &floodSampler{sigma: sigma, radix: 1 << floodLogRadix, rq: rq}
	top := sigma
	base := math.Exp2(floodLogBase)
	var sigmas []float64
	for top > 4*base {
		sigmas = append(sigmas, base)
		top /= float64(fs.radix)
	}
	sigmas = append(sigmas, top)
	for _, s := range sigmas {
		smp, err := ring.NewSampler(prng, rq, ring.DiscreteGaussian{Sigma: s, Bound: math.Ceil(tail * s)}, false)
		if err != nil {
			return nil, fmt.Errorf("aggregation: flooding sampler: %w", err)
		}
		fs.levels = append(fs.levels, smp)
	}
	return fs, nil
}

// Levels is the number of convolved samples per coefficient.
func (fs *floodSampler) Levels() int { return len(fs.levels) }

// add adds fresh flooding noise to every coefficient of pol (coefficient
// domain, at rq's level), by Horner's rule from the top level:
// acc = (…(y_L·K + y_{L−1})·K + …)·K + y_0.
func (fs *floodSampler) add(pol ring.Poly) {
	acc := fs.rq.NewPoly()
	tmp := fs.rq.NewPoly()
	for i := len(fs.levels) - 1; i >= 0; i-- {
		if i < len(fs.levels)-1 {
			fs.rq.MulScalar(acc, fs.radix, acc)
		}
		fs.levels[i].Read(tmp)
		fs.rq.Add(acc, tmp, acc)
	}
	fs.rq.Add(pol, acc, pol)
}

// maxFloodLevels bounds the levels of a floodSampler (σ ≤ 2^(28+24·7)),
// for the truncation's share of the bound.
const maxFloodLevels = 8

// aggregateTail and influenceTail are the truncation factors of the
// flooding samplers: every level's samples over the job stay within the
// bound's last 2^-(λ+3) (a truncated Gaussian is that close to the
// untruncated one the smudging argument is about).
func (p Parameters) aggregateTail() float64 {
	f := p.cfg.Flooding
	return tailFactor(maxFloodLevels*p.aggregateReleases(f), f.Security+3)
}

func (p Parameters) influenceTail() float64 {
	f := p.cfg.Flooding
	// A coefficient share draws one small polynomial (coefficientRingN
	// coefficients) of which one coefficient is used; the others are
	// wiped and never released.
	return tailFactor(maxFloodLevels*influenceReleases(f), f.Security+3)
}

// checkWholeBudget refuses a whole-share request beyond the bound's caps:
// more contributors than it assumes, or one block decryption more than it
// covers over the member's transcript (the job's; it survives re-keys
// and restarts).
func (m *Member) checkWholeBudget(req DecryptRequest) error {
	f := m.params.cfg.Flooding
	if len(req.Contributors) > f.Contributors {
		return fmt.Errorf("%w: %w: %d contributors, the flooding bound covers aggregates of at most %d (he_params.flooding.contributors)", ErrPolicy, ErrFloodingBudget, len(req.Contributors), f.Contributors)
	}
	if n := m.blocks; n+len(req.Digests) > f.Decryptions {
		return fmt.Errorf("%w: %w: member %q took part in %d block decryptions, the flooding bound covers %d (he_params.flooding.decryptions)", ErrPolicy, ErrFloodingBudget, m.id, n, f.Decryptions)
	}
	return nil
}

// checkCoefficientBudget refuses a coefficient share beyond the caps: a
// committee larger than the bound assumes, an influence ciphertext of
// more blocks, or (at admission, blocks = 0) one scalar more than it
// covers.
func (m *Member) checkCoefficientBudget(blocks int) error {
	f := m.params.cfg.Flooding
	if c := len(m.inst.members); c > f.Committee {
		return fmt.Errorf("%w: %w: committee of %d, the flooding bound covers at most %d (he_params.flooding.committee)", ErrPolicy, ErrFloodingBudget, c, f.Committee)
	}
	if blocks > f.Blocks {
		return fmt.Errorf("%w: %w: influence ciphertext of %d blocks, the flooding bound covers at most %d (he_params.flooding.blocks)", ErrPolicy, ErrFloodingBudget, blocks, f.Blocks)
	}
	if n := m.scalars; blocks == 0 && n >= f.Scalars {
		return fmt.Errorf("%w: %w: member %q took part in %d influence scalars, the flooding bound covers %d (he_params.flooding.scalars)", ErrPolicy, ErrFloodingBudget, m.id, n, f.Scalars)
	}
	return nil
}

// coefficientRingN is the degree of the small ring the noise of a
// coefficient share is sampled over: lattigo's samplers fill polynomials,
// each coefficient an independent sample; one coefficient is used, the
// others are wiped.
const coefficientRingN = 16

// coefNoise draws the noise of one coefficient share, for a committee
// shape and a level: one sample of the key-switch error of lattigo's
// KeySwitchProtocol (a Gaussian of σ = √(σ_fresh² + σ_Xe²) truncated at
// 6σ, what GenShare adds to every coefficient) plus one sample of the
// coefficient flooding noise (a floodSampler), the sum as one integer
// reduced modulo each Q prime of the level.
type coefNoise struct {
	ks    ring.Sampler
	flood *floodSampler
	rq    *ring.Ring
	zero  bool // tests: no noise at all
}

func newCoefNoise(p Parameters, level int, sigma float64, rand io.Reader) (*coefNoise, error) {
	rq, err := ring.NewRing(coefficientRingN, p.ckks.RingQ().ModuliChain()[:level+1])
	if err != nil {
		return nil, fmt.Errorf("aggregation: coefficient noise ring: %w", err)
	}
	var key [32]byte
	if _, err := io.ReadFull(rand, key[:]); err != nil {
		return nil, fmt.Errorf("aggregation: key-switch noise seed: %w", err)
	}
	prng, err := sampling.NewKeyedPRNG(key[:])
	clear(key[:])
	if err != nil {
		return nil, fmt.Errorf("aggregation: key-switch noise PRNG: %w", err)
	}
	// The distribution multiparty.NewKeySwitchProtocol(params, Xe) gives
	// its noise sampler, with Xe = rlwe.DefaultXe as NewMember passes it.
	xe := rlwe.DefaultXe
	fresh := p.ckks.NoiseFreshSK()
	ksSigma := math.Sqrt(fresh*fresh + xe.Sigma*xe.Sigma)
	ks, err := ring.NewSampler(prng, rq, ring.DiscreteGaussian{Sigma: ksSigma, Bound: 6 * ksSigma}, false)
	if err != nil {
		return nil, fmt.Errorf("aggregation: key-switch noise sampler: %w", err)
	}
	flood, err := newFloodSampler(rq, sigma, p.influenceTail(), rand)
	if err != nil {
		return nil, err
	}
	return &coefNoise{ks: ks, flood: flood, rq: rq}, nil
}

// sample returns one noise value, reduced modulo each prime of the level.
func (n *coefNoise) sample() []uint64 {
	out := make([]uint64, n.rq.ModuliChainLength())
	if n.zero {
		return out
	}
	pol := n.rq.NewPoly()
	n.ks.Read(pol)
	n.flood.add(pol)
	for l := range out {
		out[l] = pol.Coeffs[l][0]
	}
	for _, row := range pol.Coeffs {
		clear(row)
	}
	return out
}

// coefficientNoise returns the noise of coefficient shares for the
// member's committee and the level, made on first use for its shape.
func (m *Member) coefficientNoise(level int) (*coefNoise, error) {
	c, t := len(m.inst.members), m.inst.t
	if m.coef != nil && m.coefC == c && m.coefT == t && m.coef.rq.Level() == level {
		return m.coef, nil
	}
	n, err := newCoefNoise(m.params, level, m.params.InfluenceFloodingSigma(c, t), m.rand)
	if err != nil {
		return nil, err
	}
	n.zero = m.coefZeroNoise
	m.coef, m.coefC, m.coefT = n, c, t
	return n, nil
}
