package valuation

import (
	"fmt"
	"math"
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
// scenarios (seeds 1–5, every round; experiments/README.md): the cosine
// between two honest clients' updates reached 0.990 at most (breast
// cancer, eight iid clients), a bit-identical copy has 1; two honest
// clients' influence scalars differed by at least 6.4e-6 of the larger
// (77,000 pairs), a copy's by its encryption noise, below 1e-5
// (aggregation's TestInfluencePrecision).
const (
	// CopyDistance: two updates are copies (plain mode) when they differ
	// by at most this fraction of the longer one's norm. At equal norms it
	// is a cosine of at least 1 − 0.1²/2 = 0.995, above the honest maximum;
	// unlike a cosine it does not merge parallel updates of different
	// lengths, which a copy (the same data, the same training) never sends.
	CopyDistance = 0.1
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
