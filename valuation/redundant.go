package valuation

import (
	"fmt"
	"math"
	"slices"
)

// Replication robustness. A client that sends a copy of another's update
// (it holds the same data) is paid twice by any value that treats the
// two as separate players: Shapley's symmetry gives each about what one
// honest client earns, so the pair took 34–38% of a five-client budget
// (issue 15). Following the replication-robust payments of Ohrimenko,
// Tople & Tschiatschek (2019, "Collaborative machine learning markets
// with data-replication-robust payments") and Han, Wooldridge, Rogers,
// Ohrimenko & Tschiatschek (2022, "Replication robust payoff allocation in
// submodular cooperative games"), which show that a replicated player
// gains under the Shapley value unless replicas are recognised, tally
// recognises replicas from what each privacy mode may see and values them
// as one player whose value is shared equally among them (who is the copy
// cannot be told).
//
// What is similar enough to be a copy was measured on the experiments'
// scenarios (seeds 1–10, every round; experiments/README.md). Within one
// round, the cosine between two honest clients' updates reached 0.990 at
// most (breast cancer, eight iid clients), and a bit-identical copy has 1;
// two honest clients' influence scalars differed by at least 6.4e-6 of the
// larger (77,000 pairs), a bit-identical copy's by its encryption noise,
// below 1e-5 (aggregation's TestInfluencePrecision).
//
// A copy that holds the same rows but trains with its own shuffles
// (duplicates-retrained-bc5) is not caught within a round: in the first
// round, which carries most of a job's value, it was up to 0.27 of its
// norm from the original, and honest pairs as close as 0.17. Summed over
// the job's rounds, shuffle noise averages out faster than the difference
// between two clients' rows: after 10 rounds the retrained copy was within
// 0.24 of the original on seeds 1–5 (0.31 on seeds 1–10), every other pair
// on breast cancer and digits (honest, noisy, free riders, Sybil parts) at
// least 0.26 apart. So copies found over the job are valued as one when
// the job's values are settled (JobReplicaValues), not round by round. The
// margin is thin, and the rule is blind on a model with a handful of
// parameters, whose honest updates are nearly parallel (wsn, 6 parameters:
// honest pairs down to 0.05). A retrained copy's influence scalars are as
// far from its original's as honest clients' are, so in influence mode
// only bit-identical copies are recognised; projection mode's scalars
// (the span's coordinates summed the same way, with or without seeded
// sketch directions up to 10 scalars) put the copy within 0.29 and honest
// pairs down to 0.19 (experiments/README.md), so there too only equal
// scalars are merged.
const (
	// CopyDistance: two updates are copies within one round when they
	// differ by at most this fraction of the longer one's norm. At equal
	// norms it is a cosine of at least 1 − 0.1²/2 = 0.995, above the honest
	// maximum; unlike a cosine it does not merge parallel updates of
	// different lengths, which a copy (the same data, the same training)
	// never sends.
	CopyDistance = 0.1
	// JobCopyDistance: two clients are copies over the job when
	// √(Σ_r ‖Δ_i − Δ_j‖²) ≤ JobCopyDistance·√(Σ_r max(‖Δ_i‖², ‖Δ_j‖²)),
	// summed over the rounds both took part in: between the retrained
	// copy's 0.24 (seeds 1–5) and the other pairs' 0.26 measured above.
	JobCopyDistance = 0.25
	// CopyScalar is the relative difference between two equally weighted
	// clients' influence scalars below which they are copies (influence
	// mode, where nothing else per client is decrypted).
	CopyScalar = 1e-4
)

// Replicas partitions players 0…n−1 into clusters of copies: i and j are
// linked when same(i, j), and clusters are the connected components, each
// in increasing order, ordered by their first member.
func replicas(n int, same func(i, j int) bool) [][]int {
	parent := make([]int, n)
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			if find(i) != find(j) && same(i, j) {
				a, b := find(i), find(j)
				parent[max(a, b)] = min(a, b)
			}
		}
	}
	idx := map[int]int{}
	var out [][]int
	for i := 0; i < n; i++ {
		r := find(i)
		k, ok := idx[r]
		if !ok {
			k = len(out)
			idx[r] = k
			out = append(out, nil)
		}
		out[k] = append(out[k], i)
	}
	return out
}

// UpdateReplicas clusters updates within CopyDistance of each other. A
// zero update is nobody's copy (it carries nothing; the line search values
// it at most 0 anyway).
func UpdateReplicas(updates [][]float64) [][]int {
	norms := make([]float64, len(updates))
	for i, u := range updates {
		norms[i] = norm(u)
	}
	return replicas(len(updates), func(i, j int) bool {
		m := math.Max(norms[i], norms[j])
		if norms[i] == 0 || norms[j] == 0 {
			return false
		}
		var d float64
		for k, x := range updates[i] {
			e := x - updates[j][k]
			d += e * e
		}
		return math.Sqrt(d) <= CopyDistance*m
	})
}

// ScalarReplicas clusters clients of equal weight whose influence scalars
// agree within CopyScalar of the larger. A zero scalar is nobody's copy.
func ScalarReplicas(a, weights []float64) [][]int {
	return replicas(len(a), func(i, j int) bool {
		m := math.Max(math.Abs(a[i]), math.Abs(a[j]))
		return weights[i] == weights[j] && m > 0 && math.Abs(a[i]-a[j]) <= CopyScalar*m
	})
}

// MergeReplicas returns one update and weight per cluster: the members'
// weighted mean update and their mean weight, what one copy of the data
// would have sent. updates may be nil (scalars only: pass them as
// one-element updates).
func MergeReplicas(clusters [][]int, updates [][]float64, weights []float64) ([][]float64, []float64, error) {
	us, ws := make([][]float64, len(clusters)), make([]float64, len(clusters))
	for c, members := range clusters {
		if len(members) == 0 {
			return nil, nil, fmt.Errorf("%w: cluster %d is empty", ErrLength, c)
		}
		if len(members) == 1 {
			us[c], ws[c] = updates[members[0]], weights[members[0]]
			continue
		}
		var total float64
		mean := make([]float64, len(updates[members[0]]))
		for _, i := range members {
			total += weights[i]
			for k, x := range updates[i] {
				mean[k] += weights[i] * x
			}
		}
		for k := range mean {
			mean[k] /= total
		}
		us[c], ws[c] = mean, total/float64(len(members))
	}
	return us, ws, nil
}

// SplitReplicas spreads cluster values (and standard errors) over the n
// players: each member gets an equal share of its cluster's value.
func SplitReplicas(clusters [][]int, values, stderr []float64, n int) ([]float64, []float64) {
	vals, ses := make([]float64, n), make([]float64, n)
	for c, members := range clusters {
		k := float64(len(members))
		for _, i := range members {
			vals[i] = values[c] / k
			if c < len(stderr) {
				ses[i] = stderr[c] / k
			}
		}
	}
	return vals, ses
}

// Redundancy accumulates, over a job's rounds, how far apart each pair of
// clients' updates are, so that a copy that trains with its own randomness,
// within the spread of honest pairs in any one round, is recognised from
// the whole job (JobCopyDistance). It keeps two sums per pair of clients
// that took part in a round together: O(n²) memory, and Add costs
// O(n²·P) for n updates of P parameters, as UpdateReplicas does. The zero
// value is not usable; use NewRedundancy. Not safe for concurrent use.
type Redundancy struct {
	pairs map[[2]string]*pairDistance
}

type pairDistance struct {
	dist2, norm2 float64
}

// NewRedundancy returns an empty accumulator.
func NewRedundancy() *Redundancy {
	return &Redundancy{pairs: map[[2]string]*pairDistance{}}
}

// Clone returns an accumulator with the same sums, which later Adds to
// either leave the other's unchanged.
func (r *Redundancy) Clone() *Redundancy {
	c := &Redundancy{pairs: make(map[[2]string]*pairDistance, len(r.pairs))}
	for k, p := range r.pairs {
		q := *p
		c.pairs[k] = &q
	}
	return c
}

func pairKey(a, b string) [2]string {
	if b < a {
		a, b = b, a
	}
	return [2]string{a, b}
}

// Add records one round's updates of clients ids (distinct). Updates of
// another length than the first are refused with ErrLength, naming the
// client.
func (r *Redundancy) Add(ids []string, updates [][]float64) error {
	if len(ids) != len(updates) {
		return fmt.Errorf("%w: %d clients, %d updates", ErrLength, len(ids), len(updates))
	}
	sq := make([]float64, len(updates))
	for i, u := range updates {
		if len(u) != len(updates[0]) {
			return fmt.Errorf("%w: client %s's update has %d values, client %s's %d", ErrLength, ids[i], len(u), ids[0], len(updates[0]))
		}
		sq[i] = dot(u, u)
	}
	for i := range updates {
		for j := i + 1; j < len(updates); j++ {
			var d float64
			for k, x := range updates[i] {
				e := x - updates[j][k]
				d += e * e
			}
			k := pairKey(ids[i], ids[j])
			p := r.pairs[k]
			if p == nil {
				p = &pairDistance{}
				r.pairs[k] = p
			}
			p.dist2 += d
			p.norm2 += math.Max(sq[i], sq[j])
		}
	}
	return nil
}

// Distance is a and b's accumulated relative distance,
// √(Σ‖Δ_a − Δ_b‖² / Σ max(‖Δ_a‖², ‖Δ_b‖²)) over the rounds added, and
// whether they ever took part together with an update that was not zero.
func (r *Redundancy) Distance(a, b string) (float64, bool) {
	p := r.pairs[pairKey(a, b)]
	if p == nil || p.norm2 == 0 {
		return 0, false
	}
	return math.Sqrt(p.dist2 / p.norm2), true
}

// Replicas clusters ids into copies by what has been added so far: i and
// j are linked when their accumulated distance is at most
// JobCopyDistance. Clients that only ever sent zeros are nobody's copy.
func (r *Redundancy) Replicas(ids []string) [][]int {
	return replicas(len(ids), func(i, j int) bool {
		d, ok := r.Distance(ids[i], ids[j])
		return ok && d <= JobCopyDistance
	})
}

// Sybils. A holder that splits its data among several identities is a
// harder case than a copy: each part is an honest sample of the holder's
// rows, and no similarity rule separates the parts from independent
// holders of as many rows (on sybil-bc5 the parts' accumulated distance was
// 0.35 or more, as honest pairs'; experiments/README.md). It gains because
// the utility saturates: one small client's step already achieves most of
// a round's gain, so every identity's Shapley value is about the same
// whatever its rows, and three identities take about three shares (+0.155
// of the total under exact Shapley on sybil-bc5, seeds 1–5). Han,
// Wooldridge, Rogers, Ohrimenko & Tschiatschek ("Replication robust payoff
// allocation in submodular cooperative games", IEEE Transactions on
// Artificial Intelligence, 2022; first as arXiv 2006.14583,
// "Replication-robust payoff allocation with applications in machine
// learning marketplaces") characterise, for submodular games, how robust
// each semivalue (the Shapley and Banzhaf values among them) is to a
// player replicating itself, by the semivalue's weights over coalition
// sizes, and find the Shapley value exploitable. Semivalues that weigh
// large coalitions more, where a part adds little, were the candidates
// (our reading; only the abstract was at hand). Recomputed on sybil-bc5's
// exported games (seeds 1–5) they were no remedy here: normalised Banzhaf
// gained +0.059 on average and Beta(4,1) −0.06,
// but seed by seed from −0.21 to +0.28, their normalisation by a sum near
// zero in late rounds being unstable, and they would replace the Shapley
// value for everyone. What a split conserves is the rows, which the
// clients declare (n_i, bounded by what each declared at enrolment). So
// tally keeps the Shapley value and caps it per row against larger
// holders (CapPerWeight): the parts, holding a third of the rows of the
// others, may earn per row no more than the others' rows earn together.
const (
	// CapRatio: a player's value per unit of weight is capped at the rate
	// of the players with at least CapRatio times its weight. At 2 a
	// holder as large as the others that splits into two or more parts is
	// capped, and near-equal holders (breast cancer's 68 and 69 rows) never
	// cap one another. Measured on the exported games of seeds 1–10
	// (experiments/README.md): sybil-bc5's gain −0.016 to +0.010 with the
	// larger players' pooled rate (with their best rate instead, up to
	// +0.027); the cost falls on honest holders of few rows, whose rows
	// earn more under Shapley when the utility saturates (size-skew-bc5,
	// sizes 2:3:4:5:6: Spearman against uncapped Shapley 0.72 on average,
	// 0.20 at worst).
	CapRatio = 2.0
)

// CapPerWeight caps each player's value v_i at n_i times the rate the
// larger players' rows earn together, Σ_j v_j / Σ_j n_j over the players j
// with a positive value and a weight n_j ≥ CapRatio·n_i. It returns the
// capped values: a value at or below 0,
// a player without such larger players (the largest, and every player of
// a federation of near-equal weights) and one whose rate is below the cap
// are unchanged, so the cap never raises a value and a free rider gains
// nothing from it. Weights must be positive.
//
// It cannot tell a Sybil from an honest small holder: a small client whose
// rows earn more per row than a larger client's is capped the same way.
// It relies on the weights: a Sybil whose parts each claim as many rows as
// the whole escapes it (weights are bounded by what a client declared at
// enrolment, not proven), and a Sybil indistinguishable from independent
// holders of its size (parts of about the others' size, each with rows
// of its own) is not a Sybil this rule, or any, can see.
func CapPerWeight(values, weights []float64) ([]float64, error) {
	if len(values) != len(weights) {
		return nil, fmt.Errorf("%w: %d values, %d weights", ErrLength, len(values), len(weights))
	}
	for i, w := range weights {
		if !(w > 0) || math.IsInf(w, 0) {
			return nil, fmt.Errorf("%w: player %d's weight %g is not positive and finite", ErrWeight, i, w)
		}
	}
	out := slices.Clone(values)
	for i, v := range values {
		if !(v > 0) {
			continue
		}
		var earned, rows float64
		for j, u := range values {
			if u > 0 && weights[j] >= CapRatio*weights[i] {
				earned += u
				rows += weights[j]
			}
		}
		if rows > 0 {
			out[i] = math.Min(v, earned/rows*weights[i])
		}
	}
	return out, nil
}

// JobReplicaValues values, in one round, the clusters of copies found over
// the job (jobClusters, from Redundancy.Replicas at settlement) as one
// player: ids and vals are the round's clients and values, merged the
// round's own clusters of copies (already valued as one, their value
// shared). A cluster's value is the mean of what its parts earned
// (one part being a round cluster's whole value, or one client's), what
// one copy of the data earned as a player; it is shared equally among
// the cluster's clients in the round. Clients of no cluster keep their
// value. It returns the new values in the order of ids.
func JobReplicaValues(ids []string, vals []float64, merged, jobClusters [][]string) ([]float64, error) {
	if len(ids) != len(vals) {
		return nil, fmt.Errorf("%w: %d clients, %d values", ErrLength, len(ids), len(vals))
	}
	at := make(map[string]int, len(ids))
	for i, id := range ids {
		at[id] = i
	}
	// unit names the round cluster each client was valued in.
	unit := make(map[string]int, len(ids))
	for u, c := range merged {
		for _, id := range c {
			unit[id] = u + 1
		}
	}
	out := slices.Clone(vals)
	for _, c := range jobClusters {
		// The parts, in the order of c so that the sum is the same bits
		// every time: a round cluster, or a client valued alone.
		var keys []string
		parts := map[string]float64{}
		var present []int
		for _, id := range c {
			i, ok := at[id]
			if !ok {
				continue
			}
			present = append(present, i)
			key := "client:" + id
			if u := unit[id]; u > 0 {
				key = fmt.Sprintf("round:%d", u)
			}
			if _, seen := parts[key]; !seen {
				keys = append(keys, key)
			}
			parts[key] += vals[i]
		}
		if len(keys) < 2 {
			continue // absent, alone, or already valued as one this round
		}
		var sum float64
		for _, k := range keys {
			sum += parts[k]
		}
		each := sum / float64(len(parts)) / float64(len(present))
		for _, i := range present {
			out[i] = each
		}
	}
	return out, nil
}

// ProjectionReplicas clusters clients of equal weight whose projection
// scalars (one per public vector) agree within CopyScalar of the larger
// norm: a copy's products with the public vectors are its original's. A
// client whose scalars are all zero is nobody's copy.
func ProjectionReplicas(scalars [][]float64, weights []float64) [][]int {
	norms := make([]float64, len(scalars))
	for i, s := range scalars {
		norms[i] = norm(s)
	}
	return replicas(len(scalars), func(i, j int) bool {
		m := math.Max(norms[i], norms[j])
		if weights[i] != weights[j] || norms[i] == 0 || norms[j] == 0 || len(scalars[i]) != len(scalars[j]) {
			return false
		}
		var d float64
		for k, x := range scalars[i] {
			e := x - scalars[j][k]
			d += e * e
		}
		return math.Sqrt(d) <= CopyScalar*m
	})
}
