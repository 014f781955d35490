package engine

import (
	"fmt"
	"math"

	"github.com/tallyfl/tally/accountant"
)

// PrivacyConfig holds a job's optional privacy mechanisms.
type PrivacyConfig struct {
	// DP, when set, makes every client clip and noise its update.
	DP *DPConfig `yaml:"dp,omitempty"`
}

// DPConfig is the target of distributed differential privacy: the job as
// a whole is (Epsilon, Delta)-DP for each client, with Clip the L2 bound
// on one client's contribution to a round's sum.
//
// The contribution clipped is the vector the sum adds, n_i·Δ_i (the
// sample count times the model delta), so the sensitivity of every
// released sum of updates to one client is Clip. The sum of the weights
// n_i, released beside it, is not protected: a client's sample count is
// a claim the coordinator checks and pays for, not a secret.
type DPConfig struct {
	Epsilon float64 `yaml:"epsilon"`
	Delta   float64 `yaml:"delta"`
	Clip    float64 `yaml:"clip"`
}

// DPMechanism is what a validated DPConfig derives: the noise each client
// adds and the accounting that reports ε.
type DPMechanism struct {
	DPConfig
	// Sigma is the noise multiplier: every released sum carries Gaussian
	// noise of standard deviation at least Sigma·Clip. It is the smallest
	// σ (to a relative 1e-6) for which Rounds rounds are (Epsilon,
	// Delta)-DP for a client that takes part in all of them.
	Sigma float64
	// Contributors is m, the fewest updates in any sum the job releases
	// (clients.min, and under "he" at most min_group_size; 1 when the
	// coordinator sees a quantity of one client alone: updates in the
	// clear, or the "influence" scalars): each client adds N(0, σ²C²/m),
	// so every release carries at least σ·C.
	Contributors int
}

// NoiseStd is the standard deviation of the noise one client adds to
// each coordinate of its clipped contribution: σ·C/√m.
func (d DPMechanism) NoiseStd() float64 {
	return d.Sigma * d.Clip / math.Sqrt(float64(d.Contributors))
}

// EpsilonAfter returns the ε at the mechanism's δ after a client has taken
// part in rounds rounds. Selection is public (it is derived from the job
// seed, and the coordinator knows who submitted), so no amplification by
// subsampling is claimed: each round is a full Gaussian mechanism (q = 1).
func (d DPMechanism) EpsilonAfter(rounds int) (float64, error) {
	return dpEpsilon(d.Sigma, d.Delta, rounds)
}

// SigmaFor returns the noise multiplier the target derives for a job of
// rounds rounds: the smallest σ (to a relative 1e-6) whose rounds-fold
// composition is (Epsilon, Delta)-DP.
func (d DPConfig) SigmaFor(rounds int) (float64, error) {
	return dpSigma(d.Epsilon, d.Delta, rounds)
}

func dpEpsilon(sigma, delta float64, rounds int) (float64, error) {
	if rounds == 0 {
		return 0, nil
	}
	a, err := accountant.New()
	if err != nil {
		return 0, err
	}
	if err := a.Compose(1, sigma, rounds); err != nil {
		return 0, err
	}
	eps, _, err := a.Epsilon(delta)
	return eps, err
}

// dpSigma finds the smallest noise multiplier whose rounds-fold
// composition is within epsilon at delta, by bisection: ε falls as σ grows.
func dpSigma(epsilon, delta float64, rounds int) (float64, error) {
	lo, hi := 1e-3, 1.0
	for {
		e, err := dpEpsilon(hi, delta, rounds)
		if err != nil {
			return 0, err
		}
		if e <= epsilon {
			break
		}
		lo, hi = hi, 2*hi
		if hi > 1e9 {
			return 0, fmt.Errorf("no noise multiplier up to 1e9 reaches ε = %g at δ = %g over %d rounds", epsilon, delta, rounds)
		}
	}
	for hi-lo > 1e-6*hi {
		mid := (lo + hi) / 2
		e, err := dpEpsilon(mid, delta, rounds)
		if err != nil {
			return 0, err
		}
		if e <= epsilon {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, nil
}

// validatePrivacy checks privacy.dp and derives its mechanism.
func (c *JobConfig) validatePrivacy(bad func(field, format string, args ...any)) *DPMechanism {
	d := c.Privacy.DP
	if d == nil {
		return nil
	}
	ok := true
	if !(d.Epsilon > 0) || math.IsInf(d.Epsilon, 0) {
		bad("privacy.dp.epsilon", "must be finite and > 0, got %g", d.Epsilon)
		ok = false
	}
	if !(d.Delta > 0 && d.Delta < 1) {
		bad("privacy.dp.delta", "must be in (0, 1), got %g", d.Delta)
		ok = false
	}
	if !(d.Clip > 0) || math.IsInf(d.Clip, 0) {
		bad("privacy.dp.clip", "must be finite and > 0, got %g", d.Clip)
		ok = false
	}
	if !ok || c.Rounds < 1 || c.Clients.Min < 1 {
		return nil
	}
	m := c.Clients.Min
	if c.SecureAggregation == "he" && c.MinGroupSize >= 1 {
		m = min(m, c.MinGroupSize)
	}
	// Whatever the coordinator learns of one client alone (its update in
	// the clear, or under "influence" the scalar computed from its
	// update) is post-processing of that client's noised update only,
	// which then must carry all of σ·C by itself.
	if c.SecureAggregation == "none" || c.Valuation.Mode == ModeInfluence || c.Valuation.Mode == ModeProjection || c.Valuation.Mode == ModePlain {
		m = 1
	}
	sigma, err := dpSigma(d.Epsilon, d.Delta, c.Rounds)
	if err != nil {
		bad("privacy.dp.epsilon", "%v", err)
		return nil
	}
	return &DPMechanism{DPConfig: *d, Sigma: sigma, Contributors: m}
}

// accountDP records in rec, under privacy.dp, each contributor's ε over
// the completed rounds it took part in (those of the history and rec).
func (e *Engine) accountDP(rec *RoundRecord) {
	d := e.job.DP
	if d == nil {
		return
	}
	rounds := map[string]int{}
	for _, r := range e.history {
		if r.Failed {
			continue
		}
		for _, id := range r.Contributors {
			rounds[id]++
		}
	}
	rec.DPDelta = d.Delta
	rec.DPEpsilon = make(map[string]float64, len(rec.Contributors))
	for _, id := range rec.Contributors {
		eps, err := d.EpsilonAfter(rounds[id] + 1)
		if err != nil {
			// σ and δ were validated when the job was built.
			panic(fmt.Sprintf("engine: dp accounting of client %s: %v", id, err))
		}
		rec.DPEpsilon[id] = eps
	}
}
