package aggregation

import (
	"errors"
	"fmt"
)

// PolicyConfig is the literal form of a member's decryption policy.
type PolicyConfig struct {
	// MinContributors is k: a member never helps decrypt an aggregate of
	// fewer than k client updates. Zero means the default, 3 (the job's
	// min_group_size, docs/DESIGN.md §3).
	MinContributors int `yaml:"min_contributors"`
	// MaxScalarsPerRound is L: at most L influence scalars per client and
	// round are ever released, across attempts, participant sets and
	// key instances (the manifest's security.max_scalars_per_client_round).
	// Zero means the default, 1.
	MaxScalarsPerRound int `yaml:"max_scalars_per_round"`
}

// Policy is a validated [PolicyConfig].
type Policy struct {
	minContributors int
	maxScalars      int
}

// NewPolicy fills defaults and validates: k ≥ 2, since k = 1 would let the
// coordinator decrypt a single update, and L ≥ 1.
func NewPolicy(cfg PolicyConfig) (Policy, error) {
	if cfg.MinContributors == 0 {
		cfg.MinContributors = 3
	}
	if cfg.MaxScalarsPerRound == 0 {
		cfg.MaxScalarsPerRound = 1
	}
	var errs []error
	if cfg.MinContributors < 2 || cfg.MinContributors > maxContributors {
		errs = append(errs, fmt.Errorf("%w: min_contributors %d outside [2, %d]", ErrInvalidConfig, cfg.MinContributors, maxContributors))
	}
	if cfg.MaxScalarsPerRound < 1 || cfg.MaxScalarsPerRound > maxMembers {
		errs = append(errs, fmt.Errorf("%w: max_scalars_per_round %d outside [1, %d]", ErrInvalidConfig, cfg.MaxScalarsPerRound, maxMembers))
	}
	if len(errs) > 0 {
		return Policy{}, errors.Join(errs...)
	}
	return Policy{minContributors: cfg.MinContributors, maxScalars: cfg.MaxScalarsPerRound}, nil
}

// MinContributors is k.
func (p Policy) MinContributors() int { return p.minContributors }

// MaxScalarsPerRound is L.
func (p Policy) MaxScalarsPerRound() int { return max(p.maxScalars, 1) }

// roundKey names a round under one key instance.
type roundKey struct {
	key   [32]byte
	round uint64
}

// setDiff counts the elements of a (sorted) not in b (sorted).
func setDiff(a, b []string) int {
	n, j := 0, 0
	for _, x := range a {
		for j < len(b) && b[j] < x {
			j++
		}
		if j == len(b) || b[j] != x {
			n++
		}
	}
	return n
}
