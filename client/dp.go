package client

import (
	crand "crypto/rand"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/tallyfl/tally/accountant"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// dpSettings are a job's differential-privacy settings as the client
// applies them, checked when it joins.
type dpSettings struct {
	clip, noiseStd float64
}

// dpFromSpec checks the job's DPSpec and derives the noise this client
// adds. The client computes the standard deviation itself from σ, C and
// m rather than taking noise_std on trust: a coordinator that sent a
// smaller noise_std than σ·C/√m is refused.
//
// It also recomputes, with the accountant, the ε that σ gives over the
// job's rounds, and refuses a σ too small for the ε the job claims.
func dpFromSpec(d *tallyv1.DPSpec, rounds int) (*dpSettings, error) {
	if d == nil {
		return nil, nil
	}
	sigma, clip, m := d.GetSigma(), d.GetClip(), d.GetContributors()
	if !(sigma > 0) || math.IsInf(sigma, 0) || !(clip > 0) || math.IsInf(clip, 0) || m < 1 {
		return nil, fmt.Errorf("%w: dp: sigma %g, clip %g, contributors %d: want sigma > 0, clip > 0, contributors ≥ 1", ErrJob, sigma, clip, m)
	}
	a, err := accountant.New()
	if err != nil {
		return nil, err
	}
	if err := a.Compose(1, sigma, rounds); err != nil {
		return nil, fmt.Errorf("%w: dp: %v", ErrJob, err)
	}
	eps, _, err := a.Epsilon(d.GetDelta())
	if err != nil {
		return nil, fmt.Errorf("%w: dp: %v", ErrJob, err)
	}
	if eps > d.GetEpsilon()*(1+1e-6) {
		return nil, fmt.Errorf("%w: dp: σ %g gives ε %g over the job's %d rounds at δ %g, above the job's ε %g", ErrJob, sigma, eps, rounds, d.GetDelta(), d.GetEpsilon())
	}
	std := sigma * clip / math.Sqrt(float64(m))
	if got := d.GetNoiseStd(); got < std*(1-1e-9) {
		return nil, fmt.Errorf("%w: dp: noise_std %g is below σ·C/√m = %g", ErrJob, got, std)
	}
	return &dpSettings{clip: clip, noiseStd: std}, nil
}

// privatize turns the update Δ of a client of weight w into the one it
// sends under distributed DP: the contribution w·Δ, the vector the sum
// adds, is scaled down to L2 norm at most clip, N(0, noiseStd²) is added
// to each coordinate, and the result is divided by w again, because the
// submission paths multiply by the weight (submitEncrypted) or the
// coordinator does (plain). It writes into out, which may alias update.
//
// The noise must be secret from the coordinator, so in a job rng is
// seeded from crypto/rand (newNoiseRNG), not from the job seed: noise the
// coordinator could regenerate would protect nothing.
func privatize(out, update []float64, w float64, s dpSettings, rng *rand.Rand) {
	var sq float64
	for _, x := range update {
		sq += (w * x) * (w * x)
	}
	// keep is the factor on Δ itself: 1 (exactly) within the clip.
	keep := 1.0
	if n := math.Sqrt(sq); n > s.clip {
		keep = s.clip / n
	}
	for i, x := range update {
		out[i] = keep*x + s.noiseStd*rng.NormFloat64()/w
	}
}

// newNoiseRNG returns a PRNG keyed from the operating system's entropy.
func newNoiseRNG() (*rand.Rand, error) {
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("client: dp noise seed: %w", err)
	}
	return rand.New(rand.NewChaCha8(seed)), nil
}
