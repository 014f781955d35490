package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// FedAvg selects a seeded fraction of the available clients and moves the
// global model by the n_i-weighted mean of their updates (McMahan et al.,
// AISTATS 2017).
type FedAvg struct {
	// Fraction of the available clients selected per round; at least Min.
	Fraction float64
	Min      int
	// Aggregate is the weighted mean of updates; the aggregation package
	// provides it so plaintext and encrypted paths share one definition.
	Mean func(updates [][]float64, weights []float64) ([]float64, error)
}

// Select implements Strategy.
func (f FedAvg) Select(available []string, rng *rand.Rand) []string {
	k := int(math.Ceil(f.Fraction * float64(len(available))))
	k = max(k, f.Min)
	if k >= len(available) {
		return slices.Clone(available)
	}
	perm := rng.Perm(len(available))[:k]
	slices.Sort(perm)
	out := make([]string, k)
	for i, p := range perm {
		out[i] = available[p]
	}
	return out
}

// Aggregate implements Strategy.
func (f FedAvg) Aggregate(global []float64, results []Result) ([]float64, error) {
	updates := make([][]float64, len(results))
	weights := make([]float64, len(results))
	for i, r := range results {
		updates[i], weights[i] = r.Update, float64(r.Samples)
	}
	mean, err := f.Mean(updates, weights)
	if err != nil {
		return nil, err
	}
	next := slices.Clone(global)
	for i, v := range mean {
		next[i] += v
	}
	return next, nil
}

// Tolerance is how many clients a job can lose for good and still run
// every round, from its configuration alone.
type Tolerance struct {
	// Enrolled is the number of clients the job file admits.
	Enrolled int
	// Needed is how many updates each round needs: clients.min (Min), and
	// under secure aggregation at least min_group_size (MinGroupSize, 0
	// without it).
	Needed, Min, MinGroupSize int
	// Dropouts is Enrolled − Needed: with more clients gone, no round can
	// complete.
	Dropouts int
	// CommitteeDropouts is c − t, the committee members that may drop out
	// without a new key generation (−1 without secure aggregation); more
	// cost a re-key, which needs Needed live clients too.
	CommitteeDropouts int
}

// DropoutTolerance returns the job's Tolerance.
func (j Job) DropoutTolerance() Tolerance {
	tol := Tolerance{Enrolled: len(j.Clients.Enrolment), Needed: j.Clients.Min, Min: j.Clients.Min, CommitteeDropouts: -1}
	if j.Secure() {
		tol.MinGroupSize = j.MinGroupSize
		tol.Needed = max(tol.Needed, j.MinGroupSize)
		tol.CommitteeDropouts = j.Committee.Size - j.Committee.Threshold
	}
	tol.Dropouts = max(0, tol.Enrolled-tol.Needed)
	return tol
}

// String says what the tolerance is made of, for the coordinator's start.
func (t Tolerance) String() string {
	s := fmt.Sprintf("tolerates %d dropout(s): each round needs %d of the %d enrolled clients (clients.min %d", t.Dropouts, t.Needed, t.Enrolled, t.Min)
	if t.CommitteeDropouts >= 0 {
		s += fmt.Sprintf(", min_group_size %d); %d committee member(s) may drop out without a re-key", t.MinGroupSize, t.CommitteeDropouts)
	} else {
		s += ")"
	}
	return s
}
