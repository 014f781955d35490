package aggregation

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
)

// Accumulator sums the ciphertexts of one aggregate as they arrive. It
// keeps one running ciphertext per block whatever the number of clients
// (plus a few bits of bookkeeping per client), so the coordinator's memory
// depends on the number of accumulators, not of clients.
//
// Add is safe for concurrent use (different blocks are summed in
// parallel); Finalize must not race with Add.
type Accumulator struct {
	params    Parameters
	key       [32]byte
	numParams int
	blocks    int

	blockMu []sync.Mutex
	sums    []*rlwe.Ciphertext

	mu        sync.Mutex
	clients   map[string][]bool
	received  map[string]int
	counts    []int
	finalized bool
}

// NewAccumulator prepares the sum of updates of numParams parameters
// encrypted under the key of key-generation instance key.
func NewAccumulator(params Parameters, key [32]byte, numParams int) (*Accumulator, error) {
	if numParams <= 0 {
		return nil, fmt.Errorf("%w: %d parameters", ErrInvalidInput, numParams)
	}
	blocks := params.Blocks(numParams)
	a := &Accumulator{
		params:    params,
		key:       key,
		numParams: numParams,
		blocks:    blocks,
		blockMu:   make([]sync.Mutex, blocks),
		sums:      make([]*rlwe.Ciphertext, blocks),
		clients:   map[string][]bool{},
		received:  map[string]int{},
		counts:    make([]int, blocks),
	}
	for b := range a.sums {
		a.sums[b] = ckks.NewCiphertext(params.ckks, 1, params.ckks.MaxLevel())
	}
	return a, nil
}

// Blocks is the number of ciphertexts each client sends.
func (a *Accumulator) Blocks() int { return a.blocks }

// Add validates one marshalled ciphertext from client (parameters, key
// instance, level, degree, size, reduction of every coefficient, block
// index and block count) and adds it to the running sum of its block. A
// second ciphertext for the same (client, block) is rejected with
// [ErrDuplicate] and the sum is unchanged, so a client may resume an
// interrupted stream by sending every block again.
func (a *Accumulator) Add(client string, ct []byte) error {
	info, err := checkContribution(a.params, a.key, a.blocks, client, ct)
	if err != nil {
		return err
	}

	a.mu.Lock()
	if a.finalized {
		a.mu.Unlock()
		return fmt.Errorf("%w: accumulator already finalised", ErrState)
	}
	got := a.clients[client]
	if got == nil {
		got = make([]bool, a.blocks)
		a.clients[client] = got
	}
	if got[info.block] {
		a.mu.Unlock()
		return fmt.Errorf("%w: client %q block %d", ErrDuplicate, client, info.block)
	}
	got[info.block] = true
	a.received[client]++
	a.counts[info.block]++
	a.mu.Unlock()

	l := a.params.ctLayout()
	moduli := a.params.moduliRows(l)
	sum := a.sums[info.block]
	a.blockMu[info.block].Lock()
	// The sums stay in the wire form: c₀' row by row (encrypt.go).
	c0, c1 := splitCiphertext(ct)
	rows0 := a.params.c0Rows()
	addRowsMod(sum.Value[0].Coeffs[:rows0], moduli[:rows0], c0)
	addRowsMod(sum.Value[1].Coeffs, moduli, c1)
	a.blockMu[info.block].Unlock()
	return nil
}

// checkContribution is the validation every streamed client ciphertext
// passes before it touches a running sum ([Accumulator.Add],
// [Influence.Add]): a non-empty client id, then the whole ciphertext
// (parameters, key instance, level, degree, size, reduction of every
// coefficient, block index and block count).
func checkContribution(p Parameters, key [32]byte, blocks int, client string, ct []byte) (ctInfo, error) {
	if client == "" {
		return ctInfo{}, fmt.Errorf("%w: empty client id", ErrInvalidInput)
	}
	info, err := checkCiphertext(p, ct)
	if err != nil {
		return info, fmt.Errorf("ciphertext from %q: %w", client, err)
	}
	if info.key != key {
		return info, fmt.Errorf("%w: ciphertext from %q under key instance %x, expected %x", ErrKeyMismatch, client, info.key[:8], key[:8])
	}
	if info.blocks != blocks {
		return info, fmt.Errorf("%w: ciphertext from %q says %d blocks, the aggregate has %d", ErrBlockMismatch, client, info.blocks, blocks)
	}
	return info, nil
}

// Complete reports whether client delivered every block. Unlike
// Contributors it neither copies nor sorts, so a coordinator can check
// each of n submissions in O(1) instead of O(n log n).
func (a *Accumulator) Complete(client string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.received[client] == a.blocks
}

// Contributors returns, sorted, the clients that delivered every block.
func (a *Accumulator) Contributors() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for c, n := range a.received {
		if n == a.blocks {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// Incomplete returns, sorted, the clients that delivered some blocks but
// not all. While it is non-empty the aggregate cannot be finalised: their
// partial contribution is already inside the sums.
func (a *Accumulator) Incomplete() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for c, n := range a.received {
		if n != a.blocks {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// Aggregate is a finalised encrypted sum, ready for a decryption request.
type Aggregate struct {
	// Key is the key-generation instance of the ciphertexts.
	Key [32]byte
	// NumParams is the update length.
	NumParams int
	// Contributors are the clients summed, sorted.
	Contributors []string
	// Ciphertexts are the marshalled block sums, in block order.
	Ciphertexts [][]byte
	// Digests are the SHA-256 digests of Ciphertexts.
	Digests [][32]byte
}

// Finalize marshals the block sums and their digests. It fails with
// [ErrIncomplete] if no client contributed or some client is incomplete.
// After Finalize, Add fails.
func (a *Accumulator) Finalize() (*Aggregate, error) {
	contributors := a.Contributors()
	if inc := a.Incomplete(); len(inc) > 0 {
		return nil, fmt.Errorf("%w: clients %q delivered only part of their blocks", ErrIncomplete, inc)
	}
	if len(contributors) == 0 {
		return nil, fmt.Errorf("%w: no contributions", ErrIncomplete)
	}
	a.mu.Lock()
	a.finalized = true
	a.mu.Unlock()
	agg := &Aggregate{
		Key:          a.key,
		NumParams:    a.numParams,
		Contributors: contributors,
		Ciphertexts:  make([][]byte, a.blocks),
		Digests:      make([][32]byte, a.blocks),
	}
	for b, sum := range a.sums {
		agg.Ciphertexts[b] = marshalCiphertextRows(a.params, a.key, b, a.blocks, sum.Value[0].Coeffs[:a.params.c0Rows()], sum.Value[1].Coeffs, nil)
		agg.Digests[b] = sha256.Sum256(agg.Ciphertexts[b])
	}
	return agg, nil
}
