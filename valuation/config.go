package valuation

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Method names understood by NewEstimator. The vector methods MethodCGSV and
// MethodInfluence are not games over coalitions: they take updates, weights
// and a gradient, so they are plain functions (CosineToAggregate, Influence)
// and NewEstimator refuses them with ErrVectorMethod.
const (
	MethodExactShapley = "exact-shapley"
	MethodLOO          = "loo"
	MethodMonteCarlo   = "monte-carlo"
	MethodTMC          = "tmc"
	MethodGTG          = "gtg"
	MethodBanzhaf      = "banzhaf"
	MethodExactBanzhaf = "exact-banzhaf"
	MethodCGSV         = "cgsv"
	MethodInfluence    = "influence"
)

// MaxExactPlayers bounds the exact methods: they evaluate all 2^n coalitions,
// and 2^20 ≈ 10^6 utility evaluations (each a validation pass of a model) is
// already hours for a real model; the memo of 2^20 values also costs ~40 MB.
const MaxExactPlayers = 20

// Defaults filled in by NewEstimator for fields left at zero.
const (
	// DefaultSamples caps a sampled method when no other stopping rule is
	// given: 200 permutations puts the standard error of each Monte Carlo
	// value near 7% of the spread of its marginal contributions.
	DefaultSamples = 200
	// DefaultMinSamples is how many samples the standard-error and rank
	// rules wait for: a sample variance from fewer is too noisy to stop on.
	DefaultMinSamples = 10
	// DefaultBatch is the number of permutations evaluated in parallel
	// between two checks of the stopping rules (coalitions for banzhaf are
	// DefaultBatch·8). It is fixed, not tied to the machine's cores, so the
	// same seed stops at the same place everywhere.
	DefaultBatch = 8
	// DefaultTruncation is the within-permutation truncation tolerance of
	// tmc and gtg, relative to the round's gain |U(N) − U(∅)|. Ghorbani & Zou
	// (2019) truncate once the prefix is within the noise of the full
	// model's performance; 1% of the gain keeps the truncated marginals
	// of each permutation below a hundredth of what there is to share.
	DefaultTruncation = 0.01
	// DefaultRoundTolerance is gtg's between-round truncation, relative to
	// |U(N)|: a round whose aggregate moved the utility by less is valued 0.
	DefaultRoundTolerance = 0.001
)

// StallSamples ends a sampled run whose only stopping rule is the budget once
// this many samples in a row (counted in whole batches) have used no new
// coalition (Result.Stop "stalled"). Cache hits cost nothing, so without it
// a budget the run cannot reach would never stop: tmc and gtg reach only the
// prefixes their truncation leaves, and for monte-carlo and banzhaf the last
// unused coalitions of a nearly exhausted game are a coupon collector's tail.
// By the rule of three, 1,000 idle samples put the chance that the next one
// finds a new coalition below 0.3% (95% confidence), so each further
// evaluation would cost over 300 samples; the idle window itself costs at
// most 1,000·(n−1) cache lookups.
const StallSamples = 1000

// Config parameterises every estimator. Fields a method does not use are
// ignored by it. Zero values mean "default" (see the Default constants) or
// "rule off" as documented per field.
type Config struct {
	// Seed keys every random choice; each method derives its own stream, so
	// the same seed gives the same bits on every machine and worker count.
	Seed uint64 `yaml:"seed" json:"seed"`
	// Workers bounds utility calls in flight when the estimator builds its own
	// Evaluator (0: GOMAXPROCS). Ignored when the game is an *Evaluator.
	Workers int `yaml:"workers" json:"workers"`
	// Budget caps the distinct utility evaluations of a sampled method; the
	// run never exceeds it (0: no budget rule).
	Budget int `yaml:"budget" json:"budget"`
	// Samples caps the samples of a sampled method: permutations for
	// monte-carlo, tmc and gtg, coalitions for banzhaf (0: no cap, but if no
	// other rule is set DefaultSamples applies).
	Samples int `yaml:"samples" json:"samples"`
	// MinSamples is the number of samples before SETarget and RankStable may
	// stop a run (0: DefaultMinSamples).
	MinSamples int `yaml:"min_samples" json:"min_samples"`
	// SETarget stops a sampled method once every player's standard error is at
	// most this, in utility units (0: rule off).
	SETarget float64 `yaml:"se_target" json:"se_target"`
	// RankStable stops a sampled method once the ranking of the players has
	// not changed over this many consecutive batches (0: rule off).
	RankStable int `yaml:"rank_stable" json:"rank_stable"`
	// Batch is the number of samples evaluated in parallel between checks of
	// the stopping rules (0: DefaultBatch permutations, n for gtg so each
	// guided round is one batch, 8·DefaultBatch coalitions for banzhaf).
	Batch int `yaml:"batch" json:"batch"`
	// Truncation is the within-permutation truncation tolerance of tmc and gtg
	// relative to the round's gain: once |U(N) − U(prefix)| <
	// Truncation·|U(N) − U(∅)| the remaining marginals are taken as zero
	// (0: DefaultTruncation). Ghorbani & Zou scale by |U(N)|, natural for
	// accuracy; the gain is used here because it does not change when a
	// constant is added to the utility (negative loss has an arbitrary
	// level), just as the Shapley value does not.
	Truncation float64 `yaml:"truncation" json:"truncation"`
	// RoundTolerance is gtg's between-round truncation relative to |U(N)|: if
	// |U(N) − U(∅)| ≤ RoundTolerance·|U(N)| every value is 0
	// (0: DefaultRoundTolerance).
	RoundTolerance float64 `yaml:"round_tolerance" json:"round_tolerance"`
}

// Validate reports every problem of c at once, each wrapping ErrConfig.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...))
	}
	nonNeg := func(name string, v int) {
		if v < 0 {
			bad("%s %d is negative", name, v)
		}
	}
	nonNeg("workers", c.Workers)
	nonNeg("budget", c.Budget)
	nonNeg("samples", c.Samples)
	nonNeg("min_samples", c.MinSamples)
	nonNeg("rank_stable", c.RankStable)
	nonNeg("batch", c.Batch)
	if !(c.SETarget >= 0) || math.IsInf(c.SETarget, 0) {
		bad("se_target %v must be a finite number ≥ 0", c.SETarget)
	}
	if !(c.Truncation >= 0 && c.Truncation < 1) {
		bad("truncation %v must be in [0, 1)", c.Truncation)
	}
	if !(c.RoundTolerance >= 0 && c.RoundTolerance < 1) {
		bad("round_tolerance %v must be in [0, 1)", c.RoundTolerance)
	}
	if c.Samples > 0 && c.MinSamples > c.Samples {
		bad("min_samples %d exceeds samples %d", c.MinSamples, c.Samples)
	}
	return errors.Join(errs...)
}

// withDefaults fills the zero fields that have defaults.
func (c Config) withDefaults() Config {
	if c.MinSamples == 0 {
		c.MinSamples = DefaultMinSamples
		if c.Samples > 0 {
			c.MinSamples = min(c.MinSamples, c.Samples)
		}
	}
	if c.Budget == 0 && c.Samples == 0 && c.SETarget == 0 && c.RankStable == 0 {
		c.Samples = DefaultSamples
	}
	if c.Truncation == 0 {
		c.Truncation = DefaultTruncation
	}
	if c.RoundTolerance == 0 {
		c.RoundTolerance = DefaultRoundTolerance
	}
	return c
}

// Result is what an estimator returns.
type Result struct {
	// Method is the registry name of the estimator.
	Method string `json:"method"`
	// Values[i] is player i's value, in utility units.
	Values []float64 `json:"values"`
	// StdErr[i] is the standard error of Values[i]: 0 for exact methods, +Inf
	// where a sampled method had too few samples to estimate it.
	StdErr []float64 `json:"stderr"`
	// Evaluations is the number of distinct coalitions the run used, whether
	// computed or found in a shared Evaluator's cache: the run's cost.
	Evaluations int `json:"evaluations"`
	// Computed is how many of those this run computed itself (the rest were
	// already cached by an earlier run on the same Evaluator).
	Computed int `json:"computed"`
	// Samples is the number of permutations (coalitions for banzhaf) drawn.
	Samples int `json:"samples"`
	// Truncated counts marginal contributions set to zero by truncation.
	Truncated int `json:"truncated"`
	// Stop says why a sampled run stopped: "budget", "samples", "se-target",
	// "rank-stable", "round-truncated", and with the budget as the only rule
	// "exhausted" (all 2^n coalitions used) or "stalled" (StallSamples
	// samples in a row used no new coalition); "exact" for exact methods.
	Stop string `json:"stop"`
	// Wall is the wall-clock time of the run.
	Wall time.Duration `json:"wall"`
}

// Estimator values the players of a game.
//
// Contract: Estimate never modifies the game. If g is an *Evaluator its cache
// is used and extended (that is how estimators share work on one round);
// otherwise a private Evaluator is built. An Estimator holds only its
// configuration, so it is safe for concurrent use, and the same seed on the
// same game gives the same Values and StdErr bits.
type Estimator interface {
	Method() string
	Estimate(ctx context.Context, g Game) (Result, error)
}

// Methods returns the names NewEstimator accepts, sorted.
func Methods() []string {
	names := []string{MethodExactShapley, MethodLOO, MethodMonteCarlo, MethodTMC, MethodGTG, MethodBanzhaf, MethodExactBanzhaf}
	slices.Sort(names)
	return names
}

// VectorMethods returns the names of the methods that take vectors rather
// than a game: "cgsv" (CosineToAggregate) and "influence" (Influence).
func VectorMethods() []string { return []string{MethodCGSV, MethodInfluence} }

// NewEstimator returns the named estimator with cfg validated and its
// defaults filled. It fails with ErrUnknownMethod, ErrVectorMethod or a join
// of ErrConfig problems.
func NewEstimator(name string, cfg Config) (Estimator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	switch name {
	case MethodExactShapley:
		return exactEstimator{name: name, workers: cfg.Workers, banzhaf: false}, nil
	case MethodExactBanzhaf:
		return exactEstimator{name: name, workers: cfg.Workers, banzhaf: true}, nil
	case MethodLOO:
		return looEstimator{workers: cfg.Workers}, nil
	case MethodMonteCarlo:
		return permEstimator{name: name, cfg: cfg, truncate: false, guided: false}, nil
	case MethodTMC:
		return permEstimator{name: name, cfg: cfg, truncate: true, guided: false}, nil
	case MethodGTG:
		return permEstimator{name: name, cfg: cfg, truncate: true, guided: true}, nil
	case MethodBanzhaf:
		return msrEstimator{cfg: cfg}, nil
	case MethodCGSV, MethodInfluence:
		return nil, fmt.Errorf("%w: %q (call CosineToAggregate or Influence)", ErrVectorMethod, name)
	}
	return nil, fmt.Errorf("%w: %q (known: %v)", ErrUnknownMethod, name, Methods())
}
