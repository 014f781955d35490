package aggregation

import (
	"crypto/sha256"
	"fmt"
	"slices"
)

// MergeAggregates returns the encrypted sum of two finalised aggregates of
// disjoint contributors under the same key: block by block, c₀ + c₀' and
// c₁ + c₁'. The coordinator uses it in the "groups" valuation mode to fold
// a group that ended below min_group_size into another one, so that every
// aggregate it asks to decrypt still sums at least k updates; nothing is
// decrypted to do it.
func MergeAggregates(params Parameters, a, b *Aggregate) (*Aggregate, error) {
	if a == nil || b == nil {
		return nil, fmt.Errorf("%w: nil aggregate", ErrInvalidInput)
	}
	if a.Key != b.Key {
		return nil, fmt.Errorf("%w: aggregates under keys %x and %x", ErrKeyMismatch, a.Key[:8], b.Key[:8])
	}
	if a.NumParams != b.NumParams || len(a.Ciphertexts) != len(b.Ciphertexts) {
		return nil, fmt.Errorf("%w: aggregates of %d and %d parameters", ErrBlockMismatch, a.NumParams, b.NumParams)
	}
	for _, c := range b.Contributors {
		if slices.Contains(a.Contributors, c) {
			return nil, fmt.Errorf("%w: client %q is in both aggregates", ErrDuplicate, c)
		}
	}
	out := &Aggregate{
		Key: a.Key, NumParams: a.NumParams,
		Contributors: slices.Sorted(slices.Values(append(slices.Clone(a.Contributors), b.Contributors...))),
		Ciphertexts:  make([][]byte, len(a.Ciphertexts)),
		Digests:      make([][32]byte, len(a.Ciphertexts)),
	}
	rq := params.ckks.RingQ().AtLevel(params.ckks.MaxLevel())
	for i := range a.Ciphertexts {
		ct, info, err := parseCiphertext(params, a.Ciphertexts[i])
		if err != nil {
			return nil, fmt.Errorf("aggregate block %d: %w", i, err)
		}
		ctB, other, err := parseCiphertext(params, b.Ciphertexts[i])
		if err != nil {
			return nil, fmt.Errorf("aggregate block %d: %w", i, err)
		}
		if info.block != i || other.block != i || info.key != a.Key || other.key != a.Key {
			return nil, fmt.Errorf("%w: block %d headers disagree", ErrBlockMismatch, i)
		}
		// Both lifted, so the sum's c₀ is a multiple of q_L again and the
		// marshalling divides it exactly.
		rq.Add(ct.Value[0], ctB.Value[0], ct.Value[0])
		rq.Add(ct.Value[1], ctB.Value[1], ct.Value[1])
		out.Ciphertexts[i] = marshalCiphertext(params, a.Key, i, info.blocks, ct, nil)
		out.Digests[i] = sha256.Sum256(out.Ciphertexts[i])
	}
	return out, nil
}
