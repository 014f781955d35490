package experiments

import (
	"slices"

	"github.com/tallyfl/tally/aggregation"
)

// defaultCommitteeSize is the coordinator's default decryption committee:
// min(5, enrolled clients) (engine/config.go), with threshold a
// majority of it.
const defaultCommitteeSize = 5

// committee returns the default committee size c and threshold t for n
// clients, as the coordinator's configuration fills them in.
func committee(n int) (c, t int) {
	c = min(defaultCommitteeSize, n)
	return c, c/2 + 1
}

// ciphertextBlocks is B, the number of CKKS ciphertexts that carry one
// update of numParams values under the default parameters (one slot is the
// weight's).
func ciphertextBlocks(numParams int) int {
	return aggregation.DefaultParameters().Blocks(numParams)
}

// mergesNeeded counts the encrypted merges the coordinator's groups mode
// makes on groups of the given sizes (engine/decrypt.go,
// mergeSmallGroups): while the smallest group has fewer than k members and
// another group exists, the smallest two are folded together.
func mergesNeeded(sizes []int, k int) int {
	s := slices.Clone(sizes)
	merges := 0
	for {
		slices.Sort(s)
		if len(s) <= 1 || s[0] >= k {
			return merges
		}
		s = append([]int{s[0] + s[1]}, s[2:]...)
		merges++
	}
}

// heRound is one round's homomorphic work in mode, counted as the
// coordinator performs it (engine/secure.go, engine/decrypt.go, coordinator/service.go),
// for n contributors whose updates take blocks ciphertexts each, all of
// them and the whole committee answering (no timeout, refusal or
// re-randomisation). groupSizes are the groups mode's partition; k its
// minimum group size. The counting rule is written out in doc.go.
func heRound(mode string, n, blocks int, groupSizes []int, k int) Cost {
	c, t := committee(n)
	switch mode {
	case ModeGroups:
		merges := mergesNeeded(groupSizes, k)
		aggregates := len(groupSizes) - merges
		return Cost{
			HEAdds:      n*blocks + merges*blocks,
			DecShares:   aggregates * t * blocks,
			DecCombines: aggregates * blocks,
		}
	case ModeInfluence:
		return Cost{
			// Every ciphertext goes into the round's accumulator, and,
			// multiplied by the gradient plaintext of its block, into its
			// client's influence ciphertext.
			HEAdds:  2 * n * blocks,
			HEMults: n * blocks,
			// The aggregate: t members, one share per block; then one
			// coefficient per client, asked of every live member (c) and
			// combined from t of them.
			DecShares:   t*blocks + n*c,
			DecCombines: blocks + n,
		}
	}
	// Plain mode is a job with secure_aggregation none: nothing encrypted.
	return Cost{}
}

// projectionHE is one round's homomorphic work in the projection mode, for
// n contributors of blocks ciphertexts each and m public vectors: every
// ciphertext into the round's accumulator, and after the total is
// decrypted, multiplied by each vector's plaintext of its block into its
// client's product for that vector; the aggregate decrypted by t members,
// then n·m coefficients, each asked of every live member (c) and combined
// from t of them.
func projectionHE(n, blocks, m int) Cost {
	c, t := committee(n)
	return Cost{
		HEAdds:      n*blocks + m*n*blocks,
		HEMults:     m * n * blocks,
		DecShares:   t*blocks + m*n*c,
		DecCombines: blocks + m*n,
	}
}
